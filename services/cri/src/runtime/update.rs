//! UpdateContainerResources: new memory and CPU limits written into a
//! running container's cgroup (`cgroup::Cgroup::update`), then kept in its
//! stored config so ContainerStatus (and a restarted daemon) report them.
//! A container that is not running answers FAILED_PRECONDITION: its spec
//! is fixed at creation.

use prost::Message;

use crate::fsutil::write_atomic;
use crate::proto::v1::{ContainerState, LinuxContainerConfig, LinuxContainerResources};

use super::cgroup::{Cgroup, Limits};
use super::container::{io, observe, CONFIG};
use super::{Runtime, RuntimeError};

/// The request's limits, each checked.
fn limits(r: &LinuxContainerResources) -> Result<Limits, RuntimeError> {
    let non_negative = |field: &'static str, v: i64| {
        u64::try_from(v).map_err(|_| RuntimeError::Invalid {
            field,
            problem: format!("{v} is negative"),
        })
    };
    Ok(Limits {
        memory: non_negative("linux.memory_limit_in_bytes", r.memory_limit_in_bytes)?,
        cpu_shares: non_negative("linux.cpu_shares", r.cpu_shares)?,
        cpu_quota: non_negative("linux.cpu_quota", r.cpu_quota)?,
        cpu_period: non_negative("linux.cpu_period", r.cpu_period)?,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
    })
}

impl Runtime {
    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: LinuxContainerResources,
    ) -> Result<(), RuntimeError> {
        let rec = self.container(id)?;
        let limits = limits(&resources)?;
        let dir = self.containers_dir().join(&rec.id);
        if observe(&dir).state != ContainerState::ContainerRunning {
            return Err(RuntimeError::NotRunning(rec.id));
        }
        let bundle = self.bundles_dir().join(&rec.id);
        tokio::task::spawn_blocking(move || Cgroup::of_bundle(&bundle)?.update(&limits))
            .await
            .map_err(|e| RuntimeError::Task(e.to_string()))??;
        let config = {
            let mut index = self.index();
            let Some((_, config)) = index.containers.get_mut(&rec.id) else {
                return Err(RuntimeError::ContainerNotFound(rec.id));
            };
            let linux = config
                .linux
                .get_or_insert_with(LinuxContainerConfig::default);
            linux.resources = Some(resources);
            config.clone()
        };
        let path = dir.join(CONFIG);
        write_atomic(&path, &config.encode_to_vec()).map_err(io(&path))?;
        tracing::info!(container = %rec.id, "container resources updated");
        Ok(())
    }
}
