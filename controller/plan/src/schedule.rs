//! When a schedule runs.
//!
//! A schedule is a fixed series of *slots*. For an `interval` the slots are the multiples of
//! the interval since the Unix epoch; for a `cron` expression they are its matches in the
//! schedule's IANA time zone. Each object runs a fixed, deterministic offset in
//! `[0, jitter)` after each slot (a hash of its uid), so a thousand objects on `@hourly` do
//! not all start at once, and an object's slots do not move when the controller restarts.
//! The offset is rounded down to the precision of the schedule's snapshot names, so the
//! time read back from a snapshot's name is exactly its slot and the slot is done.
//!
//! Rules (each has a test):
//! - The next run is the next slot, whatever time the last run finished: long runs do not
//!   make the schedule drift.
//! - After downtime (or a suspension) at most one catch-up run happens, for the latest
//!   missed slot; the slots before it are counted and reported, not run.
//! - Slots before the object existed never run.
//! - `suspend` stops scheduled runs and holds manual triggers until it is lifted.
//! - A manual trigger token that differs from the last one run starts one run, whatever
//!   the schedule says; it does not disturb the schedule.
//! - Cron in a time zone with daylight saving time: a time skipped by a gap runs at the same
//!   wall-clock distance after it (02:30 in a 02:00→03:00 gap runs at 03:30, as RFC 5545
//!   resolves it), so a daily job never loses a day; a time repeated by a fold runs once, at
//!   its first occurrence, unless the hour field is `*`, whose jobs run in both hours (real
//!   time passes twice), as cronie does.

use std::fmt;

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp, ToSpan};
use tidepool_api::cron::CronFields;
use tidepool_api::{Cadence, ValidSchedule};

use crate::naming::NamePrecision;

/// What the controller knows of an object's schedule state.
#[derive(Debug, Clone, Copy)]
pub struct ScheduleInput<'a> {
    /// From the spec's `validate()`.
    pub schedule: &'a ValidSchedule,
    pub suspend: bool,
    /// The seed of the object's jitter offset: its `metadata.uid`.
    pub jitter_seed: &'a str,
    /// `spec.trigger.manual`.
    pub manual_trigger: Option<&'a str>,
    /// `status.lastManualTrigger`: the last token that has been run.
    pub last_manual_trigger: Option<&'a str>,
    /// When the last run happened (for snapshots: the time in the newest owned snapshot's
    /// name, which [`Run::name_time`] chose). Slots up to this are done.
    pub last_run: Option<Timestamp>,
    /// The object's creation time: slots before it never run.
    pub created: Timestamp,
}

/// What to do now, and when to look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleDecision {
    /// Run now, if set.
    pub run: Option<Run>,
    /// The next slot after `now` (jitter included): requeue then. `None` while suspended.
    pub next_due: Option<Timestamp>,
    /// The schedule is suspended (a pending manual trigger waits for it to be lifted).
    pub suspended: bool,
}

/// One run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub reason: RunReason,
    /// The slot this run stands for, if the schedule asked for it.
    pub slot: Option<Timestamp>,
    /// Slots missed before `slot` that are not run (downtime, suspension).
    pub missed: u64,
    /// The manual token this run answers; echo it to `status.lastManualTrigger` when done.
    pub manual_token: Option<String>,
    /// The time to write in the snapshot name: the slot when the run is on time (so a retry
    /// after a crash makes the same name and finds it already there), `now` when the run is
    /// late by more than a minute or manual (a name never claims an older time than the data
    /// it holds by more than that).
    pub name_time: Timestamp,
}

/// Why a run happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunReason {
    /// A slot came due.
    Scheduled,
    /// The latest of one or more missed slots, run late once.
    CatchUp,
    /// A new manual trigger token.
    Manual,
    /// A new manual trigger token while a slot came due: one run answers both.
    ManualAndScheduled,
}

impl RunReason {
    /// A CamelCase reason for conditions and events.
    pub fn as_str(self) -> &'static str {
        match self {
            RunReason::Scheduled => "Scheduled",
            RunReason::CatchUp => "CatchUp",
            RunReason::Manual => "ManualTrigger",
            RunReason::ManualAndScheduled => "ManualTriggerAndScheduled",
        }
    }
}

impl Run {
    /// A sentence for events and logs.
    pub fn message(&self) -> String {
        let slot = self.slot.map(|s| s.to_string()).unwrap_or_default();
        let token = self.manual_token.as_deref().unwrap_or_default();
        match self.reason {
            RunReason::Scheduled => format!("scheduled run for {slot}"),
            RunReason::CatchUp => format!(
                "catch-up run for the slot of {slot}; {} earlier missed slot(s) skipped",
                self.missed
            ),
            RunReason::Manual => format!("manual trigger {token:?}"),
            RunReason::ManualAndScheduled => {
                format!("manual trigger {token:?}, which also covers the slot of {slot}")
            }
        }
    }
}

/// Why slots cannot be computed. A [`ValidSchedule`] has a cadence, a known zone and a
/// matching cron expression, so what is left is arithmetic beyond the representable years.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("time out of range")]
    OutOfRange,
}

impl ScheduleError {
    /// A CamelCase reason for conditions.
    pub fn reason(&self) -> &'static str {
        "InvalidSchedule"
    }
}

/// A late scheduled run keeps its slot's time in its name up to this lateness.
const ON_TIME: SignedDuration = SignedDuration::from_secs(60);
/// Missed cron slots are counted up to this many.
pub const MAX_COUNTED_MISSED: u64 = 1000;
/// How far a cron search looks ahead or back (the rarest valid expression, 29 February
/// restricted to a weekday, matches at least once in 28 years).
const MAX_SEARCH_DAYS: i64 = 366 * 29;

/// A schedule made ready to compute slots.
#[derive(Debug, Clone)]
pub struct Slots {
    kind: SlotKind,
    jitter: SignedDuration,
}

#[derive(Debug, Clone)]
enum SlotKind {
    Interval { period_ms: i64 },
    Cron { fields: CronFields, tz: TimeZone },
}

impl Slots {
    pub fn new(schedule: &ValidSchedule, jitter_seed: &str) -> Result<Self, ScheduleError> {
        let kind = match &schedule.cadence {
            Cadence::Interval(interval) => SlotKind::Interval {
                period_ms: i64::try_from(interval.as_std().as_millis())
                    .map_err(|_| ScheduleError::OutOfRange)?
                    .max(1),
            },
            Cadence::Cron(cron) => SlotKind::Cron {
                fields: *cron.fields(),
                tz: schedule.time_zone.clone(),
            },
        };
        let jitter_ms = u64::try_from(schedule.jitter().as_millis()).unwrap_or(u64::MAX);
        let mut offset = if jitter_ms == 0 {
            0
        } else {
            fnv1a(jitter_seed.as_bytes()) % jitter_ms
        };
        // A slot must be exactly what its snapshot's name says, or the time read back from
        // the name falls before the slot and the slot runs again. Slots without jitter
        // already fall on the name's precision; so must the offset.
        if NamePrecision::for_schedule(schedule) == NamePrecision::Seconds {
            offset -= offset % 1_000;
        }
        Ok(Self {
            kind,
            jitter: SignedDuration::from_millis(i64::try_from(offset).unwrap_or(0)),
        })
    }

    /// This object's jitter offset.
    pub fn jitter_offset(&self) -> SignedDuration {
        self.jitter
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Result<Timestamp, ScheduleError> {
        let base = t
            .checked_sub(self.jitter)
            .map_err(|_| ScheduleError::OutOfRange)?;
        let slot = match &self.kind {
            SlotKind::Interval { period_ms } => {
                let ms = base.as_millisecond();
                let next = (ms.div_euclid(*period_ms) + 1) * period_ms;
                from_ms(next)?
            }
            SlotKind::Cron { fields, tz } => cron_next(fields, tz, base)?,
        };
        slot.checked_add(self.jitter)
            .map_err(|_| ScheduleError::OutOfRange)
    }

    /// The latest slot at or before `t`.
    pub fn latest_at_or_before(&self, t: Timestamp) -> Result<Timestamp, ScheduleError> {
        let base = t
            .checked_sub(self.jitter)
            .map_err(|_| ScheduleError::OutOfRange)?;
        let slot = match &self.kind {
            SlotKind::Interval { period_ms } => {
                let ms = base.as_millisecond();
                from_ms(ms.div_euclid(*period_ms) * period_ms)?
            }
            SlotKind::Cron { fields, tz } => cron_prev(fields, tz, base)?,
        };
        slot.checked_add(self.jitter)
            .map_err(|_| ScheduleError::OutOfRange)
    }

    /// How many slots lie in `(after, until]` (capped at [`MAX_COUNTED_MISSED`] for cron).
    pub fn count_between(&self, after: Timestamp, until: Timestamp) -> Result<u64, ScheduleError> {
        if until <= after {
            return Ok(0);
        }
        match &self.kind {
            SlotKind::Interval { period_ms } => {
                let a = (after.as_millisecond() - self.jitter.as_millis() as i64)
                    .div_euclid(*period_ms);
                let b = (until.as_millisecond() - self.jitter.as_millis() as i64)
                    .div_euclid(*period_ms);
                Ok(u64::try_from(b - a).unwrap_or(0))
            }
            SlotKind::Cron { .. } => {
                let mut n = 0;
                let mut t = after;
                while n < MAX_COUNTED_MISSED {
                    t = self.next_after(t)?;
                    if t > until {
                        break;
                    }
                    n += 1;
                }
                Ok(n)
            }
        }
    }
}

/// Decide whether the object runs now and when to look again.
pub fn evaluate(
    input: &ScheduleInput<'_>,
    now: Timestamp,
) -> Result<ScheduleDecision, ScheduleError> {
    let slots = Slots::new(input.schedule, input.jitter_seed)?;
    if input.suspend {
        return Ok(ScheduleDecision {
            run: None,
            next_due: None,
            suspended: true,
        });
    }
    let next_due = slots.next_after(now)?;
    let done_until = input
        .last_run
        .map_or(input.created, |l| l.max(input.created));
    let latest = slots.latest_at_or_before(now)?;
    let due_slot = (latest > done_until).then_some(latest);
    let manual = input
        .manual_trigger
        .filter(|token| Some(*token) != input.last_manual_trigger)
        .map(str::to_owned);

    let run = match (due_slot, manual) {
        (None, None) => None,
        (None, Some(token)) => Some(Run {
            reason: RunReason::Manual,
            slot: None,
            missed: 0,
            manual_token: Some(token),
            name_time: now,
        }),
        (Some(slot), token) => {
            let missed = slots.count_between(done_until, slot)?.saturating_sub(1);
            let late = now.duration_since(slot) > ON_TIME;
            let reason = match (&token, missed > 0) {
                (Some(_), _) => RunReason::ManualAndScheduled,
                (None, true) => RunReason::CatchUp,
                (None, false) if late => RunReason::CatchUp,
                (None, false) => RunReason::Scheduled,
            };
            Some(Run {
                reason,
                slot: Some(slot),
                missed,
                name_time: if late || token.is_some() { now } else { slot },
                manual_token: token,
            })
        }
    };
    Ok(ScheduleDecision {
        run,
        next_due: Some(next_due),
        suspended: false,
    })
}

/// The precision of this schedule's snapshot names.
pub fn name_precision(schedule: &ValidSchedule) -> NamePrecision {
    NamePrecision::for_schedule(schedule)
}

fn from_ms(ms: i64) -> Result<Timestamp, ScheduleError> {
    Timestamp::from_millisecond(ms).map_err(|_| ScheduleError::OutOfRange)
}

/// FNV-1a: stable across Rust versions and platforms, unlike `DefaultHasher`, so an
/// object's jitter offset never moves with an upgrade.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn day_matches(f: &CronFields, date: Date) -> bool {
    if f.months & (1 << date.month()) == 0 {
        return false;
    }
    let dom = f.days_of_month & (1 << date.day()) != 0;
    let dow = f.days_of_week & (1 << date.weekday().to_sunday_zero_offset()) != 0;
    match (f.day_of_month_restricted, f.day_of_week_restricted) {
        (true, true) => dom || dow,
        (true, false) => dom,
        (false, true) => dow,
        (false, false) => true,
    }
}

/// Civil times of the zone are at most this far from `offset_of(t)` apart for nearby
/// instants: no zone shifts its offset by more at once (2011's Samoa aside).
const MAX_SHIFT: SignedDuration = SignedDuration::from_hours(4);

/// The instants at which the expression fires on one civil day, limited to civil times in
/// `[lo, hi]`, ascending, without duplicates (a gap can map two civil times to one
/// instant).
fn cron_instants_on(
    f: &CronFields,
    tz: &TimeZone,
    date: Date,
    lo: DateTime,
    hi: DateTime,
    out: &mut Vec<Timestamp>,
) {
    out.clear();
    if !day_matches(f, date) || date < lo.date() || date > hi.date() {
        return;
    }
    let every_hour = f.hours & 0x00ff_ffff == 0x00ff_ffff;
    for hour in 0..24i8 {
        if f.hours & (1 << hour) == 0 {
            continue;
        }
        for minute in 0..60i8 {
            if f.minutes & (1 << minute) == 0 {
                continue;
            }
            let dt = DateTime::from_parts(date, jiff::civil::time(hour, minute, 0, 0));
            if dt < lo || dt > hi {
                continue;
            }
            let push = |out: &mut Vec<Timestamp>, offset: jiff::tz::Offset| {
                if let Ok(t) = offset.to_timestamp(dt) {
                    out.push(t);
                }
            };
            match tz.to_ambiguous_timestamp(dt).offset() {
                AmbiguousOffset::Unambiguous { offset } => push(out, offset),
                // The offset before the gap puts the time after it (RFC 5545).
                AmbiguousOffset::Gap { before, .. } => push(out, before),
                AmbiguousOffset::Fold { before, after } => {
                    push(out, before);
                    if every_hour {
                        push(out, after);
                    }
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
}

fn civil_shift(dt: DateTime, by: SignedDuration) -> DateTime {
    dt.checked_add(by).unwrap_or(if by.is_negative() {
        DateTime::MIN
    } else {
        DateTime::MAX
    })
}

fn cron_next(f: &CronFields, tz: &TimeZone, t: Timestamp) -> Result<Timestamp, ScheduleError> {
    let lo = civil_shift(tz.to_datetime(t), -MAX_SHIFT);
    let start = lo.date();
    let mut buf = Vec::new();
    let mut best: Option<Timestamp> = None;
    let mut hi = DateTime::MAX;
    for i in 0..MAX_SEARCH_DAYS {
        let date = start
            .checked_add(i.days())
            .map_err(|_| ScheduleError::OutOfRange)?;
        if date > hi.date() {
            break;
        }
        cron_instants_on(f, tz, date, lo, hi, &mut buf);
        if let Some(&found) = buf.iter().find(|&&x| x > t) {
            let b = best.map_or(found, |b| b.min(found));
            best = Some(b);
            // A later civil time can only map to an earlier instant within a fold.
            hi = civil_shift(tz.to_datetime(b), MAX_SHIFT);
        }
    }
    best.ok_or(ScheduleError::OutOfRange)
}

fn cron_prev(f: &CronFields, tz: &TimeZone, t: Timestamp) -> Result<Timestamp, ScheduleError> {
    let hi = civil_shift(tz.to_datetime(t), MAX_SHIFT);
    let start = hi.date();
    let mut buf = Vec::new();
    let mut best: Option<Timestamp> = None;
    let mut lo = DateTime::MIN;
    for i in 0..MAX_SEARCH_DAYS {
        let date = start
            .checked_sub(i.days())
            .map_err(|_| ScheduleError::OutOfRange)?;
        if date < lo.date() {
            break;
        }
        cron_instants_on(f, tz, date, lo, hi, &mut buf);
        if let Some(&found) = buf.iter().rev().find(|&&x| x <= t) {
            let b = best.map_or(found, |b| b.max(found));
            best = Some(b);
            lo = civil_shift(tz.to_datetime(b), -MAX_SHIFT);
        }
    }
    best.ok_or(ScheduleError::OutOfRange)
}

impl fmt::Display for RunReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
