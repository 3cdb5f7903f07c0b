//! The small validated vocabularies Tidepool passes to zfs besides dataset names:
//! property names and values, hold tags, resume tokens. They live here, below every other
//! layer, so the CRD validation, the planner, the wire types and the zfs command builders
//! all use one type per concept.

use std::fmt;
use std::str::FromStr;

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
