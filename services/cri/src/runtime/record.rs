//! A sandbox on disk: `sandboxes/<id>/sandbox.json` (state, written
//! atomically), `config.pb` (kubelet's PodSandboxConfig, protobuf, as sent)
//! and `cni.json` (the network attachment DEL needs).

use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;
use crate::proto::v1::PodSandboxConfig;
use crate::runtime::cni::Attachment;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("sandbox state {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sandbox state {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Ready,
    NotReady,
}

/// What kiln-cri keeps about a sandbox besides kubelet's config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub state: State,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub host_network: bool,
    pub host_ipc: bool,
    pub runtime_handler: String,
    pub ips: Vec<String>,
}

pub const RECORD: &str = "sandbox.json";
const CONFIG: &str = "config.pb";
const ATTACHMENT: &str = "cni.json";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, problem: impl ToString) -> RecordError {
    RecordError::Invalid {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    }
}

pub fn save(dir: &Path, rec: &SandboxRecord) -> Result<(), RecordError> {
    let path = dir.join(RECORD);
    let data = serde_json::to_vec_pretty(rec).map_err(|e| invalid(&path, e))?;
    write_atomic(&path, &data).map_err(io(&path))
}

pub fn load(dir: &Path) -> Result<SandboxRecord, RecordError> {
    let path = dir.join(RECORD);
    let data = std::fs::read(&path).map_err(io(&path))?;
    let rec: SandboxRecord = serde_json::from_slice(&data).map_err(|e| invalid(&path, e))?;
    if dir.file_name().and_then(|n| n.to_str()) != Some(rec.id.as_str()) {
        return Err(invalid(&path, "`id` does not match the directory name"));
    }
    Ok(rec)
}

pub fn save_config(dir: &Path, config: &PodSandboxConfig) -> Result<(), RecordError> {
    let path = dir.join(CONFIG);
    write_atomic(&path, &config.encode_to_vec()).map_err(io(&path))
}

pub fn load_config(dir: &Path) -> Result<PodSandboxConfig, RecordError> {
    let path = dir.join(CONFIG);
    let data = std::fs::read(&path).map_err(io(&path))?;
    PodSandboxConfig::decode(data.as_slice()).map_err(|e| invalid(&path, e))
}

pub fn save_attachment(dir: &Path, att: &Attachment) -> Result<(), RecordError> {
    let path = dir.join(ATTACHMENT);
    let data = serde_json::to_vec_pretty(att).map_err(|e| invalid(&path, e))?;
    write_atomic(&path, &data).map_err(io(&path))
}

pub fn load_attachment(dir: &Path) -> Result<Option<Attachment>, RecordError> {
    let path = dir.join(ATTACHMENT);
    match std::fs::read(&path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| invalid(&path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

pub fn remove_attachment(dir: &Path) -> Result<(), RecordError> {
    let path = dir.join(ATTACHMENT);
    match std::fs::remove_file(&path) {
        Ok(()) => crate::fsutil::sync_dir(dir).map_err(io(dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(&path)(e)),
    }
}
