//! When a dataset's cached snapshots may be reused: the `snapshots_changed` rules of the
//! module docs, as pure functions of what was listed.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use tidepool_api::names::DatasetName;
use tidepool_wire::operation::InventoryGeneration;

/// A dataset's `snapshots_changed` as listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotsChanged {
    /// `-`: no snapshot was ever created or destroyed on it.
    Never,
    /// Seconds since the Unix epoch.
    At(i64),
    /// Not a number: never trusted.
    Unreadable,
}

impl SnapshotsChanged {
    pub(super) fn from_column(value: Option<&str>) -> Self {
        match value {
            None => Self::Never,
            Some(v) => v.parse().map_or(Self::Unreadable, Self::At),
        }
    }
}

/// What was known of a dataset when its snapshots were last read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub snapshots_changed: SnapshotsChanged,
    /// Whole seconds since the epoch at which that read started.
    pub read_at: i64,
}

/// Whether the snapshots read under `stamp` are still all of them, given the value listed
/// now. The second of the read itself is not trusted (see the module docs).
pub fn can_reuse(stamp: Stamp, now_listed: SnapshotsChanged) -> bool {
    if stamp.snapshots_changed != now_listed {
        return false;
    }
    match now_listed {
        SnapshotsChanged::Never => true,
        SnapshotsChanged::At(t) => t < stamp.read_at,
        SnapshotsChanged::Unreadable => false,
    }
}

/// Whether the cached snapshots of `dataset` still hold: it has a stamp, the agent did
/// not change it itself, and its `snapshots_changed` as listed now passes [`can_reuse`]
/// (a dataset missing from the listing's values is never trusted).
pub fn reusable(
    dataset: &DatasetName,
    observed: &HashMap<DatasetName, SnapshotsChanged>,
    stamps: &HashMap<DatasetName, Stamp>,
    dirty: &HashSet<DatasetName>,
) -> bool {
    let Some(&stamp) = stamps.get(dataset) else {
        return false;
    };
    let listed = observed
        .get(dataset)
        .copied()
        .unwrap_or(SnapshotsChanged::Unreadable);
    !dirty.contains(dataset) && can_reuse(stamp, listed)
}

/// The datasets of `listed` whose snapshots must be read again: not [`reusable`], or with
/// no cached inventory (`cached` false). When nothing changed this is empty, and the
/// refresh makes no call beyond the dataset listing.
pub fn to_reread<'a>(
    listed: impl IntoIterator<Item = &'a DatasetName>,
    observed: &HashMap<DatasetName, SnapshotsChanged>,
    stamps: &HashMap<DatasetName, Stamp>,
    dirty: &HashSet<DatasetName>,
    cached: impl Fn(&DatasetName) -> bool,
) -> Vec<DatasetName> {
    listed
        .into_iter()
        .filter(|d| !(reusable(d, observed, stamps, dirty) && cached(d)))
        .cloned()
        .collect()
}

/// The next generation: larger than the previous one and than the clock's microseconds,
/// so a restarted agent never repeats a generation a controller still holds.
pub fn next_generation(
    previous: Option<InventoryGeneration>,
    now: Timestamp,
) -> InventoryGeneration {
    let clock = u64::try_from(now.as_microsecond()).unwrap_or(0);
    let after = previous.map_or(0, |g| g.0.saturating_add(1));
    InventoryGeneration(after.max(clock))
}
#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(changed: SnapshotsChanged, read_at: i64) -> Stamp {
        Stamp {
            snapshots_changed: changed,
            read_at,
        }
    }

    #[test]
    fn reuse_only_what_cannot_have_moved() {
        use SnapshotsChanged::*;
        // Changed before the second of the read, and not since: reuse.
        assert!(can_reuse(stamp(At(99), 100), At(99)));
        // Changed in the very second of the read: it may have changed after the read.
        assert!(!can_reuse(stamp(At(100), 100), At(100)));
        // Moved.
        assert!(!can_reuse(stamp(At(99), 100), At(101)));
        assert!(!can_reuse(stamp(Never, 100), At(50)));
        assert!(can_reuse(stamp(Never, 100), Never));
        // A value that is not a number is never trusted.
        assert!(!can_reuse(stamp(Unreadable, 100), Unreadable));
    }

    #[test]
    fn columns_read_as_stamps() {
        assert_eq!(SnapshotsChanged::from_column(None), SnapshotsChanged::Never);
        assert_eq!(
            SnapshotsChanged::from_column(Some("1764600000")),
            SnapshotsChanged::At(1_764_600_000)
        );
        assert_eq!(
            SnapshotsChanged::from_column(Some("Tue Dec 1")),
            SnapshotsChanged::Unreadable
        );
    }

    fn ds(name: &str) -> DatasetName {
        name.parse().unwrap_or_else(|e| panic!("{name}: {e:?}"))
    }

    #[test]
    fn only_what_moved_is_read_again() {
        use SnapshotsChanged::*;
        let names: Vec<DatasetName> = ["tank", "tank/a", "tank/b", "tank/c", "tank/d", "tank/e"]
            .iter()
            .map(|n| ds(n))
            .collect();
        let stamps: HashMap<DatasetName, Stamp> = names
            .iter()
            .take(5)
            .map(|d| (d.clone(), stamp(At(90), 100)))
            .collect();
        let mut observed: HashMap<DatasetName, SnapshotsChanged> =
            names.iter().map(|d| (d.clone(), At(90))).collect();
        let none = HashSet::new();
        // Nothing moved: nothing to read (but the dataset never read before, tank/e).
        assert_eq!(
            to_reread(&names, &observed, &stamps, &none, |_| true),
            vec![ds("tank/e")]
        );
        // One new snapshot on tank/b moves its value: tank/b alone (and tank/e).
        observed.insert(ds("tank/b"), At(101));
        // tank/c is missing from the listing's values: never trusted.
        observed.remove(&ds("tank/c"));
        // The agent snapshotted tank/d itself.
        let dirty: HashSet<DatasetName> = [ds("tank/d")].into_iter().collect();
        // tank/a has a stamp but no cached inventory.
        let cached = |d: &DatasetName| d != &ds("tank/a");
        assert_eq!(
            to_reread(&names, &observed, &stamps, &dirty, cached),
            ["tank/a", "tank/b", "tank/c", "tank/d", "tank/e"]
                .iter()
                .map(|n| ds(n))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn generations_grow_across_restarts() {
        let t0 = Timestamp::from_second(1_764_600_000).unwrap_or_else(|e| panic!("{e}"));
        let first = next_generation(None, t0);
        assert!(next_generation(Some(first), t0) > first);
        // A restarted agent (no previous generation) at a later time starts above.
        let later = t0 + jiff::SignedDuration::from_secs(1);
        assert!(next_generation(None, later) > next_generation(Some(first), t0));
    }
}
