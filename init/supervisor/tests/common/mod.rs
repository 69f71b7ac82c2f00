//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_supervisor::reaper::{self, Reaper};
use kiln_supervisor::{Backoff, ServiceSpec, ServiceStatus, State, Supervisor, SupervisorConfig};

pub fn sh(id: &str, script: &str) -> ServiceSpec {
    ServiceSpec::new(id, ["/bin/sh", "-c", script]).env("PATH", "/usr/bin:/bin")
}

pub fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(800),
        factor: 2,
        reset_after: Duration::from_secs(60),
    }
}

/// The process's reaper; orphans of services come to this process, as
/// they come to PID 1.
pub fn reaper() -> Reaper {
    reaper::become_subreaper().unwrap();
    Reaper::start()
}

pub fn supervisor(config: SupervisorConfig) -> Supervisor {
    Supervisor::new(config, reaper())
}

/// Waits until `id` is in `state` (now, or by an event), within `limit`.
pub async fn wait_state(s: &Supervisor, id: &str, state: State, limit: Duration) -> ServiceStatus {
    let mut events = s.subscribe();
    let until = tokio::time::Instant::now() + limit;
    loop {
        let st = s.status(id).unwrap();
        if st.state == state {
            return st;
        }
        match tokio::time::timeout_at(until, events.recv()).await {
            Err(_) => panic!("{id} never reached {state:?} in {limit:?}; now {st:?}"),
            Ok(Ok(e)) if e.service == id && e.state == state => return s.status(id).unwrap(),
            Ok(_) => {}
        }
    }
}

/// Waits (bounded) until `cond` holds, re-checking every 20 ms: for
/// conditions outside the supervisor (files, /proc) that have no event.
pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + limit;
    while !cond() {
        assert!(std::time::Instant::now() < until, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True once `pid` is gone from /proc: exited and reaped, not a zombie.
pub fn gone(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// `/proc/<pid>/status`'s State line, for messages.
pub fn proc_state(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("State:"))
        .unwrap_or("gone")
        .to_string()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A fresh cgroup2 directory for this test, or `None` (with the reason
/// printed) where cgroup v2 is not writable. The host has an empty cgroup2
/// hierarchy at /sys/fs/cgroup/unified (v1 elsewhere); on a v2-only host
/// /sys/fs/cgroup itself is used.
pub fn cgroup2_test_root(name: &str) -> Option<PathBuf> {
    let Some(base) = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists())
    else {
        eprintln!("SKIP: no cgroup2 hierarchy on this host");
        return None;
    };
    let root = base.join(format!("kiln-test-{}-{name}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&root) {
        eprintln!("SKIP: cannot create {} ({e}); run as root", root.display());
        return None;
    }
    Some(root)
}
