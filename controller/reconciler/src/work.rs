//! What a schedule asks of one node, decided from that node's pool inventory: which
//! datasets one atomic snapshot covers (recursive and exclude expanded), when the last run
//! was, what retention destroys. Pure: the reconciler does the calls.

use std::collections::BTreeSet;

use jiff::Timestamp;
use tidepool_api::{DatasetName, DatasetSelector, Retention, SnapshotShortName};
use tidepool_plan::parse_snapshot_time;
use tidepool_plan::retention::{self, DatasetRetention, Protections, RetentionRules};
use tidepool_wire::{
    DatasetInventory, Owner, PoolInventory, SetCreated, SnapshotInfo, SnapshotRef,
};

/// A dataset the schedule names is not on the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dataset {dataset} does not exist on this node (spec.datasets)")]
pub struct DatasetMissing {
    pub dataset: DatasetName,
}

/// Whether `dataset` lies outside every root the node's agent published
/// (`ZfsNode.status.allowedRoots`). The agent's inventory leaves such datasets out, so a
/// dataset missing from it is either absent or outside the roots; the two need different
/// fixes (create the dataset, or change the agent's roots). The agent refuses any command
/// on such a dataset whatever this says.
pub fn outside_roots(dataset: &DatasetName, allowed_roots: &[String]) -> bool {
    !allowed_roots
        .iter()
        .filter_map(|r| r.parse::<DatasetName>().ok())
        .any(|root| root.contains(dataset))
}

/// The datasets one run snapshots, in name order: each selector's dataset, and with
/// `recursive` every descendant the inventory lists, minus the excluded subtrees.
pub fn expand(
    selectors: &[DatasetSelector],
    inventory: &PoolInventory,
) -> Result<Vec<DatasetName>, DatasetMissing> {
    let mut out = BTreeSet::new();
    for s in selectors {
        if inventory.dataset(&s.name).is_none_or(|d| !d.exists) {
            return Err(DatasetMissing {
                dataset: s.name.clone(),
            });
        }
        out.insert(s.name.clone());
        if s.recursive {
            for d in &inventory.datasets {
                if d.exists
                    && s.name.contains(&d.dataset)
                    && !s.exclude.iter().any(|e| e.contains(&d.dataset))
                {
                    out.insert(d.dataset.clone());
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// The time written in the newest of `owner`'s snapshots (named with `prefix`) on these
/// datasets: the planner's `last_run`.
pub fn last_run(
    inventory: &PoolInventory,
    datasets: &[DatasetName],
    owner: &Owner,
    prefix: &str,
) -> Option<Timestamp> {
    owned(inventory, datasets, owner)
        .filter_map(|(_, s)| parse_snapshot_time(s.name.as_str(), prefix))
        .max()
}

/// The newest owned snapshot (by creation) on these datasets: its short name and time.
pub fn newest_owned(
    inventory: &PoolInventory,
    datasets: &[DatasetName],
    owner: &Owner,
) -> Option<(SnapshotShortName, Timestamp)> {
    owned(inventory, datasets, owner)
        .max_by_key(|(_, s)| (s.creation, s.createtxg))
        .map(|(_, s)| (s.name.clone(), s.creation))
}

/// How many snapshots `owner` has on these datasets.
pub fn owned_count(inventory: &PoolInventory, datasets: &[DatasetName], owner: &Owner) -> usize {
    owned(inventory, datasets, owner).count()
}

fn owned<'a>(
    inventory: &'a PoolInventory,
    datasets: &'a [DatasetName],
    owner: &'a Owner,
) -> impl Iterator<Item = (&'a DatasetName, &'a tidepool_wire::SnapshotInfo)> + 'a {
    inventory
        .datasets
        .iter()
        .filter(|d| datasets.contains(&d.dataset))
        .flat_map(|d| d.snapshots.iter().map(move |s| (&d.dataset, s)))
        .filter(move |(_, s)| s.owner.as_ref() == Some(owner))
}

/// The datasets that do not have `short` yet: a retry after a crash between the snapshot
/// and the status write finds some or all of them already taken, and `zfs snapshot` would
/// fail on an existing name.
pub fn still_to_take(
    inventory: &PoolInventory,
    datasets: &[DatasetName],
    short: &SnapshotShortName,
) -> Vec<DatasetName> {
    datasets
        .iter()
        .filter(|d| {
            inventory
                .dataset(d)
                .is_none_or(|inv| !inv.snapshots.iter().any(|s| &s.name == short))
        })
        .cloned()
        .collect()
}

/// Retention's plan for each of these datasets: what it destroys (oldest first) and what it
/// keeps, each with its reason. Only `owner`'s snapshots are ever considered (the planner
/// filters on the owner; the agent checks it again, with the GUID, against a fresh read).
/// [`prune`] acts on it; `explain` shows it.
pub fn retention_plans<'a>(
    retention: &Retention,
    time_zone: &jiff::tz::TimeZone,
    inventory: &'a PoolInventory,
    datasets: &[DatasetName],
    owner: &Owner,
) -> Vec<DatasetRetention<'a>> {
    let protections = Protections::new();
    let rules = RetentionRules {
        retention,
        time_zone,
        owner,
        protections: &protections,
    };
    inventory
        .datasets
        .iter()
        .filter(|d| datasets.contains(&d.dataset))
        .map(|d| retention::plan_dataset(&rules, d))
        .collect()
}

/// What retention destroys on these datasets (oldest first per dataset), and what it keeps
/// on the datasets it destroys on: the request's `keeping`, which the agent checks again.
pub fn prune(
    retention: &Retention,
    time_zone: &jiff::tz::TimeZone,
    inventory: &PoolInventory,
    datasets: &[DatasetName],
    owner: &Owner,
) -> (Vec<SnapshotRef>, Vec<SnapshotRef>) {
    let mut destroy = Vec::new();
    let mut keeping = Vec::new();
    for plan in retention_plans(retention, time_zone, inventory, datasets, owner) {
        let (d, k) = plan.destroy_request();
        destroy.extend(d);
        keeping.extend(k);
    }
    (destroy, keeping)
}

/// `inventory` with a set the agent just took added, as a fresh listing would show it: the
/// owner set locally, not held, the set's one `createtxg` and `creation`. A snapshot of a
/// dataset the inventory does not list, or one it already lists, is left as it is.
pub fn with_taken(
    inventory: &PoolInventory,
    taken: &[SnapshotRef],
    created: SetCreated,
    owner: &Owner,
) -> PoolInventory {
    let mut out = inventory.clone();
    for t in taken {
        let dataset = t.snapshot.dataset();
        let Some(d) = out.datasets.iter_mut().find(|d| d.dataset == dataset) else {
            continue;
        };
        if d.snapshot_by_guid(t.guid).is_none() {
            d.snapshots.push(SnapshotInfo {
                name: t.snapshot.short(),
                guid: t.guid,
                createtxg: created.createtxg,
                creation: created.creation,
                owner: Some(owner.clone()),
                held: false,
            });
        }
    }
    out
}

/// `inventory` without these snapshots (matched by name and GUID), as a listing after
/// their destroy would show it.
pub fn without(inventory: &PoolInventory, gone: &[SnapshotRef]) -> PoolInventory {
    let mut out = inventory.clone();
    for g in gone {
        let dataset = g.snapshot.dataset();
        let short = g.snapshot.short();
        if let Some(d) = out.datasets.iter_mut().find(|d| d.dataset == dataset) {
            d.snapshots
                .retain(|s| !(s.name == short && s.guid == g.guid));
        }
    }
    out
}

/// Every snapshot `owner` has anywhere in the pool (for `deletionPolicy: Delete`: the
/// object's snapshots may be on datasets it no longer names).
pub fn all_owned(inventory: &PoolInventory, owner: &Owner) -> Vec<SnapshotRef> {
    inventory
        .datasets
        .iter()
        .flat_map(|d| owned_in(d, owner))
        .collect()
}

/// The snapshots of one dataset that `owner` claimed.
pub fn owned_in(d: &DatasetInventory, owner: &Owner) -> Vec<SnapshotRef> {
    d.snapshots
        .iter()
        .filter(|s| s.owner.as_ref() == Some(owner))
        .filter_map(|s| {
            d.dataset
                .snapshot(&s.name)
                .ok()
                .map(|snapshot| SnapshotRef {
                    snapshot,
                    guid: s.guid,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests;
