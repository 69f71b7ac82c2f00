//! RuntimeService: Version, Status, the pod sandbox, container and stats
//! RPCs (one module each group: `status`, `sandbox`, `container`, `stats`),
//! ReopenContainerLog. Every other RPC (streaming exec, attach,
//! port-forward, events, checkpoints) is tonic's generated stub, answering
//! UNIMPLEMENTED until it is written.

mod container;
mod sandbox;
mod stats;
mod status;

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use crate::proto::v1::runtime_service_server::RuntimeService;
use crate::proto::v1::*;
use crate::runtime::{Runtime, RuntimeError};

/// The name Version reports (crictl shows it as RuntimeName).
pub const RUNTIME_NAME: &str = "kiln-cri";
/// The CRI API version served.
const RUNTIME_API_VERSION: &str = "v1";

pub struct RuntimeApi {
    rt: Arc<Runtime>,
}

impl RuntimeApi {
    pub fn new(rt: Arc<Runtime>) -> Self {
        Self { rt }
    }
}

/// The gRPC status for a runtime error: the caller's mistakes by kind,
/// everything else INTERNAL (or UNAVAILABLE for CNI, which kubelet retries).
fn status(e: RuntimeError) -> Status {
    let code = match &e {
        RuntimeError::Invalid { .. } | RuntimeError::Ambiguous(_) => Code::InvalidArgument,
        RuntimeError::NotFound(_)
        | RuntimeError::ContainerNotFound(_)
        | RuntimeError::ImageNotFound(_) => Code::NotFound,
        RuntimeError::AlreadyExists { .. } => Code::AlreadyExists,
        RuntimeError::Unsupported { .. } => Code::Unimplemented,
        RuntimeError::NotRunning(_) => Code::FailedPrecondition,
        RuntimeError::ExecTimeout(_) => Code::DeadlineExceeded,
        RuntimeError::Cni(_) => Code::Unavailable,
        _ => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// A request field kubelet must send, or INVALID_ARGUMENT naming it.
fn required<T>(value: Option<T>, field: &'static str, problem: &str) -> Result<T, Status> {
    value.ok_or_else(|| {
        status(RuntimeError::Invalid {
            field,
            problem: problem.into(),
        })
    })
}

#[tonic::async_trait]
impl RuntimeService for RuntimeApi {
    async fn version(
        &self,
        _: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            // The version of the kubelet-runtime API, fixed at 0.1.0 by CRI.
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: RUNTIME_API_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(status::status(&self.rt, req.into_inner())))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        sandbox::run(&self.rt, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        sandbox::stop(&self.rt, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        sandbox::remove(&self.rt, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        sandbox::status(&self.rt, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        Ok(Response::new(
            sandbox::list(&self.rt, req.into_inner()).await,
        ))
    }

    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        container::create(&self.rt, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        container::start(&self.rt, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop_container(
        &self,
        req: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        container::stop(&self.rt, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_container(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        container::remove(&self.rt, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn container_status(
        &self,
        req: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        container::status(&self.rt, req.into_inner()).map(Response::new)
    }

    async fn list_containers(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        Ok(Response::new(container::list(&self.rt, req.into_inner())))
    }

    async fn exec_sync(
        &self,
        req: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        container::exec_sync(&self.rt, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn container_stats(
        &self,
        req: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        stats::container(&self.rt, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_container_stats(
        &self,
        req: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        stats::list_containers(&self.rt, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        stats::pod(&self.rt, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        stats::list_pods(&self.rt, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn runtime_config(
        &self,
        _: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        Ok(Response::new(status::runtime_config()))
    }

    async fn update_container_resources(
        &self,
        req: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        container::update(&self.rt, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn reopen_container_log(
        &self,
        req: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        self.rt
            .reopen_container_log(&req.into_inner().container_id)
            .await
            .map_err(status)?;
        Ok(Response::new(ReopenContainerLogResponse {}))
    }
}
