//! What timed reports: a JSON status file (for the machine API) and the
//! "time synced" marker the supervisor's health check looks for. Both are
//! replaced atomically (temporary file, fsync, rename, fsync of the
//! directory), so a reader never sees half a file.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::servers::Source;

/// timed's state, as `/run/kiln/time.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The clock was set from a server since boot.
    pub synced: bool,
    pub last_sync: Option<Sync>,
    pub source: Source,
    /// The servers in force, in the order they are asked.
    pub servers: Vec<String>,
    /// Seconds until the next poll after a good one.
    pub poll_seconds: u64,
    /// The last round's problems (servers that did not answer or were
    /// refused, sources that could not be read); empty when all was well.
    pub errors: Vec<String>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            synced: false,
            last_sync: None,
            source: Source::None,
            servers: Vec::new(),
            poll_seconds: 0,
            errors: Vec::new(),
        }
    }
}

/// One correction of the clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sync {
    /// RFC 3339, UTC, read after the correction.
    pub at: String,
    pub server: String,
    pub address: String,
    pub stratum: u8,
    pub offset_seconds: f64,
    pub delay_seconds: f64,
    pub correction: Correction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Correction {
    Step,
    Slew,
}

/// `t` as RFC 3339 (UTC), or its raw value if it cannot be shown as a date.
pub fn rfc3339(t: SystemTime) -> String {
    let unix_ns = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_ns)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{t:?}"))
}

/// Replaces `path` with `data`, atomically and durably.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut file = atomic_write_file::AtomicWriteFile::open(path)?;
    file.write_all(data)?;
    file.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn status_as_json() {
        let s = Status {
            synced: true,
            last_sync: Some(Sync {
                at: rfc3339(UNIX_EPOCH + Duration::from_millis(1_104_537_600_250)),
                server: "10.0.2.2:11123".into(),
                address: "10.0.2.2:11123".into(),
                stratum: 8,
                offset_seconds: 631152000.5,
                delay_seconds: 0.001,
                correction: Correction::Step,
            }),
            source: Source::Config,
            servers: vec!["10.0.2.2:11123".into()],
            poll_seconds: 64,
            errors: vec![],
        };
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(v["last_sync"]["at"], "2005-01-01T00:00:00.25Z");
        assert_eq!(v["last_sync"]["correction"], "step");
        assert_eq!(v["source"], "config");
        assert_eq!(v["synced"], true);
    }

    #[test]
    fn replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("time.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
