//! `kiln`: the one binary on a Kiln node. Every on-node program is a
//! personality of it, picked by argv[0] (like busybox) or by the first
//! argument: `kiln <personality> …`. One binary keeps the image small.
//! As PID 1 it is always the init personality.

mod modprobe;

use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "\
usage: kiln <personality> [args…]   (or run it under a personality's name)

personalities:
  init      PID 1: boots the node and supervises its services (only as PID 1)
  hotplug   service: loads drivers for devices added after boot
  netd      service: host networking (links, addresses, routes, DHCPv4, DNS)
  apid      service: the machine API (gRPC over TLS on TCP 50000)
  timed     service: time sync (SNTP client; steps, slews, writes the RTC)
  cri       service: the CRI runtime on /run/kiln/cri.sock
  cri-shim  started by cri: holds one container (not run by hand)
  modprobe  the kernel's module loader helper (/sbin/modprobe)
  kiln-bridge, kiln-host-local, kiln-loopback, kiln-portmap
            CNI plugins (/opt/cni/bin/ links to this binary)
";

fn main() -> ExitCode {
    if std::process::id() == 1 {
        kiln_init::run();
    }
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    let name = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let personality = if name == "kiln" {
        args.next()
    } else {
        Some(name)
    };
    match personality.as_deref() {
        Some("init") => {
            eprintln!(
                "kiln init: must run as PID 1 (it mounts filesystems and powers the machine off)"
            );
            ExitCode::from(2)
        }
        Some("hotplug") => service(kiln_hotplug::run),
        Some("netd") => service(kiln_netd::run),
        Some("apid") => service(kiln_apid::run),
        Some("timed") => service(kiln_timed::run),
        Some("cri") => cri(args),
        Some("cri-shim") => {
            let rest: Vec<String> = args.collect();
            ExitCode::from(kiln_cri::runtime::shim::main(&rest).clamp(0, 255) as u8)
        }
        Some("modprobe") => modprobe::main(args),
        // The CNI plugins read their own argv (name, or `kiln <plugin>`).
        Some(p) if kiln_cni::Plugin::from_name(p).is_some() => kiln_cni::cli::main(),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("kiln: unknown personality {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `kiln cri [--socket P] [--root P] [--state P] [--cni-bin-dir P] [--cni-conf-dir P] [--insecure-registry H]…`.
fn cri(args: impl Iterator<Item = String>) -> ExitCode {
    use argh::FromArgs as _;
    let rest: Vec<String> = args.collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match kiln_cri::Args::from_args(&["kiln cri"], &rest) {
        Ok(parsed) => service(move || kiln_cri::run(parsed)),
        Err(early) => {
            let ok = early.status.is_ok();
            if ok {
                print!("{}", early.output);
                ExitCode::SUCCESS
            } else {
                eprint!("{}", early.output);
                ExitCode::from(2)
            }
        }
    }
}

/// Runs a service personality: logs to stdout (the supervisor captures it),
/// exit status 1 with the reason if it stops.
fn service<E: std::fmt::Display>(run: impl FnOnce() -> Result<(), E>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
