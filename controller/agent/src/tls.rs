//! TLS for both ends. The agent serves a certificate it generates at start (nothing to
//! distribute or rotate: a restart brings a new key, and the agent republishes the
//! fingerprint); the controller trusts exactly the fingerprint the agent published.
//! Both ends speak TLS 1.3 only, with ring as the one crypto provider (as kube's client).

use std::sync::Arc;

use rustls::{
    ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, verify_tls13_signature},
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime},
};

use crate::fingerprint::CertificateFingerprint;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("generating the agent's self-signed certificate")]
    Certificate(#[source] rcgen::Error),
    #[error("building the rustls configuration")]
    Rustls(#[source] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The agent's certificate and key, generated at start and kept in memory only.
pub struct ServingIdentity {
    certificate: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    fingerprint: CertificateFingerprint,
}

impl std::fmt::Debug for ServingIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ServingIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl ServingIdentity {
    /// A fresh ECDSA P-256 key and a self-signed certificate for `names` (the node name
    /// and addresses; only informative, since clients pin the fingerprint).
    pub fn generate(names: Vec<String>) -> Result<Self, TlsSetupError> {
        let key = rcgen::KeyPair::generate().map_err(TlsSetupError::Certificate)?;
        let mut params =
            rcgen::CertificateParams::new(names).map_err(TlsSetupError::Certificate)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tidepool-agent");
        let certificate = params
            .self_signed(&key)
            .map_err(TlsSetupError::Certificate)?;
        let certificate = certificate.der().clone();
        Ok(Self {
            fingerprint: crate::fingerprint::of_der(&certificate),
            certificate,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// What the agent publishes and clients pin.
    pub fn fingerprint(&self) -> CertificateFingerprint {
        self.fingerprint
    }

    pub fn server_config(&self) -> Result<ServerConfig, TlsSetupError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsSetupError::Rustls)?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.certificate.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .map_err(TlsSetupError::Rustls)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// A client configuration that trusts exactly one certificate: the one whose fingerprint
/// the agent published. No CA, no name check, no validity dates: the pin is the identity.
pub fn pinned_client_config(pin: CertificateFingerprint) -> Result<ClientConfig, TlsSetupError> {
    let provider = provider();
    let verifier = PinnedCertificate {
        pin,
        provider: provider.clone(),
    };
    // No ALPN here: the HTTP connector sets it from the protocols it enables (and refuses a
    // configuration that already has some).
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsSetupError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// Accepts the server's certificate only when its SHA-256 equals the pin, and its handshake
/// signature only when that certificate's key made it.
#[derive(Debug)]
struct PinnedCertificate {
    pin: CertificateFingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The agent sends its one self-signed certificate; a chain means another server.
        if intermediates.is_empty() && crate::fingerprint::of_der(end_entity) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable with a TLS 1.3-only configuration; refuse rather than trust.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOfferedOrEnabled,
        ))
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
    fn the_fingerprint_is_that_of_the_served_certificate() {
        let identity =
            ServingIdentity::generate(vec!["node-a".into()]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            identity.fingerprint(),
            crate::fingerprint::of_der(&identity.certificate)
        );
        assert!(identity.server_config().is_ok());
    }

    #[test]
    fn each_start_has_a_new_key_and_fingerprint() {
        let a = ServingIdentity::generate(vec!["n".into()]).unwrap_or_else(|e| panic!("{e}"));
        let b = ServingIdentity::generate(vec!["n".into()]).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn the_verifier_accepts_only_the_pinned_certificate_alone() {
        let identity =
            ServingIdentity::generate(vec!["n".into()]).unwrap_or_else(|e| panic!("{e}"));
        let other = ServingIdentity::generate(vec!["n".into()]).unwrap_or_else(|e| panic!("{e}"));
        let verifier = PinnedCertificate {
            pin: identity.fingerprint(),
            provider: provider(),
        };
        let name = ServerName::try_from("n").unwrap_or_else(|e| panic!("{e}"));
        let now = UnixTime::now();
        let verify = |cert: &CertificateDer<'_>, chain: &[CertificateDer<'_>]| {
            verifier
                .verify_server_cert(cert, chain, &name, &[], now)
                .is_ok()
        };
        assert!(verify(&identity.certificate, &[]));
        assert!(!verify(&other.certificate, &[]));
        assert!(!verify(
            &identity.certificate,
            std::slice::from_ref(&other.certificate)
        ));
    }
}
