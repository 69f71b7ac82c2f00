//! The harness itself, against real QEMU: the built x86_64 kernel with no
//! initramfs panics (no root), which exercises console waits, QMP, timeouts
//! with the console tail, and QEMU exiting by itself (panic=-1, -no-reboot).

use std::path::PathBuf;
use std::time::Duration;

use kiln_qemu_tests::{Arch, Boot, Error, Machine, MachineConfig};
use regex::Regex;

fn kernel() -> PathBuf {
    let base = std::env::var_os("KILN_OUT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../out"));
    let k = base.join("x86_64/vmlinuz");
    assert!(
        k.exists(),
        "{} missing: run `cargo xtask build` first",
        k.display()
    );
    k
}

#[test]
fn console_qmp_timeout_and_exit() {
    let empty = tempfile::NamedTempFile::new().unwrap();
    let boot = Boot::Direct {
        kernel: kernel(),
        initrd: empty.path().to_path_buf(),
        cmdline: "console=ttyS0 panic=-1 loglevel=7".into(),
    };
    let mut m = Machine::launch(MachineConfig::new(Arch::X86_64, boot)).unwrap();
    let first = m
        .wait_for(
            &Regex::new(r"Linux version (\S+)").unwrap(),
            Duration::from_secs(120),
        )
        .unwrap();
    assert!(
        first.captures[1].as_deref().unwrap().contains("amd64"),
        "{}",
        first.line
    );
    assert_eq!(m.query_status().unwrap(), "running");

    // A pattern that never comes: the error names it and carries the tail.
    match m.wait_for(
        &Regex::new("this never appears").unwrap(),
        Duration::from_millis(300),
    ) {
        Err(Error::Timeout { pattern, tail, .. }) => {
            assert_eq!(pattern, "this never appears");
            // The tail is the console's last lines at that moment.
            let n = tail.lines().count();
            assert!(n > 0 && n <= 60, "tail of {n} lines");
            assert!(
                m.console().contains(&tail),
                "tail is not the console's: {tail}"
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }

    m.wait_for(
        &Regex::new("Kernel panic").unwrap(),
        Duration::from_secs(120),
    )
    .unwrap();
    let status = m.wait_exit(Duration::from_secs(60)).unwrap();
    assert!(status.success() || status.code().is_some(), "{status}");
    // Waiting past the end reports the exit, not a hang.
    match m.wait_for(
        &Regex::new("after the end").unwrap(),
        Duration::from_secs(30),
    ) {
        Err(Error::Exited { .. }) => {}
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(m.console_log().exists());
}
