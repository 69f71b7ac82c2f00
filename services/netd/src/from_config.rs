//! The machine config's `network` section (and `hostname`) as netd's
//! [`Settings`].
//!
//! The config crate has validated every value already; the strings are
//! parsed again here into netd's types, and a value that still does not
//! parse is reported with its field path rather than trusted.

use std::collections::BTreeSet;

use kiln_config::{MachineConfig, Network, Route};

use crate::settings::{
    BondMode, Dns, IpCidr, LinkSelector, LinkSettings, MacAddr, RouteSettings, Settings,
};

/// A config value netd cannot use: `network.interfaces[0].mac: …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldProblem {
    pub field: String,
    pub problem: String,
}

fn problem(field: &str, problem: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field: field.to_string(),
        problem: problem.into(),
    }
}

impl Settings {
    /// The settings a machine config asks for. No interfaces listed: DHCP
    /// on the first link with carrier, as without a config.
    pub fn from_config(config: &MachineConfig) -> Result<Settings, FieldProblem> {
        let mut settings = from_network(&config.network)?;
        settings.hostname = config.hostname.clone();
        Ok(settings)
    }
}

fn from_network(net: &Network) -> Result<Settings, FieldProblem> {
    let mut settings = Settings::default();
    // Bond members are the bond's business: listing one (as the examples
    // do, to document the NIC) makes no link of its own.
    let members: BTreeSet<String> = net
        .interfaces
        .iter()
        .filter_map(|i| i.bond.as_ref())
        .flat_map(|b| b.members.iter().map(|m| m.to_ascii_lowercase()))
        .collect();
    for (i, iface) in net.interfaces.iter().enumerate() {
        let path = format!("network.interfaces[{i}]");
        let select = match (&iface.name, &iface.mac, &iface.bond) {
            (Some(name), None, Some(bond)) => LinkSelector::Bond {
                name: name.clone(),
                mode: match bond.mode {
                    kiln_config::BondMode::ActiveBackup => BondMode::ActiveBackup,
                    kiln_config::BondMode::Lacp => BondMode::Lacp,
                },
                members: bond
                    .members
                    .iter()
                    .map(|m| member(m))
                    .collect::<Result<_, _>>()
                    .map_err(|p| problem(&format!("{path}.bond.members"), p))?,
            },
            (Some(name), None, None) => LinkSelector::Name(name.clone()),
            (None, Some(mac), None) => LinkSelector::Mac(
                mac.parse::<MacAddr>()
                    .map_err(|p| problem(&format!("{path}.mac"), p))?,
            ),
            _ => {
                return Err(problem(
                    &path,
                    "set exactly one of `name` and `mac` (a bond needs `name`)",
                ))
            }
        };
        let listed = iface.name.as_ref().or(iface.mac.as_ref());
        if listed.is_some_and(|s| members.contains(&s.to_ascii_lowercase())) {
            continue;
        }
        let mut link = LinkSettings::new(select.clone());
        l3(
            &mut link,
            &path,
            iface.dhcp,
            &iface.addresses,
            &iface.routes,
            iface.mtu,
        )?;
        settings.links.push(link);
        for (j, vlan) in iface.vlans.iter().enumerate() {
            let vpath = format!("{path}.vlans[{j}]");
            let mut link = LinkSettings::new(LinkSelector::Vlan {
                parent: Box::new(select.clone()),
                id: vlan.id,
                name: None,
            });
            l3(
                &mut link,
                &vpath,
                vlan.dhcp,
                &vlan.addresses,
                &vlan.routes,
                vlan.mtu,
            )?;
            settings.links.push(link);
        }
    }
    if net.interfaces.is_empty() {
        let mut link = LinkSettings::new(LinkSelector::FirstWithCarrier);
        link.dhcp4 = true;
        settings.links.push(link);
    }
    settings.dns = Dns {
        servers: net
            .dns
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse().map_err(|_| {
                    problem(
                        &format!("network.dns.servers[{i}]"),
                        format!("{s:?} is not an IP address"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        search: net.dns.search_domains.clone(),
    };
    Ok(settings)
}

/// A bond member: a MAC address, else a link name.
fn member(m: &str) -> Result<LinkSelector, String> {
    if m.contains(':') {
        m.parse().map(LinkSelector::Mac)
    } else {
        Ok(LinkSelector::Name(m.to_string()))
    }
}

fn l3(
    link: &mut LinkSettings,
    path: &str,
    dhcp: bool,
    addresses: &[String],
    routes: &[Route],
    mtu: Option<u32>,
) -> Result<(), FieldProblem> {
    link.dhcp4 = dhcp;
    link.mtu = mtu;
    for (i, a) in addresses.iter().enumerate() {
        let cidr: IpCidr = a
            .parse()
            .map_err(|p| problem(&format!("{path}.addresses[{i}]"), p))?;
        link.addresses.push(cidr);
    }
    for (i, r) in routes.iter().enumerate() {
        let rpath = format!("{path}.routes[{i}]");
        let destination: IpCidr =
            r.to.parse()
                .map_err(|p| problem(&format!("{rpath}.to"), p))?;
        let gateway = match &r.via {
            Some(v) => Some(v.parse().map_err(|_| {
                problem(
                    &format!("{rpath}.via"),
                    format!("{v:?} is not an IP address"),
                )
            })?),
            None => None,
        };
        link.routes.push(RouteSettings {
            destination,
            gateway,
            metric: r.metric,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> MachineConfig {
        let path = format!(
            "{}/../../configs/machine/{name}.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        MachineConfig::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn bond_with_vlans_from_the_static_example() {
        let s = Settings::from_config(&example("static-worker")).unwrap();
        assert_eq!(s.hostname.as_deref(), Some("worker-2.example.internal"));
        // The two NICs are the bond's members, not links of their own.
        assert_eq!(s.links.len(), 3, "{s:#?}");
        let bond = LinkSelector::Bond {
            name: "bond0".into(),
            mode: BondMode::Lacp,
            members: vec![
                LinkSelector::Mac("52:54:00:00:00:01".parse().unwrap()),
                LinkSelector::Mac("52:54:00:00:00:02".parse().unwrap()),
            ],
        };
        assert_eq!(s.links[0].select, bond);
        assert_eq!(s.links[0].mtu, Some(9000));
        assert_eq!(
            s.links[1].select,
            LinkSelector::Vlan {
                parent: Box::new(bond.clone()),
                id: 100,
                name: None
            }
        );
        assert_eq!(s.links[1].addresses.len(), 2);
        assert_eq!(s.links[1].routes.len(), 2);
        assert_eq!(s.links[2].routes[0].metric, Some(50));
        assert_eq!(s.dns.servers.len(), 2);
        assert_eq!(s.dns.search, vec!["example.internal".to_string()]);
    }

    #[test]
    fn dhcp_example_and_no_interfaces() {
        let mut config = example("dhcp-worker");
        let s = Settings::from_config(&config).unwrap();
        assert_eq!(s.links.len(), 1);
        assert_eq!(s.links[0].select, LinkSelector::Name("eth0".into()));
        assert!(s.links[0].dhcp4);
        config.network = Network::default();
        let s = Settings::from_config(&config).unwrap();
        assert_eq!(s.links[0].select, LinkSelector::FirstWithCarrier);
        assert!(s.links[0].dhcp4);
    }

    #[test]
    fn an_unusable_value_names_its_field() {
        let mut config = example("dhcp-worker");
        config.network.interfaces[0].routes = vec![Route {
            to: "10.0.0.0/8".into(),
            via: Some("gateway".into()),
            metric: None,
        }];
        let e = Settings::from_config(&config).unwrap_err();
        assert_eq!(e.field, "network.interfaces[0].routes[0].via");
    }

    #[test]
    fn vlan_names_fit_a_link_name() {
        use crate::settings::vlan_name;
        assert_eq!(vlan_name("eth0", 100), "eth0.100");
        assert_eq!(vlan_name("enp1s0f0np0", 4094), "enp1s0f0np.4094");
        assert!(vlan_name("enp1s0f0np0", 4094).len() <= 15);
    }
}
