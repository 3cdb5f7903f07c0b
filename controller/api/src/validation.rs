//! Validation by the code that acts.
//!
//! The wire types decode anything the API server admits (see [`crate::lenient`]); before
//! acting on an object the controller calls its spec's `validate()`, which returns the
//! validated values the planner takes, or a [`SpecError`] naming the field, with a stable
//! CamelCase reason for `Ready=False` and a message.
//!
//! The checks here repeat what the schema already refuses where both can say it (an
//! object stored under an older, looser schema is admitted without being checked again),
//! and add what no schema can: a cron day that never exists, an unknown time zone.

use std::time::Duration;

use jiff::tz::TimeZone;

use crate::common::{MIN_INTERVAL, Retention, Schedule};
use crate::cron::{CronError, CronExpression};
use crate::duration::HumanDuration;
use crate::replication_policy::ReplicationPolicySpec;
use crate::snapshot_schedule::SnapshotScheduleSpec;

/// Why a spec cannot be acted on, and which field says so.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SpecError {
    /// The field's path from the object, e.g. `spec.schedule.cron`.
    pub field: String,
    #[source]
    pub problem: SpecProblem,
}

impl SpecError {
    fn new(field: &str, problem: SpecProblem) -> Self {
        Self {
            field: field.to_owned(),
            problem,
        }
    }

    /// The condition reason: a stable CamelCase word alerts can match on.
    pub fn reason(&self) -> &'static str {
        self.problem.reason()
    }

    /// The condition message: the field and what is wrong with it.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecProblem {
    #[error(transparent)]
    Cron(#[from] CronError),
    #[error("set exactly one of interval and cron")]
    IntervalXorCron,
    #[error(
        "interval {interval} is shorter than {:?}, the shortest supported",
        MIN_INTERVAL
    )]
    IntervalTooShort { interval: HumanDuration },
    #[error("jitter {jitter} is longer than the interval {interval}")]
    JitterLongerThanInterval {
        jitter: HumanDuration,
        interval: HumanDuration,
    },
    #[error("unknown time zone {0:?} (expected an IANA name such as Europe/Berlin or UTC)")]
    UnknownTimeZone(String),
    #[error("bandwidth {0:?} does not fit in 64 bits of bytes per second")]
    BandwidthTooLarge(String),
    #[error("bandwidth {0:?} is not a number of bytes per second with an optional Ki, Mi or Gi")]
    BandwidthSyntax(String),
}

impl SpecProblem {
    pub fn reason(&self) -> &'static str {
        match self {
            SpecProblem::Cron(_)
            | SpecProblem::IntervalXorCron
            | SpecProblem::IntervalTooShort { .. }
            | SpecProblem::JitterLongerThanInterval { .. } => "InvalidSchedule",
            SpecProblem::UnknownTimeZone(_) => "UnknownTimeZone",
            SpecProblem::BandwidthTooLarge(_) | SpecProblem::BandwidthSyntax(_) => "InvalidSpec",
        }
    }
}

/// How often a validated schedule runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Cadence {
    /// At least [`MIN_INTERVAL`].
    Interval(HumanDuration),
    /// An expression that matches some day.
    Cron(CronExpression),
}

/// A schedule the planner can act on: one cadence, a known time zone, a jitter no longer
/// than an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSchedule {
    pub cadence: Cadence,
    /// From the bundled tz database, so every node and controller agrees on it.
    pub time_zone: TimeZone,
    pub jitter: Option<HumanDuration>,
}

impl ValidSchedule {
    /// The jitter as a duration, zero when unset.
    pub fn jitter(&self) -> Duration {
        self.jitter.as_ref().map_or(Duration::ZERO, |j| j.as_std())
    }
}

impl Schedule {
    /// Validates the schedule found at `path` (e.g. `spec.schedule`).
    pub fn validate(&self, path: &str) -> Result<ValidSchedule, SpecError> {
        let field = |name: &str| format!("{path}.{name}");
        let cadence = match (&self.interval, &self.cron) {
            (Some(interval), None) => {
                if interval.as_std() < MIN_INTERVAL {
                    return Err(SpecError::new(
                        &field("interval"),
                        SpecProblem::IntervalTooShort {
                            interval: interval.clone(),
                        },
                    ));
                }
                Cadence::Interval(interval.clone())
            }
            (None, Some(cron)) => match cron.get() {
                Ok(cron) => Cadence::Cron(cron.clone()),
                Err(e) => return Err(SpecError::new(&field("cron"), e.clone().into())),
            },
            _ => return Err(SpecError::new(path, SpecProblem::IntervalXorCron)),
        };
        let time_zone = TimeZone::get(&self.time_zone).map_err(|_| {
            SpecError::new(
                &field("timeZone"),
                SpecProblem::UnknownTimeZone(self.time_zone.clone()),
            )
        })?;
        if let (Cadence::Interval(interval), Some(jitter)) = (&cadence, &self.jitter)
            && jitter.as_std() > interval.as_std()
        {
            return Err(SpecError::new(
                &field("jitter"),
                SpecProblem::JitterLongerThanInterval {
                    jitter: jitter.clone(),
                    interval: interval.clone(),
                },
            ));
        }
        Ok(ValidSchedule {
            cadence,
            time_zone,
            jitter: self.jitter.clone(),
        })
    }
}

/// A `SnapshotSchedule` spec the controller can act on.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSnapshotSchedule<'a> {
    pub spec: &'a SnapshotScheduleSpec,
    pub schedule: ValidSchedule,
}

impl ValidSnapshotSchedule<'_> {
    /// Retention rules, with the time zone its day, week, month and year buckets use.
    pub fn retention(&self) -> Option<(&Retention, &TimeZone)> {
        self.spec
            .retention
            .as_ref()
            .map(|r| (r, &self.schedule.time_zone))
    }
}

impl SnapshotScheduleSpec {
    pub fn validate(&self) -> Result<ValidSnapshotSchedule<'_>, SpecError> {
        Ok(ValidSnapshotSchedule {
            spec: self,
            schedule: self.schedule.validate("spec.schedule")?,
        })
    }
}

/// A `ReplicationPolicy` spec the controller can act on (its schedule and bandwidth; the
/// other fields' types are already validated at decoding).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidReplicationPolicy<'a> {
    pub spec: &'a ReplicationPolicySpec,
    /// `None`: sync after each new source snapshot.
    pub schedule: Option<ValidSchedule>,
    /// Bytes per second; `None` for no limit.
    pub bandwidth_limit: Option<u64>,
}

impl ReplicationPolicySpec {
    pub fn validate(&self) -> Result<ValidReplicationPolicy<'_>, SpecError> {
        let schedule = self
            .schedule
            .as_ref()
            .map(|s| s.validate("spec.schedule"))
            .transpose()?;
        let bandwidth_limit = self
            .send
            .bandwidth_limit
            .as_deref()
            .map(|b| parse_bandwidth(b).map_err(|p| SpecError::new("spec.send.bandwidthLimit", p)))
            .transpose()?;
        Ok(ValidReplicationPolicy {
            spec: self,
            schedule,
            bandwidth_limit,
        })
    }
}

/// Bytes per second from `50Mi`-style text ([`crate::common::pattern::BANDWIDTH`]). The
/// pattern admits up to 12 digits with `Gi`, more than 64 bits hold.
pub fn parse_bandwidth(text: &str) -> Result<u64, SpecProblem> {
    let (digits, scale) = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)]
        .iter()
        .find_map(|(suffix, scale)| text.strip_suffix(suffix).map(|d| (d, *scale)))
        .unwrap_or((text, 1));
    let syntax = || SpecProblem::BandwidthSyntax(text.to_owned());
    if digits.is_empty()
        || digits.len() > 12
        || digits.starts_with('0')
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(syntax());
    }
    let n: u64 = digits.parse().map_err(|_| syntax())?;
    n.checked_mul(scale)
        .ok_or_else(|| SpecProblem::BandwidthTooLarge(text.to_owned()))
}

#[cfg(test)]
mod tests;
