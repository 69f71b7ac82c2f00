//! `modprobe`: the kernel's own module requests. When a driver needs another
//! module (a filesystem, a crypto algorithm, a netfilter table) the kernel
//! runs `/sbin/modprobe -q -- <name or alias>`; Kiln's root image points that
//! path at this binary, so those requests work without kmod's tools.

use std::path::Path;
use std::process::ExitCode;

use kiln_kmod::{KernelLoader, Kmod, ModuleIndex};

pub fn main(args: impl Iterator<Item = String>) -> ExitCode {
    let mut quiet = false;
    let mut names = Vec::new();
    let mut options_done = false;
    for a in args {
        match a.as_str() {
            "--" if !options_done => options_done = true,
            "-q" | "--quiet" if !options_done => quiet = true,
            "-h" | "--help" if !options_done => {
                println!("usage: modprobe [-q] [--] MODULE|ALIAS…\nloads modules and their dependencies from /lib/modules/$(uname -r)");
                return ExitCode::SUCCESS;
            }
            s if s.starts_with('-') && !options_done => {
                eprintln!("modprobe: unsupported option {s}");
                return ExitCode::from(2);
            }
            s => names.push(s.to_string()),
        }
    }
    if names.is_empty() {
        eprintln!("modprobe: no module named; see --help");
        return ExitCode::from(2);
    }
    let release = match nix::sys::utsname::uname() {
        Ok(u) => u.release().to_string_lossy().into_owned(),
        Err(e) => {
            eprintln!("modprobe: uname: {e}");
            return ExitCode::FAILURE;
        }
    };
    let index = match ModuleIndex::load(&Path::new("/lib/modules").join(release)) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("modprobe: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut kmod = Kmod::new(index, KernelLoader);
    let mut failed = false;
    for name in names {
        // A request may name a module or an alias ("fs-vfat", "crypto-crc32c").
        let candidates = if kmod.index().contains(&name) {
            vec![name.clone()]
        } else {
            kmod.index().match_alias(&name)
        };
        if candidates.is_empty() {
            failed = true;
            if !quiet {
                eprintln!("modprobe: module {name} not found");
            }
        }
        for module in candidates {
            if let Err(e) = kmod.load(&module) {
                failed = true;
                if !quiet {
                    eprintln!("modprobe: {module}: {e}");
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
