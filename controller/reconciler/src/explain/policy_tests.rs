#![allow(clippy::unwrap_used)]

use tidepool_api::DatasetName;
use tidepool_plan::replication::{self as planner, ReplicationInput, TargetAbilities};
use tidepool_wire::SnapshotInfo;

use super::*;

const POLICY: &str = "team/db-offsite";

fn policy(on_divergence: &str) -> ReplicationPolicy {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "tidepool.dev/v1alpha1", "kind": "ReplicationPolicy",
        "metadata": {"name": "db-offsite", "namespace": "team", "uid": "u-1"},
        "spec": {
            "source": {"nodeName": "a", "dataset": "tank/db",
                       "snapshots": {"scheduleName": "db", "intermediates": true}},
            "target": {"node": {"nodeName": "b", "dataset": "backup/db"}},
            "onDivergence": on_divergence,
            "retention": {"keepLast": 1},
        },
    }))
    .unwrap()
}

fn schedule_owner() -> Owner {
    "SnapshotSchedule/team/db".parse().unwrap()
}

fn policy_owner() -> Owner {
    format!("ReplicationPolicy/{POLICY}").parse().unwrap()
}

/// Snapshot `i` of the source: GUID and txg follow from `i`.
fn snap(i: u64) -> SnapshotInfo {
    SnapshotInfo {
        name: format!("tidepool_s{i}_db").parse().unwrap(),
        guid: 0xa000 + i,
        createtxg: 100 + 10 * i,
        creation: "2026-12-01T00:00:00Z".parse::<Timestamp>().unwrap()
            + jiff::SignedDuration::from_hours(i64::try_from(i).unwrap()),
        owner: Some(schedule_owner()),
        held: false,
    }
}

/// Snapshot `i` as received and claimed on the target.
fn received(i: u64) -> SnapshotInfo {
    SnapshotInfo {
        createtxg: 5000 + 7 * i,
        owner: Some(policy_owner()),
        ..snap(i)
    }
}

fn inventory(dataset: &str, snapshots: Vec<SnapshotInfo>) -> DatasetInventory {
    let mut inv = DatasetInventory::absent(dataset.parse::<DatasetName>().unwrap());
    inv.exists = true;
    inv.snapshots = snapshots;
    inv
}

/// An explanation of `src` before the dry run fills it in.
fn nothing_yet(src: &DatasetInventory) -> ReplicationExplanation {
    ReplicationExplanation {
        source: ReplicationEnd {
            node: "a".into(),
            dataset: src.dataset.clone(),
        },
        target: None,
        suspended: false,
        last_common: None,
        divergence: None,
        steps: Vec::new(),
        target_retention: None,
    }
}

/// What the dry run shows for these inventories: the reconcile's planner and target
/// retention, through `describe`.
fn explained(
    obj: &ReplicationPolicy,
    src: &DatasetInventory,
    dst: &DatasetInventory,
) -> ReplicationExplanation {
    let valid = obj.spec.validate().unwrap();
    let owner = policy_owner();
    let selection_owner = schedule_owner();
    let input = ReplicationInput {
        policy: POLICY,
        source: src,
        target: dst,
        send: &obj.spec.send,
        selection: &obj.spec.source.snapshots,
        selection_owner: Some(&selection_owner),
        owner: &owner,
        on_divergence: obj.spec.on_divergence,
        resume_failed: None,
        target_abilities: TargetAbilities::AGENT_POOL,
    };
    let plan = planner::plan(&input, "2026-12-02T00:00:00Z".parse().unwrap());
    let prune = TargetPrune::of(&valid, POLICY, &owner);
    let mut out = nothing_yet(src);
    describe(&plan, prune.as_ref(), dst, &owner, &mut out);
    out
}

#[test]
fn a_new_source_snapshot_is_an_incremental_from_the_last_common_one() {
    let obj = policy("Fail");
    let src = inventory("tank/db", (1..=4).map(snap).collect());
    let dst = inventory("backup/db", (1..=3).map(received).collect());
    let e = explained(&obj, &src, &dst);
    let common = e.last_common.as_ref().unwrap();
    assert_eq!(common.name.as_str(), "tidepool_s3_db");
    assert_eq!(common.guid, 0xa003);
    assert!(e.divergence.is_none());
    let sends: Vec<&PlannedStep> = e
        .steps
        .iter()
        .filter(|s| matches!(s.action, PlannedAction::IncrementalSend { .. }))
        .collect();
    assert_eq!(sends.len(), 1, "{:#?}", e.steps);
    assert_eq!(
        sends[0].action,
        PlannedAction::IncrementalSend {
            base: SendBase::Snapshot("tank/db@tidepool_s3_db".parse().unwrap()),
            to: "tank/db@tidepool_s4_db".parse().unwrap(),
            intermediates: true,
        }
    );
    assert_eq!(sends[0].reason, "Incremental");
    // After the send: the new common snapshot is held on both ends and claimed.
    assert!(
        sends[0].then.iter().any(|t| matches!(
            &t.action,
            PlannedAction::Claim { snapshots }
                if snapshots == &["backup/db@tidepool_s4_db".parse().unwrap()]
        )),
        "{:#?}",
        sends[0].then
    );
    // keepLast 1 on the target: the two older claimed replicas go, the common one stays
    // (it is also the replication base), after the send.
    let r = e.target_retention.as_ref().unwrap();
    assert!(r.after_steps);
    let destroyed: Vec<String> = r
        .plan
        .destroy
        .iter()
        .map(|d| d.snapshot.to_string())
        .collect();
    assert_eq!(
        destroyed,
        ["backup/db@tidepool_s1_db", "backup/db@tidepool_s2_db"]
    );
    assert_eq!(r.plan.keep.len(), 1);
    assert_eq!(
        r.plan.keep[0].snapshot.to_string(),
        "backup/db@tidepool_s3_db"
    );
    assert!(
        r.plan.keep[0]
            .reasons
            .contains(&"replication base".to_owned()),
        "{:?}",
        r.plan.keep[0].reasons
    );
}

#[test]
fn up_to_date_sends_nothing_and_leaves_other_snapshots_out() {
    let obj = policy("Fail");
    let src = inventory("tank/db", (1..=3).map(snap).collect());
    let mut dst = inventory("backup/db", (1..=3).map(received).collect());
    let e = explained(&obj, &src, &dst);
    assert!(
        !e.steps.iter().any(|s| matches!(
            s.action,
            PlannedAction::FullSend { .. } | PlannedAction::IncrementalSend { .. }
        )),
        "{:#?}",
        e.steps
    );
    // A person's snapshot on the target is not the policy's: never considered.
    dst.snapshots.insert(
        0,
        SnapshotInfo {
            owner: None,
            name: "before".parse().unwrap(),
            guid: 0xbeef,
            createtxg: 10,
            ..received(1)
        },
    );
    let e = explained(&obj, &src, &dst);
    assert_eq!(e.target_retention.unwrap().plan.not_owned, 1);
}

#[test]
fn a_snapshot_made_on_the_replica_is_divergence_and_blocks_retention() {
    let obj = policy("Fail");
    let src = inventory("tank/db", (1..=4).map(snap).collect());
    let mut dst = inventory("backup/db", (1..=3).map(received).collect());
    dst.snapshots.push(SnapshotInfo {
        name: "by-hand".parse().unwrap(),
        guid: 0xfeed,
        createtxg: 9000,
        owner: None,
        ..received(3)
    });
    let e = explained(&obj, &src, &dst);
    let d = e.divergence.as_ref().unwrap();
    assert_eq!(d.kind, "SnapshotsAfterCommon");
    assert_eq!(d.newer, ["by-hand".parse().unwrap()]);
    assert_eq!(e.last_common.unwrap().name.as_str(), "tidepool_s3_db");
    assert!(e.steps.is_empty(), "{:#?}", e.steps);
    assert!(
        e.target_retention.is_none(),
        "a blocked plan prunes nothing"
    );

    // With Rotate: the replica is renamed aside and a full send starts anew.
    let e = explained(&policy("Rotate"), &src, &dst);
    assert!(matches!(
        &e.steps[0].action,
        PlannedAction::RotateAside { from, .. } if from.as_str() == "backup/db"
    ));
    assert!(matches!(e.steps[1].action, PlannedAction::FullSend { .. }));
    assert_eq!(e.steps[0].reason, "RotateDiverged");
}

#[test]
fn the_view_reads_back_from_its_json() {
    let obj = policy("Fail");
    let src = inventory("tank/db", (1..=4).map(snap).collect());
    let dst = inventory("backup/db", (1..=3).map(received).collect());
    let e = explained(&obj, &src, &dst);
    let json = serde_json::to_value(&e).unwrap();
    let send = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["action"] == "IncrementalSend")
        .unwrap();
    assert_eq!(send["base"]["snapshot"], "tank/db@tidepool_s3_db");
    assert_eq!(send["to"], "tank/db@tidepool_s4_db");
    assert_eq!(send["intermediates"], true);
    assert_eq!(json["lastCommon"]["name"], "tidepool_s3_db");
    assert_eq!(json["targetRetention"]["afterSteps"], true);
    assert_eq!(json["targetRetention"]["dataset"], "backup/db");
    let back: ReplicationExplanation = serde_json::from_value(json).unwrap();
    assert_eq!(back, e);
}

/// An object-store policy's dry run: the sync's own `store_plan` over a listing with one
/// full stream, shown through `describe_upload`: the base protected on the source first,
/// then the incremental upload against the chain's full.
#[test]
fn an_object_store_policy_shows_its_next_upload_and_the_source_anchors() {
    use tidepool_objstore::chain::{ChainPolicy, FullEvery, IncrementalBase};
    use tidepool_wire::objstore::StoredStream;

    use crate::replication::store_plan::{self, StoreInput};

    let full = StoredStream {
        key: "20261201T010000Z-tidepool_s1_db-full".into(),
        time: "2026-12-01T01:00:00Z".parse().unwrap(),
        snapshot: snap(1).name,
        parent: None,
        guid: Some(snap(1).guid),
        parent_guid: None,
        stored_bytes: 10,
    };
    let src = inventory("tank/db", (1..=2).map(snap).collect());
    let tag = planner::hold_tag(POLICY);
    let plan = store_plan::plan(
        &StoreInput {
            source: &src,
            streams: std::slice::from_ref(&full),
            chain: ChainPolicy {
                full_every: FullEvery::Streams(std::num::NonZeroUsize::new(7).unwrap()),
                incremental_from: IncrementalBase::LastFull,
            },
            selects: &|_| true,
            policy: POLICY,
            tag: &tag,
        },
        "2026-12-02T00:00:00Z".parse().unwrap(),
    );
    let mut out = nothing_yet(&src);
    describe_upload(&plan, &mut out);
    assert_eq!(
        out.last_common.as_ref().map(|c| (c.name.as_str(), c.guid)),
        Some(("tidepool_s1_db", 0xa001))
    );
    let (last, anchors) = out.steps.split_last().unwrap();
    assert_eq!(
        last.action,
        PlannedAction::IncrementalSend {
            base: SendBase::Snapshot("tank/db@tidepool_s1_db".parse().unwrap()),
            to: "tank/db@tidepool_s2_db".parse().unwrap(),
            intermediates: false,
        }
    );
    assert_eq!(last.reason, "Upload");
    assert!(!last.message.is_empty());
    assert!(
        anchors.iter().any(|s| matches!(&s.action,
            PlannedAction::Hold { side: Side::Source, snapshot, .. }
                if snapshot.as_str() == "tank/db@tidepool_s1_db")),
        "{anchors:#?}"
    );
    assert!(
        anchors
            .iter()
            .all(|s| s.reason == "ProtectStoredBase" && !s.message.is_empty()),
        "{anchors:#?}"
    );
}
