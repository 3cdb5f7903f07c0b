//! An object the API server admitted never breaks a list or watch: kube-rs decodes a whole
//! list at once, so one SnapshotSchedule whose cron fails typed decoding used to stop every
//! tenant's reconciling. Here, on the real API server, admitted-but-invalid schedules sit
//! next to valid ones; a typed `Api::list` and a `watcher` stream return all of them, and
//! each invalid one yields the typed validation error naming its field.
//!
//! One of them (`5-1`) is refused at admission today; it is stored the way it would be in
//! a real cluster, under an older schema (the CRD without the rule), and the current CRD is
//! installed over it: the API server does not re-check stored objects. Every event of the
//! watch must decode: a decoding error would surface as a watch error and fail the test.
//!
//! `status` does the same for status values of all four kinds.

#[path = "lenient_decoding/status.rs"]
mod status;
#[path = "lenient_decoding/stored_before.rs"]
mod stored_before;

/// Held for writing while a test has CRDs other than `crds/` installed, for reading by a
/// test that needs the current schema.
static CRD_SWAP: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tidepool_api::{SnapshotSchedule, SpecError};
use tidepool_tests::control_plane::{ControlPlane, repo_root};

/// An untyped object, so that nothing but the API server's answers goes through the typed
/// decoding under test.
fn schedule(name: &str, schedule: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "SnapshotSchedule",
        "metadata": {"name": name},
        "spec": {"nodeName": "node-a", "datasets": [{"name": "tank/apps/db"}], "schedule": schedule},
    }))
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `Ok(())`, or the field and reason validation must report.
type Verdict = Result<(), (&'static str, &'static str)>;

/// `(name, schedule, verdict)`.
fn cases() -> Vec<(&'static str, Value, Verdict)> {
    vec![
        // Valid, at the edges of what admission allows.
        (
            "floor",
            json!({"interval": "500ms", "jitter": "500ms"}),
            Ok(()),
        ),
        (
            "daily-jitter",
            json!({"interval": "1d", "jitter": "23h59m"}),
            Ok(()),
        ),
        (
            "berlin",
            json!({"cron": "0 3 * * *", "timeZone": "Europe/Berlin", "jitter": "2h"}),
            Ok(()),
        ),
        // Admitted by the current schema, refused by validation.
        (
            "february-31",
            json!({"cron": "0 0 31 2 *"}),
            Err(("spec.schedule.cron", "InvalidSchedule")),
        ),
        (
            "mars",
            json!({"cron": "@daily", "timeZone": "Mars/Olympus"}),
            Err(("spec.schedule.timeZone", "UnknownTimeZone")),
        ),
    ]
}

/// The CRD as an older release would have installed it: without the cron range rule.
fn crd_without_cron_range_rule(dir: &std::path::Path) {
    let text =
        std::fs::read_to_string(repo_root().join("crds/snapshotschedules.yaml")).expect("crd");
    let mut crd: Value = serde_saphyr::from_str(&text).expect("yaml");
    let cron = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["schedule"]["properties"]["cron"];
    let removed = cron
        .as_object_mut()
        .and_then(|o| o.remove("x-kubernetes-validations"));
    assert!(removed.is_some(), "the current CRD has the cron range rule");
    std::fs::write(
        dir.join("snapshotschedules.yaml"),
        serde_json::to_string(&crd).expect("json"),
    )
    .expect("write");
}

fn verdicts(items: &[SnapshotSchedule]) -> BTreeMap<String, Result<(), SpecError>> {
    items
        .iter()
        .map(|s| {
            let name = s.metadata.name.clone().unwrap_or_default();
            (name, s.spec.validate().map(drop))
        })
        .collect()
}

fn check(verdicts: &BTreeMap<String, Result<(), SpecError>>, what: &str) {
    let mut want = cases();
    want.push((
        "descending",
        json!({}),
        Err(("spec.schedule.cron", "InvalidSchedule")),
    ));
    want.push((
        "late",
        json!({}),
        Err(("spec.schedule.cron", "InvalidSchedule")),
    ));
    assert_eq!(
        verdicts.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut names: Vec<&str> = want.iter().map(|(n, _, _)| *n).collect();
            names.sort_unstable();
            names
        },
        "{what} returns every object"
    );
    for (name, _, expected) in want {
        match (&verdicts[name], expected) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err((field, reason))) => {
                assert_eq!(
                    (e.field.as_str(), e.reason()),
                    (field, reason),
                    "{what}: {name}: {e}"
                );
                assert!(
                    e.message().starts_with(field),
                    "{what}: {name}: {}",
                    e.message()
                );
                eprintln!(
                    "{what}: {name}: Ready=False reason={} message={:?}",
                    e.reason(),
                    e.message()
                );
            }
            (got, want) => panic!("{what}: {name}: validation gave {got:?}, expected {want:?}"),
        }
    }
}

#[tokio::test]
async fn list_and_watch_return_every_admitted_object_and_invalid_ones_fail_validation_naming_the_field()
 {
    // This test installs an older SnapshotSchedule CRD for a moment.
    let _swap = CRD_SWAP.write().await;
    let cp = ControlPlane::shared().await;
    let ns = cp
        .create_namespace("lenient")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let api: Api<SnapshotSchedule> = Api::namespaced(cp.admin_client(), &ns);
    let resource = ApiResource::erase::<SnapshotSchedule>(&());
    let raw: Api<DynamicObject> = Api::namespaced_with(cp.admin_client(), &ns, &resource);
    let pp = PostParams::default();

    for (name, spec, _) in cases() {
        raw.create(&pp, &schedule(name, spec))
            .await
            .unwrap_or_else(|e| panic!("{name} admitted: {e}"));
    }

    // `5-1`: refused now, stored under the older schema, then the current CRD goes back on.
    let descending = schedule("descending", json!({"cron": "5-1 * * * *"}));
    let refused = raw
        .create(&pp, &descending)
        .await
        .expect_err("the current schema refuses 5-1");
    assert!(
        refused.to_string().contains("spec.schedule.cron"),
        "{refused}"
    );
    let old = tempfile::tempdir().expect("tempdir");
    crd_without_cron_range_rule(old.path());
    cp.install_crds(old.path())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    // The old schema may take a moment to be the one that validates.
    let mut stored = None;
    for _ in 0..50 {
        match raw.create(&pp, &descending).await {
            Ok(s) => {
                stored = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(stored.is_some(), "the older schema admits 5-1");
    cp.install_crds(repo_root().join("crds"))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

    // A typed list returns all of them.
    let listed = api.list(&ListParams::default()).await;
    let mut listed = listed.unwrap_or_else(|e| panic!("typed list: {e}")).items;
    // The watch starts from the same objects, and sees a later one arrive.
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut initial = Vec::new();
    let init = async {
        while let Some(event) = stream
            .try_next()
            .await
            .unwrap_or_else(|e| panic!("watch: {e}"))
        {
            match event {
                watcher::Event::InitApply(s) => initial.push(s),
                watcher::Event::InitDone => return,
                _ => {}
            }
        }
        panic!("the watch ended before its initial list was done");
    };
    tokio::time::timeout(Duration::from_secs(30), init)
        .await
        .expect("initial list in time");
    // Admitted by the current schema, invalid, and created after the watch began.
    let late = schedule("late", json!({"cron": "0 0 30,31 2 *"}));
    raw.create(&pp, &late)
        .await
        .unwrap_or_else(|e| panic!("late admitted: {e}"));
    let next = async {
        while let Some(event) = stream
            .try_next()
            .await
            .unwrap_or_else(|e| panic!("watch: {e}"))
        {
            if let watcher::Event::Apply(s) = event
                && s.metadata.name.as_deref() == Some("late")
            {
                return s;
            }
        }
        panic!("the watch ended before the late object arrived");
    };
    let late_from_watch = tokio::time::timeout(Duration::from_secs(30), next)
        .await
        .expect("late object in time");
    initial.push(late_from_watch);
    listed.extend(api.get("late").await.map_err(|e| panic!("get late: {e}")));

    check(&verdicts(&listed), "list");
    check(&verdicts(&initial), "watch");
}

/// The API server does not check `format: int32`: without a range in the schema, a status
/// counter past `i32::MAX` is stored and then fails typed decoding of the whole list.
#[tokio::test]
async fn a_status_counter_beyond_i32_is_refused_at_admission() {
    use kube::api::{Patch, PatchParams};
    let cp = ControlPlane::shared().await;
    let ns = cp
        .create_namespace("counter")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let resource = ApiResource::erase::<SnapshotSchedule>(&());
    let raw: Api<DynamicObject> = Api::namespaced_with(cp.admin_client(), &ns, &resource);
    raw.create(
        &PostParams::default(),
        &schedule("counter", json!({"interval": "1h"})),
    )
    .await
    .unwrap_or_else(|e| panic!("create: {e}"));
    let patch = |n: i64| Patch::Merge(json!({"status": {"consecutiveFailures": n}}));
    raw.patch_status(
        "counter",
        &PatchParams::default(),
        &patch(i64::from(i32::MAX)),
    )
    .await
    .unwrap_or_else(|e| panic!("i32::MAX is a valid counter: {e}"));
    let refused = raw
        .patch_status(
            "counter",
            &PatchParams::default(),
            &patch(i64::from(i32::MAX) + 1),
        )
        .await
        .expect_err("a counter past i32::MAX is refused");
    assert!(
        refused.to_string().contains("status.consecutiveFailures"),
        "{refused}"
    );
    let api: Api<SnapshotSchedule> = Api::namespaced(cp.admin_client(), &ns);
    api.list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("typed list: {e}"));
}
