//! Running one CNI plugin: the operation in environment variables, the
//! network configuration on stdin, the result (or a CNI error object) on
//! stdout; killed when it overruns its timeout.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use super::CniError;

/// How long one plugin may run (kubelet's own CRI timeout is 2 minutes).
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// What a plugin call is about.
pub struct Call<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    /// Empty for DEL of a pod whose namespace is already gone.
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
    pub bin_dir: &'a Path,
}

/// Runs plugin `conf["type"]` with `conf` on stdin; returns its stdout
/// parsed as JSON (`Value::Null` when it prints nothing, as DEL and CHECK do).
pub async fn invoke(call: &Call<'_>, conf: &Map<String, Value>) -> Result<Value, CniError> {
    let plugin = conf
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let binary = call.bin_dir.join(&plugin);
    if !binary.is_file() {
        return Err(CniError::PluginMissing {
            plugin,
            dir: call.bin_dir.to_path_buf(),
        });
    }
    let stdin = serde_json::to_vec(conf).map_err(|e| CniError::Encode(e.to_string()))?;
    let mut child = tokio::process::Command::new(&binary)
        .env_clear()
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_ARGS", call.args)
        .env("CNI_PATH", call.bin_dir)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CniError::Spawn {
            plugin: plugin.clone(),
            source,
        })?;
    let mut input = child.stdin.take().expect("stdin is piped");
    let io_err = |source| CniError::Spawn {
        plugin: plugin.clone(),
        source,
    };
    let output = tokio::time::timeout(PLUGIN_TIMEOUT, async {
        input.write_all(&stdin).await?;
        drop(input);
        child.wait_with_output().await
    })
    .await
    .map_err(|_| CniError::Timeout {
        plugin: plugin.clone(),
        command: call.command.to_string(),
        secs: PLUGIN_TIMEOUT.as_secs(),
    })?
    .map_err(io_err)?;
    let parsed = if output.stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&output.stdout).map_err(|e| CniError::BadResult {
            plugin: plugin.clone(),
            problem: e.to_string(),
        })?
    };
    if output.status.success() {
        return Ok(parsed);
    }
    // The CNI error object: {"code": N, "msg": "...", "details": "..."}.
    let field = |k: &str| parsed.get(k).and_then(Value::as_str).unwrap_or_default();
    let msg = match (field("msg"), field("details")) {
        ("", _) => String::from_utf8_lossy(&output.stderr).trim().to_string(),
        (m, "") => m.to_string(),
        (m, d) => format!("{m}: {d}"),
    };
    Err(CniError::Plugin {
        plugin,
        command: call.command.to_string(),
        code: parsed.get("code").and_then(Value::as_u64).unwrap_or(0),
        msg,
    })
}
