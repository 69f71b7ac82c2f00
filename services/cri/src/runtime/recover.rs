//! Start-up: sandboxes come back from disk. A directory without its record
//! is a creation that crashed (torn down now); a ready sandbox whose
//! namespaces are gone (the machine rebooted) becomes NOTREADY and keeps its
//! CNI attachment for the DEL that kubelet's StopPodSandbox will cause;
//! namespaces without a sandbox are unmounted.

use std::path::Path;
use std::sync::Arc;

use super::record::{self, State};
use super::sandbox::{name_key, teardown, OnDelError};
use super::{netns, Runtime, RuntimeError, Sandbox};

pub(super) async fn recover(rt: &Arc<Runtime>) -> Result<(), RuntimeError> {
    let sandboxes = rt.sandboxes_dir();
    let ns_root = rt.ns_root();
    for dir in [&sandboxes, &ns_root] {
        std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Io {
            path: dir.clone(),
            source,
        })?;
    }
    for id in dir_names(&sandboxes)? {
        let dir = sandboxes.join(&id);
        let ns_dir = ns_root.join(&id);
        if !dir.join(record::RECORD).exists() {
            tracing::warn!(sandbox = %id, "pod sandbox creation did not finish; tearing down");
            teardown(rt.cni(), &id, &dir, &ns_dir, OnDelError::Warn).await?;
            std::fs::remove_dir_all(&dir).map_err(|source| RuntimeError::Io {
                path: dir.clone(),
                source,
            })?;
            continue;
        }
        let loaded = record::load(&dir).and_then(|rec| {
            Ok((
                rec,
                record::load_config(&dir)?,
                record::load_attachment(&dir)?,
            ))
        });
        let (mut rec, config, attachment) = match loaded {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(sandbox = %id, error = %e, "pod sandbox state unreadable; left on disk");
                continue;
            }
        };
        if rec.state == State::Ready && !rec.host_network && !ns_dir.join("net").exists() {
            tracing::warn!(sandbox = %id, "pod sandbox lost its namespaces (reboot?); now NOTREADY");
            rec.state = State::NotReady;
            rec.ips.clear();
            record::save(&dir, &rec)?;
        }
        let mut index = rt.index();
        index.names.insert(name_key(&config), id.clone());
        index.by_id.insert(
            id,
            Arc::new(tokio::sync::Mutex::new(Sandbox {
                record: rec,
                config,
                attachment,
                dir,
                ns_dir,
            })),
        );
    }
    for id in dir_names(&ns_root)? {
        if !rt.index().by_id.contains_key(&id) {
            tracing::warn!(sandbox = %id, "namespaces without a sandbox; unmounting");
            netns::remove(&ns_root.join(&id))?;
        }
    }
    let count = rt.index().by_id.len();
    tracing::info!(sandboxes = count, "runtime state recovered");
    Ok(())
}

fn dir_names(dir: &Path) -> Result<Vec<String>, RuntimeError> {
    let io = |source| RuntimeError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if let Some(name) = entry.file_name().to_str() {
            if !name.starts_with('.') {
                names.push(name.to_string());
            }
        }
    }
    Ok(names)
}
