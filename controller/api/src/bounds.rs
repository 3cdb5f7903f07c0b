//! Schema bounds for status values the API server checks more loosely than typed decoding.
//!
//! kube-rs decodes a whole list at once, so one stored value that a field's Rust type
//! refuses breaks `Api::list` and every watch of the kind for everyone. Probed on the real
//! API server (kube-apiserver 1.34, `tests/tests/lenient_decoding/status.rs`): its
//! `format: date-time` check stores `2026-01-01T00:00:00.1234567890Z`,
//! `2026-01-01T00:00:00+99:00` and `9999-12-31T23:59:59Z`, each of which k8s-openapi's
//! `Time` (jiff) refuses, so one such write broke every typed list of the kind. These
//! fields are written by Tidepool's own controller and agents, so the schema tightens them
//! to what `Time` reads instead of decoding them leniently: such a write is refused with
//! 422 naming the field.
//!
//! An object stored before the patterns may still hold such a time (the API server does not
//! re-check stored objects when a CRD tightens), so the status time fields also decode
//! leniently: a time `Time` cannot read is absent when optional ([`lenient_optional_time`])
//! and the Unix epoch when required ([`lenient_time`]). Writers never produce one, and the
//! next status write replaces it.
//!
//! Integers: the API server itself refuses a value outside int64 for `type: integer`
//! (2^63, `u64::MAX`, `1e19`, `1.5` and `"5"` were all refused), so no stored int64 fails
//! decoding; `i32` fields carry their own range (`consecutiveFailures`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::{Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};

/// What every date-time field in status admits: RFC 3339 with an upper-case `T`, at most 9
/// fraction digits and an offset within a day, each part range-checked. It is a subset of
/// what jiff's `Timestamp` parses; the API server's own `date-time` check, applied as well,
/// refuses days a month does not have (`02-30`), which a pattern cannot say compactly.
///
/// Years stop at 9998: jiff's `Timestamp` ends on 9999-12-30, so a time late in year 9999
/// (or early in it with a negative offset) does not decode. k8s-openapi's `Time` writes
/// `YYYY-MM-DDTHH:MM:SSZ`, which always matches.
pub const TIME_PATTERN: &str = concat!(
    "^([0-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])",
    "-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
    "T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?",
    "(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$",
);

/// The largest value an `int64` status field admits (counts, bytes, generations); the
/// smallest is 0. Not needed for decoding (see above), but it says what the values mean:
/// none is ever negative, and 10^18 (an exabyte of bytes) is above what any pool or counter
/// reaches. It is exactly representable as a float, which is how the schema stores bounds.
pub const MAX_INT64: i64 = 1_000_000_000_000_000_000;

/// Schema of a required status time (`Time`).
pub fn time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "date-time",
        "pattern": TIME_PATTERN,
    })
}

/// Schema of an optional status time (`Option<Time>`); `null` reads as absent.
pub fn optional_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "date-time",
        "pattern": TIME_PATTERN,
        "nullable": true,
    })
}

/// `deserialize_with` for an `Option<Time>` status field: a string `Time` cannot read is
/// absent, so one object stored before [`TIME_PATTERN`] cannot break a list.
pub fn lenient_optional_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Time>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.and_then(|text| read(&text)))
}

/// `deserialize_with` for a required `Time` status field: a string `Time` cannot read is
/// the Unix epoch (unmistakably not a time Tidepool wrote).
pub fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
    let text = String::deserialize(d)?;
    Ok(read(&text).unwrap_or(Time(jiff::Timestamp::UNIX_EPOCH)))
}

/// What `Time`'s own decoding reads (it parses a jiff `Timestamp`).
fn read(text: &str) -> Option<Time> {
    text.parse::<jiff::Timestamp>().ok().map(Time)
}

#[cfg(test)]
mod tests;
