//! Which Tidepool object owns a snapshot: the value of the `tidepool.dev:owner` user
//! property ([`crate::OWNER_PROPERTY`]).
//!
//! The format is `<Kind>/<namespace>/<name>`, for example
//! `SnapshotSchedule/default/db-hourly` or `ReplicationPolicy/default/offsite`:
//! - `Kind` is `SnapshotSchedule` or `ReplicationPolicy`, so a schedule and a policy with the
//!   same namespace and name never claim each other's snapshots;
//! - `namespace` is a Kubernetes namespace name (an RFC 1123 label: at most 63 bytes of
//!   `a-z 0-9 -`, starting and ending with a letter or digit);
//! - `name` is a Kubernetes object name (an RFC 1123 subdomain: at most 253 bytes of
//!   dot-separated labels).
//!
//! Nothing else is an owner: a value in any other format (including the `<namespace>/<name>`
//! of earlier drafts, of which no data exists) does not parse, and a snapshot carrying it
//! is simply not Tidepool's. The value counts only where Tidepool set it locally on the
//! snapshot; reading the property's source is the inventory builder's job (DESIGN.md,
//! "Ownership is a claim only where Tidepool set it").

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The kinds of object that own snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OwnerKind {
    /// Snapshots a schedule took.
    SnapshotSchedule,
    /// Snapshots a replication received on its target.
    ReplicationPolicy,
}

impl OwnerKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            OwnerKind::SnapshotSchedule => "SnapshotSchedule",
            OwnerKind::ReplicationPolicy => "ReplicationPolicy",
        }
    }

    fn parse(s: &str) -> Option<OwnerKind> {
        [OwnerKind::SnapshotSchedule, OwnerKind::ReplicationPolicy]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

impl fmt::Display for OwnerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a text is not an owner value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    #[error("owner {value:?} is not <Kind>/<namespace>/<name>")]
    Shape { value: String },
    #[error("owner kind {kind:?} is neither SnapshotSchedule nor ReplicationPolicy")]
    Kind { kind: String },
    #[error("owner namespace {namespace:?} is not a Kubernetes namespace name: {reason}")]
    Namespace {
        namespace: String,
        reason: &'static str,
    },
    #[error("owner name {name:?} is not a Kubernetes object name: {reason}")]
    Name { name: String, reason: &'static str },
}

/// The owner of a snapshot: kind, namespace and name of one Tidepool object.
///
/// Held as its validated text in an `Arc<str>`: an inventory of a million snapshots shares
/// one allocation per owner, a clone is a reference-count increment, and comparing two
/// clones of one value is a pointer comparison (the standard library's `Arc` equality
/// short-cuts on identity for `Eq` types).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner(Arc<str>);

impl Owner {
    /// The owner value of an object. Fails when `namespace` or `name` could not be the
    /// namespace and name of a Kubernetes object.
    pub fn new(kind: OwnerKind, namespace: &str, name: &str) -> Result<Owner, OwnerError> {
        check_namespace(namespace)?;
        check_name(name)?;
        Ok(Owner(Arc::from(format!("{kind}/{namespace}/{name}"))))
    }

    /// The full value, `<Kind>/<namespace>/<name>`: what is written to the property.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn kind(&self) -> OwnerKind {
        // Construction guarantees one of the two prefixes.
        if self.0.starts_with(OwnerKind::SnapshotSchedule.as_str()) {
            OwnerKind::SnapshotSchedule
        } else {
            OwnerKind::ReplicationPolicy
        }
    }

    pub fn namespace(&self) -> &str {
        self.parts().0
    }

    pub fn name(&self) -> &str {
        self.parts().1
    }

    /// Namespace and name. Construction guarantees exactly two `/`, and neither part can
    /// contain one; the fallbacks are never taken.
    fn parts(&self) -> (&str, &str) {
        let rest = self.0.split_once('/').map_or("", |(_, rest)| rest);
        rest.split_once('/').unwrap_or((rest, ""))
    }
}

impl FromStr for Owner {
    type Err = OwnerError;
    fn from_str(s: &str) -> Result<Owner, OwnerError> {
        let shape = || OwnerError::Shape {
            value: s.to_owned(),
        };
        let (kind, rest) = s.split_once('/').ok_or_else(shape)?;
        let (namespace, name) = rest.split_once('/').ok_or_else(shape)?;
        let kind = OwnerKind::parse(kind).ok_or_else(|| OwnerError::Kind {
            kind: kind.to_owned(),
        })?;
        // `name` containing a further '/' is refused by its own check.
        Owner::new(kind, namespace, name)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Owner({:?})", &*self.0)
    }
}

impl Serialize for Owner {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Owner {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Owner, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Deserialize an optional owner leniently: a string that is not an owner value reads as
/// `None` ("not Tidepool's", the safe side), so one odd value, or a kind a newer peer
/// knows, never fails a whole inventory. Use with `#[serde(default, deserialize_with)]`.
pub fn deserialize_lenient<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Owner>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    Ok(text.and_then(|t| t.parse().ok()))
}

/// One RFC 1123 label: `a-z 0-9 -`, starting and ending with a letter or digit.
fn label_problem(label: &str) -> Option<&'static str> {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = label.as_bytes();
    match (bytes.first(), bytes.last()) {
        (None, _) | (_, None) => Some("empty"),
        _ if !bytes.iter().all(|&b| alnum(b) || b == b'-') => {
            Some("only a-z, 0-9 and '-' are allowed")
        }
        (Some(&first), Some(&last)) if !alnum(first) || !alnum(last) => {
            Some("must start and end with a letter or digit")
        }
        _ => None,
    }
}

fn check_namespace(namespace: &str) -> Result<(), OwnerError> {
    let reason = if namespace.len() > 63 {
        Some("longer than 63 bytes")
    } else {
        label_problem(namespace)
    };
    match reason {
        Some(reason) => Err(OwnerError::Namespace {
            namespace: namespace.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn check_name(name: &str) -> Result<(), OwnerError> {
    let reason = if name.len() > 253 {
        Some("longer than 253 bytes")
    } else {
        name.split('.').find_map(label_problem)
    };
    match reason {
        Some(reason) => Err(OwnerError::Name {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
