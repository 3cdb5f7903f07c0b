//! Which snapshots retention destroys.
//!
//! Only snapshots whose `tidepool.dev:owner` property names the object are considered;
//! every other snapshot is invisible here and never destroyed. An owned snapshot is kept if
//! any rule keeps it:
//! - it is the newest owned snapshot of its dataset (a dataset never loses its last one);
//! - `keepLast`: it is among the newest N;
//! - `keepWithin`: it is younger than the duration;
//! - `hourly`/`daily`/`weekly`/`monthly`/`yearly`: it is the newest snapshot of one of the
//!   last N periods that have snapshots (as restic and borg count them), periods taken in
//!   the schedule's time zone and ISO weeks;
//! - it is held (`zfs hold`: someone else needs it);
//! - its GUID is protected: the newest common snapshot of a replication, or a snapshot a
//!   running transfer uses (the caller passes both as [`Protections`]).
//!
//! The rest is destroyed. Planning again after the destroys have happened destroys nothing
//! more (the property tests check it). Source and target retention are independent: each
//! is a call of [`plan_dataset`] with its own rules, owner and protections.
//!
//! Snapshots are ordered newest first by `(creation, createtxg)`; an inventory already in
//! ascending order (as `zfs list -s createtxg` gives it) is not sorted again.

use std::collections::HashMap;
use std::fmt;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use tidepool_api::{DatasetName, NameError, Retention, SnapshotName};

use crate::inventory::{DatasetInventory, SnapshotInfo};

/// Why a GUID may not be destroyed, whatever the rules say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protection {
    /// The newest common snapshot of a replication (`<namespace>/<name>` of the policy).
    ReplicationBase { policy: String },
    /// A transfer under way sends from or to it.
    TransferInUse { policy: String },
}

/// The GUIDs that retention must keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protections {
    by_guid: HashMap<u64, Protection>,
}

impl Protections {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn protect(&mut self, guid: u64, why: Protection) -> &mut Self {
        self.by_guid.insert(guid, why);
        self
    }

    pub fn get(&self, guid: u64) -> Option<&Protection> {
        self.by_guid.get(&guid)
    }

    pub fn is_empty(&self) -> bool {
        self.by_guid.is_empty()
    }

    pub fn guids(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_guid.keys().copied()
    }
}

/// The rules of one object, ready to apply.
#[derive(Debug, Clone)]
pub struct RetentionRules<'a> {
    pub retention: &'a Retention,
    /// The time zone of the period buckets (the schedule's `timeZone`).
    pub time_zone: &'a TimeZone,
    /// `<namespace>/<name>`: only snapshots whose owner property is this are considered.
    pub owner: &'a str,
    pub protections: &'a Protections,
}

/// Why a snapshot is kept: a set of these bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeepReasons(u16);

impl KeepReasons {
    pub const NEWEST: Self = Self(1 << 0);
    pub const LAST: Self = Self(1 << 1);
    pub const WITHIN: Self = Self(1 << 2);
    pub const HOURLY: Self = Self(1 << 3);
    pub const DAILY: Self = Self(1 << 4);
    pub const WEEKLY: Self = Self(1 << 5);
    pub const MONTHLY: Self = Self(1 << 6);
    pub const YEARLY: Self = Self(1 << 7);
    pub const HELD: Self = Self(1 << 8);
    pub const REPLICATION_BASE: Self = Self(1 << 9);
    pub const TRANSFER_IN_USE: Self = Self(1 << 10);

    const NAMES: [(Self, &'static str); 11] = [
        (Self::NEWEST, "newest"),
        (Self::LAST, "keepLast"),
        (Self::WITHIN, "keepWithin"),
        (Self::HOURLY, "hourly"),
        (Self::DAILY, "daily"),
        (Self::WEEKLY, "weekly"),
        (Self::MONTHLY, "monthly"),
        (Self::YEARLY, "yearly"),
        (Self::HELD, "held"),
        (Self::REPLICATION_BASE, "replication base"),
        (Self::TRANSFER_IN_USE, "transfer in use"),
    ];

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// Kept whatever the rules say (newest, held, protected).
    pub fn is_safety(self) -> bool {
        self.0
            & (Self::NEWEST.0 | Self::HELD.0 | Self::REPLICATION_BASE.0 | Self::TRANSFER_IN_USE.0)
            != 0
    }
}

impl fmt::Display for KeepReasons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (bit, name) in Self::NAMES {
            if self.contains(bit) {
                if !first {
                    f.write_str(", ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Why a snapshot is destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestroyReason {
    /// Owned by the object, and no rule keeps it.
    Expired,
}

impl DestroyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DestroyReason::Expired => "RetentionExpired",
        }
    }
}

/// One snapshot to destroy (`zfs destroy dataset@name`), borrowed from the inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destroy<'a> {
    pub snapshot: &'a SnapshotInfo,
    pub reason: DestroyReason,
}

impl Destroy<'_> {
    pub fn full_name(&self, dataset: &DatasetName) -> Result<SnapshotName, NameError> {
        dataset.snapshot(&self.snapshot.name)
    }

    /// A sentence for events and logs.
    pub fn message(&self, owner: &str) -> String {
        format!(
            "{} (created {}) is owned by {owner} and kept by no retention rule; it is not the newest, not held and not a replication base",
            self.snapshot.name, self.snapshot.creation
        )
    }
}

/// One snapshot kept, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep<'a> {
    pub snapshot: &'a SnapshotInfo,
    pub reasons: KeepReasons,
}

/// The retention plan of one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRetention<'a> {
    pub dataset: &'a DatasetName,
    /// Oldest first, so a destroy that is cut short leaves the newest snapshots.
    pub destroy: Vec<Destroy<'a>>,
    /// Newest first.
    pub keep: Vec<Keep<'a>>,
    /// Snapshots of other owners (or none), never considered.
    pub not_owned: usize,
}

/// Plan retention for one dataset. `retention: None` in the spec means "keep everything":
/// do not call this then.
pub fn plan_dataset<'a>(
    rules: &RetentionRules<'_>,
    inventory: &'a DatasetInventory,
    now: Timestamp,
) -> DatasetRetention<'a> {
    let owner = rules.owner;
    let mut owned: Vec<&'a SnapshotInfo> = inventory
        .snapshots
        .iter()
        .filter(|s| s.owner.as_deref() == Some(owner))
        .collect();
    let not_owned = inventory.snapshots.len() - owned.len();
    let key = |s: &SnapshotInfo| (s.creation, s.createtxg);
    if owned.is_sorted_by_key(|s| key(s)) {
        owned.reverse();
    } else if !owned.is_sorted_by(|a, b| key(a) >= key(b)) {
        sort_newest_first(&mut owned);
    }

    let mut reasons = vec![KeepReasons::default(); owned.len()];
    apply_rules(rules, &owned, &mut reasons, now);

    let mut destroy = Vec::new();
    let mut keep = Vec::new();
    for (snapshot, reasons) in owned.iter().zip(&reasons) {
        if reasons.is_empty() {
            destroy.push(Destroy {
                snapshot,
                reason: DestroyReason::Expired,
            });
        } else {
            keep.push(Keep {
                snapshot,
                reasons: *reasons,
            });
        }
    }
    destroy.reverse();
    DatasetRetention {
        dataset: &inventory.dataset,
        destroy,
        keep,
        not_owned,
    }
}

/// Plan retention for each dataset.
pub fn plan<'a>(
    rules: &RetentionRules<'_>,
    inventories: &'a [DatasetInventory],
    now: Timestamp,
) -> Vec<DatasetRetention<'a>> {
    inventories
        .iter()
        .map(|inv| plan_dataset(rules, inv, now))
        .collect()
}

/// Sort by `(creation, createtxg)`, newest first. Sorting the references directly chases a
/// pointer per comparison; sorting compact keys and then gathering is several times faster
/// on a large unordered inventory.
fn sort_newest_first(owned: &mut Vec<&SnapshotInfo>) {
    let mut keys: Vec<(i64, i32, u64, usize)> = owned
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                s.creation.as_second(),
                s.creation.subsec_nanosecond(),
                s.createtxg,
                i,
            )
        })
        .collect();
    keys.sort_unstable_by_key(|k| std::cmp::Reverse((k.0, k.1, k.2)));
    let sorted: Vec<&SnapshotInfo> = keys.iter().map(|k| owned[k.3]).collect();
    *owned = sorted;
}

fn count(n: Option<i32>) -> usize {
    n.map_or(0, |n| usize::try_from(n).unwrap_or(0))
}

/// `newest_first` is ordered newest first.
fn apply_rules(
    rules: &RetentionRules<'_>,
    newest_first: &[&SnapshotInfo],
    reasons: &mut [KeepReasons],
    now: Timestamp,
) {
    let r = rules.retention;
    if let Some(first) = reasons.first_mut() {
        first.insert(KeepReasons::NEWEST);
    }
    for reason in reasons.iter_mut().take(count(r.keep_last)) {
        reason.insert(KeepReasons::LAST);
    }
    if let Some(within) = &r.keep_within {
        let cutoff = now.checked_sub(within.as_std()).unwrap_or(Timestamp::MIN);
        for (s, reason) in newest_first.iter().zip(reasons.iter_mut()) {
            if s.creation <= cutoff {
                break;
            }
            reason.insert(KeepReasons::WITHIN);
        }
    }
    apply_buckets(rules, newest_first, reasons);
    for (s, reason) in newest_first.iter().zip(reasons.iter_mut()) {
        if s.held {
            reason.insert(KeepReasons::HELD);
        }
    }
    if !rules.protections.is_empty() {
        for (s, reason) in newest_first.iter().zip(reasons.iter_mut()) {
            match rules.protections.get(s.guid) {
                Some(Protection::ReplicationBase { .. }) => {
                    reason.insert(KeepReasons::REPLICATION_BASE)
                }
                Some(Protection::TransferInUse { .. }) => {
                    reason.insert(KeepReasons::TRANSFER_IN_USE)
                }
                None => {}
            }
        }
    }
}

/// The period buckets: newest snapshot of each of the last N periods that have snapshots.
fn apply_buckets(
    rules: &RetentionRules<'_>,
    newest_first: &[&SnapshotInfo],
    reasons: &mut [KeepReasons],
) {
    let r = rules.retention;
    let bits = [
        KeepReasons::HOURLY,
        KeepReasons::DAILY,
        KeepReasons::WEEKLY,
        KeepReasons::MONTHLY,
        KeepReasons::YEARLY,
    ];
    let mut left = [
        count(r.hourly),
        count(r.daily),
        count(r.weekly),
        count(r.monthly),
        count(r.yearly),
    ];
    let mut last_key: [Option<i64>; 5] = [None; 5];
    let mut offsets = OffsetCache::new(rules.time_zone);
    for (s, reason) in newest_first.iter().zip(reasons.iter_mut()) {
        if left.iter().all(|n| *n == 0) {
            break;
        }
        let keys = period_keys(offsets.civil(s.creation));
        for i in 0..5 {
            if left[i] > 0 && last_key[i] != Some(keys[i]) {
                last_key[i] = Some(keys[i]);
                left[i] -= 1;
                reason.insert(bits[i]);
            }
        }
    }
}

/// Hour, day, ISO week, month and year of a civil time, each as one comparable number.
fn period_keys(dt: jiff::civil::DateTime) -> [i64; 5] {
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
struct OffsetCache<'a> {
    tz: &'a TimeZone,
    /// `[from, until)` where `offset` holds.
    span: Option<(Timestamp, Timestamp, jiff::tz::Offset)>,
}

impl<'a> OffsetCache<'a> {
    fn new(tz: &'a TimeZone) -> Self {
        Self { tz, span: None }
    }

    fn civil(&mut self, t: Timestamp) -> jiff::civil::DateTime {
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

#[cfg(test)]
mod tests;
