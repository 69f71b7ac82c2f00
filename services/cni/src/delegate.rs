//! IPAM for the bridge: Kiln's host-local in-process, any other IPAM plugin
//! executed from CNI_PATH as the spec's delegation describes.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::env::Args;
use crate::error::{Error, Result, SpecError};
use crate::ipam::{self, Attachment, IpamConfig};
use crate::netconf::NetConf;
use crate::result::CniResult;
use crate::HOST_LOCAL;

pub enum Ipam {
    /// Kiln's host-local: no fork/exec per ADD.
    Local(IpamConfig),
    /// Another plugin, found in CNI_PATH.
    Exec { plugin: String, path: Vec<PathBuf> },
}

impl Ipam {
    pub fn new(conf: &NetConf, args: &Args) -> Result<Self> {
        let v = conf.ipam()?;
        let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or_default();
        if kind == HOST_LOCAL {
            return Ok(Ipam::Local(IpamConfig::parse(&conf.name, v)?));
        }
        if kind.contains('/') {
            return Err(Error::config(
                "ipam.type",
                format!("{kind:?} must be a plugin name, not a path"),
            ));
        }
        Ok(Ipam::Exec {
            plugin: kind.to_string(),
            path: args.path.clone(),
        })
    }

    pub fn add(&self, conf: &NetConf, args: &Args) -> Result<CniResult> {
        match self {
            Ipam::Local(c) => ipam::allocate(c, &args.container_id, &args.ifname),
            Ipam::Exec { .. } => {
                let out = self.exec("ADD", conf)?;
                serde_json::from_slice(&out).map_err(|source| Error::Decode {
                    what: "IPAM plugin result",
                    source,
                })
            }
        }
    }

    pub fn del(&self, conf: &NetConf, args: &Args) -> Result<()> {
        match self {
            Ipam::Local(c) => ipam::release(c, &args.container_id, &args.ifname),
            Ipam::Exec { .. } => self.exec("DEL", conf).map(drop),
        }
    }

    pub fn check(&self, conf: &NetConf, args: &Args, prev: &CniResult) -> Result<()> {
        match self {
            Ipam::Local(c) => ipam::check(c, &args.container_id, &args.ifname, &prev.ips),
            Ipam::Exec { .. } => self.exec("CHECK", conf).map(drop),
        }
    }

    pub fn gc(&self, conf: &NetConf, valid: &HashSet<Attachment>) -> Result<()> {
        match self {
            Ipam::Local(c) => ipam::gc(c, valid).map(drop),
            Ipam::Exec { .. } => self.exec("GC", conf).map(drop),
        }
    }

    pub fn status(&self, conf: &NetConf) -> Result<()> {
        match self {
            Ipam::Local(c) => ipam::status(c),
            Ipam::Exec { .. } => self.exec("STATUS", conf).map(drop),
        }
    }

    /// Runs the delegated plugin with our environment (the same CNI_* the
    /// runtime gave us) but `command`, the same
    /// configuration on stdin; returns its stdout or its spec error.
    fn exec(&self, command: &str, conf: &NetConf) -> Result<Vec<u8>> {
        let Ipam::Exec { plugin, path } = self else {
            unreachable!("exec is only called for delegated IPAM")
        };
        let bin = path
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::Delegate {
                plugin: plugin.clone(),
                msg: format!("not found in CNI_PATH {path:?}"),
            })?;
        let stdin = serde_json::to_vec(&conf.raw).map_err(|source| Error::Decode {
            what: "network configuration",
            source,
        })?;
        let io = |e| Error::io(format!("run {}", bin.display()), e);
        let mut child = Command::new(&bin)
            .env("CNI_COMMAND", command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(io)?;
        if let Some(mut w) = child.stdin.take() {
            w.write_all(&stdin).map_err(io)?;
        }
        let out = child.wait_with_output().map_err(io)?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let msg = match serde_json::from_slice::<SpecError>(&out.stdout) {
            Ok(e) => format!("code {}: {} {}", e.code, e.msg, e.details),
            Err(_) => format!("{}: {}", out.status, String::from_utf8_lossy(&out.stdout)),
        };
        Err(Error::Delegate {
            plugin: plugin.clone(),
            msg,
        })
    }
}
