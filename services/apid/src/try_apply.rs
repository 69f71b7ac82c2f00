//! Try mode: a config applied live that goes back to the previous one
//! unless confirmed in time. The record of the try lives on STATE
//! (kiln-config-store's `try_apply`), so it outlives apid: a restarted apid
//! resumes the timer from the record, and a reboot before confirmation is
//! undone by PID 1 at boot.
//!
//! Every write of the config goes through [`Tries::lock`], so an apply, a
//! confirm and a revert never interleave.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_api_proto::v1::{event, ConfigConfirmed, ConfigReverted, Event};
use kiln_config_store::try_apply::boottime_ms;
use kiln_config_store::ConfigStore;
use tokio::sync::{MutexGuard, Notify};
use tokio::task::AbortHandle;
use tracing::{error, info, warn};

use crate::config::NodeConfig;
use crate::events::Journal;
use crate::server::Node;

/// A try reverts after this long unless the request says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Shorter would leave no time to check the node and confirm.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer would leave a node on an unconfirmed config for too long.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The timeout a request asks for (seconds, 0 for the default), checked.
pub fn timeout(seconds: u32) -> Result<Duration, String> {
    if seconds == 0 {
        return Ok(DEFAULT_TIMEOUT);
    }
    let t = Duration::from_secs(u64::from(seconds));
    if t < MIN_TIMEOUT || t > MAX_TIMEOUT {
        return Err(format!(
            "try_timeout_seconds: {seconds} is out of range ({}..={})",
            MIN_TIMEOUT.as_secs(),
            MAX_TIMEOUT.as_secs()
        ));
    }
    Ok(t)
}

/// The node's try, if any, and its timer.
pub struct Tries {
    node: Arc<Node>,
    journal: Arc<Journal>,
    /// Notified when a revert changes apid's own TLS set-up.
    restart: Arc<Notify>,
    /// Serialises every change of the stored config.
    writes: tokio::sync::Mutex<()>,
    timer: Mutex<Option<AbortHandle>>,
}

impl Tries {
    pub fn new(node: Arc<Node>, journal: Arc<Journal>, restart: Arc<Notify>) -> Arc<Self> {
        Arc::new(Tries {
            node,
            journal,
            restart,
            writes: tokio::sync::Mutex::new(()),
            timer: Mutex::new(None),
        })
    }

    /// Held while the stored config is read and replaced.
    pub async fn lock(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    /// Picks up a try left by an earlier apid of this boot.
    pub fn resume(self: &Arc<Self>) {
        match self.store().pending_try() {
            Ok(Some(pending)) => {
                let left = pending.deadline_boottime_ms.saturating_sub(boottime_ms());
                info!(
                    revert_in_ms = left,
                    "a config applied in try mode awaits confirmation"
                );
                self.schedule(pending.deadline_boottime_ms);
            }
            Ok(None) => {}
            Err(e) => error!("cannot read the pending try: {e}"),
        }
    }

    /// Milliseconds until the pending try reverts, if one is pending.
    pub fn pending_ms(&self) -> Result<Option<u64>, kiln_config_store::StoreError> {
        Ok(self
            .store()
            .pending_try()?
            .map(|p| p.deadline_boottime_ms.saturating_sub(boottime_ms())))
    }

    /// Stores `new` as a try (caller holds [`Tries::lock`]) and starts the
    /// timer.
    pub fn begin(
        self: &Arc<Self>,
        new: &[u8],
        previous: &[u8],
        timeout: Duration,
    ) -> Result<(), kiln_config_store::StoreError> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline = boottime_ms().saturating_add(ms);
        self.store().begin_try(new, previous, deadline)?;
        self.schedule(deadline);
        Ok(())
    }

    /// Keeps the tried config; whether a try was pending.
    pub async fn confirm(&self) -> Result<bool, kiln_config_store::StoreError> {
        let _writing = self.lock().await;
        if let Some(timer) = self.lock_timer().take() {
            timer.abort();
        }
        let confirmed = self.store().confirm_try()?;
        if confirmed {
            info!("the config applied in try mode is confirmed");
            self.journal.record(Event {
                event: Some(event::Event::ConfigConfirmed(ConfigConfirmed {
                    at_unix_ms: crate::server::now_unix_ms(),
                })),
            });
        }
        Ok(confirmed)
    }

    fn schedule(self: &Arc<Self>, deadline_boottime_ms: u64) {
        let this = self.clone();
        let task = tokio::spawn(async move {
            let left = deadline_boottime_ms.saturating_sub(boottime_ms());
            tokio::time::sleep(Duration::from_millis(left)).await;
            this.revert().await;
        });
        if let Some(old) = self.lock_timer().replace(task.abort_handle()) {
            old.abort();
        }
    }

    /// The deadline passed: the previous config goes back.
    async fn revert(&self) {
        let _writing = self.lock().await;
        let tried = match self.store().load() {
            Ok(tried) => tried,
            Err(e) => {
                error!("try mode: cannot read the tried config: {e}");
                None
            }
        };
        let previous = match self.store().revert_try() {
            Ok(Some(previous)) => previous,
            // Confirmed meanwhile.
            Ok(None) => return,
            Err(e) => {
                error!("try mode: cannot revert to the previous config: {e}");
                return;
            }
        };
        let message = "not confirmed in time: the previous config is back".to_string();
        warn!("config applied in try mode {message}");
        self.journal.record(Event {
            event: Some(event::Event::ConfigReverted(ConfigReverted {
                message,
                at_unix_ms: crate::server::now_unix_ms(),
            })),
        });
        let parsed = |data: Option<&[u8]>| data.and_then(|d| NodeConfig::parse(d).ok());
        let identity_changes = match (parsed(tried.as_deref()), parsed(Some(&previous))) {
            (Some(t), Some(p)) => t.api_identity_differs(&p),
            _ => true,
        };
        if identity_changes {
            self.restart.notify_one();
        }
    }

    pub(crate) fn store(&self) -> &ConfigStore {
        &self.node.store
    }

    fn lock_timer(&self) -> std::sync::MutexGuard<'_, Option<AbortHandle>> {
        // An Option of a handle: still consistent after a panic.
        self.timer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_default_and_bounds() {
        assert_eq!(timeout(0).unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(timeout(30).unwrap(), Duration::from_secs(30));
        let err = timeout(4).unwrap_err();
        assert_eq!(err, "try_timeout_seconds: 4 is out of range (5..=3600)");
        assert!(timeout(3601).is_err());
    }
}
