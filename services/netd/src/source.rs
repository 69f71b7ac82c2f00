//! Where netd's settings come from, and re-applying them when the stored
//! machine config changes.
//!
//! The stored config wins; without one (maintenance mode) the kernel
//! command line's `ip=` is used, as is a config netd cannot use (the
//! problem, naming the field, goes into the status and the log, and the
//! node stays reachable to be given a better one). apid classes `network`
//! and `hostname` changes as live: netd checks the file's metadata every
//! [`POLL`] and, when the link settings it implies differ, undoes what the
//! old ones made (leases released, addresses, routes, VLANs and bonds
//! removed) and applies the new; a hostname-only change just sets the
//! hostname.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kiln_config::MachineConfig;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::daemon::{serve_until, Control, Options};
use crate::settings::{Settings, SettingsError};
use crate::status::Status;
use crate::Error;

/// How often the stored config's metadata is looked at: a `stat`, cheap.
pub const POLL: Duration = Duration::from_secs(2);

/// The stored config and the kernel command line.
#[derive(Debug, Clone)]
pub struct Source {
    /// The stored machine config (`kiln_config_store::ConfigStore`).
    pub config: PathBuf,
    /// `/proc/cmdline`'s content.
    pub cmdline: String,
}

/// Settings and, if the stored config could not be used, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub settings: Settings,
    pub problem: Option<String>,
}

/// What identifies a version of the file without reading it.
type Stamp = Option<(SystemTime, u64, u64)>;

impl Source {
    /// The settings in force: the stored config's, else the command line's.
    /// Only a bad command line is an error (there is nothing to fall back
    /// to).
    pub fn load(&self) -> Result<Loaded, SettingsError> {
        let problem = match self.stored_settings() {
            Ok(Some(settings)) => {
                return Ok(Loaded {
                    settings,
                    problem: None,
                })
            }
            Ok(None) => None,
            Err(p) => Some(p),
        };
        Ok(Loaded {
            settings: Settings::from_cmdline(&self.cmdline)?,
            problem,
        })
    }

    fn stored_settings(&self) -> Result<Option<Settings>, String> {
        let name = self.config.display();
        let text = match std::fs::read_to_string(&self.config) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{name}: {e}")),
        };
        let config = MachineConfig::from_yaml(&text).map_err(|e| format!("{name}: {e}"))?;
        Settings::from_config(&config)
            .map(Some)
            .map_err(|e| format!("{name}: {e}"))
    }

    fn stamp(&self) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&self.config).ok()?;
        Some((m.modified().ok()?, m.len(), m.ino()))
    }
}

/// Runs netd on `source`'s settings until `shutdown`, re-applying them
/// whenever the stored config changes them.
pub async fn serve_config(
    source: Source,
    options: Options,
    status: watch::Sender<Status>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let mut stamp = source.stamp();
    let mut loaded = source.load()?;
    loop {
        report_problem(&status, &loaded);
        let (stop_tx, stop) = watch::channel(false);
        let (hostname_tx, hostname) = watch::channel(loaded.settings.hostname.clone());
        let teardown = Arc::new(AtomicBool::new(false));
        let control = Control {
            shutdown: stop,
            teardown: teardown.clone(),
            hostname,
        };
        let run = serve_until(
            loaded.settings.clone(),
            options.clone(),
            status.clone(),
            control,
        );
        tokio::pin!(run);
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let next = loop {
            tokio::select! {
                r = &mut run => return r,
                _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => {
                    stop_tx.send_replace(true);
                    return run.await;
                }
                _ = tick.tick() => {
                    let now = source.stamp();
                    if now == stamp {
                        continue;
                    }
                    stamp = now;
                    let next = match source.load() {
                        Ok(l) => l,
                        Err(e) => {
                            warn!("{e}");
                            continue;
                        }
                    };
                    if links_differ(&next.settings, &loaded.settings) {
                        break next;
                    }
                    if next.settings.hostname != loaded.settings.hostname {
                        info!(hostname = ?next.settings.hostname, "the machine config changed the hostname");
                        hostname_tx.send_replace(next.settings.hostname.clone());
                    }
                    if next.problem != loaded.problem {
                        report_problem(&status, &next);
                    }
                    loaded = next;
                }
            }
        };
        info!("the machine config changed the network settings: re-applying");
        teardown.store(true, Ordering::SeqCst);
        stop_tx.send_replace(true);
        run.await?;
        loaded = next;
    }
}

/// Whether two settings differ in more than the hostname.
fn links_differ(a: &Settings, b: &Settings) -> bool {
    let strip = |s: &Settings| Settings {
        hostname: None,
        ..s.clone()
    };
    strip(a) != strip(b)
}

fn report_problem(status: &watch::Sender<Status>, loaded: &Loaded) {
    match &loaded.problem {
        Some(p) => warn!("stored machine config not used, running on the kernel command line: {p}"),
        None => info!("network settings: {} link(s)", loaded.settings.links.len()),
    }
    status.send_modify(|s| s.problem = loaded.problem.clone());
}
