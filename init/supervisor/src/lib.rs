//! Kiln's service supervisor, run inside PID 1.
//!
//! Each service ([`ServiceSpec`]) gets one task that walks it through its
//! life: wait for dependencies to be healthy and the start condition to
//! hold, start the process (own session, own cgroup, output captured), watch
//! its health, restart it with backoff per its policy, stop it on request.
//! Every state change is an [`Event`] on a broadcast channel.
//!
//! Invariants: no task waits on a child except through the [`reaper`]; every
//! sleep is cancellable by a stop, so a crash-looping service never delays
//! shutdown; a service that fails never stops the others.

mod cgroup;
mod health;
mod logs;
pub mod reaper;
mod spawn;
mod spec;
mod validate;

pub use reaper::{Exit, SpawnError};
pub use spec::{Backoff, Condition, HealthCheck, Probe, RestartPolicy, ServiceSpec};
pub use validate::Error;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::cgroup::Cgroup;
use crate::logs::LogSink;
use crate::reaper::{Command, ExitFuture, Reaper};

/// How often a start condition on paths is re-checked.
const CONDITION_POLL: Duration = Duration::from_millis(250);
/// After SIGKILL, how long a process may take to be reaped.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Waiting for dependencies or its start condition.
    Waiting,
    Starting,
    /// Started; its health check has not passed yet.
    Running,
    Healthy,
    /// Its health check failed `failure_threshold` times in a row.
    Unhealthy,
    Stopping,
    /// Exited 0. Not restarted unless the policy is `Always` (then the
    /// message says when).
    Finished,
    /// Exited non-zero or could not start; the message says whether and when
    /// it restarts.
    Failed,
    /// Stopped on request.
    Stopped,
}

/// A state change.
#[derive(Debug, Clone)]
pub struct Event {
    pub service: String,
    pub state: State,
    pub message: String,
    pub at: SystemTime,
    /// The change's number: increases with every change of any service.
    pub seq: u64,
}

/// A service's current state.
#[derive(Debug, Clone)]
pub struct ServiceStatus {
    pub id: String,
    pub state: State,
    pub pid: Option<i32>,
    /// Restarts scheduled so far (after exits or start failures).
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    pub message: String,
    pub since: SystemTime,
    /// The number of the change that set this state (0: none yet).
    pub seq: u64,
}

/// Supervisor-wide settings.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Parent cgroup (v2) for services (`/sys/fs/cgroup/kiln` on a node).
    pub cgroup_root: Option<PathBuf>,
    /// Directory for `<service>.log` (`/var/log/kiln` on a node).
    pub log_dir: Option<PathBuf>,
    /// Lines kept in memory per service.
    pub log_lines: usize,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            cgroup_root: None,
            log_dir: None,
            log_lines: 1000,
        }
    }
}

/// What [`Supervisor::shutdown`] did.
#[derive(Debug, Default, Clone)]
pub struct ShutdownReport {
    /// Services in the order they reached `Stopped` within the deadline.
    pub stopped: Vec<String>,
    /// Services still running at the deadline, then SIGKILLed.
    pub killed: Vec<String>,
    pub elapsed: Duration,
}

impl std::fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} stopped [{}] in {} ms",
            self.stopped.len(),
            self.stopped.join(" "),
            self.elapsed.as_millis()
        )?;
        if !self.killed.is_empty() {
            write!(f, ", killed at the deadline [{}]", self.killed.join(" "))?;
        }
        Ok(())
    }
}

/// What the operator wants of a service; `generation` bumps on every request
/// so a finished service can be started again.
#[derive(Debug, Clone, Copy)]
struct Desired {
    run: bool,
    generation: u64,
}

struct Service {
    spec: ServiceSpec,
    status: Mutex<ServiceStatus>,
    desired: watch::Sender<Desired>,
    logs: LogSink,
}

struct Inner {
    config: SupervisorConfig,
    reaper: Reaper,
    services: Mutex<BTreeMap<String, Arc<Service>>>,
    events: broadcast::Sender<Event>,
    /// Bumped on every state change, for tasks waiting on other services.
    changed: watch::Sender<u64>,
    /// Set by shutdown: no service starts again.
    shutting_down: AtomicBool,
    /// The last change's number ([`Event::seq`]).
    seq: AtomicU64,
}

/// The supervisor. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl Supervisor {
    /// `reaper` is the process's one reaper ([`Reaper::start`]).
    pub fn new(config: SupervisorConfig, reaper: Reaper) -> Self {
        let (events, _) = broadcast::channel(1024);
        let (changed, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                config,
                reaper,
                services: Mutex::default(),
                events,
                changed,
                shutting_down: AtomicBool::new(false),
                seq: AtomicU64::new(0),
            }),
        }
    }

    /// Validates `specs` (ids unique and usable as file names, dependencies
    /// known, no cycles, commands non-empty) against each other and the
    /// services already loaded, then starts a task for each; nothing is
    /// loaded if any is invalid. Must be called within a tokio runtime.
    pub async fn load(&self, specs: Vec<ServiceSpec>) -> Result<(), Error> {
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let mut services = self.inner.lock_services();
        validate::validate(&specs, &services)?;
        for spec in specs {
            let status = ServiceStatus {
                id: spec.id.clone(),
                state: State::Waiting,
                pid: None,
                restarts: 0,
                last_exit: None,
                message: "loaded".into(),
                since: SystemTime::now(),
                seq: 0,
            };
            let (desired, _) = watch::channel(Desired {
                run: true,
                generation: 0,
            });
            let logs = LogSink::new(
                &spec.id,
                self.inner.config.log_dir.as_deref(),
                self.inner.config.log_lines,
            );
            let svc = Arc::new(Service {
                spec,
                status: Mutex::new(status),
                desired,
                logs,
            });
            services.insert(svc.spec.id.clone(), svc.clone());
            tokio::spawn(run_service(self.inner.clone(), svc));
        }
        Ok(())
    }

    /// State changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The current states, and the changes after them: a watcher neither
    /// misses a change nor sees one its snapshot already shows.
    pub fn watch(&self) -> (Vec<ServiceStatus>, Changes) {
        // Subscribed before the snapshot, so nothing falls in between.
        let events = self.subscribe();
        let states = self.list();
        let seen = states.iter().map(|s| (s.id.clone(), s.seq)).collect();
        (states, Changes { events, seen })
    }

    pub fn list(&self) -> Vec<ServiceStatus> {
        self.services().iter().map(|s| s.status()).collect()
    }

    pub fn status(&self, id: &str) -> Result<ServiceStatus, Error> {
        Ok(self.service(id)?.status())
    }

    /// The last captured output lines of a service.
    pub fn logs(&self, id: &str) -> Result<Vec<String>, Error> {
        Ok(self.service(id)?.logs.lines())
    }

    /// New output lines of a service, as they come.
    pub fn follow_logs(&self, id: &str) -> Result<broadcast::Receiver<String>, Error> {
        Ok(self.service(id)?.logs.subscribe())
    }

    /// Starts a stopped, finished or failed service (again); no-op for a
    /// running one.
    pub fn start(&self, id: &str) -> Result<(), Error> {
        let svc = self.service(id)?;
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        svc.desired.send_modify(|d| {
            d.run = true;
            d.generation += 1;
        });
        Ok(())
    }

    /// Stops a service (stop signal, SIGKILL after its stop timeout) and
    /// waits until it is `Stopped`. Its dependents are left running.
    pub async fn stop(&self, id: &str) -> Result<(), Error> {
        let svc = self.service(id)?;
        request_stop(&svc);
        wait_stopped(&self.inner, &svc).await;
        Ok(())
    }

    pub async fn restart(&self, id: &str) -> Result<(), Error> {
        self.stop(id).await?;
        self.start(id)
    }

    /// Stops every service, each once all its dependents are stopped
    /// (independent ones concurrently), within `deadline`; past it whatever
    /// still runs is SIGKILLed, its cgroup included. Services waiting or in
    /// backoff are simply cancelled. No service starts afterwards.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let start = Instant::now();
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let services = self.services();
        let stopped = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        for svc in &services {
            let dependents: Vec<Arc<Service>> = services
                .iter()
                .filter(|o| o.spec.depends_on.contains(&svc.spec.id))
                .cloned()
                .collect();
            let (inner, svc, stopped) = (self.inner.clone(), svc.clone(), stopped.clone());
            tasks.spawn(async move {
                for d in &dependents {
                    wait_stopped(&inner, d).await;
                }
                request_stop(&svc);
                wait_stopped(&inner, &svc).await;
                lock(&stopped).push(svc.spec.id.clone());
            });
        }
        let all = async { while tasks.join_next().await.is_some() {} };
        let in_time = tokio::time::timeout(deadline, all).await.is_ok();
        // Dropping the set cancels the ordering tasks still waiting.
        drop(tasks);
        let mut report = ShutdownReport::default();
        if !in_time {
            for svc in &services {
                request_stop(svc);
                if svc.status().state == State::Stopped {
                    continue;
                }
                if let Some(root) = &self.inner.config.cgroup_root {
                    cgroup::kill_all(&root.join(&svc.spec.id));
                }
                // Only a service with a process is killed; others are just
                // told to stop (above).
                if let Some(pid) = svc.status().pid {
                    warn!(service = %svc.spec.id, pid, "still running at the shutdown deadline: SIGKILL");
                    kill_group(pid);
                    report.killed.push(svc.spec.id.clone());
                }
            }
            // Let their tasks see the exits and clean up (bounded).
            let settle = async {
                for svc in &services {
                    wait_stopped(&self.inner, svc).await;
                }
            };
            let _ = tokio::time::timeout(KILL_GRACE, settle).await;
        }
        report.stopped = lock(&stopped).clone();
        report.elapsed = start.elapsed();
        report
    }

    fn services(&self) -> Vec<Arc<Service>> {
        self.inner.lock_services().values().cloned().collect()
    }

    fn service(&self, id: &str) -> Result<Arc<Service>, Error> {
        self.inner
            .lock_services()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::UnknownService(id.to_string()))
    }
}

/// State changes after a snapshot ([`Supervisor::watch`]).
pub struct Changes {
    events: broadcast::Receiver<Event>,
    /// Per service, the change its snapshot showed.
    seen: HashMap<String, u64>,
}

impl Changes {
    /// The next change. `Lagged(n)` if this watcher fell so far behind that
    /// `n` changes were dropped for it; `Closed` once the supervisor is gone.
    pub async fn recv(&mut self) -> Result<Event, broadcast::error::RecvError> {
        loop {
            let event = self.events.recv().await?;
            match self.seen.get(&event.service) {
                Some(&shown) if event.seq <= shown => continue,
                _ => return Ok(event),
            }
        }
    }
}

impl Inner {
    fn lock_services(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Service>>> {
        lock(&self.services)
    }
}

impl Service {
    fn status(&self) -> ServiceStatus {
        lock(&self.status).clone()
    }
}

/// A poisoned lock still holds consistent data here (plain fields): use it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn request_stop(svc: &Service) {
    svc.desired.send_modify(|d| {
        d.run = false;
        d.generation += 1;
    });
}

async fn wait_stopped(inner: &Inner, svc: &Service) {
    let mut changed = inner.changed.subscribe();
    loop {
        if svc.status().state == State::Stopped {
            return;
        }
        if changed.changed().await.is_err() {
            return;
        }
    }
}

/// SIGKILL to a service's main process and its process group (its
/// session's leader group: the pgid is its pid, as it called setsid).
fn kill_group(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
}

/// Records a state change and announces it. The event is sent under the
/// status lock so events come in the order the states were set.
fn set_state(
    inner: &Inner,
    svc: &Service,
    state: State,
    message: impl Into<String>,
    pid: Option<i32>,
) {
    let mut st = lock(&svc.status);
    apply(inner, svc, &mut st, state, message.into(), pid);
}

/// A health result for run `pid`: applies only while that run is up, so a
/// late probe cannot overwrite `Stopping` or an exit.
fn set_health(inner: &Inner, svc: &Service, pid: i32, state: State, message: String) {
    let mut st = lock(&svc.status);
    let live = matches!(st.state, State::Running | State::Healthy | State::Unhealthy);
    if live && st.pid == Some(pid) && st.state != state {
        apply(inner, svc, &mut st, state, message, Some(pid));
    }
}

fn apply(
    inner: &Inner,
    svc: &Service,
    st: &mut ServiceStatus,
    state: State,
    message: String,
    pid: Option<i32>,
) {
    st.state = state;
    st.pid = pid;
    st.message = message.clone();
    st.since = SystemTime::now();
    st.seq = inner.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let _ = inner.events.send(Event {
        service: svc.spec.id.clone(),
        state,
        message,
        at: st.since,
        seq: st.seq,
    });
    inner.changed.send_modify(|n| *n += 1);
}

/// `Ok` when every dependency is healthy, else what is awaited.
fn dependencies_ready(inner: &Inner, svc: &Service) -> Result<(), String> {
    let services = inner.lock_services();
    for d in &svc.spec.depends_on {
        match services.get(d).map(|s| s.status().state) {
            Some(State::Healthy) => {}
            Some(state) => return Err(format!("waiting for {d} ({state:?})")),
            None => return Err(format!("waiting for unknown {d}")),
        }
    }
    Ok(())
}

/// One service's whole life.
async fn run_service(inner: Arc<Inner>, svc: Arc<Service>) {
    let mut desired = svc.desired.subscribe();
    let mut changed = inner.changed.subscribe();
    let mut streak = 0u32;
    loop {
        // Not wanted: wait for a start request.
        if !desired.borrow_and_update().run {
            if svc.status().state != State::Stopped {
                set_state(&inner, &svc, State::Stopped, "stopped", None);
            }
            if desired.changed().await.is_err() {
                return;
            }
            continue;
        }
        // Dependencies and condition.
        let mut last_reason = String::new();
        let ready = loop {
            if !desired.borrow().run {
                break false;
            }
            let reason = match dependencies_ready(&inner, &svc) {
                Ok(()) if svc.spec.condition.holds() => break true,
                Ok(()) => format!("waiting for condition {:?}", svc.spec.condition),
                Err(r) => r,
            };
            if reason != last_reason {
                set_state(&inner, &svc, State::Waiting, reason.clone(), None);
                last_reason = reason;
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = desired.changed() => {}
                // Conditions on paths are polled.
                _ = tokio::time::sleep(CONDITION_POLL) => {}
            }
        };
        if !ready {
            continue;
        }

        set_state(&inner, &svc, State::Starting, "starting", None);
        let started = Instant::now();
        let (pid, mut exit_rx, cg) = match start_process(&inner, &svc) {
            Ok(p) => p,
            Err(e) => {
                warn!(service = %svc.spec.id, "cannot start: {e}");
                let why = format!("cannot start: {e}");
                after_exit(&inner, &svc, &mut desired, &mut streak, why, false).await;
                continue;
            }
        };
        set_state(
            &inner,
            &svc,
            State::Running,
            format!("running as pid {pid}"),
            Some(pid),
        );
        let health = match svc.spec.health.clone() {
            None => {
                set_state(
                    &inner,
                    &svc,
                    State::Healthy,
                    "running (no health check)",
                    Some(pid),
                );
                None
            }
            Some(check) => Some(tokio::spawn(watch_health(
                inner.clone(),
                svc.clone(),
                check,
                pid,
                started,
            ))),
        };

        let exit = tokio::select! {
            exit = &mut exit_rx => Some(exit),
            _ = stop_requested(&mut desired) => None,
        };
        if let Some(h) = &health {
            h.abort();
        }
        let Some(exit) = exit else {
            set_state(
                &inner,
                &svc,
                State::Stopping,
                format!("stopping pid {pid}"),
                Some(pid),
            );
            let exit = stop_process(&svc, pid, exit_rx).await;
            if let Some(cg) = &cg {
                cg.kill_all_and_remove().await;
            }
            lock(&svc.status).last_exit = exit;
            continue; // the loop's top reports Stopped
        };
        if let Some(cg) = &cg {
            cg.kill_all_and_remove().await;
        }
        lock(&svc.status).last_exit = exit;
        if started.elapsed() >= svc.spec.backoff.reset_after {
            streak = 0;
        }
        let (what, success) = match exit {
            Some(e) => (e.to_string(), e.success()),
            None => ("exit status lost".to_string(), false),
        };
        info!(service = %svc.spec.id, pid, "{what}");
        after_exit(&inner, &svc, &mut desired, &mut streak, what, success).await;
    }
}

/// Reports an ended run (or failed start) and applies the restart policy:
/// sleeps the backoff delay or waits for a request. Any request (stop,
/// start, restart) ends either wait; the caller's loop then acts on it.
async fn after_exit(
    inner: &Inner,
    svc: &Service,
    desired: &mut watch::Receiver<Desired>,
    streak: &mut u32,
    what: String,
    success: bool,
) {
    // Taken before the state is announced, so a request made on seeing it
    // is not missed.
    let (generation, wanted) = {
        let d = desired.borrow_and_update();
        (d.generation, d.run)
    };
    let state = if success {
        State::Finished
    } else {
        State::Failed
    };
    if !wanted {
        // A stop came while the process was exiting: no restart, and no
        // wait for a newer request (the stop already is the newest).
        set_state(inner, svc, state, format!("{what}; stop requested"), None);
        return;
    }
    let restart = match svc.spec.restart {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !success,
        RestartPolicy::Never => false,
    };
    if !restart {
        set_state(inner, svc, state, format!("{what}; not restarted"), None);
        new_request(desired, generation).await;
        return;
    }
    let delay = svc.spec.backoff.delay(*streak);
    *streak = streak.saturating_add(1);
    let n = {
        let mut st = lock(&svc.status);
        st.restarts = st.restarts.saturating_add(1);
        st.restarts
    };
    set_state(
        inner,
        svc,
        state,
        format!("{what}; restart {n} in {} ms", delay.as_millis()),
        None,
    );
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = new_request(desired, generation) => {}
    }
}

/// Resolves when a stop is requested.
async fn stop_requested(desired: &mut watch::Receiver<Desired>) {
    loop {
        if !desired.borrow_and_update().run {
            return;
        }
        if desired.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves once a request newer than `generation` was made.
async fn new_request(desired: &mut watch::Receiver<Desired>, generation: u64) {
    loop {
        if desired.borrow_and_update().generation != generation {
            return;
        }
        if desired.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Starts the service's process in its cgroup, output captured.
fn start_process(
    inner: &Inner,
    svc: &Service,
) -> Result<(i32, ExitFuture, Option<Cgroup>), String> {
    let spec = &svc.spec;
    let output = svc.logs.pipe().map_err(|e| format!("output pipe: {e}"))?;
    let mut cmd = Command::new(spec.command.iter().cloned())
        .envs(&spec.env)
        .output(output);
    if let Some(dir) = &spec.cwd {
        cmd = cmd.cwd(dir);
    }
    let mut cg = None;
    if let Some(root) = &inner.config.cgroup_root {
        // Without its cgroup a service still runs: PID 1 must keep the node
        // up; strays are then not cleaned up.
        match Cgroup::create(root, &spec.id) {
            Ok((c, procs)) => {
                cmd = cmd.cgroup_procs(procs);
                cg = Some(c);
            }
            Err(e) => warn!(service = %spec.id, "no cgroup under {}: {e}", root.display()),
        }
    }
    match inner.reaper.spawn(&cmd) {
        Ok((pid, exit)) => {
            info!(service = %spec.id, pid, "started");
            Ok((pid, exit, cg))
        }
        Err(e) => {
            if let Some(cg) = cg {
                cg.remove();
            }
            Err(e.to_string())
        }
    }
}

/// Stop signal, then SIGKILL (to its process group too) after the stop
/// timeout. Returns the exit.
async fn stop_process(svc: &Service, pid: i32, mut exit: ExitFuture) -> Option<Exit> {
    let _ = kill(Pid::from_raw(pid), svc.spec.stop_signal);
    if let Ok(e) = tokio::time::timeout(svc.spec.stop_timeout, &mut exit).await {
        return e;
    }
    warn!(service = %svc.spec.id, pid, "did not stop in {:?}: SIGKILL", svc.spec.stop_timeout);
    kill_group(pid);
    match tokio::time::timeout(KILL_GRACE, exit).await {
        Ok(e) => e,
        Err(_) => {
            warn!(service = %svc.spec.id, pid, "not reaped {KILL_GRACE:?} after SIGKILL");
            None
        }
    }
}

/// Probes a running service; Healthy/Unhealthy transitions become events.
async fn watch_health(
    inner: Arc<Inner>,
    svc: Arc<Service>,
    check: HealthCheck,
    pid: i32,
    started: Instant,
) {
    let threshold = check.failure_threshold.max(1);
    let mut failures = 0u32;
    loop {
        match health::check(&check.probe, check.timeout, &svc.spec.env, &inner.reaper).await {
            Ok(()) => {
                failures = 0;
                set_health(
                    &inner,
                    &svc,
                    pid,
                    State::Healthy,
                    "health check passed".into(),
                );
            }
            Err(reason) => {
                let grace = check.start_period.is_some_and(|p| started.elapsed() < p);
                if !grace {
                    failures = failures.saturating_add(1);
                }
                if failures >= threshold {
                    let message = format!("{failures} health checks failed; last: {reason}");
                    set_health(&inner, &svc, pid, State::Unhealthy, message);
                }
            }
        }
        tokio::time::sleep(check.interval).await;
    }
}
