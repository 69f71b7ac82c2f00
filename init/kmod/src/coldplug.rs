//! Coldplug: the drivers for devices the kernel found before anyone was
//! listening for hotplug events. Every device in sysfs has a `modalias`;
//! the modules whose aliases match it are its drivers.

use std::collections::BTreeSet;
use std::path::Path;

use tracing::{debug, info, warn};

use crate::{Kmod, Loader};

/// What coldplug did, over all its rounds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ColdplugReport {
    /// Distinct modaliases seen.
    pub devices: usize,
    /// Modaliases that matched at least one module (built-in ones included).
    pub matched: usize,
    /// Modules inserted (dependencies included), in order.
    pub loaded: Vec<String>,
    /// Modules that matched (or that matching modules need) and were already
    /// present before coldplug, each once.
    pub already_present: Vec<String>,
    /// Modules that failed, with the reason.
    pub failed: Vec<(String, String)>,
}

impl ColdplugReport {
    /// Modules loaded by an earlier driver of this coldplug are not news.
    fn note_present(&mut self, module: String) {
        if !self.loaded.contains(&module) && !self.already_present.contains(&module) {
            self.already_present.push(module);
        }
    }
}

impl<L: Loader> Kmod<L> {
    /// Loads the drivers for every device under `sys/devices`, repeating
    /// while loading drivers reveals new devices (a bus driver exposes the
    /// devices behind it), at most `max_rounds` times.
    pub fn coldplug_until_stable(&mut self, sys: &Path, max_rounds: usize) -> ColdplugReport {
        let mut report = ColdplugReport::default();
        let mut seen = BTreeSet::new();
        for round in 1..=max_rounds {
            let mut aliases = BTreeSet::new();
            collect_modaliases(&sys.join("devices"), &mut aliases);
            let fresh: Vec<String> = aliases.difference(&seen).cloned().collect();
            if fresh.is_empty() {
                break;
            }
            seen.extend(fresh.iter().cloned());
            let before = report.loaded.len();
            self.coldplug_aliases(&fresh, &mut report);
            info!(
                round,
                new_devices = fresh.len(),
                inserted = report.loaded.len() - before,
                "coldplug round"
            );
        }
        report.devices = seen.len();
        report
    }

    /// One round over `sys/devices`.
    pub fn coldplug(&mut self, sys: &Path) -> ColdplugReport {
        self.coldplug_until_stable(sys, 1)
    }

    fn coldplug_aliases(&mut self, aliases: &[String], report: &mut ColdplugReport) {
        let mut wanted: Vec<String> = Vec::new();
        for alias in aliases {
            let modules = self.index.match_alias(alias);
            if modules.is_empty() {
                // A built-in driver: nothing to load.
                let builtin = self.index.match_builtin_alias(alias);
                report.matched += usize::from(!builtin.is_empty());
                for m in builtin {
                    report.note_present(m);
                }
                continue;
            }
            report.matched += 1;
            for m in modules {
                if !wanted.contains(&m) {
                    wanted.push(m);
                }
            }
        }
        for module in wanted {
            if self.is_loaded(&module) {
                report.note_present(module);
                continue;
            }
            match self.load(&module) {
                Ok(r) => {
                    report.loaded.extend(r.inserted);
                    for m in r.already_present {
                        report.note_present(m);
                    }
                }
                Err(e) => {
                    warn!(module = %module, "coldplug: cannot load: {e}");
                    report.failed.push((module, e.to_string()));
                }
            }
        }
    }
}

/// Every `modalias` file's contents below `dir`. Symlinks are not followed:
/// sysfs is full of them, and of loops.
fn collect_modaliases(dir: &Path, out: &mut BTreeSet<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            debug!(path = %dir.display(), "unreadable directory: {e}");
            return;
        }
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect_modaliases(&entry.path(), out);
        } else if kind.is_file() && entry.file_name() == "modalias" {
            match std::fs::read_to_string(entry.path()) {
                Ok(s) if !s.trim().is_empty() => {
                    out.insert(s.trim().to_string());
                }
                Ok(_) => {}
                Err(e) => debug!(path = %entry.path().display(), "unreadable modalias: {e}"),
            }
        }
    }
}
