#![allow(clippy::unwrap_used)]

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;
use tidepool_api::ReplicationPolicy;
use tidepool_api::condition::kind;
use tidepool_api::replication_policy::{DrillStatus, ReplicationPolicyStatus};

use super::super::status::Outcome;
use super::{due, record, requeue, scratch_of, status_of};
use crate::status::Blocker;
use tidepool_wire::objstore::{DrillReport, DrillVerdict};

fn policy(drill: serde_json::Value, target: serde_json::Value) -> ReplicationPolicy {
    let mut spec = json!({
        "source": {"nodeName": "n1", "dataset": "tank/data/app"},
        "target": target,
    });
    if !drill.is_null() {
        spec["restoreDrill"] = drill;
    }
    serde_json::from_value(json!({
        "apiVersion": "tidepool.dev/v1alpha1", "kind": "ReplicationPolicy",
        "metadata": {"name": "p", "namespace": "ns", "generation": 3},
        "spec": spec,
    }))
    .unwrap()
}

fn store() -> serde_json::Value {
    json!({"objectStore": {"endpoint": "http://s3", "bucket": "bkt", "secretRef": {"name": "s"}}})
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn drilled(time: &str, passed: bool) -> DrillStatus {
    DrillStatus {
        time: Time(at(time)),
        passed,
        reason: if passed {
            "RestoreDrillPassed"
        } else {
            "ObjectMissing"
        }
        .into(),
        snapshot: Some("s2".into()),
        streams: vec!["x-s1-full".into()],
        received: passed,
        bytes: Some(10),
        duration: Some("1.0s".into()),
        object: (!passed).then(|| "pre/tank/data/app/x-s1-full/chunk-000001".into()),
        message: if passed { "ok".into() } else { "gone".into() },
    }
}

fn stored(last: Option<DrillStatus>) -> ReplicationPolicyStatus {
    ReplicationPolicyStatus {
        last_common_snapshot: Some("s2".into()),
        last_drill: last,
        ..Default::default()
    }
}

fn synced() -> Outcome {
    Outcome::NotDue {
        next: at("2026-12-04T13:00:00Z"),
    }
}

#[test]
fn a_drill_is_due_every_interval_once_something_is_stored() {
    let p = policy(json!({"every": "1h"}), store());
    let now = at("2026-12-04T12:00:00Z");
    assert!(due(&p, &synced(), &stored(None), now));
    let last = Some(drilled("2026-12-04T11:00:01Z", true));
    assert!(!due(&p, &synced(), &stored(last.clone()), now));
    assert!(due(
        &p,
        &synced(),
        &stored(last),
        at("2026-12-04T12:00:01Z")
    ));
    // Exactly `every` after the last one.
    let last = Some(drilled("2026-12-04T11:00:00Z", false));
    assert!(due(&p, &synced(), &stored(last), now));
    // Nothing stored yet, drills off, blocked or suspended: none.
    assert!(!due(
        &p,
        &synced(),
        &ReplicationPolicyStatus::default(),
        now
    ));
    let off = policy(serde_json::Value::Null, store());
    assert!(!due(&off, &synced(), &stored(None), now));
    let blocked = Outcome::Blocked(Blocker {
        reason: "NotPermitted",
        message: String::new(),
    });
    assert!(!due(&p, &blocked, &stored(None), now));
    assert!(!due(&p, &Outcome::Suspended, &stored(None), now));
    let node = policy(
        json!({"every": "1h"}),
        json!({"node": {"nodeName": "n2", "dataset": "back/app"}}),
    );
    assert!(!due(&node, &synced(), &stored(None), now));
}

#[test]
fn the_scratch_is_a_prefixed_sibling_unless_a_parent_is_named() {
    let p = policy(json!({"every": "1h"}), store());
    assert_eq!(
        scratch_of(&p, "u-1").unwrap().as_str(),
        "tank/data/tidepool-drill-u-1"
    );
    let named = policy(
        json!({"every": "1h", "scratchParent": "tank/scratch"}),
        store(),
    );
    assert_eq!(
        scratch_of(&named, "u-1").unwrap().as_str(),
        "tank/scratch/tidepool-drill-u-1"
    );
    let mut top = policy(json!({"every": "1h"}), store());
    top.spec.source.dataset = "tank".parse().unwrap();
    assert_eq!(
        scratch_of(&top, "u-1").unwrap().as_str(),
        "tank/tidepool-drill-u-1"
    );
    assert!(scratch_of(&p, "bad uid").is_err());
}

#[test]
fn a_drill_sets_verified_and_the_next_time_and_drills_off_clear_them() {
    let p = policy(json!({"every": "1h"}), store());
    let now = at("2026-12-04T12:00:05Z");
    let mut s = stored(None);
    record(
        &mut s,
        &p,
        Some(drilled("2026-12-04T12:00:00Z", false)),
        now,
    );
    let v = tidepool_api::condition::find(&s.conditions, kind::VERIFIED).unwrap();
    assert_eq!(
        (v.status.as_str(), v.reason.as_str()),
        ("False", "ObjectMissing")
    );
    assert!(v.message.contains("chunk-000001"), "{}", v.message);
    assert_eq!(v.observed_generation, Some(3));
    assert_eq!(s.next_drill_time, Some(Time(at("2026-12-04T13:00:00Z"))));
    // No drill this time: the last one and its condition stay.
    let before = s.clone();
    record(&mut s, &p, None, now);
    assert_eq!(s, before);
    record(&mut s, &p, Some(drilled("2026-12-04T13:00:00Z", true)), now);
    let v = tidepool_api::condition::find(&s.conditions, kind::VERIFIED).unwrap();
    assert_eq!(
        (v.status.as_str(), v.reason.as_str()),
        ("True", "RestoreDrillPassed")
    );
    assert_eq!(s.next_drill_time, Some(Time(at("2026-12-04T14:00:00Z"))));
    let off = policy(serde_json::Value::Null, store());
    record(&mut s, &off, None, now);
    assert!(s.last_drill.is_none() && s.next_drill_time.is_none());
    assert!(tidepool_api::condition::find(&s.conditions, kind::VERIFIED).is_none());
}

#[test]
fn a_report_becomes_the_status_and_names_its_object_once() {
    let report = |verdict, message: &str| DrillReport {
        verdict,
        streams: vec!["x-s1-full".into()],
        snapshot: Some("s1".parse().unwrap()),
        guid: Some(7),
        bytes: 42,
        received: true,
        object: Some("pre/x-s1-full/chunk-000002".into()),
        message: message.into(),
    };
    let (a, b) = (at("2026-12-04T12:00:00Z"), at("2026-12-04T12:00:02.5Z"));
    let ok = status_of(report(DrillVerdict::Passed, "fine"), a, b);
    assert!(ok.passed && ok.reason == "RestoreDrillPassed");
    assert_eq!(
        (ok.time.0, ok.bytes, ok.duration.as_deref()),
        (b, Some(42), Some("2.5s"))
    );
    let bad = status_of(
        report(
            DrillVerdict::ChunkCorrupt,
            "chunk pre/x-s1-full/chunk-000002 is corrupt",
        ),
        a,
        b,
    );
    assert!(!bad.passed && bad.reason == "ChunkCorrupt");
    let p = policy(json!({"every": "1h"}), store());
    let mut s = stored(None);
    record(&mut s, &p, Some(bad), b);
    let v = tidepool_api::condition::find(&s.conditions, kind::VERIFIED).unwrap();
    assert_eq!(v.message, "chunk pre/x-s1-full/chunk-000002 is corrupt");
}

#[test]
fn an_overdue_drill_never_spins_the_reconcile() {
    use std::time::Duration;
    let (wait, retry) = (Duration::from_secs(300), Duration::from_secs(5));
    let s = |n| Duration::from_secs(n);
    assert_eq!(requeue(wait, Some(s(60)), &synced(), retry), s(60));
    assert_eq!(requeue(wait, Some(s(0)), &synced(), retry), retry);
    assert_eq!(requeue(wait, Some(s(900)), &synced(), retry), wait);
    assert_eq!(requeue(wait, None, &synced(), retry), wait);
    assert_eq!(requeue(wait, Some(s(0)), &Outcome::Suspended, retry), wait);
    let blocked = Outcome::Blocked(Blocker {
        reason: "NotPermitted",
        message: String::new(),
    });
    assert_eq!(requeue(wait, Some(s(0)), &blocked, retry), wait);
}
