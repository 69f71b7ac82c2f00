//! The process reaper. PID 1 must reap every process that dies under it,
//! orphans included, so one thread does all the waiting: `waitpid(-1)` in a
//! loop, handing each exit status to whoever registered that pid. Nothing
//! else may wait on a child (no `Child::wait`, no `tokio::process`), or the
//! two would race for exit statuses.
//!
//! A child can exit before its spawner registers it; such exits are kept
//! for a while and handed over on registration.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;
use tracing::debug;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Exits nobody claimed are dropped after this long (true orphans).
const UNCLAIMED_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Registry {
    waiting: HashMap<i32, oneshot::Sender<Exit>>,
    unclaimed: HashMap<i32, (Exit, Instant)>,
}

struct Shared {
    registry: Mutex<Registry>,
    /// Signalled when a child is spawned, to wake the thread from "no children".
    spawned: Condvar,
    spawned_flag: Mutex<bool>,
}

/// Handle to the process-wide reaper thread.
#[derive(Clone)]
pub struct Reaper {
    shared: Arc<Shared>,
}

static REAPER: OnceLock<Reaper> = OnceLock::new();

impl Reaper {
    /// The process's reaper, started on first use.
    pub fn start() -> Reaper {
        REAPER
            .get_or_init(|| {
                let shared = Arc::new(Shared {
                    registry: Mutex::default(),
                    spawned: Condvar::new(),
                    spawned_flag: Mutex::new(false),
                });
                let thread_shared = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name("reaper".into())
                    .spawn(move || reap_forever(&thread_shared));
                if let Err(e) = spawned {
                    tracing::error!("cannot start the reaper thread: {e}");
                }
                Reaper { shared }
            })
            .clone()
    }

    /// Registers `pid`; the receiver gets its exit status.
    pub fn watch(&self, pid: i32) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let mut reg = self
            .shared
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match reg.unclaimed.remove(&pid) {
            Some((exit, _)) => {
                let _ = tx.send(exit);
            }
            None => {
                reg.waiting.insert(pid, tx);
            }
        }
        drop(reg);
        self.notify_spawned();
        rx
    }

    /// Tells the reaper there are children to wait for.
    pub fn notify_spawned(&self) {
        let mut f = self
            .shared
            .spawned_flag
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *f = true;
        self.shared.spawned.notify_all();
    }
}

fn reap_forever(shared: &Shared) {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(status) => {
                let (pid, exit) = match status {
                    WaitStatus::Exited(pid, code) => (pid, Exit::Code(code)),
                    WaitStatus::Signaled(pid, sig, _) => (pid, Exit::Signal(sig as i32)),
                    _ => continue,
                };
                deliver(shared, pid.as_raw(), exit);
            }
            Err(nix::Error::EINTR) => {}
            Err(_) => {
                // ECHILD: no children now. Sleep until a spawn, or a while
                // (orphans can be re-parented to us at any time).
                let f = shared
                    .spawned_flag
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let (mut f, _) = shared
                    .spawned
                    .wait_timeout_while(f, Duration::from_millis(500), |spawned| !*spawned)
                    .unwrap_or_else(|e| e.into_inner());
                *f = false;
            }
        }
    }
}

fn deliver(shared: &Shared, pid: i32, exit: Exit) {
    let mut reg = shared.registry.lock().unwrap_or_else(|e| e.into_inner());
    match reg.waiting.remove(&pid) {
        Some(tx) => {
            let _ = tx.send(exit);
        }
        None => {
            debug!(pid, %exit, "reaped a process nobody waits for");
            let now = Instant::now();
            reg.unclaimed
                .retain(|_, (_, at)| now.duration_since(*at) < UNCLAIMED_TTL);
            reg.unclaimed.insert(pid, (exit, now));
        }
    }
}
