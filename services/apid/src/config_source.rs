//! `kiln.config=<URL>` on the kernel command line: a node with no stored
//! config fetches its config from there at boot (PXE fleets), retrying with
//! backoff until the network and the server answer. A document that fails
//! validation is logged with the field named and not retried: the node
//! stays in maintenance mode for an operator. A good one is stored like an
//! ApplyConfiguration and the node leaves maintenance mode.
//!
//! Only `http://` is supported: the node carries no CA roots to check an
//! https server with. Integrity comes from an optional pin,
//! `kiln.config.sha256=<hex>`, which the fetched bytes must match.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use kiln_api_proto::v1::{event, ApplyMode, ConfigApplied, Event};
use sha2::{Digest, Sha256};
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

/// Where to fetch the config from, as the command line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSource {
    pub url: HttpUrl,
    /// The SHA-256 the document must have, if pinned.
    pub sha256: Option<[u8; 32]>,
}

/// An `http://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// `host[:port]` as written, for the Host header.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

impl ConfigSource {
    /// `kiln.config=` and `kiln.config.sha256=` from a kernel command line;
    /// `None` without `kiln.config=`. Errors name the parameter.
    pub fn from_cmdline(cmdline: &str) -> Result<Option<ConfigSource>, String> {
        let value = |key: &str| {
            cmdline
                .split_whitespace()
                .filter_map(|w| w.strip_prefix(key))
                .next_back()
        };
        let Some(url) = value("kiln.config=") else {
            return Ok(None);
        };
        let url = HttpUrl::parse(url).map_err(|e| format!("kiln.config: {e}"))?;
        let sha256 = value("kiln.config.sha256=")
            .map(|hex| parse_sha256(hex).map_err(|e| format!("kiln.config.sha256: {e}")))
            .transpose()?;
        Ok(Some(ConfigSource { url, sha256 }))
    }
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        if url.starts_with("https://") {
            return Err(format!(
                "{url:?}: https is not supported (the node has no CA roots to check the server with); serve it over http:// and pin it with kiln.config.sha256="
            ));
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: expected an http:// URL"))?;
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
            return Err(format!("{url:?}: user names in the URL are not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed '[' in the host"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("{url:?}: junk after the IPv6 address"))?,
                ),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{url:?}: port {p:?} is not a port number"))?,
        };
        Ok(HttpUrl {
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            path,
        })
    }
}

fn parse_sha256(hex: &str) -> Result<[u8; 32], String> {
    let bad = || format!("{hex:?} is not 64 hex digits");
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One GET of `url`: the body of a 200 answer, at most [`MAX_BYTES`].
pub async fn fetch(url: &HttpUrl) -> Result<Vec<u8>, String> {
    tokio::time::timeout(REQUEST_TIMEOUT, fetch_inner(url))
        .await
        .map_err(|_| format!("no complete answer in {REQUEST_TIMEOUT:?}"))?
}

async fn fetch_inner(url: &HttpUrl) -> Result<Vec<u8>, String> {
    let connect = tokio::net::TcpStream::connect((url.host.as_str(), url.port));
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| format!("connecting: no answer in {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("connecting: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    // Drives the connection; ends with it.
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(url.path.as_str())
        .header(hyper::header::HOST, url.authority.as_str())
        .header(hyper::header::USER_AGENT, "kiln-apid")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    if status != hyper::StatusCode::OK {
        driver.abort();
        return Err(format!("the server answered {status}"));
    }
    let body = Limited::new(response.into_body(), MAX_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the body (at most {MAX_BYTES} bytes): {e}"))?
        .to_bytes();
    driver.abort();
    Ok(body.to_vec())
}

/// Checks a fetched document: the pin, then the machine config's own
/// validation (the error names the field).
pub fn check(source: &ConfigSource, data: &[u8]) -> Result<(), String> {
    if let Some(want) = source.sha256 {
        let got: [u8; 32] = Sha256::digest(data).into();
        if got != want {
            return Err(format!(
                "sha256 {} does not match kiln.config.sha256={}",
                hex(&got),
                hex(&want)
            ));
        }
    }
    NodeConfig::parse(data)
        .map(|_| ())
        .map_err(|e| format!("invalid machine config: {e}"))
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
        match fetch(url).await {
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
        let u = HttpUrl::parse("http://10.0.2.2:8080/nodes/a.yaml?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("10.0.2.2", 8080, "/nodes/a.yaml?x=1")
        );
        assert_eq!(u.to_string(), "http://10.0.2.2:8080/nodes/a.yaml?x=1");
        let u = HttpUrl::parse("http://[fd00::1]/c").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str()),
            ("fd00::1", 80, "[fd00::1]")
        );
        assert_eq!(HttpUrl::parse("http://cfg.example").unwrap().path, "/");
        for (bad, problem) in [
            ("https://cfg.example/a", "https is not supported"),
            ("ftp://cfg.example/a", "expected an http:// URL"),
            ("http:///a", "no host"),
            ("http://h:99999/", "port \"99999\" is not a port number"),
            ("http://u:p@h/", "user names"),
            ("http://[::1/", "unclosed"),
        ] {
            let err = HttpUrl::parse(bad).unwrap_err();
            assert!(err.contains(problem), "{bad}: {err}");
        }
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            ConfigSource::from_cmdline("console=ttyS0 quiet\n").unwrap(),
            None
        );
        let pin = "ab".repeat(32);
        let s = ConfigSource::from_cmdline(&format!(
            "console=ttyS0 kiln.config=http://h/c kiln.config.sha256={pin}\n"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(s.url.to_string(), "http://h/c");
        assert_eq!(s.sha256, Some([0xab; 32]));
        let err = ConfigSource::from_cmdline("kiln.config=http://h/c kiln.config.sha256=abc")
            .unwrap_err();
        assert_eq!(err, "kiln.config.sha256: \"abc\" is not 64 hex digits");
        let err = ConfigSource::from_cmdline("kiln.config=https://h/c").unwrap_err();
        assert!(err.starts_with("kiln.config: "), "{err}");
    }
}
