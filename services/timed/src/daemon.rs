//! The loop: read the server list, ask, correct the clock, report, wait,
//! again; write the RTC when told to stop.
//!
//! - A round asks the servers in order; the first that gives a valid
//!   measurement is used. Offsets over [`STEP_THRESHOLD_NS`] are stepped
//!   (the first sync at boot, typically), smaller ones slewed by the
//!   kernel's PLL.
//! - After a good round the next is one poll interval away; the interval
//!   doubles from `min_poll` up to `max_poll`. After a failed round the next
//!   comes after `retry`, doubling up to `retry_max`.
//! - While waiting, the server list is read again every `reread`; a change
//!   (a config applied, a DHCP lease with option 42) starts a round at once.
//!   With no server at all timed says so once, then keeps reading.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::client::{self, Measurement, Query};
use crate::clock::Clock;
use crate::servers::{Server, ServerList, Sources};
use crate::status::{self, Correction, Status, Sync};

/// Offsets larger than this are stepped, smaller ones slewed: ntpd's
/// threshold, well inside the ±0.5 s the kernel slews at a time.
pub const STEP_THRESHOLD_NS: i64 = 128_000_000;

/// Intervals and limits.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub query: Query,
    pub min_poll: Duration,
    pub max_poll: Duration,
    pub retry: Duration,
    pub retry_max: Duration,
    pub reread: Duration,
}

impl Default for Timing {
    /// The node's: 4 samples of 2 s each, polls from 64 s to 1024 s (NTP's
    /// defaults), retries from 2 s to 64 s, sources re-read every 10 s.
    fn default() -> Self {
        Timing {
            query: Query {
                samples: 4,
                timeout: Duration::from_secs(2),
            },
            min_poll: Duration::from_secs(64),
            max_poll: Duration::from_secs(1024),
            retry: Duration::from_secs(2),
            retry_max: Duration::from_secs(64),
            reread: Duration::from_secs(10),
        }
    }
}

/// Where timed reads and writes.
#[derive(Debug, Clone)]
pub struct Options {
    pub sources: Sources,
    /// The JSON status (`/run/kiln/time.json`).
    pub status_file: PathBuf,
    /// Written once the clock is synced (`/run/kiln/time-synced`); its
    /// presence at start means an earlier run synced it this boot.
    pub synced_marker: PathBuf,
    pub timing: Timing,
}

/// Keeps the clock synced until `shutdown` turns true (or its sender is
/// dropped); then writes the system time to the RTC if it was synced.
pub async fn serve<C: Clock + ?Sized>(
    clock: &C,
    options: Options,
    status: watch::Sender<Status>,
    mut shutdown: watch::Receiver<bool>,
) {
    let synced = options.synced_marker.exists();
    let timing = options.timing;
    let mut d = Daemon {
        clock,
        options,
        status,
        synced,
        poll: timing.min_poll,
        retry: timing.retry,
        denied: Vec::new(),
        list: None,
    };
    d.publish(|s| s.synced = synced);
    loop {
        let list = d.options.sources.read();
        d.take_list(&list);
        let next = if list.servers.is_empty() {
            timing.reread
        } else {
            let round = tokio::select! {
                r = d.round(&list) => r,
                _ = stop(&mut shutdown) => break,
            };
            match round {
                Some(m) => {
                    d.correct(&m);
                    let next = d.poll;
                    d.poll = (d.poll * 2).min(timing.max_poll);
                    d.retry = timing.retry;
                    next
                }
                None => {
                    let next = d.retry;
                    d.retry = (d.retry * 2).min(timing.retry_max);
                    debug!("next round in {next:?}");
                    next
                }
            }
        };
        if !d.wait(next, &list, &mut shutdown).await {
            break;
        }
    }
    d.at_shutdown();
}

struct Daemon<'a, C: ?Sized> {
    clock: &'a C,
    options: Options,
    status: watch::Sender<Status>,
    synced: bool,
    poll: Duration,
    retry: Duration,
    /// Servers that sent kiss-o'-death DENY or RSTR: not asked again until
    /// the list changes (RFC 4330 section 8).
    denied: Vec<Server>,
    /// The list in force.
    list: Option<ServerList>,
}

impl<C: Clock + ?Sized> Daemon<'_, C> {
    /// Takes a freshly read list; says what changed.
    fn take_list(&mut self, list: &ServerList) {
        if self.list.as_ref() == Some(list) {
            return;
        }
        for p in &list.problems {
            warn!("time server source unreadable: {p}");
        }
        if list.servers.is_empty() {
            if self.synced {
                warn!("no NTP server known any more; the clock runs free");
            } else {
                warn!(
                    "time not synced: no NTP server known (time.servers in the machine config, \
                     DHCP option 42 or ip= name none); looking again every {:?}",
                    self.options.timing.reread
                );
            }
        } else {
            info!(
                source = ?list.source,
                "NTP servers: {}",
                names(&list.servers).join(" ")
            );
        }
        self.denied.clear();
        // A new list is asked at once and from the shortest interval.
        self.poll = self.options.timing.min_poll;
        self.retry = self.options.timing.retry;
        let mut errors = list.problems.clone();
        if list.servers.is_empty() {
            errors.push("no NTP server known".into());
        }
        self.publish(|s| {
            s.source = list.source;
            s.servers = names(&list.servers);
            s.errors = errors;
        });
        self.list = Some(list.clone());
    }

    /// Asks the servers in order; the first good measurement wins.
    async fn round(&mut self, list: &ServerList) -> Option<Measurement> {
        let mut errors = list.problems.clone();
        let mut found = None;
        for server in &list.servers {
            if self.denied.contains(server) {
                errors.push(format!(
                    "{server}: not asked (it sent kiss-o'-death DENY/RSTR)"
                ));
                continue;
            }
            match client::query(self.clock, server, self.options.timing.query).await {
                Ok(m) => {
                    found = Some(m);
                    break;
                }
                Err(e) => {
                    warn!("{e}");
                    if e.denied() {
                        self.denied.push(server.clone());
                    }
                    errors.push(e.to_string());
                }
            }
        }
        if found.is_none() {
            let what = if self.synced {
                "clock runs free"
            } else {
                "time not synced"
            };
            warn!(
                "no NTP server answered ({what}); next try in {:?}",
                self.retry
            );
        }
        self.publish(|s| s.errors = errors);
        found
    }

    /// Steps or slews by the measured offset; marks time synced.
    fn correct(&mut self, m: &Measurement) {
        let offset = m.sample.offset_ns;
        let (correction, result) = if offset.abs() > STEP_THRESHOLD_NS {
            (Correction::Step, self.clock.step(offset))
        } else {
            (Correction::Slew, self.clock.slew(offset, self.poll))
        };
        if let Err(e) = result {
            warn!("cannot correct the clock by {}: {e}", seconds(offset));
            self.publish(|s| s.errors.push(format!("correcting the clock: {e}")));
            return;
        }
        let sync = Sync {
            at: status::rfc3339(self.clock.now()),
            server: m.server.to_string(),
            address: m.address.to_string(),
            stratum: m.stratum,
            offset_seconds: offset as f64 / 1e9,
            delay_seconds: m.sample.delay_ns as f64 / 1e9,
            correction,
        };
        let verb = match correction {
            Correction::Step => "stepped",
            Correction::Slew => "slewing",
        };
        let detail = format!(
            "{verb} by {} from {} (stratum {}, delay {:.3} ms, best of {})",
            seconds(offset),
            sync.server,
            m.stratum,
            m.sample.delay_ns as f64 / 1e6,
            m.samples
        );
        if !self.synced {
            info!(now = %sync.at, "time synced: {detail}");
            let marker = format!("{} {}\n", sync.at, sync.server);
            if let Err(e) = status::write_atomic(&self.options.synced_marker, marker.as_bytes()) {
                warn!(path = %self.options.synced_marker.display(), "cannot mark time synced: {e}");
                return;
            }
            self.synced = true;
        } else if correction == Correction::Step {
            info!(now = %sync.at, "time corrected: {detail}");
        } else {
            debug!("{detail}");
        }
        let poll = self.poll.as_secs();
        self.publish(|s| {
            s.synced = true;
            s.last_sync = Some(sync);
            s.poll_seconds = poll;
        });
    }

    /// Sleeps `d`, re-reading the sources every `reread`. `false` on
    /// shutdown.
    async fn wait(
        &mut self,
        d: Duration,
        list: &ServerList,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let until = tokio::time::Instant::now() + d;
        loop {
            let now = tokio::time::Instant::now();
            if now >= until {
                return true;
            }
            let nap = (until - now).min(self.options.timing.reread);
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = stop(shutdown) => return false,
            }
            let fresh = self.options.sources.read();
            if fresh.servers != list.servers {
                return true;
            }
        }
    }

    fn at_shutdown(&self) {
        if !self.synced {
            info!("stopping; time was never synced, so the RTC is left as it is");
            return;
        }
        let now = self.clock.now();
        match self.clock.write_rtc(now) {
            Ok(()) => info!(
                "stopping; wrote the system time to the RTC: {}",
                status::rfc3339(now)
            ),
            Err(e) => warn!("stopping; cannot write the RTC: {e}"),
        }
    }

    /// Changes the status; writes the file if it changed.
    fn publish(&self, f: impl FnOnce(&mut Status)) {
        let changed = self.status.send_if_modified(|s| {
            let before = s.clone();
            f(s);
            *s != before
        });
        if !changed {
            return;
        }
        let json = match serde_json::to_vec_pretty(&*self.status.borrow()) {
            Ok(j) => j,
            Err(e) => {
                warn!("cannot serialise the status: {e}");
                return;
            }
        };
        if let Err(e) = status::write_atomic(&self.options.status_file, &json) {
            warn!(path = %self.options.status_file.display(), "cannot write the status: {e}");
        }
    }
}

/// Resolves when `shutdown` is (or turns) true, or its sender is gone.
async fn stop(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

fn names(servers: &[Server]) -> Vec<String> {
    servers.iter().map(Server::to_string).collect()
}

/// Signed seconds for logs: `+631152000.000213 s`.
fn seconds(ns: i64) -> String {
    let sign = if ns < 0 { '-' } else { '+' };
    let abs = ns.unsigned_abs();
    format!(
        "{sign}{}.{:06} s",
        abs / 1_000_000_000,
        (abs % 1_000_000_000) / 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_for_logs() {
        assert_eq!(seconds(631_152_000_000_213_000), "+631152000.000213 s");
        assert_eq!(seconds(-50_000_000), "-0.050000 s");
        assert_eq!(seconds(0), "+0.000000 s");
    }
}
