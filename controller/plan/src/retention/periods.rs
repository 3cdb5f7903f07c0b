//! The calendar periods of the bucket rules, in the schedule's time zone.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};

/// A period, named by the civil fields that make it (year or ISO week-year first, unused
/// fields zero). Two snapshots share a period when these are equal; a tuple rather than
/// one packed number, so no arithmetic can make two periods collide.
pub(super) type Period = (i16, i8, i8, i8);

/// The hour, day, ISO week, month and year of a civil time (the order of
/// [`super::KeepReasons::BUCKETS`]).
pub(super) fn periods(dt: DateTime) -> [Period; 5] {
    let (year, month, day) = (dt.year(), dt.month(), dt.day());
    let iso = dt.date().iso_week_date();
    [
        (year, month, day, dt.hour()),
        (year, month, day, 0),
        (iso.year(), iso.week(), 0, 0),
        (year, month, 0, 0),
        (year, 0, 0, 0),
    ]
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
