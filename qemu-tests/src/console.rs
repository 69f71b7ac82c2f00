//! The serial console: a thread reads QEMU's stdout into timestamped lines
//! (and a log file); waits scan forward from a cursor, so successive waits
//! consume the boot in order.

use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use regex::Regex;

/// A console line that matched.
#[derive(Debug, Clone)]
pub struct Match {
    pub line: String,
    /// Capture groups (index 0 is the whole match).
    pub captures: Vec<Option<String>>,
    /// When the line arrived, since QEMU was launched.
    pub at: Duration,
}

#[derive(Default)]
struct State {
    lines: Vec<(Duration, String)>,
    closed: bool,
}

/// Shared between the reader thread and the machine.
#[derive(Clone)]
pub(crate) struct Console {
    state: Arc<(Mutex<State>, Condvar)>,
}

/// Why a wait ended without a match.
pub(crate) enum Miss {
    TimedOut,
    Closed,
}

impl Console {
    /// Starts the reader thread over `out`, copying every byte to `log`.
    pub(crate) fn spawn(
        mut out: impl Read + Send + 'static,
        mut log: std::fs::File,
        start: Instant,
    ) -> Console {
        let console = Console {
            state: Arc::default(),
        };
        let shared = console.state.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut partial = Vec::new();
            let push = |bytes: &[u8]| {
                let text = String::from_utf8_lossy(bytes)
                    .trim_end_matches('\r')
                    .to_string();
                let (lock, cv) = &*shared;
                if let Ok(mut s) = lock.lock() {
                    s.lines.push((start.elapsed(), text));
                }
                cv.notify_all();
            };
            loop {
                match out.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = log.write_all(&buf[..n]);
                        for &b in &buf[..n] {
                            if b == b'\n' {
                                push(&partial);
                                partial.clear();
                            } else {
                                partial.push(b);
                            }
                        }
                    }
                }
            }
            if !partial.is_empty() {
                push(&partial);
            }
            let (lock, cv) = &*shared;
            if let Ok(mut s) = lock.lock() {
                s.closed = true;
            }
            cv.notify_all();
        });
        console
    }

    /// The first line at or after `*cursor` matching `re`, waiting up to
    /// `timeout`; moves the cursor past it.
    pub(crate) fn wait_for(
        &self,
        re: &Regex,
        cursor: &mut usize,
        timeout: Duration,
    ) -> Result<Match, Miss> {
        let until = Instant::now() + timeout;
        let (lock, cv) = &*self.state;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            while *cursor < s.lines.len() {
                let (at, line) = &s.lines[*cursor];
                *cursor += 1;
                if let Some(m) = matched(re, *at, line) {
                    return Ok(m);
                }
            }
            if s.closed {
                return Err(Miss::Closed);
            }
            let now = Instant::now();
            if now >= until {
                return Err(Miss::TimedOut);
            }
            s = cv
                .wait_timeout(s, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The first line so far matching `re`, wherever it is.
    pub(crate) fn find(&self, re: &Regex) -> Option<Match> {
        let (lock, _) = &*self.state;
        let s = lock.lock().unwrap_or_else(|e| e.into_inner());
        s.lines.iter().find_map(|(at, line)| matched(re, *at, line))
    }

    /// Everything so far.
    pub(crate) fn text(&self) -> String {
        let (lock, _) = &*self.state;
        let s = lock.lock().unwrap_or_else(|e| e.into_inner());
        s.lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The last `n` lines.
    pub(crate) fn tail(&self, n: usize) -> String {
        let (lock, _) = &*self.state;
        let s = lock.lock().unwrap_or_else(|e| e.into_inner());
        let from = s.lines.len().saturating_sub(n);
        s.lines[from..]
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Lines with their arrival times.
    pub(crate) fn timed_lines(&self) -> Vec<(Duration, String)> {
        let (lock, _) = &*self.state;
        lock.lock().unwrap_or_else(|e| e.into_inner()).lines.clone()
    }
}

/// `line` as a [`Match`] of `re`, if it matches.
fn matched(re: &Regex, at: Duration, line: &str) -> Option<Match> {
    re.captures(line).map(|c| Match {
        line: line.to_string(),
        captures: c
            .iter()
            .map(|m| m.map(|m| m.as_str().to_string()))
            .collect(),
        at,
    })
}
