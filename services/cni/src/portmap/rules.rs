//! The nftables rules of one pod's port mappings, in table `kiln-portmap`
//! of each IP family the pod has an address in:
//!
//! ```text
//! chain dnat-prerouting { type nat hook prerouting priority -100 }  # from other hosts and pods
//! chain dnat-output     { type nat hook output priority -100 }      # from the host itself
//!   fib daddr type local  meta l4proto tcp  th dport 8080  dnat to <pod>:80
//!   (ip daddr <hostIP> instead of `fib daddr type local` when the mapping names one)
//! chain masquerade      { type nat hook postrouting priority 100 }
//!   ct status dnat  ip daddr <pod>  ip saddr <pod subnet>  masquerade   # hairpin, other pods
//!   ip saddr 127.0.0.1  ip daddr <pod>  masquerade                      # from localhost (IPv4)
//! ```
//!
//! Why the masquerades: a pod reaching a host port that leads back to its
//! own subnet (itself, or a pod on the same bridge) would get the answer
//! straight over the bridge, from an address it never talked to; seen from
//! the bridge's address, the answer comes back through the host and is
//! un-NATed. Localhost sources cannot leave the host at all.
//!
//! Every rule carries the attachment's tag as user data, so DEL, CHECK and
//! GC find them by listing the table; nothing is kept on disk.

use std::net::IpAddr;

use ipnet::IpNet;

use super::mappings::PortMapping;
use crate::nft::expr::{
    Base, CmpOp, Expr, CT_STATUS, CT_STATUS_DNAT, META_L4PROTO, REG_1, REG_2, RTN_LOCAL,
};
use crate::nft::{BaseChain, Batch, Family, Hook};

pub const TABLE: &str = "kiln-portmap";
pub const PREROUTING: BaseChain = BaseChain {
    name: "dnat-prerouting",
    hook: Hook::Prerouting,
    kind: "nat",
    priority: -100,
};
pub const OUTPUT: BaseChain = BaseChain {
    name: "dnat-output",
    hook: Hook::Output,
    kind: "nat",
    priority: -100,
};
pub const POSTROUTING: BaseChain = BaseChain {
    name: "masquerade",
    hook: Hook::Postrouting,
    kind: "nat",
    priority: 100,
};

const TAG_PREFIX: &str = "kiln-portmap ";

/// The user data that marks an attachment's rules.
pub fn tag(container_id: &str, ifname: &str) -> Vec<u8> {
    format!("{TAG_PREFIX}{container_id} {ifname}").into_bytes()
}

/// The (container id, ifname) a tag names.
pub fn parse_tag(tag: &[u8]) -> Option<(String, String)> {
    let s = std::str::from_utf8(tag).ok()?.strip_prefix(TAG_PREFIX)?;
    let (id, ifname) = s.rsplit_once(' ')?;
    Some((id.to_string(), ifname.to_string()))
}

/// A pod address and its subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pod {
    pub addr: IpAddr,
    pub subnet: IpNet,
}

impl Pod {
    pub fn family(&self) -> Family {
        family(self.addr)
    }
}

pub fn family(ip: IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

fn bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Loads the source or destination address into REG_1.
fn address(pod_family: Family, source: bool) -> Expr {
    let (offset, len) = match (pod_family, source) {
        (Family::Ipv4, true) => (12, 4),
        (Family::Ipv4, false) => (16, 4),
        (Family::Ipv6, true) => (8, 16),
        (Family::Ipv6, false) => (24, 16),
    };
    Expr::Payload {
        base: Base::Network,
        offset,
        len,
        dreg: REG_1,
    }
}

fn eq(data: Vec<u8>) -> Expr {
    Expr::Cmp {
        sreg: REG_1,
        op: CmpOp::Eq,
        data,
    }
}

/// DNAT of one mapping to the pod (the same rule serves both DNAT chains).
pub fn dnat(m: &PortMapping, pod: &Pod) -> Vec<Expr> {
    let mut e = match m.host_ip {
        Some(ip) => vec![address(pod.family(), false), eq(bytes(ip))],
        None => vec![
            Expr::FibDaddrType { dreg: REG_1 },
            eq(RTN_LOCAL.to_ne_bytes().to_vec()),
        ],
    };
    e.extend([
        Expr::Meta {
            key: META_L4PROTO,
            dreg: REG_1,
        },
        eq(vec![m.protocol as u8]),
        // The destination port: bytes 2-3 of the TCP, UDP and SCTP headers.
        Expr::Payload {
            base: Base::Transport,
            offset: 2,
            len: 2,
            dreg: REG_1,
        },
        eq(m.host_port.to_be_bytes().to_vec()),
        Expr::Immediate {
            dreg: REG_1,
            data: bytes(pod.addr),
        },
        Expr::Immediate {
            dreg: REG_2,
            data: m.container_port.to_be_bytes().to_vec(),
        },
        Expr::Dnat {
            family: pod.family() as u32,
            addr: REG_1,
            port: REG_2,
        },
    ]);
    e
}

/// The masquerade rules of a pod (see the module comment).
pub fn masquerades(pod: &Pod) -> Vec<Vec<Expr>> {
    let mask = bytes(pod.subnet.netmask());
    let zeros = vec![0; mask.len()];
    let mut rules = vec![vec![
        Expr::Ct {
            key: CT_STATUS,
            dreg: REG_1,
        },
        Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask: CT_STATUS_DNAT.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Neq,
            data: vec![0; 4],
        },
        address(pod.family(), false),
        eq(bytes(pod.addr)),
        address(pod.family(), true),
        Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask,
            xor: zeros,
        },
        eq(bytes(pod.subnet.network())),
        Expr::Masquerade,
    ]];
    if pod.family() == Family::Ipv4 {
        rules.push(vec![
            address(Family::Ipv4, true),
            eq(vec![127, 0, 0, 1]),
            address(Family::Ipv4, false),
            eq(bytes(pod.addr)),
            Expr::Masquerade,
        ]);
    }
    rules
}

/// How many rules each chain holds for one pod address with `mappings`.
pub fn expected(pod: &Pod, mappings: &[PortMapping]) -> [(&'static str, usize); 3] {
    let n = mappings
        .iter()
        .filter(|m| m.host_ip.is_none_or(|ip| family(ip) == pod.family()))
        .count();
    [
        (PREROUTING.name, n),
        (OUTPUT.name, n),
        (POSTROUTING.name, masquerades(pod).len()),
    ]
}

/// Adds the table, chains and one pod address's rules to `batch`.
pub fn add(batch: &mut Batch, pod: &Pod, mappings: &[PortMapping], tag: &[u8]) {
    let f = pod.family();
    batch.add_table(f, TABLE);
    for chain in [PREROUTING, OUTPUT, POSTROUTING] {
        batch.add_chain(f, TABLE, &chain);
    }
    for m in mappings
        .iter()
        .filter(|m| m.host_ip.is_none_or(|ip| family(ip) == f))
    {
        let rule = dnat(m, pod);
        batch.add_rule(f, TABLE, PREROUTING.name, &rule, tag);
        batch.add_rule(f, TABLE, OUTPUT.name, &rule, tag);
    }
    for rule in masquerades(pod) {
        batch.add_rule(f, TABLE, POSTROUTING.name, &rule, tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let t = tag("abc123", "eth0");
        assert_eq!(parse_tag(&t), Some(("abc123".into(), "eth0".into())));
        assert_eq!(parse_tag(b"other"), None);
    }

    #[test]
    fn dnat_matches_local_addresses_or_the_host_ip() {
        let pod = Pod {
            addr: "10.88.0.5".parse().unwrap(),
            subnet: "10.88.0.0/24".parse().unwrap(),
        };
        let mut m = PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: super::super::mappings::Protocol::Tcp,
            host_ip: None,
        };
        let e = dnat(&m, &pod);
        assert_eq!(e[0], Expr::FibDaddrType { dreg: REG_1 });
        assert!(e.contains(&eq(vec![0x1f, 0x90])));
        assert!(e.contains(&Expr::Immediate {
            dreg: REG_2,
            data: vec![0, 80]
        }));
        m.host_ip = Some("192.0.2.1".parse().unwrap());
        let e = dnat(&m, &pod);
        assert_eq!(e[1], eq(vec![192, 0, 2, 1]));
        assert_eq!(masquerades(&pod).len(), 2);
        assert_eq!(
            expected(&pod, &[m]),
            [
                ("dnat-prerouting", 1),
                ("dnat-output", 1),
                ("masquerade", 2)
            ]
        );
    }
}
