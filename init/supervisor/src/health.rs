//! Health probes: run one check, bounded by its timeout. Exec probes start
//! through the reaper like any other process.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::reaper::{Command, Reaper};
use crate::Probe;

/// PATH for exec probes whose service sets none.
const PROBE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `probe` once; `Err` says why it failed.
pub(crate) async fn check(
    probe: &Probe,
    timeout: Duration,
    env: &[(String, String)],
    reaper: &Reaper,
) -> Result<(), String> {
    match probe {
        Probe::TcpConnect(addr) => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connect {addr}: {e}")),
                Err(_) => Err(format!("connect {addr}: timed out after {timeout:?}")),
            }
        }
        Probe::UnixConnect(path) => {
            match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connect {}: {e}", path.display())),
                Err(_) => Err(format!(
                    "connect {}: timed out after {timeout:?}",
                    path.display()
                )),
            }
        }
        // One stat, on a local path (markers live in /run): not worth a
        // blocking-pool thread.
        Probe::File(path) => match path.try_exists() {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("{} does not exist", path.display())),
            Err(e) => Err(format!("{}: {e}", path.display())),
        },
        Probe::Exec(argv) => {
            let mut cmd = Command::new(argv.iter().cloned()).envs(env);
            if !env.iter().any(|(k, _)| k == "PATH") {
                cmd = cmd.env("PATH", PROBE_PATH);
            }
            let (pid, exit) = reaper
                .spawn(&cmd)
                .map_err(|e| format!("health command: {e}"))?;
            // The probe dies with the check, also when the check is dropped
            // (its service stopped) mid-probe.
            let mut guard = KillOnDrop(Some(pid));
            let result = tokio::time::timeout(timeout, exit).await;
            if let Ok(Some(_)) = result {
                // Reaped: the pid may already belong to someone else.
                guard.0 = None;
            }
            match result {
                Ok(Some(e)) if e.success() => Ok(()),
                Ok(Some(e)) => Err(format!("health command: {e}")),
                Ok(None) => Err("health command: reaper gone".into()),
                Err(_) => Err(format!("health command: timed out after {timeout:?}")),
            }
        }
    }
}

/// SIGKILLs a probe that has not been reaped (so still owns its pid).
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
