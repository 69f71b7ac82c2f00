//! A small synchronous QMP client: greeting, capabilities, then one command
//! at a time; asynchronous events that arrive meanwhile are kept.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::Error;

pub(crate) struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    pub(crate) events: Vec<Value>,
}

impl Qmp {
    /// Connects (QEMU creates the socket shortly after start) and negotiates.
    pub(crate) fn connect(path: &Path, timeout: Duration) -> Result<Qmp, Error> {
        let until = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= until => {
                    return Err(Error::io(format!("connect {}", path.display()))(e))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream
            .set_read_timeout(Some(timeout))
            .map_err(Error::io("QMP socket"))?;
        let writer = stream.try_clone().map_err(Error::io("QMP socket"))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
        };
        let greeting = qmp.read_message("greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Qmp {
                command: "greeting".into(),
                reason: greeting.to_string(),
            });
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// Runs `command` and returns its `return` value.
    pub(crate) fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, Error> {
        let msg = json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{msg}").map_err(Error::io(format!("QMP {command}")))?;
        loop {
            let reply = self.read_message(command)?;
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                return Err(Error::Qmp {
                    command: command.into(),
                    reason: e.to_string(),
                });
            }
            self.events.push(reply);
        }
    }

    fn read_message(&mut self, command: &str) -> Result<Value, Error> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(Error::io(format!("QMP {command}")))?;
        if n == 0 {
            return Err(Error::Qmp {
                command: command.into(),
                reason: "QEMU closed the socket".into(),
            });
        }
        serde_json::from_str(&line).map_err(|e| Error::Qmp {
            command: command.into(),
            reason: format!("bad JSON {line:?}: {e}"),
        })
    }
}
