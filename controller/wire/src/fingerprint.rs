//! The SHA-256 fingerprint of an agent's certificate: what the agent publishes in its
//! `ZfsNode` (`status.tlsCertificateSha256`), what the controller pins, and what it hands a
//! source agent so that the source trusts exactly the target it streams to. A value here
//! (the wire crate has no hashing); the agent computes it from a certificate.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// SHA-256 of a certificate's DER encoding. Written as 64 lowercase hex digits, the format
/// the `ZfsNode` schema admits (`^[0-9a-f]{64}$`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertificateFingerprint([u8; 32]);

impl CertificateFingerprint {
    /// The fingerprint whose digest is `bytes` (the agent hashes the certificate).
    pub fn from_digest(bytes: [u8; 32]) -> Self {
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

/// 32 bytes from 64 lowercase hex digits; `None` for any other spelling. Uppercase is
/// refused rather than folded: one spelling per value, as the schema says.
pub(crate) fn hex32(s: &str) -> Option<[u8; 32]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let raw = s.as_bytes();
    if raw.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(raw.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(bytes)
}

impl FromStr for CertificateFingerprint {
    type Err = FingerprintParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        hex32(s).map(Self).ok_or_else(|| FingerprintParseError {
            len: s.chars().count(),
            shown: s.chars().take(80).collect(),
        })
    }
}

impl Serialize for CertificateFingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CertificateFingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CertificateFingerprint {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37);
        }
        CertificateFingerprint::from_digest(bytes)
    }

    #[test]
    fn round_trips_through_its_text_and_json_forms() {
        let fp = sample();
        assert_eq!(fp.to_string().parse::<CertificateFingerprint>(), Ok(fp));
        let json = serde_json::to_string(&fp).unwrap();
        assert_eq!(json, format!("\"{fp}\""));
        assert_eq!(
            serde_json::from_str::<CertificateFingerprint>(&json).unwrap(),
            fp
        );
    }

    #[test]
    fn refuses_other_spellings() {
        let good = sample().to_string();
        for bad in [
            String::new(),
            good[..62].to_owned(),
            format!("{good}00"),
            good.to_uppercase(),
            format!("sha256:{}", &good[7..]),
            format!("g0{}", &good[2..]),
            // A multi-byte character that keeps the byte length at 64.
            format!("é{}", &good[2..]),
        ] {
            assert!(bad.parse::<CertificateFingerprint>().is_err(), "{bad:?}");
            assert!(
                serde_json::from_str::<CertificateFingerprint>(&format!("{bad:?}")).is_err(),
                "{bad:?}"
            );
        }
    }
}
