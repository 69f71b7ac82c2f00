//! PID 1's control channel with a real supervisor running real processes,
//! called over its unix socket as apid calls it: list, stop, start, restart,
//! the event stream, the refusals, and clients that misbehave.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use kiln_api_proto::init::v1::init_client::InitClient;
use kiln_api_proto::v1::{
    event, BootPhase, Event, EventsRequest, ServiceEvent, ServiceListRequest, ServiceRequest,
    ServiceState, ServiceStatus,
};
use kiln_supervisor::reaper::{self, Reaper};
use kiln_supervisor::{ServiceSpec, Supervisor, SupervisorConfig};
use tokio::io::AsyncWriteExt;
use tonic::transport::Channel;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(15);

fn sleeper(id: &str) -> ServiceSpec {
    ServiceSpec::new(id, ["sleep", "600"]).env("PATH", "/usr/bin:/bin")
}

/// Lists until every service is healthy (the socket may not be up yet).
async fn healthy(c: &mut InitClient<Channel>, n: usize) -> Vec<ServiceStatus> {
    let until = tokio::time::Instant::now() + LIMIT;
    loop {
        if let Ok(r) = c.service_list(ServiceListRequest {}).await {
            let list = r.into_inner().services;
            if list.len() == n && list.iter().all(|s| s.state == ServiceState::Healthy as i32) {
                return list;
            }
        }
        assert!(
            tokio::time::Instant::now() < until,
            "services never healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next_event(events: &mut tonic::Streaming<Event>) -> event::Event {
    tokio::time::timeout(LIMIT, events.message())
        .await
        .expect("an event in time")
        .expect("no stream error")
        .expect("stream open")
        .event
        .expect("an event of a known kind")
}

async fn next(events: &mut tonic::Streaming<Event>) -> ServiceEvent {
    match next_event(events).await {
        event::Event::Service(e) => e,
        other => panic!("expected a service event, got {other:?}"),
    }
}

/// Reads events until `service` reaches `state`; returns its states seen.
async fn until_state(
    events: &mut tonic::Streaming<Event>,
    service: &str,
    state: ServiceState,
) -> Vec<ServiceState> {
    let mut seen = vec![];
    loop {
        let e = next(events).await;
        if e.service == service {
            seen.push(e.state());
            if e.state == state as i32 {
                return seen;
            }
        }
    }
}

fn req(id: &str) -> ServiceRequest {
    ServiceRequest { id: id.into() }
}

fn pid(list: &[ServiceStatus], id: &str) -> u32 {
    list.iter().find(|s| s.id == id).unwrap().pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_through_the_control_socket() {
    reaper::become_subreaper().unwrap();
    let supervisor = Supervisor::new(SupervisorConfig::default(), Reaper::start());
    supervisor
        .load(vec![sleeper("api"), sleeper("worker")])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/init.sock");
    let phases = vec![
        BootPhase {
            phase: "early-mounts".into(),
            duration_ms: 3,
            error: String::new(),
            at_unix_ms: 1,
        },
        BootPhase {
            phase: "disks".into(),
            duration_ms: 40,
            error: "no disk".into(),
            at_unix_ms: 2,
        },
    ];
    kiln_init::control::spawn(supervisor.clone(), socket.clone(), "api", phases.clone());
    let mut c = kiln_api_client::init_client(&socket);
    let list = healthy(&mut c, 2).await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let worker = list.iter().find(|s| s.id == "worker").unwrap().clone();
    assert!(worker.pid > 0 && worker.since_unix_ms > 0, "{worker:?}");
    assert_eq!((worker.restarts, worker.last_exit.as_str()), (0, ""));

    // The stream starts with the boot's phases, then every current state,
    // then follows.
    let mut events = c
        .events(EventsRequest { follow: true })
        .await
        .unwrap()
        .into_inner();
    for phase in phases {
        assert_eq!(
            next_event(&mut events).await,
            event::Event::BootPhase(phase)
        );
    }
    let mut current = [next(&mut events).await, next(&mut events).await];
    current.sort_by(|a, b| a.service.cmp(&b.service));
    let shown: Vec<(&str, ServiceState)> = current
        .iter()
        .map(|e| (e.service.as_str(), e.state()))
        .collect();
    assert_eq!(
        shown,
        [
            ("api", ServiceState::Healthy),
            ("worker", ServiceState::Healthy)
        ]
    );

    // Stop answers once stopped, and the stream saw it happen.
    let stopped = c.service_stop(req("worker")).await.unwrap().into_inner();
    let st = stopped.service.unwrap();
    assert_eq!((st.state(), st.pid), (ServiceState::Stopped, 0));
    assert_eq!(st.last_exit, "killed by signal 15");
    assert_eq!(
        until_state(&mut events, "worker", ServiceState::Stopped).await,
        [ServiceState::Stopping, ServiceState::Stopped]
    );
    assert!(!Path::new(&format!("/proc/{}/exe", worker.pid)).exists());

    c.service_start(req("worker")).await.unwrap();
    until_state(&mut events, "worker", ServiceState::Healthy).await;
    let before = pid(&healthy(&mut c, 2).await, "worker");
    let r = c.service_restart(req("worker")).await.unwrap().into_inner();
    assert_ne!(r.service.unwrap().pid, before);
    assert_ne!(pid(&healthy(&mut c, 2).await, "worker"), before);

    // The channel's own client may not be stopped; unknown ids are named.
    let err = c.service_stop(req("api")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("cut"), "{}", err.message());
    let now = c.service_list(ServiceListRequest {}).await.unwrap();
    assert_eq!(
        pid(&now.into_inner().services, "api"),
        pid(&list, "api"),
        "api still runs"
    );
    for call in ["start", "stop", "restart"] {
        let err = match call {
            "start" => c.service_start(req("nope")).await,
            "stop" => c.service_stop(req("nope")).await,
            _ => c.service_restart(req("nope")).await,
        }
        .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{call}: {err}");
        assert!(err.message().contains("nope"), "{}", err.message());
    }
    // It may be restarted: the answer comes first, then a new process.
    c.service_restart(req("api")).await.unwrap();
    until_state(&mut events, "api", ServiceState::Stopped).await;
    until_state(&mut events, "api", ServiceState::Healthy).await;
    assert_ne!(pid(&healthy(&mut c, 2).await, "api"), pid(&list, "api"));

    // Without follow the stream ends after the phases and current states.
    let mut once = c
        .events(EventsRequest { follow: false })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while once.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 2 + 2);
    supervisor.shutdown(LIMIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_clients_do_not_block_others() {
    reaper::become_subreaper().unwrap();
    let supervisor = Supervisor::new(SupervisorConfig::default(), Reaper::start());
    supervisor.load(vec![sleeper("one")]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("init.sock");
    // A stale file where the socket goes is replaced.
    std::fs::write(&socket, "stale").unwrap();
    kiln_init::control::spawn(supervisor.clone(), socket.clone(), "apid", vec![]);
    let mut c = kiln_api_client::init_client(&socket);
    healthy(&mut c, 1).await;

    // One connection that sends nothing, one that sends garbage, an event
    // stream never read, and one dropped as soon as it started.
    let _silent = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let mut garbage = tokio::net::UnixStream::connect(&socket).await.unwrap();
    garbage.write_all(&[0xff; 4096]).await.unwrap();
    let _unread = kiln_api_client::init_client(&socket)
        .events(EventsRequest { follow: true })
        .await
        .unwrap();
    let dropped = kiln_api_client::init_client(&socket)
        .events(EventsRequest { follow: true })
        .await
        .unwrap();
    drop(dropped);
    for _ in 0..5 {
        let r = tokio::time::timeout(LIMIT, c.service_restart(req("one"))).await;
        r.expect("answers in time").unwrap();
    }
    healthy(&mut c, 1).await;
    supervisor.shutdown(LIMIT).await;
}
