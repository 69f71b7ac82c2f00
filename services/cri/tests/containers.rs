//! Container tests (as root): busybox images from the test registry run by
//! kiln-cri through its per-container shims (libcontainer), in pods on
//! Debian's bridge plugin; exit codes, CRI logs, stop timeouts, and a
//! daemon restart under a running container.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::registry::Registry;
use common::{in_netns, push_busybox, refused, Cri};
use kiln_cri::proto::v1::*;
use tonic::Code;

const IMAGE: &str = "kiln/busybox:1";

/// A registry with the busybox image, kiln-cri with it pulled, and a
/// bridge network configured.
async fn setup() -> (Registry, tempfile::TempDir, Cri, String) {
    let reg = Registry::start(None).await;
    let (work, _, _) = push_busybox(&reg);
    let mut cri = Cri::start(std::slice::from_ref(&reg.addr)).await;
    let image = format!("{}/{IMAGE}", reg.addr);
    pull(&mut cri, &image).await;
    let ipam = cri.dir.path().join("ipam");
    std::fs::write(
        cri.cni_conf_dir().join("10-kiln.conflist"),
        format!(
            r#"{{"cniVersion":"1.0.0","name":"kiln-test","plugins":[{{"type":"bridge","bridge":"kiln0","isGateway":true,
               "ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"10.88.0.0/24"}}]]}}}}]}}"#,
            ipam.display()
        ),
    )
    .unwrap();
    (reg, work, cri, image)
}

fn pod_config(cri: &Cri, name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: common::pod_metadata(name),
        hostname: format!("host-{name}"),
        log_directory: logs(cri).display().to_string(),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        }),
        ..Default::default()
    }
}

fn logs(cri: &Cri) -> PathBuf {
    cri.dir.path().join("logs")
}

async fn run_pod(cri: &mut Cri, name: &str) -> (String, PodSandboxConfig) {
    let config = pod_config(cri, name);
    run_pod_with(cri, config).await
}

async fn run_pod_with(cri: &mut Cri, config: PodSandboxConfig) -> (String, PodSandboxConfig) {
    let id = cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    (id, config)
}

fn container_config(name: &str, image: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.log"),
        labels: HashMap::from([("c".to_string(), name.to_string())]),
        ..Default::default()
    }
}

async fn create(
    cri: &mut Cri,
    pod: &(String, PodSandboxConfig),
    config: ContainerConfig,
) -> Result<String, tonic::Status> {
    cri.runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.0.clone(),
            config: Some(config),
            sandbox_config: Some(pod.1.clone()),
        })
        .await
        .map(|r| r.into_inner().container_id)
}

async fn pull(cri: &mut Cri, image: &str) {
    cri.images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Runs the container as root (over the image's user 1000).
fn run_as_root(config: &mut ContainerConfig) {
    config.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 0 }),
            ..Default::default()
        }),
        ..Default::default()
    });
}

fn set_oom_score_adj(config: &mut ContainerConfig, oom_score_adj: i64) {
    set_resources(
        config,
        LinuxContainerResources {
            oom_score_adj,
            ..Default::default()
        },
    );
}

fn set_resources(config: &mut ContainerConfig, resources: LinuxContainerResources) {
    config.linux = Some(LinuxContainerConfig {
        resources: Some(resources),
        ..Default::default()
    });
}

async fn create_started(
    cri: &mut Cri,
    pod: &(String, PodSandboxConfig),
    config: ContainerConfig,
) -> String {
    let id = create(cri, pod, config).await.unwrap();
    start(cri, &id).await;
    id
}

async fn start(cri: &mut Cri, id: &str) {
    cri.runtime
        .start_container(StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .unwrap();
}

async fn status(cri: &mut Cri, id: &str) -> ContainerStatus {
    cri.runtime
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

async fn wait_exited(cri: &mut Cri, id: &str, within: Duration) -> ContainerStatus {
    let deadline = Instant::now() + within;
    loop {
        let s = status(cri, id).await;
        if s.state == ContainerState::ContainerExited as i32 {
            return s;
        }
        assert!(Instant::now() < deadline, "still {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The CRI log's entries as (stream, tag, text), each timestamp checked.
fn log_entries(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, ' ').collect();
            let ts = f[0];
            assert_eq!(ts.len(), 30, "RFC 3339 with nanoseconds: {ts}");
            assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
            (f[1].to_string(), f[2].to_string(), f[3].to_string())
        })
        .collect()
}

async fn stop(cri: &mut Cri, id: &str, timeout: i64) {
    cri.runtime
        .stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout,
        })
        .await
        .unwrap();
}

/// The text of each line of the CRI log `name` in the pod's log directory.
fn log_lines(cri: &Cri, name: &str) -> Vec<String> {
    log_entries(&logs(cri).join(name))
        .into_iter()
        .map(|e| e.2)
        .collect()
}

/// Removes a container and checks its status is then NOT_FOUND.
async fn remove_and_check_gone(cri: &mut Cri, id: &str) {
    cri.runtime
        .remove_container(RemoveContainerRequest {
            container_id: id.into(),
        })
        .await
        .unwrap();
    refused(
        cri.runtime
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await,
        Code::NotFound,
    );
}

/// A test's end: removes the pods, checks nothing is left, stops kiln-cri.
async fn finish(mut cri: Cri, pods: &[&str]) {
    for pod in pods {
        cri.remove_pod(pod).await;
    }
    assert_clean(&cri);
    cri.stop().await;
}

/// Nothing of any pod or container is left: records, bundles, mounts.
fn assert_clean(cri: &Cri) {
    assert_eq!(cri.files("sandboxes"), Vec::<String>::new());
    assert_eq!(cri.files("containers"), Vec::<String>::new());
    let bundles: Vec<_> = std::fs::read_dir(cri.state().join("containers"))
        .unwrap()
        .collect();
    assert!(bundles.is_empty());
    let dir = cri.dir.path().to_string_lossy().into_owned();
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
        .map(String::from)
        .collect();
    assert!(mounts.is_empty(), "{mounts:?}");
}

#[test]
fn a_container_logs_and_exits_with_its_code() {
    in_netns(|| async {
        let (_reg, _work, mut cri, image) = setup().await;
        let pod = run_pod(&mut cri, "logger").await;

        let script = "echo out:$(hostname); echo err-line >&2; echo id:$(id -u); exit 3";
        let id = create(&mut cri, &pod, container_config("c1", &image, script))
            .await
            .unwrap();
        let s = status(&mut cri, &id).await;
        assert_eq!(s.state, ContainerState::ContainerCreated as i32);
        assert_eq!(s.started_at, 0);
        start(&mut cri, &id).await;
        let s = wait_exited(&mut cri, &id, Duration::from_secs(20)).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (3, "Error"));
        assert!(
            s.started_at >= s.created_at && s.finished_at >= s.started_at,
            "{s:?}"
        );
        assert_eq!(s.log_path, logs(&cri).join("c1.log").display().to_string());

        // The CRI log: both streams, full lines; the pod's hostname (its
        // UTS namespace) and the image's user 1000.
        let mut entries = log_entries(&logs(&cri).join("c1.log"));
        entries.sort();
        let e = |s: &str, t: &str| (s.to_string(), "F".to_string(), t.to_string());
        assert_eq!(
            entries,
            vec![
                e("stderr", "err-line"),
                e("stdout", "id:1000"),
                e("stdout", "out:host-logger")
            ]
        );

        // Exit 0 is Completed; the request's env and OOM score reach the
        // process.
        let mut ok = container_config("c2", &image, "echo $GREETING; cat /proc/self/oom_score_adj");
        ok.envs = vec![KeyValue {
            key: "GREETING".into(),
            value: "hi there".into(),
        }];
        set_oom_score_adj(&mut ok, 500);
        let id2 = create_started(&mut cri, &pod, ok).await;
        let s = wait_exited(&mut cri, &id2, Duration::from_secs(20)).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
        let lines = log_lines(&cri, "c2.log");
        assert_eq!(lines, vec!["hi there", "500"]);

        // A negative score (kubelet's for Guaranteed pods) starts the
        // container even where the host refuses lowering scores (this
        // one): it then keeps the runtime's.
        let mut negative = container_config("c3", &image, "cat /proc/self/oom_score_adj");
        set_oom_score_adj(&mut negative, -997);
        let id3 = create_started(&mut cri, &pod, negative).await;
        let s = wait_exited(&mut cri, &id3, Duration::from_secs(20)).await;
        assert_eq!(s.exit_code, 0);
        let own = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        let score = log_entries(&logs(&cri).join("c3.log")).remove(0).2;
        assert!(score == "-997" || score == own.trim(), "{score}");

        // ListContainers with filters.
        let list = |f: ContainerFilter| {
            let mut rt = cri.runtime.clone();
            async move {
                rt.list_containers(ListContainersRequest { filter: Some(f) })
                    .await
                    .unwrap()
                    .into_inner()
                    .containers
                    .into_iter()
                    .map(|c| c.id)
                    .collect::<Vec<_>>()
            }
        };
        let by_label = ContainerFilter {
            label_selector: HashMap::from([("c".into(), "c2".into())]),
            ..Default::default()
        };
        assert_eq!(list(by_label).await, vec![id2.clone()]);
        let by_pod = ContainerFilter {
            pod_sandbox_id: pod.0.clone(),
            ..Default::default()
        };
        assert_eq!(list(by_pod).await.len(), 3);
        let running = ContainerFilter {
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        };
        assert!(list(running).await.is_empty());

        remove_and_check_gone(&mut cri, &id).await;
        // Removing the pod removes its remaining container.
        finish(cri, &[&pod.0]).await;
    });
}

#[test]
fn stop_kills_after_the_timeout_and_a_restart_keeps_containers() {
    in_netns(|| async {
        let (_reg, _work, mut cri, image) = setup().await;
        let pod = run_pod(&mut cri, "long").await;

        // PID 1 of its namespace without a TERM handler ignores SIGTERM:
        // stop waits out the timeout, then SIGKILLs.
        let stubborn = create(
            &mut cri,
            &pod,
            container_config("stubborn", &image, "echo up; while true; do sleep 1; done"),
        )
        .await
        .unwrap();
        start(&mut cri, &stubborn).await;
        assert_eq!(
            status(&mut cri, &stubborn).await.state,
            ContainerState::ContainerRunning as i32
        );
        let t = Instant::now();
        stop(&mut cri, &stubborn, 1).await;
        assert!(t.elapsed() >= Duration::from_secs(1));
        let s = status(&mut cri, &stubborn).await;
        assert_eq!(s.state, ContainerState::ContainerExited as i32);
        assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"));

        // A container with a TERM handler exits by itself.
        let polite = create(
            &mut cri,
            &pod,
            container_config(
                "polite",
                &image,
                "trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.1; done",
            ),
        )
        .await
        .unwrap();
        start(&mut cri, &polite).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop(&mut cri, &polite, 30).await;
        let s = status(&mut cri, &polite).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
        let lines = log_lines(&cri, "polite.log");
        assert_eq!(lines, vec!["up", "bye"]);

        // The daemon restarts while a container runs: the container goes
        // on, and its later exit is recorded and seen by the new daemon.
        let later = create(
            &mut cri,
            &pod,
            container_config("later", &image, "sleep 2; echo done; exit 7"),
        )
        .await
        .unwrap();
        start(&mut cri, &later).await;
        let mut cri = cri.restart(&[]).await;
        let s = status(&mut cri, &later).await;
        assert_eq!(s.state, ContainerState::ContainerRunning as i32, "{s:?}");
        let s = wait_exited(&mut cri, &later, Duration::from_secs(20)).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (7, "Error"));
        let lines = log_lines(&cri, "later.log");
        assert_eq!(lines, vec!["done"]);
        finish(cri, &[&pod.0]).await;
    });
}

#[test]
fn containers_in_two_pods_talk_over_the_pod_network() {
    in_netns(|| async {
        let (_reg, _work, mut cri, image) = setup().await;
        let server_pod = run_pod(&mut cri, "server").await;
        let client_pod = run_pod(&mut cri, "client").await;
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: server_pod.0.clone(),
            verbose: false,
        };
        let response = cri.runtime.pod_sandbox_status(request).await.unwrap();
        let server_ip = response
            .into_inner()
            .status
            .and_then(|s| s.network)
            .unwrap()
            .ip;

        // busybox httpd serves the server pod's /etc (its hostname file);
        // a client container in the other pod fetches it by pod IP.
        create_started(
            &mut cri,
            &server_pod,
            container_config("server", &image, "httpd -f -p 8080 -h /etc"),
        )
        .await;
        let script = format!(
            "i=0; while [ $i -lt 100 ]; do wget -q -O - http://{server_ip}:8080/hostname && exit 0; i=$((i+1)); sleep 0.1; done; exit 1"
        );
        let client = create_started(
            &mut cri,
            &client_pod,
            container_config("client", &image, &script),
        )
        .await;
        let c = wait_exited(&mut cri, &client, Duration::from_secs(30)).await;
        assert_eq!(c.exit_code, 0, "{c:?}");
        let lines = log_lines(&cri, "client.log");
        assert_eq!(lines, vec!["host-server"]);
        finish(cri, &[&server_pod.0, &client_pod.0]).await;
    });
}

async fn exec(
    cri: &mut Cri,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<ExecSyncResponse, tonic::Status> {
    cri.runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        })
        .await
        .map(|r| r.into_inner())
}

#[test]
fn exec_sync_runs_in_the_running_container() {
    in_netns(|| async {
        let (_reg, _work, mut cri, image) = setup().await;
        let pod = run_pod(&mut cri, "exec").await;
        // As root (run_as_user 0 over the image's user 1000), to write /.
        let mut config = container_config(
            "svc",
            &image,
            "echo state > /state; while true; do sleep 1; done",
        );
        run_as_root(&mut config);
        let id = create_started(&mut cri, &pod, config).await;

        // The command sees the container's own files (its upper dir), the
        // image's layers and the pod's hostname; output and exit code
        // come back per stream.
        let deadline = Instant::now() + Duration::from_secs(10);
        let r = loop {
            let r = exec(&mut cri, &id, &["cat", "/state", "/opt/keep"], 10)
                .await
                .unwrap();
            if r.exit_code == 0 || Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(String::from_utf8_lossy(&r.stdout), "state\nkeep");
        let r = exec(
            &mut cri,
            &id,
            &["sh", "-c", "echo out:$(hostname); echo err >&2; exit 4"],
            10,
        )
        .await
        .unwrap();
        assert_eq!(
            (
                String::from_utf8_lossy(&r.stdout).as_ref(),
                String::from_utf8_lossy(&r.stderr).as_ref(),
                r.exit_code
            ),
            ("out:host-exec\n", "err\n", 4)
        );

        // The pod's hostname and DNS config, bind-mounted over the image's.
        let r = exec(
            &mut cri,
            &id,
            &["cat", "/etc/hostname", "/etc/resolv.conf"],
            10,
        )
        .await
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&r.stdout),
            "host-exec\nsearch default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );

        // A background process holding the output pipes does not hold up
        // the answer.
        let t = Instant::now();
        let r = exec(&mut cri, &id, &["sh", "-c", "sleep 20 & echo left"], 10)
            .await
            .unwrap();
        assert_eq!(
            (String::from_utf8_lossy(&r.stdout).as_ref(), r.exit_code),
            ("left\n", 0)
        );
        assert!(t.elapsed() < Duration::from_secs(10));

        // A command overrunning its timeout is killed: DEADLINE_EXCEEDED.
        let t = Instant::now();
        refused(
            exec(&mut cri, &id, &["sh", "-c", "sleep 30"], 1).await,
            Code::DeadlineExceeded,
        );
        assert!(t.elapsed() < Duration::from_secs(10));

        refused(exec(&mut cri, &id, &[], 1).await, Code::InvalidArgument);
        refused(
            exec(&mut cri, &"0".repeat(64), &["true"], 1).await,
            Code::NotFound,
        );
        stop(&mut cri, &id, 0).await;
        refused(
            exec(&mut cri, &id, &["true"], 1).await,
            Code::FailedPrecondition,
        );
        finish(cri, &[&pod.0]).await;
    });
}

#[test]
fn bad_container_requests_get_named_errors() {
    in_netns(|| async {
        let (_reg, _work, mut cri, image) = setup().await;
        let pod = run_pod(&mut cri, "bad").await;

        let unknown_pod = (String::from("f00d"), pod.1.clone());
        refused(
            create(
                &mut cri,
                &unknown_pod,
                container_config("x", &image, "true"),
            )
            .await,
            Code::NotFound,
        );
        let err = refused(
            create(
                &mut cri,
                &pod,
                container_config("x", "no/such:image", "true"),
            )
            .await,
            Code::NotFound,
        );
        assert!(err.message().contains("no/such:image"));
        let mut nameless = container_config("x", &image, "true");
        nameless.metadata = None;
        let err = refused(
            create(&mut cri, &pod, nameless).await,
            Code::InvalidArgument,
        );
        assert!(err.message().contains("config.metadata.name"), "{err:?}");
        let mut no_image = container_config("x", &image, "true");
        no_image.image = None;
        let err = create(&mut cri, &pod, no_image).await.unwrap_err();
        assert!(err.message().contains("config.image.image"), "{err:?}");

        let first = create(&mut cri, &pod, container_config("dup", &image, "true"))
            .await
            .unwrap();
        let err = refused(
            create(&mut cri, &pod, container_config("dup", &image, "true")).await,
            Code::AlreadyExists,
        );
        assert!(err.message().contains(&first));

        let unknown = "0".repeat(64);
        refused(
            cri.runtime
                .start_container(StartContainerRequest {
                    container_id: unknown.clone(),
                })
                .await,
            Code::NotFound,
        );
        refused(
            cri.runtime
                .stop_container(StopContainerRequest {
                    container_id: unknown.clone(),
                    timeout: 0,
                })
                .await,
            Code::NotFound,
        );
        cri.runtime
            .remove_container(RemoveContainerRequest {
                container_id: unknown,
            })
            .await
            .unwrap();
        finish(cri, &[&pod.0]).await;
    });
}

fn with_memory_limit(mut config: ContainerConfig, bytes: i64) -> ContainerConfig {
    set_resources(
        &mut config,
        LinuxContainerResources {
            memory_limit_in_bytes: bytes,
            ..Default::default()
        },
    );
    config
}

#[test]
fn a_container_over_its_memory_limit_is_oom_killed() {
    in_netns(|| async {
        let (_reg, _work, mut cri, image) = setup().await;
        let pod = run_pod(&mut cri, "oom").await;
        // The shell itself holds 48 MB of command substitution.
        let script = "x=$(head -c 48000000 /dev/zero | tr '\\0' a); echo survived ${#x}";

        let roomy = with_memory_limit(container_config("roomy", &image, script), 256 << 20);
        let id = create_started(&mut cri, &pod, roomy).await;
        let s = wait_exited(&mut cri, &id, Duration::from_secs(60)).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"), "{s:?}");
        let lines = log_lines(&cri, "roomy.log");
        assert_eq!(lines, vec!["survived 48000000"]);

        let tight = with_memory_limit(container_config("tight", &image, script), 16 << 20);
        let id = create_started(&mut cri, &pod, tight).await;
        let s = wait_exited(&mut cri, &id, Duration::from_secs(60)).await;
        assert_eq!(
            (s.exit_code, s.reason.as_str()),
            (137, "OOMKilled"),
            "{s:?}"
        );
        let tight_log = log_entries(&logs(&cri).join("tight.log"));
        assert!(
            tight_log.iter().all(|e| !e.2.starts_with("survived")),
            "{tight_log:?}"
        );

        // A SIGKILL from StopContainer is 137 too, but no OOM.
        let id = create_started(
            &mut cri,
            &pod,
            container_config("killed", &image, "sleep 60"),
        )
        .await;
        stop(&mut cri, &id, 0).await;
        let s = status(&mut cri, &id).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"), "{s:?}");
        finish(cri, &[&pod.0]).await;
    });
}

#[test]
fn stop_sends_the_images_stop_signal() {
    in_netns(|| async {
        let (reg, work, mut cri, image) = setup().await;
        reg.push(
            &work.path().join("layout"),
            "busybox-usr1",
            "kiln/busybox:usr1",
        );
        let usr1_image = format!("{}/kiln/busybox:usr1", reg.addr);
        pull(&mut cri, &usr1_image).await;
        let pod = run_pod(&mut cri, "signals").await;
        let script = "trap 'echo got USR1; exit 0' USR1; trap 'echo got TERM; exit 1' TERM; \
                      echo up; while true; do sleep 0.1; done";
        // (image, container name, exit code, last log line)
        let cases = [
            (&usr1_image, "usr1", 0, "got USR1"),
            (&image, "term", 1, "got TERM"),
        ];
        for (image, name, code, line) in cases {
            let id = create_started(&mut cri, &pod, container_config(name, image, script)).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop(&mut cri, &id, 30).await;
            let s = status(&mut cri, &id).await;
            assert_eq!(s.exit_code, code, "{name}: {s:?}");
            let lines = log_lines(&cri, &format!("{name}.log"));
            assert_eq!(lines, vec!["up", line], "{name}");
        }
        finish(cri, &[&pod.0]).await;
    });
}

async fn container_stats(cri: &mut Cri, id: &str) -> Result<ContainerStats, tonic::Status> {
    cri.runtime
        .container_stats(ContainerStatsRequest {
            container_id: id.into(),
        })
        .await
        .map(|r| r.into_inner().stats.unwrap())
}

async fn list_stats(cri: &mut Cri, filter: ContainerStatsFilter) -> Vec<String> {
    let mut ids: Vec<String> = cri
        .runtime
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(filter),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .into_iter()
        .map(|s| s.attributes.unwrap().id)
        .collect();
    ids.sort();
    ids
}

fn cpu_ns(s: &ContainerStats) -> u64 {
    s.cpu
        .as_ref()
        .unwrap()
        .usage_core_nano_seconds
        .unwrap()
        .value
}

#[test]
fn stats_report_cpu_memory_and_the_writable_layer() {
    in_netns(|| async {
        let (_reg, _work, mut cri, image) = setup().await;
        let mut config = pod_config(&cri, "stats");
        config.labels = HashMap::from([("app".to_string(), "stats".to_string())]);
        let pod = run_pod_with(&mut cri, config).await;
        let other = run_pod(&mut cri, "quiet").await;

        let busy = with_memory_limit(
            container_config("busy", &image, "while true; do :; done"),
            64 << 20,
        );
        let busy = create(&mut cri, &pod, busy).await.unwrap();
        // As root, to write 1 MB into / (the writable layer).
        let mut writer = container_config(
            "writer",
            &image,
            "head -c 1000000 /dev/zero > /big; echo written; sleep 600",
        );
        run_as_root(&mut writer);
        let writer = create(&mut cri, &pod, writer).await.unwrap();
        let done = create(&mut cri, &pod, container_config("done", &image, "true"))
            .await
            .unwrap();
        for id in [&busy, &writer, &done] {
            start(&mut cri, id).await;
        }
        wait_exited(&mut cri, &done, Duration::from_secs(20)).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while log_entries(&logs(&cri).join("writer.log")).is_empty() {
            assert!(Instant::now() < deadline, "the writer did not write");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A busy container's CPU time grows; its memory is within its limit.
        let first = container_stats(&mut cri, &busy).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let second = container_stats(&mut cri, &busy).await.unwrap();
        assert!(cpu_ns(&first) > 0, "{first:?}");
        assert!(cpu_ns(&second) > cpu_ns(&first), "{first:?} {second:?}");
        let mem = second.memory.unwrap();
        let ws = mem.working_set_bytes.unwrap().value;
        assert!(ws > 0 && ws <= mem.usage_bytes.unwrap().value, "{mem:?}");
        assert!(mem.available_bytes.unwrap().value < 64 << 20, "{mem:?}");
        assert_eq!(second.attributes.as_ref().unwrap().labels["c"], "busy");

        // The writer's 1 MB file is in its writable layer.
        let w = container_stats(&mut cri, &writer).await.unwrap();
        let layer = w.writable_layer.unwrap();
        assert!(layer.used_bytes.unwrap().value >= 1_000_000, "{layer:?}");
        assert!(layer.inodes_used.unwrap().value >= 1, "{layer:?}");
        assert!(w.memory.unwrap().available_bytes.is_none());

        // Exited containers have no stats; unknown ones are NOT_FOUND.
        refused(
            container_stats(&mut cri, &done).await,
            Code::FailedPrecondition,
        );
        refused(
            container_stats(&mut cri, &"0".repeat(64)).await,
            Code::NotFound,
        );

        // Filters.
        let mut running = vec![busy.clone(), writer.clone()];
        running.sort();
        assert_eq!(
            list_stats(&mut cri, ContainerStatsFilter::default()).await,
            running
        );
        let by_label = ContainerStatsFilter {
            label_selector: HashMap::from([("c".into(), "writer".into())]),
            ..Default::default()
        };
        assert_eq!(list_stats(&mut cri, by_label).await, vec![writer.clone()]);
        let by_pod = ContainerStatsFilter {
            pod_sandbox_id: pod.0.clone(),
            ..Default::default()
        };
        assert_eq!(list_stats(&mut cri, by_pod).await, running);
        let by_other_pod = ContainerStatsFilter {
            pod_sandbox_id: other.0.clone(),
            ..Default::default()
        };
        assert!(list_stats(&mut cri, by_other_pod).await.is_empty());
        let by_id = ContainerStatsFilter {
            id: busy[..12].into(),
            ..Default::default()
        };
        assert_eq!(list_stats(&mut cri, by_id).await, vec![busy.clone()]);

        // The pod's figures are its running containers' sums.
        let p = cri
            .runtime
            .pod_sandbox_stats(PodSandboxStatsRequest {
                pod_sandbox_id: pod.0.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap()
            .linux
            .unwrap();
        assert_eq!(p.containers.len(), 2);
        let sum: u64 = p.containers.iter().map(cpu_ns).sum();
        assert_eq!(p.cpu.unwrap().usage_core_nano_seconds.unwrap().value, sum);
        assert!(sum >= cpu_ns(&second));
        let ws_sum: u64 = p
            .containers
            .iter()
            .map(|c| c.memory.as_ref().unwrap().working_set_bytes.unwrap().value)
            .sum();
        assert_eq!(p.memory.unwrap().working_set_bytes.unwrap().value, ws_sum);

        let list = |filter: PodSandboxStatsFilter| {
            let mut rt = cri.runtime.clone();
            async move {
                rt.list_pod_sandbox_stats(ListPodSandboxStatsRequest {
                    filter: Some(filter),
                })
                .await
                .unwrap()
                .into_inner()
                .stats
            }
        };
        let all = list(PodSandboxStatsFilter::default()).await;
        assert_eq!(all.len(), 2);
        let quiet = all
            .iter()
            .find(|s| s.attributes.as_ref().unwrap().id == other.0)
            .unwrap()
            .linux
            .as_ref()
            .unwrap();
        assert!(quiet.containers.is_empty() && quiet.cpu.is_none());
        let labelled = list(PodSandboxStatsFilter {
            label_selector: HashMap::from([("app".into(), "stats".into())]),
            ..Default::default()
        })
        .await;
        assert_eq!(labelled.len(), 1);
        assert_eq!(labelled[0].attributes.as_ref().unwrap().id, pod.0);
        refused(
            cri.runtime
                .pod_sandbox_stats(PodSandboxStatsRequest {
                    pod_sandbox_id: "f00d".into(),
                })
                .await,
            Code::NotFound,
        );
        finish(cri, &[&pod.0, &other.0]).await;
    });
}

/// A file of a container's cgroup (default parent /kiln-cri), v1 or v2.
fn cgroup_file(id: &str, controller: &str, v1: &str, v2: &str) -> String {
    let path = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        format!("/sys/fs/cgroup/kiln-cri/{id}/{v2}")
    } else {
        format!("/sys/fs/cgroup/{controller}/kiln-cri/{id}/{v1}")
    };
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn update_container_resources_changes_the_running_limits() {
    in_netns(|| async {
        let (_reg, _work, mut cri, image) = setup().await;
        let pod = run_pod(&mut cri, "update").await;
        let config = with_memory_limit(
            container_config("grow", &image, "while true; do sleep 1; done"),
            16 << 20,
        );
        let id = create_started(&mut cri, &pod, config).await;
        // An exec joins the container's cgroup: 48 MB do not fit in 16 MiB.
        let alloc = [
            "sh",
            "-c",
            "x=$(head -c 48000000 /dev/zero | tr '\\0' a); echo ${#x}",
        ];
        let r = exec(&mut cri, &id, &alloc, 30).await.unwrap();
        assert_ne!(r.exit_code, 0, "{r:?}");
        assert!(!String::from_utf8_lossy(&r.stdout).contains("48000000"));

        let rt = cri.runtime.clone();
        let update = |resources: LinuxContainerResources| {
            let mut rt = rt.clone();
            let id = id.clone();
            async move {
                rt.update_container_resources(UpdateContainerResourcesRequest {
                    container_id: id,
                    linux: Some(resources),
                    ..Default::default()
                })
                .await
            }
        };
        update(LinuxContainerResources {
            memory_limit_in_bytes: 256 << 20,
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            ..Default::default()
        })
        .await
        .unwrap();
        let r = exec(&mut cri, &id, &alloc, 30).await.unwrap();
        assert_eq!(
            (String::from_utf8_lossy(&r.stdout).as_ref(), r.exit_code),
            ("48000000\n", 0)
        );
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            assert_eq!(cgroup_file(&id, "cpu", "", "cpu.max"), "50000 100000");
            assert_eq!(cgroup_file(&id, "cpu", "", "cpu.weight"), "20");
        } else {
            assert_eq!(cgroup_file(&id, "cpu", "cpu.cfs_quota_us", ""), "50000");
            assert_eq!(cgroup_file(&id, "cpu", "cpu.shares", ""), "512");
        }
        let s = status(&mut cri, &id).await;
        let limits = s.resources.unwrap().linux.unwrap();
        assert_eq!(
            (limits.memory_limit_in_bytes, limits.cpu_quota),
            (256 << 20, 50_000)
        );

        let err = refused(
            update(LinuxContainerResources {
                memory_limit_in_bytes: -1,
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
        );
        assert!(err.message().contains("memory_limit_in_bytes"), "{err:?}");
        stop(&mut cri, &id, 0).await;
        refused(
            update(LinuxContainerResources::default()).await,
            Code::FailedPrecondition,
        );
        finish(cri, &[&pod.0]).await;
    });
}

#[test]
fn reopen_container_log_follows_kubelets_rotation_without_losing_lines() {
    in_netns(|| async {
        let (_reg, _work, mut cri, image) = setup().await;
        let pod = run_pod(&mut cri, "rotate").await;
        let script = "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.02; done";
        let id = create_started(&mut cri, &pod, container_config("chatty", &image, script)).await;
        let log = logs(&cri).join("chatty.log");
        let rotated = logs(&cri).join("chatty.log.1");
        let wait_lines = |path: PathBuf, n: usize| async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !path.exists() || log_entries(&path).len() < n {
                assert!(Instant::now() < deadline, "{} lines in {path:?}", n);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        wait_lines(log.clone(), 10).await;
        // kubelet's rotation: rename, then ReopenContainerLog.
        std::fs::rename(&log, &rotated).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        cri.runtime
            .reopen_container_log(ReopenContainerLogRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap();
        assert!(log.exists());
        wait_lines(log.clone(), 10).await;
        stop(&mut cri, &id, 0).await;

        // Every line, in order, in exactly one of the two files.
        let old: Vec<String> = log_entries(&rotated).into_iter().map(|e| e.2).collect();
        let new: Vec<String> = log_entries(&log).into_iter().map(|e| e.2).collect();
        assert!(old.len() >= 10 && new.len() >= 10, "{old:?} {new:?}");
        let all: Vec<String> = old.into_iter().chain(new).collect();
        let want: Vec<String> = (0..all.len()).map(|i| format!("line{i}")).collect();
        assert_eq!(all, want);

        refused(
            cri.runtime
                .reopen_container_log(ReopenContainerLogRequest {
                    container_id: id.clone(),
                })
                .await,
            Code::FailedPrecondition,
        );
        finish(cri, &[&pod.0]).await;
    });
}
