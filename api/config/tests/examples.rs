//! The example configs in `configs/machine/` validate; redaction, diff and
//! apply classes on real documents.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_config::{diff, Apply, ChangeKind, MachineConfig, REDACTED};

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/machine");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("configs/machine exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn load(name: &str) -> MachineConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/machine")
        .join(name);
    let text = fs::read_to_string(&path).expect("example exists");
    MachineConfig::from_yaml(&text).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()))
}

#[test]
fn examples_validate_and_round_trip() {
    let files = examples();
    assert!(files.len() >= 2);
    for path in files {
        let text = fs::read_to_string(&path).expect("readable");
        let config =
            MachineConfig::from_yaml(&text).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
        let again = MachineConfig::from_yaml(&config.to_yaml().expect("yaml")).expect("re-parses");
        assert_eq!(config, again, "{}", path.display());
    }
}

#[test]
fn static_example_has_what_it_says() {
    let c = load("static-worker.yaml");
    let bond = &c.network.interfaces[2];
    assert_eq!(bond.name.as_deref(), Some("bond0"));
    assert_eq!(
        bond.vlans.iter().map(|v| v.id).collect::<Vec<_>>(),
        [100, 200]
    );
    assert_eq!(
        bond.bond.as_ref().map(|b| b.mode),
        Some(kiln_config::BondMode::Lacp)
    );
}

#[test]
fn redaction_hides_every_secret_and_nothing_else() {
    let c = load("static-worker.yaml");
    let r = c.redacted();
    let yaml = r.to_yaml().expect("yaml");
    for secret in [&c.cluster.token, &c.machine.ca.key, "example-password"] {
        assert!(!yaml.contains(secret.trim()), "{secret} leaked");
    }
    assert_eq!(r.cluster.token, REDACTED);
    assert_eq!(r.machine.ca.key, REDACTED);
    let auth = r.registries.config["mirror.example.internal"]
        .auth
        .as_ref()
        .expect("auth");
    assert_eq!(
        (auth.username.as_str(), auth.password.as_str()),
        ("kiln", REDACTED)
    );
    let paths: Vec<String> = diff(&c, &r)
        .expect("diff")
        .changes
        .iter()
        .map(|c| c.path.to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "cluster.token",
            "machine.ca.key",
            r#"registries.config["mirror.example.internal"].auth.password"#
        ]
    );
}

#[test]
fn diff_lists_paths_with_apply_classes() {
    let old = load("static-worker.yaml");
    let mut new = old.clone();
    assert!(diff(&old, &new).expect("diff").changes.is_empty());
    new.hostname = Some("worker-9".into());
    new.network.dns.servers.pop();
    new.kubelet.labels.insert("team".into(), "a".into());
    new.sysctls.insert("vm.nr_hugepages".into(), "1024".into());
    new.sysctls
        .insert("net.core.somaxconn".into(), "4096".into());
    new.kernel.modules.push("nvme_tcp".into());
    new.install = None;
    let d = diff(&old, &new).expect("diff");
    let lines: Vec<String> = d.changes.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "~ hostname (live)",
            "- install.disk (reboot)",
            "+ kernel.modules[2] (reboot)",
            "+ kubelet.labels.team (live)",
            "- network.dns.servers[1] (live)",
            r#"+ sysctls["net.core.somaxconn"] (live)"#,
            r#"~ sysctls["vm.nr_hugepages"] (reboot)"#,
        ]
    );
    assert!(d.needs_reboot());
    let live_only = {
        let mut n = old.clone();
        n.time.servers.clear();
        diff(&old, &n).expect("diff")
    };
    assert!(!live_only.needs_reboot());
    assert!(live_only
        .changes
        .iter()
        .all(|c| c.kind == ChangeKind::Removed && c.apply == Apply::Live));
}

#[test]
fn strings_that_look_like_other_yaml_types_stay_strings() {
    let mut c = load("dhcp-worker.yaml");
    let tricky = [
        "true",
        "null",
        "no",
        "on",
        "0x10",
        "1e3",
        "0o17",
        "2026-01-01",
        "~",
        ".inf",
        "'q'",
        "a: b",
        "#x",
    ];
    for (i, v) in tricky.iter().enumerate() {
        c.sysctls.insert(format!("net.core.x{i}"), (*v).to_string());
        if kiln_config::validate(&{
            let mut probe = c.clone();
            probe.kubelet.labels.insert("k".into(), (*v).to_string());
            probe
        })
        .is_ok()
        {
            c.kubelet.labels.insert(format!("k{i}"), (*v).to_string());
        }
    }
    assert!(c.kubelet.labels.len() >= 8, "most are label values too");
    let again =
        MachineConfig::from_yaml(&c.to_yaml().expect("yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, c);
}
