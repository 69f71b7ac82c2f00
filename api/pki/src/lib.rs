//! Kiln's machine PKI, shared by kilnctl (which makes it), apid (which
//! authorises with it) and the tests.
//!
//! The machine CA signs the nodes' API certificates (apid does, at start)
//! and the clients' certificates. A client's role is its certificate's
//! Organization, `kiln:<role>`, as Kubernetes carries groups.

mod role;

pub use role::{Role, RoleError};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// CAs outlive the machines they serve.
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// Client certificates are reissued yearly.
pub const CLIENT_VALIDITY: Duration = Duration::days(365);
/// Tolerates clocks slightly behind the one that issued the certificate.
const BACKDATE: Duration = Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating a key: {0}")]
    Key(rcgen::Error),
    #[error("signing the {what}: {source}")]
    Sign {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("the CA's {what} does not parse: {source}")]
    BadCa {
        what: &'static str,
        source: rcgen::Error,
    },
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

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From a few minutes ago (clock skew) for `lifetime`.
    pub fn from_now(lifetime: Duration) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - BACKDATE,
            not_after: now + lifetime,
        }
    }

    fn apply(self, params: &mut CertificateParams) {
        params.not_before = self.not_before;
        params.not_after = self.not_after;
    }
}

/// Certificate parameters whose subject is just `CN=common_name`.
fn named(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
}

impl Ca {
    /// A new self-signed CA that may sign leaf certificates only.
    pub fn generate(common_name: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Key)?;
        let mut params = named(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Validity::from_now(CA_VALIDITY).apply(&mut params);
        let cert = params.self_signed(&key).map_err(|source| PkiError::Sign {
            what: "CA certificate",
            source,
        })?;
        let pem = KeyedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Ca {
            pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// An existing CA, from its PEM certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|source| PkiError::BadCa {
            what: "key",
            source,
        })?;
        let pem = KeyedCert {
            cert_pem: cert_pem.to_string(),
            key_pem: key.serialize_pem(),
        };
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|source| PkiError::BadCa {
            what: "certificate",
            source,
        })?;
        Ok(Ca { pem, issuer })
    }

    /// A client certificate named `<role>@<cluster>` carrying `role`.
    pub fn client_cert(
        &self,
        cluster: &str,
        role: Role,
        validity: Validity,
    ) -> Result<KeyedCert, PkiError> {
        self.client_cert_with_organizations(
            &format!("{}@{cluster}", role.name()),
            &[&role.organization()],
            validity,
        )
    }

    /// A client certificate with any Organizations (none, several, foreign
    /// ones): what apid must cope with, for tests and special clients.
    pub fn client_cert_with_organizations(
        &self,
        common_name: &str,
        organizations: &[&str],
        validity: Validity,
    ) -> Result<KeyedCert, PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Key)?;
        let mut params = named(common_name);
        for o in organizations {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        validity.apply(&mut params);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| PkiError::Sign {
                what: "client certificate",
                source,
            })?;
        Ok(KeyedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certificates_carry_their_role() {
        let ca = Ca::generate("test CA").unwrap();
        for role in [Role::Reader, Role::Operator, Role::Admin] {
            let c = ca
                .client_cert("prod", role, Validity::from_now(CLIENT_VALIDITY))
                .unwrap();
            let der = pem_der(&c.cert_pem);
            assert_eq!(Role::of_certificate(&der).unwrap(), role);
        }
    }

    #[test]
    fn a_ca_read_back_from_pem_signs_alike() {
        let ca = Ca::generate("test CA").unwrap();
        let again = Ca::from_pem(&ca.pem.cert_pem, &ca.pem.key_pem).unwrap();
        let c = again
            .client_cert("prod", Role::Admin, Validity::from_now(CLIENT_VALIDITY))
            .unwrap();
        let der = pem_der(&c.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_der = pem_der(&ca.pem.cert_pem);
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert!(Ca::from_pem("junk", &ca.pem.key_pem).is_err());
        assert!(Ca::from_pem(&ca.pem.cert_pem, "junk").is_err());
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents
    }
}
