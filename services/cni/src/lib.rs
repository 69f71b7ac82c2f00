//! Kiln's CNI plugins (spec 1.0/1.1): `kiln-bridge`, `kiln-host-local`,
//! `kiln-loopback` and `kiln-portmap`, one library behind one multi-call
//! binary.
//!
//! Every plugin works over netlink (rtnetlink, and nf_tables in `nft`) and
//! files; nothing here runs `ip`, `nft` or any other program, except an
//! IPAM plugin a configuration names explicitly (spec delegation).

pub mod bridge;
pub mod cli;
pub mod delegate;
pub mod env;
pub mod error;
pub mod host_local;
pub mod ipam;
pub mod loopback;
pub mod netconf;
pub mod netns;
pub mod nft;
pub mod nl;
pub mod portmap;
pub mod result;
pub mod sysctl;
pub mod version;

use env::{Args, Command};
use error::{Error, Result};
use netconf::NetConf;

pub const BRIDGE: &str = "kiln-bridge";
pub const HOST_LOCAL: &str = "kiln-host-local";
pub const LOOPBACK: &str = "kiln-loopback";
pub const PORTMAP: &str = "kiln-portmap";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    Bridge,
    HostLocal,
    Loopback,
    Portmap,
}

impl Plugin {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            BRIDGE => Some(Plugin::Bridge),
            HOST_LOCAL => Some(Plugin::HostLocal),
            LOOPBACK => Some(Plugin::Loopback),
            PORTMAP => Some(Plugin::Portmap),
            _ => None,
        }
    }
}

/// The cniVersion to answer in, read leniently: even a config we reject
/// deserves an error in the version it asked for.
pub fn requested_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| version::SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| version::SUPPORTED[version::SUPPORTED.len() - 1].to_string())
}

/// Runs one invocation; `Some(json)` is printed on stdout.
pub fn run(plugin: Plugin, args: &Args, stdin: &[u8]) -> Result<Option<serde_json::Value>> {
    if args.command == Command::Version {
        return Ok(Some(version::version_json(&requested_version(stdin))));
    }
    let conf = NetConf::parse(stdin)?;
    let min = match args.command {
        Command::Check => "0.4.0",
        Command::Status | Command::Gc => "1.1.0",
        _ => "0.3.0",
    };
    if !version::at_least(&conf.cni_version, min) {
        return Err(Error::IncompatibleVersion(format!(
            "{} does not allow {:?} (needs {min} or later)",
            conf.cni_version, args.command
        )));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| Error::io("start the netlink runtime", e))?;
    let result = match plugin {
        Plugin::Bridge => rt.block_on(bridge::run(&conf, args))?,
        Plugin::HostLocal => host_local::run(&conf, args)?,
        Plugin::Loopback => rt.block_on(loopback::run(&conf, args))?,
        Plugin::Portmap => portmap::run(&conf, args)?,
    };
    result
        .map(|r| {
            serde_json::to_value(r.into_version(&conf.cni_version)).map_err(|source| {
                Error::Decode {
                    what: "result",
                    source,
                }
            })
        })
        .transpose()
}
