//! The serial console: a thread reads QEMU's stdout into lines stamped with
//! their arrival time (and copies every byte to a log file); waits scan
//! forward from a cursor, so successive waits consume the boot in order.

use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use regex::Regex;

/// One console line and when it arrived, since QEMU was launched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub at: Duration,
    pub text: String,
}

/// A console line that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub line: String,
    /// Capture groups (index 0 is the whole match; `None` for a group that
    /// did not take part).
    pub captures: Vec<Option<String>>,
    /// When the line arrived, since QEMU was launched.
    pub at: Duration,
    /// The line's index in the console (see [`crate::Machine::console_lines`]).
    pub index: usize,
}

impl Match {
    /// Capture group `i`, or `""` when it did not take part or does not exist.
    pub fn group(&self, i: usize) -> &str {
        self.captures
            .get(i)
            .and_then(|c| c.as_deref())
            .unwrap_or("")
    }
}

#[derive(Default)]
struct State {
    lines: Vec<Line>,
    closed: bool,
}

/// Shared between the reader thread and the machine.
#[derive(Clone)]
pub(crate) struct Console {
    state: Arc<(Mutex<State>, Condvar)>,
}

/// Why a wait ended without a match.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    TimedOut,
    /// QEMU closed its stdout: it has exited.
    Closed,
}

impl Console {
    /// Starts the reader thread over `out`, copying every byte to `log`.
    pub(crate) fn spawn(
        mut out: impl Read + Send + 'static,
        mut log: impl Write + Send + 'static,
        start: Instant,
    ) -> Console {
        let console = Console {
            state: Arc::default(),
        };
        let shared = console.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut partial = Vec::new();
            let push = |bytes: &[u8]| {
                let text = String::from_utf8_lossy(bytes)
                    .trim_end_matches('\r')
                    .to_string();
                shared.lock().lines.push(Line {
                    at: start.elapsed(),
                    text,
                });
                shared.state.1.notify_all();
            };
            loop {
                match out.read(&mut buf) {
                    Ok(0) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the QEMU console failed");
                        break;
                    }
                    Ok(n) => {
                        // The log is for people after the fact; losing it
                        // must not stop the waits.
                        let _ = log.write_all(&buf[..n]).and_then(|()| log.flush());
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
            shared.lock().closed = true;
            shared.state.1.notify_all();
        });
        console
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the lines are intact.
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first line at or after `*cursor` matching any of `res`, waiting
    /// up to `timeout`; returns which pattern matched and moves the cursor
    /// past the line. On a miss the cursor stays at the end of what was read.
    pub(crate) fn wait_for_any(
        &self,
        res: &[&Regex],
        cursor: &mut usize,
        timeout: Duration,
    ) -> Result<(usize, Match), Miss> {
        let until = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            while *cursor < s.lines.len() {
                let index = *cursor;
                *cursor += 1;
                for (i, re) in res.iter().enumerate() {
                    if let Some(m) = matched(re, index, &s.lines[index]) {
                        return Ok((i, m));
                    }
                }
            }
            if s.closed {
                return Err(Miss::Closed);
            }
            let now = Instant::now();
            if now >= until {
                return Err(Miss::TimedOut);
            }
            s = self
                .state
                .1
                .wait_timeout(s, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The first line so far matching `re`, wherever it is.
    pub(crate) fn find(&self, re: &Regex) -> Option<Match> {
        let s = self.lock();
        s.lines
            .iter()
            .enumerate()
            .find_map(|(i, line)| matched(re, i, line))
    }

    /// Everything so far, one line per line.
    pub(crate) fn text(&self) -> String {
        join(&self.lock().lines)
    }

    /// The last `n` lines.
    pub(crate) fn tail(&self, n: usize) -> String {
        let s = self.lock();
        join(&s.lines[s.lines.len().saturating_sub(n)..])
    }

    /// Lines with their arrival times.
    pub(crate) fn lines(&self) -> Vec<Line> {
        self.lock().lines.clone()
    }

    /// How many lines have arrived.
    pub(crate) fn len(&self) -> usize {
        self.lock().lines.len()
    }
}

fn join(lines: &[Line]) -> String {
    lines
        .iter()
        .map(|l| l.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `line` as a [`Match`] of `re`, if it matches.
fn matched(re: &Regex, index: usize, line: &Line) -> Option<Match> {
    re.captures(&line.text).map(|c| Match {
        line: line.text.clone(),
        captures: c
            .iter()
            .map(|m| m.map(|m| m.as_str().to_string()))
            .collect(),
        at: line.at,
        index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn re(s: &str) -> Regex {
        Regex::new(s).unwrap()
    }

    /// A console fed from fixed bytes; waits until the reader has closed it.
    fn console_of(bytes: &'static [u8]) -> Console {
        let c = Console::spawn(Cursor::new(bytes), std::io::sink(), Instant::now());
        let mut cursor = 0;
        let never = re("^$never");
        assert_eq!(
            c.wait_for_any(&[&never], &mut cursor, Duration::from_secs(10)),
            Err(Miss::Closed)
        );
        c
    }

    #[test]
    fn lines_split_on_newline_strip_cr_and_keep_the_unterminated_end() {
        let c = console_of(b"one\r\ntwo\n\nthree");
        let texts: Vec<String> = c.lines().into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["one", "two", "", "three"]);
        assert_eq!(c.text(), "one\ntwo\n\nthree");
        assert_eq!(c.tail(2), "\nthree");
        assert_eq!(c.tail(100), c.text());
    }

    #[test]
    fn waits_consume_in_order_and_report_which_pattern_matched() {
        let c = console_of(b"a 1\nb 2\na 3\n");
        let (a, b) = (re(r"a (\d)"), re(r"b (\d)"));
        let mut cursor = 0;
        let (i, m) = c
            .wait_for_any(&[&b, &a], &mut cursor, Duration::ZERO)
            .unwrap();
        assert_eq!((i, m.group(1), m.index), (1, "1", 0));
        let (_, m) = c.wait_for_any(&[&a], &mut cursor, Duration::ZERO).unwrap();
        assert_eq!((m.group(1), m.index), ("3", 2), "skips past b 2");
        assert_eq!(
            c.wait_for_any(&[&b], &mut cursor, Duration::ZERO).err(),
            Some(Miss::Closed)
        );
        assert_eq!(c.find(&b).unwrap().line, "b 2", "find ignores the cursor");
        assert_eq!(m.group(7), "");
    }

    #[test]
    fn a_wait_on_a_live_console_times_out() {
        // A pipe whose writer stays open: no line ever comes.
        let (reader, _writer) = std::io::pipe().unwrap();
        let c = Console::spawn(reader, std::io::sink(), Instant::now());
        let mut cursor = 0;
        let t = Instant::now();
        let miss = c.wait_for_any(&[&re("x")], &mut cursor, Duration::from_millis(200));
        assert_eq!(miss.err(), Some(Miss::TimedOut));
        assert!(t.elapsed() >= Duration::from_millis(200));
        assert_eq!(c.len(), 0);
    }
}
