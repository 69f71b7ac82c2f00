//! The harness itself, against real QEMU and Debian's own kernels (the
//! `linux-image` packages the image builder caches in /var/cache/kiln/debs,
//! or `KILN_DEB_CACHE`). With no initramfs and no root= the kernel panics,
//! which exercises console waits, QMP, timeouts with the console tail, and
//! QEMU exiting by itself (panic=-1, -no-reboot) or rebooting. Three short
//! boots in all; the other cases keep the guest paused (`-S`) and cost
//! nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kiln_qemu_tests::{free_loopback_port, Arch, Boot, Error, Machine, MachineConfig};
use regex::Regex;

const BOOT: Duration = Duration::from_secs(180);

fn re(s: &str) -> Regex {
    Regex::new(s).unwrap()
}

/// Debian's kernel for `arch`, unpacked once per target directory (the
/// package is 60–70 MB of xz; only `boot/vmlinuz-*` is extracted).
fn kernel(arch: Arch) -> PathBuf {
    static X86_64: OnceLock<PathBuf> = OnceLock::new();
    static AARCH64: OnceLock<PathBuf> = OnceLock::new();
    let cell = match arch {
        Arch::X86_64 => &X86_64,
        Arch::Aarch64 => &AARCH64,
    };
    cell.get_or_init(|| extract_kernel(arch)).clone()
}

fn extract_kernel(arch: Arch) -> PathBuf {
    let debs = std::env::var_os("KILN_DEB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kiln/debs"));
    let suffix = format!("_{}.deb", arch.debian());
    let mut found: Vec<PathBuf> = std::fs::read_dir(&debs)
        .unwrap_or_else(|e| panic!("{}: {e}: run `cargo xtask build` first", debs.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("linux-image-") && name.ends_with(&suffix) && !name.contains("-dbg")
        })
        .collect();
    found.sort();
    let deb = found.pop().unwrap_or_else(|| {
        panic!(
            "no linux-image-*{suffix} in {}: run `cargo xtask build --arch {arch}` first",
            debs.display()
        )
    });
    let stem = deb.file_stem().unwrap().to_string_lossy().into_owned();
    let cached = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("kernels")
        .join(stem)
        .join("vmlinuz");
    if cached.is_file() {
        return cached;
    }
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .expect("dpkg-deb");
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(work.path())
        .args(["--wildcards", "./boot/vmlinuz-*"])
        .stdin(dpkg.stdout.take().unwrap())
        .status()
        .expect("tar");
    assert!(
        dpkg.wait().unwrap().success() && tar.success(),
        "unpack {}",
        deb.display()
    );
    let vmlinuz = std::fs::read_dir(work.path().join("boot"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .expect("boot/vmlinuz-* in the package");
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    std::fs::rename(vmlinuz, &cached).unwrap();
    cached
}

/// Debian's kernel booted directly, no initramfs, console on the serial port.
fn no_root(arch: Arch) -> MachineConfig {
    MachineConfig::new(
        arch,
        Boot::Direct {
            kernel: kernel(arch),
            initrd: None,
            cmdline: format!("console={} panic=-1", arch.serial_console()),
        },
    )
}

#[test]
fn x86_64_panic_console_qmp_timeout_and_exit() {
    let port = free_loopback_port().unwrap();
    let mut m = Machine::launch(no_root(Arch::X86_64).forward(port, 22)).unwrap();
    let first = m.wait_for(&re(r"Linux version (\S+)"), BOOT).unwrap();
    assert!(first.group(1).ends_with("amd64"), "{}", first.line);

    // QEMU listens on the forwarded port: nobody else can bind it.
    let bind = std::net::TcpListener::bind(("127.0.0.1", port));
    assert_eq!(
        bind.map(drop).unwrap_err().kind(),
        std::io::ErrorKind::AddrInUse
    );

    assert_eq!(m.query_status().unwrap(), "running");
    m.system_powerdown().unwrap();
    let event = m.wait_event("POWERDOWN", Duration::from_secs(10)).unwrap();
    assert_eq!(event["event"], "POWERDOWN");
    assert!(m.qmp_events().iter().any(|e| e["event"] == "POWERDOWN"));

    // A pattern that never comes: the error names it and carries the tail.
    let t = Instant::now();
    match m.wait_for(&re("this never appears"), Duration::from_millis(300)) {
        Err(e @ Error::Timeout { .. }) => {
            let text = e.to_string();
            let Error::Timeout {
                pattern,
                tail,
                waited,
                log,
            } = e
            else {
                unreachable!()
            };
            assert_eq!(pattern, "/this never appears/");
            assert!(waited >= Duration::from_millis(300), "{waited:?}");
            assert_eq!(log, m.console_log().display().to_string());
            let n = tail.lines().count();
            assert!(n > 0 && n <= 60, "tail of {n} lines");
            assert!(m.console().contains(&tail), "tail is not the console's");
            assert!(text.contains("/this never appears/") && text.contains(&tail));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(5));

    let (which, panic) = m
        .wait_for_any(
            &[
                &re("this never appears"),
                &re(r"Kernel panic - not syncing: (.*)"),
            ],
            BOOT,
        )
        .unwrap();
    assert_eq!(which, 1);
    assert!(
        panic.group(1).contains("VFS: Unable to mount root fs"),
        "{}",
        panic.line
    );
    assert!(panic.at > first.at && panic.index > first.index);

    // panic=-1 reboots at once; -no-reboot turns that into QEMU's exit.
    let status = m.wait_exit(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{status}");
    // Waiting past the end reports the exit, not a hang.
    let t = Instant::now();
    match m.wait_for(&re("after the end"), Duration::from_secs(60)) {
        Err(Error::Exited {
            pattern, status, ..
        }) => {
            assert_eq!(pattern, "/after the end/");
            assert!(status.contains('0'), "{status}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    // QMP is gone with QEMU: an error, not a hang.
    assert!(m.query_status().is_err());

    let lines = m.console_lines();
    assert!(lines.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(lines[first.index].text, first.line);
    let log = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(log.contains(&first.line) && log.contains(&panic.line));
}

#[test]
fn x86_64_guest_reboot_is_a_reboot_without_no_reboot() {
    let mut m = Machine::launch(no_root(Arch::X86_64).no_reboot(false)).unwrap();
    let first = m.wait_for(&re("Linux version"), BOOT).unwrap();
    m.wait_for(&re("Kernel panic"), BOOT).unwrap();
    let reset = m.wait_event("RESET", Duration::from_secs(60)).unwrap();
    assert_eq!(reset["data"]["guest"], true, "{reset}");
    // The cursor is past the first boot: this is the second one.
    let second = m.wait_for(&re("Linux version"), BOOT).unwrap();
    assert!(second.index > first.index && second.at > first.at);
    assert_eq!(m.query_status().unwrap(), "running");
    let status = m.quit().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn aarch64_direct_boot_and_reset_exits_with_no_reboot() {
    let mut m = Machine::launch(no_root(Arch::Aarch64)).unwrap();
    let version = m.wait_for(&re(r"Linux version (\S+)"), BOOT).unwrap();
    assert!(version.group(1).ends_with("arm64"), "{}", version.line);
    let model = m.wait_for(&re(r"Machine model: (.*)"), BOOT).unwrap();
    assert_eq!(model.group(1), "linux,dummy-virt");
    m.system_reset().unwrap();
    let status = m.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn x86_64_uefi_firmware_reaches_its_boot_manager() {
    // No disk: OVMF (with its own writable copy of the variable store)
    // reaches its boot manager and tries its boot options in turn.
    let mut m = Machine::launch(MachineConfig::new(Arch::X86_64, Boot::Uefi)).unwrap();
    let bds = m
        .wait_for(
            &re(r"BdsDxe: (failed to load|loading|starting) Boot\d+"),
            BOOT,
        )
        .unwrap();
    assert!(bds.at > Duration::ZERO);
    assert!(m.dir().join("vars.fd").is_file());
    let status = m.quit().unwrap();
    assert!(status.success(), "{status}");
    assert!(m.quit().is_ok(), "quitting twice is harmless");
}

#[test]
fn deadline_bounds_every_wait() {
    // -S: the guest never runs, so nothing ever appears and nothing exits.
    let mut m = Machine::launch(
        no_root(Arch::X86_64)
            .extra_args(["-S"])
            .deadline(Duration::from_secs(3)),
    )
    .unwrap();
    assert_eq!(m.query_status().unwrap(), "prelaunch");
    let t = Instant::now();
    let err = m
        .wait_for(&re("Linux"), Duration::from_secs(600))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(m.wait_exit(Duration::from_secs(600)).is_err());
    assert!(m.wait_event("RESET", Duration::from_secs(600)).is_err());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let pid = m.pid();
    m.kill();
    let err = m.query_status().unwrap_err();
    assert!(err.to_string().contains("exited"), "{err}");
    drop(m);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU {pid} not reaped"
    );
}

#[test]
fn qemu_refusing_its_arguments_is_reported_with_its_stderr() {
    let mut m = Machine::launch(no_root(Arch::X86_64).extra_args(["-no-such-option"])).unwrap();
    match m.wait_for(&re("Linux"), Duration::from_secs(30)) {
        Err(e @ Error::Exited { .. }) => {
            let text = e.to_string();
            let Error::Exited { stderr, status, .. } = e else {
                unreachable!()
            };
            assert!(stderr.contains("no-such-option"), "{stderr}");
            assert!(!status.contains("exit status: 0"), "{status}");
            assert!(text.contains(&stderr), "{text}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
}

#[test]
fn a_failing_test_keeps_the_machine_directory() {
    let (tx, rx) = std::sync::mpsc::channel();
    let failed = std::thread::spawn(move || {
        let m = Machine::launch(no_root(Arch::X86_64).extra_args(["-S"])).unwrap();
        tx.send(m.dir().to_path_buf()).unwrap();
        panic!("a test failing with a machine alive");
    })
    .join();
    assert!(failed.is_err());
    let dir = rx.recv().unwrap();
    assert!(
        dir.join("console.log").is_file(),
        "{} not kept",
        dir.display()
    );
    assert!(dir.join("qemu.stderr").is_file());
    std::fs::remove_dir_all(dir).unwrap();
}

/// Run by `qemu_dies_with_a_killed_test_process` in a child process: holds a
/// paused machine until killed.
#[test]
#[ignore = "helper run in a child process"]
fn helper_hold_a_machine_until_killed() {
    if std::env::var_os("KILN_HARNESS_CHILD").is_none() {
        return;
    }
    let m = Machine::launch(no_root(Arch::X86_64).extra_args(["-S"])).unwrap();
    println!("QEMU_DIR={}", m.dir().display());
    println!("QEMU_PID={}", m.pid());
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn qemu_dies_with_a_killed_test_process() {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_hold_a_machine_until_killed",
            "--nocapture",
        ])
        .env("KILN_HARNESS_CHILD", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = |key: &str| {
        out.by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix(key).map(str::to_string))
            .unwrap_or_else(|| panic!("the child printed no {key}"))
    };
    let dir = PathBuf::from(printed("QEMU_DIR="));
    let pid = printed("QEMU_PID=");
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists());
    // SIGKILL: no destructor runs in the test process.
    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    // Gone, or a zombie waiting for init to reap it.
    let alive = || {
        std::fs::read_to_string(proc_dir.join("stat"))
            .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
            .unwrap_or(false)
    };
    while alive() {
        if t.elapsed() > Duration::from_secs(10) {
            let _ = Command::new("kill").args(["-9", &pid]).status();
            panic!("QEMU {pid} outlived its test");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nothing dropped the killed child's machine: its directory is ours.
    std::fs::remove_dir_all(dir).unwrap();
}
