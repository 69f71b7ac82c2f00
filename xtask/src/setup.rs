//! Installs what is missing on a fresh Debian 12 machine: QEMU (from
//! bookworm-backports, to match the qemu-utils the machine ships), UEFI
//! firmware, Debian's Rust toolchain with the arm64 std and cross linker, and
//! the filesystem tools tests use to check images, and the cargo tools the
//! test command runs. Idempotent and quiet when everything is there.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::step;

/// Packages from bookworm-backports.
const BACKPORTS: &[&str] = &["qemu-system-x86", "qemu-system-arm", "qemu-user-static"];
/// Packages from the main suite.
const MAIN: &[&str] = &[
    "ovmf",
    "qemu-efi-aarch64",
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev:arm64",
    "gcc-aarch64-linux-gnu",
    // gcc-aarch64-linux-gnu only recommends the arm64 libc it links with.
    "libc6-dev-arm64-cross",
    "e2fsprogs",
    "dosfstools",
    "mtools",
    "gdisk",
    "cpio",
    // depmod and modprobe: the module index tests compare against them.
    "kmod",
    "containernetworking-plugins",
    // The reference portmap plugin runs it (kiln-portmap's tests compare).
    "iptables",
    "iproute2",
    "iputils-ping",
    // netd's tests: the DHCP server (the binary only; `dnsmasq` would start
    // a system service).
    "dnsmasq-base",
    // timed's tests: a real NTP server (run by the tests with -x, on their
    // own port; its system service is kept from starting, see below).
    "chrony",
    // kilnctl's completion tests run the scripts in each shell.
    "zsh",
    "fish",
    // kiln-cri's tests: a real registry (started by the tests, not as a
    // system service), skopeo to push the images they build, htpasswd for
    // the auth case, and a real static binary to pack into images.
    "docker-registry",
    "skopeo",
    "apache2-utils",
    "busybox-static",
];
const BACKPORTS_SOURCES: &str = "/etc/apt/sources.list.d/kiln-backports.sources";
/// Packages whose system service must never run here: chrony's would set
/// the machine's clock and ask the public NTP pool; the tests start their
/// own registries on their own ports.
const NO_SERVICE: &[&str] = &["chrony.service", "docker-registry.service"];
/// Debian's hook that tells package scripts whether to start services.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Cargo subcommands the test command runs: (subcommand, crate).
const CARGO_TOOLS: &[(&str, &str)] = &[("fuzz", "cargo-fuzz")];

pub fn install_missing() -> Result<()> {
    install_apt_packages()?;
    install_cargo_tools()
}

/// `cargo install` for each tool whose subcommand does not answer.
fn install_cargo_tools() -> Result<()> {
    for (subcommand, krate) in CARGO_TOOLS {
        let present = Command::new(env!("CARGO"))
            .args([subcommand, "--version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !present {
            step(&format!("installing {krate}"));
            crate::run(Command::new(env!("CARGO")).args(["install", "--locked", krate]))?;
        }
    }
    Ok(())
}

fn install_apt_packages() -> Result<()> {
    let missing_main: Vec<&str> = MAIN.iter().copied().filter(|p| !installed(p)).collect();
    let missing_bpo: Vec<&str> = BACKPORTS
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing_main.is_empty() && missing_bpo.is_empty() {
        return Ok(());
    }
    step(&format!(
        "installing {}",
        [missing_bpo.clone(), missing_main.clone()]
            .concat()
            .join(" ")
    ));
    ensure_backports()?;
    ensure_arm64()?;
    crate::run(Command::new("apt-get").args(["update", "-q"]))?;
    if !missing_bpo.is_empty() {
        crate::run(
            apt_install()
                .args(["-t", "bookworm-backports"])
                .args(&missing_bpo),
        )?;
    }
    if !missing_main.is_empty() {
        without_service_starts(|| crate::run(apt_install().args(&missing_main)))?;
        keep_services_off();
    }
    Ok(())
}

/// Runs `f` with a policy-rc.d that forbids starting services (exit 101,
/// honoured by invoke-rc.d and deb-systemd-invoke), unless the machine has
/// its own policy.
fn without_service_starts(f: impl FnOnce() -> Result<()>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if Path::new(POLICY_RC_D).exists() {
        return f();
    }
    std::fs::write(
        POLICY_RC_D,
        "#!/bin/sh\n# kiln xtask: no service starts while installing\nexit 101\n",
    )
    .context("writing policy-rc.d")?;
    std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))?;
    let result = f();
    let removed = std::fs::remove_file(POLICY_RC_D).context("removing policy-rc.d");
    result.and(removed)
}

/// Disables and masks the services in [`NO_SERVICE`] where systemd is the
/// service manager, so they do not start at the next boot either.
fn keep_services_off() {
    if !Path::new("/bin/systemctl").exists() {
        return;
    }
    for unit in NO_SERVICE {
        for verb in ["disable", "mask"] {
            let mut cmd = Command::new("systemctl");
            cmd.args([verb, unit]);
            if let Err(e) = crate::run(&mut cmd) {
                eprintln!("warning: {e}");
            }
        }
    }
}

fn apt_install() -> Command {
    let mut c = Command::new("apt-get");
    c.args(["install", "-y", "-q", "--no-install-recommends"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    c
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Adds bookworm-backports, derived from the machine's own Debian source so
/// that no mirror host is written down here.
fn ensure_backports() -> Result<()> {
    if Path::new(BACKPORTS_SOURCES).exists() {
        return Ok(());
    }
    let base = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").context(
        "reading /etc/apt/sources.list.d/debian.sources (a Debian 12 machine is expected)",
    )?;
    let first = base.split("\n\n").next().unwrap_or_default();
    let stanza: String = first
        .lines()
        .map(|l| {
            if l.starts_with("Suites:") {
                "Suites: bookworm-backports"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(BACKPORTS_SOURCES, stanza + "\n").context("writing the backports source")
}

fn ensure_arm64() -> Result<()> {
    let out = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()?;
    if !String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l == "arm64")
    {
        crate::run(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
    }
    Ok(())
}
