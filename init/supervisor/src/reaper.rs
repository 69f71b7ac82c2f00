//! The process reaper. PID 1 must reap every process that dies under it,
//! orphans re-parented to it included, so exactly one task per process does
//! all the waiting: on every SIGCHLD it loops `waitpid(-1, WNOHANG)` and
//! hands each exit status to whoever registered that pid. Nothing else may
//! wait on a child (no `Child::wait`, `Command::output/status`,
//! `tokio::process`): they wait on specific pids and would race it.
//!
//! A child can exit before its spawner registers it; such exits are kept
//! for a while and handed over on registration. Exits nobody claims (true
//! orphans) are logged at debug and dropped after [`UNCLAIMED_TTL`].
//!
//! The task runs on its own small thread and runtime, started once per
//! process (a `OnceLock`): it must outlive any one runtime (tests start many
//! in one process) and never competes with PID 1's runtime.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tracing::{debug, error, warn};

pub use crate::spawn::{Command, SpawnError};

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

    fn from_wait_status(status: libc::c_int) -> Option<Exit> {
        if libc::WIFEXITED(status) {
            Some(Exit::Code(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(Exit::Signal(libc::WTERMSIG(status)))
        } else {
            None
        }
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

/// Unclaimed exits are dropped after this long.
pub const UNCLAIMED_TTL: Duration = Duration::from_secs(30);
/// Reaping also runs this often without a SIGCHLD: a safety net, and the
/// clock for dropping unclaimed exits.
const TICK: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Registry {
    waiting: HashMap<i32, oneshot::Sender<Exit>>,
    unclaimed: HashMap<i32, (Exit, Instant)>,
}

/// Handle to the process-wide reaper. Cheap to clone.
#[derive(Clone)]
pub struct Reaper {
    registry: Arc<Mutex<Registry>>,
}

/// Resolves to the process's exit; `None` only if the reaper is gone.
#[derive(Debug)]
pub struct ExitFuture(oneshot::Receiver<Exit>);

impl Future for ExitFuture {
    type Output = Option<Exit>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Exit>> {
        Pin::new(&mut self.0).poll(cx).map(Result::ok)
    }
}

static REAPER: OnceLock<Reaper> = OnceLock::new();

impl Reaper {
    /// The process's reaper, started on first use. Returns once it listens
    /// for SIGCHLD, so no exit from then on waits for the safety tick.
    pub fn start() -> Reaper {
        REAPER
            .get_or_init(|| {
                let reaper = Reaper {
                    registry: Arc::default(),
                };
                let registry = reaper.registry.clone();
                let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
                let thread = std::thread::Builder::new()
                    .name("kiln-reaper".into())
                    .spawn(move || {
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => rt.block_on(reap_loop(registry, Some(ready_tx))),
                            Err(e) => {
                                error!("reaper: cannot build its runtime: {e}");
                                let _ = ready_tx.send(false);
                            }
                        }
                    });
                let running = match thread {
                    Ok(_) => ready_rx.recv().unwrap_or(false),
                    Err(e) => {
                        error!("reaper: cannot start its thread: {e}");
                        false
                    }
                };
                if !running {
                    // Last resort: reap from the caller's runtime.
                    match tokio::runtime::Handle::try_current() {
                        Ok(h) => {
                            warn!("reaper: running on the caller's runtime");
                            h.spawn(reap_loop(reaper.registry.clone(), None));
                        }
                        Err(_) => error!("reaper: not running; children will not be reaped"),
                    }
                }
                reaper
            })
            .clone()
    }

    /// Starts `cmd` and registers it; the future resolves to its exit.
    pub fn spawn(&self, cmd: &Command) -> Result<(i32, ExitFuture), SpawnError> {
        let (tx, rx) = oneshot::channel();
        let forked = {
            // Forking under the lock: the new child cannot have been reaped
            // before it is registered, so an unclaimed exit under its pid
            // belongs to an earlier process that had the same pid.
            let mut reg = self.lock();
            let forked = crate::spawn::fork_exec(cmd)?;
            reg.unclaimed.remove(&forked.pid);
            reg.waiting.insert(forked.pid, tx);
            forked
        };
        let pid = forked.pid;
        match forked.finish() {
            Ok(pid) => Ok((pid, ExitFuture(rx))),
            Err(e) => {
                // The child exits at once; its exit goes to nobody.
                self.lock().waiting.remove(&pid);
                Err(e)
            }
        }
    }

    /// Registers a child started elsewhere; an exit the reaper already
    /// collected for `pid` is handed over at once.
    pub fn watch(&self, pid: i32) -> ExitFuture {
        let (tx, rx) = oneshot::channel();
        let mut reg = self.lock();
        match reg.unclaimed.remove(&pid) {
            Some((exit, _)) => {
                let _ = tx.send(exit);
            }
            None => {
                reg.waiting.insert(pid, tx);
            }
        }
        ExitFuture(rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Makes this process the reaper of its descendants' orphans, as PID 1 is
/// by nature: for tests and any reaper that is not PID 1.
pub fn become_subreaper() -> Result<(), nix::Error> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

async fn reap_loop(
    registry: Arc<Mutex<Registry>>,
    ready: Option<std::sync::mpsc::SyncSender<bool>>,
) {
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            error!("reaper: cannot listen for SIGCHLD ({e}); polling");
            None
        }
    };
    if let Some(ready) = ready {
        let _ = ready.send(true);
    }
    let tick = if sigchld.is_some() {
        TICK
    } else {
        Duration::from_millis(50)
    };
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        reap_all(&registry);
        match sigchld.as_mut() {
            Some(s) => {
                tokio::select! {
                    _ = s.recv() => {}
                    _ = ticker.tick() => drop_old_unclaimed(&registry),
                }
            }
            None => {
                ticker.tick().await;
                drop_old_unclaimed(&registry);
            }
        }
    }
}

/// Collects every exited child (SIGCHLDs coalesce: one may stand for many).
fn reap_all(registry: &Mutex<Registry>) {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes only to `status`. __WALL: children of any
        // clone flavour, as PID 1 must reap them all.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
        if pid == 0 {
            return; // children left, none exited
        }
        if pid < 0 {
            if nix::Error::last() == nix::Error::EINTR {
                continue;
            }
            return; // ECHILD: no children at all
        }
        let Some(exit) = Exit::from_wait_status(status) else {
            continue;
        };
        let mut reg = registry.lock().unwrap_or_else(|e| e.into_inner());
        match reg.waiting.remove(&pid) {
            Some(tx) => {
                let _ = tx.send(exit);
            }
            None => {
                debug!(pid, %exit, "reaped a process nobody waits for (yet)");
                reg.unclaimed.insert(pid, (exit, Instant::now()));
            }
        }
    }
}

fn drop_old_unclaimed(registry: &Mutex<Registry>) {
    let mut reg = registry.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    reg.unclaimed.retain(|pid, (exit, at)| {
        let keep = now.duration_since(*at) < UNCLAIMED_TTL;
        if !keep {
            debug!(pid, %exit, "orphan's exit never claimed; dropped");
        }
        keep
    });
}
