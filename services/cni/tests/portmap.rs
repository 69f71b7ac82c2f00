//! Port mappings for real, as root, in namespaces each test creates: a
//! server in one pod reached through a host port from the host (its
//! bridge address and 127.0.0.1), from another pod and from itself
//! (hairpin); DEL takes the forwarding away. The same scenario runs
//! against Debian's reference `portmap` plugin (iptables) and Kiln's
//! `kiln-portmap` (nftables over netlink).

// The lab of tests/cni.rs; this file uses the parts for chaining.
#[allow(dead_code)]
mod harness;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use harness::{Lab, PluginSet};
use nix::sched::{setns, CloneFlags};
use serde_json::{json, Value};

const HOST_PORT: u16 = 8080;
const POD_PORT: u16 = 80;
const GATEWAY: &str = "10.88.0.1";

fn kiln() -> PluginSet {
    PluginSet::kiln(env!("CARGO_BIN_EXE_kiln-cni").as_ref())
}

#[test]
fn kiln_port_mapping() {
    port_mapping(&kiln(), true);
}

/// Kiln's masquerade covers neighbours on the bridge without
/// br_netfilter too (the reference relies on it).
#[test]
fn kiln_port_mapping_without_bridge_netfilter() {
    port_mapping(&kiln(), false);
}

#[test]
fn reference_port_mapping() {
    port_mapping(&PluginSet::reference(), true);
}

/// A TCP server in a namespace that answers every connection with
/// `greeting`; stopped on drop.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(netns: &Path, port: u16, greeting: &'static str) -> Server {
        let ns = File::open(netns).expect("pod netns");
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns into the pod");
            // [::] takes IPv4 too (bindv6only is 0 by default).
            let l = TcpListener::bind(("::", port)).expect("bind in the pod");
            l.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            while !flag.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.write_all(greeting.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ready.recv().expect("server ready");
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a connection to `addr` made from `netns` (the calling thread's
/// namespace if `None`) reads, or the error.
fn fetch(netns: Option<&Path>, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    let ns = netns.map(|p| File::open(p).expect("netns"));
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(ns) = &ns {
                setns(ns, CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
            }
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                .map_err(|e| format!("connect {addr}: {e}"))?;
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut text = String::new();
            c.read_to_string(&mut text)
                .map_err(|e| format!("read {addr}: {e}"))?;
            Ok(text)
        })
        .join()
        .unwrap()
    })
}

fn portmap_conf(set: &PluginSet, prev: &Value) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "kilntest",
        "type": set.portmap.file_name().unwrap().to_str().unwrap(),
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [
            {"hostPort": HOST_PORT, "containerPort": POD_PORT, "protocol": "tcp"}
        ]},
        "prevResult": prev,
    })
}

/// `bridge_nf`: whether bridged traffic goes through the IP hooks
/// (br_netfilter's `bridge-nf-call-ip{,6}tables`), as Kubernetes wants.
fn port_mapping(set: &PluginSet, bridge_nf: bool) {
    let mut lab = Lab::new("pm");
    let (server_pod, client_pod) = (lab.pod("srv"), lab.pod("cli"));
    let mut conf = lab.conf(set, false);
    // As Kubernetes asks: with bridge-nf-call-iptables a pod reaching
    // itself through a host port is DNATed on the bridge and must be sent
    // back out of the port it came in on.
    conf["hairpinMode"] = json!(true);
    const BRIDGE_NF: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    if set.name == "kiln" && Path::new(BRIDGE_NF).exists() {
        // A new namespace starts with 1: start from 0 to see the plugin set it.
        std::fs::write(BRIDGE_NF, "0").unwrap();
    }
    let r_server = lab.cni(&set.bridge, "ADD", &conf, "srv", Some(&server_pod), "eth0");
    assert!(r_server.ok, "{}: bridge ADD: {}", set.name, r_server.stdout);
    let r_client = lab.cni(&set.bridge, "ADD", &conf, "cli", Some(&client_pod), "eth0");
    assert!(r_client.ok, "{}: bridge ADD: {}", set.name, r_client.stdout);
    if set.name == "kiln" && Path::new(BRIDGE_NF).exists() {
        let value = std::fs::read_to_string(BRIDGE_NF).unwrap();
        assert_eq!(
            value.trim(),
            "1",
            "the bridge plugin sets bridge-nf-call-iptables"
        );
    }

    // (A kernel without br_netfilter is that case already.)
    if !bridge_nf && Path::new(BRIDGE_NF).exists() {
        std::fs::write(BRIDGE_NF, "0").unwrap();
        std::fs::write("/proc/sys/net/bridge/bridge-nf-call-ip6tables", "0").unwrap();
    }
    let pm = portmap_conf(set, &r_server.json);
    let added = lab.cni(&set.portmap, "ADD", &pm, "srv", Some(&server_pod), "eth0");
    assert!(added.ok, "{}: portmap ADD: {}", set.name, added.stdout);
    // A chained plugin passes the previous result on.
    assert_eq!(added.json["ips"], r_server.json["ips"], "{}", set.name);

    let server_ns = lab.netns_path(&server_pod);
    let client_ns = lab.netns_path(&client_pod);
    let _server = Server::start(&server_ns, POD_PORT, "hello from the pod\n");
    let via_bridge = format!("{GATEWAY}:{HOST_PORT}");
    let via_localhost = format!("127.0.0.1:{HOST_PORT}");
    let expect = Ok("hello from the pod\n".to_string());
    let via_bridge6 = format!("[fd88::1]:{HOST_PORT}");
    for (what, ns, addr) in [
        ("host -> bridge address", None, &via_bridge),
        (
            "other pod -> host port over IPv6",
            Some(client_ns.as_path()),
            &via_bridge6,
        ),
        ("host -> localhost", None, &via_localhost),
        (
            "other pod -> host port",
            Some(client_ns.as_path()),
            &via_bridge,
        ),
        (
            "the pod itself -> host port (hairpin)",
            Some(server_ns.as_path()),
            &via_bridge,
        ),
    ] {
        assert_eq!(fetch(ns, addr), expect, "{}: {what}", set.name);
    }

    if set.name == "kiln" {
        // Debian's 1.1.1 portmap does not forward an IPv6 host port for
        // connections the host itself makes (they time out); Kiln's does.
        assert_eq!(
            fetch(None, &via_bridge6),
            expect,
            "host -> bridge IPv6 address"
        );
        let check = lab.cni(&set.portmap, "CHECK", &pm, "srv", Some(&server_pod), "eth0");
        assert!(check.ok, "CHECK after ADD: {}", check.stdout);
        // ADD again replaces the rules instead of doubling them.
        let again = lab.cni(&set.portmap, "ADD", &pm, "srv", Some(&server_pod), "eth0");
        assert!(again.ok, "second ADD: {}", again.stdout);
        let check = lab.cni(&set.portmap, "CHECK", &pm, "srv", Some(&server_pod), "eth0");
        assert!(check.ok, "CHECK after a second ADD: {}", check.stdout);
        assert_eq!(fetch(None, &via_bridge), expect, "after a second ADD");
    }

    let del = lab.cni(&set.portmap, "DEL", &pm, "srv", Some(&server_pod), "eth0");
    assert!(del.ok, "{}: portmap DEL: {}", set.name, del.stdout);
    for (what, ns, addr) in [
        ("host", None, &via_bridge),
        ("other pod", Some(client_ns.as_path()), &via_bridge),
        (
            "other pod over IPv6",
            Some(client_ns.as_path()),
            &via_bridge6,
        ),
    ] {
        let r = fetch(ns, addr);
        assert!(
            r.is_err(),
            "{}: {what} still forwarded after DEL: {r:?}",
            set.name
        );
    }
    // The pod itself is still there.
    let direct = format!("{}:{POD_PORT}", pod_ip(&r_server.json));
    assert_eq!(fetch(None, &direct), expect, "{}: pod after DEL", set.name);
    let again = lab.cni(&set.portmap, "DEL", &pm, "srv", Some(&server_pod), "eth0");
    assert!(again.ok, "{}: second DEL: {}", set.name, again.stdout);
    if set.name == "kiln" {
        let check = lab.cni(&set.portmap, "CHECK", &pm, "srv", Some(&server_pod), "eth0");
        assert!(!check.ok, "CHECK must fail once the rules are gone");
        assert_eq!(check.json["code"], 100, "{}", check.stdout);
    }
}

fn pod_ip(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().unwrap();
    a.split('/').next().unwrap().to_string()
}

/// GC keeps the rules of listed attachments and removes the rest; STATUS
/// answers while nf_tables does.
#[test]
fn kiln_portmap_gc_and_status() {
    let set = kiln();
    let mut lab = Lab::new("pmgc");
    let pod = lab.pod("p");
    let conf = lab.conf(&set, true);
    let r = lab.cni(&set.bridge, "ADD", &conf, "c1", Some(&pod), "eth0");
    assert!(r.ok, "bridge ADD: {}", r.stdout);
    let mut pm = portmap_conf(&set, &r.json);
    pm["cniVersion"] = json!("1.1.0");
    let added = lab.cni(&set.portmap, "ADD", &pm, "c1", Some(&pod), "eth0");
    assert!(added.ok, "portmap ADD: {}", added.stdout);
    let status = lab.cni(&set.portmap, "STATUS", &pm, "", None, "");
    assert!(status.ok, "STATUS: {}", status.stdout);

    let gc = |valid: Value| {
        let mut c = pm.clone();
        c.as_object_mut().unwrap().remove("prevResult");
        c["cni.dev/valid-attachments"] = valid;
        let out = lab.cni(&set.portmap, "GC", &c, "", None, "");
        assert!(out.ok, "GC: {}", out.stdout);
    };
    let check = || {
        lab.cni(&set.portmap, "CHECK", &pm, "c1", Some(&pod), "eth0")
            .ok
    };
    gc(json!([{"containerID": "c1", "ifname": "eth0"}]));
    assert!(check(), "GC removed a listed attachment's rules");
    gc(json!([{"containerID": "other", "ifname": "eth0"}]));
    assert!(!check(), "GC kept an unlisted attachment's rules");
}
