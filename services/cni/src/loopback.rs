//! `kiln-loopback`: `lo` up in the pod's namespace.

use crate::env::{Args, Command};
use crate::error::{Error, Result};
use crate::netconf::NetConf;
use crate::netns;
use crate::nl::Netlink;
use crate::result::{CniResult, Interface, IpConfig};

pub async fn run(conf: &NetConf, args: &Args) -> Result<Option<CniResult>> {
    let ns_path = args.netns.as_deref();
    let ns = match ns_path {
        Some(p) => netns::open(p)?,
        None => None,
    };
    let Some(ns) = ns else {
        return match args.command {
            // DEL of a pod whose namespace is gone: nothing left to undo.
            Command::Del | Command::Gc | Command::Status => Ok(None),
            _ => Err(Error::UnknownContainer(args.container_id.clone())),
        };
    };
    if matches!(args.command, Command::Gc | Command::Status) {
        return Ok(None);
    }
    let nl = Netlink(netns::connect(Some(&ns))?);
    let lo = nl
        .link("lo")
        .await?
        .ok_or_else(|| Error::Check("no lo in the pod's namespace".into()))?;
    match args.command {
        Command::Add => {
            nl.set(
                rtnetlink::LinkUnspec::new_with_index(lo.index).up().build(),
                "lo up",
            )
            .await?;
            // Chained after another plugin: pass its result through.
            if let Some(prev) = &conf.prev_result {
                return Ok(Some(prev.clone()));
            }
            let sandbox = ns_path.map(|p| p.display().to_string()).unwrap_or_default();
            let ip = |a: &str| IpConfig {
                version: None,
                address: a.parse().expect("literal address"),
                gateway: None,
                interface: Some(0),
            };
            Ok(Some(CniResult {
                interfaces: vec![Interface {
                    name: "lo".into(),
                    mac: lo.mac,
                    mtu: None,
                    sandbox,
                }],
                ips: vec![ip("127.0.0.1/8"), ip("::1/128")],
                ..Default::default()
            }))
        }
        Command::Del => {
            nl.set(
                rtnetlink::LinkUnspec::new_with_index(lo.index)
                    .down()
                    .build(),
                "lo down",
            )
            .await?;
            Ok(None)
        }
        Command::Check if !lo.up => Err(Error::Check("lo is down in the pod's namespace".into())),
        _ => Ok(None),
    }
}
