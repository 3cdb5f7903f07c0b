//! `CronExpression`: five-field cron (`minute hour day-of-month month day-of-week`) and the
//! usual `@hourly`-style shorthands.
//!
//! Fields take `*`, numbers, ranges `a-b`, steps `*/n` / `a-b/n` / `a/n` and comma lists.
//! Names (`MON`, `JAN`) are not accepted: one spelling per meaning keeps GitOps diffs clean.
//! Day-of-week 0 and 7 are both Sunday. As in Vixie cron, when both day-of-month and
//! day-of-week are restricted, a day matches if either matches.
//!
//! The schema pattern checks the shape and each number's range; the parser also checks that
//! ranges ascend (`5-1` passes the pattern and is refused by the controller with an
//! `InvalidSchedule` condition), the only difference between the two.

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
#[error("invalid cron expression {text:?}: {why}")]
pub struct CronError {
    text: String,
    why: String,
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

impl CronExpression {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn fields(&self) -> &CronFields {
        &self.fields
    }
}

fn parse_field(text: &str, min: u32, max: u32, name: &str) -> Result<u64, String> {
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| (1..=99).contains(s))
                    .ok_or_else(|| format!("{name}: bad step in {item:?}"))?;
                (range, step)
            }
            None => (item, 1),
        };
        let number = |s: &str| -> Result<u32, String> {
            if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{name}: {s:?} is not a number"));
            }
            let n: u32 = s.parse().map_err(|_| format!("{name}: {s:?}"))?;
            if n < min || n > max {
                return Err(format!("{name}: {n} is outside {min}-{max}"));
            }
            Ok(n)
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(format!("{name}: range {a}-{b} does not ascend"));
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
        let err = |why: String| CronError {
            text: s.to_owned(),
            why,
        };
        if s.is_empty() || s.len() > MAX_CRON_LEN {
            return Err(err(format!("must be 1 to {MAX_CRON_LEN} characters")));
        }
        let expanded = if s.starts_with('@') {
            SHORTHANDS
                .iter()
                .find(|(name, _)| *name == s)
                .map(|(_, e)| *e)
                .ok_or_else(|| err("unknown shorthand".into()))?
        } else {
            s
        };
        let parts: Vec<&str> = expanded.split(' ').collect();
        if parts.len() != 5 {
            return Err(err(
                "expected 5 fields separated by single spaces: minute hour day-of-month month day-of-week".into(),
            ));
        }
        let mut bits = [0u64; 5];
        for (i, (name, min, max, _)) in FIELDS.iter().enumerate() {
            if parts[i].split(',').count() > 16 {
                return Err(err(format!("{name}: at most 16 list items")));
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
        Ok(Self {
            text: s.to_owned(),
            fields,
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
        // The one documented difference: the pattern cannot see that a range descends.
        assert!("5-1 * * * *".parse::<CronExpression>().is_err());
        assert!(pattern_accepts("5-1 * * * *"));
    }
}
