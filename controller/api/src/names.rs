//! Typed, validated ZFS names.
//!
//! OpenZFS accepts names made of `[A-Za-z0-9_.: -]` components. Tidepool is stricter
//! wherever safety wants it, because these names end up in argv of `zfs` commands run as
//! root on every node:
//!
//! - no whitespace, no shell metacharacters, nothing outside `[A-Za-z0-9_.:-]`;
//! - no component starts with `-` (it could read as an option) or `.` (so no `.`/`..`
//!   components and no `.zfs`);
//! - pool names start with a letter, as OpenZFS requires;
//! - a whole name is at most 255 bytes (OpenZFS's `ZFS_MAX_DATASET_NAME_LEN` less the NUL).
//!
//! Names that `zfs` *prints* may be anything OpenZFS allows; the zfs layer keeps those as raw
//! strings and converts to these types only where Tidepool acts on them.
//!
//! Each type's JSON schema carries a `pattern` and `maxLength` that agree with its
//! `FromStr` (a test proves it on a corpus), so the API server rejects at admission what
//! the agent would reject later.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest name OpenZFS accepts (`ZFS_MAX_DATASET_NAME_LEN` is 256 including the NUL).
pub const MAX_NAME_LEN: usize = 255;

/// Longest short name (the part after `@` or `#`) Tidepool accepts on its own. The whole
/// `dataset@short` must still fit in [`MAX_NAME_LEN`].
pub const MAX_SHORT_NAME_LEN: usize = 200;

/// JSON-schema (RE2/ECMA compatible) patterns. Kept next to the parser they mirror.
pub mod pattern {
    pub const POOL: &str = "^[A-Za-z][A-Za-z0-9_.:-]*$";
    pub const DATASET: &str = "^[A-Za-z][A-Za-z0-9_.:-]*(/[A-Za-z0-9_][A-Za-z0-9_.:-]*)*$";
    pub const SHORT: &str = "^[A-Za-z0-9_][A-Za-z0-9_.:-]*$";
    pub const SNAPSHOT: &str =
        "^[A-Za-z][A-Za-z0-9_.:-]*(/[A-Za-z0-9_][A-Za-z0-9_.:-]*)*@[A-Za-z0-9_][A-Za-z0-9_.:-]*$";
    pub const BOOKMARK: &str =
        "^[A-Za-z][A-Za-z0-9_.:-]*(/[A-Za-z0-9_][A-Za-z0-9_.:-]*)*#[A-Za-z0-9_][A-Za-z0-9_.:-]*$";
}

/// Why a name was refused. The message is shown to users as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is {len} bytes long, more than the {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error(
        "character {ch:?} at byte {at} is not allowed (only A-Z a-z 0-9 _ . : - and / between components)"
    )]
    BadChar { ch: char, at: usize },
    #[error("component {component:?} must start with a letter, digit or '_'")]
    BadComponentStart { component: String },
    #[error("empty path component (leading, trailing or doubled '/')")]
    EmptyComponent,
    #[error("pool name {0:?} must start with a letter")]
    BadPoolStart(String),
    #[error("expected exactly one '{sep}' separating dataset and short name")]
    MissingSeparator { sep: char },
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

fn check_len(s: &str, max: usize) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > max {
        return Err(NameError::TooLong { len: s.len(), max });
    }
    Ok(())
}

/// Checks one component (a dataset path element after the pool, or a short name).
fn check_component(component: &str, offset: usize) -> Result<(), NameError> {
    let first = component.chars().next().ok_or(NameError::EmptyComponent)?;
    for (i, ch) in component.char_indices() {
        if !is_name_char(ch) {
            return Err(NameError::BadChar { ch, at: offset + i });
        }
    }
    if !(first.is_ascii_alphanumeric() || first == '_') {
        return Err(NameError::BadComponentStart {
            component: component.to_owned(),
        });
    }
    Ok(())
}

fn check_pool(pool: &str) -> Result<(), NameError> {
    check_component(pool, 0)?;
    if !pool.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(NameError::BadPoolStart(pool.to_owned()));
    }
    Ok(())
}

fn check_dataset(s: &str) -> Result<(), NameError> {
    check_len(s, MAX_NAME_LEN)?;
    let mut offset = 0;
    for (i, component) in s.split('/').enumerate() {
        if i == 0 {
            check_pool(component)?;
        } else {
            check_component(component, offset)?;
        }
        offset += component.len() + 1;
    }
    Ok(())
}

fn check_short(s: &str) -> Result<(), NameError> {
    check_len(s, MAX_SHORT_NAME_LEN)?;
    check_component(s, 0)
}

/// Splits `dataset<sep>short` and checks both halves and the total length.
fn check_qualified(s: &str, sep: char) -> Result<(&str, &str), NameError> {
    check_len(s, MAX_NAME_LEN)?;
    let (dataset, short) = s
        .split_once(sep)
        .ok_or(NameError::MissingSeparator { sep })?;
    check_dataset(dataset)?;
    check_component(short, dataset.len() + 1)?;
    Ok((dataset, short))
}

/// Serde, `Display`, `FromStr`, `AsRef<str>` and a JSON schema with `pattern` and
/// `maxLength` for a string newtype whose `FromStr` is `$check`.
macro_rules! validated_name {
    ($(#[$doc:meta])* $name:ident, $check:expr, $pattern:expr, $max:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The JSON-schema pattern that agrees with [`FromStr`].
            pub const PATTERN: &'static str = $pattern;
            /// The JSON-schema `maxLength` that agrees with [`FromStr`].
            pub const MAX_LEN: usize = $max;

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                let check: fn(&str) -> Result<(), NameError> = $check;
                check(s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                let check: fn(&str) -> Result<(), NameError> = $check;
                check(&s)?;
                Ok(Self(s))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::try_from(s).map_err(|e| serde::de::Error::custom(format!("invalid {}: {e}", $what)))
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "pattern": $pattern,
                })
            }
        }
    };
}

validated_name!(
    /// A pool name, e.g. `tank`.
    PoolName,
    check_pool_name,
    pattern::POOL,
    MAX_NAME_LEN,
    "pool name"
);
validated_name!(
    /// A filesystem or volume name, e.g. `tank/apps/db`.
    DatasetName,
    check_dataset,
    pattern::DATASET,
    MAX_NAME_LEN,
    "dataset name"
);
validated_name!(
    /// The part of a snapshot or bookmark name after `@` or `#`.
    SnapshotShortName,
    check_short,
    pattern::SHORT,
    MAX_SHORT_NAME_LEN,
    "snapshot name"
);
validated_name!(
    /// A full snapshot name, `dataset@short`.
    SnapshotName,
    |s| check_qualified(s, '@').map(drop),
    pattern::SNAPSHOT,
    MAX_NAME_LEN,
    "snapshot name"
);
validated_name!(
    /// A full bookmark name, `dataset#short`.
    BookmarkName,
    |s| check_qualified(s, '#').map(drop),
    pattern::BOOKMARK,
    MAX_NAME_LEN,
    "bookmark name"
);

fn check_pool_name(s: &str) -> Result<(), NameError> {
    check_len(s, MAX_NAME_LEN)?;
    check_pool(s)
}

impl DatasetName {
    /// The pool this dataset lives in.
    pub fn pool(&self) -> PoolName {
        let pool = self.0.split('/').next().unwrap_or(&self.0);
        PoolName(pool.to_owned())
    }

    /// The parent dataset, or `None` for a pool's root dataset.
    pub fn parent(&self) -> Option<DatasetName> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| DatasetName(parent.to_owned()))
    }

    /// `self/child`; the child may itself contain `/`.
    pub fn join(&self, child: &str) -> Result<DatasetName, NameError> {
        format!("{}/{child}", self.0).parse()
    }

    /// Whether `other` is this dataset or lies below it.
    pub fn contains(&self, other: &DatasetName) -> bool {
        other.0 == self.0
            || (other.0.starts_with(&self.0) && other.0.as_bytes().get(self.0.len()) == Some(&b'/'))
    }

    /// How deep below the pool this dataset is (the pool's root dataset is 0).
    pub fn depth(&self) -> usize {
        self.0.matches('/').count()
    }

    /// `self@short`.
    pub fn snapshot(&self, short: &SnapshotShortName) -> Result<SnapshotName, NameError> {
        SnapshotName::new(self, short)
    }

    /// `self#short`.
    pub fn bookmark(&self, short: &SnapshotShortName) -> Result<BookmarkName, NameError> {
        format!("{}#{}", self.0, short.0).parse()
    }
}

impl From<PoolName> for DatasetName {
    fn from(pool: PoolName) -> Self {
        DatasetName(pool.0)
    }
}

/// Shared accessors of the `dataset<sep>short` names.
macro_rules! qualified_accessors {
    ($name:ident, $sep:literal) => {
        impl $name {
            pub fn dataset(&self) -> DatasetName {
                let (dataset, _) = self.0.split_once($sep).unwrap_or((&self.0, ""));
                DatasetName(dataset.to_owned())
            }

            pub fn short(&self) -> SnapshotShortName {
                let (_, short) = self.0.split_once($sep).unwrap_or(("", &self.0));
                SnapshotShortName(short.to_owned())
            }
        }
    };
}
qualified_accessors!(SnapshotName, '@');
qualified_accessors!(BookmarkName, '#');

impl SnapshotName {
    pub fn new(dataset: &DatasetName, short: &SnapshotShortName) -> Result<Self, NameError> {
        format!("{}@{}", dataset.0, short.0).parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex::Regex;

    fn schema_accepts(pattern: &str, max: usize, s: &str) -> bool {
        !s.is_empty()
            && s.chars().count() <= max
            && Regex::new(pattern).expect("pattern compiles").is_match(s)
    }

    /// Names OpenZFS or Tidepool accept, and names either must refuse.
    const VALID_DATASETS: &[&str] = &[
        "tank",
        "tank/a",
        "tank/apps/db",
        "Tank_2/x.y/z:w-1",
        "t/_hidden/0lead",
        "a/b/c/d/e/f/g",
        "tank/a..b",
    ];
    const INVALID_DATASETS: &[&str] = &[
        "",
        "/tank",
        "tank/",
        "tank//a",
        "tank/../etc",
        "tank/.",
        "tank/./a",
        "tank/.zfs",
        "tank/-rf",
        "-tank",
        "1tank",
        "_tank",
        "tank/a b",
        "tank/a\tb",
        "tank/a\nb",
        "tank/a;rm -rf /",
        "tank/$(reboot)",
        "tank/`id`",
        "tank/a|b",
        "tank/a&b",
        "tank/a>b",
        "tank/a*",
        "tank/a?",
        "tank/a'b",
        "tank/a\"b",
        "tank/a\\b",
        "tank/a@snap",
        "tank/a#mark",
        "tank/a%b",
        "tank/é",
        "tank/a,b",
    ];

    #[test]
    fn dataset_corpus_parser_and_pattern_agree() {
        for s in VALID_DATASETS {
            assert!(s.parse::<DatasetName>().is_ok(), "parser refused {s:?}");
            assert!(
                schema_accepts(DatasetName::PATTERN, DatasetName::MAX_LEN, s),
                "pattern refused {s:?}"
            );
        }
        for s in INVALID_DATASETS {
            assert!(s.parse::<DatasetName>().is_err(), "parser accepted {s:?}");
            assert!(
                !schema_accepts(DatasetName::PATTERN, DatasetName::MAX_LEN, s),
                "pattern accepted {s:?}"
            );
        }
    }

    #[test]
    fn length_limits() {
        let ok = format!("tank/{}", "a".repeat(MAX_NAME_LEN - 5));
        assert_eq!(ok.len(), MAX_NAME_LEN);
        assert!(ok.parse::<DatasetName>().is_ok());
        let long = format!("{ok}b");
        assert_eq!(
            long.parse::<DatasetName>(),
            Err(NameError::TooLong {
                len: MAX_NAME_LEN + 1,
                max: MAX_NAME_LEN
            })
        );
        assert!(!schema_accepts(
            DatasetName::PATTERN,
            DatasetName::MAX_LEN,
            &long
        ));

        let snap = format!("tank/{}@s", "a".repeat(MAX_NAME_LEN - 7));
        assert!(snap.parse::<SnapshotName>().is_ok());
        assert!(format!("{snap}x").parse::<SnapshotName>().is_err());
        assert!(
            "a".repeat(MAX_SHORT_NAME_LEN)
                .parse::<SnapshotShortName>()
                .is_ok()
        );
        assert!(
            "a".repeat(MAX_SHORT_NAME_LEN + 1)
                .parse::<SnapshotShortName>()
                .is_err()
        );
    }

    #[test]
    fn snapshot_and_bookmark_names() {
        let s: SnapshotName = "tank/a@tidepool_20261122T093000Z_hourly".parse().unwrap();
        assert_eq!(s.dataset().as_str(), "tank/a");
        assert_eq!(s.short().as_str(), "tidepool_20261122T093000Z_hourly");
        let b: BookmarkName = "tank/a#tp-target1".parse().unwrap();
        assert_eq!(b.dataset().as_str(), "tank/a");
        for bad in [
            "tank/a",
            "tank/a@",
            "@x",
            "tank/a@b@c",
            "tank/a@-x",
            "tank/a@.x",
            "tank/a@x y",
            "tank/a#x",
            "tank@a/b",
        ] {
            assert!(bad.parse::<SnapshotName>().is_err(), "{bad:?}");
            assert!(
                !schema_accepts(SnapshotName::PATTERN, SnapshotName::MAX_LEN, bad),
                "{bad:?}"
            );
        }
        for bad in ["tank/a@x", "tank/a#", "tank/a#x#y"] {
            assert!(bad.parse::<BookmarkName>().is_err(), "{bad:?}");
            assert!(
                !schema_accepts(BookmarkName::PATTERN, BookmarkName::MAX_LEN, bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn pool_names() {
        for ok in ["tank", "t", "Pool-1.a:b_c"] {
            assert!(ok.parse::<PoolName>().is_ok());
            assert!(schema_accepts(PoolName::PATTERN, PoolName::MAX_LEN, ok));
        }
        for bad in ["", "1tank", "_t", "tank/a", "ta nk", "-t"] {
            assert!(bad.parse::<PoolName>().is_err(), "{bad:?}");
            assert!(!schema_accepts(PoolName::PATTERN, PoolName::MAX_LEN, bad));
        }
    }

    #[test]
    fn dataset_helpers() {
        let d: DatasetName = "tank/apps/db".parse().unwrap();
        assert_eq!(d.pool().as_str(), "tank");
        assert_eq!(d.parent().unwrap().as_str(), "tank/apps");
        assert_eq!(d.depth(), 2);
        let apps: DatasetName = "tank/apps".parse().unwrap();
        assert!(apps.contains(&d));
        assert!(apps.contains(&apps));
        assert!(!apps.contains(&"tank/appsX".parse().unwrap()));
        assert!(!d.contains(&apps));
        assert!(apps.join("x/y").is_ok());
        assert!(apps.join("../x").is_err());
        let short: SnapshotShortName = "s1".parse().unwrap();
        assert_eq!(d.snapshot(&short).unwrap().as_str(), "tank/apps/db@s1");
        assert_eq!(d.bookmark(&short).unwrap().as_str(), "tank/apps/db#s1");
    }

    #[test]
    fn serde_refuses_bad_names_with_a_clear_message() {
        let err = serde_json::from_str::<DatasetName>("\"tank/a;b\"").unwrap_err();
        assert!(err.to_string().contains("invalid dataset name"), "{err}");
        assert!(err.to_string().contains("';'"), "{err}");
    }

    proptest! {
        // Random strings over an alphabet rich in the characters that matter: the parser
        // and the schema pattern must give the same verdict on every one.
        #[test]
        fn parser_and_pattern_agree_on_random_strings(s in "[a-zA-Z0-9_.:/@# ;$-]{0,24}") {
            prop_assert_eq!(s.parse::<DatasetName>().is_ok(), schema_accepts(DatasetName::PATTERN, DatasetName::MAX_LEN, &s));
            prop_assert_eq!(s.parse::<PoolName>().is_ok(), schema_accepts(PoolName::PATTERN, PoolName::MAX_LEN, &s));
            prop_assert_eq!(s.parse::<SnapshotName>().is_ok(), schema_accepts(SnapshotName::PATTERN, SnapshotName::MAX_LEN, &s));
            prop_assert_eq!(s.parse::<BookmarkName>().is_ok(), schema_accepts(BookmarkName::PATTERN, BookmarkName::MAX_LEN, &s));
            prop_assert_eq!(s.parse::<SnapshotShortName>().is_ok(), schema_accepts(SnapshotShortName::PATTERN, SnapshotShortName::MAX_LEN, &s));
        }
    }
}
