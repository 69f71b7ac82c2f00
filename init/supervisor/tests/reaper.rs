//! The process-wide reaper on its own: exit statuses by pid, exits that
//! come before registration, many spawners on many runtimes at once.

mod common;

use std::time::Duration;

use common::*;
use kiln_supervisor::reaper::{Command, Reaper, SpawnError};
use kiln_supervisor::Exit;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[tokio::test]
async fn exit_codes_and_signals_reach_the_spawner() {
    let r = reaper();
    let (pid, exit) = r.spawn(&Command::new(["sh", "-c", "exit 7"])).unwrap();
    assert_eq!(exit.await, Some(Exit::Code(7)));
    assert!(gone(pid), "{pid}: {}", proc_state(pid));

    let (pid, exit) = r.spawn(&Command::new(["sleep", "30"])).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    assert_eq!(exit.await, Some(Exit::Signal(9)));
    assert!(gone(pid), "{pid}: {}", proc_state(pid));
}

#[tokio::test]
async fn spawn_failures_are_typed() {
    use std::os::unix::fs::PermissionsExt;
    let r = reaper();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-program");
    std::fs::write(&file, [0u8; 16]).unwrap();
    let path = file.display().to_string();
    for (mode, want) in [(0o644, nix::Error::EACCES), (0o755, nix::Error::ENOEXEC)] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = r.spawn(&Command::new([path.as_str()])).unwrap_err();
        assert!(
            matches!(err, SpawnError::Exec { ref program, errno } if *program == path && errno == want),
            "{mode:o}: {err}"
        );
    }
    let err = r
        .spawn(&Command::new(["true"]).cwd("/nonexistent"))
        .unwrap_err();
    assert!(matches!(err, SpawnError::Sys("chdir", _)), "{err}");
    let err = r.spawn(&Command::new(Vec::<String>::new())).unwrap_err();
    assert!(matches!(err, SpawnError::EmptyCommand), "{err}");
    let err = r.spawn(&Command::new(["/bin/true", "a\0b"])).unwrap_err();
    assert!(matches!(err, SpawnError::Nul(_)), "{err}");
}

/// A child that exits before anyone registers it (here one started by std,
/// dropped without waiting) is reaped at once and its exit kept for the
/// registration.
#[tokio::test]
async fn an_exit_before_registration_is_handed_over() {
    let r = reaper();
    let child = std::process::Command::new("/bin/sh")
        .args(["-c", "exit 5"])
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    drop(child);
    eventually(
        "reaped before registration",
        Duration::from_secs(10),
        || gone(pid),
    )
    .await;
    let exit = tokio::time::timeout(Duration::from_secs(5), r.watch(pid))
        .await
        .unwrap();
    assert_eq!(exit, Some(Exit::Code(5)));
}

/// Tests run in parallel in one process, each on its own runtime: one
/// reaper serves them all and every exit reaches its own spawner.
#[test]
fn one_reaper_serves_many_runtimes() {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let r = reaper();
                    let waits: Vec<_> = (0..25)
                        .map(|i| {
                            let code = t * 25 + i;
                            let cmd = Command::new(["sh", "-c", &format!("exit {code}")]);
                            let (_, exit) = r.spawn(&cmd).unwrap();
                            tokio::spawn(async move { (code, exit.await) })
                        })
                        .collect();
                    for w in waits {
                        let (code, exit) = tokio::time::timeout(Duration::from_secs(20), w)
                            .await
                            .expect("an exit never arrived")
                            .unwrap();
                        assert_eq!(exit, Some(Exit::Code(code)));
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Every handle is the same reaper.
    let _same: Reaper = Reaper::start();
}
