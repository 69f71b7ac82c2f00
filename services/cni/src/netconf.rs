//! The network configuration on stdin, read field by field so every error
//! names the field at fault.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::result::{CniResult, Dns};

/// The fields every Kiln plugin reads; plugin-specific ones are read from
/// `raw` by the plugin.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub kind: String,
    pub dns: Dns,
    pub prev_result: Option<CniResult>,
    pub raw: Map<String, Value>,
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<Self> {
        let v: Value = serde_json::from_slice(stdin).map_err(|source| Error::Decode {
            what: "network configuration",
            source,
        })?;
        let Value::Object(raw) = v else {
            return Err(Error::config(
                "(root)",
                "network configuration must be a JSON object",
            ));
        };
        let cni_version = req_str(&raw, "cniVersion")?;
        crate::version::check(&cni_version)?;
        let name = req_str(&raw, "name")?;
        let kind = req_str(&raw, "type")?;
        let dns = match raw.get("dns") {
            None | Some(Value::Null) => Dns::default(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| Error::config("dns", e.to_string()))?,
        };
        let prev_result = match raw.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value(v.clone())
                    .map_err(|e| Error::config("prevResult", e.to_string()))?,
            ),
        };
        Ok(NetConf {
            cni_version,
            name,
            kind,
            dns,
            prev_result,
            raw,
        })
    }

    pub fn opt_str(&self, field: &'static str) -> Result<Option<String>> {
        match self.raw.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(Error::config(
                field,
                format!("expected a string, got {other}"),
            )),
        }
    }

    pub fn bool(&self, field: &'static str) -> Result<bool> {
        match self.raw.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(Error::config(
                field,
                format!("expected true or false, got {other}"),
            )),
        }
    }

    pub fn opt_u32(&self, field: &'static str) -> Result<Option<u32>> {
        match self.raw.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    Error::config(field, format!("expected an unsigned integer, got {v}"))
                }),
        }
    }

    /// The `ipam` object, required by plugins that allocate addresses.
    pub fn ipam(&self) -> Result<&Value> {
        match self.raw.get("ipam") {
            Some(v @ Value::Object(o)) if o.get("type").and_then(Value::as_str).is_some() => Ok(v),
            Some(Value::Object(_)) => Err(Error::config("ipam.type", "missing")),
            Some(other) => Err(Error::config(
                "ipam",
                format!("expected an object, got {other}"),
            )),
            None => Err(Error::config("ipam", "missing")),
        }
    }

    /// GC's `cni.dev/valid-attachments`: (container id, ifname) pairs to keep.
    pub fn valid_attachments(&self) -> Result<std::collections::HashSet<(String, String)>> {
        const FIELD: &str = "cni.dev/valid-attachments";
        let Some(v) = self.raw.get(FIELD) else {
            return Err(Error::config(FIELD, "missing"));
        };
        let list = v
            .as_array()
            .ok_or_else(|| Error::config(FIELD, "expected an array"))?;
        list.iter()
            .enumerate()
            .map(|(i, a)| {
                let get = |k: &str| {
                    a.get(k)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| Error::config(format!("{FIELD}[{i}].{k}"), "missing"))
                };
                Ok((get("containerID")?, get("ifname")?))
            })
            .collect()
    }
}

fn req_str(raw: &Map<String, Value>, field: &'static str) -> Result<String> {
    match raw.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(Error::config(field, "missing")),
        Some(other) => Err(Error::config(
            field,
            format!("expected a string, got {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_fields_and_codes() {
        let e = NetConf::parse(b"{not json").unwrap_err();
        assert_eq!(e.code(), 6);
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","type":"x"}"#).unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("name"));
        let e = NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n","type":"x"}"#).unwrap_err();
        assert_eq!(e.code(), 1);
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"x","mtu":"big","isGateway":1}"#,
        )
        .unwrap();
        assert!(c.opt_u32("mtu").unwrap_err().to_string().contains("mtu"));
        assert!(c
            .bool("isGateway")
            .unwrap_err()
            .to_string()
            .contains("isGateway"));
        assert!(c.ipam().unwrap_err().to_string().contains("ipam"));
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"x","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert!(c
            .valid_attachments()
            .unwrap()
            .contains(&("a".into(), "eth0".into())));
    }
}
