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
    event, ApplyConfigurationRequest, ApplyMode, ConfirmConfigurationRequest, DmesgRequest,
    EventsRequest, GetConfigurationRequest, LogsRequest, Mode, RebootRequest, ResetRequest,
    ServiceListRequest, ServiceRequest, ServiceState, ServiceStatus, ShutdownRequest, StatsRequest,
    VersionRequest,
};
use serde_json::json;

use crate::cli::{Cli, Command, ServiceAction};
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
    Confirm,
    GetConfig,
    Reboot,
    Shutdown,
    Reset(ResetRequest),
    Logs(LogsRequest),
    Dmesg(DmesgRequest),
    Services,
    Service(Action, ServiceRequest),
    Events(EventsRequest),
    Stats,
}

/// Which service call.
#[derive(Clone, Copy)]
enum Action {
    Start,
    Stop,
    Restart,
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
                    "try" => ApplyMode::Try,
                    other => {
                        return Err(UsageError(format!(
                            "--mode: expected auto, no-reboot, staged or try, got {other:?}"
                        ))
                        .into())
                    }
                };
                let try_timeout_seconds = match (&a.timeout, mode) {
                    (None, _) => 0,
                    (Some(t), ApplyMode::Try) => {
                        seconds(t).map_err(|e| UsageError(format!("--timeout: {e}")))?
                    }
                    (Some(_), _) => {
                        return Err(UsageError("--timeout goes with --mode try".into()).into())
                    }
                };
                Request::Apply(ApplyConfigurationRequest {
                    data: fsio::read_text(&a.file)?.into_bytes(),
                    mode: mode as i32,
                    dry_run: a.dry_run,
                    try_timeout_seconds,
                })
            }
            Command::Confirm(_) => Request::Confirm,
            Command::GetConfig(_) => Request::GetConfig,
            Command::Reboot(_) => Request::Reboot,
            Command::Shutdown(_) => Request::Shutdown,
            Command::Reset(r) => Request::Reset(ResetRequest {
                wipe_state: r.wipe_state,
            }),
            Command::Logs(l) => Request::Logs(LogsRequest {
                service: l.service.clone(),
                tail: l.tail,
                follow: l.follow,
            }),
            Command::Dmesg(d) => Request::Dmesg(DmesgRequest { follow: d.follow }),
            Command::Services(_) => Request::Services,
            Command::Service(s) => {
                let (action, id) = match &s.action {
                    ServiceAction::Start(c) => (Action::Start, &c.id),
                    ServiceAction::Stop(c) => (Action::Stop, &c.id),
                    ServiceAction::Restart(c) => (Action::Restart, &c.id),
                };
                Request::Service(action, ServiceRequest { id: id.clone() })
            }
            Command::Events(e) => Request::Events(EventsRequest { follow: e.follow }),
            Command::Stats(_) => Request::Stats,
            Command::Validate(_) | Command::Gen(_) | Command::Completion(_) => {
                bail!("internal: an offline command reached the API caller")
            }
        })
    }
}

/// A duration as the operator writes it (`90`, `90s`, `5m`, `1h`), in whole
/// seconds; the node checks the bounds.
fn seconds(text: &str) -> Result<u32, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => {
            return Err(format!(
                "{text:?}: expected a number of s, m or h, e.g. 90s"
            ))
        }
    };
    number
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{text:?}: expected a number of s, m or h, e.g. 90s"))
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
                    if r.revert_at_unix_ms != 0 {
                        say(
                            node,
                            label,
                            &format!(
                                "reverts at {} unless confirmed (kilnctl confirm)",
                                utc(r.revert_at_unix_ms)
                            ),
                        );
                    }
                }
                Output::Json => json_line(json!({
                    "changes": r.changes.iter().map(|c| json!({"path": c.path, "needsReboot": c.needs_reboot})).collect::<Vec<_>>(),
                    "reboot": r.reboot,
                    "message": r.message,
                    "revertAtUnixMs": r.revert_at_unix_ms,
                })),
            }
        }
        Request::Confirm => {
            c.confirm_configuration(ConfirmConfigurationRequest {})
                .await
                .map_err(status)?;
            match output {
                Output::Text => say(node, label, "config confirmed"),
                Output::Json => json_line(json!({"confirmed": true})),
            }
        }
        Request::Reset(req) => {
            c.reset(*req).await.map_err(status)?;
            let what = if req.wipe_state {
                "resetting (EPHEMERAL and STATE wiped at the next boot: back to maintenance mode)"
            } else {
                "resetting (EPHEMERAL wiped at the next boot; config and identity kept)"
            };
            match output {
                Output::Text => say(node, label, what),
                Output::Json => json_line(json!({"reset": true, "wipeState": req.wipe_state})),
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
        Request::Services => {
            let list = c
                .service_list(ServiceListRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .services;
            match output {
                Output::Text => {
                    say(
                        node,
                        label,
                        &format!(
                            "{:<12} {:<10} {:>7} {:>8}  {:<20} {:<22} MESSAGE",
                            "SERVICE", "STATE", "PID", "RESTARTS", "SINCE", "LAST EXIT"
                        ),
                    );
                    for s in &list {
                        let pid = if s.pid == 0 {
                            "-".to_string()
                        } else {
                            s.pid.to_string()
                        };
                        let exit = if s.last_exit.is_empty() {
                            "-"
                        } else {
                            &s.last_exit
                        };
                        say(
                            node,
                            label,
                            &format!(
                                "{:<12} {:<10} {pid:>7} {:>8}  {:<20} {exit:<22} {}",
                                s.id,
                                state_name(s.state()),
                                s.restarts,
                                utc(s.since_unix_ms),
                                s.message
                            ),
                        );
                    }
                }
                Output::Json => list.iter().for_each(|s| json_line(service_json(s))),
            }
        }
        Request::Service(action, req) => {
            let answer = match action {
                Action::Start => c.service_start(req.clone()).await,
                Action::Stop => c.service_stop(req.clone()).await,
                Action::Restart => c.service_restart(req.clone()).await,
            };
            let s = answer
                .map_err(status)?
                .into_inner()
                .service
                .ok_or("the node answered without the service's state")?;
            match output {
                Output::Text => say(
                    node,
                    label,
                    &format!("{}: {} ({})", s.id, state_name(s.state()), s.message),
                ),
                Output::Json => json_line(service_json(&s)),
            }
        }
        Request::Events(req) => {
            let mut events = c.events(*req).await.map_err(status)?.into_inner();
            while let Some(e) = events.message().await.map_err(status)? {
                match (e.event, output) {
                    (Some(event::Event::Service(e)), Output::Text) => say(
                        node,
                        label,
                        &format!(
                            "{} {:<12} {:<10} {}",
                            utc(e.at_unix_ms),
                            e.service,
                            state_name(e.state()),
                            e.message
                        ),
                    ),
                    (Some(event::Event::Service(e)), Output::Json) => json_line(json!({
                        "type": "service", "service": e.service, "state": state_name(e.state()),
                        "message": e.message, "atUnixMs": e.at_unix_ms,
                    })),
                    (Some(event::Event::ConfigApplied(a)), Output::Text) => say(
                        node,
                        label,
                        &format!("{} config applied: {}", utc(a.at_unix_ms), a.message),
                    ),
                    (Some(event::Event::ConfigApplied(a)), Output::Json) => json_line(json!({
                        "type": "configApplied", "message": a.message, "reboot": a.reboot,
                        "changes": a.changes.iter().map(|c| json!({"path": c.path, "needsReboot": c.needs_reboot})).collect::<Vec<_>>(),
                        "atUnixMs": a.at_unix_ms,
                    })),
                    (Some(event::Event::ConfigReverted(r)), Output::Text) => say(
                        node,
                        label,
                        &format!("{} config reverted: {}", utc(r.at_unix_ms), r.message),
                    ),
                    (Some(event::Event::ConfigReverted(r)), Output::Json) => json_line(json!({
                        "type": "configReverted", "message": r.message, "atUnixMs": r.at_unix_ms,
                    })),
                    (Some(event::Event::ConfigConfirmed(c)), Output::Text) => say(
                        node,
                        label,
                        &format!("{} config confirmed", utc(c.at_unix_ms)),
                    ),
                    (Some(event::Event::ConfigConfirmed(c)), Output::Json) => json_line(json!({
                        "type": "configConfirmed", "atUnixMs": c.at_unix_ms,
                    })),
                    (Some(event::Event::BootPhase(p)), Output::Text) => {
                        let outcome = if p.error.is_empty() {
                            "done".to_string()
                        } else {
                            format!("failed: {}", p.error)
                        };
                        say(
                            node,
                            label,
                            &format!(
                                "{} boot phase {:<14} {outcome} ({} ms)",
                                utc(p.at_unix_ms),
                                p.phase,
                                p.duration_ms
                            ),
                        )
                    }
                    (Some(event::Event::BootPhase(p)), Output::Json) => json_line(json!({
                        "type": "bootPhase", "phase": p.phase, "durationMs": p.duration_ms,
                        "error": p.error, "atUnixMs": p.at_unix_ms,
                    })),
                    // A kind of event newer than this kilnctl.
                    (None, _) => {}
                }
            }
        }
        Request::Stats => {
            let s = c.stats(StatsRequest {}).await.map_err(status)?.into_inner();
            print_stats(node, label, output, &s, json_line);
        }
    }
    Ok(())
}

/// "healthy" for SERVICE_STATE_HEALTHY.
fn state_name(state: ServiceState) -> String {
    state
        .as_str_name()
        .trim_start_matches("SERVICE_STATE_")
        .to_lowercase()
}

fn service_json(s: &ServiceStatus) -> serde_json::Value {
    json!({
        "id": s.id, "state": state_name(s.state()), "pid": s.pid, "restarts": s.restarts,
        "lastExit": s.last_exit, "message": s.message, "sinceUnixMs": s.since_unix_ms,
    })
}

fn print_stats(
    node: &str,
    label: bool,
    output: Output,
    s: &kiln_api_proto::v1::StatsResponse,
    json_line: impl Fn(serde_json::Value),
) {
    let ticks = f64::from(s.ticks_per_second.max(1));
    if output == Output::Json {
        json_line(json!({
            "memory": s.memory.as_ref().map(|m| json!({"totalBytes": m.total_bytes, "availableBytes": m.available_bytes})),
            "load": s.load.as_ref().map(|l| json!([l.one, l.five, l.fifteen])),
            "ticksPerSecond": s.ticks_per_second,
            "cpus": s.cpus.iter().map(|c| json!({
                "name": c.name, "user": c.user, "nice": c.nice, "system": c.system, "idle": c.idle,
                "iowait": c.iowait, "irq": c.irq, "softirq": c.softirq, "steal": c.steal,
            })).collect::<Vec<_>>(),
            "disks": s.disks.iter().map(|d| json!({
                "mountPoint": d.mount_point, "totalBytes": d.total_bytes,
                "usedBytes": d.used_bytes, "availableBytes": d.available_bytes,
            })).collect::<Vec<_>>(),
            "services": s.services.iter().map(|m| json!({
                "id": m.id, "memoryBytes": m.memory_bytes, "source": m.source,
                "cpuUsageUsec": m.cpu_usage_usec,
            })).collect::<Vec<_>>(),
        }));
        return;
    }
    if let Some(m) = &s.memory {
        say(
            node,
            label,
            &format!(
                "memory   {} available of {}",
                size(m.available_bytes),
                size(m.total_bytes)
            ),
        );
    }
    if let Some(l) = &s.load {
        say(
            node,
            label,
            &format!("load     {:.2} {:.2} {:.2}", l.one, l.five, l.fifteen),
        );
    }
    for c in &s.cpus {
        let secs = |t: u64| t as f64 / ticks;
        say(
            node,
            label,
            &format!(
                "{:<8} user {:.1} s, system {:.1} s, idle {:.1} s, iowait {:.1} s (since boot)",
                c.name,
                secs(c.user + c.nice),
                secs(c.system + c.irq + c.softirq),
                secs(c.idle),
                secs(c.iowait)
            ),
        );
    }
    for d in &s.disks {
        say(
            node,
            label,
            &format!(
                "disk     {:<14} {} used, {} available of {}",
                d.mount_point,
                size(d.used_bytes),
                size(d.available_bytes),
                size(d.total_bytes)
            ),
        );
    }
    for m in &s.services {
        say(
            node,
            label,
            &format!(
                "service  {:<14} {}, CPU {:.2} s ({})",
                m.id,
                size(m.memory_bytes),
                m.cpu_usage_usec as f64 / 1e6,
                m.source
            ),
        );
    }
}

/// Bytes in binary units, one decimal.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        // 2024-02-29T12:34:56Z, a leap day.
        assert_eq!(utc(1_709_210_096_000), "2024-02-29T12:34:56Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(-1000), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn durations() {
        assert_eq!(seconds("90"), Ok(90));
        assert_eq!(seconds("30s"), Ok(30));
        assert_eq!(seconds("5m"), Ok(300));
        assert_eq!(seconds("1h"), Ok(3600));
        for bad in ["", "s", "5d", "1.5m", "-3s", "99999999999s"] {
            assert!(seconds(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_and_states() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(state_name(ServiceState::Healthy), "healthy");
        assert_eq!(state_name(ServiceState::Stopped), "stopped");
    }
}
