#![allow(clippy::unwrap_used)]

use tidepool_api::PoolCapabilities;
use tidepool_wire::{DatasetInventory, PoolHealth, SnapshotInfo};

use super::*;
use crate::owner::schedule_owner;

fn ds(s: &str) -> DatasetName {
    s.parse().unwrap()
}

fn snap(name: &str, txg: u64, owner: Option<&Owner>) -> SnapshotInfo {
    SnapshotInfo {
        name: name.parse().unwrap(),
        guid: 1000 + txg,
        createtxg: txg,
        creation: Timestamp::from_second(1_700_000_000 + i64::try_from(txg).unwrap() * 3600)
            .unwrap(),
        owner: owner.cloned(),
        held: false,
    }
}

fn pool(datasets: Vec<DatasetInventory>) -> PoolInventory {
    PoolInventory {
        pool: "tank".parse().unwrap(),
        health: PoolHealth::Online,
        size_bytes: 0,
        allocated_bytes: 0,
        free_bytes: 0,
        capabilities: PoolCapabilities::default(),
        datasets,
        unnamed_datasets: 0,
    }
}

fn sel(name: &str, recursive: bool, exclude: &[&str]) -> DatasetSelector {
    DatasetSelector {
        name: ds(name),
        recursive,
        exclude: exclude.iter().map(|e| ds(e)).collect(),
    }
}

fn tree() -> PoolInventory {
    pool(
        [
            "tank",
            "tank/a",
            "tank/a/x",
            "tank/a/x/deep",
            "tank/a/y",
            "tank/ab",
        ]
        .iter()
        .map(|d| DatasetInventory::with_snapshots(ds(d), vec![]))
        .collect(),
    )
}

#[test]
fn recursive_takes_descendants_and_honours_excludes() {
    let inv = tree();
    assert_eq!(
        expand(&[sel("tank/a", false, &[])], &inv).unwrap(),
        vec![ds("tank/a")]
    );
    assert_eq!(
        expand(&[sel("tank/a", true, &[])], &inv).unwrap(),
        vec![
            ds("tank/a"),
            ds("tank/a/x"),
            ds("tank/a/x/deep"),
            ds("tank/a/y")
        ]
    );
    assert_eq!(
        expand(&[sel("tank/a", true, &["tank/a/x"])], &inv).unwrap(),
        vec![ds("tank/a"), ds("tank/a/y")]
    );
    assert_eq!(
        expand(&[sel("tank/nope", false, &[])], &inv),
        Err(DatasetMissing {
            dataset: ds("tank/nope")
        })
    );
}

#[test]
fn last_run_and_pruning_see_only_this_owner() {
    let me = schedule_owner("ns", "s").unwrap();
    let other = schedule_owner("ns", "other").unwrap();
    let inv = pool(vec![DatasetInventory::with_snapshots(
        ds("tank/a"),
        vec![
            snap("tidepool_20260101T000000Z_s", 1, Some(&me)),
            snap("tidepool_20260101T010000Z_s", 2, Some(&me)),
            snap("tidepool_20260101T020000Z_s", 3, Some(&me)),
            snap("tidepool_20260102T000000Z_other", 4, Some(&other)),
            snap("manual", 5, None),
        ],
    )]);
    let datasets = [ds("tank/a")];
    assert_eq!(
        last_run(&inv, &datasets, &me, "tidepool"),
        Some("2026-01-01T02:00:00Z".parse().unwrap())
    );
    assert_eq!(owned_count(&inv, &datasets, &me), 3);
    let keep_one = Retention {
        keep_last: Some(1),
        ..Retention::default()
    };
    let (destroy, keeping) = prune(&keep_one, &jiff::tz::TimeZone::UTC, &inv, &datasets, &me);
    let names: Vec<String> = destroy.iter().map(|r| r.snapshot.to_string()).collect();
    assert_eq!(
        names,
        vec![
            "tank/a@tidepool_20260101T000000Z_s",
            "tank/a@tidepool_20260101T010000Z_s"
        ]
    );
    // The agent is told what justifies them: the newest, which stays.
    let kept: Vec<String> = keeping.iter().map(|r| r.snapshot.to_string()).collect();
    assert_eq!(kept, vec!["tank/a@tidepool_20260101T020000Z_s"]);
    assert_eq!(all_owned(&inv, &other).len(), 1);
    assert!(all_owned(&inv, &schedule_owner("ns", "nobody").unwrap()).is_empty());
}

#[test]
fn a_retry_takes_only_the_datasets_still_missing_the_name() {
    let me = schedule_owner("ns", "s").unwrap();
    let short: SnapshotShortName = "tidepool_20260101T000000Z_s".parse().unwrap();
    let inv = pool(vec![
        DatasetInventory::with_snapshots(ds("tank/a"), vec![snap(short.as_str(), 1, Some(&me))]),
        DatasetInventory::with_snapshots(ds("tank/b"), vec![]),
    ]);
    assert_eq!(
        still_to_take(&inv, &[ds("tank/a"), ds("tank/b")], &short),
        vec![ds("tank/b")]
    );
}

#[test]
fn a_dataset_is_outside_the_roots_unless_a_root_contains_it() {
    let roots = vec!["tank/data".to_owned(), "backup".to_owned()];
    assert!(!outside_roots(&ds("tank/data"), &roots));
    assert!(!outside_roots(&ds("tank/data/app"), &roots));
    assert!(!outside_roots(&ds("backup/x"), &roots));
    assert!(outside_roots(&ds("tank/database"), &roots));
    assert!(outside_roots(&ds("tank"), &roots));
    assert!(outside_roots(&ds("tank/data"), &[]));
}

#[test]
fn a_taken_set_joins_the_inventory_so_retention_counts_it() {
    let me = schedule_owner("ns", "s").unwrap();
    let old = "tidepool_20260101T000000Z_s";
    let inv = pool(vec![
        DatasetInventory::with_snapshots(ds("tank/a"), vec![snap(old, 1, Some(&me))]),
        DatasetInventory::with_snapshots(ds("tank/b"), vec![snap(old, 1, Some(&me))]),
    ]);
    let new: SnapshotShortName = "tidepool_20260101T010000Z_s".parse().unwrap();
    let taken = vec![
        SnapshotRef {
            snapshot: ds("tank/a").snapshot(&new).unwrap(),
            guid: 77,
        },
        // Already listed (a retry that raced a listing): not added twice.
        SnapshotRef {
            snapshot: format!("tank/b@{old}").parse().unwrap(),
            guid: 1001,
        },
        // A dataset the inventory does not list is left out, not invented.
        SnapshotRef {
            snapshot: ds("tank/c").snapshot(&new).unwrap(),
            guid: 78,
        },
    ];
    let created = SetCreated {
        createtxg: 9,
        creation: Timestamp::from_second(1_700_100_000).unwrap(),
    };
    let after = with_taken(&inv, &taken, created, &me);
    let a = after.dataset(&ds("tank/a")).unwrap();
    assert_eq!(a.snapshots.len(), 2);
    let added = a.snapshot_by_guid(77).unwrap();
    assert_eq!(
        (added.name.as_str(), added.createtxg, added.creation),
        (new.as_str(), 9, created.creation)
    );
    assert_eq!((added.owner.as_ref(), added.held), (Some(&me), false));
    assert_eq!(after.dataset(&ds("tank/b")).unwrap().snapshots.len(), 1);
    assert!(after.dataset(&ds("tank/c")).is_none());
    // keepLast 1 now keeps the new one and destroys the old.
    let keep_one = Retention {
        keep_last: Some(1),
        ..Retention::default()
    };
    let (destroy, _) = prune(
        &keep_one,
        &jiff::tz::TimeZone::UTC,
        &after,
        &[ds("tank/a")],
        &me,
    );
    assert_eq!(destroy.len(), 1);
    assert_eq!(destroy[0].snapshot.to_string(), format!("tank/a@{old}"));
}
