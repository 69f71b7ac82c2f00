//! Kernel settings pods need, in the plugin's own network namespace.

use std::fs;

use crate::error::{Error, Result};

pub const IPV4_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
pub const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Sets `path` to `value` unless it already is: most ADDs then only read.
pub fn ensure(path: &str, value: &str) -> Result<()> {
    let cur = fs::read_to_string(path).map_err(|e| Error::io(format!("read {path}"), e))?;
    if cur.trim() == value {
        return Ok(());
    }
    fs::write(path, value).map_err(|e| Error::io(format!("write {path}"), e))
}
