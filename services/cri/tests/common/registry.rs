//! Debian's `docker-registry` (CNCF distribution), started on
//! 127.0.0.1:<free port> with its storage in a temporary directory, and
//! optionally htpasswd (bcrypt) authentication.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Registry {
    pub addr: String,
    pub dir: tempfile::TempDir,
    child: Child,
    pub creds: Option<(String, String)>,
}

impl Registry {
    pub async fn start(creds: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, pass)) = creds {
            let htpasswd = dir.path().join("htpasswd");
            let ok = Command::new("htpasswd")
                .args(["-Bbc"])
                .arg(&htpasswd)
                .args([user, pass])
                .stderr(Stdio::null())
                .status()
                .expect("htpasswd (apache2-utils)");
            assert!(ok.success());
            config += &format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (Debian package docker-registry)");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Self {
                    addr,
                    dir,
                    child,
                    creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("registry did not listen on {addr}");
    }

    /// Pushes `oci:<layout>:<tag>` to `<addr>/<dest>` (every platform).
    pub fn push(&self, layout: &Path, tag: &str, dest: &str) {
        let mut cmd = Command::new("skopeo");
        // --preserve-digests: the registry serves exactly the blobs built here
        // (no recompression of the zstd layer, no re-encoded manifest).
        cmd.args([
            "copy",
            "--all",
            "--preserve-digests",
            "--quiet",
            "--dest-tls-verify=false",
        ]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{dest}", self.addr))
            .output()
            .expect("skopeo");
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The manifest digest a tag points at, from the registry's storage.
    pub fn tag_digest(&self, repo: &str, tag: &str) -> String {
        let link = self
            .dir
            .path()
            .join("data/docker/registry/v2/repositories")
            .join(repo)
            .join("_manifests/tags")
            .join(tag)
            .join("current/link");
        std::fs::read_to_string(link).unwrap().trim().to_string()
    }

    /// Where the registry keeps a blob's bytes.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
