//! Property tests: every valid config survives serialise → parse → equal,
//! and no input string makes the parser panic.

use std::collections::BTreeMap;

use kiln_config::{
    Bond, BondMode, Cluster, Dns, Install, Interface, Kernel, KubeProxy, Kubelet, Machine,
    MachineCa, MachineConfig, Mirror, Network, Registries, RegistryAuth, RegistryConfig, Route,
    Taint, TaintEffect, Time, Vlan, API_VERSION, KIND,
};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;

const CLUSTER_CA: &str = include_str!("fixtures/cluster-ca.crt");
const MACHINE_CA: &str = include_str!("fixtures/machine-ca.crt");
const MACHINE_KEY: &str = include_str!("fixtures/machine-ca.key");

/// DNS labels without `--` (the url crate reads `xx--…` labels as punycode).
fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9]|-[a-z0-9]){0,6}"
}

fn dns_name() -> impl Strategy<Value = String> {
    vec(label(), 1..4).prop_map(|l| l.join("."))
}

fn ipv4() -> impl Strategy<Value = [u8; 4]> {
    (1u8..224, any::<u8>(), any::<u8>(), 1u8..255).prop_map(|(a, b, c, d)| [a, b, c, d])
}

fn route() -> impl Strategy<Value = Route> {
    (
        ipv4(),
        0u8..=32,
        proptest::option::of(ipv4()),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(|(net, prefix, via, metric)| {
            let net = ipnet_trunc(net, prefix);
            Route {
                to: format!("{}.{}.{}.{}/{prefix}", net[0], net[1], net[2], net[3]),
                via: via.map(|v| format!("{}.{}.{}.{}", v[0], v[1], v[2], v[3])),
                metric,
            }
        })
}

fn ipnet_trunc(addr: [u8; 4], prefix: u8) -> [u8; 4] {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    (u32::from_be_bytes(addr) & mask).to_be_bytes()
}

/// Links with unique names, unique VLAN ids and, across the node, unique addresses.
fn network() -> impl Strategy<Value = Network> {
    let link = (
        any::<bool>(),
        vec(route(), 0..3),
        proptest::option::of(1280u32..9001),
        btree_set(1u16..4095, 0..3),
    );
    (
        vec(link, 0..4),
        vec(
            any::<[u8; 4]>().prop_map(|a| format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])),
            0..3,
        ),
        vec(dns_name(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(links, servers, search_domains, bonded)| {
            let mut interfaces: Vec<Interface> = links
                .into_iter()
                .enumerate()
                .map(|(i, (dhcp, routes, mtu, ids))| Interface {
                    name: Some(format!("eth{i}")),
                    dhcp,
                    addresses: vec![format!("10.{i}.0.1/16")],
                    routes,
                    mtu: mtu.map(|m| m.max(1500)),
                    vlans: ids
                        .into_iter()
                        .map(|id| Vlan {
                            id,
                            addresses: vec![format!("fd00:{id:x}::{i}/64")],
                            mtu: Some(1280),
                            ..Vlan::default()
                        })
                        .collect(),
                    ..Interface::default()
                })
                .collect();
            if bonded {
                interfaces.push(Interface {
                    mac: Some("52:54:00:00:00:01".into()),
                    ..Interface::default()
                });
                interfaces.push(Interface {
                    name: Some("bond0".into()),
                    bond: Some(Bond {
                        mode: BondMode::ActiveBackup,
                        members: vec!["52:54:00:00:00:01".into()],
                    }),
                    dhcp: true,
                    ..Interface::default()
                });
            }
            Network {
                interfaces,
                dns: Dns {
                    servers,
                    search_domains,
                },
            }
        })
}

fn kubelet() -> impl Strategy<Value = Kubelet> {
    let key = || {
        (
            proptest::option::of(dns_name()),
            "[A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?",
        )
            .prop_map(|(prefix, name)| prefix.map_or(name.clone(), |p| format!("{p}/{name}")))
    };
    let value = "([A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?)?";
    let effect = prop_oneof![
        Just(TaintEffect::NoSchedule),
        Just(TaintEffect::PreferNoSchedule),
        Just(TaintEffect::NoExecute)
    ];
    (
        btree_map(key(), value, 0..4),
        btree_map((key(), effect), value, 0..3),
        btree_map("[a-z][a-z0-9-]{0,15}", ".{0,20}", 0..3),
        proptest::option::of(ipv4()),
    )
        .prop_map(|(labels, taints, extra_args, ip)| Kubelet {
            image: Some("registry.k8s.io/kubelet:v1.31.2".into()),
            node_ip: ip.map(|a| format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])),
            labels,
            taints: taints
                .into_iter()
                .map(|((key, effect), value)| Taint { key, value, effect })
                .collect(),
            // Flags Kiln sets itself are refused; keep them out.
            extra_args: extra_args
                .into_iter()
                .filter(|(k, _)| !k.starts_with("node-") && !k.starts_with("register-"))
                .collect(),
        })
}

fn registries() -> impl Strategy<Value = Registries> {
    let host = || {
        (dns_name(), proptest::option::of(1u16..)).prop_map(|(h, port)| match port {
            Some(p) => format!("{h}:{p}"),
            None => h,
        })
    };
    let mirror = vec(
        (prop_oneof![Just("http"), Just("https")], dns_name())
            .prop_map(|(s, h)| format!("{s}://{h}.example/v2")),
        1..3,
    )
    .prop_map(|endpoints| Mirror { endpoints });
    let config = (
        proptest::option::of(("[a-z]{1,8}", "\\PC{1,30}")),
        any::<bool>(),
    )
        .prop_map(|(auth, ca)| RegistryConfig {
            auth: auth.map(|(username, password)| RegistryAuth { username, password }),
            ca: ca.then(|| CLUSTER_CA.to_string()),
        });
    (
        btree_map(host(), mirror, 0..3),
        btree_map(host(), config, 0..3),
    )
        .prop_map(|(mirrors, config)| Registries { mirrors, config })
}

fn config() -> impl Strategy<Value = MachineConfig> {
    (
        proptest::option::of(dns_name().prop_filter("64 max", |h| h.len() <= 64)),
        network(),
        vec(dns_name(), 0..3),
        kubelet(),
        btree_map(
            "(net|vm|kernel)\\.[a-z_]{1,10}\\.[a-z0-9_]{1,10}",
            "[ -~]{1,10}",
            0..4,
        ),
        btree_set("[a-z][a-z0-9]{0,10}", 0..3),
        proptest::option::of("/dev/[a-z]{1,5}"),
        "[a-z0-9]{6}\\.[a-z0-9]{16}",
        vec(dns_name(), 0..3),
        (registries(), any::<bool>()),
    )
        .prop_map(
            |(
                hostname,
                network,
                time,
                kubelet,
                sysctls,
                modules,
                disk,
                token,
                sans,
                (registries, no_proxy),
            )| {
                MachineConfig {
                    api_version: API_VERSION.into(),
                    kind: KIND.into(),
                    hostname,
                    network,
                    time: Time { servers: time },
                    kubelet,
                    kube_proxy: KubeProxy {
                        disabled: no_proxy,
                        ..KubeProxy::default()
                    },
                    registries,
                    install: disk.map(|disk| Install { disk }),
                    sysctls: sysctls
                        .into_iter()
                        .filter(|(_, v)| !v.trim().is_empty())
                        .collect::<BTreeMap<_, _>>(),
                    kernel: Kernel {
                        modules: modules.into_iter().collect(),
                    },
                    cluster: Cluster {
                        endpoint: "https://k8s.example.internal:6443".into(),
                        ca: CLUSTER_CA.into(),
                        token,
                    },
                    machine: Machine {
                        ca: MachineCa {
                            cert: MACHINE_CA.into(),
                            key: MACHINE_KEY.into(),
                        },
                        cert_sans: sans,
                    },
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_configs_round_trip(config in config()) {
        if let Err(e) = kiln_config::validate(&config) {
            panic!("generator made an invalid config:\n{e}");
        }
        let yaml = config.to_yaml().expect("serialises");
        let parsed = MachineConfig::from_yaml(&yaml).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        prop_assert_eq!(&parsed, &config);
        prop_assert!(kiln_config::diff(&config, &parsed).expect("diff").changes.is_empty());
    }

    #[test]
    fn any_text_is_an_answer_not_a_panic(text in "\\PC{0,200}") {
        let _ = MachineConfig::from_yaml(&text);
    }

    #[test]
    fn mutated_documents_never_panic(config in config(), cut in any::<prop::sample::Index>(), junk in "[ -~\\n]{0,8}") {
        let yaml = config.to_yaml().expect("serialises");
        let at = cut.index(yaml.len() + 1);
        if yaml.is_char_boundary(at) {
            let _ = MachineConfig::from_yaml(&format!("{}{junk}{}", &yaml[..at], &yaml[at..]));
        }
    }
}
