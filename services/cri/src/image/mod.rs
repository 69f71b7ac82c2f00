//! The image side of kiln-cri: pulling images from OCI registries into a
//! content-addressed store, unpacking their layers into snapshots keyed by
//! chain ID, and keeping image records.
//!
//! Store layout under the state root (default `/var/lib/kiln/cri`):
//!
//! | path | what |
//! | --- | --- |
//! | `blobs/sha256/<hex>` | verified blobs: indexes, manifests, configs, layers |
//! | `ingest/<hex>.partial` | downloads in progress (resumed with a Range request) |
//! | `snapshots/sha256/<chain id hex>/fs` | one layer's changes, overlayfs form |
//! | `snapshots/tmp/` | unpacks in progress and snapshots being deleted |
//! | `images/<config hex>.json` | image records |
//!
//! Modules: `reference` (names), `digest`, `manifest` (documents, platform),
//! `registry` (the wire), `content` (blobs), `unpack` (layer tars),
//! `snapshot`, `record`, `pull`, `gc` (collection and usage), `locks`.

pub mod content;
pub mod digest;
mod gc;
mod locks;
pub mod manifest;
mod pull;
pub mod record;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod unpack;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use gc::{GcStats, Usage};
pub use pull::PullError;
pub use record::ImageRecord;
pub use registry::Auth;

use content::{ContentError, ContentStore};
use digest::Digest;
use record::{RecordError, Records};
use reference::ImageRef;
use snapshot::{SnapshotError, Snapshots};

/// Errors of the store outside a pull.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("store walk {path}: {source}")]
    Walk {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("background task failed: {0}")]
    Task(String),
    #[error("image config: {0}")]
    Config(String),
}

/// The image store.
pub struct ImageStore {
    root: PathBuf,
    content: ContentStore,
    snapshots: Snapshots,
    records: Mutex<Records>,
    /// One download per blob and one unpack per snapshot at a time.
    locks: locks::KeyLocks,
    /// Pulls hold it shared; collection exclusive, so it never deletes what
    /// a pull has fetched but not yet recorded.
    gc_lock: tokio::sync::RwLock<()>,
    /// Bounds parallel layer downloads.
    downloads: tokio::sync::Semaphore,
    insecure: Vec<String>,
}

impl ImageStore {
    /// Opens (creating) the store at `root` and collects what a crash left
    /// unreferenced. `insecure` registries (`host:port`) are reached over http.
    pub fn open(root: &Path, insecure: Vec<String>) -> Result<Self, StoreError> {
        let store = Self {
            root: root.to_path_buf(),
            content: ContentStore::open(root)?,
            snapshots: Snapshots::open(root)?,
            records: Mutex::new(Records::load(root)?),
            locks: locks::KeyLocks::default(),
            gc_lock: tokio::sync::RwLock::new(()),
            downloads: tokio::sync::Semaphore::new(3),
            insecure,
        };
        let stats = store.collect()?;
        tracing::info!(root = %root.display(), images = store.list().len(), removed_blobs = stats.blobs, removed_snapshots = stats.snapshots, "image store open");
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn records(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.records().all().cloned().collect()
    }

    /// Finds an image by ID (`sha256:<hex>` or `<hex>`), tag or digest
    /// reference (`busybox`, `reg/app:1`, `reg/app@sha256:…`).
    pub fn find(&self, name: &str) -> Option<ImageRecord> {
        let (id, names) = lookup_keys(name);
        self.records().find(id.as_ref(), &names).cloned()
    }

    /// The overlayfs layer directories of an image, topmost first.
    pub fn layer_dirs(&self, image: &ImageRecord) -> Vec<PathBuf> {
        image
            .chain_ids
            .iter()
            .rev()
            .map(|c| self.snapshots.fs_dir(c))
            .collect()
    }

    /// The image's default process settings (entrypoint, cmd, env, …).
    pub fn run_config(&self, image: &ImageRecord) -> Result<manifest::RunConfig, StoreError> {
        let data = self.content.read(&image.config.digest)?;
        let config = manifest::parse_config(&data, image.layers.len())
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(config.config.unwrap_or_default())
    }

    /// Removes an image (by ID or digest), or one of its tags when it has
    /// others, then collects what no image needs. Returns whether `name`
    /// named an image (removing nothing is not an error: CRI's remove is
    /// idempotent).
    pub async fn remove(self: &Arc<Self>, name: &str) -> Result<bool, StoreError> {
        let (id, names) = lookup_keys(name);
        let removed = {
            let _g = self.gc_lock.write().await;
            let mut records = self.records();
            let Some(rec) = records.find(id.as_ref(), &names).cloned() else {
                return Ok(false);
            };
            let tag = names.iter().find(|n| rec.repo_tags.contains(n));
            records.untag(&rec.id, tag.map(String::as_str))?
        };
        if removed {
            self.gc().await?;
        }
        Ok(true)
    }
}

/// What a user-given name may mean: an ID, and normalised references.
fn lookup_keys(name: &str) -> (Option<Digest>, Vec<String>) {
    let id = name
        .parse::<Digest>()
        .or_else(|_| Digest::from_hex(name))
        .ok();
    let mut names = Vec::new();
    if let Ok(r) = ImageRef::parse(name) {
        if let Some(d) = r.digest() {
            names.push(r.digest_name(d));
        } else if let Some(t) = r.tag_name() {
            names.push(t);
        }
    }
    (id, names)
}
