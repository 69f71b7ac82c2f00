//! Durable file writes: every state file is written to a temporary name,
//! fsynced, renamed over the old one, and the directory fsynced, so a crash
//! leaves either the old or the new content, never a torn file. Also the
//! disk usage of a tree (ImageFsInfo, a container's writable layer).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes temporary names unique within the process (concurrent writers of
/// one file each get their own).
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `data` to `path` atomically and durably.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = parent(path)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = File::create(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    drop(file);
    rename_durable(&tmp, path)
}

/// Renames `from` to `to` and fsyncs the directory of `to`.
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_dir(parent(to)?)
}

/// Fsyncs a directory, making the names in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> io::Result<&Path> {
    path.parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))
}

/// Allocated bytes and inodes under `dir` (itself not counted); hard-linked
/// files count once. Entries removed while walking are skipped; the error
/// names the directory that could not be read.
pub fn disk_usage(dir: &Path) -> Result<(u64, u64), (PathBuf, io::Error)> {
    let mut seen = HashSet::new();
    let mut usage = (0, 0);
    walk(dir, &mut seen, &mut usage)?;
    Ok(usage)
}

fn walk(
    dir: &Path,
    seen: &mut HashSet<(u64, u64)>,
    usage: &mut (u64, u64),
) -> Result<(), (PathBuf, io::Error)> {
    let err = |e| (dir.to_path_buf(), e);
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    for e in entries {
        let e = e.map_err(err)?;
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        if seen.insert((m.dev(), m.ino())) {
            usage.0 += m.blocks() * 512;
            usage.1 += 1;
        }
        if m.is_dir() {
            walk(&e.path(), seen, usage)?;
        }
    }
    Ok(())
}
