//! The pod sandbox RPCs: RunPodSandbox, StopPodSandbox, RemovePodSandbox,
//! PodSandboxStatus (verbose: the record and a CNI CHECK) and
//! ListPodSandbox (filters: ID or ID prefix, state, labels).

use std::collections::HashMap;

use tonic::Status;

use super::status as to_status;
use crate::proto::v1::*;
use crate::runtime::record::State;
use crate::runtime::{Runtime, SandboxView};

pub async fn run(
    rt: &std::sync::Arc<Runtime>,
    req: RunPodSandboxRequest,
) -> Result<RunPodSandboxResponse, Status> {
    let config = super::required(req.config, "config", "is required")?;
    let id = rt
        .run_sandbox(config, &req.runtime_handler)
        .await
        .map_err(to_status)?;
    Ok(RunPodSandboxResponse { pod_sandbox_id: id })
}

pub async fn stop(
    rt: &Runtime,
    req: StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse, Status> {
    rt.stop_sandbox(&req.pod_sandbox_id)
        .await
        .map_err(to_status)?;
    Ok(StopPodSandboxResponse {})
}

pub async fn remove(
    rt: &Runtime,
    req: RemovePodSandboxRequest,
) -> Result<RemovePodSandboxResponse, Status> {
    rt.remove_sandbox(&req.pod_sandbox_id)
        .await
        .map_err(to_status)?;
    Ok(RemovePodSandboxResponse {})
}

pub async fn status(
    rt: &Runtime,
    req: PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse, Status> {
    let view = rt.status(&req.pod_sandbox_id).await.map_err(to_status)?;
    let mut info = HashMap::new();
    if req.verbose {
        info.insert(
            "info".into(),
            serde_json::json!({
                "record": view.record,
                "netns": view.netns,
            })
            .to_string(),
        );
        if view.record.state == State::Ready && !view.record.host_network {
            let check = match rt.check_network(&view.record.id).await {
                Ok(()) => "ok".to_string(),
                Err(e) => e.to_string(),
            };
            info.insert("network_check".into(), check);
        }
    }
    Ok(PodSandboxStatusResponse {
        status: Some(sandbox_status(&view)),
        info,
        containers_statuses: Vec::new(),
        timestamp: crate::runtime::now_ns(),
    })
}

pub async fn list(rt: &Runtime, req: ListPodSandboxRequest) -> ListPodSandboxResponse {
    let filter = req.filter.unwrap_or_default();
    let mut items: Vec<PodSandbox> = rt
        .list()
        .await
        .into_iter()
        .filter(|v| filter.id.is_empty() || v.record.id.starts_with(&filter.id))
        .filter(|v| {
            filter
                .state
                .as_ref()
                .is_none_or(|s| s.state == state(v.record.state) as i32)
        })
        .filter(|v| {
            filter
                .label_selector
                .iter()
                .all(|(k, want)| v.config.labels.get(k) == Some(want))
        })
        .map(|v| PodSandbox {
            id: v.record.id.clone(),
            metadata: v.config.metadata.clone(),
            state: state(v.record.state) as i32,
            created_at: v.record.created_at,
            labels: v.config.labels.clone(),
            annotations: v.config.annotations.clone(),
            runtime_handler: v.record.runtime_handler.clone(),
        })
        .collect();
    items.sort_by_key(|p| p.created_at);
    ListPodSandboxResponse { items }
}

fn state(s: State) -> PodSandboxState {
    match s {
        State::Ready => PodSandboxState::SandboxReady,
        State::NotReady => PodSandboxState::SandboxNotready,
    }
}

fn sandbox_status(v: &SandboxView) -> PodSandboxStatus {
    let mode = |host: bool| {
        if host {
            NamespaceMode::Node
        } else {
            NamespaceMode::Pod
        }
    };
    let pid = v
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .map_or(NamespaceMode::Container as i32, |o| o.pid);
    let mut ips = v.record.ips.iter();
    PodSandboxStatus {
        id: v.record.id.clone(),
        metadata: v.config.metadata.clone(),
        state: state(v.record.state) as i32,
        created_at: v.record.created_at,
        network: Some(PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| PodIp { ip: ip.clone() }).collect(),
        }),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(NamespaceOption {
                    network: mode(v.record.host_network) as i32,
                    ipc: mode(v.record.host_ipc) as i32,
                    pid,
                    ..Default::default()
                }),
            }),
        }),
        labels: v.config.labels.clone(),
        annotations: v.config.annotations.clone(),
        runtime_handler: v.record.runtime_handler.clone(),
    }
}
