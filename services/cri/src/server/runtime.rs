//! RuntimeService: Version only. Every other RPC is tonic's generated stub,
//! answering UNIMPLEMENTED until the runtime side exists.

use tonic::{Request, Response, Status};

use crate::proto::v1::runtime_service_server::RuntimeService;
use crate::proto::v1::{VersionRequest, VersionResponse};

/// The name Version reports (crictl shows it as RuntimeName).
pub const RUNTIME_NAME: &str = "kiln-cri";
/// The CRI API version served.
const RUNTIME_API_VERSION: &str = "v1";

pub struct Runtime;

#[tonic::async_trait]
impl RuntimeService for Runtime {
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
}
