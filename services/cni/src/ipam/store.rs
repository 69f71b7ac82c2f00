//! The allocation store: one file per reserved address, in the reference
//! plugin's layout so either plugin can read the other's state.
//!
//! `<dir>/<ip>` holds `<container id>\r\n<ifname>`; `<dir>/last_reserved_ip.<n>`
//! holds the last address handed out from range set `n`; `<dir>/lock` is the
//! flock every reader and writer holds for the whole operation.
//!
//! Invariant: a record is either absent or complete. Each is written to a
//! dot-named temp file, fsynced, renamed into place and the directory
//! fsynced; a crash leaves at most a stale temp file, which the next `open`
//! (holding the lock, so no writer is mid-way) removes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

const LOCK: &str = "lock";
const LAST_RESERVED: &str = "last_reserved_ip.";
const TEMP_PREFIX: &str = ".tmp-";

/// An open, locked store; the lock is released when it drops.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

/// One reservation: who holds which address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub ip: IpAddr,
    pub container_id: String,
    pub ifname: String,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let lock_path = dir.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("open {}", lock_path.display()), e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io(format!("flock {}", lock_path.display()), e.into()))?;
        let store = Store {
            dir: dir.to_path_buf(),
            _lock: lock,
        };
        store.remove_stale_temps()?;
        Ok(store)
    }

    fn remove_stale_temps(&self) -> Result<()> {
        for name in self.names()? {
            if name.starts_with(TEMP_PREFIX) {
                self.remove(&name)?;
            }
        }
        Ok(())
    }

    fn names(&self) -> Result<Vec<String>> {
        let rd = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("read {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(format!("read {}", self.dir.display()), e))?;
            if let Ok(name) = ent.file_name().into_string() {
                out.push(name);
            }
        }
        Ok(out)
    }

    fn remove(&self, name: &str) -> Result<()> {
        let p = self.dir.join(name);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", p.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Writes `name` atomically (see the module invariant).
    fn write_atomic(&self, name: &str, content: &str) -> Result<()> {
        let tmp = self.dir.join(format!("{TEMP_PREFIX}{name}"));
        let dst = self.dir.join(name);
        let io = |what: &str, p: &Path, e| Error::io(format!("{what} {}", p.display()), e);
        let mut f = File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
        f.write_all(content.as_bytes())
            .map_err(|e| io("write", &tmp, e))?;
        f.sync_all().map_err(|e| io("fsync", &tmp, e))?;
        fs::rename(&tmp, &dst).map_err(|e| io("rename to", &dst, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("fsync", &self.dir, e))
    }

    /// Reserves `ip` for the attachment; false if someone already holds it.
    pub fn reserve(
        &self,
        ip: IpAddr,
        container_id: &str,
        ifname: &str,
        set: usize,
    ) -> Result<bool> {
        let name = ip.to_string();
        if self.dir.join(&name).exists() {
            return Ok(false);
        }
        self.write_atomic(&name, &format!("{container_id}\r\n{ifname}"))?;
        self.write_atomic(&format!("{LAST_RESERVED}{set}"), &name)?;
        Ok(true)
    }

    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("{LAST_RESERVED}{set}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Every reservation; unreadable or foreign files are skipped.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for name in self.names()? {
            let Ok(ip) = name.parse::<IpAddr>() else {
                continue;
            };
            let Ok(content) = fs::read_to_string(self.dir.join(&name)) else {
                continue;
            };
            let mut lines = content.lines();
            let container_id = lines.next().unwrap_or("").trim().to_string();
            let ifname = lines.next().unwrap_or("").trim().to_string();
            out.push(Entry {
                ip,
                container_id,
                ifname,
            });
        }
        Ok(out)
    }

    pub fn release(&self, ip: IpAddr) -> Result<()> {
        self.remove(&ip.to_string())
    }

    pub fn held_by(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|e| e.container_id == container_id && e.ifname == ifname)
            .map(|e| e.ip)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_release_and_stale_temps() {
        let dir = std::env::temp_dir().join(format!("kiln-cni-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        {
            let s = Store::open(&dir).unwrap();
            assert!(s.reserve(ip, "c1", "eth0", 0).unwrap());
            assert!(!s.reserve(ip, "c2", "eth0", 0).unwrap());
            assert_eq!(s.last_reserved(0), Some(ip));
            assert_eq!(s.held_by("c1", "eth0").unwrap(), vec![ip]);
            assert!(s.held_by("c1", "eth1").unwrap().is_empty());
            // A crash mid-write leaves only a temp file.
            fs::write(dir.join(".tmp-10.0.0.6"), "half").unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert!(!dir.join(".tmp-10.0.0.6").exists());
        assert_eq!(s.entries().unwrap().len(), 1);
        s.release(ip).unwrap();
        s.release(ip).unwrap();
        assert!(s.entries().unwrap().is_empty());
        drop(s);
        fs::remove_dir_all(&dir).unwrap();
    }
}
