//! How often a schedule's status is written. A change that someone acts on (a condition's
//! status or reason, `lastError`, `observedGeneration`, the manual trigger echo, a node's
//! error or the set of nodes) is written at once; routine movement (last/next times,
//! counts, messages) at most once per `min_interval` per object, so a 500 ms schedule does
//! not write the API twice a second. A held-back change is not lost: the caller requeues
//! no later than the window's end, and the status computed then carries it.
//!
//! The object in the watch store holds the last status *written* (or an older one while
//! the watch lags), not the last one computed. Counters that accumulate (`prunedTotal`,
//! `consecutiveFailures`) are computed from the previous status, so after a held-back
//! write the previous status is the one computed, kept here in memory with the one last
//! written and when. The memory lives as long as one leadership term (a new leader starts
//! from the stored status: it may lose the increments of at most one window).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tidepool_api::snapshot_schedule::SnapshotScheduleStatus;

/// What to do with a newly computed status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Nothing differs from what was written.
    Unchanged,
    /// Write it now.
    Now,
    /// Only routine fields moved and the object was written less than `min_interval` ago:
    /// write at `until` (requeue then).
    Defer { until: Timestamp },
}

/// Whether `a` and `b` differ in something a user or an alert acts on.
pub fn significant(a: &SnapshotScheduleStatus, b: &SnapshotScheduleStatus) -> bool {
    let conditions = |s: &SnapshotScheduleStatus| {
        let mut c: Vec<_> = s
            .conditions
            .iter()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.observed_generation,
                )
            })
            .collect();
        c.sort();
        c
    };
    let nodes = |s: &SnapshotScheduleStatus| {
        s.nodes
            .iter()
            .map(|n| (n.node.clone(), n.last_error.clone()))
            .collect::<Vec<_>>()
    };
    a.observed_generation != b.observed_generation
        || a.last_error != b.last_error
        || a.last_manual_trigger != b.last_manual_trigger
        || conditions(a) != conditions(b)
        || nodes(a) != nodes(b)
}

/// Decides the write of `new` given what was last `written` and when (`None`: not by this
/// leader, so there is no window to respect).
pub fn decide(
    written: &SnapshotScheduleStatus,
    new: &SnapshotScheduleStatus,
    written_at: Option<Timestamp>,
    min_interval: Duration,
    now: Timestamp,
) -> Write {
    if new == written {
        return Write::Unchanged;
    }
    if significant(written, new) {
        return Write::Now;
    }
    let window = SignedDuration::try_from(min_interval).unwrap_or(SignedDuration::MAX);
    match written_at.and_then(|at| at.checked_add(window).ok()) {
        Some(until) if until > now => Write::Defer { until },
        _ => Write::Now,
    }
}

/// One object's last written and last computed status.
#[derive(Debug, Clone)]
struct Record {
    written: SnapshotScheduleStatus,
    written_at: Option<Timestamp>,
    computed: SnapshotScheduleStatus,
    touched: Timestamp,
}

/// What the pacing needs to know of one object before computing its next status.
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    /// The status the API server holds (as far as this leader knows).
    pub written: SnapshotScheduleStatus,
    pub written_at: Option<Timestamp>,
    /// The status to compute the next one from.
    pub previous: SnapshotScheduleStatus,
}

/// Entries untouched this long are dropped: every live object is reconciled at least once
/// per `max_requeue` (1 h by default), so only deleted objects' entries get this old, and
/// dropping a live one only means starting again from the stored status.
const FORGET_AFTER: SignedDuration = SignedDuration::from_hours(3);
const SWEEP_EVERY: SignedDuration = SignedDuration::from_mins(10);

/// Per-object memory of status writes, keyed by the object's UID (a re-created object with
/// the same name starts afresh).
#[derive(Debug, Default)]
pub struct StatusMemory {
    inner: Mutex<Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    records: HashMap<String, Record>,
    last_sweep: Option<Timestamp>,
}

impl StatusMemory {
    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        // Every update replaces whole values, so a panicking holder leaves nothing torn.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What is known of `uid`, its stored status being `stored`.
    pub fn known(&self, uid: &str, stored: &SnapshotScheduleStatus) -> Known {
        match self.lock().records.get(uid) {
            Some(r) => Known {
                written: r.written.clone(),
                written_at: r.written_at,
                previous: r.computed.clone(),
            },
            None => Known {
                written: stored.clone(),
                written_at: None,
                previous: stored.clone(),
            },
        }
    }

    /// Records the status computed for `uid` at `now`, and that it was written then when
    /// `written`; `known` is what [`Self::known`] returned before.
    pub fn record(
        &self,
        uid: &str,
        known: &Known,
        computed: &SnapshotScheduleStatus,
        written: bool,
        now: Timestamp,
    ) {
        let mut m = self.lock();
        let record = if written {
            Record {
                written: computed.clone(),
                written_at: Some(now),
                computed: computed.clone(),
                touched: now,
            }
        } else {
            Record {
                written: known.written.clone(),
                written_at: known.written_at,
                computed: computed.clone(),
                touched: now,
            }
        };
        m.records.insert(uid.to_owned(), record);
        if m.last_sweep
            .is_none_or(|t| now.duration_since(t) > SWEEP_EVERY)
        {
            m.last_sweep = Some(now);
            m.records
                .retain(|_, r| now.duration_since(r.touched) < FORGET_AFTER);
        }
    }

    /// How many objects are remembered.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
