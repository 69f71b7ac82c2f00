//! host-local IPAM: addresses from configured ranges, recorded in an on-disk
//! store on the node.

mod addr;
pub mod config;
pub mod store;

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use addr::{from_u128, to_u128};
pub use config::IpamConfig;
use config::RangeSet;
use store::Store;

use crate::error::{Error, Result};
use crate::result::{CniResult, IpConfig};

/// An attachment's identity in the store and in GC's valid list.
pub type Attachment = (String, String);

/// Reserves one address from every range set for the attachment.
pub fn allocate(cfg: &IpamConfig, container_id: &str, ifname: &str) -> Result<CniResult> {
    let store = Store::open(&cfg.store_dir)?;
    let held = store.held_by(container_id, ifname)?;
    if !held.is_empty() {
        return Err(Error::AlreadyAllocated(format!(
            "{container_id}/{ifname} already holds {}; duplicate allocation is not allowed",
            held.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut ips = Vec::new();
    for (n, set) in cfg.range_sets.iter().enumerate() {
        match reserve_in_set(&store, set, n, container_id, ifname) {
            Ok(ip) => ips.push(ip),
            Err(e) => {
                // All or nothing: hand back what earlier sets reserved.
                for ip in &ips {
                    let ip: &IpConfig = ip;
                    store.release(ip.address.addr())?;
                }
                return Err(e);
            }
        }
    }
    Ok(CniResult {
        ips,
        routes: cfg.routes.clone(),
        ..Default::default()
    })
}

fn reserve_in_set(
    store: &Store,
    set: &RangeSet,
    n: usize,
    container_id: &str,
    ifname: &str,
) -> Result<IpConfig> {
    for (range, ip) in walk(set, store.last_reserved(n)) {
        if store.reserve(ip, container_id, ifname, n)? {
            let address = IpNet::new(ip, range.subnet.prefix_len())
                .map_err(|e| Error::config("ipam.ranges", e.to_string()))?;
            return Ok(IpConfig {
                version: None,
                address,
                gateway: range.gateway,
                interface: None,
            });
        }
    }
    Err(Error::NoAddress(describe(set)))
}

fn describe(set: &RangeSet) -> String {
    set.iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(",")
}

/// Candidate addresses of a range set, round-robin like the reference
/// plugin: starting just after `last` (when it is still inside the set),
/// wrapping once around every range, skipping each range's gateway.
/// Yields at most one full cycle, so a full set ends the walk.
fn walk(
    set: &RangeSet,
    last: Option<IpAddr>,
) -> impl Iterator<Item = (&config::Range, IpAddr)> + '_ {
    let resume = last.and_then(|ip| {
        set.iter()
            .position(|r| r.contains(ip))
            .map(|i| (i, to_u128(ip)))
    });
    // Position = (range index, address); `step` moves one address forward.
    let step = move |(i, a): (usize, u128)| -> (usize, u128) {
        if a < to_u128(set[i].end) {
            (i, a + 1)
        } else {
            let j = (i + 1) % set.len();
            (j, to_u128(set[j].start))
        }
    };
    let first = match resume {
        Some(pos) => step(pos),
        None => (0, to_u128(set[0].start)),
    };
    let mut pos = Some(first);
    std::iter::from_fn(move || {
        let cur = pos?;
        let next = step(cur);
        pos = (next != first).then_some(next);
        Some(cur)
    })
    .map(move |(i, a)| (&set[i], from_u128(a, set[i].start.is_ipv4())))
    .filter(|(r, ip)| r.gateway != Some(*ip))
}

/// Releases whatever the attachment holds; releasing nothing is success.
pub fn release(cfg: &IpamConfig, container_id: &str, ifname: &str) -> Result<()> {
    let store = Store::open(&cfg.store_dir)?;
    for ip in store.held_by(container_id, ifname)? {
        store.release(ip)?;
    }
    Ok(())
}

/// CHECK: the store still records every address the result names.
pub fn check(cfg: &IpamConfig, container_id: &str, ifname: &str, ips: &[IpConfig]) -> Result<()> {
    let store = Store::open(&cfg.store_dir)?;
    let held = store.held_by(container_id, ifname)?;
    for ip in ips {
        if !held.contains(&ip.address.addr()) {
            return Err(Error::Check(format!(
                "host-local store {} has no reservation of {} for {container_id}/{ifname}",
                cfg.store_dir.display(),
                ip.address.addr()
            )));
        }
    }
    Ok(())
}

/// GC: releases every reservation whose attachment is not in `valid`.
pub fn gc(cfg: &IpamConfig, valid: &HashSet<Attachment>) -> Result<usize> {
    let store = Store::open(&cfg.store_dir)?;
    let mut released = 0;
    for e in store.entries()? {
        if !valid.contains(&(e.container_id.clone(), e.ifname.clone())) {
            store.release(e.ip)?;
            released += 1;
        }
    }
    Ok(released)
}

/// STATUS: the store is usable and every range set has a free address.
pub fn status(cfg: &IpamConfig) -> Result<()> {
    let store = Store::open(&cfg.store_dir)?;
    let taken: HashSet<IpAddr> = store.entries()?.into_iter().map(|e| e.ip).collect();
    for set in &cfg.range_sets {
        if walk(set, None).all(|(_, ip)| taken.contains(&ip)) {
            return Err(Error::NotAvailable(format!(
                "range set {} is full",
                describe(set)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(dir: &std::path::Path, ranges: serde_json::Value) -> IpamConfig {
        IpamConfig::parse(
            "t",
            &json!({"type": "kiln-host-local", "ranges": ranges, "dataDir": dir}),
        )
        .unwrap()
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-ipam-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_robin_skips_gateway_and_wraps() {
        let dir = tmp("rr");
        let c = cfg(&dir, json!([[{"subnet": "10.0.0.0/29"}]]));
        // .1 is the gateway, .7 broadcast: .2-.6 are usable.
        let mut got = Vec::new();
        for i in 0..5 {
            let r = allocate(&c, &format!("c{i}"), "eth0").unwrap();
            got.push(r.ips[0].address.to_string());
        }
        assert_eq!(
            got,
            [
                "10.0.0.2/29",
                "10.0.0.3/29",
                "10.0.0.4/29",
                "10.0.0.5/29",
                "10.0.0.6/29"
            ]
        );
        assert_eq!(
            allocate(&c, "c9", "eth0").unwrap_err().code(),
            crate::error::CODE_NO_ADDRESS
        );
        assert_eq!(status(&c).unwrap_err().code(), 50);
        release(&c, "c1", "eth0").unwrap();
        release(&c, "c1", "eth0").unwrap();
        // Round-robin: the freed .3 comes back only after wrapping.
        assert_eq!(
            allocate(&c, "c10", "eth0").unwrap().ips[0]
                .address
                .to_string(),
            "10.0.0.3/29"
        );
        assert_eq!(allocate(&c, "c0", "eth0").unwrap_err().code(), 11);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dual_stack_gc_and_check() {
        let dir = tmp("ds");
        let c = cfg(
            &dir,
            json!([[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00:1::/64", "rangeStart": "fd00:1::10"}]]),
        );
        let a = allocate(&c, "a", "eth0").unwrap();
        let b = allocate(&c, "b", "eth0").unwrap();
        assert_eq!(a.ips[1].address.to_string(), "fd00:1::10/64");
        assert_eq!(b.ips[1].address.to_string(), "fd00:1::11/64");
        check(&c, "a", "eth0", &a.ips).unwrap();
        assert_eq!(
            check(&c, "b", "eth0", &a.ips).unwrap_err().code(),
            crate::error::CODE_CHECK_FAILED
        );
        let valid: HashSet<Attachment> = [("a".to_string(), "eth0".to_string())].into();
        assert_eq!(gc(&c, &valid).unwrap(), 2);
        assert!(check(&c, "b", "eth0", &b.ips).is_err());
        check(&c, "a", "eth0", &a.ips).unwrap();
        status(&c).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
