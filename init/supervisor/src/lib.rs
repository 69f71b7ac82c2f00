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

pub use reaper::Exit;
pub use spawn::SpawnError;
pub use spec::{Backoff, Condition, HealthCheck, Probe, RestartPolicy, ServiceSpec};

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use crate::cgroup::Cgroup;
use crate::logs::LogSink;
use crate::reaper::Reaper;

/// Invalid service definitions or requests.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("service {0:?} is defined twice")]
    Duplicate(String),
    #[error("service {service:?} depends on unknown service {dependency:?}")]
    UnknownDependency { service: String, dependency: String },
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("service {0:?} has an empty command")]
    EmptyCommand(String),
    #[error("no service {0:?}")]
    UnknownService(String),
}

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Waiting for dependencies or its start condition.
    Waiting,
    Starting,
    Running,
    Healthy,
    Unhealthy,
    Stopping,
    /// Exited 0 and not restarted.
    Finished,
    /// Exited non-zero or could not start; restarts if its policy says so.
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
}

/// A service's current state.
#[derive(Debug, Clone)]
pub struct ServiceStatus {
    pub id: String,
    pub state: State,
    pub pid: Option<i32>,
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    pub message: String,
    pub since: SystemTime,
}

/// Supervisor-wide settings.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Parent cgroup for services (`/sys/fs/cgroup/kiln` on a node).
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
    /// Services in the order they were stopped.
    pub stopped: Vec<String>,
    /// Services killed when the deadline passed.
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
}

/// The supervisor. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl Supervisor {
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
            }),
        }
    }

    /// Validates `specs` (ids unique, dependencies known, no cycles, commands
    /// non-empty) and starts a task for each; nothing starts if any is invalid.
    /// Must be called within a tokio runtime.
    pub async fn load(&self, specs: Vec<ServiceSpec>) -> Result<(), Error> {
        validate(
            &specs,
            &self
                .inner
                .services
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )?;
        for spec in specs {
            let status = ServiceStatus {
                id: spec.id.clone(),
                state: State::Waiting,
                pid: None,
                restarts: 0,
                last_exit: None,
                message: "loaded".into(),
                since: SystemTime::now(),
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
            self.inner
                .services
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(svc.spec.id.clone(), svc.clone());
            tokio::spawn(run_service(self.inner.clone(), svc));
        }
        Ok(())
    }

    /// State changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
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

    /// Starts a stopped, finished or failed service (again).
    pub fn start(&self, id: &str) -> Result<(), Error> {
        let svc = self.service(id)?;
        svc.desired.send_modify(|d| {
            d.run = true;
            d.generation += 1;
        });
        Ok(())
    }

    /// Stops a service and waits until its process is gone.
    pub async fn stop(&self, id: &str) -> Result<(), Error> {
        let svc = self.service(id)?;
        stop_and_wait(&self.inner, &svc).await;
        Ok(())
    }

    pub async fn restart(&self, id: &str) -> Result<(), Error> {
        self.stop(id).await?;
        self.start(id)
    }

    /// Stops every service, dependents before their dependencies, within
    /// `deadline`; whatever is left then is killed.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let start = Instant::now();
        let services = self.services();
        let stopped = Arc::new(Mutex::new(Vec::new()));
        let ordered = async {
            let mut remaining: BTreeSet<String> =
                services.iter().map(|s| s.spec.id.clone()).collect();
            while !remaining.is_empty() {
                // Services no remaining service depends on.
                let wave: Vec<Arc<Service>> = services
                    .iter()
                    .filter(|s| remaining.contains(&s.spec.id))
                    .filter(|s| {
                        !services.iter().any(|o| {
                            remaining.contains(&o.spec.id) && o.spec.depends_on.contains(&s.spec.id)
                        })
                    })
                    .cloned()
                    .collect();
                // Ask the whole wave at once, then wait: they stop in parallel.
                for s in &wave {
                    request_stop(s);
                }
                for s in &wave {
                    wait_stopped(&self.inner, s).await;
                    stopped
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(s.spec.id.clone());
                }
                for s in &wave {
                    remaining.remove(&s.spec.id);
                }
            }
        };
        let mut report = ShutdownReport::default();
        if tokio::time::timeout(deadline, ordered).await.is_err() {
            for s in &services {
                let st = s.status();
                if let Some(pid) = st.pid {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    report.killed.push(s.spec.id.clone());
                }
                s.desired.send_modify(|d| d.run = false);
            }
        }
        report.stopped = stopped.lock().unwrap_or_else(|e| e.into_inner()).clone();
        report.elapsed = start.elapsed();
        report
    }

    fn services(&self) -> Vec<Arc<Service>> {
        self.inner
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn service(&self, id: &str) -> Result<Arc<Service>, Error> {
        self.inner
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Error::UnknownService(id.to_string()))
    }
}

impl Service {
    fn status(&self) -> ServiceStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Asks a service to stop and waits until it is no longer running.
async fn stop_and_wait(inner: &Inner, svc: &Service) {
    request_stop(svc);
    wait_stopped(inner, svc).await;
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

fn validate(specs: &[ServiceSpec], existing: &BTreeMap<String, Arc<Service>>) -> Result<(), Error> {
    let mut ids = BTreeSet::new();
    for s in specs {
        if existing.contains_key(&s.id) || !ids.insert(s.id.as_str()) {
            return Err(Error::Duplicate(s.id.clone()));
        }
        if s.command.is_empty() {
            return Err(Error::EmptyCommand(s.id.clone()));
        }
    }
    let deps: BTreeMap<&str, &Vec<String>> = specs
        .iter()
        .map(|s| (s.id.as_str(), &s.depends_on))
        .collect();
    for s in specs {
        for d in &s.depends_on {
            if !ids.contains(d.as_str()) && !existing.contains_key(d) {
                return Err(Error::UnknownDependency {
                    service: s.id.clone(),
                    dependency: d.clone(),
                });
            }
        }
    }
    // Depth-first search for a cycle, reporting its path.
    fn visit<'a>(
        id: &'a str,
        deps: &BTreeMap<&'a str, &'a Vec<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Result<(), Error> {
        if let Some(pos) = path.iter().position(|p| *p == id) {
            let mut cycle: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
            cycle.push(id.to_string());
            return Err(Error::Cycle(cycle));
        }
        if done.contains(id) {
            return Ok(());
        }
        path.push(id);
        if let Some(ds) = deps.get(id) {
            for d in ds.iter() {
                visit(d.as_str(), deps, path, done)?;
            }
        }
        path.pop();
        done.insert(id);
        Ok(())
    }
    let mut done = BTreeSet::new();
    for s in specs {
        visit(&s.id, &deps, &mut Vec::new(), &mut done)?;
    }
    Ok(())
}

fn set_state(
    inner: &Inner,
    svc: &Service,
    state: State,
    message: impl Into<String>,
    pid: Option<i32>,
) {
    let message = message.into();
    {
        let mut st = svc.status.lock().unwrap_or_else(|e| e.into_inner());
        st.state = state;
        st.pid = pid;
        st.message = message.clone();
        st.since = SystemTime::now();
    }
    let _ = inner.events.send(Event {
        service: svc.spec.id.clone(),
        state,
        message,
        at: SystemTime::now(),
    });
    inner.changed.send_modify(|n| *n += 1);
}

/// True when every dependency is healthy.
fn dependencies_ready(inner: &Inner, svc: &Service) -> Result<(), String> {
    let services = inner.services.lock().unwrap_or_else(|e| e.into_inner());
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
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        };
        if !ready {
            continue;
        }

        set_state(&inner, &svc, State::Starting, "starting", None);
        let started = Instant::now();
        let (pid, exit_rx, cg) = match start_process(&inner, &svc) {
            Ok(p) => p,
            Err(e) => {
                warn!(service = %svc.spec.id, "cannot start: {e}");
                set_state(
                    &inner,
                    &svc,
                    State::Failed,
                    format!("cannot start: {e}"),
                    None,
                );
                if svc.spec.restart == RestartPolicy::Never {
                    wait_for_request(&mut desired).await;
                } else {
                    // A stop during the delay is handled at the loop's top.
                    backoff(&svc, &mut desired, &mut streak).await;
                }
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
            ))),
        };

        let mut exit_rx = exit_rx;
        let exit = tokio::select! {
            exit = &mut exit_rx => Some(exit.unwrap_or(Exit::Signal(0))),
            _ = stop_requested(&mut desired) => None,
        };
        if let Some(h) = &health {
            h.abort();
        }
        let exit = match exit {
            Some(e) => e,
            None => {
                set_state(
                    &inner,
                    &svc,
                    State::Stopping,
                    format!("stopping pid {pid}"),
                    Some(pid),
                );
                let e = stop_process(&svc, pid, exit_rx).await;
                if let Some(cg) = &cg {
                    cg.kill_all_and_remove().await;
                }
                svc.status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .last_exit = e;
                continue;
            }
        };
        if let Some(cg) = &cg {
            cg.kill_all_and_remove().await;
        }
        svc.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_exit = Some(exit);
        if started.elapsed() >= svc.spec.backoff.reset_after {
            streak = 0;
        }
        let restart = match svc.spec.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !exit.success(),
            RestartPolicy::Never => false,
        };
        if exit.success() && !restart {
            set_state(&inner, &svc, State::Finished, format!("{exit}"), None);
            wait_for_request(&mut desired).await;
            continue;
        }
        set_state(&inner, &svc, State::Failed, format!("{exit}"), None);
        if restart {
            // A stop during the delay is handled at the loop's top.
            backoff(&svc, &mut desired, &mut streak).await;
        } else {
            wait_for_request(&mut desired).await;
        }
    }
}

/// Sleeps the backoff delay, or less if a stop request cuts it short.
async fn backoff(svc: &Service, desired: &mut watch::Receiver<Desired>, streak: &mut u32) {
    let delay = svc.spec.backoff.delay(*streak);
    *streak += 1;
    svc.status
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .restarts += 1;
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop_requested(desired) => {}
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

/// Waits for any new request (start after finish, or stop).
async fn wait_for_request(desired: &mut watch::Receiver<Desired>) {
    desired.borrow_and_update();
    let _ = desired.changed().await;
}

/// Forks the service's process into its cgroup with output captured.
fn start_process(
    inner: &Inner,
    svc: &Service,
) -> Result<(i32, tokio::sync::oneshot::Receiver<Exit>, Option<Cgroup>), String> {
    let spec = &svc.spec;
    let cstr = |s: &str| CString::new(s).map_err(|_| format!("NUL byte in {s:?}"));
    let argv = spec
        .command
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>, _>>()?;
    let env = spec
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;
    let cwd = spec
        .cwd
        .as_ref()
        .map(|p| cstr(&p.to_string_lossy()))
        .transpose()?;
    let (cg, procs) = match &inner.config.cgroup_root {
        Some(root) => match Cgroup::create(root, &spec.id) {
            Ok((cg, fd)) => (Some(cg), Some(fd)),
            Err(e) => {
                warn!(service = %spec.id, "no cgroup under {}: {e}", root.display());
                (None, None)
            }
        },
        None => (None, None),
    };
    let output = svc.logs.pipe().map_err(|e| format!("output pipe: {e}"))?;
    let launch = spawn::Launch {
        argv,
        env,
        cwd,
        output,
        cgroup_procs: procs,
    };
    let pid = spawn::spawn(&launch).map_err(|e| e.to_string())?;
    let exit = inner.reaper.watch(pid);
    info!(service = %spec.id, pid, "started");
    Ok((pid, exit, cg))
}

/// Stop signal, then SIGKILL after the stop timeout. Returns the exit.
async fn stop_process(
    svc: &Service,
    pid: i32,
    exit: tokio::sync::oneshot::Receiver<Exit>,
) -> Option<Exit> {
    let _ = kill(Pid::from_raw(pid), svc.spec.stop_signal);
    let mut exit = exit;
    match tokio::time::timeout(svc.spec.stop_timeout, &mut exit).await {
        Ok(e) => e.ok(),
        Err(_) => {
            warn!(service = %svc.spec.id, pid, "did not stop in {:?}: SIGKILL", svc.spec.stop_timeout);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            tokio::time::timeout(Duration::from_secs(5), exit)
                .await
                .ok()
                .and_then(Result::ok)
        }
    }
}

/// Probes a running service; Healthy/Unhealthy transitions become events.
async fn watch_health(inner: Arc<Inner>, svc: Arc<Service>, check: HealthCheck, pid: i32) {
    let mut failures = 0u32;
    loop {
        let result = health::check(&check.probe, check.timeout, &inner.reaper).await;
        let state = svc.status().state;
        match result {
            Ok(()) => {
                failures = 0;
                if state != State::Healthy {
                    set_state(
                        &inner,
                        &svc,
                        State::Healthy,
                        "health check passed",
                        Some(pid),
                    );
                }
            }
            Err(reason) => {
                failures += 1;
                if state == State::Healthy && failures >= check.failure_threshold {
                    set_state(
                        &inner,
                        &svc,
                        State::Unhealthy,
                        format!("health check failed {failures} times: {reason}"),
                        Some(pid),
                    );
                }
            }
        }
        tokio::time::sleep(check.interval).await;
    }
}
