//! The SHA-256 fingerprint of the agent's certificate: what the agent publishes in its
//! `ZfsNode` (`status.tlsCertificateSha256`) and what the controller pins.

use std::{fmt, str::FromStr};

use ring::digest::{SHA256, digest};

/// SHA-256 of a certificate's DER encoding. Written as 64 lowercase hex digits, the format
/// the `ZfsNode` schema admits (`^[0-9a-f]{64}$`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertificateFingerprint([u8; 32]);

impl CertificateFingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        let hash = digest(&SHA256, der);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(hash.as_ref());
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for CertificateFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for CertificateFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificateFingerprint({self})")
    }
}

/// A fingerprint that is not 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a certificate fingerprint is 64 lowercase hex digits (SHA-256), got {len} characters: {shown:?}"
)]
pub struct FingerprintParseError {
    len: usize,
    /// At most the first 80 characters, so a huge input does not end up in logs whole.
    shown: String,
}

impl FromStr for CertificateFingerprint {
    type Err = FingerprintParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refuse = || FingerprintParseError {
            len: s.chars().count(),
            shown: s.chars().take(80).collect(),
        };
        // Uppercase is refused rather than folded: one spelling per value, as the schema says.
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let raw = s.as_bytes();
        if raw.len() != 64 {
            return Err(refuse());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(raw.chunks_exact(2)) {
            let (Some(high), Some(low)) = (digit(pair[0]), digit(pair[1])) else {
                return Err(refuse());
            };
            *byte = high << 4 | low;
        }
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_known_sha256_of_a_short_input() {
        // SHA-256("abc") from FIPS 180-2, appendix B.1.
        let fp = CertificateFingerprint::of_der(b"abc");
        assert_eq!(
            fp.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn round_trips_through_its_text_form() {
        let fp = CertificateFingerprint::of_der(b"some certificate");
        assert_eq!(fp.to_string().parse::<CertificateFingerprint>(), Ok(fp));
    }

    #[test]
    fn refuses_other_spellings() {
        let good = CertificateFingerprint::of_der(b"x").to_string();
        for bad in [
            String::new(),
            good[..62].to_owned(),
            format!("{good}00"),
            good.to_uppercase(),
            format!("sha256:{}", &good[7..]),
            good.replacen(&good[..2], "g0", 1),
            // A multi-byte character that keeps the byte length at 64.
            format!("é{}", &good[2..]),
        ] {
            assert!(bad.parse::<CertificateFingerprint>().is_err(), "{bad:?}");
        }
    }
}
