//! Boots the built images (`cargo xtask build --arch all`, found through
//! `KILN_OUT_DIR`) the way a server would and checks each step of the boot
//! on the serial console. Each architecture boots three times:
//!
//! 1. UEFI → systemd-boot → Kiln from a disk bigger than the image: modules,
//!    read-only root, EPHEMERAL grown, STATE and EPHEMERAL mounted, services
//!    up, `system_powerdown` shuts down in order and QEMU exits by itself;
//!    the filesystems are clean.
//! 2. The same disk again: nothing to grow, the data written on the first
//!    boot is still there.
//!
//! The disk boots also drive the machine API through a port forward: the
//! first boot comes up in maintenance mode and takes its first config
//! (x86_64; aarch64 makes one call), the second comes up configured with it.
//! On x86_64 that config names an NTP server (chronyd run by the test,
//! reached at 10.0.2.2) and a hostname; a second config applied live moves
//! the NIC into an active-backup bond with DHCP on it and VLAN 42 on the
//! bond (netd re-applies the network), which the second boot comes up
//! with; it starts with its RTC in 2005:
//! timed must step the clock before the API's mutual TLS (certificates not
//! valid in 2005) lets the operator in, and writes the RTC at shutdown.
//!
//! x86_64's second boot also tries configs (try mode: one reverted at its
//! timeout, one confirmed, one left pending across the reboot), and boots
//! the disk twice more: the third boot comes back with the config from
//! before the pending try, shows its boot phases in Events and is reset
//! with --wipe-state; the fourth finds EPHEMERAL and STATE wiped (boot
//! count 1, a new machine id) and the node in maintenance mode, takes a
//! config and loses power right after the answer; the fifth boots with
//! that config, whole, and loses power while applying another; the sixth
//! boots with the old config or the new one, whole.
//!
//! 3. The PXE set booted directly (`-kernel/-initrd/-append`) with no disk:
//!    the same services with /var on tmpfs; a hot-plugged device gets its
//!    driver from the hotplug service. On x86_64 the command line carries
//!    `kiln.config=http://10.0.2.2:PORT/node.yaml` (pinned by
//!    `kiln.config.sha256=`), served by the test: the node fetches it and
//!    comes up configured.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kiln_qemu_tests::{free_loopback_port, prepare_disk, Arch, Boot, Machine, MachineConfig};
use regex::Regex;

mod machine_api;
mod ntp;

/// Under TCG a full UEFI boot takes 20–60 s; leave room for a loaded CI box.
const BOOT: Duration = Duration::from_secs(240);
const STEP: Duration = Duration::from_secs(60);
const DISK_BYTES: u64 = 2 << 30;
/// Where x86_64's second boot finds its RTC.
const RTC_IN_THE_PAST: &str = "2005-01-01T00:00:00";

fn out_dir(arch: Arch) -> PathBuf {
    let base = std::env::var_os("KILN_OUT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../out"));
    let dir = base.join(arch.name());
    assert!(
        dir.join("manifest.json").exists(),
        "no image in {}: run `cargo xtask build --arch all` first",
        dir.display()
    );
    dir
}

fn re(s: &str) -> Regex {
    Regex::new(s).expect("test regex")
}

/// A match's first capture group, or its line.
fn first_capture(found: kiln_qemu_tests::Match) -> String {
    found
        .captures
        .get(1)
        .cloned()
        .flatten()
        .unwrap_or(found.line)
}

/// Waits for `pattern` and returns its first capture group (or the line).
fn expect(m: &mut Machine, pattern: &str, timeout: Duration) -> String {
    match m.wait_for(&re(pattern), timeout) {
        Ok(found) => first_capture(found),
        Err(e) => panic!("{e}"),
    }
}

/// The first capture group (or the line) of an earlier console line.
fn saw(m: &Machine, pattern: &str) -> String {
    match m.find(&re(pattern)) {
        Some(found) => first_capture(found),
        None => panic!("console never showed /{pattern}/:\n{}", m.console()),
    }
}

/// Like [`expect`] for a line that may have been printed already.
fn seen_or_expect(m: &mut Machine, pattern: &str, timeout: Duration) -> String {
    match m.find(&re(pattern)) {
        Some(found) => first_capture(found),
        None => expect(m, pattern, timeout),
    }
}

/// Waits for the boot to complete, then checks every phase reported done.
fn expect_boot(m: &mut Machine) {
    expect(m, r"Kiln \S+ PID 1 starting", BOOT);
    expect(m, "boot complete", BOOT);
    for phase in kiln_phases() {
        saw(m, &format!(r#"phase done phase="{phase}""#));
    }
    assert!(
        !m.console().contains("phase failed"),
        "a boot phase failed:\n{}",
        m.console()
    );
}

/// PID 1's phases, in boot order.
fn kiln_phases() -> [&'static str; 7] {
    [
        "early-mounts",
        "kernel-modules",
        "root-image",
        "system-mounts",
        "disks",
        "entropy",
        "identity",
    ]
}

/// Powers the machine off with the ACPI button and checks the orderly path.
fn power_off(m: &mut Machine, with_disk: bool) {
    saw(m, "waiting for power events buttons=[1-9]");
    m.system_powerdown().expect("QMP system_powerdown");
    expect(m, "power button pressed", STEP);
    expect(m, "services stopped", STEP);
    if with_disk {
        expect(m, "unmounted /var cleanly", STEP);
        expect(m, "unmounted /system/state cleanly", STEP);
    }
    expect(m, "powering off", STEP);
    m.wait_exit(STEP).expect("QEMU exits after power-off");
}

/// `e2fsck -fn` on a partition of the raw disk, extracted by offset.
fn assert_fs_clean(disk: &Path, part: u32) {
    let table = Command::new("sgdisk")
        .arg("-i")
        .arg(part.to_string())
        .arg(disk)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    let sector = |key: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("sgdisk: no {key}:\n{text}"));
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    let (first, last) = (sector("First sector"), sector("Last sector"));
    let img = disk.with_extension(format!("p{part}"));
    let status = Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", img.display()))
        .args([
            "bs=512",
            &format!("skip={first}"),
            &format!("count={}", last - first + 1),
            "status=none",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "partition {part} not clean after shutdown:\n{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    std::fs::remove_file(img).unwrap();
}

fn disk_boot_twice(arch: Arch) {
    let out = out_dir(arch);
    let work = tempfile::tempdir().unwrap();
    let disk = work.path().join("disk.raw");
    prepare_disk(
        &out.join(format!("kiln-{}.raw", arch.name())),
        &disk,
        DISK_BYTES,
    )
    .unwrap();

    // x86_64's config names a real NTP server on the host.
    let chrony = (arch == Arch::X86_64).then(ntp::Chrony::start);
    let time_servers: Vec<String> = chrony.iter().map(ntp::Chrony::for_guest).collect();

    // First boot: grows EPHEMERAL to the 2 GiB disk.
    let api_port = free_loopback_port().unwrap();
    let config = MachineConfig::new(arch, Boot::Uefi)
        .disk(&disk)
        .hotplug_slot(true)
        .forward(api_port, 50000);
    let mut m = Machine::launch(config).unwrap();
    expect_boot(&mut m);
    let loaded = saw(&m, r"modules loaded: loaded=\[([^\]]*)\]");
    assert!(
        loaded.split(' ').any(|l| l == "virtio_blk"),
        "virtio_blk not loaded by coldplug: {loaded}"
    );
    saw(&m, "root image mounted read-only");
    saw(&m, "grew EPHEMERAL partition to the end of the disk");
    let mib: u64 = saw(&m, r"ephemeral_mib=(\d+)").parse().unwrap();
    assert!(mib > 1700, "EPHEMERAL is {mib} MiB on a 2 GiB disk");
    saw(&m, r"boot_count=1$");
    let id = saw(&m, r"machine_id=([0-9a-f]{32})");
    saw(
        &m,
        "services ready: apid=Healthy hotplug=Healthy netd=Healthy ",
    );
    let fingerprint = seen_or_expect(&mut m, r"kiln:   ([0-9a-f]{2}(?::[0-9a-f]{2}){31})", STEP);
    let cluster = machine_api::TestCluster::new("node-1", &time_servers);
    let rt = machine_api::runtime();
    if arch == Arch::X86_64 {
        rt.block_on(machine_api::first_config(
            api_port,
            &fingerprint,
            arch.name(),
            &cluster,
        ));
        expect(&mut m, "machine config stored", STEP);
        // netd follows the stored config: the hostname, then a live
        // network change moving the NIC into a bond (the kernel loads
        // bonding on netd's request) with DHCP on the bond.
        expect(&mut m, "hostname set hostname=node-1", STEP);
        rt.block_on(machine_api::apply_live(
            api_port,
            &cluster,
            cluster.bonded_config(),
        ));
        expect(&mut m, "bond member enslaved link=eth0 bond=bond0", STEP);
        seen_or_expect(
            &mut m,
            "vlan created vlan=bond0.42 id=42 parent=bond0",
            STEP,
        );
        expect(&mut m, "lease bound link=bond0", STEP);
        rt.block_on(machine_api::configured_version(api_port, &cluster));
    } else {
        // A smoke call: the same API answers on arm64.
        rt.block_on(machine_api::maintenance_version(
            api_port,
            &fingerprint,
            arch.name(),
        ));
    }
    power_off(&mut m, true);
    drop(m);
    assert_fs_clean(&disk, 2);
    assert_fs_clean(&disk, 3);

    // Second boot of the same disk: nothing to grow, data intact. x86_64's
    // clock starts in 2005, as on a board whose RTC battery died.
    let api_port = free_loopback_port().unwrap();
    let mut second = MachineConfig::new(arch, Boot::Uefi)
        .disk(&disk)
        .forward(api_port, 50000);
    if chrony.is_some() {
        second = second.rtc_base(RTC_IN_THE_PAST);
    }
    let mut m = Machine::launch(second).unwrap();
    expect_boot(&mut m);
    saw(&m, r"boot_count=2$");
    let id2 = saw(&m, r"machine_id=([0-9a-f]{32})");
    assert_eq!(id, id2, "machine id not kept on STATE");
    saw(&m, "entropy seeded credited_bytes=512");
    assert!(
        !m.console().contains("grew EPHEMERAL"),
        "grew again on the second boot"
    );
    if let Some(chrony) = &chrony {
        // timed started on a clock in 2005 and stepped it from the
        // configured server by about the years since.
        saw(&m, r"at start: system clock 2005-01-01T");
        let pattern = format!(
            r"time synced: stepped by \+(\d+)\.\d+ s from {}",
            regex::escape(&chrony.for_guest())
        );
        let stepped: u64 = seen_or_expect(&mut m, &pattern, BOOT).parse().unwrap();
        let years = stepped / (365 * 86400);
        assert!(years >= 19, "stepped only {stepped} s");
    }
    if arch == Arch::X86_64 {
        // The config was kept on STATE: no maintenance mode this time. Its
        // client certificates are valid from today: mutual TLS works only
        // because the clock was corrected.
        // The bond again, from the stored config at boot; the API answers
        // through it.
        seen_or_expect(&mut m, "bond member enslaved link=eth0 bond=bond0", BOOT);
        seen_or_expect(
            &mut m,
            "vlan created vlan=bond0.42 id=42 parent=bond0",
            STEP,
        );
        rt.block_on(machine_api::configured_again(api_port, &cluster));
        rt.block_on(machine_api::services_and_stats(api_port, &cluster));
        let before_try = rt.block_on(machine_api::try_mode(api_port, &cluster, "node-1"));
        assert!(
            !m.console().contains("maintenance mode"),
            "maintenance mode although a config is stored"
        );
        // ctrl-alt-del reaches PID 1 as SIGINT: an orderly reboot (QEMU
        // runs with -no-reboot, so it exits). aarch64's virt board has no
        // PS/2 keyboard to press it on.
        m.ctrl_alt_delete().expect("QMP send-key");
        expect(&mut m, "SIGINT \\(ctrl-alt-del\\): reboot", STEP);
        // timed's stop: the corrected time goes to the RTC.
        let year: u32 = expect(&mut m, r"wrote the system time to the RTC: (\d{4})-", STEP)
            .parse()
            .unwrap();
        assert!(year > 2005, "the RTC was written with {year}");
        expect(&mut m, "unmounted /var cleanly", STEP);
        expect(&mut m, "rebooting", STEP);
        m.wait_exit(STEP).expect("QEMU exits on the guest's reboot");
        drop(m);
        revert_then_reset(&disk, &cluster, &before_try, &id);
    } else {
        power_off(&mut m, true);
    }
}

/// Third to fifth boots of x86_64's disk: the try left pending is undone
/// at boot; a reset with --wipe-state brings the node back in maintenance
/// mode with EPHEMERAL and STATE emptied; a config answered just before a
/// power cut is there, whole, at the next boot. `id` is the machine id so
/// far.
fn revert_then_reset(disk: &Path, cluster: &machine_api::TestCluster, before_try: &str, id: &str) {
    let rt = machine_api::runtime();
    let api_port = free_loopback_port().unwrap();
    let third = MachineConfig::new(Arch::X86_64, Boot::Uefi)
        .disk(disk)
        .forward(api_port, 50000);
    let mut m = Machine::launch(third).unwrap();
    expect_boot(&mut m);
    saw(
        &m,
        "not confirmed before this boot: the previous config is back",
    );
    rt.block_on(machine_api::reverted_at_boot(
        api_port,
        cluster,
        before_try,
        &kiln_phases(),
    ));
    rt.block_on(machine_api::reset(api_port, cluster));
    expect(&mut m, "reset requested", STEP);
    expect(&mut m, "unmounted /system/state cleanly", STEP);
    expect(&mut m, "rebooting", STEP);
    m.wait_exit(STEP).expect("QEMU exits on the guest's reboot");
    drop(m);

    let api_port = free_loopback_port().unwrap();
    let fourth = MachineConfig::new(Arch::X86_64, Boot::Uefi)
        .disk(disk)
        .forward(api_port, 50000);
    let mut m = Machine::launch(fourth).unwrap();
    expect_boot(&mut m);
    saw(&m, "reset requested: wiping /var and /system/state");
    saw(&m, "reset done");
    saw(&m, r"boot_count=1$");
    let new_id = saw(&m, r"machine_id=([0-9a-f]{32})");
    assert_ne!(
        new_id, id,
        "the machine id survived a reset with --wipe-state"
    );
    let fingerprint = seen_or_expect(&mut m, r"kiln:   ([0-9a-f]{2}(?::[0-9a-f]{2}){31})", STEP);
    rt.block_on(machine_api::maintenance_version(
        api_port,
        &fingerprint,
        Arch::X86_64.name(),
    ));

    // A power cut (QEMU quits, the guest gets no say) right after an
    // answered ApplyConfiguration: the answer means the config is on STATE,
    // whole, and the node boots with it.
    rt.block_on(machine_api::apply_first(api_port, &fingerprint, cluster));
    m.quit().expect("QMP quit");
    drop(m);
    let api_port = free_loopback_port().unwrap();
    let fifth = MachineConfig::new(Arch::X86_64, Boot::Uefi)
        .disk(disk)
        .forward(api_port, 50000);
    let mut m = Machine::launch(fifth).unwrap();
    expect_boot(&mut m);
    rt.block_on(machine_api::configured_with(
        api_port,
        cluster,
        &cluster.config,
    ));

    // A power cut while ApplyConfiguration runs: the sixth boot finds the
    // old config or the new one, whole.
    let new = machine_api::with_hostname(&cluster.config, "node-1", "node-cut");
    rt.block_on(machine_api::apply_then_power_cut(
        api_port,
        cluster,
        &new,
        m.pid(),
        Duration::from_millis(20),
    ));
    m.wait_exit(STEP).expect("QEMU killed");
    drop(m);
    let api_port = free_loopback_port().unwrap();
    let sixth = MachineConfig::new(Arch::X86_64, Boot::Uefi)
        .disk(disk)
        .forward(api_port, 50000);
    let mut m = Machine::launch(sixth).unwrap();
    expect_boot(&mut m);
    rt.block_on(machine_api::configured_with_one_of(
        api_port,
        cluster,
        &[&cluster.config, &new],
    ));
    power_off(&mut m, true);
}

fn pxe_boot(arch: Arch) {
    use sha2::Digest;
    let out = out_dir(arch);
    let cmdline = std::fs::read_to_string(out.join("cmdline")).unwrap();
    // x86_64 fetches its config from the test's HTTP server at boot.
    let cluster = machine_api::TestCluster::new("node-pxe", &[]);
    let config_source = if arch == Arch::X86_64 {
        let port = machine_api::serve_config(cluster.config.clone());
        let pin: String = sha2::Sha256::digest(cluster.config.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!(" kiln.config=http://10.0.2.2:{port}/node.yaml kiln.config.sha256={pin}")
    } else {
        String::new()
    };
    let boot = Boot::Direct {
        kernel: out.join("vmlinuz"),
        initrd: Some(out.join("initramfs.img")),
        // A module that does not exist and one loaded already: both are
        // logged and survived.
        cmdline: format!(
            "{} kiln.modules=no_such_module,loop{config_source}",
            cmdline.trim()
        ),
    };
    let api_port = free_loopback_port().unwrap();
    let config = MachineConfig::new(arch, boot)
        .hotplug_slot(true)
        .forward(api_port, 50000);
    let mut m = Machine::launch(config).unwrap();
    expect_boot(&mut m);
    saw(
        &m,
        r#"cannot load module: unknown module "no_such_module".* module=no_such_module"#,
    );
    saw(&m, "/var is tmpfs, nothing will persist");
    saw(
        &m,
        "services ready: apid=Healthy hotplug=Healthy netd=Healthy ",
    );
    // A device plugged in after boot gets its driver from the hotplug
    // service. (Checked here: with no firmware the kernel assigns the hot
    // slot's resources itself; OVMF leaves an empty root port without any.)
    seen_or_expect(&mut m, "listening for device events", STEP);
    m.device_add_virtio_rng().expect("QMP device_add");
    expect(&mut m, r"driver loaded module=virtio_rng", STEP);
    if arch == Arch::X86_64 {
        machine_api::runtime().block_on(machine_api::fetched_config(api_port, &cluster));
        saw(&m, "config fetched from http://10.0.2.2:");
    }
    power_off(&mut m, false);
}

#[test]
fn x86_64_disk_boot() {
    disk_boot_twice(Arch::X86_64);
}

#[test]
fn x86_64_pxe_boot() {
    pxe_boot(Arch::X86_64);
}

#[test]
fn aarch64_disk_boot() {
    disk_boot_twice(Arch::Aarch64);
}

#[test]
fn aarch64_pxe_boot() {
    pxe_boot(Arch::Aarch64);
}
