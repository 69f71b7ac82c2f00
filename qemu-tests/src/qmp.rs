//! A small synchronous QMP client: greeting, capabilities, then one command
//! at a time. Asynchronous events (SHUTDOWN, RESET, POWERDOWN, …) that
//! arrive meanwhile are kept, so a test can look for them afterwards or wait
//! for the next one.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::Error;

/// How long one command may take to answer. QMP commands answer at once;
/// this only bounds a wedged QEMU.
const REPLY: Duration = Duration::from_secs(30);

pub(crate) struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Every event seen, in order.
    pub(crate) events: Vec<Value>,
    /// Events before this index were returned by `wait_event` already.
    event_cursor: usize,
    /// A message cut short by a read timeout, completed by the next read.
    partial: String,
}

/// What a read brought.
enum Read {
    Message(Value),
    /// The socket's read timeout expired.
    TimedOut,
    /// QEMU closed the socket (it is exiting).
    Closed,
}

impl Qmp {
    /// Connects (QEMU creates the socket shortly after it starts) and
    /// negotiates capabilities.
    pub(crate) fn connect(path: &Path, timeout: Duration) -> Result<Qmp, Error> {
        let until = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= until => {
                    return Err(Error::io(format!("connect QMP socket {}", path.display()))(
                        e,
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let writer = stream.try_clone().map_err(Error::io("QMP socket"))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
            event_cursor: 0,
            partial: String::new(),
        };
        let greeting = qmp.read_required("greeting", timeout.max(Duration::from_secs(1)))?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Qmp {
                command: "greeting".into(),
                reason: format!("not a QMP greeting: {greeting}"),
            });
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// Runs `command` and returns its `return` value; events that arrive
    /// before the reply are kept.
    pub(crate) fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, Error> {
        self.send(command, arguments)?;
        loop {
            if let Some(reply) = self.take_reply(command, REPLY)? {
                return Ok(reply);
            }
        }
    }

    /// Sends `quit`: QEMU may close the socket before its reply arrives.
    pub(crate) fn quit(&mut self) -> Result<(), Error> {
        self.send("quit", json!({}))?;
        loop {
            match self.read("quit", REPLY)? {
                Read::Closed => return Ok(()),
                Read::TimedOut => return Err(timed_out("quit", REPLY)),
                Read::Message(m) => {
                    if let Some(e) = m.get("error") {
                        return Err(Error::Qmp {
                            command: "quit".into(),
                            reason: e.to_string(),
                        });
                    }
                    if m.get("return").is_some() {
                        return Ok(());
                    }
                    self.events.push(m);
                }
            }
        }
    }

    /// The next event named `name` not returned before, waiting up to
    /// `timeout` for it. Earlier events of other names are skipped.
    pub(crate) fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Value, Error> {
        let until = Instant::now() + timeout;
        let what = format!("event {name}");
        loop {
            while self.event_cursor < self.events.len() {
                let e = &self.events[self.event_cursor];
                self.event_cursor += 1;
                if e.get("event").and_then(Value::as_str) == Some(name) {
                    return Ok(e.clone());
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out(&what, timeout));
            }
            match self.read(&what, left)? {
                Read::Message(m) => self.events.push(m),
                Read::TimedOut => return Err(timed_out(&what, timeout)),
                Read::Closed => {
                    return Err(Error::Qmp {
                        command: what,
                        reason: "QEMU closed the socket (it exited)".into(),
                    })
                }
            }
        }
    }

    fn send(&mut self, command: &str, arguments: Value) -> Result<(), Error> {
        let msg = json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{msg}").map_err(Error::io(format!("QMP {command}: send")))
    }

    /// Reads one message: `Some(return value)` for the reply, `None` after
    /// keeping an event, an error for an error reply, a timeout or EOF.
    fn take_reply(&mut self, command: &str, timeout: Duration) -> Result<Option<Value>, Error> {
        let m = self.read_required(command, timeout)?;
        if let Some(r) = m.get("return") {
            return Ok(Some(r.clone()));
        }
        if let Some(e) = m.get("error") {
            return Err(Error::Qmp {
                command: command.into(),
                reason: e.to_string(),
            });
        }
        self.events.push(m);
        Ok(None)
    }

    fn read_required(&mut self, command: &str, timeout: Duration) -> Result<Value, Error> {
        match self.read(command, timeout)? {
            Read::Message(m) => Ok(m),
            Read::TimedOut => Err(timed_out(command, timeout)),
            Read::Closed => Err(Error::Qmp {
                command: command.into(),
                reason: "QEMU closed the socket (it exited)".into(),
            }),
        }
    }

    fn read(&mut self, command: &str, timeout: Duration) -> Result<Read, Error> {
        // A zero read timeout means "block forever" to the socket.
        let timeout = timeout.max(Duration::from_millis(1));
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(Error::io("QMP socket timeout"))?;
        match self.reader.read_line(&mut self.partial) {
            Ok(0) => Ok(Read::Closed),
            Ok(_) => {
                let line = std::mem::take(&mut self.partial);
                serde_json::from_str(&line)
                    .map(Read::Message)
                    .map_err(|e| Error::Qmp {
                        command: command.into(),
                        reason: format!("bad JSON {line:?}: {e}"),
                    })
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(Read::TimedOut)
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(Read::Closed),
            Err(e) => Err(Error::io(format!("QMP {command}: receive"))(e)),
        }
    }
}

fn timed_out(command: &str, after: Duration) -> Error {
    Error::Qmp {
        command: command.into(),
        reason: format!("no answer within {after:.1?}"),
    }
}
