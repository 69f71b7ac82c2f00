//! The commands that call nodes' machine API: resolves the nodes and the
//! trust (a context of the client config, or `--insecure` for maintenance
//! mode), runs the call on every node at once and labels each result with
//! its node. A failure on one node does not stop the others; the exit code
//! says whether all succeeded.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use futures_util::future::join_all;
use kiln_api_client::{connect, Trust};
use kiln_api_proto::v1::{
    ApplyConfigurationRequest, ApplyMode, DmesgRequest, GetConfigurationRequest, LogsRequest, Mode,
    RebootRequest, ShutdownRequest, VersionRequest,
};
use serde_json::json;

use crate::cli::{Cli, Command};
use crate::fsio;
use crate::kilnconfig::{ClientConfig, Context};
use crate::UsageError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How results are printed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

/// Where trust comes from; a fresh `Trust` is made per node.
enum TrustSource {
    Insecure(Option<String>),
    Context(Context),
}

impl TrustSource {
    fn trust(&self) -> Trust {
        match self {
            TrustSource::Insecure(fingerprint) => Trust::Maintenance {
                fingerprint: fingerprint.clone(),
            },
            TrustSource::Context(c) => Trust::Mutual {
                ca_pem: c.ca.clone(),
                cert_pem: c.crt.clone(),
                key_pem: c.key.clone(),
            },
        }
    }
}

/// Runs an API command; Ok(false) if any node failed.
pub fn run(cli: &Cli) -> Result<bool> {
    let output = match cli.output.as_str() {
        "text" => Output::Text,
        "json" => Output::Json,
        other => {
            return Err(UsageError(format!("-o: expected text or json, got {other:?}")).into())
        }
    };
    if cli.fingerprint.is_some() && !cli.insecure {
        return Err(UsageError("--fingerprint goes with --insecure".into()).into());
    }
    let (nodes, trust) = targets(cli)?;
    let request = Request::from_command(&cli.command)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let label = nodes.len() > 1;
    runtime.block_on(async {
        let calls = nodes.iter().map(|node| {
            let trust = trust.trust();
            let request = &request;
            async move {
                let result = call(node, trust, request, output, label).await;
                if let Err(e) = &result {
                    match output {
                        Output::Text => eprintln!("{node}: error: {e}"),
                        Output::Json => println!("{}", json!({"node": node, "error": e})),
                    }
                }
                result.is_ok()
            }
        });
        let all = join_all(calls);
        tokio::select! {
            results = all => Ok(results.into_iter().all(|ok| ok)),
            // Follow modes end here; whatever was printed stands.
            _ = tokio::signal::ctrl_c() => Ok(true),
        }
    })
}

/// The nodes to call and how to trust them.
fn targets(cli: &Cli) -> Result<(Vec<String>, TrustSource)> {
    let explicit: Option<Vec<String>> = cli.nodes.as_ref().map(|n| {
        n.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    });
    if cli.insecure {
        let nodes = explicit
            .filter(|n| !n.is_empty())
            .ok_or_else(|| UsageError("--insecure needs -n NODE[,NODE…]".into()))?;
        return Ok((nodes, TrustSource::Insecure(cli.fingerprint.clone())));
    }
    let path = config_path(cli)?;
    let text = fsio::read_text(&path)?;
    let config: ClientConfig = serde_norway::from_str(&text)
        .with_context(|| format!("{}: not a kilnconfig", path.display()))?;
    let name = cli.context.as_deref().unwrap_or(&config.context);
    let Some(context) = config.contexts.get(name) else {
        let known: Vec<&str> = config.contexts.keys().map(String::as_str).collect();
        bail!(
            "{}: no context {name:?} (it has: {})",
            path.display(),
            known.join(", ")
        );
    };
    let nodes = match explicit {
        Some(n) if !n.is_empty() => n,
        _ if !context.endpoints.is_empty() => context.endpoints.clone(),
        _ => bail!("context {name:?} lists no endpoints: pass -n NODE[,NODE…]"),
    };
    Ok((nodes, TrustSource::Context(context.clone())))
}

fn config_path(cli: &Cli) -> Result<PathBuf> {
    if let Some(p) = &cli.kilnconfig {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("KILNCONFIG") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")
        .context("no --kilnconfig, $KILNCONFIG or $HOME to find the client config")?;
    Ok(PathBuf::from(home).join(".kiln/config"))
}

/// One API call, as read from the command line.
enum Request {
    Version,
    Apply(ApplyConfigurationRequest),
    GetConfig,
    Reboot,
    Shutdown,
    Logs(LogsRequest),
    Dmesg(DmesgRequest),
}

impl Request {
    fn from_command(command: &Command) -> Result<Request> {
        Ok(match command {
            Command::Version(_) => Request::Version,
            Command::Apply(a) => {
                let mode = match a.mode.as_str() {
                    "auto" => ApplyMode::Auto,
                    "no-reboot" => ApplyMode::NoReboot,
                    "staged" => ApplyMode::Staged,
                    other => {
                        return Err(UsageError(format!(
                            "--mode: expected auto, no-reboot or staged, got {other:?}"
                        ))
                        .into())
                    }
                };
                Request::Apply(ApplyConfigurationRequest {
                    data: fsio::read_text(&a.file)?.into_bytes(),
                    mode: mode as i32,
                    dry_run: a.dry_run,
                })
            }
            Command::GetConfig(_) => Request::GetConfig,
            Command::Reboot(_) => Request::Reboot,
            Command::Shutdown(_) => Request::Shutdown,
            Command::Logs(l) => Request::Logs(LogsRequest {
                service: l.service.clone(),
                tail: l.tail,
                follow: l.follow,
            }),
            Command::Dmesg(d) => Request::Dmesg(DmesgRequest { follow: d.follow }),
            Command::Validate(_) | Command::Gen(_) => {
                bail!("internal: an offline command reached the API caller")
            }
        })
    }
}

/// Prints `line` for `node`, labelled when several nodes answer.
fn say(node: &str, label: bool, line: &str) {
    if label {
        println!("{node}: {line}");
    } else {
        println!("{line}");
    }
}

/// A gRPC status as the operator should read it.
fn status(e: tonic::Status) -> String {
    format!("{:?}: {}", e.code(), e.message())
}

async fn call(
    node: &str,
    trust: Trust,
    request: &Request,
    output: Output,
    label: bool,
) -> Result<(), String> {
    let mut c = connect(node, trust, CONNECT_TIMEOUT)
        .await
        .map_err(|e| format!("{e}"))?;
    let json_line = |value: serde_json::Value| {
        let mut value = value;
        value["node"] = json!(node);
        println!("{value}");
    };
    match request {
        Request::Version => {
            let v = c
                .version(VersionRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let mode = match Mode::try_from(v.mode) {
                Ok(Mode::Maintenance) => "maintenance",
                Ok(Mode::Configured) => "configured",
                _ => "unknown",
            };
            match output {
                Output::Text => say(
                    node,
                    label,
                    &format!("Kiln {} {} {mode} {}", v.version, v.arch, v.hostname),
                ),
                Output::Json => json_line(json!({
                    "version": v.version, "arch": v.arch, "mode": mode, "hostname": v.hostname,
                })),
            }
        }
        Request::Apply(req) => {
            let r = c
                .apply_configuration(req.clone())
                .await
                .map_err(status)?
                .into_inner();
            match output {
                Output::Text => {
                    for ch in &r.changes {
                        let when = if ch.needs_reboot { "reboot" } else { "live" };
                        say(node, label, &format!("~ {} ({when})", ch.path));
                    }
                    say(node, label, &r.message);
                }
                Output::Json => json_line(json!({
                    "changes": r.changes.iter().map(|c| json!({"path": c.path, "needsReboot": c.needs_reboot})).collect::<Vec<_>>(),
                    "reboot": r.reboot,
                    "message": r.message,
                })),
            }
        }
        Request::GetConfig => {
            let r = c
                .get_configuration(GetConfigurationRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let text = String::from_utf8_lossy(&r.data);
            match output {
                Output::Text if label => text.lines().for_each(|l| say(node, true, l)),
                Output::Text => print!("{text}"),
                Output::Json => json_line(json!({"config": text, "redacted": r.redacted})),
            }
        }
        Request::Reboot => {
            c.reboot(RebootRequest {}).await.map_err(status)?;
            say(node, label, "rebooting");
        }
        Request::Shutdown => {
            c.shutdown(ShutdownRequest {}).await.map_err(status)?;
            say(node, label, "powering off");
        }
        Request::Logs(req) => {
            let mut lines = c.logs(req.clone()).await.map_err(status)?.into_inner();
            while let Some(l) = lines.message().await.map_err(status)? {
                match output {
                    Output::Text => say(node, label, &l.line),
                    Output::Json => json_line(json!({"line": l.line})),
                }
            }
        }
        Request::Dmesg(req) => {
            let mut records = c.dmesg(*req).await.map_err(status)?.into_inner();
            while let Some(m) = records.message().await.map_err(status)? {
                let secs = m.timestamp_us as f64 / 1e6;
                match output {
                    Output::Text => say(node, label, &format!("[{secs:12.6}] {}", m.message)),
                    Output::Json => json_line(json!({
                        "priority": m.priority, "facility": m.facility, "sequence": m.sequence,
                        "timestampUs": m.timestamp_us, "message": m.message,
                    })),
                }
            }
        }
    }
    Ok(())
}
