//! Object keys: a listing of a dataset's directory is the index of its streams.
//!
//! ```text
//! <prefix>/<dataset>/<UTC time>-<snapshot>-full/chunk-000001
//! <prefix>/<dataset>/<UTC time>-<snapshot>-inc-from-<parent snapshot>/chunk-000001
//!                                                                     .../manifest.json
//! ```
//!
//! The time is the snapshot's creation time in basic ISO 8601 (`20261122T093000Z`), fixed
//! width, so keys sort by time; the suffix names the stream's kind and parent, so the chain
//! can be rebuilt from the listing alone. Chunk numbers are zero-padded to six digits so
//! they sort too (more than 999 999 chunks still parse; they only stop sorting as text).
//! `manifest.json` is written last: a stream directory without one is an incomplete upload.

use std::fmt;

use jiff::Timestamp;
use object_store::path::Path;
use tidepool_api::{DatasetName, SnapshotShortName};

use crate::error::Error;

/// The marker between a snapshot name and its parent's. Refused inside snapshot names so a
/// key parses one way only.
const INC_FROM: &str = "-inc-from-";
const FULL: &str = "-full";
const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const TIME_LEN: usize = 16;
pub const MANIFEST_FILE: &str = "manifest.json";
const CHUNK_PREFIX: &str = "chunk-";

/// Where a target's streams live: a key prefix inside a bucket (may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    /// `a/b` style: components of `[A-Za-z0-9_.-]`, none `.` or `..`, none empty (the
    /// `ObjectStoreTarget.prefix` pattern of the API, with a trailing `/` allowed).
    pub fn new(prefix: &str) -> Result<Self, Error> {
        let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
        if trimmed.is_empty() {
            return Ok(Prefix(String::new()));
        }
        for component in trimmed.split('/') {
            let bad = component.is_empty()
                || component == "."
                || component == ".."
                || !component
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if bad {
                return Err(Error::InvalidName {
                    what: "prefix",
                    value: prefix.to_owned(),
                    reason: "components of A-Z a-z 0-9 _ . - separated by '/', none empty, '.' or '..'",
                });
            }
        }
        Ok(Prefix(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The directory holding `dataset`'s streams.
    pub fn dataset_dir(&self, dataset: &DatasetName) -> Path {
        if self.0.is_empty() {
            Path::from(dataset.as_str())
        } else {
            Path::from(format!("{}/{}", self.0, dataset.as_str()))
        }
    }
}

/// What a stream was sent from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Full,
    /// `zfs send -i <parent> <snapshot>`: restoring it needs the stream of `parent` first.
    Incremental {
        parent: SnapshotShortName,
    },
}

/// One stream's identity, and its directory within a dataset's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamName {
    /// The snapshot's creation time, to the second.
    pub time: Timestamp,
    pub snapshot: SnapshotShortName,
    pub kind: StreamKind,
}

impl StreamName {
    /// Refuses snapshot names that contain `-inc-from-` (the one thing that would make a key
    /// ambiguous), and a parent equal to the snapshot.
    pub fn new(
        time: Timestamp,
        snapshot: SnapshotShortName,
        kind: StreamKind,
    ) -> Result<Self, Error> {
        check_snapshot(&snapshot)?;
        if let StreamKind::Incremental { parent } = &kind {
            check_snapshot(parent)?;
            if parent == &snapshot {
                return Err(Error::InvalidName {
                    what: "parent snapshot",
                    value: parent.to_string(),
                    reason: "a stream cannot be incremental from its own snapshot",
                });
            }
        }
        let time = Timestamp::from_second(time.as_second()).map_err(|_| Error::InvalidName {
            what: "snapshot time",
            value: time.to_string(),
            reason: "out of range",
        })?;
        Ok(StreamName {
            time,
            snapshot,
            kind,
        })
    }

    pub fn parent(&self) -> Option<&SnapshotShortName> {
        match &self.kind {
            StreamKind::Full => None,
            StreamKind::Incremental { parent } => Some(parent),
        }
    }

    /// The directory name: `<time>-<snapshot>-full` or `<time>-<snapshot>-inc-from-<parent>`.
    pub fn dir_name(&self) -> String {
        self.to_string()
    }

    /// Parses a directory name; `None` for anything that is not one of ours.
    pub fn parse(dir: &str) -> Option<StreamName> {
        if dir.len() <= TIME_LEN + 1 || !dir.is_char_boundary(TIME_LEN) {
            return None;
        }
        let (time, rest) = dir.split_at(TIME_LEN);
        let rest = rest.strip_prefix('-')?;
        let time = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", time.strip_suffix('Z')?)
            .ok()?
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp();
        let (snapshot, kind) = match rest.split_once(INC_FROM) {
            Some((snapshot, parent)) => (
                snapshot,
                StreamKind::Incremental {
                    parent: parent.parse().ok()?,
                },
            ),
            None => (rest.strip_suffix(FULL)?, StreamKind::Full),
        };
        StreamName::new(time, snapshot.parse().ok()?, kind).ok()
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.time.strftime(TIME_FORMAT), self.snapshot)?;
        match &self.kind {
            StreamKind::Full => f.write_str(FULL),
            StreamKind::Incremental { parent } => write!(f, "{INC_FROM}{parent}"),
        }
    }
}

fn check_snapshot(snapshot: &SnapshotShortName) -> Result<(), Error> {
    if snapshot.as_str().contains(INC_FROM) {
        return Err(Error::InvalidName {
            what: "snapshot",
            value: snapshot.to_string(),
            reason: "object-store stream names cannot contain '-inc-from-'",
        });
    }
    Ok(())
}

/// A stream's place in a bucket: prefix, dataset and stream name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKey {
    pub prefix: Prefix,
    pub dataset: DatasetName,
    pub name: StreamName,
}

impl StreamKey {
    pub fn dir(&self) -> Path {
        self.prefix
            .dataset_dir(&self.dataset)
            .join(self.name.dir_name().as_str())
    }

    pub fn manifest(&self) -> Path {
        self.dir().join(MANIFEST_FILE)
    }

    /// Chunk `index` (from 1).
    pub fn chunk(&self, index: usize) -> Path {
        self.dir().join(chunk_file(index).as_str())
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir().as_ref())
    }
}

/// `chunk-000001` for index 1.
pub fn chunk_file(index: usize) -> String {
    format!("{CHUNK_PREFIX}{index:06}")
}

/// The index of a `chunk-NNNNNN` file name.
pub fn parse_chunk_file(name: &str) -> Option<usize> {
    let digits = name.strip_prefix(CHUNK_PREFIX)?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&i| i > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(s: &str) -> SnapshotShortName {
        s.parse().expect("valid short name")
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("valid timestamp")
    }

    #[test]
    fn keys_read_as_documented_and_parse_back() {
        let full = StreamName::new(
            ts("2026-11-22T09:30:00.7Z"),
            short("tidepool_20261122T093000Z_hourly"),
            StreamKind::Full,
        )
        .expect("valid");
        assert_eq!(
            full.dir_name(),
            "20261122T093000Z-tidepool_20261122T093000Z_hourly-full"
        );
        let inc = StreamName::new(
            ts("2026-11-22T10:30:00Z"),
            short("b-full"),
            StreamKind::Incremental {
                parent: short("a-full"),
            },
        )
        .expect("valid");
        assert_eq!(inc.dir_name(), "20261122T103000Z-b-full-inc-from-a-full");
        for name in [full, inc] {
            assert_eq!(StreamName::parse(&name.dir_name()), Some(name));
        }
        let key = StreamKey {
            prefix: Prefix::new("backups/k8s/").expect("valid"),
            dataset: "tank/apps/db".parse().expect("valid"),
            name: StreamName::parse("20261122T093000Z-x-full").expect("parses"),
        };
        assert_eq!(
            key.chunk(3).as_ref(),
            "backups/k8s/tank/apps/db/20261122T093000Z-x-full/chunk-000003"
        );
        assert_eq!(
            key.manifest().as_ref(),
            "backups/k8s/tank/apps/db/20261122T093000Z-x-full/manifest.json"
        );
    }

    #[test]
    fn keys_sort_by_time() {
        let a = StreamName::new(ts("2026-01-02T00:00:00Z"), short("z"), StreamKind::Full);
        let b = StreamName::new(ts("2026-01-10T00:00:00Z"), short("a"), StreamKind::Full);
        let (a, b) = (a.expect("valid"), b.expect("valid"));
        assert!(a.dir_name() < b.dir_name());
        assert!(chunk_file(9) < chunk_file(10));
    }

    #[test]
    fn foreign_and_ambiguous_names_are_refused() {
        for dir in [
            "",
            "20261122T093000Z",
            "20261122T093000Z-",
            "20261122T093000Z-x",
            "20261122T093000Z-x-inc-from-",
            "20261122T093000Z-x-inc-from-x",
            "20261122T093000Z-../x-full",
            "20261122T093000Z-x;rm -rf-full",
            "20261122X093000Z-x-full",
            "2026112éT093000Z-x-full",
            "20261122T093000Z--x-full",
            "20261122T093000Z-a-inc-from-b-inc-from-c",
        ] {
            assert_eq!(StreamName::parse(dir), None, "{dir:?}");
        }
        let err = StreamName::new(
            ts("2026-01-02T00:00:00Z"),
            short("a-inc-from-b"),
            StreamKind::Full,
        );
        assert!(matches!(err, Err(Error::InvalidName { .. })), "{err:?}");
    }

    #[test]
    fn prefixes_are_checked() {
        assert_eq!(Prefix::new("").expect("valid").as_str(), "");
        assert_eq!(Prefix::new("a/b/").expect("valid").as_str(), "a/b");
        for bad in ["/a", "a//b", "a/../b", "..", "a b", "a/$(x)", "a\\b"] {
            assert!(Prefix::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chunk_files_parse() {
        assert_eq!(parse_chunk_file("chunk-000001"), Some(1));
        assert_eq!(parse_chunk_file("chunk-1234567"), Some(1_234_567));
        for bad in ["chunk-000000", "chunk-1", "chunk-00000a", "manifest.json"] {
            assert_eq!(parse_chunk_file(bad), None, "{bad:?}");
        }
    }
}
