//! `kiln.config=<URL>` on the kernel command line: a node with no stored
//! config fetches its config from there at boot (PXE fleets), retrying with
//! backoff until the network and the server answer. A document that fails
//! validation is logged with the field named and not retried: the node
//! stays in maintenance mode for an operator. A good one is stored like an
//! ApplyConfiguration and the node leaves maintenance mode.
//!
//! `https://` servers are checked against the Mozilla root CAs compiled into
//! the binary (webpki-roots): the node has no CA files of its own. Until
//! timed has set the clock, certificates look not yet valid; the retries
//! cover that. `http://` is accepted too, best with a pin,
//! `kiln.config.sha256=<hex>`, which the fetched bytes must match.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use kiln_api_proto::v1::{event, ApplyMode, ConfigApplied, Event};
use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::config::NodeConfig;
use crate::events::Journal;
use crate::server::now_unix_ms;
use crate::try_apply::Tries;

/// A machine config is a few KiB; anything this big is not one.
const MAX_BYTES: usize = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One whole request, connect to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// A bad `kiln.config=` or `kiln.config.sha256=`: the parameter, the value
/// and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{param}: {value:?}: {problem}")]
pub struct SourceError {
    pub param: &'static str,
    pub value: String,
    pub problem: String,
}

/// Why one fetch gave no document; all but [`FetchError::Rejected`] are
/// retried.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connecting: no answer in {0:?}")]
    ConnectTimeout(Duration),
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error("TLS with {host}: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
    #[error("{0}: {1}")]
    Http(&'static str, hyper::Error),
    #[error("building the request: {0}")]
    Request(hyper::http::Error),
    #[error("the server answered {0}")]
    Status(hyper::StatusCode),
    #[error("reading the body (at most {MAX_BYTES} bytes): {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    #[error("no complete answer in {0:?}")]
    Timeout(Duration),
}

/// A fetched document that must not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("sha256 {got} does not match kiln.config.sha256={want}")]
    Pin { got: String, want: String },
    #[error("invalid machine config: {0}")]
    Invalid(String),
}

/// Where to fetch the config from, as the command line says.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub url: ConfigUrl,
    /// The SHA-256 the document must have, if pinned.
    pub sha256: Option<[u8; 32]>,
    /// The CAs an https server must chain to.
    pub trust: Trust,
}

/// The root CAs an https config server is checked against.
#[derive(Clone)]
pub struct Trust(Arc<rustls::ClientConfig>);

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Trust")
    }
}

impl Trust {
    /// The Mozilla root CAs compiled in (webpki-roots).
    pub fn public() -> Trust {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Trust::with_roots(roots)
    }

    /// Only `roots`: for a fleet's private CA (and the tests).
    pub fn with_roots(roots: rustls::RootCertStore) -> Trust {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports rustls's default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Trust(Arc::new(config))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// An `http(s)://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// `host[:port]` as written, for the Host header.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

impl std::fmt::Display for ConfigUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}{}", self.authority, self.path)
    }
}

impl ConfigSource {
    /// `kiln.config=` and `kiln.config.sha256=` from a kernel command line;
    /// `None` without `kiln.config=`.
    pub fn from_cmdline(cmdline: &str) -> Result<Option<ConfigSource>, SourceError> {
        let value = |key: &str| {
            cmdline
                .split_whitespace()
                .filter_map(|w| w.strip_prefix(key))
                .next_back()
        };
        let Some(url) = value("kiln.config=") else {
            return Ok(None);
        };
        let url = ConfigUrl::parse(url).map_err(|problem| SourceError {
            param: "kiln.config",
            value: url.into(),
            problem,
        })?;
        let sha256 = value("kiln.config.sha256=")
            .map(|hex| {
                parse_sha256(hex).ok_or_else(|| SourceError {
                    param: "kiln.config.sha256",
                    value: hex.into(),
                    problem: "is not 64 hex digits".into(),
                })
            })
            .transpose()?;
        Ok(Some(ConfigSource {
            url,
            sha256,
            trust: Trust::public(),
        }))
    }
}

impl ConfigUrl {
    /// Parses `url`; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<ConfigUrl, String> {
        let (scheme, rest, default_port) = if let Some(rest) = url.strip_prefix("https://") {
            (Scheme::Https, rest, 443)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest, 80)
        } else {
            return Err("expected an http:// or https:// URL".into());
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        if authority.contains('@') {
            return Err("user names in the URL are not supported".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("unclosed '[' in the host")?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("junk after the IPv6 address")?),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("port {p:?} is not a port number"))?,
        };
        Ok(ConfigUrl {
            scheme,
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            path,
        })
    }
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One GET of `url`: the body of a 200 answer, at most [`MAX_BYTES`].
pub async fn fetch(url: &ConfigUrl, trust: &Trust) -> Result<Vec<u8>, FetchError> {
    tokio::time::timeout(REQUEST_TIMEOUT, fetch_inner(url, trust))
        .await
        .map_err(|_| FetchError::Timeout(REQUEST_TIMEOUT))?
}

async fn fetch_inner(url: &ConfigUrl, trust: &Trust) -> Result<Vec<u8>, FetchError> {
    let connect = tokio::net::TcpStream::connect((url.host.as_str(), url.port));
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| FetchError::ConnectTimeout(CONNECT_TIMEOUT))?
        .map_err(FetchError::Connect)?;
    match url.scheme {
        Scheme::Http => get(tcp, url).await,
        Scheme::Https => {
            let tls = |source| FetchError::Tls {
                host: url.host.clone(),
                source,
            };
            let name = ServerName::try_from(url.host.clone())
                .map_err(|e| tls(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
            let stream = tokio_rustls::TlsConnector::from(trust.0.clone())
                .connect(name, tcp)
                .await
                .map_err(tls)?;
            get(stream, url).await
        }
    }
}

async fn get<S>(stream: S, url: &ConfigUrl) -> Result<Vec<u8>, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| FetchError::Http("HTTP handshake", e))?;
    // Drives the connection; ends with it.
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(url.path.as_str())
        .header(hyper::header::HOST, url.authority.as_str())
        .header(hyper::header::USER_AGENT, "kiln-apid")
        .body(Empty::<Bytes>::new())
        .map_err(FetchError::Request)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| FetchError::Http("request", e))?;
    let status = response.status();
    if status != hyper::StatusCode::OK {
        driver.abort();
        return Err(FetchError::Status(status));
    }
    let body = Limited::new(response.into_body(), MAX_BYTES)
        .collect()
        .await
        .map_err(FetchError::Body)?
        .to_bytes();
    driver.abort();
    Ok(body.to_vec())
}

/// Checks a fetched document: the pin, then the machine config's own
/// validation (the error names the field).
pub fn check(source: &ConfigSource, data: &[u8]) -> Result<(), CheckError> {
    if let Some(want) = source.sha256 {
        let got: [u8; 32] = Sha256::digest(data).into();
        if got != want {
            return Err(CheckError::Pin {
                got: hex(&got),
                want: hex(&want),
            });
        }
    }
    NodeConfig::parse(data)
        .map(|_| ())
        .map_err(|e| CheckError::Invalid(e.to_string()))
}

/// Fetches until a document arrives, then stores it if it is valid and the
/// node still has no config.
pub async fn fetch_and_store(
    source: ConfigSource,
    tries: Arc<Tries>,
    journal: Arc<Journal>,
    restart: Arc<Notify>,
) {
    let url = &source.url;
    let mut wait = FIRST_RETRY;
    let mut attempt = 1u32;
    let data = loop {
        match fetch(url, &source.trust).await {
            Ok(data) => break data,
            Err(e) => {
                warn!(attempt, "kiln.config={url}: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
                attempt += 1;
            }
        }
    };
    if let Err(e) = check(&source, &data) {
        error!("kiln.config={url}: {e}; the node stays in maintenance mode");
        return;
    }
    let _writing = tries.lock().await;
    match tries.store().load() {
        Ok(None) => {}
        Ok(Some(_)) => {
            info!("kiln.config={url}: a config was applied meanwhile; the fetched one is not used");
            return;
        }
        Err(e) => {
            error!("kiln.config={url}: {e}");
            return;
        }
    }
    if let Err(e) = tries.store().save(&data) {
        error!("kiln.config={url}: cannot store the config: {e}");
        return;
    }
    let message = format!("config fetched from {url}; the node leaves maintenance mode");
    info!("{message}");
    journal.record(Event {
        event: Some(event::Event::ConfigApplied(ConfigApplied {
            mode: ApplyMode::Auto as i32,
            changes: vec![],
            reboot: false,
            message,
            at_unix_ms: now_unix_ms(),
        })),
    });
    restart.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = ConfigUrl::parse("http://10.0.2.2:8080/nodes/a.yaml?x=1").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.path.as_str()),
            (Scheme::Http, "10.0.2.2", 8080, "/nodes/a.yaml?x=1")
        );
        assert_eq!(u.to_string(), "http://10.0.2.2:8080/nodes/a.yaml?x=1");
        let u = ConfigUrl::parse("http://[fd00::1]/c").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str()),
            ("fd00::1", 80, "[fd00::1]")
        );
        let u = ConfigUrl::parse("https://cfg.example/a").unwrap();
        assert_eq!((u.scheme, u.port), (Scheme::Https, 443));
        assert_eq!(u.to_string(), "https://cfg.example/a");
        assert_eq!(ConfigUrl::parse("http://cfg.example").unwrap().path, "/");
        for (bad, problem) in [
            ("ftp://cfg.example/a", "expected an http:// or https:// URL"),
            ("http:///a", "no host"),
            ("http://h:99999/", "port \"99999\" is not a port number"),
            ("http://u:p@h/", "user names"),
            ("http://[::1/", "unclosed"),
        ] {
            let err = ConfigUrl::parse(bad).unwrap_err();
            assert!(err.contains(problem), "{bad}: {err}");
        }
    }

    #[test]
    fn command_lines() {
        assert!(ConfigSource::from_cmdline("console=ttyS0 quiet\n")
            .unwrap()
            .is_none());
        let pin = "ab".repeat(32);
        let s = ConfigSource::from_cmdline(&format!(
            "console=ttyS0 kiln.config=https://h/c kiln.config.sha256={pin}\n"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(s.url.to_string(), "https://h/c");
        assert_eq!(s.sha256, Some([0xab; 32]));
        let err = ConfigSource::from_cmdline("kiln.config=http://h/c kiln.config.sha256=abc")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kiln.config.sha256: \"abc\": is not 64 hex digits"
        );
        let err = ConfigSource::from_cmdline("kiln.config=ftp://h/c").unwrap_err();
        assert_eq!(
            err.to_string(),
            "kiln.config: \"ftp://h/c\": expected an http:// or https:// URL"
        );
    }
}
