//! The node's services, in dependency order. Each runs as a personality of
//! `/usr/bin/kiln` in its own process, under the supervisor; later services
//! (machine API, networking, time, CRI, kubelet) join this list as they land.

use std::path::PathBuf;

use kiln_supervisor::reaper::Reaper;
use kiln_supervisor::{RestartPolicy, ServiceSpec, Supervisor, SupervisorConfig};
use tracing::{error, info};

use crate::boot::Boot;

const KILN: &str = "/usr/bin/kiln";
/// Services' cgroups live under here, one per service.
const CGROUP_ROOT: &str = "/sys/fs/cgroup/kiln";
/// Services' stdout/stderr, one file per service.
const LOG_DIR: &str = "/var/log/kiln";

/// The service definitions.
pub fn definitions() -> Vec<ServiceSpec> {
    vec![ServiceSpec::new("hotplug", [KILN, "hotplug"]).restart(RestartPolicy::Always)]
}

/// Starts the supervisor and the services; `None` if the boot did not
/// complete (nothing to run them on) or the definitions are invalid.
pub async fn start(boot: &Boot, reaper: Reaper) -> Option<Supervisor> {
    if !boot.complete {
        error!("boot incomplete (failed: {:?}): no services started", boot.failed);
        return None;
    }
    let config = SupervisorConfig {
        cgroup_root: Some(PathBuf::from(CGROUP_ROOT)),
        log_dir: Some(PathBuf::from(LOG_DIR)),
        ..SupervisorConfig::default()
    };
    let supervisor = Supervisor::new(config, reaper);
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
    Some(supervisor)
}
