//! The SHA-256 fingerprint of the agent's certificate. The value type is the wire crate's
//! (the controller hands it to source agents in `SendToPeer`); computing it from a
//! certificate is here, where the hashing is.

use ring::digest::{SHA256, digest};

pub use tidepool_wire::fingerprint::{CertificateFingerprint, FingerprintParseError};

/// The fingerprint of a DER-encoded certificate.
pub fn of_der(der: &[u8]) -> CertificateFingerprint {
    let hash = digest(&SHA256, der);
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(hash.as_ref());
    CertificateFingerprint::from_digest(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_known_sha256_of_a_short_input() {
        // SHA-256("abc") from FIPS 180-2, appendix B.1.
        assert_eq!(
            of_der(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn round_trips_through_its_text_form() {
        let fp = of_der(b"some certificate");
        assert_eq!(fp.to_string().parse::<CertificateFingerprint>(), Ok(fp));
    }
}
