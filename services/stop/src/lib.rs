//! The stop request every on-node service honours.
//!
//! PID 1's supervisor stops a service with SIGTERM; SIGINT stops it the same
//! way when it is run by hand. Each service's `run()` awaits [`requested`]
//! and then shuts down in order (netd releases its leases, timed writes the
//! RTC, apid and kiln-cri finish their calls).

use tokio::signal::unix::{signal, SignalKind};
use tracing::warn;

/// Resolves at the first SIGTERM or SIGINT. If the handlers cannot be
/// installed it never resolves (the supervisor's SIGKILL after its stop
/// timeout still ends the process) and says why.
pub async fn requested() {
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            warn!("cannot listen for stop signals: {e}");
            std::future::pending::<()>().await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nix::sys::signal::{raise, Signal};

    #[tokio::test(flavor = "current_thread")]
    async fn sigterm_and_sigint_both_stop() {
        for sig in [Signal::SIGTERM, Signal::SIGINT] {
            let stop = tokio::spawn(super::requested());
            // Let the task install its handlers before the signal comes.
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!stop.is_finished(), "resolved before {sig}");
            raise(sig).unwrap();
            tokio::time::timeout(Duration::from_secs(5), stop)
                .await
                .unwrap_or_else(|_| panic!("{sig} did not stop"))
                .unwrap();
        }
    }
}
