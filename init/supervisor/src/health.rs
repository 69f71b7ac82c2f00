//! Health probes: run one check, with a timeout.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::reaper::Reaper;
use crate::spawn::{spawn, Launch};
use crate::Probe;

/// Runs `probe` once; `Err` says why it failed.
pub(crate) async fn check(probe: &Probe, timeout: Duration, reaper: &Reaper) -> Result<(), String> {
    match probe {
        Probe::TcpConnect(addr) => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connect {addr}: {e}")),
                Err(_) => Err(format!("connect {addr}: timed out")),
            }
        }
        Probe::UnixConnect(path) => {
            match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connect {}: {e}", path.display())),
                Err(_) => Err(format!("connect {}: timed out", path.display())),
            }
        }
        Probe::Exec(argv) => {
            let argv: Vec<CString> = argv
                .iter()
                .map(|a| CString::new(a.as_str()))
                .collect::<Result<_, _>>()
                .map_err(|_| "NUL in command".to_string())?;
            let devnull: OwnedFd = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .map_err(|e| e.to_string())?
                .into();
            let launch = Launch {
                argv,
                env: vec![c"PATH=/usr/bin:/bin:/sbin".to_owned()],
                cwd: None,
                output: devnull,
                cgroup_procs: None,
            };
            let pid = spawn(&launch).map_err(|e| e.to_string())?;
            let exit = reaper.watch(pid);
            match tokio::time::timeout(timeout, exit).await {
                Ok(Ok(e)) if e.success() => Ok(()),
                Ok(Ok(e)) => Err(format!("check {e}")),
                Ok(Err(_)) => Err("check: reaper gone".into()),
                Err(_) => {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    Err("check timed out".into())
                }
            }
        }
    }
}
