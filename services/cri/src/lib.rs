//! kiln-cri: Kiln's container runtime, a CRI v1 gRPC server on a unix
//! socket: `image` (pull, store, unpack, snapshots, records, GC), `runtime`
//! (pod sandboxes: namespaces, CNI; containers: OCI spec, overlay rootfs,
//! the per-container shim running libcontainer, CRI logs) and `server` (the
//! gRPC services). Exec, attach, port-forward, stats and events come next;
//! their RPCs answer UNIMPLEMENTED meanwhile.

mod fsutil;
pub mod image;
pub mod proto;
pub mod runtime;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;

use argh::FromArgs;

/// Defaults on a node.
pub const DEFAULT_SOCKET: &str = "/run/kiln/cri.sock";
pub const DEFAULT_ROOT: &str = "/var/lib/kiln/cri";

/// kiln cri: the CRI runtime service.
#[derive(FromArgs, Debug)]
pub struct Args {
    /// unix socket to serve CRI on (default /run/kiln/cri.sock)
    #[argh(option, default = "PathBuf::from(DEFAULT_SOCKET)")]
    pub socket: PathBuf,
    /// state root: blobs, snapshots, image records (default /var/lib/kiln/cri)
    #[argh(option, default = "PathBuf::from(DEFAULT_ROOT)")]
    pub root: PathBuf,
    /// volatile state: pod namespaces (default /run/kiln/cri)
    #[argh(option, default = "PathBuf::from(runtime::DEFAULT_STATE)")]
    pub state: PathBuf,
    /// directory of CNI plugin binaries (default /opt/cni/bin)
    #[argh(option, default = "PathBuf::from(runtime::DEFAULT_CNI_BIN_DIR)")]
    pub cni_bin_dir: PathBuf,
    /// directory of CNI network configurations (default /etc/cni/net.d)
    #[argh(option, default = "PathBuf::from(runtime::DEFAULT_CNI_CONF_DIR)")]
    pub cni_conf_dir: PathBuf,
    /// registry host[:port] reached over plain http (repeatable)
    #[argh(option)]
    pub insecure_registry: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start the async runtime: {0}")]
    Tokio(std::io::Error),
    #[error("cannot find the running executable (the shim is its cri-shim personality): {0}")]
    Exe(std::io::Error),
    #[error("image store {root}: {source}")]
    Store {
        root: PathBuf,
        source: image::StoreError,
    },
    #[error("runtime state: {0}")]
    Runtime(#[from] runtime::RuntimeError),
    #[error(transparent)]
    Serve(#[from] server::ServeError),
}

/// The `cri` personality: serves until SIGTERM or SIGINT.
pub fn run(args: Args) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Tokio)?;
    rt.block_on(async {
        let root = args.root.clone();
        let store = tokio::task::spawn_blocking(move || {
            image::ImageStore::open(&root, args.insecure_registry)
        })
        .await
        .map_err(|e| Error::Tokio(std::io::Error::other(e)))?
        .map_err(|source| Error::Store {
            root: args.root.clone(),
            source,
        })?;
        let store = Arc::new(store);
        // Shims are this same binary's `cri-shim` personality.
        let exe = std::env::current_exe().map_err(Error::Exe)?;
        let runtime = runtime::Runtime::open(
            runtime::RuntimeConfig {
                root: args.root.clone(),
                state: args.state.clone(),
                cni: runtime::cni::Cni {
                    bin_dir: args.cni_bin_dir.clone(),
                    conf_dir: args.cni_conf_dir.clone(),
                },
                shim: vec![exe.display().to_string(), "cri-shim".into()],
            },
            store.clone(),
        )
        .await?;
        server::serve(store, runtime, &args.socket, stop()).await?;
        Ok(())
    })
}

async fn stop() {
    kiln_stop::requested().await;
    tracing::info!("stopping");
}
