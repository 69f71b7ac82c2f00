//! The supervisor with real child processes (sh, sleep, python3 listeners):
//! ordering, readiness, restarts, shutdown, reaping, cgroups, logs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kiln_supervisor::{
    Backoff, Condition, Error, Exit, HealthCheck, Probe, RestartPolicy, ServiceSpec, State,
    SupervisorConfig,
};

/// A listener in python3: appends `start-<name>` to `order`, listens after
/// half a second (TCP port or unix path), appends `stop-<name>` on SIGTERM.
const LISTENER: &str = r#"
import os, signal, socket, sys, time
kind, addr, name, order = sys.argv[1:5]
def log(what):
    with open(order, "a") as f:
        f.write(what + "-" + name + "\n")
def stop(*_):
    log("stop")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
log("start")
time.sleep(0.5)
if kind == "tcp":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(addr)))
else:
    s = socket.socket(socket.AF_UNIX)
    s.bind(addr)
s.listen()
while True:
    s.accept()[0].close()
"#;

fn probe_fast(probe: Probe) -> HealthCheck {
    HealthCheck {
        probe,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        start_period: Some(Duration::from_secs(5)),
        failure_threshold: 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_follows_health_of_dependencies_and_shutdown_is_reversed() {
    let dir = tempfile::tempdir().unwrap();
    let order = dir.path().join("order");
    let script = dir.path().join("listener.py");
    std::fs::write(&script, LISTENER).unwrap();
    let sock = dir.path().join("api.sock");
    let port = free_port();
    let (o, py) = (order.display().to_string(), script.display().to_string());
    let db = ServiceSpec::new("db", ["python3", &py, "tcp", &port.to_string(), "db", &o]).health(
        probe_fast(Probe::TcpConnect(
            format!("127.0.0.1:{port}").parse().unwrap(),
        )),
    );
    let api = ServiceSpec::new(
        "api",
        [
            "python3",
            &py,
            "unix",
            &sock.display().to_string(),
            "api",
            &o,
        ],
    )
    .depends_on(&["db"])
    .health(probe_fast(Probe::UnixConnect(sock.clone())));
    let web = sh(
        "web",
        &format!("trap 'echo stop-web >> {o}; exit 0' TERM; echo start-web >> {o}; while :; do sleep 0.1; done"),
    )
    .depends_on(&["api"]);
    let s = supervisor(SupervisorConfig::default());
    let mut events = s.subscribe();
    // Listed out of order on purpose.
    s.load(vec![web, api, db]).await.unwrap();
    wait_state(&s, "web", State::Healthy, Duration::from_secs(30)).await;
    // Healthy means started; the trap is set once it logged its start.
    eventually("web started", Duration::from_secs(10), || {
        std::fs::read_to_string(&order).is_ok_and(|t| t.contains("start-web"))
    })
    .await;

    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push((e.service, e.state));
    }
    let at = |id: &str, state: State| {
        seen.iter()
            .position(|e| e.0 == id && e.1 == state)
            .unwrap_or_else(|| panic!("no {id} {state:?} in {seen:?}"))
    };
    assert!(
        at("db", State::Healthy) < at("api", State::Starting),
        "{seen:?}"
    );
    assert!(
        at("api", State::Healthy) < at("web", State::Starting),
        "{seen:?}"
    );
    assert!(
        at("api", State::Running) < at("api", State::Healthy),
        "{seen:?}"
    );

    let report = s.shutdown(Duration::from_secs(20)).await;
    assert_eq!(report.stopped, ["web", "api", "db"], "{report}");
    assert!(report.killed.is_empty(), "{report}");
    let text = std::fs::read_to_string(&order).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "start-db",
            "start-api",
            "start-web",
            "stop-web",
            "stop-api",
            "stop-db"
        ]
    );
    for st in s.list() {
        assert_eq!(st.state, State::Stopped, "{st:?}");
        assert_eq!(st.last_exit, Some(Exit::Code(0)), "{st:?}");
    }
    // No service starts after shutdown.
    assert!(matches!(s.start("db"), Err(Error::ShuttingDown)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_back_off_exponentially_with_a_cap() {
    let dir = tempfile::tempdir().unwrap();
    let stamps = dir.path().join("stamps");
    let s = supervisor(SupervisorConfig::default());
    let crash = sh(
        "crash",
        &format!("date +%s.%N >> {}; exit 3", stamps.display()),
    )
    .backoff(fast_backoff());
    let mut events = s.subscribe();
    s.load(vec![crash]).await.unwrap();
    // Seven starts: gaps of 100, 200, 400, 800, 800, 800 ms.
    let mut failures = Vec::new();
    while failures.len() < 7 {
        let e = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("crash loop stalled")
            .unwrap();
        if e.state == State::Failed {
            failures.push(e.message);
        }
    }
    s.shutdown(Duration::from_secs(5)).await;
    assert!(
        failures[0].contains("exit code 3; restart 1 in 100 ms"),
        "{failures:?}"
    );
    assert!(failures[3].contains("restart 4 in 800 ms"), "{failures:?}");
    assert!(failures[6].contains("restart 7 in 800 ms"), "{failures:?}");

    let times: Vec<f64> = std::fs::read_to_string(&stamps)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(times.len() >= 7, "{times:?}");
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Growing (each at least 1.5x the previous) up to the cap...
    for i in 0..3 {
        assert!(gaps[i + 1] > gaps[i] * 1.5, "gaps {gaps:?}");
    }
    // ...then capped: never much above 800 ms, never below it.
    for g in &gaps[3..6] {
        assert!((0.75..1.6).contains(g), "cap not kept: {gaps:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies_differ() {
    let s = supervisor(SupervisorConfig::default());
    let on_failure_ok = sh("on-failure-ok", "exit 0").restart(RestartPolicy::OnFailure);
    let on_failure_bad = sh("on-failure-bad", "exit 2")
        .restart(RestartPolicy::OnFailure)
        .backoff(fast_backoff());
    let never = sh("never", "exit 4").restart(RestartPolicy::Never);
    let always_ok = sh("always-ok", "exit 0")
        .restart(RestartPolicy::Always)
        .backoff(fast_backoff());
    s.load(vec![on_failure_ok, on_failure_bad, never, always_ok])
        .await
        .unwrap();
    let st = wait_state(
        &s,
        "on-failure-ok",
        State::Finished,
        Duration::from_secs(10),
    )
    .await;
    assert!(st.message.contains("not restarted"), "{st:?}");
    let st = wait_state(&s, "never", State::Failed, Duration::from_secs(10)).await;
    assert!(st.message.contains("exit code 4; not restarted"), "{st:?}");
    assert_eq!(st.last_exit, Some(Exit::Code(4)));
    // on-failure restarts a failure, always restarts even a success.
    let mut events = s.subscribe();
    let mut starts = std::collections::BTreeMap::<String, u32>::new();
    while starts.get("on-failure-bad").copied().unwrap_or(0) < 2
        || starts.get("always-ok").copied().unwrap_or(0) < 2
    {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("no restarts")
            .unwrap();
        if e.service == "always-ok" && e.state == State::Finished {
            assert!(e.message.contains("restart"), "{e:?}");
        }
        if e.state == State::Starting {
            *starts.entry(e.service).or_default() += 1;
        }
    }
    assert!(!starts.contains_key("never") && !starts.contains_key("on-failure-ok"));
    assert_eq!(s.status("never").unwrap().restarts, 0);
    assert_eq!(s.status("on-failure-ok").unwrap().restarts, 0);
    // A finished service starts again on request.
    s.start("on-failure-ok").unwrap();
    wait_state(
        &s,
        "on-failure-ok",
        State::Starting,
        Duration::from_secs(10),
    )
    .await;
    s.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_neither_delays_shutdown_nor_starves_others() {
    let s = supervisor(SupervisorConfig::default());
    // One crash-looper restarting as fast as it can, one in a long backoff.
    let spin = sh("spin", "exit 1").backoff(Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(5),
        factor: 2,
        reset_after: Duration::from_secs(60),
    });
    let sleepy = sh("sleepy", "exit 1").backoff(Backoff {
        initial: Duration::from_secs(60),
        max: Duration::from_secs(60),
        ..fast_backoff()
    });
    let worker = sh("worker", "while :; do sleep 0.1; done").health(HealthCheck {
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
        ..HealthCheck::new(Probe::Exec(vec!["true".into()]))
    });
    let late = sh("late", "while :; do sleep 0.1; done").depends_on(&["worker"]);
    s.load(vec![spin, sleepy, worker, late]).await.unwrap();
    wait_state(&s, "late", State::Healthy, Duration::from_secs(10)).await;
    wait_state(&s, "sleepy", State::Failed, Duration::from_secs(10)).await;
    // A second of crash looping: the others' health checks keep passing.
    let mut events = s.subscribe();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut spins = 0;
    while let Ok(e) = events.try_recv() {
        assert!(
            !(e.service == "worker" && e.state == State::Unhealthy),
            "{e:?}"
        );
        spins += u32::from(e.service == "spin" && e.state == State::Starting);
    }
    assert!(spins >= 5, "spin restarted only {spins} times");
    assert_eq!(s.status("worker").unwrap().state, State::Healthy);
    // A start request cuts a backoff short.
    let mut events = s.subscribe();
    s.start("sleepy").unwrap();
    let restarted = async {
        loop {
            let e = events.recv().await.unwrap();
            if e.service == "sleepy" && e.state == State::Starting {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), restarted)
        .await
        .expect("start did not cut the 60 s backoff short");

    let start = Instant::now();
    let report = s.shutdown(Duration::from_secs(20)).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "shutdown waited on a crash loop: {report}"
    );
    assert!(report.killed.is_empty(), "{report}");
    for id in ["spin", "sleepy", "worker", "late"] {
        assert_eq!(s.status(id).unwrap().state, State::Stopped, "{id}");
    }
    assert_eq!(report.stopped.len(), 4, "{report}");
    let pos = |id: &str| report.stopped.iter().position(|s| s == id).unwrap();
    assert!(pos("late") < pos("worker"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_stop_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let s = supervisor(SupervisorConfig::default());
    let stubborn = sh(
        "stubborn",
        &format!(
            "trap '' TERM; touch {}; while :; do sleep 0.1; done",
            ready.display()
        ),
    )
    .stop_timeout(Duration::from_millis(500));
    s.load(vec![stubborn]).await.unwrap();
    let pid = wait_state(&s, "stubborn", State::Healthy, Duration::from_secs(10))
        .await
        .pid
        .unwrap();
    // Healthy means started; SIGTERM is ignored once the shell touched `ready`.
    eventually("trap set", Duration::from_secs(10), || ready.exists()).await;
    let start = Instant::now();
    s.stop("stubborn").await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(500));
    let st = s.status("stubborn").unwrap();
    assert_eq!(st.state, State::Stopped);
    assert_eq!(st.last_exit, Some(Exit::Signal(9)));
    assert!(gone(pid), "pid {pid}: {}", proc_state(pid));
    // A stopped service starts again on request; restart gives a new process.
    s.start("stubborn").unwrap();
    let first = wait_state(&s, "stubborn", State::Healthy, Duration::from_secs(10))
        .await
        .pid;
    s.restart("stubborn").await.unwrap();
    let second = wait_state(&s, "stubborn", State::Healthy, Duration::from_secs(10))
        .await
        .pid;
    assert_ne!(first, second);
    s.stop("stubborn").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_kills_what_remains() {
    let dir = tempfile::tempdir().unwrap();
    let (deaf_ready, polite_ready) = (dir.path().join("deaf"), dir.path().join("polite"));
    let s = supervisor(SupervisorConfig::default());
    // Ignores SIGTERM and would get 60 s before SIGKILL.
    let stubborn = sh(
        "deaf",
        &format!(
            "trap '' TERM; touch {}; while :; do sleep 0.1; done",
            deaf_ready.display()
        ),
    )
    .stop_timeout(Duration::from_secs(60));
    let polite = sh(
        "polite",
        &format!(
            "trap 'exit 0' TERM; touch {}; while :; do sleep 0.1; done",
            polite_ready.display()
        ),
    );
    s.load(vec![stubborn, polite]).await.unwrap();
    eventually("traps set", Duration::from_secs(10), || {
        deaf_ready.exists() && polite_ready.exists()
    })
    .await;
    let pid = wait_state(&s, "deaf", State::Healthy, Duration::from_secs(10))
        .await
        .pid
        .unwrap();
    wait_state(&s, "polite", State::Healthy, Duration::from_secs(10)).await;
    let start = Instant::now();
    let report = s.shutdown(Duration::from_secs(1)).await;
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(1), "{report}");
    assert!(took < Duration::from_secs(4), "{report}");
    assert_eq!(report.stopped, ["polite"], "{report}");
    assert_eq!(report.killed, ["deaf"], "{report}");
    let st = s.status("deaf").unwrap();
    assert_eq!(st.state, State::Stopped, "{st:?}");
    assert_eq!(st.last_exit, Some(Exit::Signal(9)));
    assert!(gone(pid), "pid {pid}: {}", proc_state(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("orphan");
    let s = supervisor(SupervisorConfig::default());
    // Double fork: the grandchild outlives its parent and exits later.
    let forker = sh(
        "forker",
        &format!(
            "(sleep 0.3 & echo $! > {p}.tmp; mv {p}.tmp {p}); exit 0",
            p = pidfile.display()
        ),
    )
    .restart(RestartPolicy::Never);
    s.load(vec![forker]).await.unwrap();
    wait_state(&s, "forker", State::Finished, Duration::from_secs(10)).await;
    let orphan = read_pid(&pidfile);
    // Reaped means /proc/<pid> is gone, not left a zombie.
    eventually(
        &format!("orphan {orphan} reaped ({})", proc_state(orphan)),
        Duration::from_secs(10),
        || gone(orphan),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_goes_to_ring_file_and_followers() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("go");
    let s = supervisor(SupervisorConfig {
        log_dir: Some(dir.path().join("logs")),
        log_lines: 3,
        ..Default::default()
    });
    // Waits for `gate`, so a follower can subscribe before the output.
    let talker = sh(
        "talker",
        &format!(
            "while [ ! -e {} ]; do sleep 0.05; done; for i in 1 2 3 4 5; do echo out-$i; done; echo err-6 >&2; printf 'no newline'",
            gate.display()
        ),
    )
    .restart(RestartPolicy::Never);
    s.load(vec![talker]).await.unwrap();
    wait_state(&s, "talker", State::Healthy, Duration::from_secs(10)).await;
    let mut follow = s.follow_logs("talker").unwrap();
    std::fs::write(&gate, "").unwrap();
    let mut followed = Vec::new();
    while followed.len() < 7 {
        let line = tokio::time::timeout(Duration::from_secs(10), follow.recv())
            .await
            .expect("output not followed")
            .unwrap();
        followed.push(line);
    }
    assert_eq!(
        followed,
        [
            "out-1",
            "out-2",
            "out-3",
            "out-4",
            "out-5",
            "err-6",
            "no newline"
        ]
    );
    // The ring keeps the last three.
    assert_eq!(s.logs("talker").unwrap(), ["out-5", "err-6", "no newline"]);
    let file = std::fs::read_to_string(dir.path().join("logs/talker.log")).unwrap();
    assert_eq!(
        file,
        "out-1\nout-2\nout-3\nout-4\nout-5\nerr-6\nno newline\n"
    );
    s.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_and_binary_output_is_split_not_lost() {
    let s = supervisor(SupervisorConfig::default());
    // 10000 bytes without a newline, then invalid UTF-8, then a last line.
    let blaster = sh(
        "blaster",
        "head -c 10000 /dev/zero | tr '\\0' a; echo; printf '\\377\\376ok\\n'; echo end",
    )
    .restart(RestartPolicy::Never);
    s.load(vec![blaster]).await.unwrap();
    wait_state(&s, "blaster", State::Finished, Duration::from_secs(10)).await;
    eventually("all output read", Duration::from_secs(5), || {
        s.logs("blaster").unwrap().last().map(String::as_str) == Some("end")
    })
    .await;
    let lines = s.logs("blaster").unwrap();
    let lens: Vec<usize> = lines.iter().map(String::len).collect();
    assert_eq!(lens[..3], [4096, 4096, 10000 - 2 * 4096], "{lens:?}");
    assert!(lines[..3].iter().all(|l| l.bytes().all(|b| b == b'a')));
    assert_eq!(lines[3], "\u{fffd}\u{fffd}ok");
    assert_eq!(lines[4], "end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_and_spawn_failures() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready");
    let other = dir.path().join("also");
    let s = supervisor(SupervisorConfig::default());
    let gated = sh("gated", "while :; do sleep 0.1; done").condition(Condition::All(vec![
        Condition::PathExists(flag.clone()),
        Condition::PathExists(other.clone()),
    ]));
    let missing =
        ServiceSpec::new("missing", ["/nonexistent/binary"]).restart(RestartPolicy::Never);
    let unknown = ServiceSpec::new("unknown", ["no-such-program-kiln"])
        .restart(RestartPolicy::OnFailure)
        .backoff(Backoff {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(60),
            ..fast_backoff()
        });
    let mut events = s.subscribe();
    s.load(vec![gated, missing, unknown]).await.unwrap();
    let st = wait_state(&s, "missing", State::Failed, Duration::from_secs(10)).await;
    assert!(
        st.message.contains("exec /nonexistent/binary") && st.message.contains("not restarted"),
        "{st:?}"
    );
    let st = wait_state(&s, "unknown", State::Failed, Duration::from_secs(10)).await;
    assert!(
        st.message.contains("no-such-program-kiln: not found")
            && st.message.contains("restart 1 in 60000 ms"),
        "{st:?}"
    );
    std::fs::write(&flag, "").unwrap();
    // Still waiting: one of the two paths is missing. Several re-checks pass.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(s.status("gated").unwrap().state, State::Waiting);
    std::fs::write(&other, "").unwrap();
    wait_state(&s, "gated", State::Healthy, Duration::from_secs(10)).await;
    let waits: Vec<String> = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|e| e.service == "gated" && e.state == State::Waiting)
        .map(|e| e.message)
        .collect();
    assert_eq!(waits.len(), 1, "one Waiting event per reason: {waits:?}");
    assert!(waits[0].contains("condition"), "{waits:?}");
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
    assert_eq!(
        err.to_string(),
        "service \"a\" depends on unknown service \"ghost\""
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
    let err = s.load(vec![sh("../etc", "true")]).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidId(ref id) if id == "../etc"),
        "{err}"
    );
    let err = s
        .load(vec![ServiceSpec::new("empty", Vec::<String>::new())])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::EmptyCommand(ref id) if id == "empty"));
    assert!(s.list().is_empty(), "nothing may start from an invalid set");
    assert!(matches!(s.status("a"), Err(Error::UnknownService(_))));

    // A later set may depend on services already loaded, not redefine them.
    s.load(vec![sh("base", "while :; do sleep 0.1; done")])
        .await
        .unwrap();
    s.load(vec![
        sh("top", "while :; do sleep 0.1; done").depends_on(&["base"])
    ])
    .await
    .unwrap();
    let err = s.load(vec![sh("base", "true")]).await.unwrap_err();
    assert!(matches!(err, Error::Duplicate(ref id) if id == "base"));
    wait_state(&s, "top", State::Healthy, Duration::from_secs(10)).await;
    let report = s.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.stopped, ["top", "base"], "{report}");
}

/// Cgroup v2 cleanup: a service's leftover children die with it, both when
/// it is stopped and when it exits by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_cleanup_kills_leftovers() {
    let Some(root) = cgroup2_test_root("cleanup") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (stop_pid, exit_pid) = (dir.path().join("stop"), dir.path().join("exit"));
    let s = supervisor(SupervisorConfig {
        cgroup_root: Some(root.clone()),
        ..Default::default()
    });
    // setsid: the leftover leaves the service's session and process group,
    // so only the cgroup still holds it.
    let stopped = sh(
        "stopped",
        &format!(
            "setsid sleep 300 & echo $! > {p}.tmp; mv {p}.tmp {p}; trap 'exit 0' TERM; while :; do sleep 0.1; done",
            p = stop_pid.display()
        ),
    );
    let exits = sh(
        "exits",
        &format!(
            "setsid sleep 300 & echo $! > {p}.tmp; mv {p}.tmp {p}; exit 0",
            p = exit_pid.display()
        ),
    )
    .restart(RestartPolicy::Never);
    s.load(vec![stopped, exits]).await.unwrap();
    wait_state(&s, "stopped", State::Healthy, Duration::from_secs(10)).await;
    eventually("pid file", Duration::from_secs(10), || stop_pid.exists()).await;
    let child = read_pid(&stop_pid);
    let procs = std::fs::read_to_string(root.join("stopped/cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l.trim() == child.to_string()),
        "child {child} not in the cgroup: {procs}"
    );
    s.stop("stopped").await.unwrap();
    eventually(
        &format!("leftover {child} killed"),
        Duration::from_secs(5),
        || gone(child),
    )
    .await;
    assert!(!root.join("stopped").exists(), "cgroup not removed");

    wait_state(&s, "exits", State::Finished, Duration::from_secs(10)).await;
    let child = read_pid(&exit_pid);
    eventually(
        &format!("leftover {child} killed"),
        Duration::from_secs(5),
        || gone(child),
    )
    .await;
    assert!(!root.join("exits").exists(), "cgroup not removed");
    s.shutdown(Duration::from_secs(5)).await;
    std::fs::remove_dir(&root).unwrap();
}

/// What a service starts with: stdin at EOF (/dev/null), its own session,
/// exactly the spec's environment, the spec's working directory, and
/// default signal dispositions (Rust ignores SIGPIPE; services must not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_start_in_a_clean_process_context() {
    let dir = tempfile::tempdir().unwrap();
    let s = supervisor(SupervisorConfig::default());
    let probe = sh(
        "context",
        "read x; echo read=$?; echo sid=$(cut -d' ' -f6 /proc/$$/stat) pid=$$; \
         echo cwd=$(pwd); env | sort | tr '\\n' ' '; echo; \
         grep SigIgn /proc/$$/status",
    )
    .env("GREETING", "hello")
    .cwd(dir.path())
    .restart(RestartPolicy::Never);
    s.load(vec![probe]).await.unwrap();
    wait_state(&s, "context", State::Finished, Duration::from_secs(10)).await;
    eventually("output read", Duration::from_secs(5), || {
        s.logs("context").unwrap().len() >= 5
    })
    .await;
    let logs = s.logs("context").unwrap();
    assert_eq!(logs[0], "read=1", "{logs:?}");
    let ids: Vec<&str> = logs[1].split(' ').collect();
    assert_eq!(
        ids[0].trim_start_matches("sid="),
        ids[1].trim_start_matches("pid="),
        "{logs:?}"
    );
    assert_eq!(logs[2], format!("cwd={}", dir.path().display()));
    // sh adds PWD (and may add SHLVL, _); nothing comes from the test process.
    let vars: Vec<&str> = logs[3]
        .split_whitespace()
        .filter(|v| !v.starts_with("PWD=") && !v.starts_with("SHLVL=") && !v.starts_with("_="))
        .collect();
    assert_eq!(vars, ["GREETING=hello", "PATH=/usr/bin:/bin"], "{logs:?}");
    // This test process ignores SIGPIPE (bit 12); only glibc's reserved
    // signals 32 and 33 (bits 31, 32), which glibc itself manages and
    // sigaction cannot touch, may stay as inherited.
    let ignored = u64::from_str_radix(logs[4].trim_start_matches("SigIgn:\t"), 16).unwrap();
    assert_eq!(ignored & !(0b11 << 31), 0, "{logs:?}");
}
