//! The CRI gRPC server on a unix socket: `image` (ImageService) and
//! `runtime/` (RuntimeService: Version, Status, pod sandboxes; the
//! container RPCs answer UNIMPLEMENTED).

mod image;
mod runtime;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::image::ImageStore;
use crate::proto::v1::image_service_server::ImageServiceServer;
use crate::proto::v1::runtime_service_server::RuntimeServiceServer;
use crate::runtime::Runtime;

pub use image::Images;
pub use runtime::{RuntimeApi, RUNTIME_NAME};

/// gRPC messages kubelet sends can be large (ListImages answers too).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("serving CRI: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Serves CRI on `socket` (replacing a stale socket file, mode 0600) until
/// `stop` completes, then removes the socket.
pub async fn serve(
    store: Arc<ImageStore>,
    runtime: Arc<Runtime>,
    socket: &Path,
    stop: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let err = |source| ServeError::Socket {
        path: socket.display().to_string(),
        source,
    };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(socket).map_err(err)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    tracing::info!(socket = %socket.display(), "CRI listening");
    tonic::transport::Server::builder()
        .add_service(
            ImageServiceServer::new(Images::new(store))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(RuntimeServiceServer::new(RuntimeApi::new(runtime)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop)
        .await?;
    // A socket file left behind would look like a live runtime.
    let _ = std::fs::remove_file(socket);
    Ok(())
}
