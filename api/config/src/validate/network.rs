//! Network checks: link selectors, duplicates (links, VLAN ids, addresses),
//! addresses and routes, MTUs, bonds.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{syntax, Checker};
use crate::error::Problem;
use crate::network::{Interface, Network, Route};
use crate::path::FieldPath;

const MTU_MIN: u32 = 68;
const MTU_MAX: u32 = 65535;

pub(super) fn network(c: &mut Checker, net: &Network, path: &FieldPath) {
    let mut links = BTreeMap::new();
    let mut addresses = BTreeMap::new();
    let mut bond_members = BTreeMap::new();
    for (i, link) in net.interfaces.iter().enumerate() {
        let p = path.key("interfaces").index(i);
        selector(c, link, &p, &mut links);
        let l3 = L3 {
            addresses: &link.addresses,
            routes: &link.routes,
            mtu: link.mtu,
        };
        l3.check(c, &p, &mut addresses);
        if let Some(bond) = &link.bond {
            let bp = p.key("bond");
            if link.name.is_none() {
                c.push(
                    bp.clone(),
                    Problem::Conflict("a bond needs `name`, its link's name".into()),
                );
            }
            if bond.members.is_empty() {
                c.push(
                    bp.key("members"),
                    Problem::Required {
                        why: "a bond needs a member",
                    },
                );
            }
            for (j, m) in bond.members.iter().enumerate() {
                let mp = bp.key("members").index(j);
                c.check(
                    &mp,
                    m,
                    "a link name or MAC address",
                    syntax::link_selector(m),
                );
                if link.name.as_deref() == Some(m.as_str()) {
                    c.push(
                        mp.clone(),
                        Problem::Conflict("a bond cannot be its own member".into()),
                    );
                }
                c.unique(
                    &mut bond_members,
                    &mp,
                    "bond member",
                    m.to_ascii_lowercase(),
                );
            }
        }
        let mut ids = BTreeMap::new();
        for (j, vlan) in link.vlans.iter().enumerate() {
            let vp = p.key("vlans").index(j);
            if !(1..=4094).contains(&vlan.id) {
                let value = u64::from(vlan.id);
                c.push(
                    vp.key("id"),
                    Problem::OutOfRange {
                        value,
                        min: 1,
                        max: 4094,
                    },
                );
            }
            c.unique(&mut ids, &vp.key("id"), "VLAN id", vlan.id.to_string());
            let l3 = L3 {
                addresses: &vlan.addresses,
                routes: &vlan.routes,
                mtu: vlan.mtu,
            };
            l3.check(c, &vp, &mut addresses);
            if let (Some(v), Some(parent)) = (vlan.mtu, link.mtu) {
                if v > parent {
                    let msg = format!("VLAN MTU {v} is larger than its link's MTU {parent}");
                    c.push(vp.key("mtu"), Problem::Conflict(msg));
                }
            }
        }
    }
    // A bond member carries no configuration of its own.
    for (i, link) in net.interfaces.iter().enumerate() {
        let selector = link
            .name
            .as_ref()
            .or(link.mac.as_ref())
            .map(|s| s.to_ascii_lowercase());
        let Some(bond_path) = selector.and_then(|s| bond_members.get(&s)) else {
            continue;
        };
        if link.dhcp
            || !link.addresses.is_empty()
            || !link.routes.is_empty()
            || !link.vlans.is_empty()
        {
            let msg = format!(
                "is a bond member ({bond_path}): configure addresses, routes and VLANs on the bond"
            );
            c.push(path.key("interfaces").index(i), Problem::Conflict(msg));
        }
    }
    for (i, server) in net.dns.servers.iter().enumerate() {
        let p = path.key("dns").key("servers").index(i);
        c.check(&p, server, "an IP address", syntax::ip(server).map(drop));
    }
    for (i, domain) in net.dns.search_domains.iter().enumerate() {
        let p = path.key("dns").key("searchDomains").index(i);
        c.check(&p, domain, "a domain name", syntax::dns_name(domain));
    }
}

/// Exactly one of name and MAC, well-formed, not used by another link.
fn selector(
    c: &mut Checker,
    link: &Interface,
    p: &FieldPath,
    links: &mut BTreeMap<String, FieldPath>,
) {
    match (&link.name, &link.mac) {
        (Some(name), None) => {
            c.check(&p.key("name"), name, "a link name", syntax::ifname(name));
            c.unique(links, &p.key("name"), "interface", name.clone());
        }
        (None, Some(mac)) => {
            c.check(&p.key("mac"), mac, "a MAC address", syntax::mac(mac));
            // MACs compare without regard to case.
            c.unique(links, &p.key("mac"), "interface", mac.to_ascii_lowercase());
        }
        _ => c.push(
            p.clone(),
            Problem::Conflict("set exactly one of `name` and `mac`".into()),
        ),
    }
}

/// The layer-3 settings shared by links and VLANs.
/// (DHCP combines with static addresses, so it needs no check.)
struct L3<'a> {
    addresses: &'a [String],
    routes: &'a [Route],
    mtu: Option<u32>,
}

impl L3<'_> {
    fn check(&self, c: &mut Checker, p: &FieldPath, seen: &mut BTreeMap<String, FieldPath>) {
        for (i, a) in self.addresses.iter().enumerate() {
            let ap = p.key("addresses").index(i);
            let check = syntax::cidr(a).and_then(|net| {
                let ip = net.addr();
                if ip.is_unspecified() || ip.is_multicast() {
                    Err("unspecified and multicast addresses cannot be assigned".into())
                } else {
                    Ok(ip)
                }
            });
            match check {
                Ok(ip) => c.unique(seen, &ap, "address", ip.to_string()),
                Err(reason) => c.check(&ap, a, "a CIDR address", Err(reason)),
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            route(c, r, &p.key("routes").index(i));
        }
        if let Some(mtu) = self.mtu {
            if !(MTU_MIN..=MTU_MAX).contains(&mtu) {
                let (value, min, max) = (u64::from(mtu), u64::from(MTU_MIN), u64::from(MTU_MAX));
                c.push(p.key("mtu"), Problem::OutOfRange { value, min, max });
            }
        }
    }
}

fn route(c: &mut Checker, r: &Route, p: &FieldPath) {
    let to = syntax::cidr(&r.to).and_then(|net| {
        if net.trunc() == net {
            Ok(net)
        } else {
            Err(format!("host bits set; did you mean {}?", net.trunc()))
        }
    });
    let to = match to {
        Ok(net) => Some(net),
        Err(reason) => {
            c.check(&p.key("to"), &r.to, "a destination network", Err(reason));
            None
        }
    };
    let Some(via) = &r.via else { return };
    match syntax::ip(via) {
        Err(reason) => c.check(&p.key("via"), via, "a gateway IP address", Err(reason)),
        Ok(gw) => {
            if let Some(to) = to {
                if matches!(gw, IpAddr::V4(_)) != matches!(to.addr(), IpAddr::V4(_)) {
                    let msg =
                        format!("gateway {gw} and destination {to} are of different IP families");
                    c.push(p.key("via"), Problem::Conflict(msg));
                }
            }
        }
    }
}
