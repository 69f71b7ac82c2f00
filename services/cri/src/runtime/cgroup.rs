//! A container's cgroup files. A Kiln node runs cgroup v2 only
//! (`/sys/fs/cgroup/<path>/…`); hosts like CI's run v1, one hierarchy per
//! controller (`/sys/fs/cgroup/<controller>/<path>/…`, an empty cgroup2 at
//! `/sys/fs/cgroup/unified` does not count). `<path>` is the OCI spec's
//! `linux.cgroupsPath` (`<pod cgroup_parent or /kiln-cri>/<id>`), which
//! libcontainer's cgroupfs manager uses as is under each root.
//!
//! Files read:
//! - OOM kills: v2 `memory.events` `oom_kill`; v1 `memory.oom_control`
//!   `oom_kill` (kernel 4.13 and later).
//! - CPU time: v2 `cpu.stat` `usage_usec`; v1 `cpuacct/…/cpuacct.usage` (ns).
//! - Memory: usage v2 `memory.current`, v1 `memory.usage_in_bytes`; the
//!   limit v2 `memory.max`, v1 `memory.limit_in_bytes`; from `memory.stat`
//!   v2 `inactive_file`, `anon`, `pgfault`, `pgmajfault`, v1 the
//!   hierarchical `total_inactive_file`, `total_rss`, `total_pgfault`,
//!   `total_pgmajfault`. The working set is usage minus inactive file
//!   pages, as kubelet (cAdvisor) counts it.
//!
//! Files written by UpdateContainerResources (fields of 0 or empty are left
//! as they are): v1 `memory.limit_in_bytes`, `cpu.shares`,
//! `cpu.cfs_period_us`, `cpu.cfs_quota_us`, `cpuset.cpus`, `cpuset.mems`;
//! v2 `memory.max`, `cpu.weight` (from shares, as runc converts them),
//! `cpu.max` (`<quota> <period>`), `cpuset.cpus`, `cpuset.mems`.

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{path}: {source}")]
    Spec {
        path: PathBuf,
        source: oci_spec::OciSpecError,
    },
    #[error("{path}: linux.cgroupsPath is missing")]
    NoPath { path: PathBuf },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Which cgroup version this machine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    /// v2 when the root is the unified hierarchy itself.
    pub fn detect() -> Version {
        if Path::new(ROOT).join("cgroup.controllers").exists() {
            Version::V2
        } else {
            Version::V1
        }
    }
}

/// One container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    version: Version,
    /// `linux.cgroupsPath`, absolute.
    path: String,
}

impl Cgroup {
    pub fn new(path: &str) -> Cgroup {
        Cgroup {
            version: Version::detect(),
            path: path.trim_start_matches('/').to_string(),
        }
    }

    /// A bundle's cgroup, from its `config.json`.
    pub fn of_bundle(bundle: &Path) -> Result<Cgroup, CgroupError> {
        let file = bundle.join("config.json");
        let spec = oci_spec::runtime::Spec::load(&file).map_err(|source| CgroupError::Spec {
            path: file.clone(),
            source,
        })?;
        let path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .ok_or(CgroupError::NoPath { path: file })?;
        Ok(Cgroup::new(&path.to_string_lossy()))
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// A file of `controller` (ignored on v2, where all share one directory).
    pub fn file(&self, controller: &str, name: &str) -> PathBuf {
        match self.version {
            Version::V2 => Path::new(ROOT).join(&self.path).join(name),
            Version::V1 => Path::new(ROOT).join(controller).join(&self.path).join(name),
        }
    }

    /// How many processes the OOM killer has killed in this cgroup; `None`
    /// when the cgroup or the counter is not there.
    pub fn oom_kills(&self) -> Option<u64> {
        let file = match self.version {
            Version::V2 => self.file("memory", "memory.events"),
            Version::V1 => self.file("memory", "memory.oom_control"),
        };
        keyed(&std::fs::read_to_string(file).ok()?, "oom_kill")
    }
}

/// A cgroup's memory, in bytes (faults in counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub usage: u64,
    pub working_set: u64,
    pub rss: u64,
    /// Limit minus working set; `None` without a limit.
    pub available: Option<u64>,
    pub page_faults: u64,
    pub major_page_faults: u64,
}

/// v1's "no limit" is the page-rounded maximum; anything this large is none.
const NO_LIMIT: u64 = 1 << 62;

impl Cgroup {
    /// CPU time used by the cgroup's processes, in nanoseconds.
    pub fn cpu_usage_ns(&self) -> Option<u64> {
        match self.version {
            Version::V2 => {
                let text = std::fs::read_to_string(self.file("cpu", "cpu.stat")).ok()?;
                keyed(&text, "usage_usec").map(|us| us * 1000)
            }
            Version::V1 => read_u64(&self.file("cpuacct", "cpuacct.usage")),
        }
    }

    /// Memory usage; `None` when the cgroup is gone.
    pub fn memory(&self) -> Option<Memory> {
        let (usage, limit, prefix) = match self.version {
            Version::V2 => (
                read_u64(&self.file("memory", "memory.current"))?,
                read_u64(&self.file("memory", "memory.max")),
                "",
            ),
            Version::V1 => (
                read_u64(&self.file("memory", "memory.usage_in_bytes"))?,
                read_u64(&self.file("memory", "memory.limit_in_bytes")),
                "total_",
            ),
        };
        let stat = std::fs::read_to_string(self.file("memory", "memory.stat")).ok()?;
        let get = |key: &str| keyed(&stat, &format!("{prefix}{key}")).unwrap_or(0);
        let rss = match self.version {
            Version::V2 => get("anon"),
            Version::V1 => get("rss"),
        };
        let working_set = usage.saturating_sub(get("inactive_file"));
        Some(Memory {
            usage,
            working_set,
            rss,
            available: limit
                .filter(|&l| l < NO_LIMIT)
                .map(|l| l.saturating_sub(working_set)),
            page_faults: get("pgfault"),
            major_page_faults: get("pgmajfault"),
        })
    }
}

/// New limits for a running container's cgroup (CRI's meaning: 0 or empty
/// is "leave as is").
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub memory: u64,
    pub cpu_shares: u64,
    pub cpu_quota: u64,
    pub cpu_period: u64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
}

impl Cgroup {
    /// Writes `limits` into the cgroup's files; the error names the file.
    pub fn update(&self, limits: &Limits) -> Result<(), CgroupError> {
        let mut writes: Vec<(&str, &str, String)> = Vec::new();
        let l = limits;
        match self.version {
            Version::V1 => {
                if l.memory > 0 {
                    writes.push(("memory", "memory.limit_in_bytes", l.memory.to_string()));
                }
                if l.cpu_shares > 0 {
                    writes.push(("cpu", "cpu.shares", l.cpu_shares.to_string()));
                }
                if l.cpu_period > 0 {
                    writes.push(("cpu", "cpu.cfs_period_us", l.cpu_period.to_string()));
                }
                if l.cpu_quota > 0 {
                    writes.push(("cpu", "cpu.cfs_quota_us", l.cpu_quota.to_string()));
                }
            }
            Version::V2 => {
                if l.memory > 0 {
                    writes.push(("memory", "memory.max", l.memory.to_string()));
                }
                if l.cpu_shares > 0 {
                    writes.push(("cpu", "cpu.weight", weight(l.cpu_shares).to_string()));
                }
                if l.cpu_quota > 0 {
                    let period = if l.cpu_period > 0 {
                        l.cpu_period
                    } else {
                        100_000
                    };
                    writes.push(("cpu", "cpu.max", format!("{} {period}", l.cpu_quota)));
                }
            }
        }
        if !l.cpuset_cpus.is_empty() {
            writes.push(("cpuset", "cpuset.cpus", l.cpuset_cpus.clone()));
        }
        if !l.cpuset_mems.is_empty() {
            writes.push(("cpuset", "cpuset.mems", l.cpuset_mems.clone()));
        }
        for (controller, name, value) in writes {
            let path = self.file(controller, name);
            std::fs::write(&path, value).map_err(|source| CgroupError::Write { path, source })?;
        }
        Ok(())
    }
}

/// cgroup v1 CPU shares (2..262144) as a v2 weight (1..10000), the
/// conversion runc and crun use.
fn weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// A file holding one number (`max`, v2's "no limit", is `None`).
fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat keyed file (`key value` lines, as
/// `memory.events`, `memory.oom_control`, `memory.stat`, `cpu.stat`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_parse_by_key() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(text, "oom_kill"), Some(3));
        assert_eq!(keyed(text, "under_oom"), Some(0));
        assert_eq!(keyed(text, "oom"), None);
        assert_eq!(keyed("oom_kill x\n", "oom_kill"), None);
    }

    #[test]
    fn shares_map_onto_weights() {
        assert_eq!(weight(2), 1);
        assert_eq!(weight(1024), 39);
        assert_eq!(weight(262_144), 10_000);
        assert_eq!(weight(1), 1);
    }

    #[test]
    fn paths_follow_the_version() {
        let v1 = Cgroup {
            version: Version::V1,
            path: "kiln-cri/abc".into(),
        };
        assert_eq!(
            v1.file("memory", "memory.stat"),
            Path::new("/sys/fs/cgroup/memory/kiln-cri/abc/memory.stat")
        );
        let v2 = Cgroup {
            version: Version::V2,
            path: "kiln-cri/abc".into(),
        };
        assert_eq!(
            v2.file("memory", "memory.stat"),
            Path::new("/sys/fs/cgroup/kiln-cri/abc/memory.stat")
        );
    }
}
