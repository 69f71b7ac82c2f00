//! `kiln-bridge`: pods on a Linux bridge through veth pairs, addresses from
//! IPAM.

mod add;
mod check;

use crate::delegate::Ipam;
use crate::env::{Args, Command};
use crate::error::{Error, Result};
use crate::netconf::NetConf;
use crate::netns;
use crate::nl::Netlink;
use crate::result::CniResult;

/// Bridge name when the config names none (the reference plugin's default).
pub const DEFAULT_BRIDGE: &str = "cni0";

/// The bridge plugin's own fields, validated.
#[derive(Debug, Clone)]
pub struct BridgeConf {
    pub bridge: String,
    /// The gateway address goes on the bridge.
    pub is_gateway: bool,
    /// Also a default route in the pod via the gateway (implies `is_gateway`).
    pub is_default_gateway: bool,
    pub mtu: Option<u32>,
    pub hairpin: bool,
    pub promisc: bool,
}

impl BridgeConf {
    pub fn parse(conf: &NetConf) -> Result<Self> {
        let bridge = conf
            .opt_str("bridge")?
            .unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ':', ' ']) {
            return Err(Error::config(
                "bridge",
                format!("{bridge:?} is not a valid interface name"),
            ));
        }
        if conf.bool("ipMasq")? {
            return Err(Error::UnsupportedField {
                field: "ipMasq",
                why: "masquerading is not implemented yet (it needs nftables)".into(),
            });
        }
        let mtu = conf.opt_u32("mtu")?;
        if let Some(m) = mtu {
            if !(68..=65535).contains(&m) {
                return Err(Error::config("mtu", format!("{m} is outside 68..=65535")));
            }
        }
        let (hairpin, promisc) = (conf.bool("hairpinMode")?, conf.bool("promiscMode")?);
        if hairpin && promisc {
            // A promiscuous bridge already hands a pod its own frames;
            // hairpin on top would deliver them twice (the reference refuses too).
            return Err(Error::config(
                "hairpinMode",
                "cannot be set together with promiscMode",
            ));
        }
        let is_default_gateway = conf.bool("isDefaultGateway")?;
        Ok(BridgeConf {
            bridge,
            is_gateway: conf.bool("isGateway")? || is_default_gateway,
            is_default_gateway,
            mtu,
            hairpin,
            promisc,
        })
    }
}

/// The pod's network namespace (CNI_NETNS) and netlink in it and in the
/// host's, which ADD and CHECK both need.
struct PodNs<'a> {
    path: &'a std::path::Path,
    ns: std::fs::File,
    host: Netlink,
    pod: Netlink,
}

impl<'a> PodNs<'a> {
    fn open(args: &'a Args) -> Result<PodNs<'a>> {
        let path = args.netns.as_deref().ok_or(Error::InvalidEnv {
            name: "CNI_NETNS",
            why: "not set".into(),
        })?;
        let ns =
            netns::open(path)?.ok_or_else(|| Error::UnknownContainer(args.container_id.clone()))?;
        let host = Netlink(netns::connect(None)?);
        let pod = Netlink(netns::connect(Some(&ns))?);
        Ok(PodNs {
            path,
            ns,
            host,
            pod,
        })
    }
}

pub async fn run(conf: &NetConf, args: &Args) -> Result<Option<CniResult>> {
    let bc = BridgeConf::parse(conf)?;
    let ipam = Ipam::new(conf, args)?;
    match args.command {
        Command::Add => add::add(conf, &bc, &ipam, args).await.map(Some),
        Command::Del => del(conf, &ipam, args).await.map(|_| None),
        Command::Check => check::check(conf, &bc, &ipam, args).await.map(|_| None),
        Command::Gc => ipam.gc(conf, &conf.valid_attachments()?).map(|_| None),
        Command::Status => ipam.status(conf).map(|_| None),
        Command::Version => unreachable!("VERSION is answered before any plugin runs"),
    }
}

/// Releases the addresses, then removes the pod's end of the veth (which
/// takes the host end with it). Each step treats "already gone" as done, so
/// DEL may run any number of times, with or without the namespace.
async fn del(conf: &NetConf, ipam: &Ipam, args: &Args) -> Result<()> {
    ipam.del(conf, args)?;
    let Some(path) = &args.netns else {
        return Ok(());
    };
    let Some(ns) = netns::open(path)? else {
        return Ok(());
    };
    let pod = Netlink(netns::connect(Some(&ns))?);
    if let Some(link) = pod.link(&args.ifname).await? {
        pod.del_link(link.index).await?;
    }
    Ok(())
}
