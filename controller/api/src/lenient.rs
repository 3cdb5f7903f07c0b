//! `Lenient<T>`: a value as the API server stored it, together with the result of parsing
//! it as `T`.
//!
//! kube-rs decodes a whole list at once: one object whose field fails typed decoding makes
//! `Api::list` and every watch over the kind fail, for every tenant. So a field whose Rust
//! parser is stricter than its schema (what the API server admits) is decoded leniently:
//! the text always decodes, the parse result travels with it, and the code that acts calls
//! the spec's `validate()`, which turns a parse failure into a typed error naming the field
//! (reported as `Ready=False`). Fields whose parser and schema agree exactly (a test proves
//! each) keep their validated type at the wire.
//!
//! The wire form (serde) and the schema are `T`'s, so the CRD does not change.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The text of a value and the result of parsing it as `T`.
pub struct Lenient<T: FromStr> {
    text: String,
    parsed: Result<T, T::Err>,
}

impl<T: FromStr> Lenient<T> {
    /// Parses `text`, keeping it whatever the outcome.
    pub fn parse(text: impl Into<String>) -> Self {
        let text = text.into();
        let parsed = text.parse();
        Self { text, parsed }
    }

    /// The text as stored.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed value, or why the text does not parse.
    pub fn get(&self) -> Result<&T, &T::Err> {
        self.parsed.as_ref()
    }
}

impl<T: FromStr + fmt::Display> From<T> for Lenient<T> {
    fn from(value: T) -> Self {
        Self {
            text: value.to_string(),
            parsed: Ok(value),
        }
    }
}

impl<T: FromStr + Clone> Clone for Lenient<T>
where
    T::Err: Clone,
{
    fn clone(&self) -> Self {
        Self {
            text: self.text.clone(),
            parsed: self.parsed.clone(),
        }
    }
}

impl<T: FromStr + fmt::Debug> fmt::Debug for Lenient<T>
where
    T::Err: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lenient")
            .field("text", &self.text)
            .field("parsed", &self.parsed)
            .finish()
    }
}

/// Two values are equal when their texts are: the parse result is a function of the text.
impl<T: FromStr> PartialEq for Lenient<T> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<T: FromStr> Eq for Lenient<T> {}

impl<T: FromStr> fmt::Display for Lenient<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<T: FromStr> Serialize for Lenient<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Any string decodes; only a non-string fails, which the schema (`type: string`) never
/// admits.
impl<'de, T: FromStr> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::parse)
    }
}

impl<T: FromStr + JsonSchema> JsonSchema for Lenient<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::CronExpression;

    #[test]
    fn keeps_text_and_parse_result() {
        let bad: Lenient<CronExpression> = serde_json::from_str("\"5-1 * * * *\"").unwrap();
        assert_eq!(bad.as_str(), "5-1 * * * *");
        assert!(bad.get().is_err());
        assert_eq!(serde_json::to_string(&bad).unwrap(), "\"5-1 * * * *\"");
        let good: Lenient<CronExpression> = serde_json::from_str("\"@daily\"").unwrap();
        assert_eq!(good.get().unwrap().as_str(), "@daily");
        assert!(serde_json::from_str::<Lenient<CronExpression>>("5").is_err());
    }

    #[test]
    fn schema_is_the_inner_types() {
        let ours = schemars::schema_for!(Lenient<CronExpression>);
        let inner = schemars::schema_for!(CronExpression);
        assert_eq!(ours, inner);
    }
}
