//! The kernel log, read from /dev/kmsg: one record per read(2), formatted
//! `<prio+facility*8>,<seq>,<usec>,<flags>[,…];<message>\n` followed by
//! optional ` KEY=value` continuation lines (Documentation/ABI/testing/
//! dev-kmsg). Each open starts at the beginning of the kernel's buffer.

use std::io::Read;
use std::path::PathBuf;

use kiln_api_proto::v1::KernelMessage;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum KmsgError {
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the kernel log: {0}")]
    Read(std::io::Error),
}

/// Parses one /dev/kmsg record; `None` if it is not one.
pub fn parse(record: &str) -> Option<KernelMessage> {
    let (head, rest) = record.split_once(';')?;
    let mut fields = head.split(',');
    let prefix: u32 = fields.next()?.parse().ok()?;
    let sequence = fields.next()?.parse().ok()?;
    let timestamp_us = fields.next()?.parse().ok()?;
    // Continuation lines (device metadata) start with a space: not shown.
    let message = rest.lines().next().unwrap_or_default().to_string();
    Some(KernelMessage {
        priority: prefix & 7,
        facility: prefix >> 3,
        sequence,
        timestamp_us,
        message,
    })
}

/// Sends every record in the kernel's buffer, then, if `follow`, each new
/// one, until the receiver goes away. Records overwritten while we read
/// (EPIPE) are skipped, as dmesg does.
pub async fn stream(
    path: PathBuf,
    follow: bool,
    tx: mpsc::Sender<Result<KernelMessage, KmsgError>>,
) {
    if let Err(e) = send_records(path, follow, &tx).await {
        let _ = tx.send(Err(e)).await;
    }
}

async fn send_records(
    path: PathBuf,
    follow: bool,
    tx: &mpsc::Sender<Result<KernelMessage, KmsgError>>,
) -> Result<(), KmsgError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(|source| KmsgError::Open { path, source })?;
    // SAFETY: the AsyncFd owns the File, so the descriptor stays open for
    // as long as it is registered.
    let fd = unsafe { AsyncFd::register(file) }.map_err(|e| KmsgError::Read(e.into()))?;
    // The kernel's records are at most 8 KiB (CONSOLE_EXT_LOG_MAX).
    let mut buf = vec![0u8; 8192];
    loop {
        let n = fd.get_ref().read(&mut buf);
        match n {
            Ok(0) => return Ok(()),
            Ok(n) => {
                if let Some(m) = parse(&String::from_utf8_lossy(&buf[..n])) {
                    if tx.send(Ok(m)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if !follow {
                    return Ok(());
                }
                tokio::select! {
                    _ = tx.closed() => return Ok(()),
                    ready = fd.readable() => {
                        ready.map_err(KmsgError::Read)?.clear_ready();
                    }
                }
            }
            Err(e) => return Err(KmsgError::Read(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_record_with_continuation_lines() {
        let m =
            parse("6,339,5140900,-;NET: Registered protocol family 10\n SUBSYSTEM=net\n").unwrap();
        assert_eq!(
            (m.priority, m.facility, m.sequence, m.timestamp_us),
            (6, 0, 339, 5140900)
        );
        assert_eq!(m.message, "NET: Registered protocol family 10");
        // Facility 3 (daemon), priority 4 (warning): 3*8+4.
        let m = parse("28,1,2,-,caller=T1;x").unwrap();
        assert_eq!((m.priority, m.facility), (4, 3));
    }

    #[test]
    fn refuses_what_is_not_a_record() {
        for bad in ["", "no semicolon", "x,1,2;msg", "6,1;msg"] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn reads_this_machines_kernel_log() {
        // /dev/kmsg is readable by root; CI runs as root.
        let (tx, mut rx) = mpsc::channel(64);
        tokio::spawn(stream("/dev/kmsg".into(), false, tx));
        let mut count = 0;
        let mut last_seq = None;
        while let Some(m) = rx.recv().await {
            let m = m.unwrap();
            if let Some(prev) = last_seq {
                assert!(m.sequence > prev, "sequence numbers increase");
            }
            last_seq = Some(m.sequence);
            count += 1;
        }
        assert!(count > 0, "the kernel log is never empty");
    }
}
