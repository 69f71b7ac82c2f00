//! The CNI_* environment a runtime passes to a plugin.

use std::path::PathBuf;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

/// One invocation's parameters. Which are required depends on the command
/// (spec §"Parameters"); `from_env` enforces that so handlers can rely on them.
#[derive(Debug, Clone)]
pub struct Args {
    pub command: Command,
    pub container_id: String,
    /// Empty for DEL when the runtime no longer has the namespace.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// Directories searched for delegated (IPAM) plugins.
    pub path: Vec<PathBuf>,
}

impl Args {
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some(other) => {
                return Err(Error::InvalidEnv {
                    name: "CNI_COMMAND",
                    why: format!("unknown command {other:?}"),
                })
            }
            None => {
                return Err(Error::InvalidEnv {
                    name: "CNI_COMMAND",
                    why: "not set".into(),
                })
            }
        };
        let per_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let required = |name: &'static str, needed: bool| -> Result<String> {
            match get(name) {
                Some(v) => Ok(v),
                None if needed => Err(Error::InvalidEnv {
                    name,
                    why: "not set".into(),
                }),
                None => Ok(String::new()),
            }
        };
        let container_id = required("CNI_CONTAINERID", per_attachment)?;
        let ifname = required("CNI_IFNAME", per_attachment)?;
        validate_ifname(&ifname, per_attachment)?;
        let netns = required(
            "CNI_NETNS",
            matches!(command, Command::Add | Command::Check),
        )?;
        let path = get("CNI_PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        Ok(Args {
            command,
            container_id,
            netns: (!netns.is_empty()).then(|| PathBuf::from(netns)),
            ifname,
            path,
        })
    }
}

/// Linux interface names: 1–15 bytes, no '/', ':' or whitespace, not "." or "..".
fn validate_ifname(name: &str, needed: bool) -> Result<()> {
    if !needed {
        return Ok(());
    }
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(Error::InvalidEnv {
            name: "CNI_IFNAME",
            why: format!("{name:?} is not a valid interface name"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args(pairs: &[(&str, &str)]) -> Result<Args> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Args::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn required_per_command() {
        assert!(args(&[("CNI_COMMAND", "VERSION")]).is_ok());
        let e = args(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c")]).unwrap_err();
        assert_eq!(e.code(), 4);
        assert!(e.to_string().contains("CNI_IFNAME"));
        // DEL may come without a netns (the runtime already removed it).
        let a = args(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert!(a.netns.is_none());
        let e = args(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "a-very-long-interface-name"),
            ("CNI_NETNS", "/run/netns/x"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("CNI_IFNAME"));
    }
}
