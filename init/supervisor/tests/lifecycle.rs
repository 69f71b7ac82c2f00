//! The supervisor with real child processes (sh, sleep, python3's socket
//! listener): ordering, readiness, restarts, shutdown, reaping, cgroups, logs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_supervisor::reaper::Reaper;
use kiln_supervisor::{
    Backoff, Condition, Error, HealthCheck, Probe, RestartPolicy, ServiceSpec, State, Supervisor,
    SupervisorConfig,
};

fn sh(id: &str, script: &str) -> ServiceSpec {
    ServiceSpec::new(id, ["/bin/sh", "-c", script]).env("PATH", "/usr/bin:/bin")
}

fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(800),
        factor: 2,
        reset_after: Duration::from_secs(60),
    }
}

fn supervisor(config: SupervisorConfig) -> Supervisor {
    // Orphans of services come to this process, as they come to PID 1.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes an integer flag only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    Supervisor::new(config, Reaper::start())
}

/// Waits until `id` reaches `state` (bounded).
async fn wait_state(s: &Supervisor, id: &str, state: State, limit: Duration) {
    let until = Instant::now() + limit;
    loop {
        let st = s.status(id).unwrap();
        if st.state == state {
            return;
        }
        assert!(
            Instant::now() < until,
            "{id} never reached {state:?}; now {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependency_waits_for_health_and_shutdown_is_reversed() {
    let dir = tempfile::tempdir().unwrap();
    let order = dir.path().join("order");
    let port = free_port();
    let o = order.display();
    // `db` becomes healthy only once it listens, a second after starting.
    let db = sh(
        "db",
        &format!("trap 'echo stop-db >> {o}; exit 0' TERM; echo start-db >> {o}; sleep 1; exec python3 -c 'import socket,signal,sys; signal.signal(signal.SIGTERM, lambda *a: (open(\"{o}\",\"a\").write(\"stop-db\\n\"), sys.exit(0))); s=socket.socket(); s.bind((\"127.0.0.1\",{port})); s.listen(); [s.accept() for _ in iter(int,1)]'"),
    )
    .health(HealthCheck {
        probe: Probe::TcpConnect(format!("127.0.0.1:{port}").parse().unwrap()),
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        failure_threshold: 2,
    });
    let api = sh("api", &format!("trap 'echo stop-api >> {o}; exit 0' TERM; echo start-api >> {o}; while :; do sleep 0.1; done")).depends_on(&["db"]);
    let s = supervisor(SupervisorConfig::default());
    let mut events = s.subscribe();
    s.load(vec![api, db]).await.unwrap();
    wait_state(&s, "api", State::Healthy, Duration::from_secs(20)).await;

    // api started only after db was healthy.
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push((e.service, e.state));
    }
    let db_healthy = seen
        .iter()
        .position(|e| *e == ("db".to_string(), State::Healthy))
        .unwrap();
    let api_start = seen
        .iter()
        .position(|e| *e == ("api".to_string(), State::Starting))
        .unwrap();
    assert!(db_healthy < api_start, "{seen:?}");

    let report = s.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.stopped, ["api", "db"], "{report}");
    assert!(report.killed.is_empty());
    let text = std::fs::read_to_string(&order).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, ["start-db", "start-api", "stop-api", "stop-db"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_back_off_exponentially_and_policies_differ() {
    let dir = tempfile::tempdir().unwrap();
    let stamps = dir.path().join("stamps");
    let s = supervisor(SupervisorConfig::default());
    let crash = sh(
        "crash",
        &format!("date +%s.%N >> {}; exit 3", stamps.display()),
    )
    .backoff(fast_backoff());
    let once_ok = sh("once-ok", "exit 0").restart(RestartPolicy::OnFailure);
    let never = sh("never", "exit 4").restart(RestartPolicy::Never);
    s.load(vec![crash, once_ok, never]).await.unwrap();
    wait_state(&s, "once-ok", State::Finished, Duration::from_secs(10)).await;
    wait_state(&s, "never", State::Failed, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(s.status("never").unwrap().restarts, 0);
    assert_eq!(
        s.status("never").unwrap().last_exit,
        Some(kiln_supervisor::Exit::Code(4))
    );

    let times: Vec<f64> = std::fs::read_to_string(&stamps)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(times.len() >= 4, "only {} starts in 2.5 s", times.len());
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // 100, 200, 400, 800, 800 ms (+ process start time): growing, then capped.
    assert!(
        gaps[1] > gaps[0] * 1.5 && gaps[2] > gaps[1] * 1.5,
        "gaps {gaps:?}"
    );
    assert!(gaps.iter().all(|g| *g < 1.5), "cap exceeded: {gaps:?}");
    assert!(s.status("crash").unwrap().restarts >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_neither_delays_shutdown_nor_starves_others() {
    let s = supervisor(SupervisorConfig::default());
    let slow = Backoff {
        initial: Duration::from_secs(30),
        ..fast_backoff()
    };
    let crash = sh("crash", "exit 1").backoff(slow);
    let worker = sh("worker", "while :; do sleep 0.1; done");
    s.load(vec![crash, worker]).await.unwrap();
    wait_state(&s, "worker", State::Healthy, Duration::from_secs(10)).await;
    wait_state(&s, "crash", State::Failed, Duration::from_secs(10)).await;
    let start = Instant::now();
    let report = s.shutdown(Duration::from_secs(20)).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "shutdown waited on a backoff: {report}"
    );
    assert!(report.killed.is_empty(), "{report}");
    assert_eq!(s.status("crash").unwrap().state, State::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_stop_timeout_and_deadline() {
    let s = supervisor(SupervisorConfig::default());
    let stubborn = sh("stubborn", "trap '' TERM; while :; do sleep 0.1; done")
        .stop_timeout(Duration::from_millis(500));
    s.load(vec![stubborn]).await.unwrap();
    wait_state(&s, "stubborn", State::Healthy, Duration::from_secs(10)).await;
    let pid = s.status("stubborn").unwrap().pid.unwrap();
    let start = Instant::now();
    s.stop("stubborn").await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert_eq!(
        s.status("stubborn").unwrap().last_exit,
        Some(kiln_supervisor::Exit::Signal(9))
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still exists"
    );
    // A stopped service starts again on request.
    s.start("stubborn").unwrap();
    wait_state(&s, "stubborn", State::Healthy, Duration::from_secs(10)).await;
    s.stop("stubborn").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("orphan");
    let s = supervisor(SupervisorConfig::default());
    // Double fork: the grandchild outlives its parent and exits later.
    let forker = sh(
        "forker",
        &format!("(sleep 0.3 & echo $! > {}); exit 0", pidfile.display()),
    )
    .restart(RestartPolicy::Never);
    s.load(vec![forker]).await.unwrap();
    wait_state(&s, "forker", State::Finished, Duration::from_secs(10)).await;
    let orphan: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    // Reaped means /proc/<pid> is gone, not a zombie.
    while Path::new(&format!("/proc/{orphan}")).exists() {
        let status = std::fs::read_to_string(format!("/proc/{orphan}/status")).unwrap_or_default();
        assert!(
            Instant::now() < until,
            "orphan {orphan} not reaped: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_goes_to_ring_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = supervisor(SupervisorConfig {
        log_dir: Some(dir.path().to_path_buf()),
        log_lines: 3,
        ..Default::default()
    });
    let talker = sh(
        "talker",
        "for i in 1 2 3 4 5; do echo out-$i; done; echo err-6 >&2",
    )
    .restart(RestartPolicy::Never);
    s.load(vec![talker]).await.unwrap();
    wait_state(&s, "talker", State::Finished, Duration::from_secs(10)).await;
    let until = Instant::now() + Duration::from_secs(5);
    while s.logs("talker").unwrap().last().map(String::as_str) != Some("err-6") {
        assert!(Instant::now() < until, "{:?}", s.logs("talker"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.logs("talker").unwrap(), ["out-4", "out-5", "err-6"]);
    let file = std::fs::read_to_string(dir.path().join("talker.log")).unwrap();
    assert_eq!(file, "out-1\nout-2\nout-3\nout-4\nout-5\nerr-6\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_and_spawn_failures() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready");
    let s = supervisor(SupervisorConfig::default());
    let gated =
        sh("gated", "while :; do sleep 0.1; done").condition(Condition::PathExists(flag.clone()));
    let missing =
        ServiceSpec::new("missing", ["/nonexistent/binary"]).restart(RestartPolicy::Never);
    s.load(vec![gated, missing]).await.unwrap();
    wait_state(&s, "missing", State::Failed, Duration::from_secs(10)).await;
    assert!(
        s.status("missing")
            .unwrap()
            .message
            .contains("exec /nonexistent/binary"),
        "{:?}",
        s.status("missing")
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.status("gated").unwrap().state, State::Waiting);
    std::fs::write(&flag, "").unwrap();
    wait_state(&s, "gated", State::Healthy, Duration::from_secs(10)).await;
    s.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_definitions_are_refused() {
    let s = supervisor(SupervisorConfig::default());
    let err = s
        .load(vec![sh("a", "true").depends_on(&["ghost"])])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownDependency { ref service, ref dependency } if service == "a" && dependency == "ghost"),
        "{err}"
    );
    let err = s
        .load(vec![
            sh("a", "true").depends_on(&["b"]),
            sh("b", "true").depends_on(&["a"]),
        ])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("dependency cycle: a -> b -> a"),
        "{err}"
    );
    let err = s
        .load(vec![sh("a", "true"), sh("a", "true")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Duplicate(ref id) if id == "a"));
    assert!(s.list().is_empty(), "nothing may start from an invalid set");
}

/// Cgroup v2 cleanup: a service's leftover children die with it. The host
/// has an empty cgroup2 hierarchy at /sys/fs/cgroup/unified (v1 elsewhere);
/// on a v2-only host /sys/fs/cgroup itself is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_stop_kills_leftovers() {
    let root = cgroup2_test_root();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child");
    let s = supervisor(SupervisorConfig {
        cgroup_root: Some(root.clone()),
        ..Default::default()
    });
    let parent = sh(
        "parent",
        &format!(
            "sleep 300 & echo $! > {}; trap 'exit 0' TERM; while :; do sleep 0.1; done",
            pidfile.display()
        ),
    );
    s.load(vec![parent]).await.unwrap();
    wait_state(&s, "parent", State::Healthy, Duration::from_secs(10)).await;
    let until = Instant::now() + Duration::from_secs(5);
    while !pidfile.exists() {
        assert!(Instant::now() < until);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let child: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let procs = std::fs::read_to_string(root.join("parent/cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l.trim() == child.to_string()),
        "child {child} not in the cgroup: {procs}"
    );
    s.stop("parent").await.unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{child}")).exists() {
        assert!(
            Instant::now() < until,
            "leftover {child} survived its service"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!root.join("parent").exists(), "cgroup not removed");
    let _ = std::fs::remove_dir(&root);
}

fn cgroup2_test_root() -> PathBuf {
    let base = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists())
        .expect("no cgroup2 hierarchy on this host");
    let root = base.join(format!("kiln-test-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("cannot create a test cgroup (run as root)");
    root
}
