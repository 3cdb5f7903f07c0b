//! Times stored before the CRDs carried their patterns: the API server does not re-check
//! stored objects when a CRD tightens, so an object written under the older schema keeps
//! times `Time` cannot read. Each kind's object is given one in every time field under CRDs
//! without the patterns, the current CRDs go back on, and a typed list and a watch must
//! still return it, reading those times as absent (optional fields) or the Unix epoch
//! (required ones).

use std::fmt::Debug;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tidepool_api::bounds::TIME_PATTERN;
use tidepool_api::{DatasetGrant, ReplicationPolicy, SnapshotSchedule, ZfsNode};
use tidepool_tests::control_plane::{ControlPlane, repo_root};

use super::status::{
    Field, Holds, create_as, grant_fields, node_fields, objects, policy_fields, schedule_fields,
};

/// Times the API server stored under the CRDs without patterns and `Time` cannot read
/// (found by the `status` test against those CRDs).
const UNREADABLE: [&str; 3] = [
    "2026-01-01T00:00:00.1234567890Z",
    "2026-01-01T00:00:00+99:00",
    "9999-12-31T23:59:59Z",
];

/// Removes every `pattern: TIME_PATTERN`; returns how many.
fn without_time_patterns(schema: &mut Value) -> usize {
    match schema {
        Value::Object(map) => {
            let removed = usize::from(
                map.get("pattern").and_then(Value::as_str) == Some(TIME_PATTERN)
                    && map.remove("pattern").is_some(),
            );
            removed + map.values_mut().map(without_time_patterns).sum::<usize>()
        }
        Value::Array(items) => items.iter_mut().map(without_time_patterns).sum(),
        _ => 0,
    }
}

/// Writes the current CRDs without their time patterns into `dir`.
fn older_crds(dir: &std::path::Path) {
    for file in [
        "snapshotschedules.yaml",
        "replicationpolicies.yaml",
        "zfsnodes.yaml",
        "datasetgrants.yaml",
    ] {
        let text = std::fs::read_to_string(repo_root().join("crds").join(file)).expect("crd");
        let mut crd: Value = serde_saphyr::from_str(&text).expect("yaml");
        assert!(
            without_time_patterns(&mut crd) > 0,
            "{file} has time patterns"
        );
        std::fs::write(dir.join(file), serde_json::to_string(&crd).expect("json")).expect("write");
    }
}

/// `from` laid over `into`: objects by key, arrays by index.
fn overlay(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                overlay(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, v) in b.iter().enumerate() {
                match a.get_mut(i) {
                    Some(slot) => overlay(slot, v),
                    None => a.push(v.clone()),
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// One object of a kind with an unreadable time in each of its time fields.
struct Stored<K> {
    raw: Api<DynamicObject>,
    typed: Api<K>,
    name: String,
    /// Field pointers and the unreadable time each holds.
    times: Vec<(&'static str, &'static str)>,
}

/// Creates `object` and stores an unreadable time in every time field of `fields` (the
/// older schema must be installed).
async fn store<K>(
    raw: Api<DynamicObject>,
    typed: Api<K>,
    object: Value,
    fields: Vec<Field>,
) -> Stored<K>
where
    K: Resource<DynamicType = ()>,
{
    let (resource, name) = create_as::<K>(&raw, object).await;
    // Every field's siblings first, then the unreadable times, so no base overwrites one.
    let time_fields: Vec<&Field> = fields
        .iter()
        .filter(|f| matches!(f.holds, Holds::Time))
        .collect();
    let mut status = json!({});
    for field in &time_fields {
        overlay(&mut status, &field.status);
    }
    let mut times = Vec::new();
    for (i, field) in time_fields.iter().enumerate() {
        let bad = UNREADABLE[i % UNREADABLE.len()];
        *status.pointer_mut(field.pointer).expect("pointer") = json!(bad);
        times.push((field.pointer, bad));
    }
    let patch = Patch::Merge(json!({ "status": status }));
    // The older schema may take a moment to be the one that validates.
    let mut last = None;
    for _ in 0..50 {
        match raw
            .patch_status(&name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    if let Some(e) = last {
        panic!(
            "{} {name}: the older schema stores the times: {e}",
            resource.kind
        );
    }
    Stored {
        raw,
        typed,
        name,
        times,
    }
}

/// A typed list and a watch return the object, the unreadable times read as absent or the
/// epoch, and the API server still holds them as written.
async fn check<K>(stored: &Stored<K>)
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Serialize + Clone + Debug + Send + 'static,
{
    let kind = K::kind(&());
    let name = &stored.name;
    let by_name = format!("metadata.name={name}");
    let listed = stored
        .typed
        .list(&ListParams::default().fields(&by_name))
        .await
        .unwrap_or_else(|e| panic!("typed list of {kind}: {e}"))
        .items;
    assert_eq!(listed.len(), 1, "{kind}: the typed list returns {name}");

    let mut stream = watcher(
        stored.typed.clone(),
        watcher::Config::default().fields(&by_name),
    )
    .boxed();
    let mut watched = Vec::new();
    let init = async {
        while let Some(event) = stream
            .try_next()
            .await
            .unwrap_or_else(|e| panic!("watch of {kind}: {e}"))
        {
            match event {
                watcher::Event::InitApply(o) => watched.push(o),
                watcher::Event::InitDone => return,
                _ => {}
            }
        }
        panic!("the watch of {kind} ended before its initial list was done");
    };
    tokio::time::timeout(Duration::from_secs(30), init)
        .await
        .expect("initial list in time");
    assert_eq!(watched.len(), 1, "{kind}: the watch returns {name}");

    let raw = stored
        .raw
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get {kind}: {e}"));
    for object in [&listed[0], &watched[0]] {
        let read = serde_json::to_value(object).expect("json");
        for (pointer, bad) in &stored.times {
            let held = raw.data["status"].pointer(pointer);
            assert_eq!(
                held,
                Some(&json!(bad)),
                "{kind} status{pointer} is stored as written"
            );
            match read["status"].pointer(pointer) {
                None => {}
                Some(v) => assert_eq!(
                    v,
                    &json!("1970-01-01T00:00:00Z"),
                    "{kind} status{pointer} = {bad} reads as absent or the epoch"
                ),
            }
        }
    }
    eprintln!(
        "{kind}: {} unreadable stored times, typed list and watch returned the object",
        stored.times.len()
    );
}

#[tokio::test]
async fn times_stored_before_the_patterns_do_not_break_a_typed_list_or_watch() {
    let _swap = super::CRD_SWAP.write().await;
    let cp = ControlPlane::shared().await;
    let ns = cp
        .create_namespace("stored-before")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let client = cp.admin_client();
    let old = tempfile::tempdir().expect("tempdir");
    older_crds(old.path());
    cp.install_crds(old.path())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

    let [schedule, policy, zfs_node, grant] = objects(&ns);
    let raw = |k: ApiResource, namespaced: bool| match namespaced {
        true => Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &k),
        false => Api::<DynamicObject>::all_with(client.clone(), &k),
    };
    let schedule = store(
        raw(ApiResource::erase::<SnapshotSchedule>(&()), true),
        Api::<SnapshotSchedule>::namespaced(client.clone(), &ns),
        schedule,
        schedule_fields(),
    )
    .await;
    let policy = store(
        raw(ApiResource::erase::<ReplicationPolicy>(&()), true),
        Api::<ReplicationPolicy>::namespaced(client.clone(), &ns),
        policy,
        policy_fields(),
    )
    .await;
    let zfs_node = store(
        raw(ApiResource::erase::<ZfsNode>(&()), false),
        Api::<ZfsNode>::all(client.clone()),
        zfs_node,
        node_fields(),
    )
    .await;
    let grant = store(
        raw(ApiResource::erase::<DatasetGrant>(&()), false),
        Api::<DatasetGrant>::all(client.clone()),
        grant,
        grant_fields(),
    )
    .await;
    cp.install_crds(repo_root().join("crds"))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

    check(&schedule).await;
    check(&policy).await;
    check(&zfs_node).await;
    check(&grant).await;
}
