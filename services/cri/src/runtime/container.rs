//! The container lifecycle. CreateContainer prepares everything on disk
//! (`bundle`: `<root>/containers/<id>/` with the record, the request and the
//! overlay upper/work dirs; `<state>/containers/<id>/` with the OCI
//! `config.json` and the rootfs overlay) and StartContainer runs a
//! shim (`shim`) that creates and starts it with libcontainer. The state
//! is read from what the shim records, never kept only in memory: CREATED
//! (no `started.json`), RUNNING (started, the shim alive), EXITED
//! (`exit.json`, or a shim that died without one).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::proto::v1::{ContainerConfig, ContainerState};

use super::bundle::{prepare, unprepare};
use super::shim::files::{self, Exited, Started};
use super::{new_id, now_ns, spec, Runtime, RuntimeError};

/// What kiln-cri keeps about a container besides kubelet's config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    /// The image ID (config digest) and the name kubelet asked for.
    pub image_id: String,
    pub image: String,
    pub created_at: i64,
    /// Absolute, or empty when kubelet asked for no log.
    pub log_path: String,
    /// The image's StopSignal, sent before the SIGKILL of stop's timeout.
    #[serde(default = "super::stop_signal::default")]
    pub stop_signal: i32,
}

pub const RECORD: &str = "container.json";
pub(super) const CONFIG: &str = "config.pb";

/// A container's state as observed now.
#[derive(Debug, Clone)]
pub struct Observed {
    pub state: ContainerState,
    pub started: Option<Started>,
    pub exited: Option<Exited>,
    pub reason: String,
    pub message: String,
}

/// A container in memory.
#[derive(Debug, Clone)]
pub struct ContainerView {
    pub record: ContainerRecord,
    pub config: ContainerConfig,
    pub observed: Observed,
}

pub(super) fn name_key(sandbox_id: &str, config: &ContainerConfig) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!("{}_{}_{}", m.name, sandbox_id, m.attempt)
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the shim's records.
pub fn observe(dir: &Path) -> Observed {
    let started: Option<Started> = files::read(dir, files::STARTED);
    let mut exited: Option<Exited> = files::read(dir, files::EXITED);
    let (state, reason, message) = match (&started, &exited) {
        (_, Some(e)) => (
            ContainerState::ContainerExited,
            if e.oom_killed {
                "OOMKilled"
            } else if e.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .to_string(),
            String::new(),
        ),
        (Some(s), None) if alive(s.shim_pid) => (
            ContainerState::ContainerRunning,
            String::new(),
            String::new(),
        ),
        (Some(s), None) => {
            // The shim died (or the machine rebooted) before recording the
            // exit: the code is unknown, reported as 255.
            exited = Some(Exited {
                exit_code: 255,
                finished_at: s.started_at,
                signal: None,
                oom_killed: false,
            });
            (
                ContainerState::ContainerExited,
                "Error".into(),
                "the shim ended without recording the container's exit".into(),
            )
        }
        (None, None) => (
            ContainerState::ContainerCreated,
            String::new(),
            String::new(),
        ),
    };
    Observed {
        state,
        started,
        exited,
        reason,
        message,
    }
}

fn alive(pid: i32) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), None).is_ok()
}

impl Runtime {
    pub(super) fn containers_dir(&self) -> PathBuf {
        self.config.root.join("containers")
    }

    pub(super) fn bundles_dir(&self) -> PathBuf {
        self.config.state.join("containers")
    }

    pub(super) fn youki_root(&self) -> PathBuf {
        self.config.state.join("libcontainer")
    }

    pub(super) fn container(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        if id.is_empty() {
            return Err(RuntimeError::Invalid {
                field: "container_id",
                problem: "must not be empty".into(),
            });
        }
        let index = self.index();
        if let Some(c) = index.containers.get(id) {
            return Ok(c.0.clone());
        }
        let mut found = index.containers.iter().filter(|(k, _)| k.starts_with(id));
        match (found.next(), found.next()) {
            (Some((_, c)), None) => Ok(c.0.clone()),
            (Some(_), Some(_)) => Err(RuntimeError::Ambiguous(id.into())),
            _ => Err(RuntimeError::ContainerNotFound(id.into())),
        }
    }

    fn view(&self, rec: &ContainerRecord) -> Option<ContainerView> {
        let index = self.index();
        let (record, config) = index.containers.get(&rec.id)?.clone();
        drop(index);
        let observed = observe(&self.containers_dir().join(&record.id));
        Some(ContainerView {
            record,
            config,
            observed,
        })
    }

    /// CreateContainer: returns the new container's ID.
    pub async fn create_container(
        self: &Arc<Self>,
        sandbox_id: &str,
        config: ContainerConfig,
    ) -> Result<String, RuntimeError> {
        let invalid = |field, problem: &str| RuntimeError::Invalid {
            field,
            problem: problem.into(),
        };
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        if name.is_empty() {
            return Err(invalid("config.metadata.name", "is required"));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(invalid("config.image.image", "is required"));
        }
        let sandbox = self.status(sandbox_id).await?;
        if sandbox.record.state != super::record::State::Ready {
            return Err(invalid("pod_sandbox_id", "the pod sandbox is not ready"));
        }
        let image = self
            .images
            .find(&image_name)
            .ok_or_else(|| RuntimeError::ImageNotFound(image_name.clone()))?;
        let run_config = self
            .images
            .run_config(&image)
            .map_err(|e| RuntimeError::Image(e.to_string()))?;
        let stop_signal = super::stop_signal::parse(run_config.stop_signal.as_deref())?;
        let sandbox_id = sandbox.record.id.clone();
        let key = name_key(&sandbox_id, &config);
        let id = new_id()?;
        {
            let mut index = self.index();
            if let Some(other) = index.container_names.get(&key) {
                return Err(RuntimeError::AlreadyExists {
                    name: key,
                    id: other.clone(),
                });
            }
            index.container_names.insert(key.clone(), id.clone());
        }
        let log_dir = &sandbox.config.log_directory;
        let log_path = if log_dir.is_empty() || config.log_path.is_empty() {
            String::new()
        } else {
            Path::new(log_dir)
                .join(&config.log_path)
                .display()
                .to_string()
        };
        let record = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox_id.clone(),
            image_id: image.id.to_string(),
            image: image_name,
            created_at: now_ns(),
            log_path,
            stop_signal,
        };
        let dir = self.containers_dir().join(&id);
        let bundle = self.bundles_dir().join(&id);
        let layers = self.images.layer_dirs(&image);
        let ns = self.ns_root().join(&sandbox_id);
        let cgroup_parent = sandbox
            .config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/kiln-cri".into());
        let oom_score_adj = self.oom_score_adj(&id, &config);
        let pod_dir = self.sandboxes_dir().join(&sandbox_id);
        let pod_files: Vec<(PathBuf, &'static str)> = super::sandbox::ETC_FILES
            .iter()
            .map(|(name, dest)| (pod_dir.join(name), *dest))
            .filter(|(source, _)| source.exists())
            .collect();
        let prepared = {
            let (config, record, dir, bundle) =
                (config.clone(), record.clone(), dir.clone(), bundle.clone());
            tokio::task::spawn_blocking(move || {
                prepare(&dir, &bundle, &layers, &record, &config, |rootfs| {
                    spec::build(&spec::Inputs {
                        config: &config,
                        image: &run_config,
                        rootfs,
                        net: super::netns::path(&ns, "net"),
                        ipc: super::netns::path(&ns, "ipc"),
                        uts: super::netns::path(&ns, "uts"),
                        cgroups_path: format!("{cgroup_parent}/{}", record.id),
                        oom_score_adj,
                        pod_files,
                    })
                })
            })
            .await
            .map_err(|e| RuntimeError::Task(e.to_string()))?
        };
        if let Err(e) = prepared {
            let _ = unprepare(&dir, &bundle);
            self.index().container_names.remove(&key);
            return Err(e);
        }
        self.index().containers.insert(id.clone(), (record, config));
        tracing::info!(container = %id, sandbox = %sandbox_id, name = %name, "container created");
        Ok(id)
    }

    /// The request's OOM score, unless it is below ours on a host that
    /// refuses that: then a warning, and the container inherits ours.
    fn oom_score_adj(&self, id: &str, config: &ContainerConfig) -> Option<i32> {
        let want = config
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
            .map(|r| r.oom_score_adj.clamp(-1000, 1000) as i32)?;
        if want < self.own_oom_score && !self.can_lower_oom {
            tracing::warn!(container = %id, want, "oom_score_adj below the runtime's is refused on this host; inherited instead");
            return Some(self.own_oom_score);
        }
        Some(want)
    }

    /// StartContainer: runs the shim and returns once the container runs.
    pub async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let rec = self.container(id)?;
        let dir = self.containers_dir().join(&rec.id);
        if observe(&dir).state != ContainerState::ContainerCreated {
            return Err(RuntimeError::Invalid {
                field: "container_id",
                problem: format!("container {} is not in the CREATED state", rec.id),
            });
        }
        let mut cmd = std::process::Command::new(&self.config.shim[0]);
        cmd.args(&self.config.shim[1..])
            .arg(&rec.id)
            .arg(&dir)
            .arg(self.bundles_dir().join(&rec.id))
            .arg(self.youki_root())
            .arg(&rec.log_path)
            .stdin(std::process::Stdio::null());
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .map_err(|e| RuntimeError::Task(e.to_string()))?
            .map_err(io(Path::new(&self.config.shim[0])))?;
        if !out.status.success() {
            return Err(RuntimeError::Start {
                id: rec.id,
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        tracing::info!(container = %rec.id, "container started");
        Ok(())
    }

    /// StopContainer: the image's StopSignal (SIGTERM unless it names
    /// another), then SIGKILL after `timeout` seconds; returns
    /// once the exit is recorded. Stopping a stopped container is fine.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), RuntimeError> {
        let rec = self.container(id)?;
        let dir = self.containers_dir().join(&rec.id);
        let o = observe(&dir);
        let Some(started) = o
            .started
            .filter(|_| o.state == ContainerState::ContainerRunning)
        else {
            return Ok(());
        };
        let pid = Pid::from_raw(started.pid);
        if timeout > 0 {
            let first = Signal::try_from(rec.stop_signal).unwrap_or(Signal::SIGTERM);
            let _ = kill(pid, first);
            if wait_exit(&dir, Duration::from_secs(timeout as u64)).await {
                return Ok(());
            }
        }
        let _ = kill(pid, Signal::SIGKILL);
        if wait_exit(&dir, Duration::from_secs(10)).await {
            Ok(())
        } else {
            Err(RuntimeError::Stop { id: rec.id })
        }
    }

    /// RemoveContainer: kills it if it runs, unmounts its rootfs and
    /// deletes its state. Removing an unknown container succeeds.
    pub async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let rec = match self.container(id) {
            Ok(r) => r,
            Err(RuntimeError::ContainerNotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop_container(&rec.id, 0).await?;
        let dir = self.containers_dir().join(&rec.id);
        let bundle = self.bundles_dir().join(&rec.id);
        tokio::task::spawn_blocking(move || unprepare(&dir, &bundle))
            .await
            .map_err(|e| RuntimeError::Task(e.to_string()))??;
        let mut index = self.index();
        if let Some((_, config)) = index.containers.remove(&rec.id) {
            index
                .container_names
                .remove(&name_key(&rec.sandbox_id, &config));
        }
        tracing::info!(container = %rec.id, "container removed");
        Ok(())
    }

    /// ContainerStatus.
    pub fn container_status(&self, id: &str) -> Result<ContainerView, RuntimeError> {
        let rec = self.container(id)?;
        self.view(&rec)
            .ok_or(RuntimeError::ContainerNotFound(id.into()))
    }

    /// Every container, observed now.
    pub fn list_containers(&self) -> Vec<ContainerView> {
        let recs: Vec<ContainerRecord> = self
            .index()
            .containers
            .values()
            .map(|c| c.0.clone())
            .collect();
        recs.iter().filter_map(|r| self.view(r)).collect()
    }

    /// The IDs of a sandbox's containers.
    pub(super) fn containers_of(&self, sandbox_id: &str) -> Vec<String> {
        self.index()
            .containers
            .values()
            .filter(|c| c.0.sandbox_id == sandbox_id)
            .map(|c| c.0.id.clone())
            .collect()
    }

    /// Loads the container records at start.
    pub(super) fn recover_containers(&self) -> Result<(), RuntimeError> {
        let root = self.containers_dir();
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        for entry in std::fs::read_dir(&root).map_err(io(&root))? {
            let dir = entry.map_err(io(&root))?.path();
            let loaded = std::fs::read(dir.join(RECORD))
                .ok()
                .and_then(|d| serde_json::from_slice::<ContainerRecord>(&d).ok())
                .zip(
                    std::fs::read(dir.join(CONFIG))
                        .ok()
                        .and_then(|d| ContainerConfig::decode(d.as_slice()).ok()),
                );
            let Some((rec, config)) = loaded else {
                tracing::warn!(dir = %dir.display(), "container creation did not finish; removing");
                let bundle = self.bundles_dir().join(dir.file_name().unwrap_or_default());
                unprepare(&dir, &bundle)?;
                continue;
            };
            let mut index = self.index();
            index
                .container_names
                .insert(name_key(&rec.sandbox_id, &config), rec.id.clone());
            index.containers.insert(rec.id.clone(), (rec, config));
        }
        Ok(())
    }
}

/// Polls for the shim's exit record.
async fn wait_exit(dir: &Path, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let o = observe(dir);
        if o.state == ContainerState::ContainerExited {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
