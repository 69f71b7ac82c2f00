//! Trust for maintenance mode: the node's self-signed certificate is
//! accepted by its SHA-256 fingerprint (or, unpinned, at all), but the
//! handshake signature is still verified, so the peer must hold the key.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// Accepts the certificate whose fingerprint is `expected` (any if `None`).
#[derive(Debug)]
pub(crate) struct Pinned {
    expected: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl Pinned {
    pub(crate) fn new(expected: Option<[u8; 32]>, provider: Arc<CryptoProvider>) -> Self {
        Self { expected, provider }
    }
}

/// Parses a fingerprint as the node prints it (`ab:cd:…`), also accepting
/// upper case and no separators.
pub fn normalize_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?} is not a SHA-256 fingerprint (64 hex digits, optionally in colon-separated pairs)"
        ));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.expected {
            None => Ok(ServerCertVerified::assertion()),
            Some(expected) if Sha256::digest(end_entity).as_slice() == expected => {
                Ok(ServerCertVerified::assertion())
            }
            Some(_) => Err(rustls::Error::General(
                "the node's certificate does not have the expected fingerprint".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_forms() {
        let colons = (0..32)
            .map(|i| format!("{i:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let want: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(normalize_fingerprint(&colons).unwrap(), want);
        assert_eq!(normalize_fingerprint(&colons.to_uppercase()).unwrap(), want);
        assert_eq!(
            normalize_fingerprint(&colons.replace(':', "")).unwrap(),
            want
        );
        for bad in [
            "",
            "abc",
            &colons[3..],
            &format!("{colons}:00"),
            &"zz".repeat(32),
        ] {
            assert!(normalize_fingerprint(bad).is_err(), "{bad:?}");
        }
    }
}
