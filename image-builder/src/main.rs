//! `kiln-image`: the command-line face of the image builder.

use std::path::PathBuf;

use anyhow::Context;
use argh::FromArgs;

/// Builds Kiln's bootable images from the image spec, the pinned Debian
/// kernel and systemd-boot packages, and the static `kiln` binary. Needs no
/// root: GPT, FAT32, cpio and squashfs are written directly.
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Build(Build),
}

/// Build out/<arch>/: kiln-<arch>.raw (GPT: ESP with systemd-boot and slots
/// A/B, STATE, EPHEMERAL), the PXE set (vmlinuz, initramfs.img, cmdline,
/// boot.ipxe) and manifest.json. The same inputs give the same bytes.
#[derive(FromArgs)]
#[argh(subcommand, name = "build")]
struct Build {
    /// x86_64 or aarch64
    #[argh(option)]
    arch: String,
    /// the image spec (default: configs/image.toml)
    #[argh(option, default = "PathBuf::from(\"configs/image.toml\")")]
    spec: PathBuf,
    /// the static kiln binary for this architecture
    #[argh(option)]
    kiln_binary: PathBuf,
    /// output directory (default: out/<arch>)
    #[argh(option)]
    out: Option<PathBuf>,
    /// where the pinned packages are kept (default: /var/cache/kiln/debs);
    /// a missing one is fetched with `apt-get download`, every one is checked
    /// against the spec's sha256
    #[argh(option, default = "PathBuf::from(\"/var/cache/kiln/debs\")")]
    cache: PathBuf,
    /// timestamp for every file in the image (default: $SOURCE_DATE_EPOCH or 1700000000)
    #[argh(option)]
    epoch: Option<u32>,
    /// log details (module selection, tool runs) to stderr
    #[argh(switch, short = 'v')]
    verbose: bool,
}

fn main() -> anyhow::Result<()> {
    let Cmd::Build(b) = argh::from_env::<Args>().cmd;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(if b.verbose {
            tracing::Level::DEBUG
        } else {
            tracing::Level::WARN
        })
        .init();
    if !b.kiln_binary.is_file() {
        anyhow::bail!(
            "--kiln-binary {}: no such file (build it with `cargo xtask build`)",
            b.kiln_binary.display()
        );
    }
    let epoch = match b.epoch {
        Some(e) => e,
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => v
                .parse()
                .context("SOURCE_DATE_EPOCH: expected seconds since 1970")?,
            Err(_) => 1_700_000_000,
        },
    };
    let out = b.out.unwrap_or_else(|| PathBuf::from("out").join(&b.arch));
    let opts = kiln_image::build::Options {
        arch: b.arch,
        spec: b.spec,
        kiln_binary: b.kiln_binary,
        out: out.clone(),
        cache: b.cache,
        epoch,
    };
    let manifest = kiln_image::build::build(&opts)?;
    for f in &manifest.files {
        println!(
            "{:>10}  {}  {}",
            f.size,
            &f.sha256[..16],
            out.join(&f.name).display()
        );
    }
    Ok(())
}
