//! Image references as kubelet sends them (`busybox`, `reg:5000/app:1`,
//! `app@sha256:…`), normalised the way Docker and containerd do
//! (`docker.io/library/busybox:latest`), plus the names records keep.

use std::fmt;

use oci_client::Reference;

use super::digest::Digest;

/// A parsed, normalised image reference.
#[derive(Clone, Debug)]
pub struct ImageRef {
    oci: Reference,
    digest: Option<Digest>,
}

/// Why a reference cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    #[error("image reference {reference:?}: {problem}")]
    Invalid { reference: String, problem: String },
}

impl ImageRef {
    /// Parses and normalises a reference.
    pub fn parse(s: &str) -> Result<Self, RefError> {
        let invalid = |problem: String| RefError::Invalid {
            reference: s.to_string(),
            problem,
        };
        if s.is_empty() {
            return Err(invalid("empty".into()));
        }
        let oci: Reference = s.parse().map_err(|e| invalid(format!("{e}")))?;
        let digest = oci
            .digest()
            .map(|d| d.parse::<Digest>())
            .transpose()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self { oci, digest })
    }

    /// `registry/repository`, e.g. `docker.io/library/busybox`.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.oci.registry(), self.oci.repository())
    }

    /// The registry host (and port) the reference names.
    pub fn registry(&self) -> &str {
        self.oci.registry()
    }

    /// `repo:tag` when the reference has a tag.
    pub fn tag_name(&self) -> Option<String> {
        self.oci.tag().map(|t| format!("{}:{t}", self.repo()))
    }

    /// The digest the reference pins, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `repo@digest`: the repo digest a record keeps for a pulled manifest.
    pub fn digest_name(&self, digest: &Digest) -> String {
        format!("{}@{digest}", self.repo())
    }

    /// The same repository at another digest (a manifest from an index).
    pub fn at_digest(&self, digest: &Digest) -> Reference {
        Reference::with_digest(
            self.oci.registry().to_string(),
            self.oci.repository().to_string(),
            digest.to_string(),
        )
    }

    /// The reference as the registry client takes it.
    pub fn oci(&self) -> &Reference {
        &self.oci
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.oci)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.repo(), "docker.io/library/busybox");
        assert_eq!(
            r.tag_name().as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        let r = ImageRef::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.tag_name().as_deref(), Some("127.0.0.1:5000/a/b:v1"));
        let d = Digest::of(b"x");
        let r = ImageRef::parse(&format!("reg:1/app@{d}")).unwrap();
        assert_eq!(r.digest(), Some(&d));
        assert_eq!(r.tag_name(), None);
        assert_eq!(r.digest_name(&d), format!("reg:1/app@{d}"));
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "",
            "repo/Upper",
            "has space",
            "a@sha512:00",
            "a:b:c:d",
            "a@sha256:1234",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
