//! The Stats call's numbers, read from the kernel's files: memory
//! (/proc/meminfo), CPU time (/proc/stat), load (/proc/loadavg), disk usage
//! (statvfs of the mounted ones among /, /var, /system/state, found in
//! /proc/self/mountinfo) and each service's memory and CPU time: its
//! cgroup's `memory.current` and `cpu.stat` usage_usec (cgroup v2, all its
//! processes), else its main process's VmRSS and utime + stime. Every parse
//! error names the file and the field.

use std::path::{Path, PathBuf};

use kiln_api_proto::v1::{CpuTime, Disk, LoadAverage, Memory, ServiceStats, ServiceStatus};

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {field}: {problem}")]
    Field {
        path: PathBuf,
        field: String,
        problem: String,
    },
    #[error("statvfs {path}: {source}")]
    Statvfs { path: PathBuf, source: nix::Error },
}

fn read(path: &Path) -> Result<String, StatsError> {
    std::fs::read_to_string(path).map_err(|source| StatsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn field_error(path: &Path, field: &str, problem: impl Into<String>) -> StatsError {
    StatsError::Field {
        path: path.to_path_buf(),
        field: field.to_string(),
        problem: problem.into(),
    }
}

fn number<T: std::str::FromStr>(
    path: &Path,
    field: &str,
    text: Option<&str>,
) -> Result<T, StatsError> {
    let text = text.ok_or_else(|| field_error(path, field, "missing"))?;
    text.parse()
        .map_err(|_| field_error(path, field, format!("{text:?} is not a number")))
}

/// MemTotal and MemAvailable from `/proc/meminfo` (given in kB).
pub fn parse_meminfo(path: &Path, text: &str) -> Result<Memory, StatsError> {
    let kib = |key: &str| -> Result<u64, StatsError> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .ok_or_else(|| field_error(path, key, "missing"))?;
        let mut words = line.split_whitespace();
        let value: u64 = number(path, key, words.next())?;
        match words.next() {
            Some("kB") => Ok(value.saturating_mul(1024)),
            other => Err(field_error(
                path,
                key,
                format!("unit {other:?}, expected kB"),
            )),
        }
    };
    Ok(Memory {
        total_bytes: kib("MemTotal")?,
        available_bytes: kib("MemAvailable")?,
    })
}

/// The `cpu` and `cpuN` lines of `/proc/stat`.
pub fn parse_stat(path: &Path, text: &str) -> Result<Vec<CpuTime>, StatsError> {
    const FIELDS: [&str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    let mut cpus = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("cpu")) {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let values: Vec<&str> = words.collect();
        // user…idle exist on every kernel; later fields came with later
        // kernels and count as 0 where absent.
        let mut v = [0u64; 8];
        for (i, slot) in v.iter_mut().enumerate() {
            let field = format!("{name} {}", FIELDS[i]);
            match values.get(i) {
                Some(text) => *slot = number(path, &field, Some(text))?,
                None if i < 4 => return Err(field_error(path, &field, "missing")),
                None => {}
            }
        }
        cpus.push(CpuTime {
            name,
            user: v[0],
            nice: v[1],
            system: v[2],
            idle: v[3],
            iowait: v[4],
            irq: v[5],
            softirq: v[6],
            steal: v[7],
        });
    }
    if cpus.first().is_none_or(|c| c.name != "cpu") {
        return Err(field_error(path, "cpu", "no total line"));
    }
    Ok(cpus)
}

/// The three load averages of `/proc/loadavg`.
pub fn parse_loadavg(path: &Path, text: &str) -> Result<LoadAverage, StatsError> {
    let mut words = text.split_whitespace();
    Ok(LoadAverage {
        one: number(path, "1-minute load", words.next())?,
        five: number(path, "5-minute load", words.next())?,
        fifteen: number(path, "15-minute load", words.next())?,
    })
}

/// VmRSS of `/proc/<pid>/status`, in bytes.
pub fn parse_vmrss(path: &Path, text: &str) -> Result<u64, StatsError> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .ok_or_else(|| field_error(path, "VmRSS", "missing (a kernel thread or a zombie)"))?;
    let kib: u64 = number(path, "VmRSS", line.split_whitespace().next())?;
    Ok(kib.saturating_mul(1024))
}

/// A cgroup's `memory.current`: bytes, one number.
pub fn parse_memory_current(path: &Path, text: &str) -> Result<u64, StatsError> {
    number(path, "memory.current", Some(text.trim()))
}

/// A cgroup's `cpu.stat` usage_usec: CPU time of all its processes.
pub fn parse_cpu_stat(path: &Path, text: &str) -> Result<u64, StatsError> {
    let value = text.lines().find_map(|l| l.strip_prefix("usage_usec "));
    number(path, "usage_usec", value.map(str::trim))
}

/// A process's `/proc/PID/stat` utime + stime (fields 14 and 15, counted
/// after the parenthesised command name, which may hold spaces), in
/// microseconds.
pub fn parse_pid_cpu_usec(path: &Path, text: &str, ticks: u32) -> Result<u64, StatsError> {
    let (_, rest) = text
        .rsplit_once(')')
        .ok_or_else(|| field_error(path, "comm", "no closing parenthesis"))?;
    // `rest` starts at field 3 (state).
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = number(path, "utime", fields.next())?;
    let stime: u64 = number(path, "stime", fields.next())?;
    Ok((utime + stime).saturating_mul(1_000_000) / u64::from(ticks.max(1)))
}

/// Mount points listed in a `mountinfo` file (field 5, octal escapes such
/// as `\040` for a space undone).
pub fn parse_mount_points(path: &Path, text: &str) -> Result<Vec<PathBuf>, StatsError> {
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let field = format!("line {} mount point", i + 1);
            let raw = line
                .split(' ')
                .nth(4)
                .ok_or_else(|| field_error(path, &field, "missing"))?;
            unescape(raw)
                .map(PathBuf::from)
                .ok_or_else(|| field_error(path, &field, format!("bad escape in {raw:?}")))
        })
        .collect()
}

fn unescape(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let octal = std::str::from_utf8(bytes.get(i + 1..i + 4)?).ok()?;
            out.push(u8::from_str_radix(octal, 8).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Where the kernel's files are: `/proc` and the services' cgroups on a
/// node; tests point them elsewhere.
pub struct Sources {
    pub proc: PathBuf,
    pub cgroups: PathBuf,
    /// The mount points to report, if mounted.
    pub disks: Vec<PathBuf>,
}

impl Sources {
    pub fn memory(&self) -> Result<Memory, StatsError> {
        let path = self.proc.join("meminfo");
        parse_meminfo(&path, &read(&path)?)
    }

    pub fn cpus(&self) -> Result<Vec<CpuTime>, StatsError> {
        let path = self.proc.join("stat");
        parse_stat(&path, &read(&path)?)
    }

    pub fn load(&self) -> Result<LoadAverage, StatsError> {
        let path = self.proc.join("loadavg");
        parse_loadavg(&path, &read(&path)?)
    }

    /// Usage of each of `disks` that is a mount point.
    pub fn disks(&self) -> Result<Vec<Disk>, StatsError> {
        let path = self.proc.join("self/mountinfo");
        let mounted = parse_mount_points(&path, &read(&path)?)?;
        self.disks
            .iter()
            .filter(|d| mounted.contains(d))
            .map(|d| usage(d))
            .collect()
    }

    /// Memory and CPU time of each service with a cgroup or a process.
    pub fn services(&self, services: &[ServiceStatus]) -> Result<Vec<ServiceStats>, StatsError> {
        let mut out = Vec::new();
        for s in services {
            let cgroup = self.cgroups.join(&s.id);
            let current = cgroup.join("memory.current");
            if let Some(text) = read_if_present(&current)? {
                let cpu = cgroup.join("cpu.stat");
                out.push(ServiceStats {
                    id: s.id.clone(),
                    memory_bytes: parse_memory_current(&current, &text)?,
                    source: "cgroup".into(),
                    cpu_usage_usec: parse_cpu_stat(&cpu, &read(&cpu)?)?,
                });
                continue;
            }
            if s.pid == 0 {
                continue;
            }
            let dir = self.proc.join(s.pid.to_string());
            let (status, stat) = (dir.join("status"), dir.join("stat"));
            // Either may vanish: it exited since the list was taken.
            let (Some(status_text), Some(stat_text)) =
                (read_if_present(&status)?, read_if_present(&stat)?)
            else {
                continue;
            };
            out.push(ServiceStats {
                id: s.id.clone(),
                memory_bytes: parse_vmrss(&status, &status_text)?,
                source: "rss".into(),
                cpu_usage_usec: parse_pid_cpu_usec(&stat, &stat_text, ticks_per_second())?,
            });
        }
        Ok(out)
    }
}

/// A file's text, or `None` if it does not exist.
fn read_if_present(path: &Path) -> Result<Option<String>, StatsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StatsError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn usage(mount: &Path) -> Result<Disk, StatsError> {
    let st = nix::sys::statvfs::statvfs(mount).map_err(|source| StatsError::Statvfs {
        path: mount.to_path_buf(),
        source,
    })?;
    let unit = st.fragment_size();
    let bytes = |blocks: u64| blocks.saturating_mul(unit);
    Ok(Disk {
        mount_point: mount.display().to_string(),
        total_bytes: bytes(st.blocks()),
        used_bytes: bytes(st.blocks().saturating_sub(st.blocks_free())),
        available_bytes: bytes(st.blocks_available()),
    })
}

/// Clock ticks per second, the unit of [`CpuTime`] (USER_HZ).
pub fn ticks_per_second() -> u32 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u32::try_from(t).ok())
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> PathBuf {
        PathBuf::from(name)
    }

    #[test]
    fn meminfo() {
        let m = parse_meminfo(
            &p("meminfo"),
            "MemTotal:        2000 kB\nMemFree:  5 kB\nMemAvailable:    1500 kB\n",
        )
        .unwrap();
        assert_eq!((m.total_bytes, m.available_bytes), (2_048_000, 1_536_000));
        let err = parse_meminfo(&p("/proc/meminfo"), "MemTotal: 1 kB\n").unwrap_err();
        assert_eq!(err.to_string(), "/proc/meminfo: MemAvailable: missing");
        let err = parse_meminfo(&p("m"), "MemTotal: x kB\nMemAvailable: 1 kB").unwrap_err();
        assert_eq!(err.to_string(), "m: MemTotal: \"x\" is not a number");
        let err = parse_meminfo(&p("m"), "MemTotal: 1 MB\nMemAvailable: 1 kB").unwrap_err();
        assert!(err.to_string().starts_with("m: MemTotal: unit"), "{err}");
    }

    #[test]
    fn stat() {
        let text = "cpu  10 1 20 300 4 0 5 0 0 0\ncpu0 10 1 20 300 4 0 5 0 0 0\nintr 1 2\n";
        let cpus = parse_stat(&p("stat"), text).unwrap();
        assert_eq!(cpus.len(), 2);
        assert_eq!(
            (
                cpus[1].name.as_str(),
                cpus[1].system,
                cpus[1].idle,
                cpus[1].softirq
            ),
            ("cpu0", 20, 300, 5)
        );
        // An old kernel's short line: the later fields are 0.
        let old = parse_stat(&p("stat"), "cpu 1 2 3 4\n").unwrap();
        assert_eq!((old[0].idle, old[0].steal), (4, 0));
        let err = parse_stat(&p("/proc/stat"), "cpu 1 2 x 4\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/proc/stat: cpu system: \"x\" is not a number"
        );
        let err = parse_stat(&p("/proc/stat"), "cpu 1 2 3\n").unwrap_err();
        assert_eq!(err.to_string(), "/proc/stat: cpu idle: missing");
        let err = parse_stat(&p("/proc/stat"), "intr 1\n").unwrap_err();
        assert_eq!(err.to_string(), "/proc/stat: cpu: no total line");
    }

    #[test]
    fn loadavg_vmrss_memory_current() {
        let l = parse_loadavg(&p("loadavg"), "0.50 1.25 2.00 1/123 4567\n").unwrap();
        assert_eq!((l.one, l.five, l.fifteen), (0.5, 1.25, 2.0));
        let err = parse_loadavg(&p("/proc/loadavg"), "0.5\n").unwrap_err();
        assert_eq!(err.to_string(), "/proc/loadavg: 5-minute load: missing");
        assert_eq!(
            parse_vmrss(&p("s"), "Name: x\nVmRSS:\t  1234 kB\n").unwrap(),
            1234 * 1024
        );
        let err = parse_vmrss(&p("/proc/7/status"), "Name: kthreadd\n").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("/proc/7/status: VmRSS: missing"));
        assert_eq!(parse_memory_current(&p("m"), "4096\n").unwrap(), 4096);
        let err = parse_memory_current(&p("/sys/fs/cgroup/kiln/netd/memory.current"), "max\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/sys/fs/cgroup/kiln/netd/memory.current: memory.current: \"max\" is not a number"
        );
    }

    #[test]
    fn cpu_times() {
        let stat = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
        assert_eq!(parse_cpu_stat(&p("c"), stat).unwrap(), 123_456);
        let err =
            parse_cpu_stat(&p("/sys/fs/cgroup/kiln/netd/cpu.stat"), "user_usec 1\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/sys/fs/cgroup/kiln/netd/cpu.stat: usage_usec: missing"
        );
        // A command name with a space and a parenthesis; utime 250, stime 50.
        let line = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 99 1000 10\n";
        assert_eq!(parse_pid_cpu_usec(&p("s"), line, 100).unwrap(), 3_000_000);
        let err = parse_pid_cpu_usec(&p("/proc/42/stat"), "42 (x) S 1\n", 100).unwrap_err();
        assert_eq!(err.to_string(), "/proc/42/stat: utime: missing");
    }

    #[test]
    fn mount_points() {
        let text = "22 1 0:21 / / rw - ext4 /dev/sda1 rw\n\
                    23 22 0:22 / /mnt/with\\040space rw - tmpfs tmpfs rw\n";
        let points = parse_mount_points(&p("mountinfo"), text).unwrap();
        assert_eq!(points, [p("/"), p("/mnt/with space")]);
        let err = parse_mount_points(&p("mountinfo"), "1 2 3\n").unwrap_err();
        assert_eq!(err.to_string(), "mountinfo: line 1 mount point: missing");
    }

    #[test]
    fn this_machines_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources {
            proc: p("/proc"),
            cgroups: dir.path().to_path_buf(),
            disks: vec![p("/"), p("/nonexistent-mount")],
        };
        let m = sources.memory().unwrap();
        assert!(m.total_bytes > 0 && m.available_bytes <= m.total_bytes);
        let cpus = sources.cpus().unwrap();
        let online = std::thread::available_parallelism().unwrap().get();
        assert!(cpus.len() > online, "a total and one line per CPU");
        sources.load().unwrap();
        let disks = sources.disks().unwrap();
        assert_eq!(disks.len(), 1, "only / is mounted");
        assert!(disks[0].total_bytes >= disks[0].used_bytes && disks[0].total_bytes > 0);
        // This process as a "service": no cgroup file, so its VmRSS.
        std::fs::create_dir(dir.path().join("with-cgroup")).unwrap();
        std::fs::write(dir.path().join("with-cgroup/memory.current"), "8192\n").unwrap();
        std::fs::write(
            dir.path().join("with-cgroup/cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        )
        .unwrap();
        let me = |id: &str, pid: u32| ServiceStatus {
            id: id.into(),
            pid,
            ..Default::default()
        };
        let mem = sources
            .services(&[
                me("self", std::process::id()),
                me("with-cgroup", 1),
                me("idle", 0),
            ])
            .unwrap();
        assert_eq!(mem.len(), 2, "{mem:?}");
        assert_eq!(mem[0].source, "rss");
        assert!(mem[0].memory_bytes > 1 << 20, "{mem:?}");
        assert_eq!(
            (mem[1].memory_bytes, mem[1].source.as_str()),
            (8192, "cgroup")
        );
        assert_eq!(mem[1].cpu_usage_usec, 1500);
        // This test process has used some CPU by now.
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(0);
        }
        let again = sources.services(&[me("self", std::process::id())]).unwrap();
        assert!(again[0].cpu_usage_usec > 0, "{again:?}");
        assert!(ticks_per_second() > 0);
    }
}
