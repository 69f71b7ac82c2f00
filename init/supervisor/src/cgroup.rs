//! One cgroup v2 directory per service: the service's processes are put in
//! it before exec, and when the service ends everything still in it is
//! killed and the directory removed, so no stray process outlives its
//! service.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::warn;

/// How long leftover processes may take to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

pub(crate) struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// Creates `<root>/<id>` (the root too) and opens its `cgroup.procs`.
    /// Processes left from an earlier run are killed first.
    pub(crate) fn create(root: &Path, id: &str) -> std::io::Result<(Cgroup, OwnedFd)> {
        let path = root.join(id);
        std::fs::create_dir_all(&path)?;
        delegate_controllers(root);
        kill_all(&path);
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(path.join("cgroup.procs"))?;
        Ok((Cgroup { path }, procs.into()))
    }

    /// Kills every process left, waits until the cgroup is empty (bounded),
    /// and removes it.
    pub(crate) async fn kill_all_and_remove(&self) {
        let deadline = Instant::now() + KILL_WAIT;
        while !pids(&self.path).is_empty() {
            kill_all(&self.path);
            if Instant::now() >= deadline {
                warn!(cgroup = %self.path.display(), "processes survive SIGKILL; cgroup kept");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.remove();
    }

    /// Removes the (empty) cgroup directory.
    pub(crate) fn remove(&self) {
        if let Err(e) = std::fs::remove_dir(&self.path) {
            warn!(cgroup = %self.path.display(), "cannot remove cgroup: {e}");
        }
    }
}

/// Enables in `root` every controller it has for its children, so each
/// service's cgroup accounts memory, CPU and I/O (`memory.current` is what
/// the machine API's Stats reads). Best effort: a controller the kernel
/// refuses is left off, and the service runs without it.
fn delegate_controllers(root: &Path) {
    let Ok(available) = std::fs::read_to_string(root.join("cgroup.controllers")) else {
        return;
    };
    let enabled = std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
    for c in available.split_whitespace() {
        if enabled.split_whitespace().any(|e| e == c) {
            continue;
        }
        if let Err(e) = std::fs::write(root.join("cgroup.subtree_control"), format!("+{c}")) {
            warn!(cgroup = %root.display(), "cannot enable the {c} controller: {e}");
        }
    }
}

/// Pids in the cgroup at `path`.
fn pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// SIGKILLs everything in the cgroup at `path`: through `cgroup.kill`
/// (Linux 5.14+, atomic, catches forks in flight), else pid by pid.
pub(crate) fn kill_all(path: &Path) {
    let pids = pids(path);
    if pids.is_empty() || std::fs::write(path.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}
