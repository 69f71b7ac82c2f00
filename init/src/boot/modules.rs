//! Kernel modules: the image's always-load list, then coldplug, which loads
//! the driver for every device the kernel has found (`modalias` matched
//! against `modules.alias`), so the same image boots on any supported server.

use std::path::{Path, PathBuf};

use kiln_kmod::{KernelLoader, Kmod, ModuleIndex};
use tracing::{info, warn};

use super::{Boot, Error};

/// The image builder's always-load list, one module name per line.
const LOAD_LIST: &str = "/etc/kiln/modules.load";
/// Coldplug repeats while loading drivers makes new devices appear (a bus
/// driver reveals the devices behind it); this bounds the rounds.
const COLDPLUG_ROUNDS: usize = 5;

pub(super) fn load(boot: &mut Boot) -> Result<(), Error> {
    let release = nix::sys::utsname::uname()
        .map_err(Error::sys("uname"))?
        .release()
        .to_string_lossy()
        .into_owned();
    let dir = PathBuf::from("/lib/modules").join(&release);
    let index = ModuleIndex::load(&dir)?;
    let mut kmod = Kmod::new(index, KernelLoader);

    let mut names: Vec<String> = std::fs::read_to_string(LOAD_LIST)
        .map_err(Error::io("read", LOAD_LIST))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    // `kiln.modules=a,b` adds modules for hardware the image does not know.
    if let Some(extra) = boot.cmdline.get("kiln.modules") {
        names.extend(extra.split(',').filter(|s| !s.is_empty()).map(String::from));
    }
    for name in &names {
        if let Err(e) = kmod.load(name) {
            warn!(module = %name, "cannot load module: {e}");
        }
    }
    let report = kmod.coldplug_until_stable(Path::new("/sys"), COLDPLUG_ROUNDS);
    for (module, reason) in &report.failed {
        warn!(module = %module, "coldplug: cannot load: {reason}");
    }
    info!(
        kernel = %release,
        listed = names.len(),
        devices = report.devices,
        failed = report.failed.len(),
        "modules loaded: loaded=[{}]",
        report.loaded.join(" ")
    );
    Ok(())
}
