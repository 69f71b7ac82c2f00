//! apid's own TLS identity. In maintenance mode it is a fresh self-signed
//! key made at start (the operator pins it by its SHA-256 fingerprint, shown
//! on the console); once configured it is a key signed by the machine CA from
//! the config, so clients verify it like any CA-issued server certificate.
//! Either way the key lives only in memory: a new one each start.

use rcgen::{CertificateParams, DnType, Issuer, KeyPair};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot make a key: {0}")]
    Key(rcgen::Error),
    #[error("bad subject alternative name {name:?}: {source}")]
    Name { name: String, source: rcgen::Error },
    #[error("machine CA: {0}")]
    Ca(rcgen::Error),
    #[error("cannot sign the server certificate: {0}")]
    Sign(rcgen::Error),
}

/// A server certificate and its key, PEM-encoded, and the certificate's
/// SHA-256 fingerprint.
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
    pub fingerprint: String,
}

impl Identity {
    /// A self-signed identity for maintenance mode, valid for `names`
    /// (host names or IP addresses).
    pub fn self_signed(names: &[String]) -> Result<Identity, IdentityError> {
        let key = KeyPair::generate().map_err(IdentityError::Key)?;
        let cert = params(names)?
            .self_signed(&key)
            .map_err(IdentityError::Sign)?;
        Ok(Identity::new(cert.pem(), cert.der(), key))
    }

    /// An identity signed by the machine CA, valid for `names`.
    pub fn issued_by(
        ca_cert_pem: &str,
        ca_key_pem: &str,
        names: &[String],
    ) -> Result<Identity, IdentityError> {
        let ca_key = KeyPair::from_pem(ca_key_pem).map_err(IdentityError::Ca)?;
        let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).map_err(IdentityError::Ca)?;
        let key = KeyPair::generate().map_err(IdentityError::Key)?;
        let cert = params(names)?
            .signed_by(&key, &issuer)
            .map_err(IdentityError::Sign)?;
        Ok(Identity::new(cert.pem(), cert.der(), key))
    }

    fn new(cert_pem: String, der: &[u8], key: KeyPair) -> Identity {
        Identity {
            cert_pem,
            key_pem: key.serialize_pem(),
            fingerprint: fingerprint(der),
        }
    }
}

/// Server certificate parameters. rcgen's default validity (1975 to 4096) is
/// kept on purpose: the node's clock may be unset when apid first starts.
fn params(names: &[String]) -> Result<CertificateParams, IdentityError> {
    let mut params = CertificateParams::default();
    for name in names {
        let san = CertificateParams::new(vec![name.clone()])
            .map_err(|source| IdentityError::Name {
                name: name.clone(),
                source,
            })?
            .subject_alt_names;
        params.subject_alt_names.extend(san);
    }
    params
        .distinguished_name
        .push(DnType::CommonName, "kiln apid");
    Ok(params)
}

/// SHA-256 of a DER certificate as colon-separated lowercase hex pairs, as
/// `openssl x509 -fingerprint -sha256` prints it (modulo case).
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, IsCa};
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    fn der_of(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        decode_base64(&body)
    }

    /// Small base64 decoder for the tests (no extra dependency for it).
    fn decode_base64(s: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in s.bytes().filter(|&c| c != b'=') {
            let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }

    #[test]
    fn self_signed_names_and_fingerprint() {
        let names = vec!["kiln-1".to_string(), "10.0.2.15".to_string()];
        let id = Identity::self_signed(&names).unwrap();
        let der = der_of(&id.cert_pem);
        assert_eq!(id.fingerprint, fingerprint(&der));
        assert_eq!(id.fingerprint.len(), 32 * 3 - 1);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let got: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(ip) => format!("{ip:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            vec!["kiln-1".to_string(), format!("{:?}", [10u8, 0, 2, 15])]
        );
        // Each start makes a new key.
        let again = Identity::self_signed(&names).unwrap();
        assert_ne!(again.fingerprint, id.fingerprint);
    }

    #[test]
    fn issued_by_the_machine_ca() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(vec![]).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test machine CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let id =
            Identity::issued_by(&ca.pem(), &ca_key.serialize_pem(), &["node".to_string()]).unwrap();
        let der = der_of(&id.cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let (_, ca_cert) = X509Certificate::from_der(ca.der()).unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    }

    #[test]
    fn bad_ca_is_an_error() {
        let err = Identity::issued_by("not pem", "not pem", &[])
            .err()
            .unwrap();
        assert!(matches!(err, IdentityError::Ca(_)), "{err}");
    }
}
