#![allow(clippy::unwrap_used)]

use kube::runtime::watcher::Event;
use serde_json::json;

use super::*;

fn zfs_node(name: &str, endpoint: &str, free: i64, heartbeat: &str) -> ZfsNode {
    serde_json::from_value(json!({
        "apiVersion": "tidepool.dev/v1alpha1", "kind": "ZfsNode",
        "metadata": {"name": name, "labels": {"zone": "a"}}, "spec": {"nodeName": name},
        "status": {
            "endpoint": endpoint, "tlsCertificateSha256": "ab".repeat(32),
            "heartbeatTime": heartbeat,
            "pools": [{"name": "tank", "health": "ONLINE", "sizeBytes": 10, "allocatedBytes": 10 - free, "freeBytes": free}],
        },
    }))
    .unwrap()
}

fn schedule(
    ns: &str,
    name: &str,
    spec: serde_json::Value,
    status: serde_json::Value,
) -> SnapshotSchedule {
    let mut spec = spec;
    spec["schedule"] = json!({"interval": "24h"});
    serde_json::from_value(json!({
        "apiVersion": "tidepool.dev/v1alpha1", "kind": "SnapshotSchedule",
        "metadata": {"name": name, "namespace": ns}, "spec": spec, "status": status,
    }))
    .unwrap()
}

#[test]
fn a_heartbeat_is_no_change_an_endpoint_is() {
    let mut c = Changes::<NodeView>::default();
    let first = zfs_node("n1", "10.0.0.1:1", 5, "2026-01-01T00:00:00Z");
    // The first listing is not reported (the schedules' own listing covers it).
    assert!(c.on_event(&Event::Init, NodeView::of).is_empty());
    assert!(
        c.on_event(&Event::InitApply(first.clone()), NodeView::of)
            .is_empty()
    );
    assert!(
        c.on_event::<ZfsNode>(&Event::InitDone, NodeView::of)
            .is_empty()
    );
    let beat = zfs_node("n1", "10.0.0.1:1", 4, "2026-01-01T00:01:00Z");
    assert!(c.on_event(&Event::Apply(beat), NodeView::of).is_empty());
    let moved = zfs_node("n1", "10.0.0.1:2", 4, "2026-01-01T00:02:00Z");
    let changes = c.on_event(&Event::Apply(moved.clone()), NodeView::of);
    assert_eq!(changes.len(), 1);
    assert_eq!(
        changes[0].before.as_ref().unwrap().endpoint.as_deref(),
        Some("10.0.0.1:1")
    );
    let mut degraded = moved.clone();
    degraded.status.as_mut().unwrap().pools[0].health = "DEGRADED".into();
    assert_eq!(
        c.on_event(&Event::Apply(degraded.clone()), NodeView::of)
            .len(),
        1
    );
    let mut relabelled = degraded.clone();
    relabelled.labels_mut().insert("zone".into(), "b".into());
    assert_eq!(
        c.on_event(&Event::Apply(relabelled.clone()), NodeView::of)
            .len(),
        1
    );
    let gone = c.on_event(&Event::Delete(relabelled), NodeView::of);
    assert!(gone[0].after.is_none() && gone[0].before.is_some());
}

#[test]
fn a_relisting_reports_what_changed_and_what_went() {
    let mut c = Changes::<NodeView>::default();
    for e in [
        Event::Init,
        Event::InitApply(zfs_node("n1", "a:1", 5, "2026-01-01T00:00:00Z")),
        Event::InitApply(zfs_node("n2", "b:1", 5, "2026-01-01T00:00:00Z")),
        Event::InitDone,
    ] {
        assert!(c.on_event(&e, NodeView::of).is_empty());
    }
    assert!(c.on_event::<ZfsNode>(&Event::Init, NodeView::of).is_empty());
    // n1 unchanged but for its heartbeat; n2 gone while the watch was broken.
    let n1 = zfs_node("n1", "a:1", 3, "2026-01-01T00:05:00Z");
    assert!(c.on_event(&Event::InitApply(n1), NodeView::of).is_empty());
    let done = c.on_event::<ZfsNode>(&Event::InitDone, NodeView::of);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].before.as_ref().unwrap().node, "n2");
    assert!(done[0].after.is_none());
}

#[test]
fn a_node_change_reaches_the_schedules_that_can_use_the_node() {
    let n1 = NodeView::of(&zfs_node("n1", "a:1", 5, "2026-01-01T00:00:00Z"));
    let change = Change {
        before: Some(n1.clone()),
        after: Some(NodeView {
            endpoint: Some("a:2".into()),
            ..n1
        }),
    };
    let ds = json!([{"name": "tank/apps"}]);
    let named = schedule(
        "x",
        "named",
        json!({"nodeName": "n1", "datasets": ds}),
        json!({}),
    );
    let other = schedule(
        "x",
        "other",
        json!({"nodeName": "n2", "datasets": ds}),
        json!({}),
    );
    let listed = schedule(
        "x",
        "listed",
        json!({"nodeName": "n2", "datasets": ds}),
        json!({"nodes": [{"node": "n1"}]}),
    );
    let selected = schedule(
        "x",
        "sel",
        json!({"nodeSelector": {"zone": "a"}, "datasets": ds}),
        json!({}),
    );
    let by_pool = schedule("x", "pool", json!({"datasets": ds}), json!({}));
    let other_pool = schedule(
        "x",
        "pool2",
        json!({"datasets": [{"name": "vault/apps"}]}),
        json!({}),
    );
    let yes = |_: &tidepool_api::common::NodeSelector| true;
    let no = |_: &tidepool_api::common::NodeSelector| false;
    assert!(node_affects(&named, &change, no));
    assert!(!node_affects(&other, &change, yes));
    assert!(node_affects(&listed, &change, no));
    assert!(node_affects(&selected, &change, yes));
    assert!(!node_affects(&selected, &change, no));
    assert!(node_affects(&by_pool, &change, no));
    assert!(!node_affects(&other_pool, &change, no));
    // A node that lost the pool still reaches the schedules that used it there.
    let lost = Change {
        before: change.after.clone(),
        after: Some(NodeView {
            pools: Vec::new(),
            ..change.after.clone().unwrap()
        }),
    };
    assert!(node_affects(&by_pool, &lost, no));
    let labels: Labels = [("zone".to_owned(), "a".to_owned())].into();
    let sel = tidepool_api::common::NodeSelector([("zone".to_owned(), "a".to_owned())].into());
    assert!(selector_matches(&sel, &labels));
    assert!(!selector_matches(&sel, &Labels::new()));
}

#[test]
fn a_grant_change_reaches_the_namespaces_named_before_and_after() {
    let grant = |namespaces: serde_json::Value, selector: bool| {
        let mut spec =
            json!({"namespaces": namespaces, "datasets": ["tank/apps"], "access": ["Snapshot"]});
        if selector {
            spec["namespaceSelector"] = json!({"matchLabels": {"team": "a"}});
        }
        let g: DatasetGrant = serde_json::from_value(json!({
            "apiVersion": "tidepool.dev/v1alpha1", "kind": "DatasetGrant",
            "metadata": {"name": "g"}, "spec": spec,
        }))
        .unwrap();
        GrantView::of(&g)
    };
    let narrowed = Change {
        before: Some(grant(json!(["a", "b"]), false)),
        after: Some(grant(json!(["b", "c"]), false)),
    };
    let reached = grant_namespaces(&narrowed).unwrap();
    assert_eq!(reached.into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
    let deleted = Change {
        before: Some(grant(json!(["a"]), false)),
        after: None,
    };
    assert_eq!(grant_namespaces(&deleted).unwrap().len(), 1);
    let selecting = Change {
        before: Some(grant(json!(["a"]), false)),
        after: Some(grant(json!(["a"]), true)),
    };
    assert!(grant_namespaces(&selecting).is_none());
}
