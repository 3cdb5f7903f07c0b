//! The small validated vocabularies Tidepool passes to zfs besides dataset names:
//! property names and values, hold tags, resume tokens. They live here, below every other
//! layer, so the CRD validation, the planner, the wire types and the zfs command builders
//! all use one type per concept.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
/// `: . _ -`, not starting with `-`, at most 255 bytes (OpenZFS's `ZAP_MAXNAMELEN` less
/// the NUL). Its JSON schema ([`PropertyName::PATTERN`], [`PropertyName::MAX_LEN`]) accepts
/// exactly the same strings; a test proves it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PropertyName(String);

impl PropertyName {
    /// The schema pattern of the same rule: no leading `-`, then the allowed characters.
    pub const PATTERN: &str = "^[a-z0-9_.:][a-z0-9_.:-]*$";
    pub const MAX_LEN: usize = 255;

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

/// A property value Tidepool sets. No control characters (a tab or newline would break
/// every `-H` listing that shows it; CR, ESC and the like would garble logs and terminals
/// that print it), at most 8191 bytes (OpenZFS's user-property limit).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PropertyValue(String);

impl PropertyValue {
    /// The schema pattern of the same rule (the control characters are Unicode's `Cc`:
    /// C0, DEL and C1). The schema's length limit is the field's own: it counts
    /// characters, this type counts bytes.
    pub const PATTERN: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*$";
    pub const MAX_BYTES: usize = 8191;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PropertyValue {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<PropertyValue, ValueError> {
        const WHAT: &str = "property value";
        if s.len() > Self::MAX_BYTES {
            return Err(value_error(WHAT, s, "longer than 8191 bytes"));
        }
        if s.chars().any(char::is_control) {
            return Err(value_error(
                WHAT,
                s,
                "contains a control character (tab, newline, CR, NUL, ...)",
            ));
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

/// Every hold tag Tidepool places starts with this: a hold with another prefix is never
/// Tidepool's, and one with it is some Tidepool policy's.
pub const HOLD_TAG_PREFIX: &str = "tidepool:";

impl HoldTag {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `tidepool:<16 hex digits>`: a tag for a name too long to spell out. Valid by
    /// construction (printable ASCII, 25 bytes), so it needs no parse that could fail.
    pub fn tidepool_hashed(hash: u64) -> HoldTag {
        HoldTag(format!("{HOLD_TAG_PREFIX}{hash:016x}"))
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

/// Serde as the plain string, checked by `FromStr` on the way in: a value decoded from the
/// wire is as valid as one parsed here.
macro_rules! serde_via_str {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
serde_via_str!(PropertyName, PropertyValue, HoldTag, ResumeToken);

impl JsonSchema for PropertyName {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("PropertyName")
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": PropertyName::MAX_LEN,
            "pattern": PropertyName::PATTERN,
        })
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
        let hashed = HoldTag::tidepool_hashed(u64::MAX);
        assert_eq!(hashed.as_str().parse::<HoldTag>().unwrap(), hashed);
        assert!("-x".parse::<HoldTag>().is_err());
        assert!("a b".parse::<HoldTag>().is_err());
        assert!("1-e604ea4bf-e0-789c63".parse::<ResumeToken>().is_ok());
        assert!("-".parse::<ResumeToken>().is_err());
        assert!("1-abc;rm".parse::<ResumeToken>().is_err());
    }

    /// What the API server does with a string field: `minLength`/`maxLength` count
    /// characters, `pattern` is an RE2 regex (the `regex` crate has the same syntax for
    /// these patterns).
    fn schema_accepts(pattern: &str, min: usize, max: usize, s: &str) -> bool {
        let chars = s.chars().count();
        chars >= min
            && chars <= max
            && regex::Regex::new(pattern)
                .expect("pattern compiles")
                .is_match(s)
    }

    fn name_schema(s: &str) -> bool {
        schema_accepts(PropertyName::PATTERN, 1, PropertyName::MAX_LEN, s)
    }

    /// The schema of a policy's `overrideProperties[].value`, from the generated CRD.
    fn value_schema(s: &str) -> bool {
        schema_accepts(
            PropertyValue::PATTERN,
            1,
            crate::receive_property::MAX_VALUE_CHARS,
            s,
        )
    }

    /// Whether the Rust side accepts a policy's value: [`PropertyValue`] (what the zfs
    /// layer takes) within the receive allowlist's length.
    fn value_parser(s: &str) -> bool {
        crate::ReceiveProperty::new("com.example:x", s).is_ok()
    }

    #[test]
    fn property_name_corpus_parser_and_schema_agree() {
        let long = "a".repeat(255);
        let too_long = "a".repeat(256);
        for ok in [
            "compression",
            "tidepool.dev:owner",
            "com.example:x-y_z.1",
            "0day:x",
            ":x",
            "_a",
            ".a",
            long.as_str(),
        ] {
            assert!(ok.parse::<PropertyName>().is_ok(), "parser refused {ok:?}");
            assert!(name_schema(ok), "schema refused {ok:?}");
        }
        for bad in [
            "",
            "-x",
            "Compression",
            "a b",
            "a=b",
            "a;b",
            "a\tb",
            "é:x",
            "a+b",
            too_long.as_str(),
        ] {
            assert!(bad.parse::<PropertyName>().is_err(), "parser took {bad:?}");
            assert!(!name_schema(bad), "schema took {bad:?}");
        }
    }

    #[test]
    fn property_value_corpus_parser_and_schema_agree() {
        let full = "x".repeat(1024);
        let wide = "é".repeat(1024);
        for ok in [
            "on",
            "a b",
            "ns/name",
            "ünïcode ✓",
            "\u{a0}",
            full.as_str(),
            wide.as_str(),
        ] {
            assert!(value_parser(ok), "parser refused {ok:?}");
            assert!(value_schema(ok), "schema refused {ok:?}");
        }
        let over = "x".repeat(1025);
        for bad in [
            "",
            "a\tb",
            "a\nb",
            "a\rb",
            "a\0b",
            "\u{1b}[31m",
            "\u{7f}",
            "\u{85}",
            "\u{9f}",
            over.as_str(),
        ] {
            assert!(!value_parser(bad), "parser took {bad:?}");
            assert!(!value_schema(bad), "schema took {bad:?}");
        }
    }

    proptest::proptest! {
        // An alphabet rich in what matters: the allowed characters, upper case, `-` at the
        // start, separators and shell characters. Long strings cross the length limit.
        #[test]
        fn property_name_parser_and_schema_agree(s in "[a-zA-Z0-9_.:=; +é-]{0,12}|[a-z:-]{250,260}") {
            proptest::prop_assert_eq!(s.parse::<PropertyName>().is_ok(), name_schema(&s));
        }

        // Printable text, every C0/C1 control character and DEL, and multi-byte characters;
        // some strings cross the 1024-character limit.
        #[test]
        fn property_value_parser_and_schema_agree(
            s in "[ -~é✓\u{0}-\u{1f}\u{7f}-\u{a0}]{0,16}|[a-zé]{1020,1030}"
        ) {
            proptest::prop_assert_eq!(value_parser(&s), value_schema(&s));
            // What the schema admits, the zfs layer's type takes as it is.
            if value_schema(&s) {
                proptest::prop_assert!(s.parse::<PropertyValue>().is_ok());
            }
        }
    }
}
