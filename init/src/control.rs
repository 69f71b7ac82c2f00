//! PID 1's control channel: the `kiln.init.v1.Init` gRPC service on a unix
//! socket (`/run/kiln/init.sock`), through which apid — a separate process,
//! which never shares PID 1's memory — lists, starts, stops and restarts
//! services and follows their state changes for the machine API. Its event
//! stream starts with this boot's phases, so `kilnctl events` shows how the
//! boot went next to what the services did.
//!
//! Only root may connect: the socket is 0600 and each peer's uid is checked
//! (SO_PEERCRED). Nothing a client does can stall or crash PID 1: the server
//! is a task on PID 1's runtime whose handlers never block (stop waits are
//! async, event streams are fed by their own tasks from a broadcast channel
//! that never waits for a slow reader, which is told DATA_LOSS instead);
//! accept errors are logged and slowed down, never fatal; a server that
//! cannot start is logged and the node runs on without it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_api_proto::init::v1::init_server::{Init, InitServer};
use kiln_api_proto::v1::{
    event, BootPhase, Event as ApiEvent, EventsRequest, ServiceEvent, ServiceListRequest,
    ServiceListResponse, ServiceRequest, ServiceResponse, ServiceState, ServiceStatus,
};
use kiln_supervisor::{Error as SupervisorError, Event, State, Supervisor};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tracing::{error, info, warn};

/// How long a restart of the channel's own client waits, so the answer
/// reaches the caller before the client is stopped.
const SELF_RESTART_GRACE: Duration = Duration::from_millis(300);
/// After an accept error (e.g. out of descriptors), the pause before the next
/// accept: the loop must not spin PID 1's CPU.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Events buffered per stream before the stream's task waits for its reader.
const STREAM_BUFFER: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("creating {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("binding {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("making {path} mode 0600: {source}")]
    Mode {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("serving the control channel: {0}")]
    Serve(tonic::transport::Error),
}

/// Starts the control channel on `socket` as a task of the current runtime;
/// a failure is logged, never fatal. `caller` is the id of the service that
/// calls through it (apid): it may not be stopped through the channel.
/// `phases` are this boot's, sent first on every event stream.
pub fn spawn(supervisor: Supervisor, socket: PathBuf, caller: &str, phases: Vec<BootPhase>) {
    let caller = caller.to_string();
    tokio::spawn(async move {
        if let Err(e) = serve(supervisor, &socket, &caller, phases).await {
            error!("control channel: {e}; the machine API cannot manage services");
        }
    });
}

/// Serves the control channel on `socket` until the runtime ends.
pub async fn serve(
    supervisor: Supervisor,
    socket: &Path,
    caller: &str,
    phases: Vec<BootPhase>,
) -> Result<(), ControlError> {
    let listener = bind(socket)?;
    info!(socket = %socket.display(), "control channel listening");
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(accept(listener, tx));
    let control = Control {
        supervisor,
        caller: caller.to_string(),
        phases: phases.into(),
    };
    Server::builder()
        .concurrency_limit_per_connection(32)
        // A peer that vanished without closing is found and dropped.
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(InitServer::new(control))
        .serve_with_incoming(ReceiverStream::new(rx))
        .await
        .map_err(ControlError::Serve)
}

/// Binds `socket` (replacing a stale one) and makes it 0600.
fn bind(socket: &Path) -> Result<UnixListener, ControlError> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ControlError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // A socket left by an earlier PID 1 run (tests) refuses the bind.
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(|source| ControlError::Bind {
        path: socket.to_path_buf(),
        source,
    })?;
    // Until this chmod the socket has the umask's mode; the peer check in
    // `accept` refuses non-root callers regardless.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ControlError::Mode {
            path: socket.to_path_buf(),
            source,
        }
    })?;
    Ok(listener)
}

/// Accepts connections from root peers and hands them to the server.
async fn accept(listener: UnixListener, tx: mpsc::Sender<std::io::Result<UnixStream>>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match stream.peer_cred() {
                Ok(cred) if cred.uid() == 0 => {
                    if tx.send(Ok(stream)).await.is_err() {
                        return; // the server is gone
                    }
                }
                Ok(cred) => warn!(uid = cred.uid(), "control channel: non-root peer refused"),
                Err(e) => warn!("control channel: cannot check a peer: {e}"),
            },
            Err(e) => {
                warn!("control channel: accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

struct Control {
    supervisor: Supervisor,
    /// The service on the other end of the channel.
    caller: String,
    /// This boot's phases, as events.
    phases: std::sync::Arc<[BootPhase]>,
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Init for Control {
    async fn service_list(
        &self,
        _: Request<ServiceListRequest>,
    ) -> Result<Response<ServiceListResponse>, Status> {
        let services = self.supervisor.list().iter().map(status).collect();
        Ok(Response::new(ServiceListResponse { services }))
    }

    async fn service_start(
        &self,
        request: Request<ServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        let id = request.into_inner().id;
        self.supervisor.start(&id).map_err(refused)?;
        info!(service = %id, "start requested through the machine API");
        self.answer(&id)
    }

    async fn service_stop(
        &self,
        request: Request<ServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        let id = request.into_inner().id;
        self.supervisor.status(&id).map_err(refused)?;
        if id == self.caller {
            return Err(Status::failed_precondition(format!(
                "{id} serves the machine API: stopping it would cut this connection off (restart it, or reboot)"
            )));
        }
        info!(service = %id, "stop requested through the machine API");
        self.supervisor.stop(&id).await.map_err(refused)?;
        self.answer(&id)
    }

    async fn service_restart(
        &self,
        request: Request<ServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        let id = request.into_inner().id;
        self.supervisor.status(&id).map_err(refused)?;
        info!(service = %id, "restart requested through the machine API");
        if id == self.caller {
            // Answer first: the restart ends the caller's process.
            let supervisor = self.supervisor.clone();
            let answer = self.answer(&id);
            tokio::spawn(async move {
                tokio::time::sleep(SELF_RESTART_GRACE).await;
                if let Err(e) = supervisor.restart(&id).await {
                    warn!(service = %id, "restart: {e}");
                }
            });
            return answer;
        }
        self.supervisor.restart(&id).await.map_err(refused)?;
        self.answer(&id)
    }

    type EventsStream = Streamed<ApiEvent>;

    async fn events(
        &self,
        request: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let follow = request.into_inner().follow;
        let (states, mut changes) = self.supervisor.watch();
        let phases = self.phases.clone();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            let phases = phases.iter().cloned().map(event::Event::BootPhase);
            let current = states.iter().map(|st| {
                event::Event::Service(ServiceEvent {
                    service: st.id.clone(),
                    state: state(st.state) as i32,
                    message: st.message.clone(),
                    at_unix_ms: unix_ms(st.since),
                })
            });
            for e in phases.chain(current) {
                if tx.send(Ok(ApiEvent { event: Some(e) })).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            loop {
                let change = tokio::select! {
                    _ = tx.closed() => return,
                    change = changes.recv() => change,
                };
                let sent = match change {
                    Ok(e) => tx.send(Ok(event(&e))).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let lost = format!(
                            "{n} service events lost: this client fell behind; subscribe again"
                        );
                        let _ = tx.send(Err(Status::data_loss(lost))).await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl Control {
    fn answer(&self, id: &str) -> Result<Response<ServiceResponse>, Status> {
        let st = self.supervisor.status(id).map_err(refused)?;
        Ok(Response::new(ServiceResponse {
            service: Some(status(&st)),
        }))
    }
}

/// The gRPC status for a request the supervisor refused.
fn refused(e: SupervisorError) -> Status {
    match e {
        SupervisorError::UnknownService(_) => Status::not_found(e.to_string()),
        SupervisorError::ShuttingDown => Status::failed_precondition(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

fn status(st: &kiln_supervisor::ServiceStatus) -> ServiceStatus {
    ServiceStatus {
        id: st.id.clone(),
        state: state(st.state) as i32,
        pid: st.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
        restarts: st.restarts,
        last_exit: st.last_exit.map(|e| e.to_string()).unwrap_or_default(),
        message: st.message.clone(),
        since_unix_ms: unix_ms(st.since),
    }
}

fn event(e: &Event) -> ApiEvent {
    ApiEvent {
        event: Some(event::Event::Service(ServiceEvent {
            service: e.service.clone(),
            state: state(e.state) as i32,
            message: e.message.clone(),
            at_unix_ms: unix_ms(e.at),
        })),
    }
}

fn state(s: State) -> ServiceState {
    match s {
        State::Waiting => ServiceState::Waiting,
        State::Starting => ServiceState::Starting,
        State::Running => ServiceState::Running,
        State::Healthy => ServiceState::Healthy,
        State::Unhealthy => ServiceState::Unhealthy,
        State::Stopping => ServiceState::Stopping,
        State::Finished => ServiceState::Finished,
        State::Failed => ServiceState::Failed,
        State::Stopped => ServiceState::Stopped,
    }
}

/// Milliseconds since the Unix epoch; negative before it (an unset clock
/// cannot be before 1970, but the type allows it).
pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}
