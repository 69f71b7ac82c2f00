//! PullImage: resolve the reference to the node's image manifest, fetch the
//! config and layers into the content store (each blob verified, shared by
//! concurrent pulls, resumed after a broken transfer), unpack the layers in
//! order into snapshots, and record the image.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::content::{ContentError, Ingest};
use super::digest::{chain_ids, Digest};
use super::manifest::{self, Descriptor, Document, ManifestError};
use super::record::{ImageRecord, RecordError};
use super::reference::{ImageRef, RefError};
use super::registry::{Auth, Registry, RegistryError};
use super::snapshot::{LayerJob, SnapshotError};
use super::ImageStore;

/// Attempts per blob; each after the first resumes where the last stopped.
const ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Reference(#[from] RefError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{reference}: manifest digest mismatch: expected {expected}, the registry sent content hashing to {actual}")]
    ManifestDigestMismatch {
        reference: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{reference}: {source}")]
    Manifest {
        reference: String,
        source: ManifestError,
    },
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("blob {digest}: transfer failed after {ATTEMPTS} attempts: {source}")]
    Transfer {
        digest: Digest,
        source: std::io::Error,
    },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("background task failed: {0}")]
    Task(String),
}

impl ImageStore {
    /// Pulls `reference` and returns its record.
    pub async fn pull(
        self: &Arc<Self>,
        reference: &str,
        auth: Auth,
    ) -> Result<ImageRecord, PullError> {
        let r = ImageRef::parse(reference)?;
        let _shared = self.gc_lock.read().await;
        let reg = Arc::new(Registry::new(auth, &self.insecure));
        let manifest_err = |source| PullError::Manifest {
            reference: r.to_string(),
            source,
        };

        let top = reg.manifest(r.oci(), manifest::ACCEPTED).await?;
        let top_digest = Digest::of(&top);
        if let Some(want) = r.digest() {
            check_digest(&r, want, &top_digest)?;
        }
        let (m_bytes, m_digest, index) = match manifest::parse(&top).map_err(manifest_err)? {
            Document::Image(_) => (top, top_digest.clone(), None),
            Document::Index(entries) => {
                let entry =
                    manifest::pick(&entries, &manifest::node_platform()).map_err(manifest_err)?;
                let child = reg
                    .manifest(
                        &r.at_digest(&entry.digest),
                        &[manifest::OCI_MANIFEST, manifest::DOCKER_MANIFEST],
                    )
                    .await?;
                check_digest(&r, &entry.digest, &Digest::of(&child))?;
                self.content.put(&top_digest, &top)?;
                (child, entry.digest, Some(top_digest.clone()))
            }
        };
        let Document::Image(m) = manifest::parse(&m_bytes).map_err(manifest_err)? else {
            return Err(manifest_err(ManifestError::Field {
                what: "manifest index",
                field: "manifests[].mediaType".into(),
                problem: "an index entry is itself an index".into(),
            }));
        };
        self.content.put(&m_digest, &m_bytes)?;

        self.fetch(&reg, &r, &m.config).await?;
        let config = manifest::parse_config(&self.content.read(&m.config.digest)?, m.layers.len())
            .map_err(manifest_err)?;
        let chains = chain_ids(&config.rootfs.diff_ids);

        // Downloads run in parallel; unpacking follows in layer order as
        // each download ends.
        let mut downloads = Downloads(
            m.layers
                .iter()
                .map(|layer| {
                    let (store, reg, r, layer) =
                        (self.clone(), reg.clone(), r.clone(), layer.clone());
                    tokio::spawn(async move { store.fetch(&reg, &r, &layer).await })
                })
                .collect(),
        );
        for i in 0..m.layers.len() {
            (&mut downloads.0[i])
                .await
                .map_err(|e| PullError::Task(e.to_string()))??;
            let parents: Vec<Digest> = chains[..i].iter().rev().cloned().collect();
            self.unpack(
                &chains[i],
                &config.rootfs.diff_ids[i],
                &m.layers[i],
                parents,
            )
            .await?;
        }

        let mut rec = ImageRecord {
            id: m.config.digest.clone(),
            repo_tags: r.tag_name().into_iter().collect(),
            repo_digests: vec![r.digest_name(&top_digest)],
            manifest: m_digest,
            index,
            config: strip(&m.config),
            layers: m.layers.iter().map(strip).collect(),
            chain_ids: chains,
            user: config.config.and_then(|c| c.user).filter(|u| !u.is_empty()),
            pinned: false,
        };
        let mut records = self.records();
        if let Some(old) = records.get(&rec.id) {
            for t in &old.repo_tags {
                if !rec.repo_tags.contains(t) {
                    rec.repo_tags.push(t.clone());
                }
            }
            for d in &old.repo_digests {
                if !rec.repo_digests.contains(d) {
                    rec.repo_digests.push(d.clone());
                }
            }
            rec.pinned = old.pinned;
        }
        rec.repo_tags.sort();
        rec.repo_digests.sort();
        records.put(rec.clone())?;
        tracing::info!(image = %r, id = %rec.id, "pulled");
        Ok(rec)
    }

    /// Fetches one blob into the store unless it is there; one download per
    /// blob however many pulls want it.
    async fn fetch(
        &self,
        reg: &Registry,
        r: &ImageRef,
        desc: &Descriptor,
    ) -> Result<(), PullError> {
        let lock = self.locks.get(&format!("blob {}", desc.digest));
        let _one = lock.lock().await;
        if self.content.has(&desc.digest) {
            return Ok(());
        }
        let _slot = self
            .downloads
            .acquire()
            .await
            .map_err(|e| PullError::Task(e.to_string()))?;
        let mut attempt = 1;
        loop {
            let mut ingest = self.content.ingest(&desc.digest, desc.size)?;
            match self.transfer(reg, r, desc, &mut ingest).await {
                Ok(()) => {
                    return tokio::task::spawn_blocking(move || ingest.commit())
                        .await
                        .map_err(|e| PullError::Task(e.to_string()))?
                        .map_err(Into::into);
                }
                Err(Broken::Fatal(e)) => return Err(e),
                Err(Broken::Retry(source)) if attempt >= ATTEMPTS => {
                    return Err(PullError::Transfer {
                        digest: desc.digest.clone(),
                        source,
                    })
                }
                Err(Broken::Retry(e)) => {
                    tracing::warn!(blob = %desc.digest, offset = ingest.offset(), attempt, error = %e, "blob transfer broke; resuming");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One request for the rest of a blob.
    async fn transfer(
        &self,
        reg: &Registry,
        r: &ImageRef,
        desc: &Descriptor,
        ingest: &mut Ingest,
    ) -> Result<(), Broken> {
        if ingest.offset() == desc.size {
            return Ok(());
        }
        let body = match reg.blob(r.oci(), &desc.digest, ingest.offset()).await {
            Ok(b) => b,
            // 5xx, a refused range, a dropped connection: worth another try.
            Err(e @ RegistryError::Other { .. }) => {
                return Err(Broken::Retry(std::io::Error::other(e)))
            }
            Err(e) => return Err(Broken::Fatal(e.into())),
        };
        if !body.from_offset {
            ingest.restart().map_err(|e| Broken::Fatal(e.into()))?;
        }
        let mut stream = body.stream;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(Broken::Retry)?;
            ingest.write(&chunk).map_err(|e| Broken::Fatal(e.into()))?;
        }
        Ok(())
    }

    /// Unpacks a layer into its snapshot unless it exists.
    async fn unpack(
        self: &Arc<Self>,
        chain: &Digest,
        diff_id: &Digest,
        layer: &Descriptor,
        parents: Vec<Digest>,
    ) -> Result<(), PullError> {
        let lock = self.locks.get(&format!("snapshot {chain}"));
        let _one = lock.lock().await;
        if self.snapshots.exists(chain) {
            return Ok(());
        }
        let (store, chain, diff_id, digest) = (
            self.clone(),
            chain.clone(),
            diff_id.clone(),
            layer.digest.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let blob = store.content.path(&digest);
            store.snapshots.create(&LayerJob {
                chain: &chain,
                diff_id: &diff_id,
                blob_digest: &digest,
                blob: &blob,
                parents: &parents,
            })
        })
        .await
        .map_err(|e| PullError::Task(e.to_string()))??;
        Ok(())
    }
}

/// A pull's layer downloads; those still running when the pull fails are
/// stopped (their partial files stay for a later pull to resume).
struct Downloads(Vec<tokio::task::JoinHandle<Result<(), PullError>>>);

impl Drop for Downloads {
    fn drop(&mut self) {
        for d in &self.0 {
            d.abort();
        }
    }
}

/// How a transfer broke.
enum Broken {
    /// The connection or the registry failed: resume.
    Retry(std::io::Error),
    /// The registry refused, or sent more than the descriptor's size.
    Fatal(PullError),
}

fn check_digest(r: &ImageRef, expected: &Digest, actual: &Digest) -> Result<(), PullError> {
    if expected == actual {
        return Ok(());
    }
    Err(PullError::ManifestDigestMismatch {
        reference: r.to_string(),
        expected: expected.clone(),
        actual: actual.clone(),
    })
}

fn strip(d: &Descriptor) -> Descriptor {
    Descriptor {
        platform: None,
        ..d.clone()
    }
}
