//! The manifest: what a stream is and how to check it, written after its last chunk.

use serde::{Deserialize, Serialize};
use tidepool_api::{DatasetName, SnapshotShortName};

use crate::error::Error;
use crate::naming::{StreamKey, StreamKind};

/// The manifest format this version writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format this version reads (1: without `owner`).
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// `manifest.json` of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub dataset: DatasetName,
    pub snapshot: SnapshotRef,
    /// The snapshot an incremental stream was sent from; `None` for a full stream.
    pub parent: Option<SnapshotRef>,
    /// The chunk size of the upload (every chunk but the last has exactly this size).
    pub chunk_size: u64,
    /// In order: concatenated, they are the stored stream.
    pub chunks: Vec<ChunkInfo>,
    /// Bytes stored (the sum of the chunk sizes; ciphertext when encrypted).
    pub stored_bytes: u64,
    /// Bytes of the `zfs send` stream itself.
    pub stream_bytes: u64,
    pub encryption: Encryption,
    /// Who uploaded the stream (`ReplicationPolicy/<namespace>/<name>`): only that policy's
    /// deletion removes it. Absent in format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A snapshot by name and GUID (the GUID is what `zfs receive` checks an incremental
/// against; kept as a decimal string so JSON tools that read numbers as doubles keep it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotRef {
    pub name: SnapshotShortName,
    #[serde(with = "guid_string")]
    pub guid: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChunkInfo {
    pub size: u64,
    /// Lower-case hex SHA-256 of the chunk object's bytes.
    pub sha256: String,
}

/// How the stored bytes relate to the `zfs send` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Encryption {
    /// Stored as sent (a raw send of an encrypted dataset is still encrypted by ZFS).
    None,
    /// The concatenated chunks are one age file for `recipient` (`age -d -i KEY`).
    Age { recipient: String },
}

impl Manifest {
    /// Parses `bytes` read from `object` and checks that it describes `key`.
    pub fn parse(object: &str, bytes: &[u8], key: &StreamKey) -> Result<Manifest, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Version {
            format_version: u32,
        }
        let invalid = |source| Error::ManifestInvalid {
            object: object.to_owned(),
            source,
        };
        let version: Version = serde_json::from_slice(bytes).map_err(invalid)?;
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version.format_version) {
            return Err(Error::UnsupportedFormat {
                object: object.to_owned(),
                found: version.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(invalid)?;
        manifest
            .check(key)
            .map_err(|reason| Error::ManifestMismatch {
                object: object.to_owned(),
                reason,
            })?;
        Ok(manifest)
    }

    fn check(&self, key: &StreamKey) -> Result<(), String> {
        if self.dataset != key.dataset {
            return Err(format!("dataset {} in the manifest", self.dataset));
        }
        if self.snapshot.name != key.name.snapshot {
            return Err(format!("snapshot {} in the manifest", self.snapshot.name));
        }
        let parent = self.parent.as_ref().map(|p| &p.name);
        if parent != key.name.parent() {
            return Err(format!("parent {parent:?} in the manifest"));
        }
        if matches!(key.name.kind, StreamKind::Full) != self.parent.is_none() {
            return Err("kind differs".to_owned());
        }
        let sum = self
            .chunks
            .iter()
            .try_fold(0u64, |a, c| a.checked_add(c.size));
        if sum != Some(self.stored_bytes) {
            return Err(format!(
                "chunk sizes add up to {sum:?}, not storedBytes {}",
                self.stored_bytes
            ));
        }
        let (last, rest) = match self.chunks.split_last() {
            Some(split) => split,
            None => return Ok(()),
        };
        if rest.iter().any(|c| c.size != self.chunk_size) || last.size > self.chunk_size {
            return Err("chunk sizes differ from chunkSize".to_owned());
        }
        if self.chunks.iter().any(|c| {
            c.sha256.len() != 64
                || !c
                    .sha256
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        }) {
            return Err("a sha256 is not 64 lower-case hex digits".to_owned());
        }
        Ok(())
    }
}

mod guid_string {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(guid: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(guid)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::{Prefix, StreamName};

    fn key(kind: StreamKind) -> StreamKey {
        StreamKey {
            prefix: Prefix::new("p").expect("valid"),
            dataset: "tank/a".parse().expect("valid"),
            name: StreamName::new(
                "2026-01-01T00:00:00Z".parse().expect("valid"),
                "s2".parse().expect("valid"),
                kind,
            )
            .expect("valid"),
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            dataset: "tank/a".parse().expect("valid"),
            snapshot: SnapshotRef {
                name: "s2".parse().expect("valid"),
                guid: u64::MAX - 1,
            },
            parent: Some(SnapshotRef {
                name: "s1".parse().expect("valid"),
                guid: 7,
            }),
            chunk_size: 4,
            chunks: vec![
                ChunkInfo {
                    size: 4,
                    sha256: "a".repeat(64),
                },
                ChunkInfo {
                    size: 1,
                    sha256: "b".repeat(64),
                },
            ],
            stored_bytes: 5,
            stream_bytes: 5,
            encryption: Encryption::Age {
                recipient: "age1xyz".to_owned(),
            },
            owner: Some("ReplicationPolicy/ns/p".to_owned()),
        }
    }

    #[test]
    fn round_trips_with_guids_as_strings() {
        let inc = key(StreamKind::Incremental {
            parent: "s1".parse().expect("valid"),
        });
        let json = serde_json::to_string_pretty(&manifest()).expect("serializes");
        assert!(
            json.contains("\"guid\": \"18446744073709551614\""),
            "{json}"
        );
        assert!(json.contains("\"type\": \"age\""), "{json}");
        assert_eq!(
            Manifest::parse("m", json.as_bytes(), &inc).expect("parses"),
            manifest()
        );
    }

    #[test]
    fn reads_format_1_without_an_owner() {
        let inc = key(StreamKind::Incremental {
            parent: "s1".parse().expect("valid"),
        });
        let mut v1 = manifest();
        v1.format_version = 1;
        v1.owner = None;
        let json = serde_json::to_string(&v1).expect("serializes");
        assert!(!json.contains("owner"), "{json}");
        assert_eq!(
            Manifest::parse("m", json.as_bytes(), &inc).expect("parses"),
            v1
        );
    }

    #[test]
    fn refuses_what_does_not_match_or_is_newer() {
        let inc = key(StreamKind::Incremental {
            parent: "s1".parse().expect("valid"),
        });
        let json = serde_json::to_string(&manifest()).expect("serializes");
        let full = key(StreamKind::Full);
        assert!(matches!(
            Manifest::parse("m", json.as_bytes(), &full),
            Err(Error::ManifestMismatch { .. })
        ));
        let mut bad = manifest();
        bad.stored_bytes = 6;
        let json = serde_json::to_string(&bad).expect("serializes");
        assert!(matches!(
            Manifest::parse("m", json.as_bytes(), &inc),
            Err(Error::ManifestMismatch { .. })
        ));
        let newer = r#"{"formatVersion": 3, "whatever": true}"#;
        assert!(matches!(
            Manifest::parse("m", newer.as_bytes(), &inc),
            Err(Error::UnsupportedFormat { found: 3, .. })
        ));
        assert!(matches!(
            Manifest::parse("m", b"{", &inc),
            Err(Error::ManifestInvalid { .. })
        ));
    }
}
