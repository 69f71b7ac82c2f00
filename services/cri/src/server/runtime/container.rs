//! The container RPCs: CreateContainer, StartContainer, StopContainer,
//! RemoveContainer, ContainerStatus, ListContainers (filters: ID or ID
//! prefix, state, sandbox, labels), ExecSync and UpdateContainerResources.

use std::sync::Arc;

use tonic::Status;

use super::status as to_status;
use crate::proto::v1::*;
use crate::runtime::container::ContainerView;
use crate::runtime::Runtime;

pub async fn create(
    rt: &Arc<Runtime>,
    req: CreateContainerRequest,
) -> Result<CreateContainerResponse, Status> {
    let config = super::required(req.config, "config", "is required")?;
    let id = rt
        .create_container(&req.pod_sandbox_id, config)
        .await
        .map_err(to_status)?;
    Ok(CreateContainerResponse { container_id: id })
}

pub async fn start(
    rt: &Runtime,
    req: StartContainerRequest,
) -> Result<StartContainerResponse, Status> {
    rt.start_container(&req.container_id)
        .await
        .map_err(to_status)?;
    Ok(StartContainerResponse {})
}

pub async fn stop(
    rt: &Runtime,
    req: StopContainerRequest,
) -> Result<StopContainerResponse, Status> {
    rt.stop_container(&req.container_id, req.timeout)
        .await
        .map_err(to_status)?;
    Ok(StopContainerResponse {})
}

pub async fn remove(
    rt: &Runtime,
    req: RemoveContainerRequest,
) -> Result<RemoveContainerResponse, Status> {
    rt.remove_container(&req.container_id)
        .await
        .map_err(to_status)?;
    Ok(RemoveContainerResponse {})
}

pub fn status(
    rt: &Runtime,
    req: ContainerStatusRequest,
) -> Result<ContainerStatusResponse, Status> {
    let v = rt.container_status(&req.container_id).map_err(to_status)?;
    let o = &v.observed;
    Ok(ContainerStatusResponse {
        status: Some(ContainerStatus {
            id: v.record.id.clone(),
            metadata: v.config.metadata.clone(),
            state: o.state as i32,
            created_at: v.record.created_at,
            started_at: o.started.as_ref().map_or(0, |s| s.started_at),
            finished_at: o.exited.as_ref().map_or(0, |e| e.finished_at),
            exit_code: o.exited.as_ref().map_or(0, |e| e.exit_code),
            image: v.config.image.clone(),
            image_ref: v.record.image_id.clone(),
            image_id: v.record.image_id.clone(),
            reason: o.reason.clone(),
            message: o.message.clone(),
            labels: v.config.labels.clone(),
            annotations: v.config.annotations.clone(),
            mounts: v.config.mounts.clone(),
            log_path: v.record.log_path.clone(),
            resources: v
                .config
                .linux
                .as_ref()
                .and_then(|l| l.resources.clone())
                .map(|r| ContainerResources {
                    linux: Some(r),
                    windows: None,
                }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub fn list(rt: &Runtime, req: ListContainersRequest) -> ListContainersResponse {
    let f = req.filter.unwrap_or_default();
    let keep = |v: &ContainerView| {
        (f.id.is_empty() || v.record.id.starts_with(&f.id))
            && (f.pod_sandbox_id.is_empty() || v.record.sandbox_id.starts_with(&f.pod_sandbox_id))
            && f.state
                .as_ref()
                .is_none_or(|s| s.state == v.observed.state as i32)
            && f.label_selector
                .iter()
                .all(|(k, want)| v.config.labels.get(k) == Some(want))
    };
    let mut containers: Vec<Container> = rt
        .list_containers()
        .into_iter()
        .filter(keep)
        .map(|v| Container {
            id: v.record.id.clone(),
            pod_sandbox_id: v.record.sandbox_id.clone(),
            metadata: v.config.metadata.clone(),
            image: v.config.image.clone(),
            image_ref: v.record.image_id.clone(),
            state: v.observed.state as i32,
            created_at: v.record.created_at,
            labels: v.config.labels.clone(),
            annotations: v.config.annotations.clone(),
            ..Default::default()
        })
        .collect();
    containers.sort_by_key(|c| c.created_at);
    ListContainersResponse { containers }
}

pub async fn exec_sync(rt: &Runtime, req: ExecSyncRequest) -> Result<ExecSyncResponse, Status> {
    let out = rt
        .exec_sync(&req.container_id, req.cmd, req.timeout)
        .await
        .map_err(to_status)?;
    Ok(ExecSyncResponse {
        stdout: out.0,
        stderr: out.1,
        exit_code: out.2,
    })
}

pub async fn update(
    rt: &Runtime,
    req: UpdateContainerResourcesRequest,
) -> Result<UpdateContainerResourcesResponse, Status> {
    let resources = super::required(
        req.linux,
        "linux",
        "is required (Windows resources are not supported)",
    )?;
    rt.update_container_resources(&req.container_id, resources)
        .await
        .map_err(to_status)?;
    Ok(UpdateContainerResourcesResponse {})
}
