//! `HumanDuration`: the duration strings of the API (`500ms`, `15m`, `1h30m`, `7d`, `2w`).
//!
//! Go's `time.Duration` format has no days or weeks and allows zero, fractions and signs,
//! none of which a schedule wants. Ours is a sequence of 1 to 6 parts, each a positive whole
//! number without leading zeros and a unit (`ms`, `s`, `m`, `h`, `d`, `w`). A day is 24 h
//! here; calendar-aware periods (DST) belong to cron schedules with a time zone.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// A positive duration written as `1h30m`, `500ms`, `7d`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HumanDuration {
    text: String,
    value: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {0:?}: expected 1 to 6 parts like 500ms, 30s, 15m, 1h30m, 7d, 2w, each a positive whole number without leading zeros"
)]
pub struct DurationError(String);

impl HumanDuration {
    pub const PATTERN: &'static str = "^([1-9][0-9]{0,8}(ms|s|m|h|d|w)){1,6}$";
    pub const MAX_LEN: usize = 66;

    pub fn as_std(&self) -> Duration {
        self.value
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A CEL expression (Kubernetes' regex and list libraries) for the milliseconds of the
    /// `HumanDuration` field at `path`. CEL's own `duration()` knows no days or weeks, so
    /// this sums the parts; the pattern has already bounded them (at most 6 parts below
    /// 10^9 weeks each: under 2^62 ms, so the sum cannot overflow CEL's int64).
    pub fn cel_millis(path: &str) -> String {
        let mut unit = String::from("604800000");
        // Longest suffix first: `ms` before `s` and `m`.
        for (suffix, ms) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            unit = format!("(p.endsWith('{suffix}') ? {ms} : {unit})");
        }
        format!("{path}.findAll('[0-9]+[a-z]+').map(p, int(p.find('[0-9]+')) * {unit}).sum()")
    }

    /// The shortest text for a whole number of milliseconds, e.g. `90s` → `1m30s`.
    pub fn from_std(value: Duration) -> Option<Self> {
        let mut ms = u64::try_from(value.as_millis()).ok()?;
        if ms == 0 {
            return None;
        }
        let mut text = String::new();
        for (unit, size) in UNITS.iter().rev() {
            let n = ms / size;
            if n > 0 {
                text.push_str(&format!("{n}{unit}"));
                ms %= size;
            }
        }
        text.parse().ok()
    }
}

/// Units and their size in milliseconds, smallest first.
const UNITS: [(&str, u64); 6] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 604_800_000),
];

impl FromStr for HumanDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, DurationError> {
        let err = || DurationError(s.to_owned());
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(err());
        }
        let mut rest = s;
        let mut total_ms: u64 = 0;
        let mut parts = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 9 || rest.starts_with('0') {
                return Err(err());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            // "ms" must be tried before "m".
            let (unit, size) = ["ms", "s", "m", "h", "d", "w"]
                .iter()
                .find(|u| rest.starts_with(**u))
                .and_then(|u| UNITS.iter().find(|(name, _)| name == u))
                .ok_or_else(err)?;
            rest = &rest[unit.len()..];
            total_ms = n
                .checked_mul(*size)
                .and_then(|ms| total_ms.checked_add(ms))
                .ok_or_else(err)?;
            parts += 1;
        }
        if parts > 6 {
            return Err(err());
        }
        Ok(Self {
            text: s.to_owned(),
            value: Duration::from_millis(total_ms),
        })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = DurationError;
    fn try_from(s: String) -> Result<Self, DurationError> {
        s.parse()
    }
}

impl From<HumanDuration> for String {
    fn from(v: HumanDuration) -> String {
        v.text
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("HumanDuration")
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": Self::MAX_LEN,
            "pattern": Self::PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex::Regex;

    fn pattern_accepts(s: &str) -> bool {
        s.len() <= HumanDuration::MAX_LEN
            && Regex::new(HumanDuration::PATTERN)
                .expect("pattern compiles")
                .is_match(s)
    }

    #[test]
    fn parses_units() {
        let ms = |s: &str| s.parse::<HumanDuration>().unwrap().as_std().as_millis();
        assert_eq!(ms("500ms"), 500);
        assert_eq!(ms("1s"), 1_000);
        assert_eq!(ms("1m30s"), 90_000);
        assert_eq!(ms("1h30m"), 5_400_000);
        assert_eq!(ms("7d"), 7 * 86_400_000);
        assert_eq!(ms("2w"), 2 * 604_800_000);
        assert_eq!(ms("1h1ms"), 3_600_001);
    }

    #[test]
    fn corpus_agrees_with_pattern() {
        for ok in ["500ms", "1s", "15m", "1h30m", "7d", "2w", "1w2d3h4m5s6ms"] {
            assert!(ok.parse::<HumanDuration>().is_ok(), "{ok}");
            assert!(pattern_accepts(ok), "{ok}");
        }
        for bad in [
            "",
            "0s",
            "0",
            "1",
            "01h",
            "1.5h",
            "-1h",
            "+1h",
            "1H",
            "1 h",
            "h",
            "1h ",
            "1y",
            "1mo",
            "1us",
            "1ns",
            "1h0m",
            "1s1s1s1s1s1s1s",
            "1000000000s",
        ] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad:?}");
            assert!(!pattern_accepts(bad), "{bad:?}");
        }
    }

    #[test]
    fn from_std_round_trips() {
        let d = HumanDuration::from_std(Duration::from_millis(90_500)).unwrap();
        assert_eq!(d.as_str(), "1m30s500ms");
        assert_eq!(d.as_std(), Duration::from_millis(90_500));
        assert!(HumanDuration::from_std(Duration::ZERO).is_none());
    }

    proptest! {
        #[test]
        fn parser_and_pattern_agree(s in "[0-9msdhw.]{0,14}") {
            prop_assert_eq!(s.parse::<HumanDuration>().is_ok(), pattern_accepts(&s));
        }
    }
}
