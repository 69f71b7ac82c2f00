//! The runtime side of kiln-cri: pod sandboxes, their namespaces and
//! networks. A sandbox has **no holder process**: its network, IPC and UTS
//! namespaces are bind-mounted files (`netns`), which is all a pod's
//! containers need to join them, costs no process per pod, and survives a
//! daemon restart by itself. The one thing a bind mount cannot keep is a
//! PID namespace (it dies with its init), so pod-shared PID namespaces will
//! be the first container's, or a holder started only for such pods.
//!
//! Layout: `<root>/sandboxes/<id>/` (persistent: `record`) and
//! `<state>/ns/<id>/{net,ipc,uts}` (on /run: the namespaces die with the
//! machine, and a sandbox found without them after a reboot is NOTREADY).
//!
//! Modules: `netns`, `cni/`, `record`, `sandbox` (the lifecycle), `recover`;
//! containers: `container` (the lifecycle), `bundle` (rootfs and OCI
//! bundle), `spec/` (the OCI spec), `exec` (ExecSync), `shim/` (the process
//! that holds a container), `cgroup` (a container's cgroup files), `stats`
//! (container and pod usage), `stop_signal` (the image's StopSignal),
//! `update` (UpdateContainerResources), `reopen_log` (ReopenContainerLog).

mod bundle;
pub mod cgroup;
pub mod cni;
pub mod container;
mod exec;
pub mod netns;
pub mod record;
mod recover;
mod reopen_log;
mod sandbox;
pub mod shim;
pub mod spec;
pub mod stats;
mod stop_signal;
mod update;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

pub use sandbox::{Sandbox, SandboxView};

use crate::image::ImageStore;
use cni::{Cni, CniError};
use netns::NetnsError;
use record::RecordError;

/// Defaults on a node.
pub const DEFAULT_STATE: &str = "/run/kiln/cri";
pub const DEFAULT_CNI_BIN_DIR: &str = "/opt/cni/bin";
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";

/// Where the runtime keeps things and finds CNI.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Persistent state root (the image store's root too).
    pub root: PathBuf,
    /// Volatile state (namespaces), on a tmpfs on a node.
    pub state: PathBuf,
    pub cni: Cni,
    /// The shim command: a program and its leading arguments
    /// (`kiln cri-shim` on a node).
    pub shim: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("pod sandbox {0:?} not found")]
    NotFound(String),
    #[error("container {0:?} not found")]
    ContainerNotFound(String),
    #[error("image {0:?} not found (pull it first)")]
    ImageNotFound(String),
    #[error("image store: {0}")]
    Image(String),
    #[error("starting container {id}: {message}")]
    Start { id: String, message: String },
    #[error("container {id} did not exit after SIGKILL")]
    Stop { id: String },
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("exec: {0}")]
    Exec(String),
    #[error("exec timed out after {0} s (the command was killed)")]
    ExecTimeout(i64),
    #[error("pod sandbox ID prefix {0:?} matches more than one sandbox")]
    Ambiguous(String),
    #[error("pod sandbox name {name:?} is already used by sandbox {id}")]
    AlreadyExists { name: String, id: String },
    #[error("{what} is not supported by kiln-cri yet")]
    Unsupported { what: String },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("container cgroup: {0}")]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("background task failed: {0}")]
    Task(String),
}

/// Sandboxes by ID, and the names in use (kubelet's name + namespace + uid
/// + attempt may name one sandbox only).
#[derive(Default)]
struct Index {
    by_id: HashMap<String, Arc<tokio::sync::Mutex<Sandbox>>>,
    names: HashMap<String, String>,
    containers: HashMap<
        String,
        (
            container::ContainerRecord,
            crate::proto::v1::ContainerConfig,
        ),
    >,
    container_names: HashMap<String, String>,
}

pub struct Runtime {
    config: RuntimeConfig,
    images: Arc<ImageStore>,
    index: Mutex<Index>,
    /// Whether this process may lower an OOM score below its own (some
    /// hosts refuse it; a Kiln node allows it).
    can_lower_oom: bool,
    own_oom_score: i32,
}

impl Runtime {
    /// Opens the runtime state, recovering sandboxes and containers from
    /// disk.
    pub async fn open(
        config: RuntimeConfig,
        images: Arc<ImageStore>,
    ) -> Result<Arc<Self>, RuntimeError> {
        if config.shim.is_empty() {
            return Err(RuntimeError::Invalid {
                field: "shim",
                problem: "the shim command must not be empty".into(),
            });
        }
        let (own_oom_score, can_lower_oom) = probe_oom_score();
        let rt = Arc::new(Self {
            config,
            images,
            index: Mutex::new(Index::default()),
            can_lower_oom,
            own_oom_score,
        });
        recover::recover(&rt).await?;
        rt.recover_containers()?;
        Ok(rt)
    }

    pub fn cni(&self) -> &Cni {
        &self.config.cni
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sandboxes_dir(&self) -> PathBuf {
        self.config.root.join("sandboxes")
    }

    fn ns_root(&self) -> PathBuf {
        self.config.state.join("ns")
    }

    /// A sandbox by ID or unique ID prefix.
    fn get(&self, id: &str) -> Result<Arc<tokio::sync::Mutex<Sandbox>>, RuntimeError> {
        if id.is_empty() {
            return Err(RuntimeError::Invalid {
                field: "pod_sandbox_id",
                problem: "must not be empty".into(),
            });
        }
        let index = self.index();
        if let Some(s) = index.by_id.get(id) {
            return Ok(s.clone());
        }
        let mut found = index.by_id.iter().filter(|(k, _)| k.starts_with(id));
        match (found.next(), found.next()) {
            (Some((_, s)), None) => Ok(s.clone()),
            (Some(_), Some(_)) => Err(RuntimeError::Ambiguous(id.into())),
            _ => Err(RuntimeError::NotFound(id.into())),
        }
    }

    /// Snapshots of every sandbox.
    pub async fn list(&self) -> Vec<SandboxView> {
        let all: Vec<_> = self.index().by_id.values().cloned().collect();
        let mut views = Vec::with_capacity(all.len());
        for s in all {
            views.push(s.lock().await.view());
        }
        views
    }

    /// A snapshot of one sandbox.
    pub async fn status(&self, id: &str) -> Result<SandboxView, RuntimeError> {
        Ok(self.get(id)?.lock().await.view())
    }

    /// Runs CNI CHECK on a ready sandbox's network.
    pub async fn check_network(&self, id: &str) -> Result<(), RuntimeError> {
        let s = self.get(id)?;
        let s = s.lock().await;
        if let Some(att) = s.attachment.as_ref() {
            self.config.cni.check(&s.record.id, att).await?;
        }
        Ok(())
    }
}

/// This process's OOM score and whether it may go lower: it tries one
/// lower and goes back (raising is always allowed).
fn probe_oom_score() -> (i32, bool) {
    const PATH: &str = "/proc/self/oom_score_adj";
    let own = std::fs::read_to_string(PATH)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    if own <= -1000 {
        return (own, true);
    }
    let lowered = std::fs::write(PATH, (own - 1).to_string()).is_ok();
    if lowered {
        let _ = std::fs::write(PATH, own.to_string());
    } else {
        tracing::warn!(
            own,
            "this host refuses lowering OOM scores: containers asking for a lower score keep the runtime's"
        );
    }
    (own, lowered)
}

/// 64 random hex digits, as container runtimes' IDs are.
fn new_id() -> Result<String, RuntimeError> {
    let mut bytes = [0u8; 32];
    let path = PathBuf::from("/dev/urandom");
    std::io::Read::read_exact(
        &mut std::fs::File::open(&path).map_err(|source| RuntimeError::Io {
            path: path.clone(),
            source,
        })?,
        &mut bytes,
    )
    .map_err(|source| RuntimeError::Io { path, source })?;
    Ok(hex::encode(bytes))
}

/// Nanoseconds since the epoch.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
