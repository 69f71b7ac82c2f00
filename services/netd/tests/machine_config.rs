//! netd following the stored machine config, in network namespaces (root):
//! static addresses, routes, DNS, hostname and hosts; VLANs and bonds;
//! DHCP on a link selected by MAC with the hostname from option 12; a live
//! change re-applied; a config netd cannot use reported by field path.

mod common;

use std::path::{Path, PathBuf};

use common::{Dnsmasq, Netd, TestNet, DEADLINE};
use kiln_config::{Bond, BondMode, Dns, Interface, MachineConfig, Network, Route, Vlan};
use kiln_config_store::ConfigStore;
use kiln_netd::status::{DhcpState, LinkState};
use kiln_netd::Status;

/// The repository's DHCP example, for the sections netd does not read
/// (cluster, machine CA) that a valid config needs.
fn example() -> MachineConfig {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/machine/dhcp-worker.yaml"
    );
    MachineConfig::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Stores `config` as apid does (atomic replacement) in the test's
/// directory; returns the file's path.
fn store(net: &TestNet, config: &MachineConfig) -> PathBuf {
    let store = ConfigStore::new(&net.dir.path().join("state"));
    store.save(config.to_yaml().unwrap().as_bytes()).unwrap();
    store.path().to_path_buf()
}

fn iface(name: &str) -> Interface {
    Interface {
        name: Some(name.to_string()),
        ..Interface::default()
    }
}

fn route(to: &str, via: Option<&str>, metric: Option<u32>) -> Route {
    Route {
        to: to.into(),
        via: via.map(String::from),
        metric,
    }
}

fn configured(s: &Status, slot: usize) -> bool {
    s.links
        .get(slot)
        .is_some_and(|l| l.state == LinkState::Configured)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Whether this kernel can make `kind` links (`vlan`, `bond`).
fn kernel_has(net: &TestNet, kind: &str, args: &[&str]) -> bool {
    let name = format!("probe{}", net.id);
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["-n", &net.client.name, "link", "add"]);
    if kind == "vlan" {
        cmd.args(["link", "lo"]);
    }
    let ok = cmd
        .args(["name", &name, "type", kind])
        .args(args)
        .output()
        .expect("run ip")
        .status
        .success();
    if ok {
        net.client.ip(&["link", "del", &name]);
    }
    ok
}

#[test]
fn static_addresses_routes_dns_hostname_and_a_vlan() {
    let net = TestNet::new(1);
    let (c, s) = net.pairs[0].clone();
    net.serve(0);
    let me = net.addr(0, 9);
    let gw = net.addr(0, 1);
    let v6 = format!("fd00:{}::9/64", net.id + 1);
    let vlan_me = format!("10.250.{}.9", net.id);
    let mut config = example();
    config.hostname = Some("node-cfg.example.test".into());
    config.network = Network {
        interfaces: vec![Interface {
            addresses: vec![format!("{me}/24"), v6.clone()],
            routes: vec![
                route("0.0.0.0/0", Some(&gw), None),
                route("172.30.0.0/16", Some(&gw), Some(50)),
            ],
            mtu: Some(1400),
            vlans: vec![Vlan {
                id: 42,
                addresses: vec![format!("{vlan_me}/24")],
                ..Vlan::default()
            }],
            ..iface(&c)
        }],
        dns: Dns {
            servers: vec![format!("{gw}"), "fd00::53".into()],
            search_domains: vec!["cfg.example".into()],
        },
    };
    let path = store(&net, &config);
    let mut netd = Netd::start_config(&net, path, "console=ttyS0");
    let status = netd.wait("the static link", DEADLINE, |s| {
        configured(s, 0) && s.hostname.as_deref() == Some("node-cfg.example.test")
    });
    assert_eq!(status.problem, None);
    assert_eq!(status.links.len(), 2, "{status:#?}");
    assert!(
        status.links[0].error.is_none(),
        "{:?}",
        status.links[0].error
    );
    // The kernel's view, through `ip`.
    assert_eq!(net.client_addrs(&c), vec![format!("{me}/24")]);
    let a6 = net.client.ip(&["-6", "addr", "show", "dev", &c]);
    assert!(a6.contains(&v6), "{a6}");
    let r4 = net.client.ip(&["-4", "route", "show", "dev", &c]);
    assert!(
        r4.contains(&format!("default via {gw} proto static")),
        "{r4}"
    );
    assert!(
        r4.contains(&format!("172.30.0.0/16 via {gw} proto static metric 50")),
        "{r4}"
    );
    let link = net.client.ip(&["link", "show", "dev", &c]);
    assert!(link.contains("mtu 1400"), "{link}");
    // Traffic over the configured link.
    let ping = std::process::Command::new("ip")
        .args(["netns", "exec", &net.client.name, "ping", "-c1", "-W5", &gw])
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");
    assert_eq!(
        read(&net.resolv_conf()),
        format!(
            "# written by kiln netd\nnameserver {gw}\nnameserver fd00::53\nsearch cfg.example\n"
        )
    );
    assert!(
        read(&net.hosts()).ends_with(&format!("\n{me} node-cfg.example.test node-cfg\n")),
        "{}",
        read(&net.hosts())
    );

    // The VLAN, named <parent>.<id>.
    let vlan = format!("{c}.42");
    let vlan = &vlan[vlan.len().saturating_sub(15)..];
    if !kernel_has(&net, "vlan", &["id", "7"]) {
        eprintln!(
            "!!! this kernel has no 802.1Q support: checking only that netd reports the VLAN it could not create"
        );
        let status = netd.wait("the vlan error", DEADLINE, |s| {
            s.links.get(1).is_some_and(|l| l.error.is_some())
        });
        let error = status.links[1].error.clone().unwrap();
        assert!(
            error.contains("create vlan") && error.contains("(id 42 on link"),
            "{error}"
        );
        return;
    }
    let status = netd.wait("the vlan", DEADLINE, |s| configured(s, 1));
    assert_eq!(status.links[1].name.as_deref(), Some(vlan));
    let details = net.client.ip(&["-d", "link", "show", "dev", vlan]);
    assert!(details.contains("vlan protocol 802.1Q id 42"), "{details}");
    // The peer's VLAN 42, and traffic across it.
    let sv = format!("{s}v");
    net.server.ip(&[
        "link", "add", "link", &s, "name", &sv, "type", "vlan", "id", "42",
    ]);
    let peer = format!("10.250.{}.1", net.id);
    net.server
        .ip(&["addr", "add", &format!("{peer}/24"), "dev", &sv]);
    net.server.ip(&["link", "set", &sv, "up"]);
    let ping = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.client.name,
            "ping",
            "-c1",
            "-W5",
            &peer,
        ])
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");
}

#[test]
fn dhcp_on_a_link_selected_by_mac_with_the_hostname_from_the_lease() {
    let net = TestNet::new(2);
    let (c0, _) = net.pairs[0].clone();
    let (c1, s1) = net.pairs[1].clone();
    let mac = "02:00:5e:10:00:43";
    net.client.ip(&["link", "set", "dev", &c1, "address", mac]);
    net.serve(1);
    let leases = net.dir.path().join("leases");
    let fixed = net.addr(1, 77);
    let range = format!("{},{},255.255.255.0,2m", net.addr(1, 50), net.addr(1, 60));
    let host = format!("--dhcp-host={mac},{fixed},leased-name");
    let server = Dnsmasq::start(&net, &s1, &range, &leases, &[&host]);
    let mut config = example();
    config.hostname = None;
    config.network = Network {
        interfaces: vec![Interface {
            mac: Some(mac.to_uppercase()),
            dhcp: true,
            ..Interface::default()
        }],
        dns: Dns::default(),
    };
    let path = store(&net, &config);
    let mut netd = Netd::start_config(&net, path, "console=ttyS0 ip=dhcp");
    let status = netd.wait("a lease", DEADLINE, |s| {
        s.links
            .first()
            .is_some_and(|l| l.state == LinkState::Dhcp(DhcpState::Bound))
            && s.hostname.as_deref() == Some("leased-name")
    });
    assert_eq!(status.links.len(), 1);
    assert_eq!(status.links[0].name.as_deref(), Some(c1.as_str()));
    assert_eq!(net.client_addrs(&c1), vec![format!("{fixed}/24")]);
    // Only the configured link: the config replaces ip=dhcp's "first with
    // carrier".
    assert!(net.client_addrs(&c0).is_empty());
    assert!(
        read(&net.hosts()).ends_with(&format!("\n{fixed} leased-name\n")),
        "{}",
        read(&net.hosts())
    );
    netd.stop().unwrap();
    server.wait_log("DHCPRELEASE", 1);
}

#[test]
fn a_live_change_is_reapplied() {
    let net = TestNet::new(1);
    let (c, _) = net.pairs[0].clone();
    let (old, new) = (net.addr(0, 10), net.addr(0, 11));
    let mut config = example();
    config.hostname = Some("before".into());
    config.network = Network {
        interfaces: vec![Interface {
            addresses: vec![format!("{old}/24")],
            routes: vec![route("172.29.0.0/16", None, None)],
            ..iface(&c)
        }],
        dns: Dns {
            servers: vec!["10.9.9.9".into()],
            search_domains: vec![],
        },
    };
    let path = store(&net, &config);
    let mut netd = Netd::start_config(&net, path, "");
    netd.wait("the first config", DEADLINE, |s| {
        configured(s, 0) && s.hostname.as_deref() == Some("before")
    });
    assert_eq!(net.client_addrs(&c), vec![format!("{old}/24")]);

    config.hostname = Some("after".into());
    config.network.interfaces[0].addresses = vec![format!("{new}/24")];
    config.network.interfaces[0].routes = vec![route("172.28.0.0/16", None, None)];
    config.network.dns.servers = vec!["10.8.8.8".into()];
    store(&net, &config);
    let status = netd.wait("the new config", DEADLINE, |s| {
        configured(s, 0)
            && s.hostname.as_deref() == Some("after")
            && s.links[0]
                .addresses
                .iter()
                .any(|a| a.addr().to_string() == new)
    });
    assert_eq!(status.links[0].addresses.len(), 1, "{status:#?}");
    // The old address and route are gone from the kernel, not just the
    // status.
    assert_eq!(net.client_addrs(&c), vec![format!("{new}/24")]);
    let routes = net.client.ip(&["-4", "route", "show", "dev", &c]);
    assert!(
        routes.contains("172.28.0.0/16") && !routes.contains("172.29.0.0/16"),
        "{routes}"
    );
    assert_eq!(
        read(&net.resolv_conf()),
        "# written by kiln netd\nnameserver 10.8.8.8\n"
    );

    // A hostname-only change sets the hostname and leaves the links be.
    config.hostname = Some("renamed".into());
    store(&net, &config);
    let status = netd.wait("the new hostname", DEADLINE, |s| {
        s.hostname.as_deref() == Some("renamed")
    });
    assert!(configured(&status, 0), "{status:#?}");
    assert!(
        read(&net.hosts()).ends_with("\n127.0.1.1 renamed\n"),
        "{}",
        read(&net.hosts())
    );
    assert_eq!(net.client_addrs(&c), vec![format!("{new}/24")]);
}

#[test]
fn a_config_netd_cannot_use_is_reported_with_its_field() {
    let net = TestNet::new(1);
    let (c, _) = net.pairs[0].clone();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/machine/dhcp-worker.yaml"
    ))
    .unwrap();
    let bad = text.replace("      dhcp: true\n", "      addresses: [10.0.0.300/24]\n");
    assert_ne!(bad, text, "the example's interface changed");
    let store = ConfigStore::new(&net.dir.path().join("state"));
    store.save(bad.as_bytes()).unwrap();
    // The command line's settings are used instead.
    let me = net.addr(0, 5);
    let cmdline = format!("ip={me}:::::{c}:off");
    let mut netd = Netd::start_config(&net, store.path().to_path_buf(), &cmdline);
    let status = netd.wait("the fallback", DEADLINE, |s| {
        s.problem.is_some() && configured(s, 0)
    });
    let problem = status.problem.unwrap();
    assert!(
        problem.contains("network.interfaces[0].addresses[0]") && problem.contains("10.0.0.300"),
        "{problem}"
    );
    assert_eq!(net.client_addrs(&c), vec![format!("{me}/8")]);
    // A fixed config is picked up without a restart.
    let fixed = format!("{}/24", net.addr(0, 6));
    let mut good = example();
    good.network.interfaces[0] = Interface {
        addresses: vec![fixed.clone()],
        ..iface(&c)
    };
    store.save(good.to_yaml().unwrap().as_bytes()).unwrap();
    netd.wait("the fixed config", DEADLINE, |s| {
        s.problem.is_none()
            && configured(s, 0)
            && s.links[0].addresses.iter().any(|a| a.to_string() == fixed)
    });
    assert_eq!(net.client_addrs(&c), vec![fixed]);
}

#[test]
fn active_backup_bond_fails_over() {
    let net = TestNet::new(2);
    let (c0, s0) = net.pairs[0].clone();
    let (c1, s1) = net.pairs[1].clone();
    let bond = format!("kb{}", net.id);
    let me = net.addr(0, 9);
    let mut config = example();
    config.network = Network {
        interfaces: vec![
            iface(&c0),
            Interface {
                addresses: vec![format!("{me}/24")],
                bond: Some(Bond {
                    mode: BondMode::ActiveBackup,
                    members: vec![c0.clone(), c1.clone()],
                }),
                ..iface(&bond)
            },
        ],
        dns: Dns::default(),
    };
    let path = store(&net, &config);
    if !kernel_has(&net, "bond", &[]) {
        eprintln!(
            "!!! SKIPPING the bond traffic checks: this kernel has no bonding driver (modprobe bonding fails); checking only that netd reports the bond it could not create"
        );
        let mut netd = Netd::start_config(&net, path, "");
        let status = netd.wait("the bond error", DEADLINE, |s| {
            s.links.first().is_some_and(|l| l.error.is_some())
        });
        let error = status.links[0].error.clone().unwrap();
        assert!(error.contains(&format!("create bond {bond}")), "{error}");
        assert_eq!(status.links.len(), 1, "members make no links: {status:#?}");
        return;
    }
    // The far side: both peers in one bridge with the gateway address.
    let br = format!("kbr{}", net.id);
    net.server.ip(&["link", "add", &br, "type", "bridge"]);
    for s in [&s0, &s1] {
        net.server.ip(&["link", "set", s, "master", &br]);
        net.server.ip(&["link", "set", s, "up"]);
    }
    let gw = net.addr(0, 1);
    net.server
        .ip(&["addr", "add", &format!("{gw}/24"), "dev", &br]);
    net.server.ip(&["link", "set", &br, "up"]);
    let mut netd = Netd::start_config(&net, path, "");
    let status = netd.wait("the bond", DEADLINE, |s| configured(s, 0));
    assert_eq!(status.links[0].name.as_deref(), Some(bond.as_str()));
    for c in [&c0, &c1] {
        let l = net.client.ip(&["link", "show", "dev", c]);
        assert!(l.contains(&format!("master {bond}")), "{l}");
    }
    let details = net.client.ip(&["-d", "link", "show", "dev", &bond]);
    assert!(details.contains("mode active-backup"), "{details}");
    let ping = |what: &str| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &net.client.name, "ping", "-c1", "-W5", &gw])
            .output()
            .unwrap();
        assert!(out.status.success(), "{what}: {out:?}");
    };
    ping("through the bond");
    // The active member's cable pulled: the other takes over.
    let active = net
        .client
        .ip(&["-d", "link", "show", "dev", &bond])
        .contains(&format!("active_slave {c1}"));
    let pulled = if active { &s1 } else { &s0 };
    net.server.ip(&["link", "set", pulled, "down"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    ping("after failover");
}
