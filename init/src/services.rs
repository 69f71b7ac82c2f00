//! The node's services, in dependency order. Each runs as a personality of
//! `/usr/bin/kiln` in its own process, under the supervisor; later services
//! (CRI, kubelet) join this list as they land.

use std::path::PathBuf;

use kiln_supervisor::reaper::Reaper;
use kiln_supervisor::{
    HealthCheck, Probe, RestartPolicy, ServiceSpec, State, Supervisor, SupervisorConfig,
};
use tracing::{error, info, warn};

use crate::boot::Boot;

const KILN: &str = "/usr/bin/kiln";
/// Services' cgroups live under here, one per service.
const CGROUP_ROOT: &str = "/sys/fs/cgroup/kiln";
/// Services' stdout/stderr, one file per service.
const LOG_DIR: &str = "/var/log/kiln";
/// timed's marker (`kiln_timed::SYNCED_MARKER`; a test keeps them equal).
const TIME_SYNCED: &str = "/run/kiln/time-synced";
/// The service that serves the machine API (and calls the control channel).
const API_SERVICE: &str = "apid";
/// The longest the boot waits for services to come up before it reports.
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The service definitions.
pub fn definitions() -> Vec<ServiceSpec> {
    // apid is healthy once its port accepts connections (TLS comes after).
    let api_port = std::net::SocketAddr::from(([127, 0, 0, 1], 50000));
    // timed is healthy once the clock was synced this boot. Nothing that
    // must run on a node without an NTP server (apid) depends on it; what
    // needs true time (kubelet) will.
    // The marker is there or not: one failed probe is "not synced (yet)",
    // so the boot's settle wait does not wait for time.
    let synced = HealthCheck {
        interval: std::time::Duration::from_secs(1),
        failure_threshold: 1,
        ..HealthCheck::new(Probe::File(PathBuf::from(TIME_SYNCED)))
    };
    vec![
        ServiceSpec::new("hotplug", [KILN, "hotplug"]).restart(RestartPolicy::Always),
        ServiceSpec::new("netd", [KILN, "netd"]).restart(RestartPolicy::Always),
        ServiceSpec::new("timed", [KILN, "timed"])
            .depends_on(&["netd"])
            .restart(RestartPolicy::Always)
            .health(synced),
        ServiceSpec::new(API_SERVICE, [KILN, "apid"])
            .restart(RestartPolicy::Always)
            .health(HealthCheck::new(Probe::TcpConnect(api_port))),
    ]
}

/// Starts the supervisor and the services; `None` if the boot did not
/// complete (nothing to run them on) or the definitions are invalid.
pub async fn start(boot: &Boot, reaper: Reaper) -> Option<Supervisor> {
    if !boot.complete {
        error!(
            "boot incomplete (failed: {:?}): no services started",
            boot.failed
        );
        return None;
    }
    let config = SupervisorConfig {
        cgroup_root: Some(PathBuf::from(CGROUP_ROOT)),
        log_dir: Some(PathBuf::from(LOG_DIR)),
        ..SupervisorConfig::default()
    };
    let supervisor = Supervisor::new(config, reaper);
    // Before the services start, so apid finds it as soon as it serves.
    crate::control::spawn(
        supervisor.clone(),
        PathBuf::from(kiln_api_proto::init::SOCKET),
        API_SERVICE,
        boot.phases.clone(),
    );
    let mut events = supervisor.subscribe();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            info!(service = %e.service, state = ?e.state, "{}", e.message);
        }
    });
    if let Err(e) = supervisor.load(definitions()).await {
        error!("invalid service definitions: {e}");
        return None;
    }
    wait_until_settled(&supervisor).await;
    Some(supervisor)
}

/// Waits until every service is healthy or has failed (bounded), so "boot
/// complete" means the node is up, and its time is the boot's real end.
/// Unhealthy counts as settled: its checks have failed their threshold and
/// it is reported as such (timed on a node with no NTP server stays so
/// until one is configured; the boot does not wait for that).
async fn wait_until_settled(supervisor: &Supervisor) {
    let mut events = supervisor.subscribe();
    let settled = |s: &Supervisor| {
        s.list().iter().all(|st| {
            matches!(
                st.state,
                State::Healthy | State::Unhealthy | State::Failed | State::Finished
            )
        })
    };
    let wait = async {
        while !settled(supervisor) {
            if events.recv().await.is_err() {
                return;
            }
        }
    };
    if tokio::time::timeout(SETTLE_LIMIT, wait).await.is_err() {
        warn!("services not settled after {SETTLE_LIMIT:?}; going on");
    }
    let list = supervisor.list();
    let states: Vec<String> = list
        .iter()
        .map(|s| format!("{}={:?}", s.id, s.state))
        .collect();
    info!(
        boot_ms = crate::clock::boot_ms(),
        pid1_rss_kib = own_rss_kib().unwrap_or(0),
        "services ready: {}",
        states.join(" ")
    );
}

/// PID 1's resident memory in KiB, from /proc/self/status.
fn own_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timed_is_healthy_on_timeds_own_marker() {
        let defs = definitions();
        let timed = defs.iter().find(|s| s.id == "timed").expect("timed");
        let probe = &timed.health.as_ref().expect("a health check").probe;
        assert_eq!(
            *probe,
            Probe::File(PathBuf::from(kiln_timed::SYNCED_MARKER))
        );
        assert_eq!(timed.depends_on, ["netd"]);
    }

    #[test]
    fn apid_does_not_wait_for_time() {
        // A node with no NTP server must still be reachable to be given one.
        let defs = definitions();
        let apid = defs.iter().find(|s| s.id == "apid").expect("apid");
        assert!(!apid.depends_on.iter().any(|d| d == "timed"));
    }
}
