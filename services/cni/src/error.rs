//! Errors, each mapped to a CNI spec error code.
//!
//! The spec reserves codes 1–99 for its own meanings; codes from 100 up are
//! plugin-specific. Every error names what failed (the config field, the
//! interface, the file) so a runtime's log says what to fix.

use serde::Serialize;

/// Kiln's plugin-specific code for CHECK finding the attachment not as ADD left it.
pub const CODE_CHECK_FAILED: u32 = 100;
/// Kiln's plugin-specific code for a failed netlink request.
pub const CODE_NETLINK: u32 = 101;
/// Kiln's plugin-specific code for an IPAM range with no free address.
pub const CODE_NO_ADDRESS: u32 = 102;
/// Kiln's plugin-specific code for a delegated IPAM plugin's failure.
pub const CODE_DELEGATE: u32 = 103;
/// Kiln's plugin-specific code for a failed nftables request.
pub const CODE_NFTABLES: u32 = 104;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("incompatible CNI version {0}")]
    IncompatibleVersion(String),
    #[error("unsupported field {field}: {why}")]
    UnsupportedField { field: &'static str, why: String },
    #[error("container {0} unknown or its network namespace does not exist")]
    UnknownContainer(String),
    #[error("invalid environment variable {name}: {why}")]
    InvalidEnv { name: &'static str, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid network configuration: {field}: {why}")]
    InvalidConfig { field: String, why: String },
    #[error("check failed: {0}")]
    Check(String),
    #[error("netlink: {what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("no free address in range set {0}")]
    NoAddress(String),
    #[error("{0}")]
    AlreadyAllocated(String),
    #[error("IPAM plugin {plugin}: {msg}")]
    Delegate { plugin: String, msg: String },
    #[error("plugin not available: {0}")]
    NotAvailable(String),
    #[error(transparent)]
    Nftables(#[from] crate::nft::NftError),
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub fn config(field: impl Into<String>, why: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field: field.into(),
            why: why.into(),
        }
    }

    pub fn netlink(what: impl Into<String>, source: rtnetlink::Error) -> Self {
        Error::Netlink {
            what: what.into(),
            source,
        }
    }

    /// The spec's error code for this error.
    pub fn code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion(_) => 1,
            Error::UnsupportedField { .. } => 2,
            Error::UnknownContainer(_) => 3,
            Error::InvalidEnv { .. } => 4,
            Error::Io { .. } => 5,
            Error::Decode { .. } => 6,
            Error::InvalidConfig { .. } => 7,
            // The store already holds this attachment: a runtime retry after
            // a DEL can succeed, which is what "try again later" means.
            Error::AlreadyAllocated(_) => 11,
            Error::NotAvailable(_) => 50,
            Error::Check(_) => CODE_CHECK_FAILED,
            Error::Netlink { .. } => CODE_NETLINK,
            Error::NoAddress(_) => CODE_NO_ADDRESS,
            Error::Delegate { .. } => CODE_DELEGATE,
            Error::Nftables(_) => CODE_NFTABLES,
        }
    }

    /// The spec's error object, printed on stdout before a non-zero exit.
    pub fn to_spec(&self, cni_version: &str) -> SpecError {
        let details = match self {
            Error::Io { source, .. } => source.to_string(),
            Error::Decode { source, .. } => source.to_string(),
            Error::Netlink { source, .. } => source.to_string(),
            Error::Nftables(crate::nft::NftError::Kernel { source, .. }) => source.to_string(),
            _ => String::new(),
        };
        SpecError {
            cni_version: cni_version.to_string(),
            code: self.code(),
            msg: self.to_string(),
            details,
        }
    }
}

/// The spec's error JSON.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct SpecError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub details: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
