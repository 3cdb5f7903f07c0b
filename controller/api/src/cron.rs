//! `CronExpression`: five-field cron (`minute hour day-of-month month day-of-week`) and the
//! usual `@hourly`-style shorthands.
//!
//! Fields take `*`, numbers, ranges `a-b`, steps `*/n` / `a-b/n` / `a/n` and comma lists.
//! Names (`MON`, `JAN`) are not accepted: one spelling per meaning keeps GitOps diffs clean.
//! Day-of-week 0 and 7 are both Sunday. As in Vixie cron, when both day-of-month and
//! day-of-week are restricted, a day matches if either matches.
//!
//! The schema pattern checks the shape and each number's range, and a CEL rule next to it
//! checks that ranges ascend (`5-1`). The parser checks those and one thing no schema
//! can: that the expression matches some day at all (`0 0 31 2 *` never does). The spec's
//! `validate()` reports that as `InvalidSchedule`; decoding is lenient
//! ([`crate::lenient::Lenient`]), so such an object never breaks a list or watch.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// A validated cron expression with its fields expanded to bit sets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CronExpression {
    text: String,
    fields: CronFields,
}

/// The expanded fields: bit `n` set means value `n` matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CronFields {
    pub minutes: u64,
    pub hours: u32,
    /// Bits 1..=31.
    pub days_of_month: u32,
    /// Bits 1..=12.
    pub months: u16,
    /// Bits 0..=6, Sunday = 0.
    pub days_of_week: u8,
    /// Whether day-of-month was written as something other than `*`.
    pub day_of_month_restricted: bool,
    /// Whether day-of-week was written as something other than `*`.
    pub day_of_week_restricted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron expression {text:?}: {problem}")]
pub struct CronError {
    text: String,
    #[source]
    problem: CronProblem,
}

impl CronError {
    pub fn problem(&self) -> &CronProblem {
        &self.problem
    }
}

/// What is wrong with a cron expression. `field` is one of the five field names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronProblem {
    #[error("must be 1 to {MAX_CRON_LEN} characters")]
    Length,
    #[error("unknown shorthand")]
    UnknownShorthand,
    #[error(
        "expected 5 fields separated by single spaces: minute hour day-of-month month day-of-week"
    )]
    FieldCount,
    #[error("{field}: at most 16 list items")]
    TooManyItems { field: &'static str },
    #[error("{field}: bad step in {item:?}")]
    BadStep { field: &'static str, item: String },
    #[error("{field}: {text:?} is not a number")]
    NotANumber { field: &'static str, text: String },
    #[error("{field}: {value} is outside {min}-{max}")]
    OutOfRange {
        field: &'static str,
        value: u32,
        min: u32,
        max: u32,
    },
    #[error("{field}: range {from}-{to} does not ascend")]
    Descending {
        field: &'static str,
        from: u32,
        to: u32,
    },
    #[error("never matches: no chosen month has one of the chosen days (e.g. 31 February)")]
    NeverMatches,
}

pub const MAX_CRON_LEN: usize = 128;

const SHORTHANDS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// Field name, smallest and largest value, and the regex of one value in that range.
const FIELDS: [(&str, u32, u32, &str); 5] = [
    ("minute", 0, 59, "([0-5]?[0-9])"),
    ("hour", 0, 23, "([01]?[0-9]|2[0-3])"),
    ("day-of-month", 1, 31, "(0?[1-9]|[12][0-9]|3[01])"),
    ("month", 1, 12, "(0?[1-9]|1[0-2])"),
    ("day-of-week", 0, 7, "([0-7])"),
];

/// The JSON-schema pattern, built from [`FIELDS`] so the two cannot drift apart.
pub fn cron_pattern() -> &'static str {
    static PATTERN: OnceLock<String> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let step = "(/([1-9][0-9]?))?";
        let fields: Vec<String> = FIELDS
            .iter()
            .map(|(_, _, _, v)| {
                let item = format!("(\\*|{v}(-{v})?){step}");
                format!("{item}(,{item}){{0,15}}")
            })
            .collect();
        let shorthands: Vec<&str> = SHORTHANDS.iter().map(|(s, _)| *s).collect();
        format!("^({}|{})$", fields.join(" "), shorthands.join("|"))
    })
}

/// The CEL rule that refuses a descending range (`5-1`) at admission, which the pattern
/// cannot see. The pattern has already made every `a-b` two small numbers.
pub const ASCENDING_RANGES_RULE: &str =
    "self.findAll('[0-9]+-[0-9]+').all(r, int(r.split('-')[0]) <= int(r.split('-')[1]))";

impl CronExpression {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn fields(&self) -> &CronFields {
        &self.fields
    }
}

fn parse_field(text: &str, min: u32, max: u32, name: &'static str) -> Result<u64, CronProblem> {
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| (1..=99).contains(s))
                    .ok_or_else(|| CronProblem::BadStep {
                        field: name,
                        item: item.to_owned(),
                    })?;
                (range, step)
            }
            None => (item, 1),
        };
        let number = |s: &str| -> Result<u32, CronProblem> {
            let not_a_number = || CronProblem::NotANumber {
                field: name,
                text: s.to_owned(),
            };
            if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(not_a_number());
            }
            let n: u32 = s.parse().map_err(|_| not_a_number())?;
            if n < min || n > max {
                return Err(CronProblem::OutOfRange {
                    field: name,
                    value: n,
                    min,
                    max,
                });
            }
            Ok(n)
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(CronProblem::Descending {
                    field: name,
                    from: a,
                    to: b,
                });
            }
            (a, b)
        } else {
            let a = number(range)?;
            // `a/n` means from a to the end in steps of n.
            (a, if item.contains('/') { max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl FromStr for CronExpression {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, CronError> {
        let err = |problem: CronProblem| CronError {
            text: s.to_owned(),
            problem,
        };
        if s.is_empty() || s.len() > MAX_CRON_LEN {
            return Err(err(CronProblem::Length));
        }
        let expanded = if s.starts_with('@') {
            SHORTHANDS
                .iter()
                .find(|(name, _)| *name == s)
                .map(|(_, e)| *e)
                .ok_or_else(|| err(CronProblem::UnknownShorthand))?
        } else {
            s
        };
        let parts: Vec<&str> = expanded.split(' ').collect();
        if parts.len() != 5 {
            return Err(err(CronProblem::FieldCount));
        }
        let mut bits = [0u64; 5];
        for (i, (name, min, max, _)) in FIELDS.iter().enumerate() {
            if parts[i].split(',').count() > 16 {
                return Err(err(CronProblem::TooManyItems { field: name }));
            }
            bits[i] = parse_field(parts[i], *min, *max, name).map_err(err)?;
        }
        // Day-of-week 7 is Sunday too.
        let dow = bits[4] | ((bits[4] >> 7) & 1);
        let fields = CronFields {
            minutes: bits[0],
            hours: bits[1] as u32,
            days_of_month: bits[2] as u32,
            months: bits[3] as u16,
            days_of_week: (dow & 0x7f) as u8,
            day_of_month_restricted: parts[2] != "*",
            day_of_week_restricted: parts[4] != "*",
        };
        if !fields.can_match() {
            return Err(err(CronProblem::NeverMatches));
        }
        Ok(Self {
            text: s.to_owned(),
            fields,
        })
    }
}

impl CronFields {
    /// Whether some day of some year matches. Every field is non-empty after parsing, so
    /// only a day-of-month that no chosen month has (31 February) can make it never match.
    fn can_match(&self) -> bool {
        if self.minutes == 0 || self.hours == 0 || self.months == 0 {
            return false;
        }
        // With day-of-week restricted too, any matching weekday suffices (Vixie "or").
        if self.day_of_month_restricted && self.day_of_week_restricted && self.days_of_week != 0 {
            return true;
        }
        // 29 February exists in leap years.
        const DAYS_IN_MONTH: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        (1..=12).any(|m| {
            self.months & (1 << m) != 0
                && (1..=DAYS_IN_MONTH[m]).any(|d| self.days_of_month & (1 << d) != 0)
        })
    }
}

impl fmt::Display for CronExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for CronExpression {
    type Error = CronError;
    fn try_from(s: String) -> Result<Self, CronError> {
        s.parse()
    }
}

impl From<CronExpression> for String {
    fn from(v: CronExpression) -> String {
        v.text
    }
}

impl JsonSchema for CronExpression {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("CronExpression")
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_CRON_LEN,
            "pattern": cron_pattern(),
            "x-kubernetes-validations": [{
                "rule": ASCENDING_RANGES_RULE,
                "message": "each range a-b in a cron expression must ascend (a <= b)",
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn pattern_accepts(s: &str) -> bool {
        s.len() <= MAX_CRON_LEN && Regex::new(cron_pattern()).expect("compiles").is_match(s)
    }

    #[test]
    fn expands_fields() {
        let c: CronExpression = "*/15 9-17 * * 1-5".parse().unwrap();
        let f = c.fields();
        assert_eq!(f.minutes, (1 << 0) | (1 << 15) | (1 << 30) | (1 << 45));
        assert_eq!(f.hours, (9..=17).fold(0, |b, h| b | (1 << h)));
        assert_eq!(f.days_of_week, 0b0011_1110);
        assert!(!f.day_of_month_restricted);
        assert!(f.day_of_week_restricted);
        let sunday: CronExpression = "0 0 * * 7".parse().unwrap();
        assert_eq!(sunday.fields().days_of_week, 1);
        let hourly: CronExpression = "@hourly".parse().unwrap();
        assert_eq!(hourly.fields().minutes, 1);
        assert_eq!(hourly.fields().hours, (1 << 24) - 1);
        let from: CronExpression = "5/20 * * * *".parse().unwrap();
        assert_eq!(from.fields().minutes, (1 << 5) | (1 << 25) | (1 << 45));
    }

    #[test]
    fn corpus_agrees_with_pattern() {
        for ok in [
            "* * * * *",
            "0 * * * *",
            "30 2 * * *",
            "0 0 1 1 *",
            "0,30 */2 1-15 1,6,12 0-6",
            "59 23 31 12 7",
            "@daily",
            "@weekly",
            "00 00 01 01 *",
        ] {
            assert!(ok.parse::<CronExpression>().is_ok(), "{ok}");
            assert!(pattern_accepts(ok), "{ok}");
        }
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * 32 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "* * * * MON",
            "0 0 * JAN *",
            "@every 5m",
            "@reboot",
            "0  0 * * *",
            " 0 0 * * *",
            "0 0 * * * ",
            "-1 * * * *",
            "1- * * * *",
            "? * * * *",
            "0 0 L * *",
            "0;rm * * * *",
        ] {
            assert!(bad.parse::<CronExpression>().is_err(), "{bad:?}");
            assert!(!pattern_accepts(bad), "{bad:?}");
        }
        // The pattern cannot see that a range descends (a CEL rule does), nor that a day
        // never exists (only the parser does).
        assert!("5-1 * * * *".parse::<CronExpression>().is_err());
        assert!(pattern_accepts("5-1 * * * *"));
        for never in ["0 0 31 2 *", "0 0 30,31 2 *", "0 0 31 4,6,9,11 *"] {
            assert!(pattern_accepts(never), "{never}");
            let err = never.parse::<CronExpression>().unwrap_err();
            assert_eq!(err.problem(), &CronProblem::NeverMatches, "{never}");
        }
        // 29 February exists, and a restricted weekday rescues a missing day.
        assert!("0 0 29 2 *".parse::<CronExpression>().is_ok());
        assert!("0 0 31 2 1".parse::<CronExpression>().is_ok());
    }
}
