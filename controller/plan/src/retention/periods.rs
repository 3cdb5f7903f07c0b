//! The calendar periods of the bucket rules, in the schedule's time zone.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};

/// Hour, day, ISO week, month and year of a civil time, each as one comparable number (the
/// order of [`super::KeepReasons::BUCKETS`]). Only equality matters: a bucket rule asks
/// whether two snapshots fall into the same period.
pub(super) fn period_keys(dt: DateTime) -> [i64; 5] {
    let year = i64::from(dt.year());
    let month = year * 16 + i64::from(dt.month());
    let day = month * 32 + i64::from(dt.day());
    let hour = day * 32 + i64::from(dt.hour());
    let iso = dt.date().iso_week_date();
    let week = i64::from(iso.year()) * 64 + i64::from(iso.week());
    [hour, day, week, month, year]
}

/// Converting a million timestamps to civil time one by one spends most of its time looking
/// up the zone's offset; the offset only changes at transitions, so remember the span of
/// the last one.
pub(super) struct OffsetCache<'a> {
    tz: &'a TimeZone,
    /// `[from, until)` where `offset` holds.
    span: Option<(Timestamp, Timestamp, Offset)>,
}

impl<'a> OffsetCache<'a> {
    pub(super) fn new(tz: &'a TimeZone) -> Self {
        Self { tz, span: None }
    }

    pub(super) fn civil(&mut self, t: Timestamp) -> DateTime {
        let offset = match self.span {
            Some((from, until, offset)) if from <= t && t < until => offset,
            _ => {
                let offset = self.tz.to_offset(t);
                let from = self
                    .tz
                    .preceding(
                        t.checked_add(jiff::SignedDuration::from_nanos(1))
                            .unwrap_or(t),
                    )
                    .next()
                    .map_or(Timestamp::MIN, |tr| tr.timestamp());
                let until = self
                    .tz
                    .following(t)
                    .next()
                    .map_or(Timestamp::MAX, |tr| tr.timestamp());
                self.span = Some((from, until, offset));
                offset
            }
        };
        offset.to_datetime(t)
    }
}
