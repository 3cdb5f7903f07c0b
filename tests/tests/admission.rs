//! What the API server itself enforces with the CRDs in `crds/`: the examples are accepted,
//! the invalid corpus in `tests/fixtures/invalid/` is rejected with the field named and
//! nothing stored, defaults are materialised (a GitOps re-apply is a no-op), the status
//! subresource is separate from `spec`, and RBAC applies to the resources.
//!
//! One control plane serves the whole file ([`ControlPlane::shared`]); each test works in
//! its own namespace.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Output,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams},
    discovery::{Scope, pinned_kind},
};
use serde_json::{Value, json};
use tidepool_api::SnapshotSchedule;
use tidepool_tests::control_plane::{ControlPlane, FIELD_MANAGER, repo_root};

fn stdout_of(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn kubectl(cp: &ControlPlane, args: &[&str]) -> Output {
    cp.kubectl()
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running kubectl {args:?}: {e}"))
}

fn examples_dir() -> PathBuf {
    repo_root().join("examples")
}

/// The column headers `kubectl get` prints for a CRD: NAME, then each printer column of
/// priority 0, upper-cased.
fn expected_headers(crd_file: &str) -> Vec<String> {
    let path = repo_root().join("crds").join(crd_file);
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let mut headers = vec!["NAME".to_owned()];
    headers.extend(
        crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| c.name.to_uppercase()),
    );
    headers
}

/// Splits a `kubectl get` table line into cells (columns are separated by 2+ spaces, and a
/// header such as `LAST SYNC` contains one).
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_example_is_accepted_and_get_prints_the_printer_columns() {
    let cp = ControlPlane::shared().await;
    let ns = cp
        .create_namespace("examples")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let examples = examples_dir();
    let examples = examples
        .to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path"));

    let applied = stdout_of(
        "kubectl apply --server-side -f examples/",
        &kubectl(cp, &["apply", "--server-side", "-n", &ns, "-f", examples]).await,
    );
    let files: Vec<PathBuf> = fs::read_dir(examples)
        .unwrap_or_else(|e| panic!("reading {examples}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(!files.is_empty(), "no examples in {examples}");
    let applied_count = applied.matches("serverside-applied").count();
    assert!(
        applied_count >= files.len(),
        "{} example files but {applied_count} objects applied:\n{applied}",
        files.len()
    );

    let table = stdout_of(
        "kubectl get snapshotschedules,replicationpolicies",
        &kubectl(
            cp,
            &["get", "snapshotschedules,replicationpolicies", "-n", &ns],
        )
        .await,
    );
    eprintln!("{table}");
    let header_lines: Vec<Vec<String>> = table
        .lines()
        .filter(|l| l.starts_with("NAME "))
        .map(cells)
        .collect();
    assert_eq!(
        header_lines,
        vec![
            expected_headers("snapshotschedules.yaml"),
            expected_headers("replicationpolicies.yaml")
        ],
        "{table}"
    );
    // The columns hold what the specs say.
    for (name, value) in [
        ("snapshotschedule.tidepool.dev/apps-frequent", "15m"),
        ("snapshotschedule.tidepool.dev/db-hourly", "0 * * * *"),
        (
            "replicationpolicy.tidepool.dev/db-to-node-b",
            "tank/apps/db",
        ),
        ("replicationpolicy.tidepool.dev/apps-to-s3", "tank/apps"),
    ] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
        assert!(
            cells(row).iter().any(|c| c == value),
            "{name}: no `{value}` column in {row:?}"
        );
    }
}

#[tokio::test]
async fn defaults_are_materialised_so_a_gitops_reapply_shows_no_diff() {
    let cp = ControlPlane::shared().await;
    let ns = cp
        .create_namespace("gitops")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let examples = examples_dir();
    let examples = examples
        .to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path"));
    let manager = "--field-manager=gitops";
    stdout_of(
        "kubectl apply --server-side",
        &kubectl(
            cp,
            &["apply", "--server-side", manager, "-n", &ns, "-f", examples],
        )
        .await,
    );

    let diff = kubectl(
        cp,
        &["diff", "--server-side", manager, "-n", &ns, "-f", examples],
    )
    .await;
    assert!(
        diff.status.success() && diff.stdout.is_empty(),
        "re-applying the examples would change them ({}):\n{}\n{}",
        diff.status,
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );

    // The server, not the client, filled in what the manifests leave out.
    let client = cp.admin_client();
    let schedule = get_json(&client, &ns, "SnapshotSchedule", "apps-frequent").await;
    let spec = &schedule["spec"];
    assert_eq!(spec["schedule"]["timeZone"], "UTC", "{spec:#}");
    assert_eq!(spec["naming"]["prefix"], "tidepool", "{spec:#}");
    assert_eq!(spec["suspend"], false, "{spec:#}");
    assert_eq!(spec["deletionPolicy"], "Retain", "{spec:#}");
    let policy = get_json(&client, &ns, "ReplicationPolicy", "db-to-node-b").await;
    let spec = &policy["spec"];
    assert_eq!(spec["send"]["compressed"], true, "{spec:#}");
    assert_eq!(spec["send"]["properties"], false, "{spec:#}");
    assert_eq!(
        spec["source"]["snapshots"]["intermediates"], true,
        "{spec:#}"
    );
    assert_eq!(spec["source"]["recursive"], false, "{spec:#}");
}

async fn api_for(client: &Client, ns: &str, kind: &str) -> (Api<DynamicObject>, Scope) {
    let gvk = GroupVersionKind::gvk(tidepool_api::GROUP, "v1alpha1", kind);
    let (resource, caps) = pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("discovering {kind}: {e}"));
    let api = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), ns, &resource),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    (api, caps.scope)
}

async fn get_json(client: &Client, ns: &str, kind: &str, name: &str) -> Value {
    let (api, _) = api_for(client, ns, kind).await;
    let object = api
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("GET {kind} {ns}/{name}: {e}"));
    serde_json::to_value(object).unwrap_or_else(|e| panic!("{e}"))
}

/// One file of the invalid corpus.
struct Fixture {
    path: PathBuf,
    /// Field paths the rejection must name (`# expect: spec.x`).
    expect: Vec<String>,
    /// One document: a create that must fail. Two: a valid create, then an update of it
    /// that must fail.
    docs: Vec<Value>,
}

fn load_fixtures() -> Vec<Fixture> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/invalid");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let expect: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix("# expect:"))
                .map(|e| e.trim().to_owned())
                .collect();
            assert!(
                !expect.is_empty(),
                "{} has no `# expect: <field>` line",
                path.display()
            );
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
            let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
            assert!(
                matches!(docs.len(), 1 | 2),
                "{}: expected 1 or 2 documents",
                path.display()
            );
            Fixture { path, expect, docs }
        })
        .collect()
}

fn kind_and_name(doc: &Value) -> (String, String) {
    let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
    let name = doc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (kind, name)
}

async fn apply(api: &Api<DynamicObject>, doc: &Value) -> Result<DynamicObject, kube::Error> {
    let (_, name) = kind_and_name(doc);
    // Strict field validation and server-side apply: what `kubectl apply --server-side` does.
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER)
            .force()
            .validation_strict(),
        &Patch::Apply(doc),
    )
    .await
}

/// Checks one fixture; returns a description of what went wrong, if anything.
async fn check_fixture(client: &Client, ns: &str, fixture: &Fixture) -> Option<String> {
    let file = fixture
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (kind, _) = kind_and_name(fixture.docs.last()?);
    let (api, scope) = api_for(client, ns, &kind).await;
    let mut docs = fixture.docs.clone();
    if scope == Scope::Cluster {
        // Cluster-scoped objects are shared by every test of this control plane (the
        // examples test creates `default-apps` too): give each fixture its own name.
        let stem = fixture
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        for doc in &mut docs {
            doc["metadata"]["name"] = json!(format!("{}-{ns}", stem.clone().unwrap_or_default()));
        }
    }
    let invalid = docs.last()?;
    let (_, name) = kind_and_name(invalid);

    let before = match docs.first() {
        Some(base) if docs.len() == 2 => match apply(&api, base).await {
            Ok(created) => Some(created),
            Err(e) => return Some(format!("{file}: the valid base document was refused: {e}")),
        },
        _ => None,
    };

    let problem = match apply(&api, invalid).await {
        Ok(_) => Some(format!(
            "{file}: ACCEPTED (expected a rejection naming {:?})",
            fixture.expect
        )),
        Err(kube::Error::Api(status)) => {
            let missing: Vec<&String> = fixture
                .expect
                .iter()
                .filter(|field| !status.message.contains(&format!("{field}: ")))
                .collect();
            if status.code != 422 {
                Some(format!(
                    "{file}: HTTP {} (expected 422 Invalid): {}",
                    status.code, status.message
                ))
            } else if !missing.is_empty() {
                Some(format!(
                    "{file}: the message does not name {missing:?}: {}",
                    status.message
                ))
            } else {
                None
            }
        }
        Err(e) => Some(format!("{file}: unexpected error {e}")),
    };

    // Nothing stored: no object for a create, an untouched one for an update.
    let stored = api
        .get_opt(&name)
        .await
        .unwrap_or_else(|e| panic!("{file}: GET {kind} {name}: {e}"));
    let storage_problem = match (&before, &stored) {
        (None, Some(_)) => Some(format!("{file}: an object was stored")),
        (Some(before), Some(after))
            if before.metadata.resource_version != after.metadata.resource_version =>
        {
            Some(format!("{file}: the stored object changed"))
        }
        (Some(_), None) => Some(format!("{file}: the base object disappeared")),
        _ => None,
    };
    if before.is_some() {
        let _ = api.delete(&name, &Default::default()).await;
    }
    match (problem, storage_problem) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

#[tokio::test]
async fn the_invalid_corpus_is_rejected_at_admission_naming_the_field_and_nothing_is_stored() {
    let cp = ControlPlane::shared().await;
    let ns = cp
        .create_namespace("invalid")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let client = cp.admin_client();
    let fixtures = load_fixtures();
    assert!(
        fixtures.len() >= 40,
        "the invalid corpus has only {} files",
        fixtures.len()
    );

    let mut problems = Vec::new();
    for fixture in &fixtures {
        if let Some(problem) = check_fixture(&client, &ns, fixture).await {
            problems.push(problem);
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} invalid manifests were not handled as expected:\n{}",
        problems.len(),
        fixtures.len(),
        problems.join("\n")
    );

    // And nothing at all is left in the namespace.
    for kind in ["SnapshotSchedule", "ReplicationPolicy"] {
        let (api, _) = api_for(&client, &ns, kind).await;
        let left = api
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("listing {kind}: {e}"));
        assert!(left.items.is_empty(), "{kind}s stored: {:?}", left.items);
    }
    eprintln!("{} invalid manifests rejected", fixtures.len());
}

#[tokio::test]
async fn status_writes_do_not_bump_the_generation_and_spec_writes_do() {
    let cp = ControlPlane::shared().await;
    let ns = cp
        .create_namespace("status")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let client = cp.admin_client();
    let text = fs::read_to_string(examples_dir().join("snapshot-schedule-interval.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let schedule: SnapshotSchedule =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parsing the example: {e}"));
    let name = schedule.metadata.name.clone().unwrap_or_default();
    let api: Api<SnapshotSchedule> = Api::namespaced(client, &ns);
    let created = api
        .create(&PostParams::default(), &schedule)
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {e}"));
    assert_eq!(created.metadata.generation, Some(1));

    let status = json!({ "status": { "consecutiveFailures": 3, "observedGeneration": 1 } });
    let after_status = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("writing status: {e}"));
    assert_eq!(
        after_status.metadata.generation,
        Some(1),
        "status bumped the generation"
    );
    assert_eq!(
        after_status.status.as_ref().map(|s| s.consecutive_failures),
        Some(3)
    );

    // Status sent to the main resource is ignored: only the subresource writes it.
    let sneaky = json!({ "status": { "consecutiveFailures": 99 } });
    let after_sneaky = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&sneaky))
        .await
        .unwrap_or_else(|e| panic!("patching the main resource: {e}"));
    assert_eq!(
        after_sneaky.status.as_ref().map(|s| s.consecutive_failures),
        Some(3)
    );
    assert_eq!(after_sneaky.metadata.generation, Some(1));

    let spec = json!({ "spec": { "suspend": true } });
    let after_spec = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .unwrap_or_else(|e| panic!("writing spec: {e}"));
    assert_eq!(
        after_spec.metadata.generation,
        Some(2),
        "spec did not bump the generation"
    );
    assert!(after_spec.spec.suspend);
}

#[tokio::test]
async fn a_service_account_without_a_binding_cannot_list_snapshot_schedules() {
    let cp = ControlPlane::shared().await;
    let ns = cp
        .create_namespace("rbac")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let sa = cp
        .client_for_service_account(&ns, "nobody")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let schedules: Api<SnapshotSchedule> = Api::namespaced(sa, &ns);
    match schedules.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(
                s.message
                    .contains(&format!("system:serviceaccount:{ns}:nobody"))
                    && s.message.contains("snapshotschedules"),
                "{}",
                s.message
            );
        }
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}
