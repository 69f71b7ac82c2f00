//! The plugins driven for real, as root, in namespaces each test creates.
//! Every scenario runs against Kiln's plugins and Debian's reference plugins
//! (containernetworking-plugins), so Kiln is held to the reference behaviour.

// Shared with tests/portmap.rs and the bench; the port-mapping parts are theirs.
#[allow(dead_code)]
mod harness;

use std::collections::BTreeSet;
use std::process::Command;

use harness::{run, Lab, PluginSet};
use serde_json::{json, Value};

fn kiln() -> PluginSet {
    PluginSet::kiln(env!("CARGO_BIN_EXE_kiln-cni").as_ref())
}

/// Each scenario once per plugin set.
macro_rules! both {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn kiln() {
                super::$scenario(&super::kiln())
            }
            #[test]
            fn reference() {
                super::$scenario(&super::PluginSet::reference())
            }
        }
    )*};
}

both!(
    two_pods_reach_each_other_and_the_host,
    del_removes_everything_and_repeats,
    cycles_leak_nothing,
    check_detects_deleted_veth,
    check_detects_missing_address,
    hairpin_promisc_and_mtu,
    version_lists_spec_versions,
    bad_config_is_an_error,
    bridge_name_taken_by_another_link,
    concurrent_adds_get_distinct_addresses,
);

fn ping(pod: Option<&str>, ip: &str) -> bool {
    let mut cmd = match pod {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "ping"]);
            c
        }
        None => Command::new("ping"),
    };
    cmd.args(["-c1", "-W2", ip])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `ip -j` output of a command run in the pod (or the lab's host) namespace.
fn ip_json(pod: Option<&str>, args: &[&str]) -> Value {
    let mut full = Vec::new();
    if let Some(ns) = pod {
        full.extend(["netns", "exec", ns, "ip"]);
    }
    full.push("-j");
    full.extend(args);
    serde_json::from_str(&run("ip", &full)).expect("ip -j output")
}

fn link_names(pod: Option<&str>) -> BTreeSet<String> {
    ip_json(pod, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

fn addresses(pod: Option<&str>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in ip_json(pod, &["addr", "show"]).as_array().unwrap() {
        for a in l["addr_info"].as_array().unwrap() {
            out.insert(format!("{} {}/{}", l["ifname"], a["local"], a["prefixlen"]));
        }
    }
    out
}

/// IP reservation files in the network's store.
fn reservations(lab: &Lab) -> BTreeSet<String> {
    std::fs::read_dir(lab.data_dir.join("kilntest"))
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

fn add(lab: &Lab, set: &PluginSet, conf: &Value, id: &str, pod: &str) -> Value {
    let r = lab.cni(&set.bridge, "ADD", conf, id, Some(pod), "eth0");
    assert!(r.ok, "{} ADD failed: {}", set.name, r.stdout);
    let lo = json!({"cniVersion": "1.0.0", "name": "lo", "type": set.loopback.file_name().unwrap().to_str().unwrap()});
    let l = lab.cni(&set.loopback, "ADD", &lo, id, Some(pod), "lo");
    assert!(l.ok, "{} loopback ADD failed: {}", set.name, l.stdout);
    r.json
}

fn del(lab: &Lab, set: &PluginSet, conf: &Value, id: &str, pod: Option<&str>) {
    let r = lab.cni(&set.bridge, "DEL", conf, id, pod, "eth0");
    assert!(r.ok, "{} DEL failed: {}", set.name, r.stdout);
}

/// The pod's address of the given family from an ADD result.
fn ip_of(result: &Value, v4: bool) -> String {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap())
        .find(|a| a.contains('.') == v4)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

fn two_pods_reach_each_other_and_the_host(set: &PluginSet) {
    let mut lab = Lab::new("reach");
    let (p1, p2) = (lab.pod("p1"), lab.pod("p2"));
    let conf = lab.conf(set, false);
    let r1 = add(&lab, set, &conf, "c1", &p1);
    let r2 = add(&lab, set, &conf, "c2", &p2);

    let ifs = r1["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 3, "bridge, host veth, pod interface: {r1}");
    assert_eq!(ifs[0]["name"], lab.bridge.as_str());
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["sandbox"], lab.netns_path(&p1).to_str().unwrap());
    assert_eq!(r1["ips"][0]["interface"], 2);
    assert_eq!(r1["ips"][0]["gateway"], "10.88.0.1");
    assert_eq!(r1["cniVersion"], "1.0.0");
    assert_ne!(ip_of(&r1, true), ip_of(&r2, true));
    let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    assert_eq!(fwd.trim(), "1", "ADD enables forwarding");

    let (a1, a2) = (ip_of(&r1, true), ip_of(&r2, true));
    assert!(ping(Some(&p1), &a2), "{}: pod 1 -> pod 2", set.name);
    assert!(ping(Some(&p2), &a1), "{}: pod 2 -> pod 1", set.name);
    assert!(
        ping(Some(&p1), "10.88.0.1"),
        "{}: pod -> host (gateway)",
        set.name
    );
    assert!(ping(None, &a2), "{}: host -> pod", set.name);
    assert!(
        ping(Some(&p1), &ip_of(&r2, false)),
        "{}: pod 1 -> pod 2 over IPv6",
        set.name
    );
    assert!(
        ping(Some(&p1), "127.0.0.1"),
        "{}: loopback up in the pod",
        set.name
    );

    del(&lab, set, &conf, "c1", Some(&p1));
    assert!(!ping(Some(&p2), &a1), "{}: pod 1 gone after DEL", set.name);
    del(&lab, set, &conf, "c2", Some(&p2));
}

fn del_removes_everything_and_repeats(set: &PluginSet) {
    let mut lab = Lab::new("del");
    let p1 = lab.pod("p1");
    let conf = lab.conf(set, true);
    let r = add(&lab, set, &conf, "c1", &p1);
    let veth = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    assert!(link_names(None).contains(&veth));
    assert_eq!(reservations(&lab).len(), 1);

    del(&lab, set, &conf, "c1", Some(&p1));
    assert!(
        !link_names(None).contains(&veth),
        "{}: host veth removed",
        set.name
    );
    assert!(
        !link_names(Some(&p1)).contains("eth0"),
        "{}: pod interface removed",
        set.name
    );
    assert!(
        reservations(&lab).is_empty(),
        "{}: address released",
        set.name
    );
    del(&lab, set, &conf, "c1", Some(&p1));

    // The runtime may have removed the namespace before DEL, or pass none.
    add(&lab, set, &conf, "c2", &p1);
    run("ip", &["netns", "del", &p1]);
    del(&lab, set, &conf, "c2", Some(&p1));
    del(&lab, set, &conf, "c2", None);
    assert!(
        reservations(&lab).is_empty(),
        "{}: address released without netns",
        set.name
    );
}

fn cycles_leak_nothing(set: &PluginSet) {
    let mut lab = Lab::new("cyc");
    let p1 = lab.pod("p1");
    let conf = lab.conf(set, true);
    // One cycle first: the bridge and its gateway address stay by design.
    add(&lab, set, &conf, "warm", &p1);
    del(&lab, set, &conf, "warm", Some(&p1));
    let (links, addrs, pod_links) = (link_names(None), addresses(None), link_names(Some(&p1)));
    let mut seen = BTreeSet::new();
    for i in 0..200 {
        let id = format!("cycle{i}");
        let r = add(&lab, set, &conf, &id, &p1);
        seen.insert(ip_of(&r, true));
        del(&lab, set, &conf, &id, Some(&p1));
    }
    assert_eq!(link_names(None), links, "{}: host links leaked", set.name);
    assert_eq!(
        addresses(None),
        addrs,
        "{}: host addresses leaked",
        set.name
    );
    assert_eq!(
        link_names(Some(&p1)),
        pod_links,
        "{}: pod links leaked",
        set.name
    );
    assert!(
        reservations(&lab).is_empty(),
        "{}: reservations leaked",
        set.name
    );
    // Round-robin: 200 cycles walk the whole /24 rather than reuse one address.
    assert!(
        seen.len() > 200 / 2,
        "{}: only {} distinct addresses",
        set.name,
        seen.len()
    );
}

/// ADD then CHECK (must pass), break the attachment, CHECK (must fail).
fn check_after(set: &PluginSet, tag: &str, breakage: impl Fn(&Lab, &str, &Value)) {
    let mut lab = Lab::new(tag);
    let p1 = lab.pod("p1");
    let mut conf = lab.conf(set, true);
    let r = add(&lab, set, &conf, "c1", &p1);
    conf["prevResult"] = r.clone();
    let ok = lab.cni(&set.bridge, "CHECK", &conf, "c1", Some(&p1), "eth0");
    assert!(
        ok.ok,
        "{}: CHECK of an intact attachment: {}",
        set.name, ok.stdout
    );
    breakage(&lab, &p1, &r);
    let bad = lab.cni(&set.bridge, "CHECK", &conf, "c1", Some(&p1), "eth0");
    assert!(!bad.ok, "{}: CHECK passed a broken attachment", set.name);
    assert!(
        bad.json["code"].as_u64().unwrap_or(0) > 0,
        "{}: spec error: {}",
        set.name,
        bad.stdout
    );
    assert!(!bad.json["msg"].as_str().unwrap_or("").is_empty());
    del(&lab, set, &conf, "c1", Some(&p1));
}

fn check_detects_deleted_veth(set: &PluginSet) {
    check_after(set, "chkv", |_, _, r| {
        run(
            "ip",
            &["link", "del", r["interfaces"][1]["name"].as_str().unwrap()],
        );
    });
}

fn check_detects_missing_address(set: &PluginSet) {
    check_after(set, "chka", |_, pod, r| {
        let addr = r["ips"][0]["address"].as_str().unwrap();
        run(
            "ip",
            &[
                "netns", "exec", pod, "ip", "addr", "del", addr, "dev", "eth0",
            ],
        );
    });
}

fn hairpin_promisc_and_mtu(set: &PluginSet) {
    let mut lab = Lab::new("opts");
    let (p1, p2, p3) = (lab.pod("p1"), lab.pod("p2"), lab.pod("p3"));
    let mut conf = lab.conf(set, true);
    conf["hairpinMode"] = json!(true);
    conf["mtu"] = json!(1400);
    let r = add(&lab, set, &conf, "c1", &p1);
    let veth = r["interfaces"][1]["name"].as_str().unwrap();
    let port = &ip_json(None, &["-d", "link", "show", "dev", veth])[0];
    assert_eq!(
        port["linkinfo"]["info_slave_data"]["hairpin"], true,
        "{}: {port}",
        set.name
    );
    assert_eq!(port["master"], lab.bridge.as_str());
    assert_eq!(port["mtu"], 1400, "{}", set.name);
    let eth0 = &ip_json(Some(&p1), &["link", "show", "dev", "eth0"])[0];
    assert_eq!(eth0["mtu"], 1400, "{}", set.name);

    // Both at once would deliver a pod's frames back to it twice: refused.
    conf["promiscMode"] = json!(true);
    let r = lab.cni(&set.bridge, "ADD", &conf, "c2", Some(&p2), "eth0");
    assert!(!r.ok, "{}: hairpin + promisc accepted", set.name);
    conf["hairpinMode"] = json!(false);
    add(&lab, set, &conf, "c3", &p3);
    let br = &ip_json(None, &["link", "show", "dev", &lab.bridge])[0];
    assert!(
        br["flags"].as_array().unwrap().contains(&json!("PROMISC")),
        "{}: {br}",
        set.name
    );
    del(&lab, set, &conf, "c1", Some(&p1));
    del(&lab, set, &conf, "c3", Some(&p3));
}

fn version_lists_spec_versions(set: &PluginSet) {
    let lab = Lab::new("ver");
    for plugin in [&set.bridge, &set.loopback] {
        let r = lab.cni(
            plugin,
            "VERSION",
            &json!({"cniVersion": "1.0.0"}),
            "",
            None,
            "",
        );
        assert!(r.ok, "{}: {}", set.name, r.stdout);
        let v: Vec<&str> = r.json["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for want in ["0.3.1", "0.4.0", "1.0.0"] {
            assert!(v.contains(&want), "{}: {v:?} lacks {want}", set.name);
        }
        assert_eq!(v.contains(&"1.1.0"), set.spec_1_1, "{}: {v:?}", set.name);
        assert_eq!(r.json["cniVersion"], "1.0.0");
    }
}

fn bad_config_is_an_error(set: &PluginSet) {
    let mut lab = Lab::new("bad");
    let p1 = lab.pod("p1");
    let good = lab.conf(set, true);
    let mut no_ranges = good.clone();
    no_ranges["ipam"]["ranges"] = json!([]);
    let mut bad_subnet = good.clone();
    bad_subnet["ipam"]["ranges"] = json!([[{"subnet": "10.88.0.0/99"}]]);
    let mut bad_version = good.clone();
    bad_version["cniVersion"] = json!("7.0.0");
    for conf in [json!("{not json"), no_ranges, bad_subnet, bad_version] {
        let r = lab.cni(&set.bridge, "ADD", &conf, "c1", Some(&p1), "eth0");
        assert!(!r.ok, "{}: accepted {conf}", set.name);
        assert!(
            r.json["code"].as_u64().unwrap_or(0) > 0,
            "{}: not a spec error: {}",
            set.name,
            r.stdout
        );
        assert!(!r.json["msg"].as_str().unwrap_or("").is_empty());
        if set.cleans_up_failed_add {
            assert!(
                !link_names(Some(&p1)).contains("eth0"),
                "{}: failed ADD left eth0",
                set.name
            );
        }
    }
    assert!(reservations(&lab).is_empty());
}

fn bridge_name_taken_by_another_link(set: &PluginSet) {
    let mut lab = Lab::new("taken");
    let p1 = lab.pod("p1");
    // A veth, not a dummy: this kernel may lack the dummy driver.
    let peer = format!("{}p", lab.bridge);
    run(
        "ip",
        &[
            "link",
            "add",
            &lab.bridge,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ],
    );
    let conf = lab.conf(set, true);
    let r = lab.cni(&set.bridge, "ADD", &conf, "c1", Some(&p1), "eth0");
    assert!(!r.ok, "{}: used a veth as the bridge", set.name);
    assert!(
        r.json["msg"]
            .as_str()
            .unwrap_or("")
            .contains("not a bridge"),
        "{}: {}",
        set.name,
        r.stdout
    );
    assert!(
        reservations(&lab).is_empty(),
        "{}: address kept after a failed ADD",
        set.name
    );
}

/// Parallel ADDs (the runtime starts pods concurrently) serialise on the
/// store's lock: distinct addresses, one bridge, every pod reachable.
fn concurrent_adds_get_distinct_addresses(set: &PluginSet) {
    const PODS: usize = 8;
    let mut lab = Lab::new("par");
    let pods: Vec<String> = (0..PODS).map(|i| lab.pod(&format!("p{i}"))).collect();
    let conf = lab.conf(set, true);
    // Threads start in their creator's namespace: the lab's host.
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let (lab, conf) = (&lab, &conf);
                s.spawn(move || {
                    lab.cni(
                        &set.bridge,
                        "ADD",
                        conf,
                        &format!("c{i}"),
                        Some(pod),
                        "eth0",
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips = BTreeSet::new();
    for r in &results {
        assert!(r.ok, "{}: {}", set.name, r.stdout);
        ips.insert(ip_of(&r.json, true));
    }
    assert_eq!(ips.len(), PODS, "{}: duplicate addresses {ips:?}", set.name);
    assert_eq!(reservations(&lab), ips);
    for ip in &ips {
        assert!(ping(None, ip), "{}: host -> {ip}", set.name);
    }
    for (i, pod) in pods.iter().enumerate() {
        del(&lab, set, &conf, &format!("c{i}"), Some(pod));
    }
    assert!(reservations(&lab).is_empty());
}

// Kiln only: CNI 1.1 commands and error details the reference 1.1.1 lacks.

#[test]
fn kiln_config_errors_name_the_field() {
    let set = kiln();
    let mut lab = Lab::new("field");
    let p1 = lab.pod("p1");
    let good = lab.conf(&set, true);
    let cases: [(&str, Value, u64, &str); 6] = [
        ("/ipam/ranges", json!([]), 7, "ipam.ranges"),
        (
            "/ipam/ranges",
            json!([[{"subnet": "10.88.0.0/99"}]]),
            7,
            "ipam.ranges[0][0].subnet",
        ),
        (
            "/ipam/ranges",
            json!([[{"subnet": "10.88.0.0/24", "gateway": "10.1.1.1"}]]),
            7,
            "gateway",
        ),
        ("/mtu", json!("big"), 7, "mtu"),
        ("/ipMasq", json!(true), 2, "ipMasq"),
        ("/cniVersion", json!("7.0.0"), 1, "7.0.0"),
    ];
    for (ptr, value, code, field) in cases {
        let mut conf = good.clone();
        let (parent, key) = ptr.rsplit_once('/').unwrap();
        conf.pointer_mut(parent).unwrap()[key] = value;
        let r = lab.cni(&set.bridge, "ADD", &conf, "c1", Some(&p1), "eth0");
        assert!(!r.ok);
        assert_eq!(r.json["code"], code, "{ptr}: {}", r.stdout);
        assert!(
            r.json["msg"].as_str().unwrap().contains(field),
            "{ptr}: {}",
            r.stdout
        );
    }
    let r = lab.cni(&set.bridge, "ADD", &good, "c1", None, "eth0");
    assert_eq!(r.json["code"], 4, "missing CNI_NETNS: {}", r.stdout);
    assert!(r.json["msg"].as_str().unwrap().contains("CNI_NETNS"));
}

#[test]
fn kiln_gc_releases_attachments_not_listed() {
    let set = kiln();
    let mut lab = Lab::new("gc");
    let (p1, p2) = (lab.pod("p1"), lab.pod("p2"));
    let mut conf = lab.conf(&set, true);
    conf["cniVersion"] = json!("1.1.0");
    let r1 = add(&lab, &set, &conf, "keep", &p1);
    add(&lab, &set, &conf, "stale", &p2);
    assert_eq!(reservations(&lab).len(), 2);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let r = lab.cni(&set.bridge, "GC", &gc, "", None, "");
    assert!(r.ok, "{}", r.stdout);
    assert_eq!(reservations(&lab), BTreeSet::from([ip_of(&r1, true)]));
    // GC needs 1.1.0.
    let r = lab.cni(&set.bridge, "GC", &lab.conf(&set, true), "", None, "");
    assert_eq!(r.json["code"], 1, "{}", r.stdout);
}

#[test]
fn kiln_status_reports_a_full_range() {
    let set = kiln();
    let mut lab = Lab::new("st");
    let mut conf = lab.conf(&set, true);
    conf["cniVersion"] = json!("1.1.0");
    // .1 is the gateway: .2 and .3 are the only addresses.
    conf["ipam"]["ranges"] = json!([[{"subnet": "10.88.0.0/24", "rangeEnd": "10.88.0.3"}]]);
    let r = lab.cni(&set.bridge, "STATUS", &conf, "", None, "");
    assert!(r.ok, "{}", r.stdout);
    let pods = [lab.pod("p1"), lab.pod("p2"), lab.pod("p3")];
    add(&lab, &set, &conf, "a", &pods[0]);
    add(&lab, &set, &conf, "b", &pods[1]);
    let r = lab.cni(&set.bridge, "STATUS", &conf, "", None, "");
    assert_eq!(r.json["code"], 50, "{}", r.stdout);
    let r = lab.cni(&set.bridge, "ADD", &conf, "c", Some(&pods[2]), "eth0");
    assert!(
        !r.ok && r.json["msg"].as_str().unwrap().contains("no free address"),
        "{}",
        r.stdout
    );
    assert!(!link_names(Some(&pods[2])).contains("eth0"));
}

#[test]
fn kiln_host_local_standalone_and_chained_loopback() {
    let set = kiln();
    let mut lab = Lab::new("ipam");
    let p1 = lab.pod("p1");
    let mut conf = lab.conf(&set, false);
    conf["type"] = json!("kiln-host-local");
    let ipam = set.bridge.with_file_name("kiln-host-local");
    let r = lab.cni(&ipam, "ADD", &conf, "c1", Some(&p1), "eth0");
    assert!(r.ok, "{}", r.stdout);
    assert_eq!(
        r.json["ips"].as_array().unwrap().len(),
        2,
        "one address per range set"
    );
    assert_eq!(reservations(&lab).len(), 2);
    // A second ADD for the same attachment is refused, not double-allocated.
    let again = lab.cni(&ipam, "ADD", &conf, "c1", Some(&p1), "eth0");
    assert_eq!(again.json["code"], 11, "{}", again.stdout);
    let r2 = lab.cni(&ipam, "DEL", &conf, "c1", Some(&p1), "eth0");
    assert!(r2.ok && reservations(&lab).is_empty(), "{}", r2.stdout);

    // Loopback after another plugin passes prevResult through.
    let lo =
        json!({"cniVersion": "0.4.0", "name": "lo", "type": "kiln-loopback", "prevResult": r.json});
    let out = lab.cni(&set.loopback, "ADD", &lo, "c1", Some(&p1), "lo");
    assert!(out.ok, "{}", out.stdout);
    assert_eq!(
        out.json["ips"],
        r.json["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ip| {
                let mut ip = ip.clone();
                ip["version"] = json!(if ip["address"].as_str().unwrap().contains('.') {
                    "4"
                } else {
                    "6"
                });
                ip
            })
            .collect::<Value>(),
        "0.4.0 results name each IP's family"
    );
    assert!(ping(Some(&p1), "127.0.0.1"));
}
