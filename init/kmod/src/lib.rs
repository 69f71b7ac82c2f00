//! Kernel module loading for a node with no `modprobe` and no udev.
//!
//! [`ModuleIndex`] reads depmod's index files (`modules.dep`, `.alias`,
//! `.softdep`, `.builtin`); [`Kmod`] loads a module with everything it needs,
//! and [`Kmod::coldplug`] loads the driver of every device already in sysfs.
//! The system call sits behind the [`Loader`] trait so the logic is tested
//! without root.

mod coldplug;
mod index;
mod loader;

pub use coldplug::ColdplugReport;
pub use index::{ModuleFile, ModuleIndex};
pub use loader::{KernelLoader, LoadError, Loader};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

/// What can go wrong finding or loading modules.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {problem}")]
    Parse {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("unknown module {0:?}: not in modules.dep, modules.builtin or modules.alias")]
    UnknownModule(String),
    /// `modules.dep` names a dependency it has no line for.
    #[error(
        "module {module}: {needed_by} depends on {dependency}, which modules.dep does not list"
    )]
    MissingDependency {
        module: String,
        needed_by: String,
        dependency: String,
    },
    /// The kernel refused `dependency` (which is `module` itself when the
    /// module's own file failed).
    #[error("module {module}: cannot load {dependency} ({}): {source}", file.display())]
    Load {
        module: String,
        dependency: String,
        file: PathBuf,
        source: LoadError,
    },
}

/// What one [`Kmod::load`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Modules inserted by this call, in order.
    pub inserted: Vec<String>,
    /// Modules of the chain that were already present: loaded before (by
    /// this process, by someone else, or at boot) or built in.
    pub already_present: Vec<String>,
}

/// Loads modules through a [`Loader`], remembering what is loaded.
pub struct Kmod<L: Loader> {
    index: ModuleIndex,
    loader: L,
    loaded: BTreeSet<String>,
}

/// Where the kernel lists its loaded modules.
const PROC_MODULES: &str = "/proc/modules";

impl<L: Loader> Kmod<L> {
    /// Starts with the modules listed in `/proc/modules` as loaded.
    pub fn new(index: ModuleIndex, loader: L) -> Self {
        Self::with_proc_modules(index, loader, Path::new(PROC_MODULES))
    }

    /// Starts with the modules listed in `proc_modules` (the format of
    /// `/proc/modules`) as loaded; an absent or unreadable file means none
    /// (a kernel without module support has no `/proc/modules`).
    pub fn with_proc_modules(index: ModuleIndex, loader: L, proc_modules: &Path) -> Self {
        let loaded: BTreeSet<String> = match std::fs::read_to_string(proc_modules) {
            Ok(s) => s
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(index::normalize)
                .collect(),
            Err(e) => {
                debug!(path = %proc_modules.display(), "no loaded-module list: {e}");
                BTreeSet::new()
            }
        };
        Self {
            index,
            loader,
            loaded,
        }
    }

    pub fn index(&self) -> &ModuleIndex {
        &self.index
    }

    /// Whether `name` is loaded (by this process, before it, or built in).
    pub fn is_loaded(&self, name: &str) -> bool {
        let name = index::normalize(name);
        self.loaded.contains(&name) || self.index.is_builtin(&name)
    }

    /// Loads `name` (a module or an alias) after its soft pre-dependencies
    /// and dependencies, and its soft post-dependencies after it. A module
    /// the kernel already has is not an error. A soft dependency that fails
    /// is logged, not fatal; a hard one stops the load with an error naming
    /// both modules.
    pub fn load(&mut self, name: &str) -> Result<LoadReport, Error> {
        let module = index::normalize(name);
        let mut report = LoadReport::default();
        let steps = self.index.resolve(name)?;
        if steps.is_empty() {
            // Only a built-in module resolves to nothing.
            report.already_present.push(module);
            return Ok(report);
        }
        // Soft modules that failed: what needs them is not tried either.
        let mut skipped = BTreeSet::new();
        for step in steps {
            if self.loaded.contains(&step.name) {
                report.already_present.push(step.name);
                continue;
            }
            let deps = self.index.dependencies(&step.name);
            if let Some(dep) = deps.iter().find(|d| skipped.contains(*d)) {
                debug!(module = %module, softdep = %step.name, missing = %dep, "soft dependency skipped");
                skipped.insert(step.name);
                continue;
            }
            match self.loader.load_module(&step.path, "") {
                Ok(()) => {
                    debug!(module = %step.name, path = %step.path.display(), "module inserted");
                    report.inserted.push(step.name.clone());
                }
                Err(LoadError::AlreadyLoaded) => report.already_present.push(step.name.clone()),
                Err(source) if step.soft => {
                    warn!(module = %module, softdep = %step.name, "soft dependency not loaded: {source}");
                    skipped.insert(step.name);
                    continue;
                }
                Err(source) => {
                    return Err(Error::Load {
                        module,
                        dependency: step.name,
                        file: step.path,
                        source,
                    })
                }
            }
            self.loaded.insert(step.name);
        }
        Ok(report)
    }
}
