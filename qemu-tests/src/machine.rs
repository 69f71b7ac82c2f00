//! One QEMU guest: configuration, launch, waits on its console, QMP
//! commands, exit. TCG only unless `KILN_QEMU_KVM=1` (KVM is broken on the
//! machines this project is tested on).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::{json, Value};

use crate::console::{Console, Miss};
use crate::qmp::Qmp;
use crate::{Error, Match};

/// Guest architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    fn qemu(self) -> (&'static str, &'static str) {
        match self {
            Arch::X86_64 => ("qemu-system-x86_64", "qemu-system-x86"),
            Arch::Aarch64 => ("qemu-system-aarch64", "qemu-system-arm"),
        }
    }

    /// (code, vars template, package)
    fn firmware(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Arch::X86_64 => (
                "/usr/share/OVMF/OVMF_CODE_4M.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.fd",
                "ovmf",
            ),
            Arch::Aarch64 => (
                "/usr/share/AAVMF/AAVMF_CODE.fd",
                "/usr/share/AAVMF/AAVMF_VARS.fd",
                "qemu-efi-aarch64",
            ),
        }
    }

    fn machine_args(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["-M", "q35"],
            Arch::Aarch64 => &["-M", "virt", "-cpu", "max"],
        }
    }
}

/// How the guest boots.
#[derive(Debug, Clone)]
pub enum Boot {
    /// Firmware (OVMF/AAVMF) boots the disk: systemd-boot → kernel.
    Uefi,
    /// PXE-style: QEMU loads the kernel and initramfs itself.
    Direct {
        kernel: PathBuf,
        initrd: PathBuf,
        cmdline: String,
    },
}

/// A guest to launch.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    pub arch: Arch,
    pub boot: Boot,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Raw disk attached as virtio-blk; the caller owns the file.
    pub disk: Option<PathBuf>,
    /// TCP forwards from host loopback ports to guest ports.
    pub host_forwards: Vec<(u16, u16)>,
    /// An empty PCIe root port (`hp0`) to hot-plug devices into.
    pub hotplug_slot: bool,
    /// Nothing this machine does may take longer than this.
    pub deadline: Duration,
    pub extra_args: Vec<String>,
}

impl MachineConfig {
    pub fn new(arch: Arch, boot: Boot) -> Self {
        Self {
            arch,
            boot,
            memory_mib: 1024,
            cpus: 2,
            disk: None,
            host_forwards: Vec::new(),
            hotplug_slot: false,
            deadline: Duration::from_secs(900),
            extra_args: Vec::new(),
        }
    }

    pub fn disk(mut self, path: &Path) -> Self {
        self.disk = Some(path.to_path_buf());
        self
    }

    pub fn hotplug_slot(mut self, on: bool) -> Self {
        self.hotplug_slot = on;
        self
    }

    pub fn forward(mut self, host: u16, guest: u16) -> Self {
        self.host_forwards.push((host, guest));
        self
    }
}

/// Copies a raw image to `dst` and grows the file to `size` bytes (sparse),
/// like writing the image to a bigger disk.
pub fn prepare_disk(src: &Path, dst: &Path, size: u64) -> Result<(), Error> {
    std::fs::copy(src, dst).map_err(Error::io(format!(
        "copy {} to {}",
        src.display(),
        dst.display()
    )))?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dst)
        .map_err(Error::io(format!("open {}", dst.display())))?;
    let len = f.metadata().map_err(Error::io("stat disk"))?.len();
    if size > len {
        f.set_len(size).map_err(Error::io("grow disk"))?;
    }
    Ok(())
}

/// A running guest. Dropping it kills QEMU.
pub struct Machine {
    child: Child,
    console: Console,
    cursor: usize,
    qmp: Option<Qmp>,
    qmp_path: PathBuf,
    dir: tempfile::TempDir,
    launched: Instant,
    deadline: Instant,
    exit: Option<ExitStatus>,
}

impl Machine {
    pub fn launch(config: MachineConfig) -> Result<Machine, Error> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kiln-qemu-{}-", config.arch.name()))
            .tempdir()
            .map_err(Error::io("machine directory"))?;
        let qmp_path = dir.path().join("qmp.sock");
        let mut cmd = qemu_command(&config, dir.path())?;
        let binary = config.arch.qemu().0;

        let stderr = std::fs::File::create(dir.path().join("qemu.stderr"))
            .map_err(Error::io("qemu.stderr"))?;
        let log = std::fs::File::create(dir.path().join("console.log"))
            .map_err(Error::io("console.log"))?;
        let launched = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(Error::io(format!("start {binary}")))?;
        let Some(out) = child.stdout.take() else {
            let _ = child.kill();
            return Err(Error::Io {
                what: "QEMU stdout".into(),
                source: std::io::ErrorKind::BrokenPipe.into(),
            });
        };
        let console = Console::spawn(out, log, launched);
        Ok(Machine {
            child,
            console,
            cursor: 0,
            qmp: None,
            qmp_path,
            dir,
            launched,
            deadline: launched + config.deadline,
            exit: None,
        })
    }

    /// Waits for the next console line matching `re` (after the previous match).
    pub fn wait_for(&mut self, re: &Regex, timeout: Duration) -> Result<Match, Error> {
        let timeout = timeout.min(self.deadline.saturating_duration_since(Instant::now()));
        match self.console.wait_for(re, &mut self.cursor, timeout) {
            Ok(m) => Ok(m),
            Err(Miss::TimedOut) => Err(Error::Timeout {
                pattern: re.to_string(),
                secs: timeout.as_secs(),
                log: self.console_log().display().to_string(),
                tail: self.console.tail(60),
            }),
            Err(Miss::Closed) => {
                let status = self
                    .wait_exit(Duration::from_secs(5))
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                Err(Error::Exited {
                    pattern: re.to_string(),
                    status,
                    log: self.console_log().display().to_string(),
                    tail: self.console.tail(60),
                })
            }
        }
    }

    /// The first console line so far matching `re`, anywhere (no waiting,
    /// no cursor): for checking what a boot printed once it is known to be done.
    pub fn find(&self, re: &Regex) -> Option<Match> {
        self.console.find(re)
    }

    /// The whole console so far.
    pub fn console(&self) -> String {
        self.console.text()
    }

    /// Console lines with their arrival time since launch.
    pub fn console_lines(&self) -> Vec<(Duration, String)> {
        self.console.timed_lines()
    }

    /// Where the console is saved.
    pub fn console_log(&self) -> PathBuf {
        self.dir.path().join("console.log")
    }

    /// When QEMU was started.
    pub fn launched(&self) -> Instant {
        self.launched
    }

    /// Runs a QMP command.
    pub fn qmp(&mut self, command: &str, arguments: Value) -> Result<Value, Error> {
        if self.qmp.is_none() {
            self.qmp = Some(Qmp::connect(&self.qmp_path, Duration::from_secs(10))?);
        }
        match self.qmp.as_mut() {
            Some(q) => q.execute(command, arguments),
            None => Err(Error::Qmp {
                command: command.into(),
                reason: "not connected".into(),
            }),
        }
    }

    /// Presses the ACPI power button.
    pub fn system_powerdown(&mut self) -> Result<(), Error> {
        self.qmp("system_powerdown", json!({})).map(drop)
    }

    /// Presses ctrl-alt-delete on the (PS/2) keyboard.
    pub fn ctrl_alt_delete(&mut self) -> Result<(), Error> {
        let keys = json!([{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}]);
        self.qmp("send-key", json!({ "keys": keys })).map(drop)
    }

    /// `running`, `paused`, `shutdown`, …
    pub fn query_status(&mut self) -> Result<String, Error> {
        let v = self.qmp("query-status", json!({}))?;
        Ok(v.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    /// Hot-plugs a virtio RNG into the `hp0` slot (see [`MachineConfig::hotplug_slot`]).
    pub fn device_add_virtio_rng(&mut self) -> Result<(), Error> {
        self.qmp(
            "device_add",
            json!({ "driver": "virtio-rng-pci", "id": "rng-hot", "bus": "hp0" }),
        )
        .map(drop)
    }

    /// Waits for QEMU to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        if let Some(s) = self.exit {
            return Ok(s);
        }
        let until =
            Instant::now() + timeout.min(self.deadline.saturating_duration_since(Instant::now()));
        loop {
            if let Some(s) = self.child.try_wait().map_err(Error::io("wait for QEMU"))? {
                self.exit = Some(s);
                return Ok(s);
            }
            if Instant::now() >= until {
                return Err(Error::Timeout {
                    pattern: "<QEMU exit>".into(),
                    secs: timeout.as_secs(),
                    log: self.console_log().display().to_string(),
                    tail: self.console.tail(60),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills QEMU now.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.kill();
        if std::env::var_os("KILN_KEEP_ARTIFACTS").is_some() || std::thread::panicking() {
            let kept = std::mem::replace(
                &mut self.dir,
                match tempfile::tempdir() {
                    Ok(d) => d,
                    Err(_) => return,
                },
            );
            eprintln!("QEMU artifacts kept in {}", kept.keep().display());
        }
    }
}

/// The QEMU command line for `config`: console on stdio, QMP on
/// `<dir>/qmp.sock`, firmware variables copied into `dir`. Used by
/// [`Machine::launch`] and by `cargo xtask demo`, which runs it on a terminal.
pub fn qemu_command(config: &MachineConfig, dir: &Path) -> Result<Command, Error> {
    let (binary, package) = config.arch.qemu();
    if !on_path(binary) {
        return Err(Error::MissingBinary { binary, package });
    }
    let qmp_path = dir.join("qmp.sock");
    let mut cmd = Command::new(binary);
    cmd.args(config.arch.machine_args());
    if std::env::var("KILN_QEMU_KVM").as_deref() == Ok("1") {
        cmd.args(["-accel", "kvm"]);
    } else {
        cmd.args(["-accel", "tcg"]);
    }
    cmd.args([
        "-m",
        &config.memory_mib.to_string(),
        "-smp",
        &config.cpus.to_string(),
    ])
    .args([
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
    ])
    .arg("-qmp")
    .arg(format!("unix:{},server=on,wait=off", qmp_path.display()));
    match &config.boot {
        Boot::Uefi => {
            let (code, vars, package) = config.arch.firmware();
            for path in [code, vars] {
                if !Path::new(path).exists() {
                    return Err(Error::MissingFirmware { path, package });
                }
            }
            let vars_copy = dir.join("vars.fd");
            std::fs::copy(vars, &vars_copy).map_err(Error::io("copy firmware variables"))?;
            cmd.arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={code}"
                ))
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars_copy.display()
                ));
        }
        Boot::Direct {
            kernel,
            initrd,
            cmdline,
        } => {
            cmd.arg("-kernel")
                .arg(kernel)
                .arg("-initrd")
                .arg(initrd)
                .arg("-append")
                .arg(cmdline);
        }
    }
    if let Some(disk) = &config.disk {
        cmd.arg("-drive").arg(format!(
            "if=none,id=disk0,format=raw,file={}",
            disk.display()
        ));
        cmd.args(["-device", "virtio-blk-pci,drive=disk0"]);
    }
    let forwards: String = config
        .host_forwards
        .iter()
        .map(|(h, g)| format!(",hostfwd=tcp:127.0.0.1:{h}-:{g}"))
        .collect();
    cmd.arg("-nic")
        .arg(format!("user,model=virtio-net-pci{forwards}"));
    if config.hotplug_slot {
        cmd.args(["-device", "pcie-root-port,id=hp0,chassis=1,slot=1"]);
    }
    cmd.args(&config.extra_args);
    Ok(cmd)
}

fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(binary).is_file()))
        .unwrap_or(false)
}
