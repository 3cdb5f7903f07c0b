//! Every manifest in `examples/` parses into its typed resource, and survives a serde round
//! trip with every field it sets unchanged. (That the API server accepts them is proven
//! against a real kube-apiserver in `tests/`.)

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tidepool_api::{DatasetGrant, ReplicationPolicy, SnapshotSchedule, ZfsNode};

fn example_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every field `original` sets has the same value in `round_tripped` (which may add
/// defaults).
fn assert_contains(original: &Value, round_tripped: &Value, path: &str) {
    match (original, round_tripped) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let w = b
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}.{k} was lost in the round trip"));
                assert_contains(v, w, &format!("{path}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: list length changed");
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                assert_contains(v, w, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(original, round_tripped, "{path} changed"),
    }
}

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    file: &Path,
    value: &Value,
) {
    let typed: T =
        serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let back = serde_json::to_value(&typed).expect("serialize");
    assert_contains(value, &back, &file.display().to_string());
    let again: T = serde_json::from_value(back).expect("parse the round-tripped value");
    assert_eq!(typed, again, "{}", file.display());
}

#[test]
fn every_example_round_trips() {
    let files = example_files();
    assert!(files.len() >= 6, "expected the examples, found {files:?}");
    let mut kinds = std::collections::BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read example");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for doc in docs {
            let kind = doc["kind"].as_str().expect("kind").to_owned();
            match kind.as_str() {
                "SnapshotSchedule" => round_trip::<SnapshotSchedule>(file, &doc),
                "ReplicationPolicy" => round_trip::<ReplicationPolicy>(file, &doc),
                "DatasetGrant" => round_trip::<DatasetGrant>(file, &doc),
                "ZfsNode" => round_trip::<ZfsNode>(file, &doc),
                other => panic!("{}: unexpected kind {other}", file.display()),
            }
            kinds.insert(kind);
        }
    }
    for kind in ["SnapshotSchedule", "ReplicationPolicy", "DatasetGrant"] {
        assert!(kinds.contains(kind), "no example of {kind}");
    }
}

#[test]
fn replication_examples_cover_every_target_kind() {
    let mut seen = std::collections::BTreeSet::new();
    for file in example_files() {
        let text = std::fs::read_to_string(&file).expect("read example");
        let doc: Value = serde_saphyr::from_str(&text).expect("yaml");
        if doc["kind"] == "ReplicationPolicy" {
            let p: ReplicationPolicy = serde_json::from_value(doc).expect("typed");
            let t = &p.spec.target;
            if t.node.is_some() {
                seen.insert("node");
            }
            if t.ssh.is_some() {
                seen.insert("ssh");
            }
            if t.object_store.is_some() {
                seen.insert("objectStore");
            }
        }
    }
    assert_eq!(seen.len(), 3, "examples cover only {seen:?}");
}

#[test]
fn defaults_fill_in_when_omitted() {
    let p: ReplicationPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "ReplicationPolicy",
        "metadata": {"name": "x"},
        "spec": {
            "source": {"nodeName": "a", "dataset": "tank/x"},
            "target": {"node": {"nodeName": "b", "dataset": "backup/x"}}
        }
    }))
    .expect("minimal policy parses");
    let s = &p.spec;
    assert!(s.send.raw && s.send.compressed && s.send.large_blocks && s.send.embedded_data);
    assert!(!s.send.properties);
    assert!(s.source.snapshots.intermediates);
    assert_eq!(s.on_divergence, tidepool_api::OnDivergence::Fail);
    assert_eq!(s.deletion_policy, tidepool_api::DeletionPolicy::Retain);
    assert!(!s.suspend);

    let ss: SnapshotSchedule = serde_json::from_value(serde_json::json!({
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "SnapshotSchedule",
        "metadata": {"name": "x"},
        "spec": {"datasets": [{"name": "tank/x"}], "schedule": {"interval": "1h"}}
    }))
    .expect("minimal schedule parses");
    assert_eq!(ss.spec.naming.prefix, "tidepool");
    assert_eq!(ss.spec.schedule.time_zone, "UTC");
    assert!(!ss.spec.datasets[0].recursive);
    assert_eq!(
        ss.spec.deletion_policy,
        tidepool_api::DeletionPolicy::Retain
    );
}

#[test]
fn bad_values_are_refused_when_parsed() {
    let bad = serde_json::json!({
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "SnapshotSchedule",
        "metadata": {"name": "x"},
        "spec": {"datasets": [{"name": "tank/../etc"}], "schedule": {"interval": "0s"}}
    });
    let err = serde_json::from_value::<SnapshotSchedule>(bad).unwrap_err();
    assert!(err.to_string().contains("invalid dataset name"), "{err}");
}

/// A struct's `Default` (which becomes its schema `default` in the CRD) must equal what an
/// empty object deserializes to, or the API server and the Rust code would disagree.
#[test]
fn struct_defaults_agree_with_field_defaults() {
    use tidepool_api::replication_policy::{SendOptions, SnapshotSelection};
    use tidepool_api::snapshot_schedule::Naming;
    use tidepool_api::zfs_node::Capabilities;
    fn empty<T: DeserializeOwned>() -> T {
        serde_json::from_value(serde_json::json!({})).expect("empty object parses")
    }
    assert_eq!(empty::<SendOptions>(), SendOptions::default());
    assert_eq!(empty::<SnapshotSelection>(), SnapshotSelection::default());
    assert_eq!(empty::<Naming>(), Naming::default());
    assert_eq!(empty::<Capabilities>(), Capabilities::default());
}
