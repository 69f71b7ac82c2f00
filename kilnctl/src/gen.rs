//! `kilnctl gen config`: a cluster's machine CA, client certificates, node
//! config and client config.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use kiln_config::{Cluster, Machine, MachineCa, MachineConfig};
use kiln_pki::{Ca, Role, Validity, CLIENT_VALIDITY};

use crate::cli::GenConfigCommand;
use crate::fsio::{self, OutFile};
use crate::kilnconfig::{self, ClientConfig};
use crate::UsageError;

use kiln_api_proto::PORT as API_PORT;

pub fn run(cmd: &GenConfigCommand) -> Result<()> {
    check_args(cmd)?;
    let (kubernetes_ca, generated_kubernetes_ca) = match &cmd.kubernetes_ca {
        Some(path) => (fsio::read_text(path)?, None),
        None => {
            let ca = Ca::generate("kubernetes")?;
            (ca.pem.cert_pem.clone(), Some(ca.pem))
        }
    };
    let machine_ca = Ca::generate(&format!("kiln machine CA ({})", cmd.cluster))?;
    let node = MachineConfig::new(
        Cluster {
            endpoint: cmd.endpoint.clone(),
            ca: kubernetes_ca,
            token: bootstrap_token()?,
        },
        Machine {
            ca: MachineCa {
                cert: machine_ca.pem.cert_pem.clone(),
                key: machine_ca.pem.key_pem.clone(),
            },
            cert_sans: Vec::new(),
        },
    );
    // The node would refuse it; so do we (e.g. a --kubernetes-ca that is not PEM).
    kiln_config::validate(&node).context("the generated node config is invalid")?;

    let endpoints: Vec<String> = cmd
        .node
        .iter()
        .map(|n| {
            if n.parse::<std::net::Ipv6Addr>().is_ok() {
                format!("[{n}]:{API_PORT}")
            } else {
                format!("{n}:{API_PORT}")
            }
        })
        .collect();
    let mut contexts = BTreeMap::new();
    for (name, role) in [
        (cmd.cluster.clone(), Role::Admin),
        (format!("{}-reader", cmd.cluster), Role::Reader),
    ] {
        let client =
            machine_ca.client_cert(&cmd.cluster, role, Validity::from_now(CLIENT_VALIDITY))?;
        let context = kilnconfig::Context {
            endpoints: endpoints.clone(),
            nodes: cmd.node.clone(),
            ca: machine_ca.pem.cert_pem.clone(),
            crt: client.cert_pem,
            key: client.key_pem,
        };
        contexts.insert(name, context);
    }
    let client = ClientConfig {
        context: cmd.cluster.clone(),
        contexts,
    };

    let mut files = vec![
        OutFile {
            name: "node.yaml",
            contents: node.to_yaml()?,
            mode: 0o600,
        },
        OutFile {
            name: "kilnconfig",
            contents: serde_norway::to_string(&client)?,
            mode: 0o600,
        },
    ];
    if let Some(ca) = generated_kubernetes_ca {
        files.push(OutFile {
            name: "kubernetes-ca.crt",
            contents: ca.cert_pem,
            mode: 0o644,
        });
        files.push(OutFile {
            name: "kubernetes-ca.key",
            contents: ca.key_pem,
            mode: 0o600,
        });
    }
    let written = fsio::write_all(&cmd.out, &files, cmd.force)?;
    for path in written {
        println!("wrote {}", path.display());
    }
    println!(
        "contexts in kilnconfig: {0} (admin), {0}-reader (reader)",
        cmd.cluster
    );
    println!(
        "next: register node.yaml's cluster.token on the cluster (kubeadm token create <token>), \
         then apply node.yaml to each node"
    );
    Ok(())
}

fn check_args(cmd: &GenConfigCommand) -> Result<()> {
    let c = &cmd.cluster;
    let label_ok = !c.is_empty()
        && c.len() <= 63
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !c.starts_with('-')
        && !c.ends_with('-');
    if !label_ok {
        return Err(UsageError(format!(
            "--cluster `{c}`: expected a DNS label (1-63 of a-z, 0-9, -)"
        ))
        .into());
    }
    let bad_endpoint = |why: &str| UsageError(format!("--endpoint `{}`: {why}", cmd.endpoint));
    let url = url::Url::parse(&cmd.endpoint).map_err(|e| bad_endpoint(&e.to_string()))?;
    if url.scheme() != "https" || url.host_str().is_none_or(str::is_empty) {
        return Err(bad_endpoint("expected https://host[:port]").into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad_endpoint("credentials do not belong in the URL").into());
    }
    for n in &cmd.node {
        let ok = n.parse::<std::net::IpAddr>().is_ok()
            || (!n.is_empty()
                && n.len() <= 253
                && n.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                }));
        if !ok {
            return Err(UsageError(format!(
                "--node `{n}`: expected an IP address or a host name"
            ))
            .into());
        }
    }
    Ok(())
}

/// A kubeadm bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`, from the OS RNG.
fn bootstrap_token() -> Result<String> {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(23);
    while out.len() < 23 {
        let mut buf = [0u8; 32];
        getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("reading the OS RNG: {e}"))?;
        // Bytes at or above 252 (= 7 * 36) are dropped so every character is equally likely.
        for b in buf.iter().filter(|&&b| b < 252) {
            if out.len() == 6 {
                out.push('.');
            }
            if out.len() < 23 {
                out.push(char::from(ALPHABET[usize::from(*b) % 36]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_have_the_bootstrap_shape_and_differ() {
        let a = super::bootstrap_token().expect("rng");
        let b = super::bootstrap_token().expect("rng");
        assert_ne!(a, b);
        let (id, secret) = a.split_once('.').expect("dot");
        assert_eq!((id.len(), secret.len()), (6, 16));
        assert!(format!("{id}{secret}")
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }
}
