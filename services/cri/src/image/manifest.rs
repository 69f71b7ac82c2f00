//! Manifests, indexes and image configs as registries serve them, in OCI
//! and Docker v2 schema 2 media types, validated field by field, and the
//! pick of the node's platform from an index.

use serde::Deserialize;

use super::digest::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// What PullImage asks a registry for, in order of preference.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

const CONFIGS: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
const LAYERS: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

/// What a manifest or config fails on; each names the field.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{what}: not valid JSON for its type: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{what}: field {field}: {problem}")]
    Field {
        what: &'static str,
        field: String,
        problem: String,
    },
    #[error("manifest index has no entry for {platform} (it lists: {listed})")]
    NoPlatform { platform: String, listed: String },
}

/// A content descriptor.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing)]
    pub platform: Option<Platform>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A fetched manifest document: an index to pick from, or an image.
#[derive(Debug)]
pub enum Document {
    Index(Vec<Descriptor>),
    Image(ImageManifest),
}

/// An image manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    manifests: Vec<Descriptor>,
}

fn field(
    what: &'static str,
    field: impl Into<String>,
    problem: impl Into<String>,
) -> ManifestError {
    ManifestError::Field {
        what,
        field: field.into(),
        problem: problem.into(),
    }
}

fn json<T: for<'de> Deserialize<'de>>(what: &'static str, data: &[u8]) -> Result<T, ManifestError> {
    serde_json::from_slice(data).map_err(|source| ManifestError::Json { what, source })
}

/// Parses a manifest or index and checks its media types and schema.
pub fn parse(data: &[u8]) -> Result<Document, ManifestError> {
    let probe: Probe = json("manifest", data)?;
    let is_index = match probe.media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(other) => {
            return Err(field(
                "manifest",
                "mediaType",
                format!("unsupported {other:?}"),
            ));
        }
        // OCI allows leaving mediaType out; the shape tells.
        None => probe.manifests.is_some(),
    };
    if is_index {
        let index: Index = json("manifest index", data)?;
        if index.schema_version != 2 {
            return Err(field("manifest index", "schemaVersion", "must be 2"));
        }
        return Ok(Document::Index(index.manifests));
    }
    let m: ImageManifest = json("image manifest", data)?;
    if m.schema_version != 2 {
        return Err(field(
            "image manifest",
            "schemaVersion",
            "must be 2 (schema 1 is not supported)",
        ));
    }
    if !CONFIGS.contains(&m.config.media_type.as_str()) {
        return Err(field(
            "image manifest",
            "config.mediaType",
            format!("unsupported {:?}", m.config.media_type),
        ));
    }
    for (i, layer) in m.layers.iter().enumerate() {
        if !LAYERS.contains(&layer.media_type.as_str()) {
            return Err(field(
                "image manifest",
                format!("layers[{i}].mediaType"),
                format!("unsupported {:?}", layer.media_type),
            ));
        }
    }
    Ok(Document::Image(m))
}

/// The node's platform as OCI names it.
pub fn node_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    Platform {
        os: "linux".into(),
        architecture: architecture.into(),
        variant: None,
    }
}

/// Picks the entry for `want` from an index. An arm64 entry's variant may
/// be absent or `v8`; other variants must match exactly.
pub fn pick(entries: &[Descriptor], want: &Platform) -> Result<Descriptor, ManifestError> {
    let fits = |p: &Platform| {
        p.os == want.os
            && p.architecture == want.architecture
            && (p.variant == want.variant
                || (want.architecture == "arm64" && p.variant.as_deref().is_none_or(|v| v == "v8")))
    };
    entries
        .iter()
        .find(|e| e.platform.as_ref().is_some_and(fits))
        .cloned()
        .ok_or_else(|| ManifestError::NoPlatform {
            platform: format!("{}/{}", want.os, want.architecture),
            listed: entries
                .iter()
                .filter_map(|e| e.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The parts of an image config the runtime uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

/// The image's default process settings.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct RunConfig {
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "StopSignal", default)]
    pub stop_signal: Option<String>,
}

/// The layers' uncompressed digests.
#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// Parses an image config and checks it against its manifest.
pub fn parse_config(data: &[u8], layers: usize) -> Result<ImageConfig, ManifestError> {
    let c: ImageConfig = json("image config", data)?;
    if c.rootfs.kind != "layers" {
        return Err(field("image config", "rootfs.type", "must be \"layers\""));
    }
    if c.rootfs.diff_ids.len() != layers {
        return Err(field(
            "image config",
            "rootfs.diff_ids",
            format!(
                "has {} entries for {layers} layers",
                c.rootfs.diff_ids.len()
            ),
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(arch.as_bytes()),
            size: 1,
            platform: Some(Platform {
                os: "linux".into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
            }),
        }
    }

    #[test]
    fn picks_the_platform() {
        let entries = [
            entry("arm", Some("v7")),
            entry("arm64", Some("v8")),
            entry("amd64", None),
        ];
        let arm64 = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: None,
        };
        assert_eq!(pick(&entries, &arm64).unwrap().digest, Digest::of(b"arm64"));
        let amd64 = Platform {
            architecture: "amd64".into(),
            ..arm64.clone()
        };
        assert_eq!(pick(&entries, &amd64).unwrap().digest, Digest::of(b"amd64"));
        let riscv = Platform {
            architecture: "riscv64".into(),
            ..arm64
        };
        let err = pick(&entries, &riscv).unwrap_err().to_string();
        assert!(
            err.contains("linux/riscv64") && err.contains("linux/arm64"),
            "{err}"
        );
    }

    #[test]
    fn refuses_unknown_media_types_by_field() {
        let d = Digest::of(b"c");
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{d}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"{d}","size":1}}]}}"#
        );
        let err = parse(doc.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("layers[0].mediaType"), "{err}");
        let bad_digest = r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"md5:1","size":1},"layers":[]}"#;
        assert!(parse(bad_digest.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("sha256"));
    }
}
