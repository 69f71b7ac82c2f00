//! Garbage collection (blobs and snapshots no image record names, partial
//! downloads untouched for a day) and the store's usage for ImageFsInfo.

use std::collections::HashSet;
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
            let (bytes, inodes) = crate::fsutil::disk_usage(store.root())
                .map_err(|(path, source)| StoreError::Walk { path, source })?;
            Ok(Usage { bytes, inodes })
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}
