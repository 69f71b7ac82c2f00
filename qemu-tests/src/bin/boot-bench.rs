//! Boot timing benchmark: boots each image the way a server would and
//! splits the time into firmware + loader, kernel → PID 1, and PID 1 → all
//! services ready, beside the floor: the same kernel with an initramfs whose
//! /init only mounts /proc and powers off. Prints a markdown table.
//!
//! `cargo xtask bench-boot` builds everything and runs this; by hand:
//! `boot-bench <out dir> <floor-init x86_64> <floor-init aarch64> [runs]`.
//!
//! Kernel start is PID 1's arrival on the console minus its own
//! CLOCK_BOOTTIME stamp (under TCG the guest clock follows the host's).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_image::cpio::{Archive, Data};
use kiln_qemu_tests::{prepare_disk, Arch, Boot, Machine, MachineConfig};
use regex::Regex;

const LIMIT: Duration = Duration::from_secs(300);

/// Makes the machine for one boot of a case.
type Case<'a> = Box<dyn Fn() -> MachineConfig + 'a>;

struct Sample {
    firmware: f64,
    kernel: f64,
    pid1: Option<f64>,
    total: f64,
    /// Resident memory of PID 1 at "services ready", KiB.
    rss: Option<f64>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: boot-bench <out dir> <floor-init x86_64> <floor-init aarch64> [runs]");
        std::process::exit(2);
    }
    let out = PathBuf::from(&args[1]);
    let floors = [PathBuf::from(&args[2]), PathBuf::from(&args[3])];
    let runs: usize = args.get(4).and_then(|r| r.parse().ok()).unwrap_or(3);
    let work = tempfile::tempdir().expect("temp dir");

    println!("| arch | boot | firmware + loader (s) | kernel → PID 1 (s) | PID 1 → services ready (s) | QEMU start → ready (s) | PID 1 RSS (KiB) |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (arch, floor) in [Arch::X86_64, Arch::Aarch64].into_iter().zip(floors) {
        let dir = out.join(arch.name());
        let cmdline = std::fs::read_to_string(dir.join("cmdline"))
            .expect("cmdline")
            .trim()
            .to_string();
        let floor_img = work.path().join(format!("floor-{}.img", arch.name()));
        write_floor_initramfs(&floor, &floor_img);
        let disk = work.path().join("disk.raw");
        let cases: Vec<(&str, Case)> = vec![
            (
                "UEFI disk (systemd-boot)",
                Box::new(|| {
                    prepare_disk(
                        &dir.join(format!("kiln-{}.raw", arch.name())),
                        &disk,
                        2 << 30,
                    )
                    .expect("disk");
                    MachineConfig::new(arch, Boot::Uefi).disk(&disk)
                }),
            ),
            (
                "PXE-style direct",
                Box::new(|| {
                    MachineConfig::new(
                        arch,
                        Boot::Direct {
                            kernel: dir.join("vmlinuz"),
                            initrd: Some(dir.join("initramfs.img")),
                            cmdline: cmdline.clone(),
                        },
                    )
                }),
            ),
            (
                "floor: same kernel, trivial /init",
                Box::new(|| {
                    MachineConfig::new(
                        arch,
                        Boot::Direct {
                            kernel: dir.join("vmlinuz"),
                            initrd: Some(floor_img.clone()),
                            cmdline: cmdline.clone(),
                        },
                    )
                }),
            ),
        ];
        for (name, config) in cases {
            let floor_case = name.starts_with("floor");
            let samples: Vec<Sample> = (0..runs).map(|_| measure(config(), floor_case)).collect();
            let med = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
            let or_dash = |f: &dyn Fn(&Sample) -> f64, digits: usize| {
                if floor_case {
                    "—".to_string()
                } else {
                    format!("{:.*}", digits, med(f))
                }
            };
            println!(
                "| {} | {name} | {:.2} | {:.2} | {} | {:.2} | {} |",
                arch.name(),
                med(&|s| s.firmware),
                med(&|s| s.kernel),
                or_dash(&|s| s.pid1.unwrap_or(0.0), 2),
                med(&|s| s.total),
                or_dash(&|s| s.rss.unwrap_or(0.0), 0),
            );
        }
    }
    println!("\nmedians of {runs} boots each; TCG, 2 vCPUs, 1 GiB");
}

fn measure(config: MachineConfig, floor: bool) -> Sample {
    let mut m = Machine::launch(config).expect("launch QEMU");
    let start = if floor {
        r"floor: init reached boot_ms=(\d+)"
    } else {
        r"PID 1 starting boot_ms=(\d+)"
    };
    let first = m
        .wait_for(&Regex::new(start).unwrap(), LIMIT)
        .expect("PID 1 start");
    let boot_ms: f64 = first.captures[1].as_deref().unwrap().parse().unwrap();
    let kernel = boot_ms / 1000.0;
    let firmware = (first.at.as_secs_f64() - kernel).max(0.0);
    if floor {
        let _ = m.wait_exit(LIMIT);
        return Sample {
            firmware,
            kernel,
            pid1: None,
            total: first.at.as_secs_f64(),
            rss: None,
        };
    }
    let ready = m
        .wait_for(
            &Regex::new(r"services ready: .* boot_ms=(\d+) pid1_rss_kib=(\d+)").unwrap(),
            LIMIT,
        )
        .expect("services ready");
    let num = |i: usize| -> f64 {
        ready.captures[i]
            .as_deref()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0.0)
    };
    Sample {
        firmware,
        kernel,
        pid1: Some((num(1) - boot_ms) / 1000.0),
        total: ready.at.as_secs_f64(),
        rss: Some(num(2)),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The floor's initramfs: the trivial /init and a console node, zstd like Kiln's.
fn write_floor_initramfs(init: &Path, out: &Path) {
    let mut a = Archive::default();
    a.dir("dev", 0o755);
    a.dir("proc", 0o755);
    a.char_device("dev/console", 0o600, 5, 1);
    a.file("init", 0o755, Data::Path(init.to_path_buf()));
    let f = std::fs::File::create(out).expect("floor initramfs");
    let mut enc = zstd::stream::write::Encoder::new(f, 10).expect("zstd");
    a.write(1_700_000_000, &mut enc).expect("cpio");
    enc.finish().expect("zstd");
}
