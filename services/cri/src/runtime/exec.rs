//! ExecSync from the daemon's side: the shim's exec helper (`shim::exec`)
//! runs the command in the container, so libcontainer's tenant builder
//! forks in that process and never on the daemon's async runtime.

use std::path::Path;

use crate::proto::v1::ContainerState;

use super::container::{io, observe};
use super::{Runtime, RuntimeError};

impl Runtime {
    /// ExecSync: runs `cmd` in the running container through the shim's
    /// exec helper; returns (stdout, stderr, exit code).
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<(Vec<u8>, Vec<u8>, i32), RuntimeError> {
        if cmd.is_empty() {
            return Err(RuntimeError::Invalid {
                field: "cmd",
                problem: "must not be empty".into(),
            });
        }
        let rec = self.container(id)?;
        if observe(&self.containers_dir().join(&rec.id)).state != ContainerState::ContainerRunning {
            return Err(RuntimeError::NotRunning(rec.id));
        }
        let out = tokio::process::Command::new(&self.config.shim[0])
            .args(&self.config.shim[1..])
            .arg("exec")
            .arg(&rec.id)
            .arg(self.youki_root())
            .arg(timeout.max(0).to_string())
            .args(&cmd)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(io(Path::new(&self.config.shim[0])))?;
        if !out.status.success() {
            return Err(RuntimeError::Exec(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        let outcome: super::shim::exec::Outcome = serde_json::from_slice(&out.stdout)
            .map_err(|e| RuntimeError::Exec(format!("the exec helper's answer: {e}")))?;
        if outcome.timed_out {
            return Err(RuntimeError::ExecTimeout(timeout));
        }
        let decode = |s: &str| {
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s)
                .map_err(|e| RuntimeError::Exec(format!("the exec helper's output: {e}")))
        };
        Ok((
            decode(&outcome.stdout)?,
            decode(&outcome.stderr)?,
            outcome.exit_code,
        ))
    }
}
