//! CNI spec versions this plugin speaks.

use crate::error::{Error, Result};

/// Every version a config may name; results are written in that version's shape.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Whether results of this version carry the pre-1.0 `"version": "4"` field on IPs.
pub fn legacy_ip_version_field(v: &str) -> bool {
    v.starts_with("0.")
}

/// Fails with the spec's code 1 unless `v` is one we implement.
pub fn check(v: &str) -> Result<()> {
    if SUPPORTED.contains(&v) {
        Ok(())
    } else {
        Err(Error::IncompatibleVersion(format!(
            "{v} (supported: {})",
            SUPPORTED.join(", ")
        )))
    }
}

/// CHECK arrived in 0.4.0; STATUS and GC in 1.1.0.
pub fn at_least(v: &str, min: &str) -> bool {
    parse(v) >= parse(min)
}

fn parse(v: &str) -> (u32, u32, u32) {
    let mut it = v.split('.').map(|p| p.parse().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// The VERSION command's answer.
pub fn version_json(cni_version: &str) -> serde_json::Value {
    serde_json::json!({ "cniVersion": cni_version, "supportedVersions": SUPPORTED })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_and_check() {
        assert!(at_least("1.1.0", "1.0.0"));
        assert!(at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(check("1.1.0").is_ok());
        assert_eq!(check("2.0.0").unwrap_err().code(), 1);
    }
}
