//! Resource usage for ContainerStats and PodSandboxStats: CPU time and
//! memory from the container's cgroup (`cgroup`), the writable layer's
//! size from its overlay upper dir. Only running containers have a cgroup
//! to read; a pod's figures are the sums of its running containers' (a pod
//! has no cgroup of its own unless kubelet gives it a parent, which may
//! hold other pods' containers when it does not).

use std::path::PathBuf;

use super::cgroup::{Cgroup, Memory};
use super::container::ContainerView;
use super::{now_ns, Runtime, RuntimeError};
use crate::proto::v1::ContainerState;

/// One container's usage at `timestamp` (ns since the epoch).
#[derive(Debug, Clone)]
pub struct Usage {
    pub timestamp: i64,
    pub cpu_ns: Option<u64>,
    pub memory: Option<Memory>,
    /// The writable layer: where it is, allocated bytes, inodes.
    pub writable: (PathBuf, u64, u64),
}

impl Runtime {
    /// A container's usage; `None` for one that is not running.
    pub async fn container_usage(
        &self,
        view: &ContainerView,
    ) -> Result<Option<Usage>, RuntimeError> {
        if view.observed.state != ContainerState::ContainerRunning {
            return Ok(None);
        }
        let bundle = self.bundles_dir().join(&view.record.id);
        let upper = self.containers_dir().join(&view.record.id).join("upper");
        tokio::task::spawn_blocking(move || {
            let cgroup = Cgroup::of_bundle(&bundle)?;
            let (bytes, inodes) = crate::fsutil::disk_usage(&upper)
                .map_err(|(path, source)| RuntimeError::Io { path, source })?;
            Ok(Some(Usage {
                timestamp: now_ns(),
                cpu_ns: cgroup.cpu_usage_ns(),
                memory: cgroup.memory(),
                writable: (upper, bytes, inodes),
            }))
        })
        .await
        .map_err(|e| RuntimeError::Task(e.to_string()))?
    }
}

/// The sum of containers' usage (a pod's): a figure is present when any
/// container has it.
pub fn sum<'a>(usages: impl IntoIterator<Item = &'a Usage>) -> (Option<u64>, Option<Memory>) {
    let mut cpu: Option<u64> = None;
    let mut memory: Option<Memory> = None;
    for u in usages {
        if let Some(c) = u.cpu_ns {
            cpu = Some(cpu.unwrap_or(0) + c);
        }
        if let Some(m) = u.memory {
            memory = Some(match memory {
                None => m,
                Some(t) => Memory {
                    usage: t.usage + m.usage,
                    working_set: t.working_set + m.working_set,
                    rss: t.rss + m.rss,
                    available: t.available.zip(m.available).map(|(a, b)| a + b),
                    page_faults: t.page_faults + m.page_faults,
                    major_page_faults: t.major_page_faults + m.major_page_faults,
                },
            });
        }
    }
    (cpu, memory)
}
