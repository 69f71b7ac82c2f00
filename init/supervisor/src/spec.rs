//! What a service is: the one interface every Kiln service implements (as
//! in Talos's machined): id, dependencies, start condition, command, restart
//! policy, health check, how to stop it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// When a finished process is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// Exponential restart delay: `initial`, ×`factor` per consecutive failure,
/// capped at `max`; back to `initial` once the process stayed up `reset_after`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub factor: u32,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            factor: 2,
            reset_after: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before restart number `n` (0-based) of a failing streak.
    pub fn delay(&self, n: u32) -> Duration {
        let mut d = self.initial;
        for _ in 0..n {
            d = d.saturating_mul(self.factor.max(1));
            if d >= self.max {
                return self.max;
            }
        }
        d.min(self.max)
    }
}

/// Something that must hold before a service starts (beyond dependencies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Always,
    /// Re-checked until the path exists (a socket, a device, a config file).
    PathExists(PathBuf),
    All(Vec<Condition>),
}

impl Condition {
    pub fn holds(&self) -> bool {
        match self {
            Condition::Always => true,
            Condition::PathExists(p) => p.exists(),
            Condition::All(cs) => cs.iter().all(Condition::holds),
        }
    }
}

/// How to tell a running service is working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The command exits 0 within the timeout.
    Exec(Vec<String>),
    /// A TCP connection is accepted.
    TcpConnect(SocketAddr),
    /// A unix socket accepts a connection.
    UnixConnect(PathBuf),
    /// The path exists: a marker a service writes (atomically) once it is
    /// ready, e.g. timed's `/run/kiln/time-synced`.
    File(PathBuf),
}

/// A periodic health check. Without one, a running service is healthy.
///
/// The first passing probe makes a service `Healthy`; `failure_threshold`
/// consecutive failures make it `Unhealthy` (failures within `start_period`
/// of the start do not count). An unhealthy service is reported, not
/// restarted: its dependents keep running, and it turns healthy again when
/// a probe passes.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Time after start during which failures are not counted.
    pub start_period: Option<Duration>,
    /// Consecutive failures before a service turns unhealthy (at least 1).
    pub failure_threshold: u32,
}

impl HealthCheck {
    pub fn new(probe: Probe) -> Self {
        Self {
            probe,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            start_period: None,
            failure_threshold: 3,
        }
    }
}

/// A service definition.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Also the name of its cgroup and log file: letters, digits, `-_.`.
    pub id: String,
    pub depends_on: Vec<String>,
    pub condition: Condition,
    /// argv; `command[0]` is a path or a name looked up in `env`'s PATH.
    pub command: Vec<String>,
    /// The whole environment of the process (nothing is inherited).
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    pub health: Option<HealthCheck>,
    pub stop_signal: nix::sys::signal::Signal,
    /// After the stop signal, how long before SIGKILL.
    pub stop_timeout: Duration,
}

impl ServiceSpec {
    pub fn new<I, S>(id: &str, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            id: id.to_string(),
            depends_on: Vec::new(),
            condition: Condition::Always,
            command: command.into_iter().map(Into::into).collect(),
            env: vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())],
            cwd: None,
            restart: RestartPolicy::Always,
            backoff: Backoff::default(),
            health: None,
            stop_signal: nix::sys::signal::Signal::SIGTERM,
            stop_timeout: Duration::from_secs(10),
        }
    }

    pub fn depends_on(mut self, ids: &[&str]) -> Self {
        self.depends_on = ids.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self
    }

    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn health(mut self, check: HealthCheck) -> Self {
        self.health = Some(check);
        self
    }

    pub fn condition(mut self, condition: Condition) -> Self {
        self.condition = condition;
        self
    }

    pub fn stop_signal(mut self, signal: nix::sys::signal::Signal) -> Self {
        self.stop_signal = signal;
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Sets (or replaces) one environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            factor: 2,
            reset_after: Duration::from_secs(5),
        };
        let ms: Vec<u128> = (0..6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
    }
}
