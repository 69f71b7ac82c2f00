//! Certificates for a cluster (rcgen, ECDSA P-256 keys from aws-lc-rs).
//!
//! The machine CA signs the nodes' API certificates (done by apid) and the
//! clients' certificates (here). A client's role is its certificate's
//! Organization, `kiln:<role>`: apid authorises on it.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// CAs outlive the machines they serve.
const CA_VALIDITY: Duration = Duration::days(3650);
/// Client certificates are reissued yearly.
const CLIENT_VALIDITY: Duration = Duration::days(365);
/// Tolerates clocks slightly behind the one that issued the certificate.
const BACKDATE: Duration = Duration::minutes(5);

/// A client's role, written in its certificate's Organization.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Everything.
    Admin,
    /// Read-only calls.
    Reader,
}

impl Role {
    /// The role's name: `admin`, `reader`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reader => "reader",
        }
    }
}

/// A certificate and its private key, PEM.
pub struct KeyedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA able to sign.
pub struct Ca {
    pub pem: KeyedCert,
    issuer: Issuer<'static, KeyPair>,
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
}

/// A new self-signed CA that may sign leaf certificates only.
pub fn new_ca(common_name: &str) -> Result<Ca> {
    let key = KeyPair::generate().context("generating a CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_VALIDITY);
    let cert = params.self_signed(&key).context("self-signing the CA")?;
    let pem = KeyedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    Ok(Ca {
        pem,
        issuer: Issuer::new(params, key),
    })
}

/// A client certificate for `role`, signed by `ca`.
pub fn client_cert(ca: &Ca, cluster: &str, role: Role) -> Result<KeyedCert> {
    let key = KeyPair::generate().context("generating a client key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{}@{cluster}", role.name()));
    params
        .distinguished_name
        .push(DnType::OrganizationName, format!("kiln:{}", role.name()));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, CLIENT_VALIDITY);
    let cert = params
        .signed_by(&key, &ca.issuer)
        .context("signing the client certificate")?;
    Ok(KeyedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
