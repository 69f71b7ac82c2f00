//! The per-container shim: a separate process (`kiln cri-shim`, or the
//! `kiln-cri-shim` binary in tests) that the daemon starts for
//! StartContainer. It forks: the foreground half waits until the container
//! runs (or failed) and exits with that answer; the background half
//! detaches (`setsid`), becomes a child subreaper, creates and starts the
//! container with libcontainer (single-threaded at that point, so its
//! forks are safe), copies the container's stdout and stderr into the CRI
//! log, waits for it and records its exit (`files`) with whether the OOM
//! killer struck in its cgroup (read before the cgroup is deleted). The daemon can stop
//! and restart at any time: the container and its exit record do not
//! depend on it. Stop is a signal to the recorded container pid.
//!
//! argv: `<id> <container dir> <bundle dir> <libcontainer root> <log path or "">`;
//! `exec …` runs the ExecSync helper instead (`exec`).

pub mod exec;
pub mod files;
pub mod log;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::runtime::cgroup::Cgroup;
use crate::runtime::now_ns;

/// What the shim needs, from argv.
struct Args {
    id: String,
    dir: PathBuf,
    bundle: PathBuf,
    youki_root: PathBuf,
    log_path: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let [id, dir, bundle, youki_root, log_path] = args else {
        return Err(format!(
            "usage: cri-shim <id> <container dir> <bundle> <libcontainer root> <log path|\"\">, got {} arguments",
            args.len()
        ));
    };
    Ok(Args {
        id: id.clone(),
        dir: dir.into(),
        bundle: bundle.into(),
        youki_root: youki_root.into(),
        log_path: Some(PathBuf::from(log_path)).filter(|p| !p.as_os_str().is_empty()),
    })
}

/// The shim's entry point; returns the foreground process's exit status.
pub fn main(argv: &[String]) -> i32 {
    if argv.first().map(String::as_str) == Some("exec") {
        return exec::main(&argv[1..]);
    }
    let args = match parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let (mut ready_r, ready_w) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cri-shim: pipe: {e}");
            return 1;
        }
    };
    // SAFETY: the shim is single-threaded here (it has just started), so the
    // child may run any code after fork.
    match unsafe { fork() } {
        Err(e) => {
            eprintln!("cri-shim: fork: {e}");
            1
        }
        Ok(ForkResult::Parent { .. }) => {
            drop(ready_w);
            let mut answer = String::new();
            let _ = ready_r.read_to_string(&mut answer);
            if answer == "ok" {
                0
            } else if answer.is_empty() {
                eprintln!("cri-shim: the shim died before the container started");
                1
            } else {
                eprintln!("{answer}");
                1
            }
        }
        Ok(ForkResult::Child) => {
            drop(ready_r);
            std::process::exit(background(&args, ready_w))
        }
    }
}

/// The detached half: start, report, watch, record.
fn background(args: &Args, mut ready: std::io::PipeWriter) -> i32 {
    let pid = match start(args) {
        Ok(started) => started,
        Err(e) => {
            let _ = ready.write_all(format!("starting container {}: {e}", args.id).as_bytes());
            return 1;
        }
    };
    let _ = ready.write_all(b"ok");
    drop(ready);
    let (pid, copiers) = pid;
    let cgroup = Cgroup::of_bundle(&args.bundle)
        .inspect_err(|e| eprintln!("cri-shim: the container's cgroup: {e}"))
        .ok();
    let status = wait_for(pid);
    // Read before libcontainer's delete removes the cgroup.
    let oom_killed = cgroup.as_ref().and_then(Cgroup::oom_kills).unwrap_or(0) > 0;
    for c in copiers {
        let _ = c.join();
    }
    let (exit_code, signal) = match status {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
        _ => (255, None),
    };
    let exited = files::Exited {
        exit_code,
        finished_at: now_ns(),
        signal,
        oom_killed,
    };
    if let Err(e) = files::write(&args.dir, files::EXITED, &exited) {
        eprintln!("cri-shim: recording the exit: {e}");
    }
    match Container::load(args.youki_root.join(&args.id)) {
        Ok(mut c) => {
            if let Err(e) = c.delete(true) {
                eprintln!("cri-shim: libcontainer delete: {e}");
            }
        }
        Err(e) => eprintln!("cri-shim: libcontainer load: {e}"),
    }
    0
}

type Copiers = Vec<std::thread::JoinHandle<()>>;

/// Detaches, creates and starts the container; returns its pid and the
/// threads copying its output.
fn start(args: &Args) -> Result<(Pid, Copiers), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("subreaper: {e}"))?;
    // The daemon waits on the foreground half's stdout/stderr: the
    // background half must hold neither. Its own messages go to shim.log.
    let shim_log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.dir.join("shim.log"))
        .map_err(|e| format!("shim.log: {e}"))?;
    let null = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    for (from, to) in [
        (null.as_raw_fd(), 0),
        (shim_log.as_raw_fd(), 1),
        (shim_log.as_raw_fd(), 2),
    ] {
        // SAFETY: dup2 on descriptors this process owns; it only replaces
        // the standard descriptors.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    let log = open_log(args.log_path.as_deref())?;
    let (out_r, out_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let stdin: OwnedFd = File::open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?
        .into();
    let mut container = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.youki_root)
        .map_err(|e| format!("libcontainer root: {e}"))?
        .with_stdin(stdin)
        .with_stdout(out_w)
        .with_stderr(err_w)
        .validate_id()
        .map_err(|e| format!("container id: {e}"))?
        .as_init(&args.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| format!("create: {e}"))?;
    container.start().map_err(|e| format!("start: {e}"))?;
    let pid = container
        .pid()
        .ok_or("libcontainer reported no pid")?
        .as_raw();
    let started = files::Started {
        pid,
        shim_pid: std::process::id() as i32,
        started_at: now_ns(),
    };
    files::write(&args.dir, files::STARTED, &started).map_err(|e| format!("started.json: {e}"))?;
    let copiers = vec![
        spawn_copy(out_r, "stdout", &log),
        spawn_copy(err_r, "stderr", &log),
    ];
    Ok((Pid::from_raw(pid), copiers))
}

fn spawn_copy(
    from: std::io::PipeReader,
    stream: &'static str,
    log: &Arc<Mutex<log::LogFile>>,
) -> std::thread::JoinHandle<()> {
    let log = log.clone();
    std::thread::spawn(move || log::copy(from, stream, &log))
}

/// The CRI log (appended to, as kubelet expects after a restart), or
/// /dev/null when kubelet asked for none.
fn open_log(path: Option<&Path>) -> Result<Arc<Mutex<log::LogFile>>, String> {
    let file = match path {
        Some(p) => {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("log dir {}: {e}", parent.display()))?;
            }
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("log {}: {e}", p.display()))?
        }
        None => OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("/dev/null: {e}"))?,
    };
    let log =
        log::LogFile::new(file, path.map(Path::to_path_buf)).map_err(|e| format!("log: {e}"))?;
    Ok(Arc::new(Mutex::new(log)))
}

/// Reaps children (as a subreaper it inherits the container's orphans)
/// until the container's init exits.
fn wait_for(pid: Pid) -> WaitStatus {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(s @ (WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _))) if p == pid => {
                return s
            }
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => return WaitStatus::StillAlive,
        }
    }
}
