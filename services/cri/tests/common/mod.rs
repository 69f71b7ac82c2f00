//! Test harness: a network namespace per test, a real registry
//! (`docker-registry`) in it, OCI images built here and pushed with skopeo,
//! a proxy that counts and cuts requests, and kiln-cri served on a unix
//! socket with a tonic CRI client.

#![allow(dead_code)]

pub mod oci;
pub mod proxy;
pub mod registry;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use kiln_cri::image::ImageStore;
use kiln_cri::proto::v1::image_service_client::ImageServiceClient;
use kiln_cri::proto::v1::runtime_service_client::RuntimeServiceClient;
use kiln_cri::proto::v1::{PodSandboxMetadata, RemovePodSandboxRequest};
use kiln_cri::runtime::cni::Cni;
use kiln_cri::runtime::{Runtime, RuntimeConfig};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};

/// Runs `f` in a fresh network namespace (this test thread only; the
/// runtime's threads and every child process inherit it) with loopback up.
pub fn in_netns<F: Future<Output = ()>>(f: impl FnOnce() -> F) {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET): run the tests as root");
    let ok = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip");
    assert!(ok.success());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(f());
}

/// Debian's containernetworking-plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// kiln-cri serving on a socket in a temporary directory.
pub struct Cri {
    pub dir: tempfile::TempDir,
    pub images: ImageServiceClient<Channel>,
    pub runtime: RuntimeServiceClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Cri {
    pub async fn start(insecure: &[String]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), insecure).await
    }

    /// Stops and starts again on the same state root, as a daemon restart.
    pub async fn restart(mut self, insecure: &[String]) -> Self {
        self.shutdown().await;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::start_in(dir, insecure).await
    }

    async fn start_in(dir: tempfile::TempDir, insecure: &[String]) -> Self {
        let root = dir.path().join("root");
        let socket = dir.path().join("cri.sock");
        let store = Arc::new(ImageStore::open(&root, insecure.to_vec()).unwrap());
        std::fs::create_dir_all(dir.path().join("net.d")).unwrap();
        let runtime = Runtime::open(
            RuntimeConfig {
                root: root.clone(),
                state: dir.path().join("state"),
                cni: Cni {
                    bin_dir: CNI_BIN_DIR.into(),
                    conf_dir: dir.path().join("net.d"),
                },
                shim: vec![env!("CARGO_BIN_EXE_kiln-cri-shim").into()],
            },
            store.clone(),
        )
        .await
        .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let sock = socket.clone();
        let task = tokio::spawn(async move {
            kiln_cri::server::serve(store, runtime, &sock, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let channel = connect(&socket).await;
        Self {
            dir,
            images: ImageServiceClient::new(channel.clone()),
            runtime: RuntimeServiceClient::new(channel),
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// The CNI conf dir (empty at first: NetworkReady is false).
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    /// Volatile state: `ns/<sandbox id>/{net,ipc,uts}`.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Names of the files in a store directory (`blobs/sha256`, …).
    pub fn files(&self, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root().join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    pub async fn remove_pod(&mut self, id: &str) {
        self.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .unwrap();
    }

    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

/// Connects once the server listens: after a restart the old socket file
/// is there before the new server binds it, so refusals are retried.
async fn connect(socket: &Path) -> Channel {
    let path = socket.to_path_buf();
    let endpoint = Endpoint::try_from("http://[::]:50051").unwrap();
    let mut tries = 0;
    loop {
        let path = path.clone();
        let connected = endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await;
        match connected {
            Ok(channel) => return channel,
            Err(e) if tries == 250 => panic!("{}: {e:?}", socket.display()),
            Err(_) => tries += 1,
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Builds the test images (`oci::build`) and pushes `busybox` as
/// `kiln/busybox:1`.
pub fn push_busybox(reg: &registry::Registry) -> (tempfile::TempDir, oci::Layout, oci::Built) {
    let work = tempfile::tempdir().unwrap();
    let (layout, built) = oci::build(&work.path().join("layout"));
    reg.push(&layout.dir, "busybox", "kiln/busybox:1");
    (work, layout, built)
}

/// A pod's metadata: `name` in the default namespace, uid `uid-<name>`.
pub fn pod_metadata(name: &str) -> Option<PodSandboxMetadata> {
    Some(PodSandboxMetadata {
        name: name.into(),
        uid: format!("uid-{name}"),
        namespace: "default".into(),
        attempt: 0,
    })
}

/// The error a call must end in, checked to be `code`.
pub fn refused<T: std::fmt::Debug>(r: Result<T, Status>, code: Code) -> Status {
    let err = r.unwrap_err();
    assert_eq!(err.code(), code, "{err:?}");
    err
}

/// A free TCP port on 127.0.0.1 (in the test's namespace).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
