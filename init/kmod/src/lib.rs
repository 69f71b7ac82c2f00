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
use std::path::PathBuf;

use tracing::debug;

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
    #[error("unknown module {0:?}")]
    UnknownModule(String),
    #[error("module {module}: cannot load {file}: {source}")]
    Load {
        module: String,
        file: PathBuf,
        source: LoadError,
    },
}

/// What one [`Kmod::load`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Modules inserted by this call, in order.
    pub inserted: Vec<String>,
    /// Modules that were already present (loaded before, or built in).
    pub already_present: Vec<String>,
}

/// Loads modules through a [`Loader`], remembering what is loaded.
pub struct Kmod<L: Loader> {
    index: ModuleIndex,
    loader: L,
    loaded: BTreeSet<String>,
}

impl<L: Loader> Kmod<L> {
    /// Starts with the modules listed in `/proc/modules` as loaded.
    pub fn new(index: ModuleIndex, loader: L) -> Self {
        let loaded = std::fs::read_to_string("/proc/modules")
            .map(|s| {
                s.lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
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

    /// Loads `name` after its soft pre-dependencies and dependencies, and its
    /// soft post-dependencies after it. A module the kernel already has is
    /// not an error. A soft dependency that fails is logged, not fatal.
    pub fn load(&mut self, name: &str) -> Result<LoadReport, Error> {
        let mut report = LoadReport::default();
        for step in self.index.resolve(name)? {
            if self.loaded.contains(&step.name) {
                if step.name == index::normalize(name) {
                    report.already_present.push(step.name.clone());
                }
                continue;
            }
            match self.loader.load_module(&step.path, "") {
                Ok(()) => report.inserted.push(step.name.clone()),
                Err(LoadError::AlreadyLoaded) => report.already_present.push(step.name.clone()),
                Err(source) if step.soft => {
                    debug!(module = %step.name, "soft dependency not loaded: {source}");
                    continue;
                }
                Err(source) => {
                    return Err(Error::Load {
                        module: index::normalize(name),
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
