//! Talking to an OCI distribution registry, through `oci-client`: it does
//! the protocol (URLs, `Accept` headers, the anonymous/basic/bearer token
//! flow from `WWW-Authenticate`, http for insecure hosts, rustls otherwise).
//! What the store must trust — digests, sizes, media types — is checked by
//! the caller, not here.
//!
//! CRI passes credentials with each pull, and oci-client remembers the
//! first credentials it saw per registry, so each pull gets its own client.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use oci_client::client::{ClientConfig, ClientProtocol, LayerDescriptor};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::digest::Digest;

/// Credentials for one pull (from the CRI request's AuthConfig).
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// A registry token sent as is.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Anonymous => f.write_str("Anonymous"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry refused {what} of {reference}: unauthorized (credentials missing or wrong)")]
    Unauthorized {
        what: &'static str,
        reference: String,
    },
    #[error("registry has no {what} for {reference}")]
    NotFound {
        what: &'static str,
        reference: String,
    },
    #[error("registry error fetching {what} of {reference}: {message}")]
    Other {
        what: &'static str,
        reference: String,
        message: String,
    },
}

/// A blob response body: from the offset asked for, or from the start when
/// the registry ignored the range.
pub struct BlobBody {
    pub from_offset: bool,
    pub stream: BoxStream<'static, std::io::Result<Bytes>>,
}

pub struct Registry {
    client: Client,
    auth: RegistryAuth,
}

impl Registry {
    /// A client for one pull; `insecure` hosts (`host:port`) use plain http.
    pub fn new(auth: Auth, insecure: &[String]) -> Self {
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure.to_vec()),
            // Platforms are picked by the caller from the raw index.
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(30)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            user_agent: concat!("kiln-cri/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let auth = match auth {
            Auth::Anonymous => RegistryAuth::Anonymous,
            Auth::Basic { username, password } => RegistryAuth::Basic(username, password),
            Auth::Bearer(t) => RegistryAuth::Bearer(t),
        };
        Self {
            client: Client::new(config),
            auth,
        }
    }

    /// A manifest or index, raw (its digest is checked by the caller).
    pub async fn manifest(&self, r: &Reference, accept: &[&str]) -> Result<Bytes, RegistryError> {
        self.client
            .pull_manifest_raw(r, &self.auth, accept)
            .await
            .map(|(body, _)| body)
            .map_err(|e| map_err("manifest", r, e))
    }

    /// A blob from byte `offset` on.
    pub async fn blob(
        &self,
        r: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobBody, RegistryError> {
        // Blob requests carry the token the manifest request obtained.
        self.client
            .store_auth_if_needed(r.resolve_registry(), &self.auth)
            .await;
        let d = digest.to_string();
        let layer = LayerDescriptor {
            digest: &d,
            urls: &None,
        };
        // Always a range request: a 206 body is left to our verification
        // (oci-client verifies only whole 200 bodies, and would report a
        // mismatch as a bare I/O error).
        match self
            .client
            .pull_blob_stream_partial(r, &layer, offset, None)
            .await
        {
            Ok(oci_client::client::BlobResponse::Partial(s)) => Ok(BlobBody {
                from_offset: true,
                stream: s.stream,
            }),
            Ok(oci_client::client::BlobResponse::Full(s)) => Ok(BlobBody {
                from_offset: offset == 0,
                stream: s.stream,
            }),
            Err(e) => Err(map_err("blob", &r.clone_with_digest(d.clone()), e)),
        }
    }
}

fn map_err(what: &'static str, r: &Reference, e: OciDistributionError) -> RegistryError {
    let reference = r.whole();
    match &e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            RegistryError::Unauthorized { what, reference }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => {
            RegistryError::NotFound { what, reference }
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            RegistryError::NotFound { what, reference }
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes = || envelope.errors.iter().map(|e| &e.code);
            if codes().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                RegistryError::Unauthorized { what, reference }
            } else if codes().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                RegistryError::NotFound { what, reference }
            } else {
                RegistryError::Other {
                    what,
                    reference,
                    message: e.to_string(),
                }
            }
        }
        _ => RegistryError::Other {
            what,
            reference,
            message: e.to_string(),
        },
    }
}
