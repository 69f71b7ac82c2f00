//! What a shim records in its container's directory for the daemon (and a
//! restarted daemon) to read: `started.json` once the container runs,
//! `exit.json` once it has exited. Both written atomically.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

pub const STARTED: &str = "started.json";
pub const EXITED: &str = "exit.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    /// The container's init process (signals for stop go there).
    pub pid: i32,
    /// The shim, alive as long as it watches the container.
    pub shim_pid: i32,
    /// Nanoseconds since the epoch.
    pub started_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exited {
    pub exit_code: i32,
    pub finished_at: i64,
    /// Set when a signal ended the process.
    pub signal: Option<i32>,
    /// The OOM killer killed a process of the container's cgroup.
    #[serde(default)]
    pub oom_killed: bool,
}

pub fn write<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    let data = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    write_atomic(&dir.join(name), &data)
}

/// Reads a record; `None` when absent or unreadable (a torn file cannot
/// exist: writes are atomic).
pub fn read<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Option<T> {
    let data = std::fs::read(dir.join(name)).ok()?;
    serde_json::from_slice(&data).ok()
}
