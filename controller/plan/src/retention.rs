//! Which snapshots retention destroys.
//!
//! Only snapshots whose owner ([`SnapshotInfo::owner`], set only from a `tidepool.dev:owner`
//! value set locally on the snapshot) is the object are considered; every other snapshot
//! (foreign, another object's, another kind's of the same name, inherited or received
//! values) is invisible here and never destroyed.
//!
//! Snapshots are ordered by `createtxg` (ties, several snapshots of one transaction group,
//! by GUID): the order ZFS wrote them, which a clock step cannot change. `creation` only
//! says which period a snapshot falls into. An owned snapshot is kept if any rule keeps it:
//! - it is the newest owned snapshot of its dataset (a dataset never loses its last one);
//! - `keepLast: N`: it is among the newest N;
//! - `keepWithin: d`: it was created less than `d` before the newest owned snapshot, as
//!   restic counts, not before `now`: when snapshots stop being taken (a full pool, a failing
//!   agent, a suspended schedule) the window stays where the last snapshot is, so repeated
//!   runs cannot empty the dataset down to one snapshot. "The newest" is by `createtxg`; a
//!   snapshot stamped later than it (from before a clock step) is kept too;
//! - `hourly`/`daily`/`weekly`/`monthly`/`yearly: N`: walking from the newest to the
//!   oldest, it is the first snapshot of a new period (the newest of that period), for the
//!   first N periods that have snapshots; periods are taken from `creation` in the schedule's
//!   time zone, weeks are ISO weeks (Monday first, week 53 included), hours are civil hours
//!   (the two 02:xx hours of a DST fold are one period). A rule whose N is not used up by
//!   the periods present also keeps the oldest snapshot, as restic ≥ 0.16 (restic#4366) and
//!   borg 1.2 (borg#5332) do: `{yearly: 2}` over two snapshots of one day keeps both. Each
//!   rule counts on its own over all snapshots (restic's semantics; borg skips snapshots an
//!   earlier rule kept). After a clock step backwards a period can come round again in the
//!   walk; it then counts again (keeps more, never less);
//! - it is held (`zfs hold`: someone else needs it);
//! - its GUID is protected: the newest common snapshot of a replication, or a snapshot a
//!   running transfer uses (the caller passes both as [`Protections`]).
//!
//! The rest is destroyed. Nothing here reads a clock, and `now` is not an input: the
//! decision depends on the snapshots alone. Planning again after the destroys have happened
//! destroys nothing more (the property tests check it). Source and target retention are
//! independent: each is a call of [`plan_dataset`] with its own rules, owner and protections.
//!
//! An inventory already in ascending order (as `zfs list -s createtxg` gives it) is not
//! sorted again.

mod periods;
mod reasons;

use std::collections::HashMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use tidepool_api::{DatasetName, NameError, Owner, Retention, SnapshotName};
use tidepool_wire::operation::SnapshotRef;

use crate::inventory::{DatasetInventory, SnapshotInfo};
use periods::{OffsetCache, Period, periods};
pub use reasons::{DestroyReason, KeepReasons};

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
    /// Only snapshots owned by this object are considered.
    pub owner: &'a Owner,
    pub protections: &'a Protections,
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
    pub fn message(&self, owner: &Owner) -> String {
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

impl DatasetRetention<'_> {
    /// The plan as the agent's `DestroySnapshots` names it: the snapshots to destroy, and
    /// those kept that justify them (`keeping`, which the agent checks again). Both empty
    /// when nothing is destroyed.
    pub fn destroy_request(&self) -> (Vec<SnapshotRef>, Vec<SnapshotRef>) {
        if self.destroy.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let named = |s: &SnapshotInfo| {
            self.dataset
                .snapshot(&s.name)
                .ok()
                .map(|snapshot| SnapshotRef {
                    snapshot,
                    guid: s.guid,
                })
        };
        (
            self.destroy
                .iter()
                .filter_map(|d| named(d.snapshot))
                .collect(),
            self.keep.iter().filter_map(|k| named(k.snapshot)).collect(),
        )
    }
}

/// Plan retention for one dataset. `retention: None` in the spec means "keep everything":
/// do not call this then.
pub fn plan_dataset<'a>(
    rules: &RetentionRules<'_>,
    inventory: &'a DatasetInventory,
) -> DatasetRetention<'a> {
    let owner = Some(rules.owner);
    let mut owned: Vec<&'a SnapshotInfo> = inventory
        .snapshots
        .iter()
        .filter(|s| s.owner.as_ref() == owner)
        .collect();
    let not_owned = inventory.snapshots.len() - owned.len();
    if owned.is_sorted_by_key(|s| order_key(s)) {
        owned.reverse();
    } else {
        sort_newest_first(&mut owned);
    }

    let mut reasons = vec![KeepReasons::default(); owned.len()];
    apply_rules(rules, &owned, &mut reasons);

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
) -> Vec<DatasetRetention<'a>> {
    inventories
        .iter()
        .map(|inv| plan_dataset(rules, inv))
        .collect()
}

/// The order of snapshots in a dataset: the transaction group that wrote each, and the
/// GUID to order those one `zfs snapshot` call made in a single group.
fn order_key(s: &SnapshotInfo) -> (u64, u64) {
    (s.createtxg, s.guid)
}

/// Sort newest first. Sorting the references directly chases a pointer per comparison;
/// sorting compact keys and then gathering is several times faster on a large unordered
/// inventory.
fn sort_newest_first(owned: &mut Vec<&SnapshotInfo>) {
    let mut keys: Vec<(u64, u64, usize)> = owned
        .iter()
        .enumerate()
        .map(|(i, s)| (s.createtxg, s.guid, i))
        .collect();
    keys.sort_unstable_by_key(|k| std::cmp::Reverse((k.0, k.1)));
    let sorted: Vec<&SnapshotInfo> = keys.iter().map(|k| owned[k.2]).collect();
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
) {
    let r = rules.retention;
    if let Some(first) = reasons.first_mut() {
        first.insert(KeepReasons::NEWEST);
    }
    for reason in reasons.iter_mut().take(count(r.keep_last)) {
        reason.insert(KeepReasons::LAST);
    }
    if let (Some(within), Some(newest)) = (&r.keep_within, newest_first.first()) {
        let cutoff = newest
            .creation
            .checked_sub(within.as_std())
            .unwrap_or(Timestamp::MIN);
        // No early exit: after a clock step an older snapshot may carry a later `creation`.
        for (s, reason) in newest_first.iter().zip(reasons.iter_mut()) {
            if s.creation > cutoff {
                reason.insert(KeepReasons::WITHIN);
            }
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

/// The period buckets: the first snapshot of each new period, for the first N periods, and
/// the oldest snapshot while N is not used up.
fn apply_buckets(
    rules: &RetentionRules<'_>,
    newest_first: &[&SnapshotInfo],
    reasons: &mut [KeepReasons],
) {
    let r = rules.retention;
    let mut left = [
        count(r.hourly),
        count(r.daily),
        count(r.weekly),
        count(r.monthly),
        count(r.yearly),
    ];
    let mut last: [Option<Period>; 5] = [None; 5];
    let mut offsets = OffsetCache::new(rules.time_zone);
    let oldest = newest_first.len().saturating_sub(1);
    for (i, (s, reason)) in newest_first.iter().zip(reasons.iter_mut()).enumerate() {
        if left.iter().all(|n| *n == 0) {
            break;
        }
        let its_periods = periods(offsets.civil(s.creation));
        for b in 0..KeepReasons::BUCKETS.len() {
            if left[b] > 0 && (last[b] != Some(its_periods[b]) || i == oldest) {
                last[b] = Some(its_periods[b]);
                left[b] -= 1;
                reason.insert(KeepReasons::BUCKETS[b]);
            }
        }
    }
}

#[cfg(test)]
mod tests;
