//! ContainerStats, ListContainerStats, PodSandboxStats and
//! ListPodSandboxStats (filters: ID or ID prefix, sandbox, labels). Only
//! running containers have stats; `usage_nano_cores` is left to kubelet,
//! which derives it from two samples of `usage_core_nano_seconds`. Pod
//! network and process stats are not collected yet (absent).

use tonic::Status;

use super::status as to_status;
use crate::proto::v1::*;
use crate::runtime::container::ContainerView;
use crate::runtime::stats::{self, Usage};
use crate::runtime::{Runtime, RuntimeError, SandboxView};

fn u64v(value: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value })
}

fn cpu(timestamp: i64, ns: Option<u64>) -> Option<CpuUsage> {
    ns.map(|ns| CpuUsage {
        timestamp,
        usage_core_nano_seconds: u64v(ns),
        usage_nano_cores: None,
    })
}

fn memory(timestamp: i64, m: Option<crate::runtime::cgroup::Memory>) -> Option<MemoryUsage> {
    m.map(|m| MemoryUsage {
        timestamp,
        working_set_bytes: u64v(m.working_set),
        available_bytes: m.available.and_then(u64v),
        usage_bytes: u64v(m.usage),
        rss_bytes: u64v(m.rss),
        page_faults: u64v(m.page_faults),
        major_page_faults: u64v(m.major_page_faults),
    })
}

fn container_stats(v: &ContainerView, u: &Usage) -> ContainerStats {
    let (upper, bytes, inodes) = &u.writable;
    ContainerStats {
        attributes: Some(ContainerAttributes {
            id: v.record.id.clone(),
            metadata: v.config.metadata.clone(),
            labels: v.config.labels.clone(),
            annotations: v.config.annotations.clone(),
        }),
        cpu: cpu(u.timestamp, u.cpu_ns),
        memory: memory(u.timestamp, u.memory),
        writable_layer: Some(FilesystemUsage {
            timestamp: u.timestamp,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: upper.display().to_string(),
            }),
            used_bytes: u64v(*bytes),
            inodes_used: u64v(*inodes),
        }),
        swap: None,
    }
}

/// Stats of the running containers among `views`.
async fn collect(
    rt: &Runtime,
    views: &[ContainerView],
) -> Result<Vec<(ContainerStats, Usage)>, Status> {
    let mut out = Vec::new();
    for v in views {
        if let Some(u) = rt.container_usage(v).await.map_err(to_status)? {
            out.push((container_stats(v, &u), u));
        }
    }
    out.sort_by(|a, b| {
        let id = |s: &ContainerStats| s.attributes.as_ref().map(|a| a.id.clone());
        id(&a.0).cmp(&id(&b.0))
    });
    Ok(out)
}

pub async fn container(
    rt: &Runtime,
    req: ContainerStatsRequest,
) -> Result<ContainerStatsResponse, Status> {
    let v = rt.container_status(&req.container_id).map_err(to_status)?;
    let mut found = collect(rt, std::slice::from_ref(&v)).await?;
    let Some((stats, _)) = found.pop() else {
        return Err(to_status(RuntimeError::NotRunning(v.record.id)));
    };
    Ok(ContainerStatsResponse { stats: Some(stats) })
}

pub async fn list_containers(
    rt: &Runtime,
    req: ListContainerStatsRequest,
) -> Result<ListContainerStatsResponse, Status> {
    let f = req.filter.unwrap_or_default();
    let views: Vec<ContainerView> = rt
        .list_containers()
        .into_iter()
        .filter(|v| {
            v.record.id.starts_with(&f.id)
                && v.record.sandbox_id.starts_with(&f.pod_sandbox_id)
                && f.label_selector
                    .iter()
                    .all(|(k, want)| v.config.labels.get(k) == Some(want))
        })
        .collect();
    let stats = collect(rt, &views).await?;
    Ok(ListContainerStatsResponse {
        stats: stats.into_iter().map(|s| s.0).collect(),
    })
}

async fn pod_stats(rt: &Runtime, pod: &SandboxView) -> Result<PodSandboxStats, Status> {
    let views: Vec<ContainerView> = rt
        .list_containers()
        .into_iter()
        .filter(|v| v.record.sandbox_id == pod.record.id)
        .collect();
    let containers = collect(rt, &views).await?;
    let timestamp = crate::runtime::now_ns();
    let (cpu_ns, mem) = stats::sum(containers.iter().map(|c| &c.1));
    Ok(PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: pod.record.id.clone(),
            metadata: pod.config.metadata.clone(),
            labels: pod.config.labels.clone(),
            annotations: pod.config.annotations.clone(),
        }),
        linux: Some(LinuxPodSandboxStats {
            cpu: cpu(timestamp, cpu_ns),
            memory: memory(timestamp, mem),
            network: None,
            process: None,
            containers: containers.into_iter().map(|c| c.0).collect(),
        }),
        windows: None,
    })
}

pub async fn pod(
    rt: &Runtime,
    req: PodSandboxStatsRequest,
) -> Result<PodSandboxStatsResponse, Status> {
    let pod = rt.status(&req.pod_sandbox_id).await.map_err(to_status)?;
    Ok(PodSandboxStatsResponse {
        stats: Some(pod_stats(rt, &pod).await?),
    })
}

pub async fn list_pods(
    rt: &Runtime,
    req: ListPodSandboxStatsRequest,
) -> Result<ListPodSandboxStatsResponse, Status> {
    let f = req.filter.unwrap_or_default();
    let mut stats = Vec::new();
    for pod in rt.list().await {
        let keep = pod.record.id.starts_with(&f.id)
            && f.label_selector
                .iter()
                .all(|(k, want)| pod.config.labels.get(k) == Some(want));
        if keep {
            stats.push(pod_stats(rt, &pod).await?);
        }
    }
    Ok(ListPodSandboxStatsResponse { stats })
}
