//! Copies a container's stdout or stderr into the CRI log file, one entry a
//! line: `<RFC 3339 timestamp, ns> <stdout|stderr> <F|P> <text>`. Lines
//! longer than `MAX_LINE` are cut into partial (`P`) entries; each entry is
//! one write under the file's lock, so the two streams never interleave
//! inside an entry.
//!
//! Log rotation: kubelet renames the file and calls ReopenContainerLog,
//! which creates a new file at the path. Before each entry the shim checks
//! whether the path now names another file and, if so, appends there: every
//! entry lands whole in the old file or the new one, none is lost, and no
//! signal or daemon round trip is needed (a restarted daemon works too).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// kubelet's own limit for a log line before it is split.
const MAX_LINE: usize = 16 * 1024;

/// The CRI log being written, and the path it is followed by.
pub struct LogFile {
    file: File,
    /// `None` for /dev/null (no log asked for).
    path: Option<PathBuf>,
    /// The open file's device and inode.
    id: (u64, u64),
}

impl LogFile {
    pub fn new(file: File, path: Option<PathBuf>) -> std::io::Result<LogFile> {
        let m = file.metadata()?;
        Ok(LogFile {
            file,
            path,
            id: (m.dev(), m.ino()),
        })
    }

    /// Switches to the file now at the path, when it is another one.
    fn follow(&mut self) {
        let Some(path) = &self.path else { return };
        let Ok(m) = std::fs::metadata(path) else {
            return;
        };
        if (m.dev(), m.ino()) == self.id {
            return;
        }
        match OpenOptions::new().append(true).open(path) {
            Ok(file) => {
                self.file = file;
                self.id = (m.dev(), m.ino());
            }
            Err(e) => eprintln!("container log: reopening {}: {e}", path.display()),
        }
    }
}

/// Copies `from` until EOF. Write errors are counted, not fatal: the
/// container must not stall on a full disk.
pub fn copy(mut from: impl Read, stream: &str, to: &Arc<Mutex<LogFile>>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; MAX_LINE];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        loop {
            match pending.iter().position(|&b| b == b'\n') {
                Some(pos) if pos <= MAX_LINE => {
                    emit(to, stream, 'F', &pending[..pos]);
                    pending.drain(..=pos);
                }
                _ if pending.len() >= MAX_LINE => {
                    emit(to, stream, 'P', &pending[..MAX_LINE]);
                    pending.drain(..MAX_LINE);
                }
                _ => break,
            }
        }
    }
    if !pending.is_empty() {
        emit(to, stream, 'F', &pending);
    }
}

fn emit(to: &Arc<Mutex<LogFile>>, stream: &str, tag: char, text: &[u8]) {
    let mut entry = format!("{} {stream} {tag} ", rfc3339_nano(SystemTime::now())).into_bytes();
    entry.extend_from_slice(text);
    entry.push(b'\n');
    let mut log = to.lock().unwrap_or_else(|p| p.into_inner());
    log.follow();
    if let Err(e) = log.file.write_all(&entry) {
        eprintln!("container log: {e}");
    }
}

/// `2006-01-02T15:04:05.999999999Z` with all nine digits, UTC.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic
/// Gregorian calendar (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_with_nanoseconds() {
        let t = UNIX_EPOCH + Duration::new(1_475_713_029, 669_794_202);
        assert_eq!(rfc3339_nano(t), "2016-10-06T00:17:09.669794202Z");
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_nano(leap), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn long_lines_are_split_into_partial_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let file = Arc::new(Mutex::new(
            LogFile::new(File::create(&path).unwrap(), None).unwrap(),
        ));
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("one\n{long}\ntail");
        copy(input.as_bytes(), "stderr", &file);
        let text = std::fs::read_to_string(&path).unwrap();
        let entries: Vec<(&str, &str, &str)> = text
            .lines()
            .map(|l| {
                let mut f = l.splitn(4, ' ');
                f.next();
                (f.next().unwrap(), f.next().unwrap(), f.next().unwrap())
            })
            .collect();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0], ("stderr", "F", "one"));
        assert_eq!((entries[1].1, entries[1].2.len()), ("P", MAX_LINE));
        assert_eq!((entries[2].1, entries[2].2), ("F", "x".repeat(10).as_str()));
        assert_eq!(entries[3], ("stderr", "F", "tail"));
    }

    #[test]
    fn a_renamed_log_is_followed_once_a_new_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let file = File::create(&path).unwrap();
        let log = Arc::new(Mutex::new(LogFile::new(file, Some(path.clone())).unwrap()));
        copy("one\n".as_bytes(), "stdout", &log);
        std::fs::rename(&path, dir.path().join("log.1")).unwrap();
        // Renamed but not yet reopened: entries go on into the old file.
        copy("two\n".as_bytes(), "stdout", &log);
        File::create(&path).unwrap();
        copy("three\n".as_bytes(), "stdout", &log);
        let text = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(text("log.1").lines().count(), 2);
        assert!(text("log.1").ends_with(" stdout F two\n"));
        assert_eq!(text("log").lines().count(), 1);
        assert!(text("log").ends_with(" stdout F three\n"));
    }
}
