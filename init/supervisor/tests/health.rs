//! Health checks with real probes: Unhealthy after the failure threshold
//! (reported, not restarted; dependents keep running), recovery, the start
//! period, probe timeouts.

mod common;

use std::time::Duration;

use common::*;
use kiln_supervisor::{HealthCheck, Probe, State, SupervisorConfig};

fn exec_check(argv: &[&str]) -> HealthCheck {
    HealthCheck {
        probe: Probe::Exec(argv.iter().map(|s| s.to_string()).collect()),
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
        start_period: None,
        failure_threshold: 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_checks_make_a_service_unhealthy_and_passing_ones_healthy_again() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ok");
    std::fs::write(&flag, "").unwrap();
    let f = flag.display().to_string();
    let s = supervisor(SupervisorConfig::default());
    let flaky = sh("flaky", "while :; do sleep 0.1; done").health(exec_check(&["test", "-e", &f]));
    let user = sh("user", "while :; do sleep 0.1; done").depends_on(&["flaky"]);
    s.load(vec![flaky, user]).await.unwrap();
    let pid = wait_state(&s, "flaky", State::Healthy, Duration::from_secs(10))
        .await
        .pid;
    let user_pid = wait_state(&s, "user", State::Healthy, Duration::from_secs(10))
        .await
        .pid;

    std::fs::remove_file(&flag).unwrap();
    let st = wait_state(&s, "flaky", State::Unhealthy, Duration::from_secs(10)).await;
    assert!(
        st.message.contains("2 health checks failed") && st.message.contains("exit code 1"),
        "{st:?}"
    );
    // Reported, not restarted; the dependent keeps running.
    assert_eq!(st.pid, pid);
    assert_eq!(st.restarts, 0);
    let u = s.status("user").unwrap();
    assert_eq!((u.state, u.pid), (State::Healthy, user_pid), "{u:?}");

    std::fs::write(&flag, "").unwrap();
    let st = wait_state(&s, "flaky", State::Healthy, Duration::from_secs(10)).await;
    assert_eq!(st.pid, pid);
    s.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_period_forgives_early_failures_and_dependents_wait() {
    let s = supervisor(SupervisorConfig::default());
    let never_ready = sh("never-ready", "while :; do sleep 0.1; done").health(HealthCheck {
        start_period: Some(Duration::from_secs(1)),
        failure_threshold: 1,
        ..exec_check(&["false"])
    });
    let dependent = sh("dependent", "exit 0").depends_on(&["never-ready"]);
    let mut events = s.subscribe();
    s.load(vec![never_ready, dependent]).await.unwrap();
    wait_state(&s, "never-ready", State::Unhealthy, Duration::from_secs(10)).await;
    let all: Vec<_> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    let at = |state: State| {
        all.iter()
            .find(|e| e.service == "never-ready" && e.state == state)
            .unwrap_or_else(|| panic!("no {state:?} in {all:?}"))
            .at
    };
    // The start period runs from just before the process is spawned, i.e.
    // after Starting and before Running.
    let held = at(State::Unhealthy)
        .duration_since(at(State::Starting))
        .unwrap();
    assert!(held >= Duration::from_secs(1), "unhealthy after {held:?}");
    // The dependent never started: it waits for a healthy dependency.
    let st = s.status("dependent").unwrap();
    assert_eq!(st.state, State::Waiting, "{st:?}");
    assert!(st.message.contains("never-ready"), "{st:?}");
    assert!(all
        .iter()
        .all(|e| e.service != "dependent" || e.state == State::Waiting));
    s.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_probe_times_out() {
    let s = supervisor(SupervisorConfig::default());
    let hung = sh("hung", "while :; do sleep 0.1; done").health(HealthCheck {
        timeout: Duration::from_millis(200),
        failure_threshold: 1,
        ..exec_check(&["sleep", "30"])
    });
    s.load(vec![hung]).await.unwrap();
    let st = wait_state(&s, "hung", State::Unhealthy, Duration::from_secs(10)).await;
    assert!(st.message.contains("timed out after 200ms"), "{st:?}");
    s.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_probe_passes_once_the_marker_exists() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("synced");
    let m = marker.display().to_string();
    let s = supervisor(SupervisorConfig::default());
    // The service writes its marker after a while, as timed does after its
    // first sync; its dependent waits for it.
    let marked = sh(
        "marked",
        &format!("sleep 1; echo ok > {m}.tmp; mv {m}.tmp {m}; while :; do sleep 0.1; done"),
    )
    .health(HealthCheck {
        probe: Probe::File(marker.clone()),
        failure_threshold: 1,
        ..exec_check(&[])
    });
    let dependent = sh("dependent", "while :; do sleep 0.1; done").depends_on(&["marked"]);
    s.load(vec![marked, dependent]).await.unwrap();
    let st = wait_state(&s, "marked", State::Unhealthy, Duration::from_secs(10)).await;
    assert!(
        st.message.contains(&format!("{m} does not exist")),
        "{st:?}"
    );
    assert_eq!(s.status("dependent").unwrap().state, State::Waiting);
    wait_state(&s, "marked", State::Healthy, Duration::from_secs(10)).await;
    wait_state(&s, "dependent", State::Healthy, Duration::from_secs(10)).await;
    // A removed marker turns it unhealthy again.
    std::fs::remove_file(&marker).unwrap();
    wait_state(&s, "marked", State::Unhealthy, Duration::from_secs(10)).await;
    s.shutdown(Duration::from_secs(5)).await;
}
