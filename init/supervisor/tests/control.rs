//! What the machine API asks of the supervisor, with real processes: stop,
//! start and restart on request, unknown ids refused, and `watch`, whose
//! snapshot and changes neither miss nor repeat a state change.

mod common;

use std::time::Duration;

use common::*;
use kiln_supervisor::{Error, Event, Exit, ServiceSpec, State, SupervisorConfig};

const LIMIT: Duration = Duration::from_secs(10);

fn sleeper(id: &str) -> ServiceSpec {
    ServiceSpec::new(id, ["sleep", "600"]).env("PATH", "/usr/bin:/bin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_restart_on_request() {
    let s = supervisor(SupervisorConfig::default());
    s.load(vec![sleeper("a"), sleeper("b")]).await.unwrap();
    let a1 = wait_state(&s, "a", State::Healthy, LIMIT)
        .await
        .pid
        .unwrap();
    let b1 = wait_state(&s, "b", State::Healthy, LIMIT)
        .await
        .pid
        .unwrap();

    // Stop returns once the process is gone; the other service is untouched.
    s.stop("a").await.unwrap();
    let st = s.status("a").unwrap();
    assert_eq!((st.state, st.pid), (State::Stopped, None));
    assert_eq!(st.last_exit, Some(Exit::Signal(libc::SIGTERM)));
    eventually("a's process reaped", LIMIT, || gone(a1)).await;
    assert_eq!(s.status("b").unwrap().pid, Some(b1));
    // A second stop of a stopped service is a no-op.
    s.stop("a").await.unwrap();

    s.start("a").unwrap();
    let a2 = wait_state(&s, "a", State::Healthy, LIMIT)
        .await
        .pid
        .unwrap();
    assert_ne!(a1, a2);
    // Start of a running service changes nothing.
    s.start("a").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.status("a").unwrap().pid, Some(a2));

    s.restart("b").await.unwrap();
    let b2 = wait_state(&s, "b", State::Healthy, LIMIT)
        .await
        .pid
        .unwrap();
    assert_ne!(b1, b2);
    eventually("b's first process reaped", LIMIT, || gone(b1)).await;

    for id in ["", "nope", "../a"] {
        assert!(matches!(s.start(id), Err(Error::UnknownService(_))), "{id}");
        assert!(matches!(s.stop(id).await, Err(Error::UnknownService(_))));
        assert!(matches!(s.restart(id).await, Err(Error::UnknownService(_))));
    }
    s.shutdown(LIMIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_each_change_exactly_once() {
    let s = supervisor(SupervisorConfig::default());
    s.load(vec![sleeper("steady")]).await.unwrap();
    wait_state(&s, "steady", State::Healthy, LIMIT).await;
    // A service that keeps changing while watchers subscribe.
    let flapping = ServiceSpec::new("flapping", ["/bin/sh", "-c", "sleep 0.05; exit 3"])
        .env("PATH", "/usr/bin:/bin")
        .backoff(kiln_supervisor::Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
            factor: 1,
            reset_after: Duration::from_secs(60),
        });
    s.load(vec![flapping]).await.unwrap();

    for _ in 0..20 {
        let (states, mut changes) = s.watch();
        let steady = states.iter().find(|st| st.id == "steady").unwrap();
        assert_eq!(steady.state, State::Healthy);
        // Only `flapping` changes now, so the changes after the snapshot
        // are numbered on from its last one: no gap, no repeat.
        let mut last = states.iter().map(|st| st.seq).max().unwrap();
        for _ in 0..3 {
            let e: Event = tokio::time::timeout(LIMIT, changes.recv())
                .await
                .expect("flapping keeps changing")
                .unwrap();
            assert_eq!(e.service, "flapping", "steady does not change");
            assert_eq!(e.seq, last + 1, "{e:?} after {last}");
            last = e.seq;
        }
    }
    s.shutdown(LIMIT).await;
}
