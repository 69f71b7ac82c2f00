//! Installs what is missing on a fresh Debian 12 machine: QEMU (from
//! bookworm-backports, to match the qemu-utils the machine ships), UEFI
//! firmware, Debian's Rust toolchain with the arm64 std and cross linker, and
//! the filesystem tools tests use to check images. Idempotent and quiet when
//! everything is there.

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
    "iproute2",
    "iputils-ping",
    // netd's tests: the DHCP server (the binary only; `dnsmasq` would start
    // a system service).
    "dnsmasq-base",
    // kiln-cri's tests: a real registry (started by the tests, not as a
    // system service), skopeo to push the images they build, htpasswd for
    // the auth case, and a real static binary to pack into images.
    "docker-registry",
    "skopeo",
    "apache2-utils",
    "busybox-static",
];
const BACKPORTS_SOURCES: &str = "/etc/apt/sources.list.d/kiln-backports.sources";

pub fn install_missing() -> Result<()> {
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
        crate::run(apt_install().args(&missing_main))?;
    }
    Ok(())
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
