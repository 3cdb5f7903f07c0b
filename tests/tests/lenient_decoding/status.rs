//! Status values the API server's own checks admit but the typed decoding refuses: its
//! `date-time` check is looser than `Time` (jiff). Every time and integer field in the
//! status of all four kinds is written with such values (and with integers outside each
//! field's range) through the status subresource; each write must either be refused with
//! 422 naming the field, or leave a typed list of the kind returning the object. The test
//! reports every value stored and fails unless all are refused. Against the CRDs before the
//! patterns and ranges, 135 of the 405 are stored; with strict decoding of status times, 45
//! of those (three values in each of the 15 time fields) broke the typed list.
//! Values Tidepool's writers produce must be stored and read back.

use std::fmt::Debug;

use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tidepool_api::{DatasetGrant, ReplicationPolicy, SnapshotSchedule, ZfsNode};
use tidepool_tests::control_plane::ControlPlane;

/// Times the API server's `date-time` check may store and `Time` cannot read, or that sit
/// on an edge of a part of the schema's pattern.
const BAD_TIMES: &[&str] = &[
    "2026-01-01T00:00:00.1234567890Z",
    "2026-01-01T00:00:00 .5Z",
    "2026-01-01 00:00:00Z",
    "2026-01-01 00:00:00.5Z",
    "2026-01-01T00:00:00 Z",
    "2026-01-01T00:00:00.5 Z",
    "2026-01-01T00:00:00 +01:00",
    "2026-01-01T00:00:00.5 +01:00",
    "2026-01-01T00:00:00,5Z",
    "2026-01-01T00:00:00+99:00",
    "2026-01-01T00:00:00+24:00",
    "2026-01-01t00:00:00z",
    "2026-01-01T00:00:00",
    "2026-01-01T24:00:00Z",
    "2026-01-01T00:00:60Z",
    "2026-02-30T00:00:00Z",
    "2025-02-29T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2026-01-01",
];

/// What Tidepool's writers produce (k8s-openapi writes whole seconds and `Z`), and other
/// RFC 3339 forms `Time` reads.
const GOOD_TIMES: &[&str] = &[
    "2026-01-01T00:00:00Z",
    "2024-02-29T23:59:59Z",
    "2026-01-01T00:00:00.123456789+05:30",
];

fn bad_ints() -> Vec<Value> {
    vec![
        json!(-1),
        json!(1_000_000_000_000_000_001_i64),
        json!(i64::MAX),
        json!(9_223_372_036_854_775_808_u64),
        json!(u64::MAX),
        json!(1e19),
        json!(1.5),
        json!("5"),
    ]
}

fn good_ints() -> Vec<Value> {
    vec![json!(0), json!(1), json!(1_000_000_000_000_000_000_i64)]
}

#[derive(Clone, Copy)]
pub(super) enum Holds {
    Time,
    Int,
}

/// A status field: a JSON pointer inside `status` to the field, the status object it sits
/// in (with every required sibling set), and what it holds.
pub(super) struct Field {
    pub(super) pointer: &'static str,
    pub(super) status: Value,
    pub(super) holds: Holds,
}

impl Field {
    /// The field as the API server names it: `status.conditions[0].lastTransitionTime`.
    fn path(&self) -> String {
        let mut path = String::from("status");
        for part in self.pointer.split('/').skip(1) {
            if part.bytes().all(|b| b.is_ascii_digit()) {
                path.push_str(&format!("[{part}]"));
            } else {
                path.push('.');
                path.push_str(part);
            }
        }
        path
    }

    pub(super) fn status_with(&self, value: &Value) -> Value {
        let mut status = self.status.clone();
        *status
            .pointer_mut(self.pointer)
            .unwrap_or_else(|| panic!("{} is in its status", self.pointer)) = value.clone();
        status
    }
}

fn condition() -> Value {
    json!({"type": "Ready", "status": "True", "reason": "Reconciled", "message": "",
           "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1})
}

fn last_error() -> Value {
    json!({"reason": "ZfsError", "message": "m", "time": "2026-01-01T00:00:00Z"})
}

fn time(pointer: &'static str, status: Value) -> Field {
    Field {
        pointer,
        status,
        holds: Holds::Time,
    }
}

fn int(pointer: &'static str, status: Value) -> Field {
    Field {
        pointer,
        status,
        holds: Holds::Int,
    }
}

/// The fields every kind with conditions and `observedGeneration` has.
fn conditions() -> Vec<Field> {
    vec![
        time(
            "/conditions/0/lastTransitionTime",
            json!({"conditions": [condition()]}),
        ),
        int(
            "/conditions/0/observedGeneration",
            json!({"conditions": [condition()]}),
        ),
    ]
}

pub(super) fn schedule_fields() -> Vec<Field> {
    let node = || {
        json!({"node": "node-a", "lastSnapshotTime": "2026-01-01T00:00:00Z",
                         "snapshotCount": 0, "prunedTotal": 0, "lastError": last_error()})
    };
    let mut fields = conditions();
    fields.extend([
        int("/observedGeneration", json!({"observedGeneration": 1})),
        time("/lastSnapshotTime", json!({"lastSnapshotTime": null})),
        time("/nextSnapshotTime", json!({"nextSnapshotTime": null})),
        time("/lastError/time", json!({"lastError": last_error()})),
        time("/nodes/0/lastSnapshotTime", json!({"nodes": [node()]})),
        time("/nodes/0/lastError/time", json!({"nodes": [node()]})),
        int("/nodes/0/snapshotCount", json!({"nodes": [node()]})),
        int("/nodes/0/prunedTotal", json!({"nodes": [node()]})),
    ]);
    fields
}

pub(super) fn policy_fields() -> Vec<Field> {
    let progress = || {
        json!({"progress": {"bytesDone": 0, "bytesTotal": 0,
                                          "started": "2026-01-01T00:00:00Z"}})
    };
    let mut fields = conditions();
    fields.extend([
        int("/observedGeneration", json!({"observedGeneration": 1})),
        time("/lastSyncTime", json!({"lastSyncTime": null})),
        time("/nextSyncTime", json!({"nextSyncTime": null})),
        time(
            "/lastReplicatedSnapshotTime",
            json!({"lastReplicatedSnapshotTime": null}),
        ),
        time("/lastError/time", json!({"lastError": last_error()})),
        int("/lastSyncBytes", json!({"lastSyncBytes": null})),
        time("/progress/started", progress()),
        int("/progress/bytesDone", progress()),
        int("/progress/bytesTotal", progress()),
    ]);
    fields
}

pub(super) fn node_fields() -> Vec<Field> {
    let pools = || {
        json!({"pools": [{"name": "tank", "health": "ONLINE", "sizeBytes": 0,
                                     "allocatedBytes": 0, "freeBytes": 0}]})
    };
    let mut fields = conditions();
    fields.extend([
        time("/heartbeatTime", json!({"heartbeatTime": null})),
        int("/pools/0/sizeBytes", pools()),
        int("/pools/0/allocatedBytes", pools()),
        int("/pools/0/freeBytes", pools()),
    ]);
    fields
}

pub(super) fn grant_fields() -> Vec<Field> {
    let mut fields = conditions();
    fields.push(int("/observedGeneration", json!({"observedGeneration": 1})));
    fields
}

/// What became of the bad values written to one kind.
#[derive(Default, Debug)]
struct Tally {
    refused: usize,
    stored_and_harmless: Vec<String>,
    /// Stored, and then the typed list failed: what this test exists to prevent.
    stored_and_breaking: Vec<String>,
}

/// Creates `object` through `raw` as a `K`, which the API server must admit; returns
/// `K`'s resource and the object's name.
pub(super) async fn create_as<K>(raw: &Api<DynamicObject>, object: Value) -> (ApiResource, String)
where
    K: Resource<DynamicType = ()>,
{
    let resource = ApiResource::erase::<K>(&());
    let mut object: DynamicObject = serde_json::from_value(object).expect("object");
    object.types = Some(kube::api::TypeMeta {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
    });
    let name = object.metadata.name.clone().expect("name");
    raw.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("{} {name} admitted: {e}", resource.kind));
    (resource, name)
}

/// Writes every bad and good value into every field of `object` (created through `raw`),
/// and reads it back through `typed`, an `Api` over the same objects.
async fn probe<K>(
    raw: Api<DynamicObject>,
    typed: Api<K>,
    object: Value,
    fields: Vec<Field>,
) -> Tally
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
{
    let (resource, name) = create_as::<K>(&raw, object).await;
    // Cluster-scoped kinds hold other tests' objects too; one name is enough to decode.
    let list_params = ListParams::default().fields(&format!("metadata.name={name}"));
    let typed_list = || async {
        typed
            .list(&list_params)
            .await
            .map(|l| l.items.len())
            .map_err(|e| e.to_string())
    };

    let mut tally = Tally::default();
    for field in &fields {
        let path = field.path();
        let (bad, good): (Vec<Value>, Vec<Value>) = match field.holds {
            Holds::Time => (
                BAD_TIMES.iter().map(|t| json!(t)).collect(),
                GOOD_TIMES.iter().map(|t| json!(t)).collect(),
            ),
            Holds::Int => (bad_ints(), good_ints()),
        };
        for value in &bad {
            let patch = Patch::Merge(json!({"status": field.status_with(value)}));
            match raw
                .patch_status(&name, &PatchParams::default(), &patch)
                .await
            {
                Err(kube::Error::Api(e)) => {
                    assert_eq!(e.code, 422, "{} {path} = {value}: {e}", resource.kind);
                    assert!(
                        e.message.contains(&path),
                        "{} {path} = {value}: the refusal names the field: {}",
                        resource.kind,
                        e.message
                    );
                    tally.refused += 1;
                }
                Err(e) => panic!("{} {path} = {value}: {e}", resource.kind),
                Ok(stored) => {
                    // Stored: the typed decoding must still read every object.
                    let kept = stored.data["status"].pointer(field.pointer).cloned();
                    let what = format!("{path} = {value} (stored as {kept:?})");
                    match typed_list().await {
                        Ok(1) => tally.stored_and_harmless.push(what),
                        Ok(n) => panic!(
                            "{} {what}: the typed list returned {n} objects",
                            resource.kind
                        ),
                        Err(e) => tally.stored_and_breaking.push(format!("{what}: {e}")),
                    }
                }
            }
        }
        for value in &good {
            let patch = Patch::Merge(json!({"status": field.status_with(value)}));
            raw.patch_status(&name, &PatchParams::default(), &patch)
                .await
                .unwrap_or_else(|e| panic!("{} {path} = {value} is valid: {e}", resource.kind));
            assert_eq!(
                typed_list().await,
                Ok(1),
                "{} {path} = {value}",
                resource.kind
            );
        }
    }
    tally
}

/// One valid object of each kind: SnapshotSchedule, ReplicationPolicy, ZfsNode,
/// DatasetGrant. The cluster-scoped ones are named after the namespace, so no other test's
/// objects collide.
pub(super) fn objects(ns: &str) -> [Value; 4] {
    let node = format!("{ns}-node");
    [
        json!({
            "metadata": {"name": "sched"},
            "spec": {"nodeName": "node-a", "datasets": [{"name": "tank/apps/db"}],
                     "schedule": {"interval": "1h"}},
        }),
        json!({
            "metadata": {"name": "policy"},
            "spec": {"source": {"nodeName": "node-a", "dataset": "tank/apps/db"},
                     "target": {"node": {"nodeName": "node-b", "dataset": "backup/replicas/db"}}},
        }),
        json!({"metadata": {"name": node}, "spec": {"nodeName": node}}),
        json!({
            "metadata": {"name": format!("{ns}-grant")},
            "spec": {"namespaces": [ns], "datasets": ["tank/apps"]},
        }),
    ]
}

#[tokio::test]
async fn status_values_the_typed_decoding_refuses_are_refused_at_admission_naming_the_field() {
    // Another test installs CRDs without the patterns for a moment.
    let _current_crds = super::CRD_SWAP.read().await;
    let cp = ControlPlane::shared().await;
    let ns = cp
        .create_namespace("status")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let client = cp.admin_client();
    let [schedule, policy, zfs_node, grant] = objects(&ns);

    let raw = |k: &ApiResource, namespaced: bool| match namespaced {
        true => Api::<DynamicObject>::namespaced_with(client.clone(), &ns, k),
        false => Api::<DynamicObject>::all_with(client.clone(), k),
    };
    let erase = ApiResource::erase::<SnapshotSchedule>;
    let tallies = [
        (
            "SnapshotSchedule",
            probe(
                raw(&erase(&()), true),
                Api::<SnapshotSchedule>::namespaced(client.clone(), &ns),
                schedule,
                schedule_fields(),
            )
            .await,
        ),
        (
            "ReplicationPolicy",
            probe(
                raw(&ApiResource::erase::<ReplicationPolicy>(&()), true),
                Api::<ReplicationPolicy>::namespaced(client.clone(), &ns),
                policy,
                policy_fields(),
            )
            .await,
        ),
        (
            "ZfsNode",
            probe(
                raw(&ApiResource::erase::<ZfsNode>(&()), false),
                Api::<ZfsNode>::all(client.clone()),
                zfs_node,
                node_fields(),
            )
            .await,
        ),
        (
            "DatasetGrant",
            probe(
                raw(&ApiResource::erase::<DatasetGrant>(&()), false),
                Api::<DatasetGrant>::all(client.clone()),
                grant,
                grant_fields(),
            )
            .await,
        ),
    ];
    let mut breaking = Vec::new();
    for (kind, tally) in &tallies {
        eprintln!(
            "{kind}: {} bad values refused with 422 naming the field, {} stored and read back \
             by the typed list, {} stored and breaking the typed list",
            tally.refused,
            tally.stored_and_harmless.len(),
            tally.stored_and_breaking.len(),
        );
        for stored in &tally.stored_and_harmless {
            eprintln!("  stored, harmless: {stored}");
        }
        breaking.extend(
            tally
                .stored_and_breaking
                .iter()
                .map(|b| format!("{kind} {b}")),
        );
    }
    assert!(
        breaking.is_empty(),
        "stored values that break the typed list:\n{}",
        breaking.join("\n")
    );
    // The schema refuses every one of them, not only those that break today's decoding.
    let stored: usize = tallies
        .iter()
        .map(|(_, t)| t.stored_and_harmless.len())
        .sum();
    assert_eq!(stored, 0, "every bad value is refused at admission");
}
