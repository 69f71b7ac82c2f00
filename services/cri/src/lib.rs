//! kiln-cri: Kiln's container runtime, a CRI v1 gRPC server on a unix
//! socket. This first part is the image side, complete: `image` (pull,
//! store, unpack, snapshots, records, GC) and `server` (the gRPC services).
//! The runtime side (sandboxes, containers, shims, CNI, logs, streaming)
//! comes next; its RPCs answer UNIMPLEMENTED meanwhile.

mod fsutil;
pub mod image;
pub mod proto;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;

use argh::FromArgs;

/// Defaults on a node.
pub const DEFAULT_SOCKET: &str = "/run/kiln/cri.sock";
pub const DEFAULT_ROOT: &str = "/var/lib/kiln/cri";

/// kiln cri: the CRI runtime service (image side).
#[derive(FromArgs, Debug)]
pub struct Args {
    /// unix socket to serve CRI on (default /run/kiln/cri.sock)
    #[argh(option, default = "PathBuf::from(DEFAULT_SOCKET)")]
    pub socket: PathBuf,
    /// state root: blobs, snapshots, image records (default /var/lib/kiln/cri)
    #[argh(option, default = "PathBuf::from(DEFAULT_ROOT)")]
    pub root: PathBuf,
    /// registry host[:port] reached over plain http (repeatable)
    #[argh(option)]
    pub insecure_registry: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("image store {root}: {source}")]
    Store {
        root: PathBuf,
        source: image::StoreError,
    },
    #[error(transparent)]
    Serve(#[from] server::ServeError),
}

/// The `cri` personality: serves until SIGTERM or SIGINT.
pub fn run(args: Args) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(async {
        let root = args.root.clone();
        let store = tokio::task::spawn_blocking(move || {
            image::ImageStore::open(&root, args.insecure_registry)
        })
        .await
        .map_err(|e| Error::Runtime(std::io::Error::other(e)))?
        .map_err(|source| Error::Store {
            root: args.root.clone(),
            source,
        })?;
        server::serve(Arc::new(store), &args.socket, stop()).await?;
        Ok(())
    })
}

async fn stop() {
    kiln_stop::requested().await;
    tracing::info!("stopping");
}
