//! `kiln-host-local` as a standalone IPAM plugin (the bridge calls the same
//! code in-process).

use crate::env::{Args, Command};
use crate::error::{Error, Result};
use crate::ipam::{self, IpamConfig};
use crate::netconf::NetConf;
use crate::result::CniResult;

pub fn run(conf: &NetConf, args: &Args) -> Result<Option<CniResult>> {
    let cfg = IpamConfig::parse(&conf.name, conf.ipam()?)?;
    match args.command {
        Command::Add => {
            let mut r = ipam::allocate(&cfg, &args.container_id, &args.ifname)?;
            r.dns = conf.dns.clone();
            Ok(Some(r))
        }
        Command::Del => ipam::release(&cfg, &args.container_id, &args.ifname).map(|_| None),
        Command::Check => {
            let prev = conf
                .prev_result
                .as_ref()
                .ok_or_else(|| Error::config("prevResult", "required by CHECK"))?;
            ipam::check(&cfg, &args.container_id, &args.ifname, &prev.ips).map(|_| None)
        }
        Command::Gc => ipam::gc(&cfg, &conf.valid_attachments()?).map(|_| None),
        Command::Status => ipam::status(&cfg).map(|_| None),
        Command::Version => unreachable!("VERSION is answered before any plugin runs"),
    }
}
