//! One QEMU guest: configuration, launch, waits on its console, QMP
//! commands, exit. TCG only unless `KILN_QEMU_KVM=1` (KVM is broken on the
//! machines this project is tested on).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::{json, Value};

use crate::console::{Console, Miss};
use crate::qmp::Qmp;
use crate::{Error, Line, Match};

/// How many console lines an error carries.
const TAIL_LINES: usize = 60;
/// How long QEMU gets to create its QMP socket.
const QMP_CONNECT: Duration = Duration::from_secs(10);

/// Guest architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The architecture this process runs on.
    pub fn host() -> Result<Arch, Error> {
        std::env::consts::ARCH.parse()
    }

    /// `x86_64` / `aarch64`, as in Kiln's file names.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's name: `amd64` / `arm64` (package names, `.deb` files).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The serial console's device for `console=` on the kernel command line.
    pub fn serial_console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }

    /// (binary, Debian package)
    fn qemu(self) -> (&'static str, &'static str) {
        match self {
            Arch::X86_64 => ("qemu-system-x86_64", "qemu-system-x86"),
            Arch::Aarch64 => ("qemu-system-aarch64", "qemu-system-arm"),
        }
    }

    /// (code, vars template, Debian package)
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

impl FromStr for Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Arch, Error> {
        match s {
            "x86_64" | "amd64" | "x86-64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            _ => Err(Error::UnknownArch(s.to_string())),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the guest boots.
#[derive(Debug, Clone)]
pub enum Boot {
    /// Firmware (OVMF/AAVMF) boots the disk: systemd-boot → kernel. The
    /// firmware's variable store is copied into the machine's directory.
    Uefi,
    /// PXE-style: QEMU loads the kernel (and initramfs) itself
    /// (`-kernel/-initrd/-append`), no UEFI firmware.
    Direct {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
    },
}

/// A guest to launch. Fields are public; the builder methods read better.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    pub arch: Arch,
    pub boot: Boot,
    /// Guest RAM (default 1024).
    pub memory_mib: u32,
    /// vCPUs (default 2).
    pub cpus: u32,
    /// Raw disk attached as virtio-blk. Used in place: the caller owns the
    /// file (see [`prepare_disk`]).
    pub disk: Option<PathBuf>,
    /// TCP forwards from `127.0.0.1:<host>` to guest port `<guest>` over
    /// user networking (see [`free_loopback_port`]).
    pub host_forwards: Vec<(u16, u16)>,
    /// An empty PCIe root port (`hp0`) to hot-plug devices into.
    pub hotplug_slot: bool,
    /// `-no-reboot` (default on): a guest reboot makes QEMU exit, so
    /// [`Machine::wait_exit`] sees it. Off: the guest really reboots and the
    /// console shows a second boot (QMP records a `RESET` event).
    pub no_reboot: bool,
    /// Nothing this machine does may take longer than this, counted from
    /// launch (default 900 s): every wait is cut to it.
    pub deadline: Duration,
    /// Where the guest's RTC starts (`-rtc base=`): `YYYY-MM-DD` or
    /// `YYYY-MM-DDTHH:MM:SS`, UTC. Default: the host's time.
    pub rtc_base: Option<String>,
    /// Appended to QEMU's command line as given.
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
            no_reboot: true,
            deadline: Duration::from_secs(900),
            rtc_base: None,
            extra_args: Vec::new(),
        }
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    pub fn disk(mut self, path: &Path) -> Self {
        self.disk = Some(path.to_path_buf());
        self
    }

    pub fn hotplug_slot(mut self, on: bool) -> Self {
        self.hotplug_slot = on;
        self
    }

    /// Forwards `127.0.0.1:host` to the guest's TCP port `guest`.
    pub fn forward(mut self, host: u16, guest: u16) -> Self {
        self.host_forwards.push((host, guest));
        self
    }

    pub fn no_reboot(mut self, on: bool) -> Self {
        self.no_reboot = on;
        self
    }

    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Starts the guest's RTC at `base` (e.g. far in the past, to test time
    /// sync).
    pub fn rtc_base(mut self, base: &str) -> Self {
        self.rtc_base = Some(base.to_string());
        self
    }

    pub fn extra_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Checks what can be checked before QEMU runs.
    fn validate(&self) -> Result<(), Error> {
        let config = |field, problem: &str| {
            Err(Error::Config {
                field,
                problem: problem.into(),
            })
        };
        if self.memory_mib < 64 {
            return config("memory_mib", "below 64 MiB no kernel boots");
        }
        if self.cpus == 0 {
            return config("cpus", "must be at least 1");
        }
        let mut hosts: Vec<u16> = self.host_forwards.iter().map(|(h, _)| *h).collect();
        hosts.sort_unstable();
        if let Some(w) = hosts.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Config {
                field: "host_forwards",
                problem: format!("host port {} forwarded twice", w[0]),
            });
        }
        if hosts.first() == Some(&0) {
            return config("host_forwards", "host port 0 (use free_loopback_port)");
        }
        if let Some(base) = &self.rtc_base {
            if !rtc_base_ok(base) {
                return Err(Error::Config {
                    field: "rtc_base",
                    problem: format!("{base:?} is not YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS"),
                });
            }
        }
        let mut files: Vec<(&'static str, &Path)> = Vec::new();
        if let Boot::Direct { kernel, initrd, .. } = &self.boot {
            files.push(("kernel", kernel));
            if let Some(initrd) = initrd {
                files.push(("initrd", initrd));
            }
        }
        if let Some(disk) = &self.disk {
            files.push(("disk", disk));
        }
        match files.into_iter().find(|(_, p)| !p.is_file()) {
            Some((what, path)) => Err(Error::MissingFile {
                what,
                path: path.to_path_buf(),
            }),
            None => Ok(()),
        }
    }
}

/// Copies a raw image to `dst` and grows the file to `size_bytes` (sparse),
/// like writing the image to a bigger disk. A `size_bytes` below the image's
/// size is an error: that disk could not hold the image.
pub fn prepare_disk(src: &Path, dst: &Path, size_bytes: u64) -> Result<(), Error> {
    let len = std::fs::metadata(src)
        .map_err(Error::io(format!("disk image {}", src.display())))?
        .len();
    if size_bytes < len {
        return Err(Error::Config {
            field: "size_bytes",
            problem: format!(
                "{size_bytes} bytes cannot hold {} ({len} bytes)",
                src.display()
            ),
        });
    }
    std::fs::copy(src, dst).map_err(Error::io(format!(
        "copy {} to {}",
        src.display(),
        dst.display()
    )))?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dst)
        .map_err(Error::io(format!("open {}", dst.display())))?;
    f.set_len(size_bytes)
        .map_err(Error::io(format!("grow {}", dst.display())))
}

/// A TCP port on 127.0.0.1 free right now, for [`MachineConfig::forward`].
/// (Another process could take it before QEMU binds it; on a test machine
/// that is rare enough.)
pub fn free_loopback_port() -> Result<u16, Error> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(Error::io("bind a free port on 127.0.0.1"))
}

/// A running guest. Dropping it kills QEMU.
pub struct Machine {
    child: Child,
    console: Console,
    cursor: usize,
    qmp: Option<Qmp>,
    dir: tempfile::TempDir,
    launched: Instant,
    deadline: Instant,
    exit: Option<ExitStatus>,
}

impl Machine {
    /// Starts QEMU for `config` in a fresh directory (console log, QEMU's
    /// stderr, QMP socket, firmware variables). QEMU dies with the test
    /// process even if that is killed before the `Machine` is dropped.
    pub fn launch(config: MachineConfig) -> Result<Machine, Error> {
        config.validate()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("kiln-qemu-{}-", config.arch.name()))
            .tempdir()
            .map_err(Error::io("create the machine directory"))?;
        let mut cmd = qemu_command(&config, dir.path())?;
        tracing::info!(dir = %dir.path().display(), command = ?cmd, "launching QEMU");

        let stderr = std::fs::File::create(dir.path().join("qemu.stderr"))
            .map_err(Error::io("create qemu.stderr"))?;
        let log = std::fs::File::create(dir.path().join("console.log"))
            .map_err(Error::io("create console.log"))?;
        let launched = Instant::now();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = crate::spawner::spawn(cmd)
            .map_err(Error::io(format!("start {}", config.arch.qemu().0)))?;
        let Some(out) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Io {
                what: "QEMU stdout".into(),
                source: std::io::ErrorKind::BrokenPipe.into(),
            });
        };
        Ok(Machine {
            child,
            console: Console::spawn(out, log, launched),
            cursor: 0,
            qmp: None,
            dir,
            launched,
            deadline: launched + config.deadline,
            exit: None,
        })
    }

    /// Waits for the next console line matching `re`, after the previous
    /// match. On a timeout or QEMU's exit the error names the pattern and
    /// carries the console's last lines.
    pub fn wait_for(&mut self, re: &Regex, timeout: Duration) -> Result<Match, Error> {
        self.wait_for_any(&[re], timeout).map(|(_, m)| m)
    }

    /// Like [`Machine::wait_for`] for whichever of `res` comes first; also
    /// returns the index of the pattern that matched (the first of several
    /// matching the same line).
    pub fn wait_for_any(
        &mut self,
        res: &[&Regex],
        timeout: Duration,
    ) -> Result<(usize, Match), Error> {
        let timeout = self.cut(timeout);
        let started = Instant::now();
        match self.console.wait_for_any(res, &mut self.cursor, timeout) {
            Ok(found) => Ok(found),
            Err(Miss::TimedOut) => Err(Error::Timeout {
                pattern: describe(res),
                waited: started.elapsed(),
                log: self.console_log().display().to_string(),
                tail: self.console.tail(TAIL_LINES),
            }),
            Err(Miss::Closed) => {
                let status = match self.wait_exit(Duration::from_secs(5)) {
                    Ok(s) => s.to_string(),
                    Err(_) => "its console closed; still running".to_string(),
                };
                Err(Error::Exited {
                    pattern: describe(res),
                    status,
                    log: self.console_log().display().to_string(),
                    stderr: self.qemu_stderr(),
                    tail: self.console.tail(TAIL_LINES),
                })
            }
        }
    }

    /// The first console line so far matching `re`, anywhere (no waiting,
    /// no cursor): for checking what a boot printed once it is known done.
    pub fn find(&self, re: &Regex) -> Option<Match> {
        self.console.find(re)
    }

    /// The whole console so far.
    pub fn console(&self) -> String {
        self.console.text()
    }

    /// The console's last `n` lines.
    pub fn console_tail(&self, n: usize) -> String {
        self.console.tail(n)
    }

    /// Console lines with their arrival time since launch.
    pub fn console_lines(&self) -> Vec<Line> {
        self.console.lines()
    }

    /// Moves the wait cursor past everything received so far: the next
    /// wait sees only new lines.
    pub fn skip_console(&mut self) {
        self.cursor = self.console.len();
    }

    /// The machine's directory: console.log, qemu.stderr, qmp.sock.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the console is saved (every byte, as it arrives).
    pub fn console_log(&self) -> PathBuf {
        self.dir.path().join("console.log")
    }

    /// What QEMU wrote to its stderr so far.
    pub fn qemu_stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("qemu.stderr")).unwrap_or_default()
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When QEMU was started.
    pub fn launched(&self) -> Instant {
        self.launched
    }

    /// Runs a QMP command and returns its `return` value.
    pub fn qmp(&mut self, command: &str, arguments: Value) -> Result<Value, Error> {
        self.qmp_client()?.execute(command, arguments)
    }

    /// Every QMP event received so far (they arrive while commands run or
    /// [`Machine::wait_event`] waits), oldest first.
    pub fn qmp_events(&self) -> &[Value] {
        self.qmp.as_ref().map_or(&[], |q| q.events.as_slice())
    }

    /// Waits for the next QMP event named `name` (e.g. `RESET`,
    /// `SHUTDOWN`, `POWERDOWN`) not returned by an earlier call.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Value, Error> {
        let timeout = self.cut(timeout);
        self.qmp_client()?.wait_event(name, timeout)
    }

    /// Presses the ACPI power button.
    pub fn system_powerdown(&mut self) -> Result<(), Error> {
        self.qmp("system_powerdown", json!({})).map(drop)
    }

    /// Resets the machine (QEMU exits instead if `no_reboot` is on).
    pub fn system_reset(&mut self) -> Result<(), Error> {
        self.qmp("system_reset", json!({})).map(drop)
    }

    /// Asks QEMU to exit now and waits for it.
    pub fn quit(&mut self) -> Result<ExitStatus, Error> {
        if let Some(s) = self.exit {
            return Ok(s);
        }
        self.qmp_client()?.quit()?;
        self.wait_exit(Duration::from_secs(30))
    }

    /// Presses ctrl-alt-delete on the (PS/2) keyboard.
    pub fn ctrl_alt_delete(&mut self) -> Result<(), Error> {
        let keys = json!([{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}]);
        self.qmp("send-key", json!({ "keys": keys })).map(drop)
    }

    /// `running`, `paused`, `prelaunch`, `shutdown`, …
    pub fn query_status(&mut self) -> Result<String, Error> {
        let v = self.qmp("query-status", json!({}))?;
        v.get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::Qmp {
                command: "query-status".into(),
                reason: format!("no status in {v}"),
            })
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
        let timeout = self.cut(timeout);
        let until = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exit_status()? {
                return Ok(s);
            }
            if Instant::now() >= until {
                return Err(Error::Timeout {
                    pattern: "QEMU to exit".into(),
                    waited: timeout,
                    log: self.console_log().display().to_string(),
                    tail: self.console.tail(TAIL_LINES),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills QEMU now (if it still runs) and reaps it.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }

    /// QEMU's exit status if it has exited, without waiting.
    fn exit_status(&mut self) -> Result<Option<ExitStatus>, Error> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().map_err(Error::io("wait for QEMU"))?;
        }
        Ok(self.exit)
    }

    /// `timeout`, cut to what is left before the machine's deadline.
    fn cut(&self, timeout: Duration) -> Duration {
        timeout.min(self.deadline.saturating_duration_since(Instant::now()))
    }

    fn qmp_client(&mut self) -> Result<&mut Qmp, Error> {
        // A QEMU that has gone answers nothing (and connecting would retry
        // until the socket's timeout).
        if let Some(status) = self.exit_status()? {
            return Err(Error::Qmp {
                command: "connect".into(),
                reason: format!("QEMU has exited ({status})"),
            });
        }
        if self.qmp.is_none() {
            let q = Qmp::connect(&self.dir.path().join("qmp.sock"), QMP_CONNECT)?;
            self.qmp = Some(q);
        }
        self.qmp.as_mut().ok_or_else(|| Error::Qmp {
            command: "connect".into(),
            reason: "no QMP connection".into(),
        })
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.kill();
        let keep = std::env::var("KILN_KEEP_ARTIFACTS").is_ok_and(|v| !v.is_empty() && v != "0");
        if keep || std::thread::panicking() {
            // Swap in a throwaway directory so this one survives the drop.
            let Ok(placeholder) = tempfile::tempdir() else {
                return;
            };
            let kept = std::mem::replace(&mut self.dir, placeholder);
            eprintln!(
                "QEMU artifacts (console.log, qemu.stderr) kept in {}",
                kept.keep().display()
            );
        }
    }
}

/// `/a/` or `/a/ or /b/`.
fn describe(res: &[&Regex]) -> String {
    res.iter()
        .map(|r| format!("/{r}/"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The QEMU command line for `config`: console on stdio, QMP on
/// `<dir>/qmp.sock`, firmware variables copied into `dir`. Used by
/// [`Machine::launch`] and by `cargo xtask demo`, which runs it on a terminal.
pub fn qemu_command(config: &MachineConfig, dir: &Path) -> Result<Command, Error> {
    let (binary, package) = config.arch.qemu();
    if !on_path(binary) {
        return Err(Error::MissingBinary { binary, package });
    }
    let mut cmd = Command::new(binary);
    cmd.args(config.arch.machine_args());
    cmd.args(["-accel", accelerator(config.arch)]);
    cmd.args([
        "-m",
        &config.memory_mib.to_string(),
        "-smp",
        &config.cpus.to_string(),
    ])
    .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
    .arg("-qmp")
    .arg(format!(
        "unix:{},server=on,wait=off",
        dir.join("qmp.sock").display()
    ));
    if config.no_reboot {
        cmd.arg("-no-reboot");
    }
    match &config.boot {
        Boot::Uefi => {
            let (code, vars, package) = config.arch.firmware();
            for path in [code, vars] {
                if !Path::new(path).exists() {
                    return Err(Error::MissingFirmware { path, package });
                }
            }
            let vars_copy = dir.join("vars.fd");
            std::fs::copy(vars, &vars_copy).map_err(Error::io(format!(
                "copy firmware variables {vars} to {}",
                vars_copy.display()
            )))?;
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
            cmd.arg("-kernel").arg(kernel);
            if let Some(initrd) = initrd {
                cmd.arg("-initrd").arg(initrd);
            }
            cmd.arg("-append").arg(cmdline);
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
    if let Some(base) = &config.rtc_base {
        cmd.arg("-rtc").arg(format!("base={base}"));
    }
    cmd.args(&config.extra_args);
    Ok(cmd)
}

/// QEMU's date forms for `-rtc base=` (digits where digits go).
fn rtc_base_ok(s: &str) -> bool {
    let shape = |s: &str, pattern: &str| {
        s.len() == pattern.len()
            && s.bytes().zip(pattern.bytes()).all(|(c, p)| match p {
                b'9' => c.is_ascii_digit(),
                p => c == p,
            })
    };
    shape(s, "9999-99-99") || shape(s, "9999-99-99T99:99:99")
}

/// `tcg`, or `kvm` when `KILN_QEMU_KVM=1` asks for it and the guest is the
/// host's architecture (KVM cannot run a foreign one).
fn accelerator(arch: Arch) -> &'static str {
    if std::env::var("KILN_QEMU_KVM").as_deref() != Ok("1") {
        return "tcg";
    }
    if Arch::host().ok() == Some(arch) {
        "kvm"
    } else {
        tracing::warn!(%arch, "KILN_QEMU_KVM=1 ignored: KVM cannot run a foreign architecture");
        "tcg"
    }
}

fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(binary).is_file()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::MetadataExt;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// `flag value` appears in order.
    fn has_pair(args: &[String], flag: &str, value: &str) -> bool {
        args.windows(2).any(|w| w[0] == flag && w[1] == value)
    }

    #[test]
    fn arch_names_round_trip() {
        for arch in Arch::ALL {
            assert_eq!(arch.name().parse::<Arch>().unwrap(), arch);
            assert_eq!(arch.debian().parse::<Arch>().unwrap(), arch);
            assert_eq!(arch.to_string(), arch.name());
        }
        assert!(matches!("riscv64".parse::<Arch>(), Err(Error::UnknownArch(a)) if a == "riscv64"));
        assert_eq!(Arch::host().unwrap().name(), std::env::consts::ARCH);
    }

    #[test]
    fn uefi_command_copies_the_variable_store_and_wires_everything() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.raw");
        std::fs::write(&disk, b"").unwrap();
        let config = MachineConfig::new(Arch::X86_64, Boot::Uefi)
            .disk(&disk)
            .forward(2222, 22)
            .forward(50001, 50000)
            .memory_mib(512)
            .cpus(1)
            .extra_args(["-S"]);
        config.validate().unwrap();
        let a = args(&qemu_command(&config, dir.path()).unwrap());
        let vars = dir.path().join("vars.fd");
        assert_eq!(
            std::fs::read(&vars).unwrap(),
            std::fs::read("/usr/share/OVMF/OVMF_VARS_4M.fd").unwrap()
        );
        if std::env::var_os("KILN_QEMU_KVM").is_none() {
            assert!(has_pair(&a, "-accel", "tcg"), "{a:?}");
        }
        assert!(
            has_pair(&a, "-m", "512") && has_pair(&a, "-smp", "1"),
            "{a:?}"
        );
        assert!(has_pair(
            &a,
            "-drive",
            &format!("if=pflash,format=raw,unit=1,file={}", vars.display())
        ));
        assert!(has_pair(&a, "-serial", "stdio") && a.contains(&"-no-reboot".into()));
        assert!(has_pair(
            &a,
            "-nic",
            "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:50001-:50000"
        ));
        assert!(has_pair(
            &a,
            "-drive",
            &format!("if=none,id=disk0,format=raw,file={}", disk.display())
        ));
        assert_eq!(a.last().map(String::as_str), Some("-S"));
        assert!(!a.contains(&"-kernel".into()));
        assert!(!a.contains(&"-rtc".into()), "the host's time by default");
        let past = config.rtc_base("2005-01-01T00:00:00");
        let a = args(&qemu_command(&past, dir.path()).unwrap());
        assert!(has_pair(&a, "-rtc", "base=2005-01-01T00:00:00"), "{a:?}");
    }

    #[test]
    fn direct_boot_without_initrd_and_with_reboots() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinuz");
        std::fs::write(&kernel, b"").unwrap();
        let config = MachineConfig::new(
            Arch::Aarch64,
            Boot::Direct {
                kernel: kernel.clone(),
                initrd: None,
                cmdline: "console=ttyAMA0".into(),
            },
        )
        .no_reboot(false);
        let a = args(&qemu_command(&config, dir.path()).unwrap());
        assert!(has_pair(&a, "-M", "virt") && has_pair(&a, "-cpu", "max"));
        assert!(has_pair(&a, "-kernel", &kernel.display().to_string()));
        assert!(has_pair(&a, "-append", "console=ttyAMA0"));
        assert!(!a.contains(&"-initrd".into()) && !a.contains(&"-no-reboot".into()));
        assert!(!a.iter().any(|x| x.contains("pflash")), "{a:?}");
        assert!(!dir.path().join("vars.fd").exists());
    }

    #[test]
    fn validation_names_the_field_or_file() {
        let boot = Boot::Direct {
            kernel: "/nonexistent/vmlinuz".into(),
            initrd: None,
            cmdline: String::new(),
        };
        match MachineConfig::new(Arch::X86_64, boot).validate() {
            Err(Error::MissingFile { what, path }) => {
                assert_eq!((what, path), ("kernel", "/nonexistent/vmlinuz".into()))
            }
            other => panic!("{other:?}"),
        }
        let uefi = || MachineConfig::new(Arch::X86_64, Boot::Uefi);
        let err = uefi().forward(8080, 80).forward(8080, 81).validate();
        assert!(
            matches!(&err, Err(Error::Config { field: "host_forwards", problem }) if problem.contains("8080")),
            "{err:?}"
        );
        let err = uefi().memory_mib(16).validate();
        assert!(matches!(
            err,
            Err(Error::Config {
                field: "memory_mib",
                ..
            })
        ));
        let err = uefi().cpus(0).validate();
        assert!(matches!(err, Err(Error::Config { field: "cpus", .. })));
        let err = uefi().disk(Path::new("/nonexistent/disk.raw")).validate();
        assert!(matches!(err, Err(Error::MissingFile { what: "disk", .. })));
        uefi().rtc_base("2005-01-01").validate().unwrap();
        uefi().rtc_base("2005-01-01T00:00:00").validate().unwrap();
        for bad in ["2005/01/01", "2005-01-01 00:00:00", "now", "2005-1-1"] {
            let err = uefi().rtc_base(bad).validate();
            assert!(
                matches!(&err, Err(Error::Config { field: "rtc_base", problem }) if problem.contains(bad)),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn prepare_disk_copies_and_grows_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("img"), dir.path().join("disk"));
        let image: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &image).unwrap();
        let size = 4u64 << 30;
        prepare_disk(&src, &dst, size).unwrap();
        let meta = std::fs::metadata(&dst).unwrap();
        assert_eq!(meta.len(), size);
        // Sparse: far fewer 512-byte blocks allocated than the size.
        assert!(meta.blocks() * 512 < 64 << 20, "{} blocks", meta.blocks());
        let mut f = std::fs::File::open(&dst).unwrap();
        let mut head = vec![0u8; image.len() + 4096];
        f.read_exact(&mut head).unwrap();
        assert_eq!(&head[..image.len()], &image[..]);
        assert!(head[image.len()..].iter().all(|&b| b == 0));
        let mut end = [1u8; 4096];
        f.seek(SeekFrom::End(-4096)).unwrap();
        f.read_exact(&mut end).unwrap();
        assert!(end.iter().all(|&b| b == 0));
        // Preparing again over a used disk starts it afresh.
        std::fs::write(&dst, b"dirty").unwrap();
        prepare_disk(&src, &dst, size).unwrap();
        assert_eq!(std::fs::metadata(&dst).unwrap().len(), size);

        let err = prepare_disk(&src, &dst, 1024).unwrap_err();
        assert!(err.to_string().contains("cannot hold"), "{err}");
        let err = prepare_disk(&dir.path().join("nope"), &dst, size).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn free_loopback_port_is_bindable() {
        let port = free_loopback_port().unwrap();
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
