//! `runtimeConfig.portMappings` (the `portMappings` capability), read field
//! by field so an error names the mapping and field at fault.

use std::net::IpAddr;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::netconf::NetConf;

/// IP protocol numbers of the protocols a mapping may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp = 6,
    Udp = 17,
    Sctp = 132,
}

/// One host port forwarded to the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Only traffic to this host address; `None`: any local address.
    pub host_ip: Option<IpAddr>,
}

/// The mappings a runtime passed; none when it passed none.
pub fn parse(conf: &NetConf) -> Result<Vec<PortMapping>> {
    let Some(list) = conf
        .raw
        .get("runtimeConfig")
        .and_then(|r| r.get("portMappings"))
    else {
        return Ok(Vec::new());
    };
    let list = match list {
        Value::Null => return Ok(Vec::new()),
        Value::Array(l) => l,
        other => {
            return Err(Error::config(
                "runtimeConfig.portMappings",
                format!("expected an array, got {other}"),
            ))
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| mapping(m, &format!("runtimeConfig.portMappings[{i}]")))
        .collect()
}

fn mapping(m: &Value, path: &str) -> Result<PortMapping> {
    let port = |field: &str| -> Result<u16> {
        let v = m
            .get(field)
            .ok_or_else(|| Error::config(format!("{path}.{field}"), "missing"))?;
        v.as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0)
            .ok_or_else(|| {
                Error::config(
                    format!("{path}.{field}"),
                    format!("expected a port 1-65535, got {v}"),
                )
            })
    };
    let protocol = match m.get("protocol") {
        None | Some(Value::Null) => Protocol::Tcp,
        Some(Value::String(p)) => match p.to_ascii_lowercase().as_str() {
            "" | "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            _ => {
                return Err(Error::config(
                    format!("{path}.protocol"),
                    format!("{p:?} is not tcp, udp or sctp"),
                ))
            }
        },
        Some(other) => {
            return Err(Error::config(
                format!("{path}.protocol"),
                format!("expected a string, got {other}"),
            ))
        }
    };
    let host_ip = match m.get("hostIP") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            let ip: IpAddr = s.parse().map_err(|_| {
                Error::config(format!("{path}.hostIP"), format!("{s:?} is not an IP"))
            })?;
            // 0.0.0.0 and :: mean "every address", as in Kubernetes.
            (!ip.is_unspecified()).then_some(ip)
        }
        Some(other) => {
            return Err(Error::config(
                format!("{path}.hostIP"),
                format!("expected a string, got {other}"),
            ))
        }
    };
    Ok(PortMapping {
        host_port: port("hostPort")?,
        container_port: port("containerPort")?,
        protocol,
        host_ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(mappings: Value) -> NetConf {
        let c = serde_json::json!({
            "cniVersion": "1.0.0", "name": "n", "type": "kiln-portmap",
            "runtimeConfig": {"portMappings": mappings}
        });
        NetConf::parse(c.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn mappings_and_their_errors() {
        let m = parse(&conf(serde_json::json!([
            {"hostPort": 8080, "containerPort": 80, "protocol": "TCP"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "10.0.0.1"},
            {"hostPort": 9, "containerPort": 9, "hostIP": "0.0.0.0"},
        ])))
        .unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].protocol, Protocol::Tcp);
        assert_eq!(m[1].host_ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(m[2].host_ip, None);
        let e = parse(&conf(
            serde_json::json!([{"hostPort": 70000, "containerPort": 1}]),
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("runtimeConfig.portMappings[0].hostPort"),
            "{e}"
        );
        let e = parse(&conf(
            serde_json::json!([{"hostPort": 1, "containerPort": 1, "protocol": "icmp"}]),
        ))
        .unwrap_err();
        assert!(e.to_string().contains("[0].protocol"), "{e}");
        let e = parse(&conf(serde_json::json!([{"hostPort": 1}]))).unwrap_err();
        assert!(e.to_string().contains("[0].containerPort: missing"), "{e}");
    }
}
