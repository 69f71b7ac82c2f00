//! `cargo xtask`: everything a developer or CI runs, from a fresh machine.
//!
//! - `setup`: installs what is missing (QEMU and firmware, the aarch64 cross
//!   toolchain, filesystem tools the tests use).
//! - `build`: the static `kiln` binary and the images for one or both arches.
//! - `demo`: builds the x86_64 image and boots it in QEMU on this terminal.
//! - `test`: every check CI runs.

mod setup;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use argh::FromArgs;

/// Kiln's build and test entry points.
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Setup(SetupCmd),
    Build(BuildCmd),
    Demo(DemoCmd),
    Test(TestCmd),
    BenchBoot(BenchBootCmd),
}

/// Measure boot times (firmware, kernel, PID 1, services) on both arches
/// beside the floor (same kernel, trivial /init); prints a markdown table.
#[derive(FromArgs)]
#[argh(subcommand, name = "bench-boot")]
struct BenchBootCmd {
    /// boots per case; the table shows medians (default 3)
    #[argh(option, default = "3")]
    runs: usize,
}

/// Install everything the build and the tests need that is missing (apt).
#[derive(FromArgs)]
#[argh(subcommand, name = "setup")]
struct SetupCmd {}

/// Build the static userland and the bootable images into out/<arch>/.
#[derive(FromArgs)]
#[argh(subcommand, name = "build")]
struct BuildCmd {
    /// x86_64, aarch64 or all (default: x86_64)
    #[argh(option, default = "String::from(\"x86_64\")")]
    arch: String,
}

/// Build the x86_64 image and boot it in QEMU with its console on this
/// terminal (UEFI → systemd-boot → Kiln). Quit with ctrl-c.
#[derive(FromArgs)]
#[argh(subcommand, name = "demo")]
struct DemoCmd {
    /// x86_64 (default) or aarch64
    #[argh(option, default = "String::from(\"x86_64\")")]
    arch: String,
    /// size of the virtual disk in GiB (EPHEMERAL grows to fill it; default 4)
    #[argh(option, default = "4")]
    disk_gib: u64,
}

/// Run every check CI runs: format, lints, host tests, both images, QEMU boots.
#[derive(FromArgs)]
#[argh(subcommand, name = "test")]
struct TestCmd {
    /// skip the QEMU boot tests (host checks only)
    #[argh(switch)]
    no_qemu: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    fn parse_list(s: &str) -> Result<Vec<Arch>> {
        Ok(match s {
            "x86_64" => vec![Arch::X86_64],
            "aarch64" => vec![Arch::Aarch64],
            "all" => vec![Arch::X86_64, Arch::Aarch64],
            other => bail!("--arch: expected x86_64, aarch64 or all, got {other:?}"),
        })
    }
    fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
    fn triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }
}

fn main() -> Result<()> {
    let args: Args = argh::from_env();
    let root = repo_root()?;
    std::env::set_current_dir(&root)?;
    match args.cmd {
        Cmd::Setup(_) => setup::install_missing(),
        Cmd::Build(b) => {
            setup::install_missing()?;
            for arch in Arch::parse_list(&b.arch)? {
                build(&root, arch)?;
            }
            Ok(())
        }
        Cmd::Demo(d) => {
            setup::install_missing()?;
            let arch = match Arch::parse_list(&d.arch)?.as_slice() {
                [one] => *one,
                _ => bail!("--arch: the demo boots one architecture"),
            };
            build(&root, arch)?;
            demo(&root, arch, d.disk_gib)
        }
        Cmd::Test(t) => test(&root, t.no_qemu),
        Cmd::BenchBoot(b) => {
            setup::install_missing()?;
            let floors = [Arch::X86_64, Arch::Aarch64]
                .into_iter()
                .map(|arch| {
                    build(&root, arch)?;
                    build_static(&root, arch, "kiln-floor-init")
                })
                .collect::<Result<Vec<_>>>()?;
            step("booting (TCG)");
            run(host_tool(&["-p", "kiln-qemu-tests", "--bin", "boot-bench"])
                .arg(root.join("out"))
                .args(&floors)
                .arg(b.runs.to_string()))
        }
    }
}

fn repo_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}

/// Runs a command, echoing it, and fails with its exit status.
fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", render(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", render(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", render(cmd));
    }
    Ok(())
}

fn render(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn step(title: &str) {
    eprintln!("\n==> {title}");
}

/// Builds the static `kiln` binary for `arch` with Debian's toolchain (it
/// carries std for both arches; rustup cannot add targets here) and then the
/// images with `kiln-image`.
fn build(root: &Path, arch: Arch) -> Result<()> {
    step(&format!("building the kiln userland for {}", arch.name()));
    let binary = build_static(root, arch, "kiln")?;

    step(&format!("building the {} image", arch.name()));
    let out = root.join("out").join(arch.name());
    run(host_tool(&["-p", "kiln-image"])
        .args([
            "build",
            "--arch",
            arch.name(),
            "--spec",
            "configs/image.toml",
        ])
        .arg("--kiln-binary")
        .arg(&binary)
        .arg("--out")
        .arg(&out))?;
    eprintln!("image ready in {}", out.display());
    Ok(())
}

/// `cargo run` of a host-side tool from this workspace; its arguments follow.
fn host_tool(package: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.args(["run", "--quiet", "--locked"])
        .args(package)
        .arg("--");
    c
}

/// Builds a static binary of `package` for `arch` and returns its path.
fn build_static(root: &Path, arch: Arch, package: &str) -> Result<PathBuf> {
    // Node builds use another compiler than host builds: keep them apart.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("node");
    run(Command::new("/usr/bin/cargo")
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            package,
            "--target",
            arch.triple(),
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC", "/usr/bin/rustc")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        ))?;
    Ok(target_dir.join(arch.triple()).join("release").join(package))
}

/// Boots the freshly built disk image in QEMU with the console attached,
/// using the test harness's command line (UEFI → systemd-boot → Kiln).
fn demo(root: &Path, arch: Arch, disk_gib: u64) -> Result<()> {
    step("booting in QEMU (TCG; about 15 s to services ready). Quit: ctrl-c");
    let out = root.join("out").join(arch.name());
    let work = root.join("target/demo").join(arch.name());
    std::fs::create_dir_all(&work)?;
    let disk = work.join("disk.raw");
    let harness_arch = match arch {
        Arch::X86_64 => kiln_qemu_tests::Arch::X86_64,
        Arch::Aarch64 => kiln_qemu_tests::Arch::Aarch64,
    };
    kiln_qemu_tests::prepare_disk(
        &out.join(format!("kiln-{}.raw", arch.name())),
        &disk,
        disk_gib << 30,
    )?;
    let config =
        kiln_qemu_tests::MachineConfig::new(harness_arch, kiln_qemu_tests::Boot::Uefi).disk(&disk);
    run(&mut kiln_qemu_tests::qemu_command(&config, &work)?)
}

/// Everything CI runs, in order of cost: cheap checks first.
fn test(root: &Path, no_qemu: bool) -> Result<()> {
    setup::install_missing()?;
    step("format");
    run(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;
    step("lints");
    run(Command::new("cargo").args([
        "clippy",
        "--locked",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("host tests");
    let mut totals = Totals::default();
    run_tests(
        &mut totals,
        Command::new("cargo").args([
            "test",
            "--locked",
            "--workspace",
            "--exclude",
            "kiln-qemu-tests",
        ]),
    )?;
    step("fuzzing the machine config parser");
    fuzz_config_parser(root)?;
    if no_qemu {
        return totals.finish();
    }
    for arch in [Arch::X86_64, Arch::Aarch64] {
        build(root, arch)?;
    }
    step("QEMU boot tests");
    run_tests(
        &mut totals,
        Command::new("cargo")
            .args([
                "test",
                "--locked",
                "-p",
                "kiln-qemu-tests",
                "--",
                "--test-threads=1",
            ])
            .env("KILN_OUT_DIR", root.join("out")),
    )?;
    totals.finish()
}

/// How long CI fuzzes the machine config parser (the corpus lives beside
/// the build cache, so later runs on the same machine start from it).
const FUZZ_SECONDS: u32 = 60;

/// Runs the config parser's fuzz target for a bounded time. cargo-fuzz
/// wants nightly flags; stable rustc accepts them under RUSTC_BOOTSTRAP, so
/// no second toolchain is needed. A crash fails the run with libFuzzer's
/// reproducer path.
fn fuzz_config_parser(root: &Path) -> Result<()> {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("fuzz");
    let corpus = target_dir.join("corpus-parse");
    std::fs::create_dir_all(&corpus)?;
    run(Command::new(env!("CARGO"))
        .current_dir("api/config")
        .args([
            "fuzz",
            "run",
            "parse",
            "--sanitizer",
            "none",
            "--target-dir",
        ])
        .arg(&target_dir)
        .arg(&corpus)
        .args(["--", &format!("-max_total_time={FUZZ_SECONDS}")])
        .env("RUSTC_BOOTSTRAP", "1"))
}

/// Test counts summed over every `cargo test` run, from libtest's
/// `test result:` lines.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
}

impl Totals {
    /// Prints the overall count as the run's last line.
    fn finish(&self) -> Result<()> {
        println!("\ntests: {} passed, {} failed", self.passed, self.failed);
        Ok(())
    }
}

/// Runs `cargo test …`, echoing its output and adding up its results.
fn run_tests(totals: &mut Totals, cmd: &mut Command) -> Result<()> {
    use std::io::BufRead;
    eprintln!("$ {}", render(cmd));
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", render(cmd)))?;
    let stdout = child.stdout.take().context("no stdout")?;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(word))
                    .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                    .unwrap_or(0)
            };
            totals.passed += count("passed");
            totals.failed += count("failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{} failed: {status}", render(cmd));
    }
    Ok(())
}
