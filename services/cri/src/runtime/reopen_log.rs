//! ReopenContainerLog: after kubelet renamed a running container's log,
//! a new file is created at the log path; the container's shim appends
//! there from its next entry on (`shim::log::LogFile` follows the path).
//! Creating the file here means it exists when the call returns, whatever
//! the container writes and whether or not the shim is busy.

use std::fs::OpenOptions;
use std::path::Path;

use crate::proto::v1::ContainerState;

use super::container::{io, observe};
use super::{Runtime, RuntimeError};

impl Runtime {
    pub async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError> {
        let rec = self.container(id)?;
        if observe(&self.containers_dir().join(&rec.id)).state != ContainerState::ContainerRunning {
            return Err(RuntimeError::NotRunning(rec.id));
        }
        if rec.log_path.is_empty() {
            return Ok(());
        }
        let path = Path::new(&rec.log_path);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io(path))?;
        tracing::info!(container = %rec.id, "container log reopened");
        Ok(())
    }
}
