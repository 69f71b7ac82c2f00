//! Service output: one pipe per run of a service (stdout and stderr share
//! it, so their order is kept), read line by line into a ring buffer, a log
//! file, subscribers, and tracing at info (the console). Lines are cut at [`MAX_LINE`]
//! bytes and decoded lossily: a service printing binary or no newlines must
//! neither grow PID 1's memory nor stop being drained (it would block).

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::sync::broadcast;
use tracing::info;

/// Longest line kept; longer output is split.
pub(crate) const MAX_LINE: usize = 4096;

pub(crate) struct LogSink {
    id: String,
    file: Option<PathBuf>,
    ring: Arc<Mutex<VecDeque<String>>>,
    cap: usize,
    tx: broadcast::Sender<String>,
}

impl LogSink {
    pub(crate) fn new(id: &str, dir: Option<&Path>, cap: usize) -> Self {
        let (tx, _) = broadcast::channel(256);
        Self {
            id: id.to_string(),
            file: dir.map(|d| d.join(format!("{id}.log"))),
            ring: Arc::default(),
            cap: cap.max(1),
            tx,
        }
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<String> {
        self.tx.subscribe()
    }

    /// A new pipe whose read end is drained by a task; returns the write end
    /// for the child's stdout and stderr.
    pub(crate) fn pipe(&self) -> std::io::Result<OwnedFd> {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        // The child's end must block like an ordinary stdout.
        nix::fcntl::fcntl(
            &w,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        )?;
        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(r)?;
        let mut file = match &self.file {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)?,
                )
            }
            None => None,
        };
        let (id, ring, cap, tx) = (
            self.id.clone(),
            self.ring.clone(),
            self.cap,
            self.tx.clone(),
        );
        tokio::spawn(async move {
            let mut reader = reader;
            let mut pending: Vec<u8> = Vec::new();
            let mut chunk = [0u8; 4096];
            let mut emit = |bytes: &[u8]| {
                let line = String::from_utf8_lossy(bytes).into_owned();
                // At info, so PID 1 shows service output on the console and
                // in the kernel log: a node has no shell to read files with.
                info!(service = %id, "| {line}");
                if let Some(f) = file.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                {
                    let mut ring = ring.lock().unwrap_or_else(|e| e.into_inner());
                    if ring.len() == cap {
                        ring.pop_front();
                    }
                    ring.push_back(line.clone());
                }
                let _ = tx.send(line);
            };
            loop {
                let n = match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&chunk[..n]);
                let mut start = 0;
                while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
                    emit(&pending[start..start + nl]);
                    start += nl + 1;
                }
                pending.drain(..start);
                while pending.len() >= MAX_LINE {
                    emit(&pending[..MAX_LINE]);
                    pending.drain(..MAX_LINE);
                }
            }
            if !pending.is_empty() {
                emit(&pending);
            }
        });
        Ok(w)
    }
}
