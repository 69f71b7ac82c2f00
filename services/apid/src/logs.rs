//! Service logs: the files the supervisor writes, `<log dir>/<service>.log`,
//! one line per line of the service's output. `tail` reads the end; `follow`
//! then watches the file grow (polling its size, as `tail -f` does where it
//! has no inotify: a follower costs a stat four times a second).

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

/// How often a follower looks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// The most of a log read to find its last lines: bounds apid's memory.
const TAIL_WINDOW: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("service: {0:?} is not a service id (letters, digits, '-', '_', '.')")]
    BadService(String),
    #[error("service: no log for {0:?}")]
    NoLog(String),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The log file of `service` in `dir`, refusing ids that could name a
/// file outside it.
pub fn log_path(dir: &Path, service: &str) -> Result<PathBuf, LogsError> {
    let valid = !service.is_empty()
        && service.len() <= 64
        && !service.chars().all(|c| c == '.')
        && service
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(LogsError::BadService(service.to_string()));
    }
    let path = dir.join(format!("{service}.log"));
    if !path.is_file() {
        return Err(LogsError::NoLog(service.to_string()));
    }
    Ok(path)
}

/// Sends the last `tail` lines of `path` (all if 0), then, if `follow`, each
/// new line as it is written, until the receiver goes away.
pub async fn stream(
    path: PathBuf,
    tail: u32,
    follow: bool,
    tx: mpsc::Sender<Result<String, LogsError>>,
) {
    if let Err(e) = send_lines(&path, tail, follow, &tx).await {
        let _ = tx.send(Err(e)).await;
    }
}

async fn send_lines(
    path: &Path,
    tail: u32,
    follow: bool,
    tx: &mpsc::Sender<Result<String, LogsError>>,
) -> Result<(), LogsError> {
    let err = |source| LogsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(err)?;
    let len = file.metadata().await.map_err(err)?.len();
    let start = if tail == 0 {
        0
    } else {
        len.saturating_sub(TAIL_WINDOW)
    };
    file.seek(SeekFrom::Start(start)).await.map_err(err)?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).await.map_err(err)?;
    let mut pos = start + buf.len() as u64;
    // Only whole lines: a partial last line is sent once it is complete.
    let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut pending = buf.split_off(complete);
    let mut lines: Vec<&[u8]> = buf.split(|&b| b == b'\n').collect();
    lines.pop(); // the empty piece after the final newline
    if start > 0 {
        // The window began mid-line.
        lines.remove(0);
    }
    let skip = if tail == 0 {
        0
    } else {
        lines.len().saturating_sub(tail as usize)
    };
    for line in &lines[skip..] {
        if tx
            .send(Ok(String::from_utf8_lossy(line).into_owned()))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    if !follow {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = tx.closed() => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        let len = tokio::fs::metadata(path).await.map_err(err)?.len();
        if len < pos {
            // Truncated or replaced: start again from its beginning.
            file = tokio::fs::File::open(path).await.map_err(err)?;
            pos = 0;
            pending.clear();
        }
        if len == pos {
            continue;
        }
        file.seek(SeekFrom::Start(pos)).await.map_err(err)?;
        let mut more = Vec::new();
        (&mut file)
            .take(len - pos)
            .read_to_end(&mut more)
            .await
            .map_err(err)?;
        pos += more.len() as u64;
        pending.extend_from_slice(&more);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..i]).into_owned();
            if tx.send(Ok(text)).await.is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    async fn collect(path: PathBuf, tail: u32) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(16);
        tokio::spawn(stream(path, tail, false, tx));
        let mut out = Vec::new();
        while let Some(line) = rx.recv().await {
            out.push(line.unwrap());
        }
        out
    }

    #[test]
    fn ids_cannot_escape_the_log_dir() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "..", "../etc/passwd", "a/b", "x\0"] {
            assert!(
                matches!(log_path(dir.path(), bad), Err(LogsError::BadService(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            log_path(dir.path(), "absent"),
            Err(LogsError::NoLog(_))
        ));
    }

    #[tokio::test]
    async fn tail_sends_the_last_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        std::fs::write(&path, "one\ntwo\nthree\npartial").unwrap();
        assert_eq!(collect(path.clone(), 2).await, ["two", "three"]);
        assert_eq!(collect(path.clone(), 0).await, ["one", "two", "three"]);
        assert_eq!(collect(path, 10).await, ["one", "two", "three"]);
    }

    #[tokio::test]
    async fn follow_sends_lines_as_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        std::fs::write(&path, "old\n").unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let follower = tokio::spawn(stream(path.clone(), 1, true, tx));
        assert_eq!(rx.recv().await.unwrap().unwrap(), "old");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"new 1\nnew ").unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap(), "new 1");
        f.write_all(b"2\n").unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap(), "new 2");
        drop(rx);
        // The follower ends once nobody listens.
        tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .unwrap()
            .unwrap();
    }
}
