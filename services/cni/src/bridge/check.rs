//! Bridge CHECK: the attachment is still as ADD left it.

use super::BridgeConf;
use crate::delegate::Ipam;
use crate::env::Args;
use crate::error::{Error, Result};
use crate::netconf::NetConf;

pub async fn check(conf: &NetConf, bc: &BridgeConf, ipam: &Ipam, args: &Args) -> Result<()> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| Error::config("prevResult", "required by CHECK"))?;
    ipam.check(conf, args, prev)?;
    let super::PodNs {
        path, host, pod, ..
    } = super::PodNs::open(args)?;

    let br = host
        .link(&bc.bridge)
        .await?
        .ok_or_else(|| Error::Check(format!("bridge {} not found", bc.bridge)))?;
    let link = pod
        .link(&args.ifname)
        .await?
        .ok_or_else(|| Error::Check(format!("{} not found in {}", args.ifname, path.display())))?;

    // The pod's interface in prevResult: same name, and a sandbox.
    let idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == args.ifname && !i.sandbox.is_empty())
        .ok_or_else(|| {
            Error::Check(format!(
                "prevResult has no interface {} in a sandbox",
                args.ifname
            ))
        })?;
    let want = &prev.interfaces[idx];
    if !want.mac.is_empty() && !want.mac.eq_ignore_ascii_case(&link.mac) {
        return Err(Error::Check(format!(
            "{} has MAC {}, prevResult says {}",
            args.ifname, link.mac, want.mac
        )));
    }
    let have = pod.addresses(link.index).await?;
    for ip in prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i == idx))
    {
        if !have.contains(&ip.address) {
            return Err(Error::Check(format!(
                "{} lacks address {}",
                args.ifname, ip.address
            )));
        }
    }

    // The host end: the veth whose peer is the pod's link, on our bridge.
    let host_if = prev
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_empty() && i.name != bc.bridge)
        .ok_or_else(|| Error::Check("prevResult names no host-side veth".into()))?;
    let veth = host
        .link(&host_if.name)
        .await?
        .ok_or_else(|| Error::Check(format!("host veth {} not found", host_if.name)))?;
    if link.peer_index != Some(veth.index) {
        return Err(Error::Check(format!(
            "host veth {} is not the peer of {}",
            host_if.name, args.ifname
        )));
    }
    if veth.controller != Some(br.index) {
        return Err(Error::Check(format!(
            "host veth {} is not attached to bridge {}",
            host_if.name, bc.bridge
        )));
    }
    Ok(())
}
