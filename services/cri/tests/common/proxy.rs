//! A TCP proxy in front of the registry that records each HTTP request
//! (path and Range header) and can cut the first response for one path
//! after a number of bytes, as a dropped connection would.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
}

pub struct Proxy {
    pub addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Cut the first `times` responses whose request path ends with `suffix`
/// after `after` bytes.
#[derive(Clone)]
pub struct Cut {
    pub suffix: String,
    pub after: usize,
    pub times: usize,
}

impl Proxy {
    pub async fn start(upstream: &str, cut: Option<Cut>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (up, seen2, done) = (
            upstream.to_string(),
            seen.clone(),
            Arc::new(AtomicUsize::new(0)),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&up).await else {
                    continue;
                };
                tokio::spawn(relay(
                    client,
                    server,
                    seen2.clone(),
                    cut.clone(),
                    done.clone(),
                ));
            }
        });
        Self { addr, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// GET requests for a blob.
    pub fn blob_gets(&self, digest: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "GET" && s.path.ends_with(&format!("/blobs/{digest}")))
            .collect()
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    seen: Arc<Mutex<Vec<Seen>>>,
    cut: Option<Cut>,
    done: Arc<AtomicUsize>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let current = Arc::new(Mutex::new(String::new()));
    let cur = current.clone();
    // Requests: GETs and HEADs carry no body, so heads follow each other.
    let up = tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                buf.drain(..end + 4);
                let mut lines = head.lines();
                let mut first = lines.next().unwrap_or_default().split(' ');
                let method = first.next().unwrap_or_default().to_string();
                let path = first.next().unwrap_or_default().to_string();
                let range = lines
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("range"))
                    .map(|(_, v)| v.trim().to_string());
                *cur.lock().unwrap() = path.clone();
                seen.lock().unwrap().push(Seen {
                    method,
                    path,
                    range,
                });
            }
            if sw.write_all(&chunk[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut chunk = vec![0u8; 16 * 1024];
    let mut sent = 0usize;
    loop {
        let n = match sr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(c) = &cut {
            let path = current.lock().unwrap().clone();
            if path.ends_with(&c.suffix) && done.load(Ordering::SeqCst) < c.times {
                let room = c.after.saturating_sub(sent).min(n);
                let _ = cw.write_all(&chunk[..room]).await;
                sent += room;
                if sent >= c.after {
                    done.fetch_add(1, Ordering::SeqCst);
                    // Dropping both halves closes the connection mid-body.
                    up.abort();
                    return;
                }
                continue;
            }
        }
        if cw.write_all(&chunk[..n]).await.is_err() {
            break;
        }
    }
    up.abort();
}
