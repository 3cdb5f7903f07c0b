//! Snapshot names: `<prefix>_<UTC time, basic ISO 8601>_<label>`, e.g.
//! `tidepool_20261122T093000Z_hourly`, with milliseconds (`20261122T093000.500Z`) only when
//! the schedule's interval is sub-second.
//!
//! Names of one schedule sort lexically in time as long as its precision does not change
//! (a whole-second name sorts after the millisecond names of the same second, because `.`
//! sorts before `Z`). Nothing in the planner relies on name order: retention and
//! replication order snapshots by `createtxg` and `creation`, and ownership comes from the
//! `tidepool.dev:owner` property, never from the name.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use tidepool_api::{Cadence, NameError, SnapshotShortName, ValidSchedule};

/// How finely the time in a name is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamePrecision {
    Seconds,
    Milliseconds,
}

impl NamePrecision {
    /// Milliseconds when the schedule can run more than once in a second, or its slots
    /// fall between whole seconds (`1500ms`); seconds otherwise. The jitter offset is
    /// rounded to this precision ([`crate::schedule::Slots`]), so a slot and the time in
    /// its snapshot's name are the same instant.
    pub fn for_schedule(schedule: &ValidSchedule) -> Self {
        match &schedule.cadence {
            Cadence::Interval(i) if i.as_std().subsec_millis() != 0 => NamePrecision::Milliseconds,
            _ => NamePrecision::Seconds,
        }
    }
}

/// The longest label (`Naming.label` or the object name it defaults to).
pub const MAX_LABEL_LEN: usize = 63;

/// The label of an object's snapshots: `naming.label`, or the object's name cut to 63
/// characters (a Kubernetes name is a DNS subdomain, whose characters are all valid here).
pub fn label_for(label: Option<&str>, object_name: &str) -> String {
    let label = label.unwrap_or(object_name);
    let mut end = label.len().min(MAX_LABEL_LEN);
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    label[..end].trim_end_matches(['.', '-']).to_owned()
}

/// The UTC time as it appears in a name.
pub fn format_time(time: Timestamp, precision: NamePrecision) -> String {
    let dt = TimeZone::UTC.to_datetime(time);
    let base = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    match precision {
        NamePrecision::Seconds => format!("{base}Z"),
        NamePrecision::Milliseconds => format!("{base}.{:03}Z", dt.millisecond()),
    }
}

/// `<prefix>_<time>_<label>`, validated as a ZFS snapshot short name.
pub fn snapshot_name(
    prefix: &str,
    label: &str,
    time: Timestamp,
    precision: NamePrecision,
) -> Result<SnapshotShortName, NameError> {
    format!("{prefix}_{}_{label}", format_time(time, precision)).parse()
}

/// The time written in a name made by [`snapshot_name`] with this prefix, if it is one.
pub fn parse_snapshot_time(name: &str, prefix: &str) -> Option<Timestamp> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('_')?;
    let (time, _label) = rest.split_once('_')?;
    let time = time.strip_suffix('Z')?;
    let (whole, millis) = match time.split_once('.') {
        Some((w, m)) if m.len() == 3 && m.bytes().all(|b| b.is_ascii_digit()) => {
            (w, m.parse::<i64>().ok()?)
        }
        Some(_) => return None,
        None => (time, 0),
    };
    let b = whole.as_bytes();
    if b.len() != 15 || b[8] != b'T' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = whole.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let dt = jiff::civil::DateTime::new(
        i16::try_from(digits(0..4)?).ok()?,
        i8::try_from(digits(4..6)?).ok()?,
        i8::try_from(digits(6..8)?).ok()?,
        i8::try_from(digits(9..11)?).ok()?,
        i8::try_from(digits(11..13)?).ok()?,
        i8::try_from(digits(13..15)?).ok()?,
        i32::try_from(millis * 1_000_000).ok()?,
    )
    .ok()?;
    TimeZone::UTC.to_timestamp(dt).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn names_by_precision() {
        let t = ts("2026-11-22T09:30:00.5Z");
        let cases = [
            (NamePrecision::Seconds, "tidepool_20261122T093000Z_hourly"),
            (
                NamePrecision::Milliseconds,
                "tidepool_20261122T093000.500Z_hourly",
            ),
        ];
        for (precision, want) in cases {
            let name = snapshot_name("tidepool", "hourly", t, precision).expect("valid");
            assert_eq!(name.as_str(), want);
        }
    }

    #[test]
    fn precision_follows_interval() {
        let sched = |interval: &str| ValidSchedule {
            cadence: Cadence::Interval(interval.parse().expect("duration")),
            time_zone: TimeZone::UTC,
            jitter: None,
        };
        for (interval, want) in [
            ("500ms", NamePrecision::Milliseconds),
            ("1s500ms", NamePrecision::Milliseconds),
            ("1s", NamePrecision::Seconds),
            ("15m", NamePrecision::Seconds),
            ("7d", NamePrecision::Seconds),
        ] {
            assert_eq!(
                NamePrecision::for_schedule(&sched(interval)),
                want,
                "{interval}"
            );
        }
    }

    #[test]
    fn round_trip_and_sort() {
        let mut t = ts("2026-12-31T23:59:58Z");
        let mut last = String::new();
        for _ in 0..10 {
            let name = snapshot_name("tp", "x", t, NamePrecision::Milliseconds).expect("valid");
            assert_eq!(parse_snapshot_time(name.as_str(), "tp"), Some(t));
            assert!(name.as_str() > last.as_str(), "{name} after {last}");
            last = name.as_str().to_owned();
            t += jiff::SignedDuration::from_millis(500);
        }
        let whole = snapshot_name(
            "tp",
            "x",
            ts("2026-01-02T03:04:05Z"),
            NamePrecision::Seconds,
        )
        .expect("valid");
        assert_eq!(
            parse_snapshot_time(whole.as_str(), "tp"),
            Some(ts("2026-01-02T03:04:05Z"))
        );
    }

    #[test]
    fn parse_refuses_other_names() {
        for bad in [
            "other_20261122T093000Z_x",
            "tp_20261122T093000_x",
            "tp_20261322T093000Z_x",
            "tp_20261122T093000.5Z_x",
            "tp_2026112T093000Z_x",
            "tp_20261122T093000Z",
            "manual-backup",
        ] {
            assert_eq!(parse_snapshot_time(bad, "tp"), None, "{bad}");
        }
    }

    #[test]
    fn labels() {
        assert_eq!(label_for(Some("hourly"), "db"), "hourly");
        assert_eq!(label_for(None, "db-backup"), "db-backup");
        let long = format!("{}-x", "a".repeat(62));
        assert_eq!(label_for(None, &long), "a".repeat(62));
    }
}
