//! Names as zfs prints them. (The small validated vocabularies passed to zfs besides names,
//! property names and values, hold tags and resume tokens, are in [`tidepool_api::values`].)
//!
//! What Tidepool *asks* zfs to do is always named with the strict types of
//! [`tidepool_api::names`]. What zfs *prints* may be any name OpenZFS allows (spaces, `:`,
//! `.`, leading digits...), so listings keep it as a [`ZfsObjectName`] and convert to the
//! strict types only where Tidepool acts on a name, with a fallible conversion.

use std::fmt;

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
}
