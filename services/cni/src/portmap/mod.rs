//! `kiln-portmap`: host ports forwarded to a pod (the `portMappings`
//! capability), with nftables rules made over netlink (`crate::nft`).
//!
//! A chained plugin: it comes after the plugin that made the pod's
//! interface, reads the pod's addresses from `prevResult` and passes that
//! result on unchanged. Rules live in the plugin's own network namespace
//! (the host's); see `rules.rs` for what they are.

pub mod mappings;
pub mod rules;

use std::collections::BTreeMap;

use crate::env::{Args, Command};
use crate::error::{Error, Result};
use crate::netconf::NetConf;
use crate::nft::{Batch, Conn, Family, NftError};
use crate::result::CniResult;
use crate::sysctl;
use rules::Pod;

pub fn run(conf: &NetConf, args: &Args) -> Result<Option<CniResult>> {
    match args.command {
        Command::Add => add(conf, args).map(Some),
        Command::Del => del(args).map(|()| None),
        Command::Check => check(conf, args).map(|()| None),
        Command::Status => status().map(|()| None),
        Command::Gc => gc(conf).map(|()| None),
        // Answered before any plugin runs.
        Command::Version => Ok(None),
    }
}

fn prev_result(conf: &NetConf) -> Result<CniResult> {
    conf.prev_result.clone().ok_or_else(|| {
        Error::config(
            "prevResult",
            "missing: kiln-portmap is chained after the plugin that makes the pod's interface",
        )
    })
}

/// One address per family: the first of the pod's (an address whose
/// interface is on the host side is not the pod's).
fn pods(result: &CniResult) -> Vec<Pod> {
    let mut out: Vec<Pod> = Vec::new();
    for ip in &result.ips {
        let in_pod = ip
            .interface
            .and_then(|i| result.interfaces.get(i))
            .is_none_or(|i| !i.sandbox.is_empty());
        let pod = Pod {
            addr: ip.address.addr(),
            subnet: ip.address.trunc(),
        };
        if in_pod && !out.iter().any(|p| p.family() == pod.family()) {
            out.push(pod);
        }
    }
    out
}

fn add(conf: &NetConf, args: &Args) -> Result<CniResult> {
    let prev = prev_result(conf)?;
    let mappings = mappings::parse(conf)?;
    if mappings.is_empty() {
        return Ok(prev);
    }
    let pods = pods(&prev);
    if pods.is_empty() {
        return Err(Error::config(
            "prevResult.ips",
            "no pod address to forward to",
        ));
    }
    for (i, m) in mappings.iter().enumerate() {
        if let Some(ip) = m.host_ip {
            if !pods.iter().any(|p| p.family() == rules::family(ip)) {
                return Err(Error::config(
                    format!("runtimeConfig.portMappings[{i}].hostIP"),
                    format!("{ip}: the pod has no address of that family"),
                ));
            }
        }
    }
    kernel_settings(&prev, &pods)?;
    let tag = rules::tag(&args.container_id, &args.ifname);
    let mut conn = Conn::open()?;
    let mut batch = Batch::new();
    for pod in &pods {
        // A repeated ADD replaces the attachment's rules: one transaction.
        for rule in tagged(&mut conn, pod.family(), &tag)? {
            batch.del_rule(pod.family(), rules::TABLE, &rule);
        }
        rules::add(&mut batch, pod, &mappings, &tag);
    }
    conn.apply(&batch)?;
    Ok(prev)
}

/// Forwarding, and `route_localnet` on the host-side interfaces so a DNATed
/// packet from 127.0.0.1 may leave through the bridge.
fn kernel_settings(prev: &CniResult, pods: &[Pod]) -> Result<()> {
    if pods.iter().any(|p| p.family() == Family::Ipv4) {
        sysctl::ensure(sysctl::IPV4_FORWARD, "1")?;
        for i in prev.interfaces.iter().filter(|i| i.sandbox.is_empty()) {
            let path = format!("/proc/sys/net/ipv4/conf/{}/route_localnet", i.name);
            sysctl::ensure_if_present(&path, "1")?;
        }
    }
    if pods.iter().any(|p| p.family() == Family::Ipv6) {
        sysctl::ensure(sysctl::IPV6_FORWARD, "1")?;
    }
    Ok(())
}

/// The rules of `family`'s table that carry `tag`.
fn tagged(conn: &mut Conn, family: Family, tag: &[u8]) -> Result<Vec<crate::nft::RuleInfo>> {
    Ok(conn
        .rules(family, rules::TABLE)?
        .into_iter()
        .filter(|r| r.userdata == tag)
        .collect())
}

/// Removes the attachment's rules; none is success, so DEL repeats freely
/// and needs neither `prevResult` nor the mappings.
fn del(args: &Args) -> Result<()> {
    let tag = rules::tag(&args.container_id, &args.ifname);
    let mut conn = match Conn::open() {
        Ok(c) => c,
        // A kernel without nf_tables holds no rules of ours.
        Err(NftError::Socket(e)) if e.raw_os_error() == Some(nix::libc::EPROTONOSUPPORT) => {
            return Ok(())
        }
        Err(e) => return Err(e.into()),
    };
    let mut batch = Batch::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        for rule in tagged(&mut conn, family, &tag)? {
            batch.del_rule(family, rules::TABLE, &rule);
        }
    }
    conn.apply(&batch)?;
    Ok(())
}

/// The attachment's rules are all there, chain by chain.
fn check(conf: &NetConf, args: &Args) -> Result<()> {
    let prev = prev_result(conf)?;
    let mappings = mappings::parse(conf)?;
    if mappings.is_empty() {
        return Ok(());
    }
    let tag = rules::tag(&args.container_id, &args.ifname);
    let mut conn = Conn::open()?;
    for pod in pods(&prev) {
        let mut found: BTreeMap<String, usize> = BTreeMap::new();
        for r in tagged(&mut conn, pod.family(), &tag)? {
            *found.entry(r.chain).or_default() += 1;
        }
        for (chain, want) in rules::expected(&pod, &mappings) {
            let have = found.get(chain).copied().unwrap_or(0);
            if have != want {
                return Err(Error::Check(format!(
                    "{:?} table {} chain {chain}: {have} rules for {}, expected {want}",
                    pod.family(),
                    rules::TABLE,
                    pod.addr
                )));
            }
        }
    }
    Ok(())
}

/// Ready when nf_tables answers.
fn status() -> Result<()> {
    let mut conn = Conn::open()?;
    conn.rules(Family::Ipv4, rules::TABLE)?;
    Ok(())
}

/// Removes the rules of every attachment not in `cni.dev/valid-attachments`.
fn gc(conf: &NetConf) -> Result<()> {
    let valid = conf.valid_attachments()?;
    let mut conn = Conn::open()?;
    let mut batch = Batch::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        for rule in conn.rules(family, rules::TABLE)? {
            let keep = rules::parse_tag(&rule.userdata).is_some_and(|a| valid.contains(&a));
            if !keep {
                batch.del_rule(family, rules::TABLE, &rule);
            }
        }
    }
    conn.apply(&batch)?;
    Ok(())
}
