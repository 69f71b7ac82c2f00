//! Garbage collection (blobs and snapshots no image record names, partial
//! downloads untouched for a day) and the store's usage for ImageFsInfo.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use super::digest::Digest;
use super::{ImageStore, StoreError};

/// What a collection removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcStats {
    pub blobs: usize,
    pub snapshots: usize,
    /// Stale partial downloads.
    pub partials: usize,
}

/// How long an interrupted download is kept for resuming.
const PARTIAL_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Space the store takes on its filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

impl ImageStore {
    /// Removes every blob, snapshot and partial download no image needs.
    pub async fn gc(self: &Arc<Self>) -> Result<GcStats, StoreError> {
        let _all = self.gc_lock.write().await;
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.collect())
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// The collection itself (blocking; the caller excludes pulls).
    pub(super) fn collect(&self) -> Result<GcStats, StoreError> {
        let (blobs, snapshots) = {
            let records = self.records();
            let blobs: HashSet<Digest> = records.all().flat_map(|r| r.blobs().cloned()).collect();
            let snapshots: HashSet<Digest> = records
                .all()
                .flat_map(|r| r.chain_ids.iter().cloned())
                .collect();
            (blobs, snapshots)
        };
        let mut stats = GcStats::default();
        for d in self.content.list()? {
            if !blobs.contains(&d) {
                self.content.remove(&d)?;
                stats.blobs += 1;
            }
        }
        for s in self.snapshots.list()? {
            if !snapshots.contains(&s) {
                self.snapshots.remove(&s)?;
                stats.snapshots += 1;
            }
        }
        stats.partials = self.content.clear_ingest(PARTIAL_MAX_AGE)?;
        if stats != GcStats::default() {
            tracing::info!(
                blobs = stats.blobs,
                snapshots = stats.snapshots,
                "garbage collected"
            );
        }
        Ok(stats)
    }

    /// Bytes (allocated blocks) and inodes used under the store's root;
    /// hard-linked files count once.
    pub async fn usage(self: &Arc<Self>) -> Result<Usage, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut seen = HashSet::new();
            let mut usage = Usage {
                bytes: 0,
                inodes: 0,
            };
            walk(store.root(), &mut seen, &mut usage)?;
            Ok(usage)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>, u: &mut Usage) -> Result<(), StoreError> {
    let err = |source| StoreError::Walk {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // Removed while we walk (a collection, an unpack's rename).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    for e in entries {
        let e = e.map_err(err)?;
        let m = match e.path().symlink_metadata() {
            Ok(m) => m,
            // Removed while we walk (a collection, an unpack's rename).
            Err(_) => continue,
        };
        if seen.insert((m.dev(), m.ino())) {
            u.bytes += m.blocks() * 512;
            u.inodes += 1;
        }
        if m.is_dir() {
            walk(&e.path(), seen, u)?;
        }
    }
    Ok(())
}
