#![allow(clippy::unwrap_used)]

use tidepool_api::snapshot_schedule::SnapshotScheduleStatus;
use tidepool_api::{DatasetName, Owner, PoolCapabilities};
use tidepool_wire::{DatasetInventory, PoolHealth, SnapshotInfo};

use super::*;

fn schedule(extra: serde_json::Value) -> SnapshotSchedule {
    let mut spec = serde_json::json!({
        "datasets": [{"name": "tank/db"}],
        "schedule": {"interval": "1h"},
        "retention": {"keepLast": 2},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "tidepool.dev/v1alpha1", "kind": "SnapshotSchedule",
        "metadata": {"name": "db", "namespace": "team", "uid": "u-1",
                     "creationTimestamp": "2026-12-01T00:00:00Z"},
        "spec": spec,
    }))
    .unwrap()
}

fn snap(name: &str, txg: u64, owner: Option<&Owner>) -> SnapshotInfo {
    SnapshotInfo {
        name: name.parse().unwrap(),
        guid: 1000 + txg,
        createtxg: txg,
        creation: "2026-12-02T00:00:00Z".parse::<Timestamp>().unwrap()
            + jiff::SignedDuration::from_hours(i64::try_from(txg).unwrap()),
        owner: owner.cloned(),
        held: false,
    }
}

fn inventory(owner: &Owner) -> PoolInventory {
    let db: DatasetName = "tank/db".parse().unwrap();
    PoolInventory {
        pool: "tank".parse().unwrap(),
        health: PoolHealth::Online,
        size_bytes: 0,
        allocated_bytes: 0,
        free_bytes: 0,
        capabilities: PoolCapabilities::default(),
        datasets: vec![DatasetInventory::with_snapshots(
            db,
            vec![
                snap("tidepool_20261202T010000Z_db", 1, Some(owner)),
                snap("tidepool_20261202T020000Z_db", 2, Some(owner)),
                snap("by-hand", 3, None),
                snap("tidepool_20261202T030000Z_db", 4, Some(owner)),
            ],
        )],
        unnamed_datasets: 0,
    }
}

/// Runs `explain_node` for `obj` over `inv` at `now`.
fn explain(obj: &SnapshotSchedule, inv: &PoolInventory, now: Timestamp) -> NodeExplanation {
    let valid = obj.spec.validate().unwrap();
    let owner = schedule_owner("team", "db").unwrap();
    let old = SnapshotScheduleStatus::default();
    let plan = NodePlan {
        obj,
        valid: &valid,
        uid: "u-1",
        created: "2026-12-01T00:00:00Z".parse().unwrap(),
        owner: &owner,
        label: "db",
        precision: schedule::name_precision(&valid.schedule),
        old: &old,
    };
    let mut out = NodeExplanation {
        node: "node-a".into(),
        pool: None,
        problem: None,
        suspended: false,
        take: None,
        next_due: None,
        retention: None,
    };
    explain_node(&plan, inv, None, now, &mut out).unwrap();
    out
}

fn names<T>(list: &[T], f: impl Fn(&T) -> &tidepool_api::SnapshotName) -> Vec<String> {
    list.iter().map(|x| f(x).to_string()).collect()
}

#[test]
fn a_due_run_is_counted_by_retention_exactly_as_a_run_counts_it() {
    let obj = schedule(serde_json::json!({"trigger": {"manual": "go"}}));
    let owner = schedule_owner("team", "db").unwrap();
    let inv = inventory(&owner);
    let now: Timestamp = "2026-12-03T10:30:00Z".parse().unwrap();
    let e = explain(&obj, &inv, now);

    let take = e.take.unwrap();
    // The 10:00 slot is also due (the last run was a day ago): one run answers both.
    assert_eq!(take.reason, "ManualTriggerAndScheduled");
    assert_eq!(take.name.as_str(), "tidepool_20261203T103000Z_db");
    assert_eq!(
        take.datasets,
        vec!["tank/db".parse::<DatasetName>().unwrap()]
    );

    let plan = &e.retention.unwrap()[0];
    assert_eq!(plan.not_owned, 1, "the snapshot taken by hand");
    assert_eq!(
        names(&plan.keep, |k| &k.snapshot),
        [
            "tank/db@tidepool_20261203T103000Z_db",
            "tank/db@tidepool_20261202T030000Z_db"
        ]
    );
    assert!(plan.keep[0].planned && !plan.keep[1].planned);
    assert_eq!(plan.keep[0].reasons, ["newest", "keepLast"]);
    let shown = names(&plan.destroy, |d| &d.snapshot);
    assert_eq!(
        shown,
        [
            "tank/db@tidepool_20261202T010000Z_db",
            "tank/db@tidepool_20261202T020000Z_db"
        ]
    );

    // What `run_node` prunes after the agent took the snapshot: the same destroys.
    let taken = SnapshotRef {
        snapshot: "tank/db@tidepool_20261203T103000Z_db".parse().unwrap(),
        guid: 99,
    };
    let created = SetCreated {
        createtxg: 5,
        creation: now,
    };
    let after = work::with_taken(&inv, &[taken], created, &owner);
    let valid = obj.spec.validate().unwrap();
    let (retention, tz) = valid.retention().unwrap();
    let datasets = ["tank/db".parse().unwrap()];
    let (pruned, _) = work::prune(retention, tz, &after, &datasets, &owner);
    assert_eq!(names(&pruned, |r| &r.snapshot), shown);
}

#[test]
fn nothing_due_lists_retention_alone_and_suspended_lists_nothing() {
    let owner = schedule_owner("team", "db").unwrap();
    let inv = inventory(&owner);
    // The newest owned snapshot is the 03:00 slot; at 03:30 the next is 04:00.
    let now: Timestamp = "2026-12-02T03:30:00Z".parse().unwrap();
    let e = explain(&schedule(serde_json::json!({})), &inv, now);
    assert!(e.take.is_none());
    assert_eq!(e.next_due, Some("2026-12-02T04:00:00Z".parse().unwrap()));
    let plan = &e.retention.unwrap()[0];
    assert_eq!(
        names(&plan.destroy, |d| &d.snapshot),
        ["tank/db@tidepool_20261202T010000Z_db"]
    );

    let e = explain(&schedule(serde_json::json!({"suspend": true})), &inv, now);
    assert!(e.suspended && e.take.is_none() && e.retention.is_none());

    let e = explain(&schedule(serde_json::json!({"retention": null})), &inv, now);
    assert!(e.retention.is_none(), "no retention: everything is kept");
}
