//! Who may call what: a caller's role comes from its client certificate's
//! Organization (`O=kiln:admin`, `kiln:operator`, `kiln:reader`), as with
//! Kubernetes groups. The certificate chain itself was already verified
//! against the machine CA by the TLS handshake.

use x509_parser::prelude::{FromDer, X509Certificate};

/// Roles, least to most powerful: each can do what the ones before can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read-only calls: version, config (redacted), services, logs, stats.
    Reader,
    /// Reader, plus service start/stop/restart and reboot.
    Operator,
    /// Everything, including applying config and reset.
    Admin,
}

/// The Organization prefix that marks a Kiln role.
const PREFIX: &str = "kiln:";

#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("client certificate does not parse: {0}")]
    BadCertificate(String),
    #[error("client certificate names no Kiln role (expected O=kiln:admin, kiln:operator or kiln:reader)")]
    NoRole,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The Organization value that grants this role.
    pub fn organization(self) -> String {
        format!("{PREFIX}{}", self.name())
    }

    fn from_organization(o: &str) -> Option<Role> {
        match o.strip_prefix(PREFIX)? {
            "reader" => Some(Role::Reader),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The highest role a DER certificate's Organization attributes grant.
    pub fn of_certificate(der: &[u8]) -> Result<Role, RoleError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| RoleError::BadCertificate(e.to_string()))?;
        cert.subject()
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .filter_map(Role::from_organization)
            .max()
            .ok_or(RoleError::NoRole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn cert_with_orgs(orgs: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::new(vec![]).unwrap();
        for o in orgs {
            params
                .distinguished_name
                .push(DnType::OrganizationName, o.to_string());
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Reader < Role::Operator && Role::Operator < Role::Admin);
    }

    #[test]
    fn role_from_organization() {
        for role in [Role::Reader, Role::Operator, Role::Admin] {
            let der = cert_with_orgs(&[&role.organization()]);
            assert_eq!(Role::of_certificate(&der).unwrap(), role);
        }
    }

    #[test]
    fn highest_of_several_roles_wins() {
        let der = cert_with_orgs(&["kiln:reader", "other", "kiln:operator"]);
        assert_eq!(Role::of_certificate(&der).unwrap(), Role::Operator);
    }

    #[test]
    fn no_kiln_role_is_an_error() {
        for orgs in [&[][..], &["kiln:root"][..], &["admin"][..]] {
            let der = cert_with_orgs(orgs);
            assert!(matches!(Role::of_certificate(&der), Err(RoleError::NoRole)));
        }
    }

    #[test]
    fn garbage_is_a_bad_certificate() {
        assert!(matches!(
            Role::of_certificate(b"not a certificate"),
            Err(RoleError::BadCertificate(_))
        ));
    }
}
