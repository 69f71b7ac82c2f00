//! A client for a node's machine API, shared by kilnctl and the tests.
//!
//! Two ways to trust a node:
//! - [`Trust::Mutual`]: the node's certificate must chain to the machine CA,
//!   and we present our client certificate (its Organization is our role).
//! - [`Trust::Maintenance`]: a node with no config has only a self-signed
//!   key. We accept it if its SHA-256 fingerprint is the one the node printed
//!   on its console, or — with no fingerprint given — any key (`--insecure`:
//!   the caller was told the risk). No client certificate is sent.
//!
//! Also [`init_client`]: apid's side of PID 1's control channel.

mod pin;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use kiln_api_proto::init::v1::init_client::InitClient;
use kiln_api_proto::v1::machine_client::MachineClient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Channel, Endpoint, Uri};

pub use pin::normalize_fingerprint;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{what}: no PEM {kind} in it")]
    NoPem { what: String, kind: &'static str },
    #[error("{what}: {message}")]
    Pem { what: String, message: String },
    #[error("TLS client set-up: {0}")]
    Tls(rustls::Error),
    #[error("fingerprint: {0}")]
    Fingerprint(String),
    #[error("endpoint {0:?}: expected host:port or host (port 50000)")]
    Endpoint(String),
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
}

/// How the client trusts the node (and proves who it is).
pub enum Trust {
    Maintenance {
        /// The SHA-256 fingerprint to pin; `None` accepts any key.
        fingerprint: Option<String>,
    },
    Mutual {
        /// PEM: the machine CA, the client certificate, its key.
        ca_pem: String,
        cert_pem: String,
        key_pem: String,
    },
}

/// Connects to `endpoint` (`host`, `host:port`, `[v6]:port`), giving up
/// after `timeout`.
pub async fn connect(
    endpoint: &str,
    trust: Trust,
    timeout: Duration,
) -> Result<MachineClient<Channel>, ClientError> {
    let (host, addr) = resolve(endpoint)?;
    let config = Arc::new(client_config(trust)?);
    let server_name = ServerName::try_from(host.clone())
        .map_err(|_| ClientError::Endpoint(endpoint.to_string()))?;
    // The URI only names the HTTP/2 authority: the connector below dials
    // `addr` and does TLS itself (tonic's own TLS cannot pin a fingerprint).
    let uri: Uri = format!("http://{}", addr)
        .parse()
        .map_err(|_| ClientError::Endpoint(endpoint.to_string()))?;
    let connector = tower::service_fn(move |_: Uri| {
        let config = config.clone();
        let server_name = server_name.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let channel = Endpoint::from(uri)
        .connect_timeout(timeout)
        .connect_with_connector(connector)
        .await
        .map_err(|source| ClientError::Connect {
            endpoint: endpoint.to_string(),
            source,
        })?;
    Ok(MachineClient::new(channel))
}

/// A client of PID 1's control channel on the unix socket `path` (apid's
/// side). Connects on first use and again after the connection drops, so
/// apid can start before PID 1 serves and outlive a broken connection.
pub fn init_client(path: &std::path::Path) -> InitClient<Channel> {
    let path = Arc::new(path.to_path_buf());
    let connector = tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path.as_path()).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    // The URI is a placeholder: the connector dials the socket.
    let channel = Endpoint::from_static("http://init.sock")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(connector);
    InitClient::new(channel)
}

/// Splits `endpoint` into the TLS server name and a socket address.
fn resolve(endpoint: &str) -> Result<(String, SocketAddr), ClientError> {
    let bad = || ClientError::Endpoint(endpoint.to_string());
    let port = kiln_api_proto::PORT;
    if let Ok(addr) = endpoint.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr));
    }
    if let Ok(ip) = endpoint.parse::<std::net::IpAddr>() {
        return Ok((ip.to_string(), SocketAddr::new(ip, port)));
    }
    let (host, port) = match endpoint.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
        None => (endpoint, port),
    };
    if host.is_empty() {
        return Err(bad());
    }
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)?;
    Ok((host.to_string(), addr))
}

fn client_config(trust: Trust) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(ClientError::Tls)?;
    let mut config = match trust {
        Trust::Maintenance { fingerprint } => {
            let expected = fingerprint
                .map(|f| normalize_fingerprint(&f).map_err(ClientError::Fingerprint))
                .transpose()?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(pin::Pinned::new(expected, provider)))
                .with_no_client_auth()
        }
        Trust::Mutual {
            ca_pem,
            cert_pem,
            key_pem,
        } => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certs(&ca_pem, "machine CA")? {
                roots.add(ca).map_err(ClientError::Tls)?;
            }
            builder
                .with_root_certificates(roots)
                .with_client_auth_cert(certs(&cert_pem, "client certificate")?, key(&key_pem)?)
                .map_err(ClientError::Tls)?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Pem {
            what: what.to_string(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ClientError::NoPem {
            what: what.to_string(),
            kind: "certificate",
        });
    }
    Ok(certs)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, ClientError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => ClientError::NoPem {
            what: "client key".into(),
            kind: "private key",
        },
        other => ClientError::Pem {
            what: "client key".into(),
            message: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let (host, addr) = resolve("127.0.0.1").unwrap();
        assert_eq!((host.as_str(), addr.port()), ("127.0.0.1", 50000));
        let (_, addr) = resolve("127.0.0.1:6000").unwrap();
        assert_eq!(addr.port(), 6000);
        let (host, addr) = resolve("[::1]:7000").unwrap();
        assert_eq!((host.as_str(), addr.port()), ("::1", 7000));
        let (host, addr) = resolve("localhost:8000").unwrap();
        assert_eq!((host.as_str(), addr.port()), ("localhost", 8000));
        for bad in ["", ":5", "host:notaport", "host:70000"] {
            assert!(resolve(bad).is_err(), "{bad:?}");
        }
    }
}
