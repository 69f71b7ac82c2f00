//! The DHCPv4 client against Debian's dnsmasq, in network namespaces (root).

mod common;

use std::time::Duration;

use common::{Dnsmasq, Netd, TestNet, DEADLINE};
use kiln_netd::settings::{LinkSelector, LinkSettings};
use kiln_netd::status::{DhcpState, LinkState};
use kiln_netd::{Settings, Status};

fn dhcp_on(dev: &str) -> Settings {
    let mut link = LinkSettings::new(LinkSelector::Name(dev.to_string()));
    link.dhcp4 = true;
    Settings {
        links: vec![link],
        ..Settings::default()
    }
}

fn bound(s: &Status) -> bool {
    s.links
        .first()
        .is_some_and(|l| l.state == LinkState::Dhcp(DhcpState::Bound) && l.lease.is_some())
}

/// dnsmasq's shortest lease is 2 minutes; T1/T2 options make renewal come
/// sooner.
fn range(net: &TestNet, lo: u8, hi: u8) -> String {
    format!("{},{},255.255.255.0,2m", net.addr(0, lo), net.addr(0, hi))
}

#[test]
fn lease_applies_address_routes_mtu_resolv_conf_and_ntp_then_release() {
    let net = TestNet::new(1);
    net.serve(0);
    let (c, s) = net.pairs[0].clone();
    let gw = net.addr(0, 1);
    let other = net.addr(0, 254);
    let leases = net.dir.path().join("leases");
    let server = Dnsmasq::start(
        &net,
        &s,
        &range(&net, 50, 60),
        &leases,
        &[
            // Option 3 is ignored when 121 is present (RFC 3442).
            &format!("--dhcp-option=3,{}", net.addr(0, 2)),
            &format!("--dhcp-option=121,192.168.77.0/24,{other},0.0.0.0/0,{gw}"),
            &format!("--dhcp-option=6,{},{}", net.addr(0, 53), net.addr(0, 54)),
            "--dhcp-option=119,corp.example,lab.corp.example",
            "--dhcp-option=26,1400",
            &format!("--dhcp-option=42,{},{}", net.addr(0, 123), net.addr(0, 124)),
        ],
    );
    let mut netd = Netd::start(&net, dhcp_on(&c));
    let status = netd.wait("a lease", DEADLINE, |s| bound(s) && s.ready());
    let link = &status.links[0];
    let lease = link.lease.as_ref().unwrap();
    let addr = lease.address.to_string();
    assert!(
        addr.starts_with(&format!("10.200.{}.", net.id)) && addr.ends_with("/24"),
        "{addr}"
    );
    assert_eq!(lease.server.to_string(), gw);
    assert_eq!(lease.mtu, Some(1400));
    assert_eq!(lease.search, vec!["corp.example", "lab.corp.example"]);

    // The kernel has what the status says.
    assert_eq!(net.client_addrs(&c), vec![addr.clone()]);
    let a = net.client.ip(&["-4", "addr", "show", "dev", &c]);
    assert!(
        !a.contains("valid_lft forever"),
        "the address must carry the lease's lifetime:\n{a}"
    );
    let routes = net.client.ip(&["-4", "route", "show", "dev", &c]);
    assert!(
        routes.contains(&format!("default via {gw} proto dhcp")),
        "{routes}"
    );
    assert!(
        routes.contains(&format!("192.168.77.0/24 via {other} proto dhcp")),
        "{routes}"
    );
    let router3 = format!("via {} ", net.addr(0, 2));
    assert!(
        !routes.contains(&router3),
        "option 3 must lose to 121:\n{routes}"
    );
    let l = net.client.ip(&["link", "show", "dev", &c]);
    assert!(l.contains("mtu 1400"), "{l}");
    let resolv = std::fs::read_to_string(net.resolv_conf()).unwrap();
    assert_eq!(
        resolv,
        format!(
            "# written by kiln netd\nnameserver {}\nnameserver {}\nsearch corp.example lab.corp.example\n",
            net.addr(0, 53),
            net.addr(0, 54)
        )
    );

    let ntp = std::fs::read_to_string(net.ntp_servers()).unwrap();
    let want: Vec<std::net::Ipv4Addr> = [net.addr(0, 123), net.addr(0, 124)]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(lease.ntp, want);
    assert_eq!(kiln_netd::ntp::parse(&ntp).unwrap(), want, "{ntp}");

    // Shutdown releases the lease and gives the address up.
    netd.stop().unwrap();
    server.wait_log("DHCPRELEASE", 1);
    assert!(net.client_addrs(&c).is_empty());
}

#[test]
fn renews_at_t1_before_expiry() {
    let net = TestNet::new(1);
    net.serve(0);
    let (c, s) = net.pairs[0].clone();
    let leases = net.dir.path().join("leases");
    let server = Dnsmasq::start(
        &net,
        &s,
        &range(&net, 50, 60),
        &leases,
        &["--dhcp-option=option:T1,4s", "--dhcp-option=option:T2,90s"],
    );
    let mut netd = Netd::start(&net, dhcp_on(&c));
    let first = netd.wait("a lease", DEADLINE, bound).links[0]
        .lease
        .clone()
        .unwrap();
    assert_eq!(
        first
            .renew_at
            .unwrap()
            .duration_since(first.obtained)
            .unwrap(),
        Duration::from_secs(4)
    );
    let renewed = netd.wait("a renewal", DEADLINE, |s| {
        bound(s) && s.links[0].lease.as_ref().unwrap().obtained > first.obtained
    });
    let second = renewed.links[0].lease.clone().unwrap();
    assert_eq!(second.address, first.address);
    assert!(
        second.obtained < first.expires_at.unwrap(),
        "renewed before expiry"
    );
    // A renewal is a unicast REQUEST with ciaddr set: no new DISCOVER.
    assert_eq!(server.count("DHCPDISCOVER"), 1, "{}", server.log());
    assert!(server.count("DHCPACK") >= 2, "{}", server.log());
    assert_eq!(net.client_addrs(&c), vec![second.address.to_string()]);
}

#[test]
fn carrier_loss_then_return_reacquires_with_init_reboot() {
    let net = TestNet::new(1);
    net.serve(0);
    let (c, s) = net.pairs[0].clone();
    let leases = net.dir.path().join("leases");
    let server = Dnsmasq::start(&net, &s, &range(&net, 50, 60), &leases, &[]);
    let mut netd = Netd::start(&net, dhcp_on(&c));
    let first = netd.wait("a lease", DEADLINE, bound).links[0]
        .lease
        .clone()
        .unwrap();

    // The peer going down takes the carrier away from the client's veth.
    net.server.ip(&["link", "set", &s, "down"]);
    netd.wait("carrier loss", DEADLINE, |s| {
        !s.links[0].carrier && s.links[0].state == LinkState::NoCarrier
    });
    net.server.ip(&["link", "set", &s, "up"]);
    let again = netd.wait("the lease again", DEADLINE, |s| {
        bound(s) && s.links[0].lease.as_ref().unwrap().obtained > first.obtained
    });
    let second = again.links[0].lease.clone().unwrap();
    assert!(again.links[0].carrier);
    assert_eq!(second.address, first.address);
    // INIT-REBOOT: a REQUEST for the old address, not a new DISCOVER.
    assert_eq!(server.count("DHCPDISCOVER"), 1, "{}", server.log());
    assert!(server.count("DHCPREQUEST") >= 2, "{}", server.log());
    assert_eq!(net.client_addrs(&c), vec![second.address.to_string()]);
}

#[test]
fn nak_after_carrier_return_starts_over_with_a_new_address() {
    let net = TestNet::new(1);
    net.serve(0);
    let (c, s) = net.pairs[0].clone();
    let first_server = Dnsmasq::start(
        &net,
        &s,
        &range(&net, 50, 60),
        &net.dir.path().join("leases-a"),
        &[],
    );
    let mut netd = Netd::start(&net, dhcp_on(&c));
    let first = netd.wait("a lease", DEADLINE, bound).links[0]
        .lease
        .clone()
        .unwrap();

    // While the cable is out, the network is renumbered.
    net.server.ip(&["link", "set", &s, "down"]);
    netd.wait("carrier loss", DEADLINE, |s| !s.links[0].carrier);
    drop(first_server);
    let second_server = Dnsmasq::start(
        &net,
        &s,
        &range(&net, 100, 110),
        &net.dir.path().join("leases-b"),
        &["--dhcp-authoritative"],
    );
    net.server.ip(&["link", "set", &s, "up"]);
    let again = netd.wait("a lease in the new range", DEADLINE, |s| {
        bound(s) && s.links[0].lease.as_ref().unwrap().address != first.address
    });
    let second = again.links[0].lease.clone().unwrap();
    let octet: u8 = second
        .address
        .to_string()
        .split(['.', '/'])
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    assert!((100..=110).contains(&octet), "{}", second.address);
    second_server.wait_log("DHCPNAK", 1);
    // The old address went with the NAK.
    assert_eq!(net.client_addrs(&c), vec![second.address.to_string()]);
    assert_eq!(again.links[0].addresses, vec![second.address]);
}

#[test]
fn expiry_without_a_server_removes_address_and_routes() {
    let net = TestNet::new(1);
    net.serve(0);
    let (c, s) = net.pairs[0].clone();
    let leases = net.dir.path().join("leases");
    let server = Dnsmasq::start(
        &net,
        &s,
        &range(&net, 50, 60),
        &leases,
        &[
            "--dhcp-option=option:T1,2s",
            "--dhcp-option=option:T2,4s",
            &format!("--dhcp-option=6,{}", net.addr(0, 53)),
        ],
    );
    let mut netd = Netd::start(&net, dhcp_on(&c));
    let first = netd
        .wait("a lease", DEADLINE, |s| bound(s) && s.ready())
        .links[0]
        .lease
        .clone()
        .unwrap();
    let resolv = std::fs::read_to_string(net.resolv_conf()).unwrap();
    assert!(resolv.contains(&net.addr(0, 53)), "{resolv}");
    drop(server);
    // Renewing, then rebinding, find nobody.
    netd.wait("rebinding", DEADLINE, |s| {
        s.links[0].state == LinkState::Dhcp(DhcpState::Rebinding)
    });
    // dnsmasq's shortest lease is two minutes: wait for it to run out.
    let lease_left = first
        .expires_at
        .unwrap()
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    let gone = netd.wait("expiry", lease_left + DEADLINE, |s| {
        s.links[0].lease.is_none() && s.links[0].addresses.is_empty()
    });
    assert!(!gone.ready());
    assert!(gone.links[0].routes.is_empty());
    assert!(net.client_addrs(&c).is_empty());
    let routes = net.client.ip(&["-4", "route", "show", "dev", &c]);
    assert!(!routes.contains("default"), "{routes}");
    let resolv = std::fs::read_to_string(net.resolv_conf()).unwrap();
    assert!(!resolv.contains(&net.addr(0, 53)), "{resolv}");
}

#[test]
fn first_with_carrier_picks_the_live_link() {
    let net = TestNet::new(2);
    // Pair 0's far end stays down: no carrier. Pair 1 has the server.
    net.serve(1);
    let (c1, s1) = net.pairs[1].clone();
    let leases = net.dir.path().join("leases");
    let lo = net.addr(1, 50);
    let hi = net.addr(1, 60);
    let _server = Dnsmasq::start(
        &net,
        &s1,
        &format!("{lo},{hi},255.255.255.0,2m"),
        &leases,
        &[],
    );
    let settings = Settings::from_cmdline("quiet ip=dhcp").unwrap();
    let mut netd = Netd::start(&net, settings);
    let status = netd.wait("a lease", DEADLINE, bound);
    assert_eq!(status.links[0].name.as_deref(), Some(c1.as_str()));
    assert_eq!(
        net.client_addrs(&c1),
        vec![status.links[0].lease.as_ref().unwrap().address.to_string()]
    );
    assert!(net.client_addrs(&net.pairs[0].0).is_empty());
}

/// Whether this kernel can make 802.1Q links (the CI host's kernel has no
/// CONFIG_VLAN_8021Q and no modules; Kiln's Debian kernel has 8021q).
fn kernel_has_vlans(net: &TestNet) -> bool {
    let (_, s) = &net.pairs[0];
    let probe = format!("{s}p");
    let ok = std::process::Command::new("ip")
        .args([
            "-n",
            &net.server.name,
            "link",
            "add",
            "link",
            s,
            "name",
            &probe,
        ])
        .args(["type", "vlan", "id", "7"])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    if ok {
        net.server.ip(&["link", "del", &probe]);
    }
    ok
}

#[test]
fn dhcp_over_a_vlan_netd_creates() {
    let net = TestNet::new(1);
    let (c, s) = net.pairs[0].clone();
    let cv = format!("{c}v");
    let mut vlan = LinkSettings::new(LinkSelector::Vlan {
        parent: Box::new(LinkSelector::Name(c.clone())),
        id: 42,
        name: Some(cv.clone()),
    });
    vlan.dhcp4 = true;
    let settings = Settings {
        links: vec![vlan],
        ..Settings::default()
    };
    if !kernel_has_vlans(&net) {
        // Without 802.1Q support netd must say which VLAN it could not make.
        eprintln!("this kernel has no 802.1Q support: checking the error path only");
        let mut netd = Netd::start(&net, settings);
        let status = netd.wait("the vlan error", DEADLINE, |s| {
            s.links.first().is_some_and(|l| l.error.is_some())
        });
        let error = status.links[0].error.clone().unwrap();
        assert!(
            error.contains(&format!("create vlan {cv} (id 42 on link")),
            "{error}"
        );
        assert!(error.contains("not supported"), "{error}");
        assert_eq!(status.links[0].state, LinkState::Waiting);
        return;
    }
    // The server side: VLAN 42 on its veth end, dnsmasq on the VLAN only.
    let sv = format!("{s}v");
    net.server.ip(&["link", "set", &s, "up"]);
    net.server.ip(&[
        "link", "add", "link", &s, "name", &sv, "type", "vlan", "id", "42",
    ]);
    let a = format!("{}/24", net.addr(0, 1));
    net.server.ip(&["addr", "add", &a, "dev", &sv]);
    net.server.ip(&["link", "set", &sv, "up"]);
    let leases = net.dir.path().join("leases");
    let _server = Dnsmasq::start(&net, &sv, &range(&net, 50, 60), &leases, &[]);

    let mut netd = Netd::start(&net, settings);
    let status = netd.wait("a lease over the vlan", DEADLINE, bound);
    assert_eq!(status.links[0].name.as_deref(), Some(cv.as_str()));
    let details = net.client.ip(&["-d", "link", "show", "dev", &cv]);
    assert!(details.contains(&format!("{cv}@{c}")), "{details}");
    assert!(details.contains("vlan protocol 802.1Q id 42"), "{details}");
    assert_eq!(
        net.client_addrs(&cv),
        vec![status.links[0].lease.as_ref().unwrap().address.to_string()]
    );
    // The parent itself carries no address.
    assert!(net.client_addrs(&c).is_empty());
}

/// A hostile server: answers every DISCOVER with garbage and with an OFFER
/// whose MTU is impossible, until `stop` is set. (Every one: the first
/// answer can be lost while the veth's queue is still being activated.)
fn answer_badly(
    net: &TestNet,
    dev: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
    use dhcproto::{Decodable, Decoder, Encodable};
    use std::os::fd::AsFd;
    use std::sync::atomic::Ordering;

    let ns = std::fs::File::open(format!("/run/netns/{}", net.server.name)).unwrap();
    let dev = dev.to_string();
    let server_ip: std::net::Ipv4Addr = net.addr(0, 1).parse().unwrap();
    let offered: std::net::Ipv4Addr = net.addr(0, 77).parse().unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let sock = std::net::UdpSocket::bind("0.0.0.0:67").unwrap();
        sock.set_broadcast(true).unwrap();
        nix::sys::socket::setsockopt(
            &sock,
            nix::sys::socket::sockopt::BindToDevice,
            &std::ffi::OsString::from(dev),
        )
        .unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::Relaxed) {
            let Ok(n) = sock.recv(&mut buf) else { continue };
            let discover = Message::decode(&mut Decoder::new(&buf[..n])).unwrap();
            if discover.opts().msg_type() != Some(MessageType::Discover) {
                continue;
            }
            let to = "255.255.255.255:68";
            sock.send_to(b"\x02\x01garbage", to).unwrap();
            let mut offer = discover.clone();
            offer.set_opcode(Opcode::BootReply).set_yiaddr(offered);
            offer.opts_mut().clear();
            let o = offer.opts_mut();
            o.insert(DhcpOption::MessageType(MessageType::Offer));
            o.insert(DhcpOption::ServerIdentifier(server_ip));
            o.insert(DhcpOption::AddressLeaseTime(600));
            o.insert(DhcpOption::InterfaceMtu(10));
            sock.send_to(&offer.to_vec().unwrap(), to).unwrap();
        }
    })
}

#[test]
fn malformed_replies_are_ignored_and_reported() {
    let net = TestNet::new(1);
    net.serve(0);
    let (c, s) = net.pairs[0].clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hostile = answer_badly(&net, &s, stop.clone());
    let mut netd = Netd::start(&net, dhcp_on(&c));
    let status = netd.wait("the bad offer reported", DEADLINE, |s| {
        s.links.first().is_some_and(|l| l.error.is_some())
    });
    let error = status.links[0].error.clone().unwrap();
    assert!(
        error.contains("option 26 (interface MTU): 10 is below"),
        "{error}"
    );
    assert_eq!(status.links[0].state, LinkState::Dhcp(DhcpState::Selecting));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    hostile.join().unwrap();
    assert!(net.client_addrs(&c).is_empty());

    // A real server later: the client is still selecting and takes its offer.
    let leases = net.dir.path().join("leases");
    let _server = Dnsmasq::start(&net, &s, &range(&net, 50, 60), &leases, &[]);
    let status = netd.wait("a lease", DEADLINE, bound);
    assert!(
        status.links[0].error.is_none(),
        "{:?}",
        status.links[0].error
    );
    let mtu = net.client.ip(&["link", "show", "dev", &c]);
    assert!(mtu.contains("mtu 1500"), "{mtu}");
}
