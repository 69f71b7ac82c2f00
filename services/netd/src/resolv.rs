//! resolv.conf: rendered from the settings and the leases, replaced atomically.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;

/// glibc and musl read at most three name servers (MAXNS).
const MAX_SERVERS: usize = 3;

/// The file's content; duplicates dropped, first occurrence kept.
pub fn render(servers: &[IpAddr], search: &[String]) -> String {
    let mut out = String::from("# written by kiln netd\n");
    let mut seen = Vec::new();
    for s in servers {
        if !seen.contains(s) && seen.len() < MAX_SERVERS {
            seen.push(*s);
            // Infallible: writing to a String.
            let _ = writeln!(out, "nameserver {s}");
        }
    }
    let mut domains: Vec<&str> = Vec::new();
    for d in search {
        if !domains.contains(&d.as_str()) {
            domains.push(d);
        }
    }
    if !domains.is_empty() {
        let _ = writeln!(out, "search {}", domains.join(" "));
    }
    out
}

/// Replaces `path` so readers see the old or the new file, never a part:
/// a temporary file in the same directory, fsync, rename, fsync of the
/// directory (so the rename survives a crash).
pub fn write_atomic(path: &Path, content: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_servers_and_search() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let text = render(
            &[
                ip("10.0.0.53"),
                ip("fd00::53"),
                ip("10.0.0.53"),
                ip("10.0.0.54"),
                ip("10.0.0.55"),
            ],
            &["a.example".into(), "b.example".into(), "a.example".into()],
        );
        assert_eq!(
            text,
            "# written by kiln netd\nnameserver 10.0.0.53\nnameserver fd00::53\nnameserver 10.0.0.54\nsearch a.example b.example\n"
        );
        assert_eq!(render(&[], &[]), "# written by kiln netd\n");
    }

    #[test]
    fn replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        write_atomic(&path, "one\n").unwrap();
        write_atomic(&path, "two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["resolv.conf"]);
    }
}
