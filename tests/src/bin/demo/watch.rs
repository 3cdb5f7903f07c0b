//! What the demo watches: each schedule's snapshots as zfs on the node lists them (owned
//! by that schedule, set locally), remembered across readings so that what retention
//! pruned can be counted.

use std::collections::{BTreeMap, BTreeSet};

use tidepool_tests::snapshots::owned_once;
use tidepool_tests::zfs_vm::ZfsVm;

pub struct Tracked {
    pub schedule: String,
    pub owner: String,
    /// Where its datasets lie (the listing's root).
    pub root: String,
    /// Every set (short name) seen so far.
    pub seen: BTreeSet<String>,
    /// The sets in zfs at the last reading, with the number of datasets each is on.
    pub present: BTreeMap<String, usize>,
}

impl Tracked {
    pub fn new(namespace: &str, schedule: &str, root: &str) -> Self {
        Self {
            schedule: schedule.to_owned(),
            owner: format!("SnapshotSchedule/{namespace}/{schedule}"),
            root: root.to_owned(),
            seen: BTreeSet::new(),
            present: BTreeMap::new(),
        }
    }

    pub async fn read(&mut self, vm: &ZfsVm) {
        self.present = owned_once(vm, &self.root, &self.owner)
            .await
            .into_iter()
            .map(|(short, snaps)| (short, snaps.len()))
            .collect();
        self.seen.extend(self.present.keys().cloned());
    }

    /// Sets seen earlier and no longer in zfs: what retention destroyed.
    pub fn pruned(&self) -> usize {
        self.seen
            .iter()
            .filter(|s| !self.present.contains_key(*s))
            .count()
    }

    /// One line for the progress display.
    pub fn line(&self) -> String {
        // Names sort by time, so the greatest is the newest.
        let newest = self.present.keys().next_back().map_or("-", String::as_str);
        format!(
            "{}: {} in zfs (newest {newest}), {} taken, {} pruned",
            self.schedule,
            self.present.len(),
            self.seen.len(),
            self.pruned()
        )
    }
}
