//! One cgroup v2 directory per service: the service's processes are put in
//! it before exec, and when the service stops everything still in it is
//! killed, so no stray process outlives its service.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::warn;

pub(crate) struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    /// Creates `<root>/<id>` (the root too) and opens its `cgroup.procs`.
    pub(crate) fn create(root: &Path, id: &str) -> std::io::Result<(Cgroup, OwnedFd)> {
        let path = root.join(id);
        std::fs::create_dir_all(&path)?;
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(path.join("cgroup.procs"))?;
        Ok((Cgroup { path }, procs.into()))
    }

    /// Pids still in the cgroup.
    pub(crate) fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills every process left and removes the directory.
    pub(crate) async fn kill_all_and_remove(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            // cgroup.kill (Linux 5.14+) kills atomically, forks included.
            if std::fs::write(self.path.join("cgroup.kill"), "1").is_err() {
                for pid in pids {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            if Instant::now() >= deadline {
                warn!(cgroup = %self.path.display(), "processes survive SIGKILL");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(e) = std::fs::remove_dir(&self.path) {
            warn!(cgroup = %self.path.display(), "cannot remove cgroup: {e}");
        }
    }
}
