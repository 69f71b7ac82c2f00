//! Static configuration in a network namespace (root): `ip=` and typed
//! settings, selection by name and MAC.

mod common;

use common::{Netd, TestNet, DEADLINE};
use kiln_netd::settings::{Dns, IpCidr, LinkSelector, LinkSettings, MacAddr, RouteSettings};
use kiln_netd::status::LinkState;
use kiln_netd::Settings;

fn configured(s: &kiln_netd::Status) -> bool {
    !s.links.is_empty() && s.links.iter().all(|l| l.state == LinkState::Configured)
}

#[test]
fn ip_cmdline_static_address_gateway_dns_and_ntp() {
    let net = TestNet::new(1);
    let (c, _) = net.pairs[0].clone();
    let me = net.addr(0, 9);
    let gw = net.addr(0, 1);
    let dns = net.addr(0, 53);
    let ntp = net.addr(0, 123);
    let cmdline = format!("console=ttyS0 ip={me}::{gw}:255.255.255.0:node9:{c}:off:{dns}::{ntp}");
    let settings = Settings::from_cmdline(&cmdline).unwrap();
    assert_eq!(settings.hostname.as_deref(), Some("node9"));
    let mut netd = Netd::start(&net, settings);
    // Static config needs no carrier: the far end stays down.
    let status = netd.wait("static config", DEADLINE, |s| configured(s) && s.ready());
    assert_eq!(status.links[0].name.as_deref(), Some(c.as_str()));
    assert!(
        status.links[0].error.is_none(),
        "{:?}",
        status.links[0].error
    );
    assert_eq!(net.client_addrs(&c), vec![format!("{me}/24")]);
    let a = net.client.ip(&["-4", "addr", "show", "dev", &c]);
    assert!(a.contains("valid_lft forever"), "{a}");
    let routes = net.client.ip(&["-4", "route", "show", "dev", &c]);
    assert!(
        routes.contains(&format!("default via {gw} proto static")),
        "{routes}"
    );
    let resolv = std::fs::read_to_string(net.resolv_conf()).unwrap();
    assert_eq!(
        resolv,
        format!("# written by kiln netd\nnameserver {dns}\n")
    );
    // ip='s ntp0-ip, for timed.
    let servers = std::fs::read_to_string(net.ntp_servers()).unwrap();
    assert_eq!(
        kiln_netd::ntp::parse(&servers).unwrap(),
        vec![ntp.parse::<std::net::Ipv4Addr>().unwrap()],
        "{servers}"
    );
    // Static configuration outlives netd: nothing leases it.
    netd.stop().unwrap();
    assert_eq!(net.client_addrs(&c), vec![format!("{me}/24")]);
}

#[test]
fn typed_settings_by_mac_with_ipv6_routes_and_mtu() {
    let net = TestNet::new(2);
    let (c0, _) = net.pairs[0].clone();
    let (c1, _) = net.pairs[1].clone();
    // Select the second link by its MAC, not its name.
    net.client
        .ip(&["link", "set", "dev", &c1, "address", "02:00:5e:10:00:42"]);
    let mac: MacAddr = "02:00:5e:10:00:42".parse().unwrap();
    let cidr = |s: &str| s.parse::<IpCidr>().unwrap();
    let v4 = format!("{}/24", net.addr(1, 7));
    let v6 = format!("fd00:{}::7/64", net.id + 1);
    let v6_gw = format!("fd00:{}::1", net.id + 1);
    let mut link = LinkSettings::new(LinkSelector::Mac(mac));
    link.addresses = vec![cidr(&v4), cidr(&v6)];
    link.routes = vec![
        RouteSettings {
            destination: cidr("::/0"),
            gateway: Some(v6_gw.parse().unwrap()),
            metric: None,
        },
        RouteSettings {
            destination: cidr("172.31.0.0/16"),
            gateway: None,
            metric: None,
        },
    ];
    link.mtu = Some(1280);
    let settings = Settings {
        links: vec![link],
        dns: Dns {
            servers: vec!["fd00::53".parse().unwrap()],
            search: vec!["static.example".into()],
        },
        ..Settings::default()
    };
    let mut netd = Netd::start(&net, settings);
    let status = netd.wait("static config", DEADLINE, |s| configured(s) && s.ready());
    let l = &status.links[0];
    assert_eq!(l.name.as_deref(), Some(c1.as_str()));
    assert_eq!(l.mac, Some(mac));
    assert!(l.error.is_none(), "{:?}", l.error);
    assert_eq!(net.client_addrs(&c1), vec![v4]);
    let a6 = net.client.ip(&["-6", "addr", "show", "dev", &c1]);
    assert!(a6.contains(&v6), "{a6}");
    let r6 = net.client.ip(&["-6", "route", "show", "dev", &c1]);
    assert!(
        r6.contains(&format!("default via {v6_gw} proto static")),
        "{r6}"
    );
    let r4 = net.client.ip(&["-4", "route", "show", "dev", &c1]);
    assert!(r4.contains("172.31.0.0/16 proto static scope link"), "{r4}");
    let link = net.client.ip(&["link", "show", "dev", &c1]);
    assert!(link.contains("mtu 1280") && link.contains(",UP"), "{link}");
    // The other link is nobody's: left alone.
    let other = net.client.ip(&["link", "show", "dev", &c0]);
    assert!(!other.contains(",UP"), "{other}");
    let resolv = std::fs::read_to_string(net.resolv_conf()).unwrap();
    assert_eq!(
        resolv,
        "# written by kiln netd\nnameserver fd00::53\nsearch static.example\n"
    );
}

#[test]
fn links_that_appear_later_or_come_back_are_configured() {
    let net = TestNet::new(1);
    let late = format!("nd{}{:02}late", std::process::id() % 100_000, net.id);
    let mut link = LinkSettings::new(LinkSelector::Name(late.clone()));
    let addr = format!("{}/24", net.addr(0, 8));
    link.addresses = vec![addr.parse().unwrap()];
    let settings = Settings {
        links: vec![link],
        ..Settings::default()
    };
    let mut netd = Netd::start(&net, settings);
    netd.wait("netd up", DEADLINE, |s| {
        s.links
            .first()
            .is_some_and(|l| l.state == LinkState::Waiting)
    });
    // Hot-plug: a veth pair made inside the client namespace.
    let peer = format!("{late}p");
    net.client
        .ip(&["link", "add", &late, "type", "veth", "peer", "name", &peer]);
    netd.wait("the late link configured", DEADLINE, configured);
    assert_eq!(net.client_addrs(&late), vec![addr.clone()]);

    // Unplugged: the selector waits again; plugged back: configured again.
    net.client.ip(&["link", "del", &late]);
    let waiting = netd.wait("the link gone", DEADLINE, |s| {
        s.links[0].state == LinkState::Waiting
    });
    assert_eq!(waiting.links[0].index, None);
    assert!(waiting.links[0].addresses.is_empty());
    net.client
        .ip(&["link", "add", &late, "type", "veth", "peer", "name", &peer]);
    netd.wait("the link back", DEADLINE, configured);
    assert_eq!(net.client_addrs(&late), vec![addr]);
}
