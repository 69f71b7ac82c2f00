//! OCI image layouts written here, blob by blob, with real content:
//! Debian's busybox-static binary, multi-layer images with whiteouts, an
//! opaque directory, hard and symbolic links, gzip/zstd/plain layers, and
//! a two-platform index.

use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_cri::image::digest::Digest;
use serde_json::{json, Value};
use tar::{EntryType, Header};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A blob's descriptor.
#[derive(Clone, Debug)]
pub struct Desc {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

impl Desc {
    fn json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest.to_string(), "size": self.size})
    }
}

/// A layer: its blob and its diff ID.
pub struct Layer {
    pub desc: Desc,
    pub diff_id: Digest,
}

pub struct Layout {
    pub dir: PathBuf,
    refs: Vec<Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Self {
            dir: dir.to_path_buf(),
            refs: Vec::new(),
        }
    }

    pub fn blob(&self, media_type: &str, data: &[u8]) -> Desc {
        let digest = Digest::of(data);
        std::fs::write(self.dir.join("blobs/sha256").join(digest.hex()), data).unwrap();
        Desc {
            media_type: media_type.into(),
            digest,
            size: data.len() as u64,
        }
    }

    /// A layer from a tar, compressed as asked ("gzip", "zstd" or "").
    pub fn layer(&self, tar: &[u8], compression: &str) -> Layer {
        let (media_type, data) = match compression {
            "gzip" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).unwrap();
                (
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                    e.finish().unwrap(),
                )
            }
            "zstd" => (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                zstd::encode_all(tar, 3).unwrap(),
            ),
            _ => ("application/vnd.oci.image.layer.v1.tar", tar.to_vec()),
        };
        Layer {
            desc: self.blob(media_type, &data),
            diff_id: Digest::of(tar),
        }
    }

    /// An image manifest for `arch` with `layers` (bottom first).
    pub fn image(&self, arch: &str, layers: &[Layer], user: &str) -> Desc {
        self.image_with(arch, layers, json!({"User": user, "Cmd": ["/bin/sh"]}))
    }

    /// An image manifest whose config's `config` is `run`.
    pub fn image_with(&self, arch: &str, layers: &[Layer], run: Value) -> Desc {
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": run,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
        });
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            config.to_string().as_bytes(),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.json(),
            "layers": layers.iter().map(|l| l.desc.json()).collect::<Vec<_>>(),
        });
        self.blob(OCI_MANIFEST, manifest.to_string().as_bytes())
    }

    /// An index of `(manifest, arch)` entries.
    pub fn index(&self, entries: &[(Desc, &str)]) -> Desc {
        let manifests: Vec<Value> = entries
            .iter()
            .map(|(d, arch)| {
                let mut v = d.json();
                v["platform"] = json!({"os": "linux", "architecture": arch});
                v
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        self.blob(OCI_INDEX, index.to_string().as_bytes())
    }

    /// Names `desc` `tag` in index.json.
    pub fn tag(&mut self, tag: &str, desc: &Desc) {
        let mut v = desc.json();
        v["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.refs.push(v);
        let index = json!({"schemaVersion": 2, "manifests": self.refs});
        std::fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
    }
}

/// A tar built entry by entry.
pub struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    pub fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    pub fn add(
        &mut self,
        name: &str,
        kind: EntryType,
        mode: u32,
        data: &[u8],
        link: &str,
    ) -> &mut Self {
        let mut h = Header::new_gnu();
        h.set_path(name).unwrap();
        if !link.is_empty() {
            h.set_link_name(link).unwrap();
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.add(name, EntryType::Directory, 0o755, b"", "")
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.add(name, EntryType::Regular, 0o644, data, "")
    }

    pub fn finish(&mut self) -> Vec<u8> {
        self.0.finish().unwrap();
        self.0.get_ref().clone()
    }
}

/// The node's architecture as OCI names it.
pub fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

pub fn busybox() -> Vec<u8> {
    std::fs::read("/bin/busybox").expect("/bin/busybox (Debian package busybox-static)")
}

/// Digests of what `build` wrote, for the tests' checks.
pub struct Built {
    pub busybox: Desc,
    pub busybox_layers: Vec<Layer>,
    pub multi: Desc,
}

/// Writes the test images: `busybox` (gzip layer with busybox, its hard
/// link and symlink; zstd layer with a whiteout, an opaque directory and a
/// hard link to the lower layer's busybox; a plain layer) and `multi` (an
/// amd64 + arm64 index, each image with a file naming its platform);
/// `busybox-usr1` is `busybox` with `StopSignal` SIGUSR1.
pub fn build(dir: &Path) -> (Layout, Built) {
    let mut l = Layout::new(dir);
    let base = Tar::new()
        .dir("bin/")
        .add("bin/busybox", EntryType::Regular, 0o755, &busybox(), "")
        .add("bin/sh", EntryType::Link, 0o755, b"", "bin/busybox")
        .add("bin/ls", EntryType::Symlink, 0o777, b"", "busybox")
        .dir("etc/")
        .file("etc/motd", b"hello\n")
        .dir("opt/")
        .dir("opt/old/")
        .file("opt/old/a", b"a")
        .file("opt/keep", b"keep")
        .finish();
    let top = Tar::new()
        .file("etc/.wh.motd", b"")
        .dir("opt/old/")
        .file("opt/old/.wh..wh..opq", b"")
        .file("opt/old/b", b"b")
        .add("bin/cat", EntryType::Link, 0o755, b"", "bin/busybox")
        .finish();
    let last = Tar::new().file("etc/hostname", b"kiln\n").finish();
    let layers = vec![
        l.layer(&base, "gzip"),
        l.layer(&top, "zstd"),
        l.layer(&last, ""),
    ];
    let busybox = l.image(node_arch(), &layers, "1000");
    l.tag("busybox", &busybox);
    let usr1 = l.image_with(
        node_arch(),
        &layers,
        json!({"User": "1000", "Cmd": ["/bin/sh"], "StopSignal": "SIGUSR1"}),
    );
    l.tag("busybox-usr1", &usr1);

    let per_arch: Vec<(Desc, &str)> = ["amd64", "arm64"]
        .into_iter()
        .map(|arch| {
            let tar = Tar::new().file("arch", arch.as_bytes()).finish();
            let layer = l.layer(&tar, "gzip");
            (l.image(arch, &[layer], ""), arch)
        })
        .collect();
    let multi = l.index(&per_arch);
    l.tag("multi", &multi);
    (
        l,
        Built {
            busybox,
            busybox_layers: layers,
            multi,
        },
    )
}
