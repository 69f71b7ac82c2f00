//! Kernel settings pods need, in the plugin's own network namespace.

use std::fs;

use crate::error::{Error, Result};

pub const IPV4_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
pub const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";
/// Bridged pod traffic through the IP hooks (Kubernetes' requirement, so
/// Service NAT applies between pods on one bridge). Present only where
/// br_netfilter is loaded or built in.
pub const BRIDGE_NF_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
pub const BRIDGE_NF_IP6TABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-ip6tables";

/// Sets `path` to `value` unless it already is: most ADDs then only read.
pub fn ensure(path: &str, value: &str) -> Result<()> {
    let cur = fs::read_to_string(path).map_err(|e| Error::io(format!("read {path}"), e))?;
    if cur.trim() == value {
        return Ok(());
    }
    fs::write(path, value).map_err(|e| Error::io(format!("write {path}"), e))
}

/// [`ensure`] for a setting that only exists with some kernel feature:
/// without the file there is nothing to set.
pub fn ensure_if_present(path: &str, value: &str) -> Result<()> {
    if std::path::Path::new(path).exists() {
        ensure(path, value)
    } else {
        Ok(())
    }
}
