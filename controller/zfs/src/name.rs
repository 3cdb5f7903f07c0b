//! Names as zfs prints them, and the small validated vocabularies (property names and
//! values, hold tags, resume tokens) that Tidepool passes to zfs besides dataset names.
//!
//! What Tidepool *asks* zfs to do is always named with the strict types of
//! [`tidepool_api::names`]. What zfs *prints* may be any name OpenZFS allows (spaces, `:`,
//! `.`, leading digits...), so listings keep it as a [`ZfsObjectName`] and convert to the
//! strict types only where Tidepool acts on a name, with a fallible conversion.

use std::fmt;
use std::str::FromStr;

use tidepool_api::names::{
    BookmarkName, DatasetName, NameError, PoolName, SnapshotName, SnapshotShortName,
};

/// A dataset, snapshot or bookmark name exactly as zfs printed it. Never validated beyond
/// "not empty, no tab, no newline" (the listing format guarantees those); may contain
/// anything else OpenZFS allows.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZfsObjectName(Box<str>);

impl ZfsObjectName {
    pub fn new(s: impl Into<Box<str>>) -> ZfsObjectName {
        ZfsObjectName(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The dataset part: everything before `@` or `#`.
    pub fn dataset_part(&self) -> &str {
        match self.0.find(['@', '#']) {
            Some(i) => &self.0[..i],
            None => &self.0,
        }
    }

    /// The part after `@` or `#`, for snapshots and bookmarks.
    pub fn short_part(&self) -> Option<&str> {
        self.0.find(['@', '#']).map(|i| &self.0[i + 1..])
    }

    /// The pool: the first path component.
    pub fn pool_part(&self) -> &str {
        let d = self.dataset_part();
        d.split('/').next().unwrap_or(d)
    }

    pub fn is_snapshot(&self) -> bool {
        self.0.contains('@')
    }

    pub fn is_bookmark(&self) -> bool {
        self.0.contains('#')
    }

    pub fn to_dataset_name(&self) -> Result<DatasetName, NameError> {
        self.0.parse()
    }

    pub fn to_snapshot_name(&self) -> Result<SnapshotName, NameError> {
        self.0.parse()
    }

    pub fn to_bookmark_name(&self) -> Result<BookmarkName, NameError> {
        self.0.parse()
    }

    pub fn to_pool_name(&self) -> Result<PoolName, NameError> {
        self.pool_part().parse()
    }

    pub fn to_short_name(&self) -> Option<Result<SnapshotShortName, NameError>> {
        self.short_part().map(str::parse)
    }
}

impl fmt::Display for ZfsObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ZfsObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for ZfsObjectName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ZfsObjectName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for ZfsObjectName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

macro_rules! from_typed {
    ($($t:ty),*) => {$(
        impl From<&$t> for ZfsObjectName {
            fn from(n: &$t) -> ZfsObjectName {
                ZfsObjectName::new(n.as_str())
            }
        }
    )*};
}
from_typed!(DatasetName, SnapshotName, BookmarkName, PoolName);

/// Anything Tidepool may name as the target of `zfs get`/`set`/`inherit`/`holds`: the
/// strict typed names (never a raw string from a listing).
pub trait ZfsTarget {
    fn zfs_arg(&self) -> &str;
}

macro_rules! target {
    ($($t:ty),*) => {$(
        impl ZfsTarget for $t {
            fn zfs_arg(&self) -> &str {
                self.as_str()
            }
        }
    )*};
}
target!(DatasetName, SnapshotName, BookmarkName, PoolName);

impl<T: ZfsTarget + ?Sized> ZfsTarget for &T {
    fn zfs_arg(&self) -> &str {
        (**self).zfs_arg()
    }
}

/// Why a property name, value, hold tag or resume token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct ValueError {
    pub what: &'static str,
    pub value: String,
    pub reason: &'static str,
}

fn value_error(what: &'static str, value: &str, reason: &'static str) -> ValueError {
    ValueError {
        what,
        value: value.to_owned(),
        reason,
    }
}

/// The checks every short word passed to zfs as its own argument shares: not empty, at
/// most 255 bytes, and not starting with `-` (it would read as an option).
fn check_argv_word(what: &'static str, s: &str) -> Result<(), ValueError> {
    if s.is_empty() {
        return Err(value_error(what, s, "empty"));
    }
    if s.len() > 255 {
        return Err(value_error(what, s, "longer than 255 bytes"));
    }
    if s.starts_with('-') {
        return Err(value_error(what, s, "starts with '-'"));
    }
    Ok(())
}

/// A ZFS property name: a native one (`compression`, `receive_resume_token`) or a user
/// property (`tidepool.dev:owner`, which has a `:`). Lower-case letters, digits and
/// `: . _ -`, not starting with `-`, at most 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PropertyName(String);

impl PropertyName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// User properties contain a `:` (OpenZFS's rule).
    pub fn is_user(&self) -> bool {
        self.0.contains(':')
    }
}

impl FromStr for PropertyName {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<PropertyName, ValueError> {
        const WHAT: &str = "property name";
        check_argv_word(WHAT, s)?;
        if !s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b':' | b'.' | b'_' | b'-')
        }) {
            return Err(value_error(
                WHAT,
                s,
                "only a-z 0-9 : . _ - are allowed (user properties are lower case)",
            ));
        }
        Ok(PropertyName(s.to_owned()))
    }
}

impl fmt::Display for PropertyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A property value Tidepool sets. No tab, newline or NUL (a value with those would break
/// every `-H` listing that shows it), at most 8191 bytes (OpenZFS's user-property limit).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PropertyValue(String);

impl PropertyValue {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PropertyValue {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<PropertyValue, ValueError> {
        const WHAT: &str = "property value";
        if s.len() > 8191 {
            return Err(value_error(WHAT, s, "longer than 8191 bytes"));
        }
        if s.contains(['\t', '\n', '\r', '\0']) {
            return Err(value_error(WHAT, s, "contains a tab, newline or NUL"));
        }
        Ok(PropertyValue(s.to_owned()))
    }
}

impl fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user hold tag (`zfs hold <tag> ...`). Printable ASCII without spaces is all Tidepool
/// uses (`tidepool:target-1`), not starting with `-`, at most 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HoldTag(String);

impl HoldTag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HoldTag {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<HoldTag, ValueError> {
        const WHAT: &str = "hold tag";
        check_argv_word(WHAT, s)?;
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(value_error(WHAT, s, "only printable ASCII without spaces"));
        }
        Ok(HoldTag(s.to_owned()))
    }
}

impl fmt::Display for HoldTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A `receive_resume_token` as zfs prints it (`1-<hex>-<hex>-<hex...>`): ASCII letters,
/// digits and `-`, not starting with `-`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResumeToken(String);

impl ResumeToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ResumeToken {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<ResumeToken, ValueError> {
        const WHAT: &str = "resume token";
        if s.is_empty() || s == "-" {
            return Err(value_error(WHAT, s, "empty"));
        }
        if s.len() > 64 * 1024 {
            return Err(value_error(WHAT, s, "longer than 64 KiB"));
        }
        if s.starts_with('-') || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(value_error(WHAT, s, "only A-Z a-z 0-9 and '-' are allowed"));
        }
        Ok(ResumeToken(s.to_owned()))
    }
}

impl fmt::Display for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.0;
        if s.len() > 40 {
            write!(f, "ResumeToken({}…{} bytes)", &s[..32], s.len())
        } else {
            write!(f, "ResumeToken({s})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_names_with_unusual_characters() {
        let n = ZfsObjectName::new("my pool/data set.1:x@snap shot-2");
        assert_eq!(n.dataset_part(), "my pool/data set.1:x");
        assert_eq!(n.short_part(), Some("snap shot-2"));
        assert_eq!(n.pool_part(), "my pool");
        assert!(n.is_snapshot());
        assert!(n.to_snapshot_name().is_err());
        assert!(n.to_dataset_name().is_err());
        let b = ZfsObjectName::new("tank/a#mark");
        assert!(b.is_bookmark());
        assert_eq!(b.to_bookmark_name().unwrap().as_str(), "tank/a#mark");
        assert_eq!(
            ZfsObjectName::new("tank/a@s")
                .to_short_name()
                .unwrap()
                .unwrap()
                .as_str(),
            "s"
        );
        assert_eq!(ZfsObjectName::new("tank").short_part(), None);
    }

    #[test]
    fn property_names() {
        assert!(
            "tidepool.dev:owner"
                .parse::<PropertyName>()
                .unwrap()
                .is_user()
        );
        assert!(!"compression".parse::<PropertyName>().unwrap().is_user());
        for bad in ["", "-o", "Owner:x", "a b", "a=b", "a;b"] {
            assert!(bad.parse::<PropertyName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn property_values_tags_tokens() {
        assert!("ns/name with space".parse::<PropertyValue>().is_ok());
        assert!("a\tb".parse::<PropertyValue>().is_err());
        assert!("a\nb".parse::<PropertyValue>().is_err());
        assert!("tidepool:target-1".parse::<HoldTag>().is_ok());
        assert!("-x".parse::<HoldTag>().is_err());
        assert!("a b".parse::<HoldTag>().is_err());
        assert!("1-e604ea4bf-e0-789c63".parse::<ResumeToken>().is_ok());
        assert!("-".parse::<ResumeToken>().is_err());
        assert!("1-abc;rm".parse::<ResumeToken>().is_err());
    }
}
