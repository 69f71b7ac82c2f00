//! A pod's namespaces without a holder process: each is created by a
//! short-lived thread that `unshare`s, then kept alive by bind-mounting the
//! thread's `/proc/thread-self/ns/<kind>` onto a file under the runtime's
//! state directory. Containers join them by path; removing the pod
//! unmounts them and the kernel frees the namespace with its last user.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("unshare({kinds}): {source}")]
    Unshare { kinds: String, source: nix::Error },
    #[error("sethostname({hostname}): {source}")]
    Hostname {
        hostname: String,
        source: nix::Error,
    },
    #[error("namespace file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bind mount of the {kind} namespace on {path}: {source}")]
    Mount {
        kind: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("unmount {path}: {source}")]
    Unmount { path: PathBuf, source: nix::Error },
    #[error("namespace thread panicked")]
    Thread,
}

/// Which namespaces a pod gets of its own (the others are the host's).
#[derive(Debug, Clone, Copy)]
pub struct Kinds {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
}

impl Kinds {
    fn list(self) -> Vec<(&'static str, CloneFlags)> {
        [
            (self.net, "net", CloneFlags::CLONE_NEWNET),
            (self.ipc, "ipc", CloneFlags::CLONE_NEWIPC),
            (self.uts, "uts", CloneFlags::CLONE_NEWUTS),
        ]
        .into_iter()
        .filter(|(on, ..)| *on)
        .map(|(_, name, flag)| (name, flag))
        .collect()
    }
}

/// Creates the namespaces in `dir` (`dir/net`, `dir/ipc`, `dir/uts`), setting
/// the hostname in a new UTS namespace. Blocking: call it off the async
/// runtime. On error nothing stays mounted.
pub fn create(dir: &Path, kinds: Kinds, hostname: Option<String>) -> Result<(), NetnsError> {
    let list = kinds.list();
    if list.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|source| NetnsError::File {
        path: dir.to_path_buf(),
        source,
    })?;
    let dir = dir.to_path_buf();
    // A fresh thread, so that the daemon's own threads never change
    // namespace; the thread's namespaces outlive it through the mounts.
    let result = std::thread::spawn({
        let dir = dir.clone();
        move || enter_and_bind(&dir, &list, hostname)
    })
    .join()
    .map_err(|_| NetnsError::Thread)?;
    if result.is_err() {
        let _ = remove(&dir);
    }
    result
}

fn enter_and_bind(
    dir: &Path,
    list: &[(&'static str, CloneFlags)],
    hostname: Option<String>,
) -> Result<(), NetnsError> {
    let flags = list
        .iter()
        .fold(CloneFlags::empty(), |acc, (_, flag)| acc | *flag);
    unshare(flags).map_err(|source| NetnsError::Unshare {
        kinds: list.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(","),
        source,
    })?;
    if let Some(hostname) = hostname.filter(|_| flags.contains(CloneFlags::CLONE_NEWUTS)) {
        nix::unistd::sethostname(&hostname)
            .map_err(|source| NetnsError::Hostname { hostname, source })?;
    }
    for (kind, _) in list {
        let path = dir.join(kind);
        std::fs::File::create(&path).map_err(|source| NetnsError::File {
            path: path.clone(),
            source,
        })?;
        let from = format!("/proc/thread-self/ns/{kind}");
        mount(
            Some(from.as_str()),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| NetnsError::Mount { kind, path, source })?;
    }
    Ok(())
}

/// The path of one namespace in `dir`, if the pod has it.
pub fn path(dir: &Path, kind: &str) -> Option<PathBuf> {
    let p = dir.join(kind);
    p.exists().then_some(p)
}

/// Unmounts and deletes the namespaces in `dir`, and `dir`. Idempotent.
pub fn remove(dir: &Path) -> Result<(), NetnsError> {
    for kind in ["net", "ipc", "uts"] {
        let path = dir.join(kind);
        match umount2(&path, MntFlags::MNT_DETACH) {
            // EINVAL: the file is there but not a mount point (a crash
            // between create and mount); ENOENT: already gone.
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(source) => return Err(NetnsError::Unmount { path, source }),
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(NetnsError::File { path, source }),
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::File {
            path: dir.to_path_buf(),
            source,
        }),
    }
}
