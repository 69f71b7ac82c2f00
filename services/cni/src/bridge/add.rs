//! Bridge ADD.

use std::net::IpAddr;
use std::os::fd::AsFd;

use ipnet::IpNet;
use rtnetlink::LinkUnspec;

use super::BridgeConf;
use crate::delegate::Ipam;
use crate::env::Args;
use crate::error::{Error, Result};
use crate::netconf::NetConf;
use crate::nl::Netlink;
use crate::result::{CniResult, Interface, Route};
use crate::sysctl;

/// Attempts at a free random host-side veth name before giving up.
const VETH_NAME_TRIES: usize = 4;

pub async fn add(conf: &NetConf, bc: &BridgeConf, ipam: &Ipam, args: &Args) -> Result<CniResult> {
    let super::PodNs {
        path,
        ns,
        host,
        pod,
    } = super::PodNs::open(args)?;
    if pod.link(&args.ifname).await?.is_some() {
        return Err(Error::config(
            "CNI_IFNAME",
            format!("{} already exists in {}", args.ifname, path.display()),
        ));
    }

    let mut ipam_result = ipam.add(conf, args)?;
    match wire(conf, bc, args, &host, &pod, &ns, &mut ipam_result).await {
        Ok(r) => Ok(r),
        Err(e) => {
            // Leave nothing behind: the runtime will not DEL a failed ADD.
            if let Ok(Some(l)) = pod.link(&args.ifname).await {
                let _ = pod.del_link(l.index).await;
            }
            let _ = ipam.del(conf, args);
            Err(e)
        }
    }
}

async fn wire(
    conf: &NetConf,
    bc: &BridgeConf,
    args: &Args,
    host: &Netlink,
    pod: &Netlink,
    ns: &std::fs::File,
    ipam_result: &mut CniResult,
) -> Result<CniResult> {
    sysctl::ensure(sysctl::IPV4_FORWARD, "1")?;
    sysctl::ensure_if_present(sysctl::BRIDGE_NF_IPTABLES, "1")?;
    if ipam_result.ips.iter().any(|ip| ip.address.addr().is_ipv6()) {
        sysctl::ensure(sysctl::IPV6_FORWARD, "1")?;
        sysctl::ensure_if_present(sysctl::BRIDGE_NF_IP6TABLES, "1")?;
    }

    let br = host.ensure_bridge(&bc.bridge, bc.mtu).await?;
    if bc.promisc && !br.promisc {
        host.set(
            LinkUnspec::new_with_index(br.index)
                .promiscuous(true)
                .build(),
            &bc.bridge,
        )
        .await?;
    }
    // Pods get the bridge's MTU unless the config sets one.
    let mtu = bc.mtu.or(br.mtu);

    let veth = create_veth(host, &args.ifname, ns, mtu).await?;
    host.set(
        LinkUnspec::new_with_index(veth.index)
            .controller(br.index)
            .up()
            .build(),
        &veth.name,
    )
    .await?;
    if bc.hairpin {
        host.set_hairpin(veth.index, true).await?;
    }

    let pod_link = pod
        .link(&args.ifname)
        .await?
        .ok_or_else(|| Error::NotAvailable(format!("{} vanished from the pod", args.ifname)))?;
    for ip in &ipam_result.ips {
        pod.ensure_address(pod_link.index, ip.address).await?;
    }
    pod.set(
        LinkUnspec::new_with_index(pod_link.index).up().build(),
        &args.ifname,
    )
    .await?;

    if bc.is_default_gateway {
        add_default_routes(ipam_result);
    }
    for r in &ipam_result.routes {
        let gw = r.gw.or_else(|| gateway_for(ipam_result, r.dst.addr()));
        pod.add_route(pod_link.index, r.dst, gw).await?;
    }

    if bc.is_gateway {
        for ip in &ipam_result.ips {
            if let Some(gw) = ip.gateway {
                let net = IpNet::new(gw, ip.address.prefix_len())
                    .map_err(|e| Error::config("ipam gateway", e.to_string()))?;
                host.ensure_address(br.index, net).await?;
            }
        }
    }

    // The bridge's MAC follows its ports: read it after attaching.
    let br = host.link(&bc.bridge).await?.unwrap_or(br);
    let sandbox = args
        .netns
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut result = std::mem::take(ipam_result);
    result.interfaces = vec![
        Interface {
            name: br.name,
            mac: br.mac,
            mtu: None,
            sandbox: String::new(),
        },
        Interface {
            name: veth.name,
            mac: veth.mac,
            mtu: None,
            sandbox: String::new(),
        },
        Interface {
            name: pod_link.name,
            mac: pod_link.mac,
            mtu: pod_link.mtu,
            sandbox,
        },
    ];
    for ip in &mut result.ips {
        ip.interface = Some(2);
    }
    if result.dns.is_empty() {
        result.dns = conf.dns.clone();
    }
    Ok(result)
}

/// Creates the pair with a random host-side name (as the reference plugin
/// does: names derived from the container id can collide after truncation).
async fn create_veth(
    host: &Netlink,
    ifname: &str,
    ns: &std::fs::File,
    mtu: Option<u32>,
) -> Result<crate::nl::Link> {
    let mut last_err = None;
    for _ in 0..VETH_NAME_TRIES {
        let name = format!("veth{:08x}", random_u32());
        if host.link(&name).await?.is_some() {
            continue;
        }
        match host.add_veth(&name, ifname, ns.as_fd(), mtu).await {
            Ok(()) => {
                return host
                    .link(&name)
                    .await?
                    .ok_or_else(|| Error::NotAvailable(format!("veth {name} vanished")));
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| Error::NotAvailable("no free veth name".into())))
}

/// 32 random bits from std's per-process SipHash keys (seeded by the OS).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() as u32
}

fn gateway_for(r: &CniResult, dst: IpAddr) -> Option<IpAddr> {
    r.ips
        .iter()
        .filter(|ip| ip.address.addr().is_ipv4() == dst.is_ipv4())
        .find_map(|ip| ip.gateway)
}

/// isDefaultGateway: a default route per family that has a gateway, unless
/// IPAM already gave one.
fn add_default_routes(r: &mut CniResult) {
    for v4 in [true, false] {
        let has_gw = r
            .ips
            .iter()
            .any(|ip| ip.address.addr().is_ipv4() == v4 && ip.gateway.is_some());
        let dst: IpNet = if v4 { "0.0.0.0/0" } else { "::/0" }
            .parse()
            .expect("literal prefix");
        if has_gw && !r.routes.iter().any(|x| x.dst == dst) {
            r.routes.push(Route { dst, gw: None });
        }
    }
}
