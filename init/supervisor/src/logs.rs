//! Service output: one pipe per run of a service (stdout and stderr share
//! it, so their order is kept), read line by line into a ring buffer, a log
//! file, subscribers, and tracing (so PID 1's console shows it too).

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::broadcast;
use tracing::info;

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
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
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
            }
        });
        Ok(w)
    }
}
