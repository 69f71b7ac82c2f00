//! Drives the real kilnctl binary: exit codes, output, file modes, and that
//! what `gen config` makes is valid and chains to its CA.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_config::MachineConfig;
use x509_parser::pem::parse_x509_pem;

fn kilnctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kilnctl"))
        .args(args)
        .output()
        .expect("kilnctl runs")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("exists").permissions().mode() & 0o777
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let help = kilnctl(&["--help"]);
    assert_eq!(code(&help), 0);
    let h = text(&help.stdout);
    assert!(
        h.contains("validate") && h.contains("gen") && h.contains("usage error"),
        "{h}"
    );
    let gen_help = kilnctl(&["gen", "config", "--help"]);
    assert_eq!(code(&gen_help), 0);
    assert!(text(&gen_help.stdout).contains("0600"));
    for args in [
        &[][..],
        &["frobnicate"],
        &["validate"],
        &["validate", "--bogus", "x.yaml"],
        &["gen", "config", "--endpoint", "https://k8s:6443"],
        &[
            "gen",
            "config",
            "--cluster",
            "Prod!",
            "--endpoint",
            "https://k8s:6443",
        ],
        &[
            "gen",
            "config",
            "--cluster",
            "prod",
            "--endpoint",
            "http://k8s:6443",
        ],
        &[
            "gen",
            "config",
            "--cluster",
            "prod",
            "--endpoint",
            "not a url",
        ],
        &[
            "gen",
            "config",
            "--cluster",
            "prod",
            "--endpoint",
            "https://k8s:6443",
            "--node",
            "a b",
        ],
    ] {
        let out = kilnctl(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out.stderr));
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
}

#[test]
fn validate_accepts_the_examples() {
    for name in ["dhcp-worker.yaml", "static-worker.yaml"] {
        let file = repo("configs/machine").join(name);
        let out = kilnctl(&["validate", file.to_str().expect("utf-8")]);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        assert!(text(&out.stdout).ends_with(": valid\n"));
    }
}

#[test]
fn validate_prints_every_error_with_its_path_and_exits_1() {
    let file = repo("api/config/tests/bad/addresses.yaml");
    let file = file.to_str().expect("utf-8");
    let out = kilnctl(&["validate", file]);
    assert_eq!(code(&out), 1);
    let expected = fs::read_to_string(repo("api/config/tests/bad/addresses.err")).expect(".err");
    let want: Vec<String> = expected.lines().map(|l| format!("{file}: {l}")).collect();
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().collect::<Vec<_>>(), want);
    let missing = kilnctl(&["validate", "/nonexistent/node.yaml"]);
    assert_eq!(code(&missing), 1);
    assert!(text(&missing.stderr).contains("/nonexistent/node.yaml"));
}

struct Generated {
    _dir: tempfile::TempDir,
    out: PathBuf,
    stdout: String,
    stderr: String,
}

fn generate(extra: &[&str]) -> Generated {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("prod");
    let mut args = vec![
        "gen",
        "config",
        "--cluster",
        "prod",
        "--endpoint",
        "https://k8s.example.com:6443",
        "--node",
        "10.0.0.21",
        "--node",
        "fd00::21",
        "--out",
        out.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let o = kilnctl(&args);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    Generated {
        stdout: text(&o.stdout),
        stderr: text(&o.stderr),
        _dir: dir,
        out,
    }
}

fn cert_der(pem: &str) -> Vec<u8> {
    parse_x509_pem(pem.as_bytes()).expect("PEM").1.contents
}

#[test]
fn gen_config_writes_private_valid_files() {
    let g = generate(&[]);
    assert_eq!(mode(&g.out), 0o700);
    for (name, want) in [
        ("node.yaml", 0o600),
        ("kilnconfig", 0o600),
        ("kubernetes-ca.key", 0o600),
        ("kubernetes-ca.crt", 0o644),
    ] {
        assert_eq!(mode(&g.out.join(name)), want, "{name}");
    }
    let mut names: Vec<_> = fs::read_dir(&g.out)
        .expect("ls")
        .map(|e| e.expect("e").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "kilnconfig",
            "kubernetes-ca.crt",
            "kubernetes-ca.key",
            "node.yaml"
        ],
        "no temp files"
    );

    let node_text = fs::read_to_string(g.out.join("node.yaml")).expect("node.yaml");
    let node = MachineConfig::from_yaml(&node_text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(node.cluster.endpoint, "https://k8s.example.com:6443");
    let kube_ca = fs::read_to_string(g.out.join("kubernetes-ca.crt")).expect("crt");
    assert_eq!(node.cluster.ca, kube_ca);
    let validated = kilnctl(&["validate", g.out.join("node.yaml").to_str().expect("utf-8")]);
    assert_eq!(code(&validated), 0, "{}", text(&validated.stderr));

    // Nothing secret is printed.
    for secret in [node.cluster.token.as_str(), "PRIVATE KEY", "BEGIN"] {
        assert!(
            !g.stdout.contains(secret) && !g.stderr.contains(secret),
            "{secret} printed"
        );
    }
    assert!(g.stdout.contains("node.yaml"));
}

#[test]
fn client_certificates_chain_to_the_machine_ca_with_their_roles() {
    let g = generate(&[]);
    let node =
        MachineConfig::from_yaml(&fs::read_to_string(g.out.join("node.yaml")).expect("node"))
            .expect("valid");
    let client: serde_norway::Value =
        serde_norway::from_str(&fs::read_to_string(g.out.join("kilnconfig")).expect("kilnconfig"))
            .expect("YAML");
    assert_eq!(client["context"].as_str(), Some("prod"));
    let ca_der = cert_der(&node.machine.ca.cert);
    let anchor = webpki::anchor_from_trusted_cert(&ca_der.as_slice().into())
        .expect("CA parses")
        .to_owned();
    for (context, role) in [("prod", "kiln:admin"), ("prod-reader", "kiln:reader")] {
        let ctx = &client["contexts"][context];
        assert_eq!(
            ctx["ca"].as_str(),
            Some(node.machine.ca.cert.as_str()),
            "{context} trusts the machine CA"
        );
        assert_eq!(ctx["nodes"][1].as_str(), Some("fd00::21"));
        assert_eq!(ctx["endpoints"][1].as_str(), Some("[fd00::21]:50000"));
        assert!(ctx["key"].as_str().expect("key").contains("PRIVATE KEY"));
        let der = cert_der(ctx["crt"].as_str().expect("crt"));
        let cert_der = rustls_pki_types::CertificateDer::from(der.as_slice());
        let ee = webpki::EndEntityCert::try_from(&cert_der).expect("end-entity cert");
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            std::slice::from_ref(&anchor),
            &[],
            rustls_pki_types::UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .unwrap_or_else(|e| panic!("{context}: {e:?}"));
        let (_, x509) = x509_parser::parse_x509_certificate(&der).expect("x509");
        let orgs: Vec<&str> = x509
            .subject()
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .collect();
        assert_eq!(orgs, [role], "{context}");
    }
    // A certificate from another run's CA does not chain to this one.
    let other = generate(&[]);
    let other_client: serde_norway::Value = serde_norway::from_str(
        &fs::read_to_string(other.out.join("kilnconfig")).expect("kilnconfig"),
    )
    .expect("YAML");
    let der = cert_der(
        other_client["contexts"]["prod"]["crt"]
            .as_str()
            .expect("crt"),
    );
    let cert_der = rustls_pki_types::CertificateDer::from(der.as_slice());
    let ee = webpki::EndEntityCert::try_from(&cert_der).expect("cert");
    let verdict = ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        std::slice::from_ref(&anchor),
        &[],
        rustls_pki_types::UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    );
    assert!(verdict.is_err());
}

#[test]
fn gen_config_refuses_to_overwrite_without_force() {
    let g = generate(&[]);
    let before = fs::read(g.out.join("node.yaml")).expect("node");
    let out = g.out.to_str().expect("utf-8");
    let base = [
        "gen",
        "config",
        "--cluster",
        "prod",
        "--endpoint",
        "https://k8s.example.com:6443",
        "--out",
        out,
    ];
    let again = kilnctl(&base);
    assert_eq!(code(&again), 1);
    assert!(
        text(&again.stderr).contains("already exist"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        fs::read(g.out.join("node.yaml")).expect("node"),
        before,
        "untouched"
    );
    let forced = kilnctl(&[&base[..], &["--force"]].concat());
    assert_eq!(code(&forced), 0, "{}", text(&forced.stderr));
    assert_ne!(
        fs::read(g.out.join("node.yaml")).expect("node"),
        before,
        "replaced"
    );
    assert_eq!(mode(&g.out.join("node.yaml")), 0o600);
}

#[test]
fn gen_config_uses_an_existing_kubernetes_ca() {
    let ca = repo("api/config/tests/fixtures/cluster-ca.crt");
    let g = generate(&["--kubernetes-ca", ca.to_str().expect("utf-8")]);
    let node =
        MachineConfig::from_yaml(&fs::read_to_string(g.out.join("node.yaml")).expect("node"))
            .expect("valid");
    assert_eq!(node.cluster.ca, fs::read_to_string(&ca).expect("ca"));
    assert!(!g.out.join("kubernetes-ca.key").exists());

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.pem");
    fs::write(&bad, "not a certificate\n").expect("write");
    let out = dir.path().join("out");
    let o = kilnctl(&[
        "gen",
        "config",
        "--cluster",
        "prod",
        "--endpoint",
        "https://k8s:6443",
        "--kubernetes-ca",
        bad.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(code(&o), 1);
    assert!(
        text(&o.stderr).contains("cluster.ca: not PEM certificates"),
        "{}",
        text(&o.stderr)
    );
    assert!(!out.exists(), "nothing written");
}

/// Writes `kilnctl completion SHELL` to a file in `dir`.
fn completion_script(shell: &str, dir: &Path) -> PathBuf {
    let out = kilnctl(&["completion", shell]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let path = dir.join(format!("kilnctl.{shell}"));
    fs::write(&path, &out.stdout).expect("write");
    path
}

/// What a shell offers for `kilnctl WORDS… CUR`, sorted.
fn offered(shell: &str, script: &Path, line: &str) -> Vec<String> {
    let script = script.to_str().expect("utf-8");
    let out = match shell {
        // The real glue: COMP_WORDS as bash splits the line, then COMPREPLY.
        "bash" => {
            let prog = format!(
                "source {script}; COMP_WORDS=({line}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); \
                 [[ \"{line}\" == *' ' ]] && COMP_WORDS+=('') && COMP_CWORD=$((COMP_CWORD + 1)); \
                 _kilnctl; printf '%s\\n' \"${{COMPREPLY[@]}}\""
            );
            Command::new("bash").args(["--norc", "-c", &prog]).output()
        }
        // fish's own completion engine on the line.
        "fish" => Command::new("fish")
            .args([
                "--no-config",
                "-c",
                &format!("source {script}; complete -C '{line}'"),
            ])
            .output(),
        // zsh's completion widgets need a terminal: the script's walker,
        // which the widget calls with the same words, run directly.
        _ => {
            let words: Vec<&str> = line.split(' ').skip(1).collect();
            let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
            let prog = format!(
                "compdef() {{ :; }}; source {script}; _kilnctl_candidates {}; print \"status $?\"",
                quoted.join(" ")
            );
            Command::new("zsh").args(["-f", "-c", &prog]).output()
        }
    }
    .unwrap_or_else(|e| panic!("{shell} runs (installed by cargo xtask setup): {e}"));
    assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
    let mut words: Vec<String> = text(&out.stdout)
        .lines()
        // fish prints "candidate<TAB>description".
        .map(|l| l.split('\t').next().unwrap_or_default().to_string())
        .filter(|l| !l.is_empty() && l != "status 0")
        .collect();
    words.sort();
    words
}

#[test]
fn completion_scripts_follow_the_command_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(code(&kilnctl(&["completion", "tcsh"])), 2);
    for shell in ["bash", "zsh", "fish"] {
        let script = completion_script(shell, dir.path());
        let zsh = shell == "zsh";
        let check = |line: &str, want: &[&str]| {
            let mut got = offered(shell, &script, line);
            // zsh's walker prints every candidate; zsh's compadd filters by
            // the prefix, as bash's compgen and fish do.
            if zsh {
                let cur = line.rsplit(' ').next().unwrap_or_default();
                got.retain(|w| w.starts_with(cur));
            }
            assert_eq!(got, want, "{shell}: {line:?}");
        };
        check("kilnctl ser", &["service", "services"]);
        check("kilnctl service ", &["restart", "start", "stop"]);
        check("kilnctl service st", &["start", "stop"]);
        // An option's value is skipped: "services" is not taken for a
        // subcommand after -n.
        check("kilnctl -n services ev", &["events"]);
        check("kilnctl events -", &["--follow", "--help", "-f"]);
        check("kilnctl -o ", &["json", "text"]);
        check("kilnctl completion ", &["bash", "fish", "zsh"]);
        check("kilnctl gen config --cl", &["--cluster"]);
        check("kilnctl --ins", &["--insecure"]);
        check("kilnctl re", &["reboot", "reset"]);
        check("kilnctl reset --w", &["--wipe-state"]);
        check(
            "kilnctl apply --mode ",
            &["auto", "no-reboot", "staged", "try"],
        );
        check("kilnctl apply --t", &["--timeout"]);
    }
    // Every subcommand kilnctl has is offered at the top.
    let script = completion_script("bash", dir.path());
    let top = offered("bash", &script, "kilnctl ");
    let help = text(&kilnctl(&["--help"]).stdout);
    for name in &top {
        assert!(help.contains(&format!("  {name} ")), "{name} not in --help");
    }
    assert_eq!(top.len(), 16, "{top:?}");
}
