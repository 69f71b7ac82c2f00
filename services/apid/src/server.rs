//! The `Machine` gRPC service and the serve loop. apid serves in one of two
//! modes, chosen from the stored config each time the server (re)starts:
//! maintenance (no config: server-only TLS with a fresh self-signed key) or
//! configured (mutual TLS against the machine CA). Applying a config that
//! changes the mode or the API's own identity restarts the server in place.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kiln_api_proto::init::v1::init_client::InitClient;
use kiln_api_proto::v1::machine_server::{Machine, MachineServer};
use kiln_api_proto::v1::{
    event, ApplyConfigurationRequest, ApplyConfigurationResponse, ApplyMode, ConfigApplied,
    ConfirmConfigurationRequest, ConfirmConfigurationResponse, DmesgRequest, Event, EventsRequest,
    FieldChange, GetConfigurationRequest, GetConfigurationResponse, KernelMessage, LogLine,
    LogsRequest, Mode, RebootRequest, RebootResponse, ResetRequest, ResetResponse,
    ServiceListRequest, ServiceListResponse, ServiceRequest, ServiceResponse, ShutdownRequest,
    ShutdownResponse, StatsRequest, StatsResponse, VersionRequest, VersionResponse,
};
use nix::unistd::Pid;
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Certificate, Channel, Identity as TlsIdentity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use tracing::{error, info, warn};

use crate::access::{Access, Call};
use crate::config::NodeConfig;
use crate::config_source::{self, ConfigSource};
use crate::events::Journal;
use crate::identity::Identity;
use crate::power::{self, PowerAction};
use crate::stats::{self, StatsError};
use crate::try_apply::{self, Tries};
use crate::{kmsg, logs, Error};
use kiln_config_store::reset::ResetRequest as StoredReset;
use kiln_config_store::ConfigStore;

/// How long a power request waits so its answer reaches the caller first.
const POWER_GRACE: Duration = Duration::from_millis(300);

/// What apid needs to know about the node it runs on.
pub struct Node {
    /// Where the config is stored (STATE, or /run on a diskless node).
    pub store: ConfigStore,
    /// Service logs written by the supervisor.
    pub log_dir: PathBuf,
    /// The kernel log device.
    pub kmsg: PathBuf,
    /// The process that carries out reboot and power-off: PID 1 on a node.
    pub init: Pid,
    /// Names and addresses for the maintenance certificate.
    pub names: Vec<String>,
    /// Where the maintenance fingerprint is announced for the operator at
    /// the machine: /dev/console on a node.
    pub console: Option<PathBuf>,
    /// PID 1's control channel (a unix socket), for the service calls.
    pub control: PathBuf,
    /// Where Stats reads the kernel's numbers.
    pub stats: stats::Sources,
    /// Where a node with no config fetches one (`kiln.config=` on the
    /// kernel command line).
    pub config_source: Option<ConfigSource>,
}

/// The service for one run of the server, in one mode.
struct Api {
    node: Arc<Node>,
    access: Access,
    /// Notified to restart the server (new mode or identity).
    restart: Arc<Notify>,
    /// PID 1's control channel (connects on first use).
    init: InitClient<Channel>,
    /// apid's own events, kept across server restarts.
    journal: Arc<Journal>,
    /// The pending try, and the lock every config write takes.
    tries: Arc<Tries>,
    /// Turns true when this server run ends: follow streams then end too,
    /// or the graceful shutdown would wait for them forever.
    closing: watch::Receiver<bool>,
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Machine for Api {
    async fn version(
        &self,
        request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        self.access.authorize(Call::Version, &request)?;
        Ok(Response::new(VersionResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            arch: std::env::consts::ARCH.to_string(),
            mode: match self.access {
                Access::Maintenance => Mode::Maintenance,
                Access::Configured => Mode::Configured,
            } as i32,
            hostname: hostname(),
        }))
    }

    async fn apply_configuration(
        &self,
        request: Request<ApplyConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        self.access.authorize(Call::ApplyConfiguration, &request)?;
        let req = request.into_inner();
        let mode = ApplyMode::try_from(req.mode)
            .map_err(|_| Status::invalid_argument(format!("mode: unknown value {}", req.mode)))?;
        let new = NodeConfig::parse(&req.data).map_err(Status::invalid_argument)?;
        let try_timeout = (mode == ApplyMode::Try)
            .then(|| try_apply::timeout(req.try_timeout_seconds))
            .transpose()
            .map_err(Status::invalid_argument)?;
        // From here to the store, no other write of the config.
        let _writing = self.tries.lock().await;
        // The stored config, not the one the server started with: live
        // applies since then changed it.
        let stored = match self.access {
            Access::Maintenance => None,
            Access::Configured => self.node.store.load().map_err(internal)?,
        };
        let old = stored
            .as_deref()
            .map(NodeConfig::parse)
            .transpose()
            .map_err(Status::internal)?;
        let first = old.is_none();
        let changes = match &old {
            Some(old) => old.changes_to(&new).map_err(Status::internal)?,
            None => vec![],
        };
        let needs_reboot = changes.iter().any(|c| c.needs_reboot);
        let reboot_fields = || {
            changes
                .iter()
                .filter(|c| c.needs_reboot)
                .map(|c| c.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if mode == ApplyMode::NoReboot && needs_reboot {
            return Err(Status::failed_precondition(format!(
                "no-reboot: these changes need a reboot: {}",
                reboot_fields()
            )));
        }
        if mode == ApplyMode::Try && first {
            return Err(Status::failed_precondition(
                "try: the node has no config to go back to; apply its first config in auto mode",
            ));
        }
        if mode == ApplyMode::Try && needs_reboot {
            return Err(Status::failed_precondition(format!(
                "try: these changes need a reboot, which a try cannot undo: {}",
                reboot_fields()
            )));
        }
        if !req.dry_run {
            if let Some(left_ms) = self.tries.pending_ms().map_err(internal)? {
                return Err(Status::failed_precondition(format!(
                    "a config applied in try mode awaits confirmation (it reverts in {} s): confirm it or wait for the revert",
                    left_ms.div_ceil(1000)
                )));
            }
        }
        let fields = changes
            .iter()
            .map(|c| FieldChange {
                path: c.path.clone(),
                needs_reboot: c.needs_reboot,
            })
            .collect();
        let message = if req.dry_run {
            "dry run: nothing stored".to_string()
        } else if first {
            "config stored; the node leaves maintenance mode".to_string()
        } else if changes.is_empty() {
            "no changes".to_string()
        } else if mode == ApplyMode::Staged {
            "config stored; it takes effect at the next boot".to_string()
        } else if let Some(t) = try_timeout {
            format!(
                "config stored and applied; it reverts in {} s unless confirmed",
                t.as_secs()
            )
        } else if needs_reboot {
            "config stored; rebooting to apply it".to_string()
        } else {
            "config stored and applied".to_string()
        };
        let reboot = !req.dry_run && mode == ApplyMode::Auto && needs_reboot;
        let mut response = ApplyConfigurationResponse {
            changes: fields,
            reboot,
            message,
            revert_at_unix_ms: 0,
        };
        if req.dry_run || (!first && changes.is_empty()) {
            return Ok(Response::new(response));
        }
        let saved = match (try_timeout, &stored) {
            (Some(timeout), Some(previous)) => {
                response.revert_at_unix_ms = now_unix_ms()
                    .saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
                self.tries.begin(&req.data, previous, timeout)
            }
            _ => self.node.store.save(&req.data),
        };
        saved.map_err(|e| {
            error!("cannot store the config: {e}");
            Status::internal(e.to_string())
        })?;
        info!(
            changes = changes.len(),
            reboot, "machine config stored: {}", response.message
        );
        self.journal.record(Event {
            event: Some(event::Event::ConfigApplied(ConfigApplied {
                mode: mode as i32,
                changes: response.changes.clone(),
                reboot,
                message: response.message.clone(),
                at_unix_ms: now_unix_ms(),
            })),
        });
        if reboot {
            self.power(PowerAction::Reboot)?;
        } else if mode != ApplyMode::Staged
            && (first
                || old
                    .as_ref()
                    .is_some_and(|old| old.api_identity_differs(&new)))
        {
            // The answer goes out before the server restarts: tonic's
            // graceful shutdown finishes calls in flight.
            self.restart.notify_one();
        }
        Ok(Response::new(response))
    }

    async fn confirm_configuration(
        &self,
        request: Request<ConfirmConfigurationRequest>,
    ) -> Result<Response<ConfirmConfigurationResponse>, Status> {
        self.access
            .authorize(Call::ConfirmConfiguration, &request)?;
        if !self.tries.confirm().await.map_err(internal)? {
            return Err(Status::failed_precondition(
                "no config applied in try mode awaits confirmation (none was tried, or it was reverted)",
            ));
        }
        Ok(Response::new(ConfirmConfigurationResponse {}))
    }

    async fn reset(
        &self,
        request: Request<ResetRequest>,
    ) -> Result<Response<ResetResponse>, Status> {
        self.access.authorize(Call::Reset, &request)?;
        let wipe_state = request.into_inner().wipe_state;
        {
            let _writing = self.tries.lock().await;
            self.node
                .store
                .request_reset(StoredReset { wipe_state })
                .map_err(internal)?;
        }
        warn!(
            wipe_state,
            "reset requested: rebooting; PID 1 wipes the disks early in the next boot"
        );
        self.power(PowerAction::Reboot)?;
        Ok(Response::new(ResetResponse {}))
    }

    async fn get_configuration(
        &self,
        request: Request<GetConfigurationRequest>,
    ) -> Result<Response<GetConfigurationResponse>, Status> {
        let role = self.access.authorize(Call::GetConfiguration, &request)?;
        let stored = self
            .node
            .store
            .load()
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found("the node has no config"))?;
        let redact = role < kiln_pki::Role::Admin;
        let data = if redact {
            NodeConfig::parse(&stored)
                .map_err(Status::internal)?
                .redacted_yaml()
                .map_err(Status::internal)?
        } else {
            stored
        };
        Ok(Response::new(GetConfigurationResponse {
            data,
            redacted: redact,
        }))
    }

    async fn reboot(
        &self,
        request: Request<RebootRequest>,
    ) -> Result<Response<RebootResponse>, Status> {
        self.access.authorize(Call::Reboot, &request)?;
        self.power(PowerAction::Reboot)?;
        Ok(Response::new(RebootResponse {}))
    }

    async fn shutdown(
        &self,
        request: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        self.access.authorize(Call::Shutdown, &request)?;
        self.power(PowerAction::PowerOff)?;
        Ok(Response::new(ShutdownResponse {}))
    }

    type LogsStream = Streamed<LogLine>;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        self.access.authorize(Call::Logs, &request)?;
        let req = request.into_inner();
        let path = logs::log_path(&self.node.log_dir, &req.service).map_err(|e| match e {
            logs::LogsError::NoLog(_) => Status::not_found(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        })?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(logs::stream(path, req.tail, req.follow, tx));
        let lines = ReceiverStream::new(rx).map(|r| {
            r.map(|line| LogLine { line })
                .map_err(|e| Status::internal(e.to_string()))
        });
        Ok(Response::new(self.until_closing(lines)))
    }

    type DmesgStream = Streamed<KernelMessage>;

    async fn dmesg(
        &self,
        request: Request<DmesgRequest>,
    ) -> Result<Response<Self::DmesgStream>, Status> {
        self.access.authorize(Call::Dmesg, &request)?;
        let follow = request.into_inner().follow;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(kmsg::stream(self.node.kmsg.clone(), follow, tx));
        let records =
            ReceiverStream::new(rx).map(|r| r.map_err(|e| Status::internal(e.to_string())));
        Ok(Response::new(self.until_closing(records)))
    }

    async fn service_list(
        &self,
        request: Request<ServiceListRequest>,
    ) -> Result<Response<ServiceListResponse>, Status> {
        self.access.authorize(Call::ServiceList, &request)?;
        let list = self
            .init
            .clone()
            .service_list(ServiceListRequest {})
            .await
            .map_err(from_init)?;
        Ok(Response::new(list.into_inner()))
    }

    async fn service_start(
        &self,
        request: Request<ServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        self.service_call(Call::ServiceStart, request).await
    }

    async fn service_stop(
        &self,
        request: Request<ServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        self.service_call(Call::ServiceStop, request).await
    }

    async fn service_restart(
        &self,
        request: Request<ServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        self.service_call(Call::ServiceRestart, request).await
    }

    type EventsStream = Streamed<Event>;

    async fn events(
        &self,
        request: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        self.access.authorize(Call::Events, &request)?;
        let follow = request.into_inner().follow;
        // apid's own first, so none recorded while PID 1 answers is lost.
        let (kept, own) = self.journal.watch();
        let services = self
            .init
            .clone()
            .events(EventsRequest { follow })
            .await
            .map_err(from_init)?
            .into_inner();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(forward_events(kept, follow.then_some(own), services, tx));
        Ok(Response::new(self.until_closing(ReceiverStream::new(rx))))
    }

    async fn stats(
        &self,
        request: Request<StatsRequest>,
    ) -> Result<Response<StatsResponse>, Status> {
        self.access.authorize(Call::Stats, &request)?;
        let services = self
            .init
            .clone()
            .service_list(ServiceListRequest {})
            .await
            .map_err(from_init)?
            .into_inner()
            .services;
        let internal = |e: StatsError| {
            error!("stats: {e}");
            Status::internal(e.to_string())
        };
        let s = &self.node.stats;
        Ok(Response::new(StatsResponse {
            memory: Some(s.memory().map_err(internal)?),
            cpus: s.cpus().map_err(internal)?,
            ticks_per_second: stats::ticks_per_second(),
            load: Some(s.load().map_err(internal)?),
            disks: s.disks().map_err(internal)?,
            services: s.services(&services).map_err(internal)?,
        }))
    }
}

/// Streams apid's kept events, then PID 1's (boot phases, then services'
/// current states) and, when following, apid's and PID 1's new ones, until
/// the client goes away.
async fn forward_events(
    kept: Vec<Event>,
    mut own: Option<broadcast::Receiver<Event>>,
    mut services: tonic::Streaming<Event>,
    tx: mpsc::Sender<Result<Event, Status>>,
) {
    for e in kept {
        if tx.send(Ok(e)).await.is_err() {
            return;
        }
    }
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return,
            service = services.message() => match service {
                Ok(Some(e)) => Ok(e),
                // Not following: the current states were all; or PID 1 is
                // shutting down.
                Ok(None) => return,
                Err(status) => Err(from_init(status)),
            },
            mine = async { own.as_mut()?.recv().await.ok() }, if own.is_some() => match mine {
                Some(e) => Ok(e),
                None => Err(Status::data_loss("apid's events lost: this client fell behind; subscribe again")),
            },
        };
        let end = next.is_err();
        if tx.send(next).await.is_err() || end {
            return;
        }
    }
}

impl Api {
    /// `stream`, ended when this server run ends.
    fn until_closing<T: Send + 'static>(
        &self,
        stream: impl Stream<Item = Result<T, Status>> + Send + 'static,
    ) -> Streamed<T> {
        let mut closing = self.closing.clone();
        Box::pin(futures_util::StreamExt::take_until(stream, async move {
            let _ = closing.wait_for(|c| *c).await;
        }))
    }

    /// ServiceStart, ServiceStop, ServiceRestart: authorised here, carried
    /// out by PID 1.
    async fn service_call(
        &self,
        call: Call,
        request: Request<ServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        let role = self.access.authorize(call, &request)?;
        let req = request.into_inner();
        info!(service = %req.id, role = role.name(), "{call:?}");
        let mut init = self.init.clone();
        let answer = match call {
            Call::ServiceStart => init.service_start(req).await,
            Call::ServiceStop => init.service_stop(req).await,
            _ => init.service_restart(req).await,
        };
        Ok(Response::new(answer.map_err(from_init)?.into_inner()))
    }
}

/// PID 1's refusals (unknown service, apid itself, shutting down) go to the
/// caller as they are; anything else means the channel itself failed.
fn from_init(status: Status) -> Status {
    use tonic::Code;
    match status.code() {
        Code::NotFound | Code::FailedPrecondition | Code::InvalidArgument | Code::DataLoss => {
            status
        }
        _ => Status::unavailable(format!(
            "PID 1's control channel: {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}

/// A store failure, logged here and told to the caller as INTERNAL.
fn internal(e: impl std::fmt::Display) -> Status {
    error!("{e}");
    Status::internal(e.to_string())
}

pub(crate) fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Api {
    /// Asks init for a reboot or power-off shortly after this call answers.
    fn power(&self, action: PowerAction) -> Result<(), Status> {
        // Check now that the signal can be sent, so a failure is reported.
        nix::sys::signal::kill(self.node.init, None)
            .map_err(|e| Status::internal(format!("cannot signal init: {e}")))?;
        let init = self.node.init;
        tokio::spawn(async move {
            tokio::time::sleep(POWER_GRACE).await;
            match power::request(init, action) {
                Ok(()) => info!(?action, "asked init to {action:?}"),
                Err(e) => error!(?action, "cannot signal init: {e}"),
            }
        });
        Ok(())
    }
}

/// The node's hostname, as the kernel has it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Shows the maintenance fingerprint on the console, where the operator at
/// the machine (or its serial log) can read it.
fn announce(console: &std::path::Path, fingerprint: &str) {
    use std::io::Write;
    let line = format!(
        "\nkiln: maintenance mode, machine API on port {}; TLS fingerprint (sha256):\nkiln:   {fingerprint}\n",
        kiln_api_proto::PORT
    );
    let written = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(console)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        warn!("cannot show the fingerprint on {}: {e}", console.display());
    }
}

/// Serves the machine API on `listen` until `stop` completes, restarting
/// the server whenever a stored config changes its mode or identity.
pub async fn serve(
    node: Arc<Node>,
    listen: SocketAddr,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    tokio::pin!(stop);
    let init = kiln_api_client::init_client(&node.control);
    let journal = Arc::new(Journal::default());
    // One for every server run: a revert or a fetched config may ask for a
    // restart at any time.
    let restart = Arc::new(Notify::new());
    let tries = Tries::new(node.clone(), journal.clone(), restart.clone());
    tries.resume();
    if let Some(source) = &node.config_source {
        match node.store.load() {
            Ok(None) => {
                info!(url = %source.url, "no config: fetching one (kiln.config=)");
                tokio::spawn(config_source::fetch_and_store(
                    source.clone(),
                    tries.clone(),
                    journal.clone(),
                    restart.clone(),
                ));
            }
            Ok(Some(_)) => info!("kiln.config= is ignored: the node has a config"),
            Err(e) => error!("kiln.config= not used: {e}"),
        }
    }
    loop {
        let (closing, closing_rx) = watch::channel(false);
        let (api, tls) = prepare(
            &node,
            restart.clone(),
            init.clone(),
            journal.clone(),
            tries.clone(),
            closing_rx,
        )?;
        let mut stopped = false;
        let server = Server::builder()
            .tls_config(tls)
            .map_err(Error::Tls)?
            .add_service(MachineServer::new(api))
            .serve_with_shutdown(listen, async {
                tokio::select! {
                    _ = restart.notified() => {}
                    _ = &mut stop => stopped = true,
                }
                closing.send_replace(true);
            });
        server.await.map_err(Error::Serve)?;
        if stopped {
            return Ok(());
        }
        info!("restarting the machine API with the stored config");
    }
}

/// Chooses the mode from the stored config and makes the TLS identity.
fn prepare(
    node: &Arc<Node>,
    restart: Arc<Notify>,
    init: InitClient<Channel>,
    journal: Arc<Journal>,
    tries: Arc<Tries>,
    closing: watch::Receiver<bool>,
) -> Result<(Api, ServerTlsConfig), Error> {
    let stored = match node.store.load() {
        Ok(stored) => stored,
        Err(e) => {
            error!("cannot read the stored config ({e}): maintenance mode");
            None
        }
    };
    let config = stored.and_then(|data| match NodeConfig::parse(&data) {
        Ok(c) => Some(c),
        Err(e) => {
            error!("the stored config is invalid ({e}): maintenance mode");
            None
        }
    });
    let (access, tls) = match &config {
        None => {
            let id = Identity::self_signed(&node.names).map_err(Error::Identity)?;
            // The operator passes this to `kilnctl --fingerprint`.
            warn!(
                fingerprint = %id.fingerprint,
                "maintenance mode: no machine config; apply one with kilnctl --insecure"
            );
            if let Some(console) = &node.console {
                announce(console, &id.fingerprint);
            }
            (
                Access::Maintenance,
                ServerTlsConfig::new().identity(TlsIdentity::from_pem(id.cert_pem, id.key_pem)),
            )
        }
        Some(c) => {
            let mut names = node.names.clone();
            names.extend(c.cert_sans());
            let (ca_cert, ca_key) = c.machine_ca();
            let id = Identity::issued_by(ca_cert, ca_key, &names).map_err(Error::Identity)?;
            info!(fingerprint = %id.fingerprint, "configured: mutual TLS with the machine CA");
            (
                Access::Configured,
                ServerTlsConfig::new()
                    .identity(TlsIdentity::from_pem(id.cert_pem, id.key_pem))
                    .client_ca_root(Certificate::from_pem(ca_cert)),
            )
        }
    };
    Ok((
        Api {
            node: node.clone(),
            access,
            restart,
            init,
            journal,
            tries,
            closing,
        },
        tls,
    ))
}
