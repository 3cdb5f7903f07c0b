//! The chart's RBAC and admission policies on the real API server, exercised with the
//! chart's own ServiceAccounts through Pod-bound tokens (the harness plays the kubelet):
//! each identity can do what its part needs and is refused (403) everything else.
//!
//! One control plane serves the whole file; each test installs its own release of the chart
//! in its own namespace, with its own node names (ZfsNodes are cluster-scoped).

use std::time::Duration;

use k8s_openapi::{
    api::{
        authentication::v1::{TokenReview, TokenReviewSpec},
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{Event as CoreEvent, Namespace, Node, ObjectReference, Secret, ServiceAccount},
        events::v1::Event,
    },
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource,
    api::{
        ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams,
        PostParams, WatchParams,
    },
};
use serde_json::{Value, json};
use tidepool_tests::{
    chart::{ChartRelease, Component, chart_dir, tidepool_resource},
    control_plane::{ControlPlane, FIELD_MANAGER, repo_root},
    kubelet::{Audience, Kubelet, MIN_TOKEN_LIFETIME, PodIdentity},
};

/// The audience the agent's API will accept (the controller's tokens for it carry this).
const AGENT_AUDIENCE: &str = "tidepool-agent";
const CONTROLLER_MANAGER: &str = "tidepool-controller";

/// One release of the chart with the Pods its workloads would run, as the harness makes
/// them: agents on nodes A and B, the controller on node A, and an intruder (a Pod of some
/// other ServiceAccount) on node A.
struct Cluster {
    cp: &'static ControlPlane,
    chart: ChartRelease,
    /// Where the user objects live (not the release namespace).
    user_ns: String,
    node_a: String,
    node_b: String,
    agent_a: PodIdentity,
    agent_b: PodIdentity,
    controller: PodIdentity,
    /// The controller's token for the agents' API, as the agents will receive it.
    controller_agent_token: String,
    intruder: PodIdentity,
}

fn ok<T>(result: anyhow::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e:#}"))
}

async fn cluster(prefix: &str) -> Cluster {
    let cp = ControlPlane::shared().await;
    let release_ns = ok(cp.create_namespace(prefix).await);
    let user_ns = ok(cp.create_namespace(&format!("{prefix}-user")).await);
    // The namespace name is unique in the control plane, so the release name (and with it
    // every cluster-scoped object of the chart) is too.
    let chart = ok(ChartRelease::install(cp, &release_ns, &release_ns).await);
    let kubelet = Kubelet::new(cp);
    let node_a = format!("{release_ns}-node-a");
    let node_b = format!("{release_ns}-node-b");
    for node in [&node_a, &node_b] {
        ok(kubelet.register_node(node).await);
    }
    let agent_sa = ok(chart.service_account(Component::Agent));
    let controller_sa = ok(chart.service_account(Component::Controller));

    let intruder_sa = "intruder";
    Api::<ServiceAccount>::namespaced(cp.admin_client(), &release_ns)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(intruder_sa.to_owned()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("creating ServiceAccount intruder: {e}"));

    let pod = |name: &'static str, sa: &str, node: &str| {
        let (ns, sa, node) = (release_ns.clone(), sa.to_owned(), node.to_owned());
        async move { ok(kubelet.schedule_pod(&ns, name, &sa, &node).await) }
    };
    let agent_a_pod = pod("agent-a", agent_sa, &node_a).await;
    let agent_b_pod = pod("agent-b", agent_sa, &node_b).await;
    let controller_pod = pod("controller-0", controller_sa, &node_a).await;
    let intruder_pod = pod("intruder", intruder_sa, &node_a).await;
    let controller_agent_token = ok(controller_pod
        .mint_token(cp, Audience::Named(AGENT_AUDIENCE), MIN_TOKEN_LIFETIME)
        .await);
    Cluster {
        cp,
        agent_a: ok(agent_a_pod.api_identity(cp).await),
        agent_b: ok(agent_b_pod.api_identity(cp).await),
        controller: ok(controller_pod.api_identity(cp).await),
        intruder: ok(intruder_pod.api_identity(cp).await),
        controller_agent_token,
        chart,
        user_ns,
        node_a,
        node_b,
    }
}

// --- assertions ----------------------------------------------------------------------

fn assert_allowed<T>(result: kube::Result<T>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: expected it to be allowed, got {e}"))
}

/// Asserts a 403 and returns its message.
fn assert_forbidden<T: std::fmt::Debug>(result: kube::Result<T>, what: &str) -> String {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 => s.message,
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// Asserts a 403 from one of the chart's admission policies (RBAC alone would allow it).
fn assert_refused_by_policy<T: std::fmt::Debug>(
    result: kube::Result<T>,
    what: &str,
    message_part: &str,
) {
    let message = assert_forbidden(result, what);
    assert!(
        message.contains("ValidatingAdmissionPolicy") && message.contains(message_part),
        "{what}: refused, but not by the policy saying {message_part:?}: {message}"
    );
}

// --- objects -------------------------------------------------------------------------

fn zfs_nodes(client: Client) -> Api<DynamicObject> {
    Api::all_with(client, &tidepool_resource("ZfsNode", "zfsnodes"))
}

fn schedules(client: Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client,
        ns,
        &tidepool_resource("SnapshotSchedule", "snapshotschedules"),
    )
}

fn policies(client: Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client,
        ns,
        &tidepool_resource("ReplicationPolicy", "replicationpolicies"),
    )
}

fn grants(client: Client) -> Api<DynamicObject> {
    Api::all_with(client, &tidepool_resource("DatasetGrant", "datasetgrants"))
}

fn zfs_node(name: &str, node_name: &str) -> Value {
    json!({
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "ZfsNode",
        "metadata": { "name": name },
        "spec": { "nodeName": node_name },
    })
}

/// What an agent publishes about its node (a server-side apply of the status).
fn zfs_node_status(version: &str) -> Value {
    json!({
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "ZfsNode",
        "status": {
            "zfsVersion": version,
            "endpoint": "10.77.0.2:7443",
            "tlsCertificateSha256": "ab".repeat(32),
        },
    })
}

/// An example manifest from `examples/`, renamed, as a JSON value.
fn example(file: &str, name: &str) -> Value {
    let path = repo_root().join("examples").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut doc: Value =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    doc["metadata"]["name"] = json!(name);
    doc
}

async fn admin_apply(api: &Api<DynamicObject>, doc: &Value) -> DynamicObject {
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(doc),
    )
    .await
    .unwrap_or_else(|e| panic!("admin applying {name}: {e}"))
}

/// Runs a watch of every object of `resource` for a second: allowed when the API server
/// streams it (and ends it at the timeout) rather than refusing it.
async fn watch_allowed(client: &Client, resource: &ApiResource, what: &str) {
    let request = kube::core::Request::new(<DynamicObject as Resource>::url_path(resource, None))
        .watch(&WatchParams::default().timeout(1), "0")
        .unwrap_or_else(|e| panic!("building the watch of {what}: {e}"));
    client
        .request_text(request)
        .await
        .unwrap_or_else(|e| panic!("watch {what}: expected it to be allowed, got {e}"));
}

// --- tests ---------------------------------------------------------------------------

#[tokio::test]
async fn the_chart_lints_renders_for_the_server_and_grants_no_wildcards() {
    let cp = ControlPlane::shared().await;
    let lint = cp
        .helm()
        .arg("lint")
        .arg(chart_dir())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running helm lint: {e}"));
    assert!(
        lint.status.success(),
        "helm lint failed:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let ns = ok(cp.create_namespace("chart-render").await);
    let chart = ok(ChartRelease::install(cp, &ns, &ns).await);
    let mut kinds: Vec<&str> = chart
        .objects
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "ServiceAccount",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding",
        ]
    );
    for role in chart
        .objects_of_kind("ClusterRole")
        .chain(chart.objects_of_kind("Role"))
    {
        for rule in role["rules"].as_array().into_iter().flatten() {
            for field in ["apiGroups", "resources", "verbs"] {
                let values = rule[field].as_array().into_iter().flatten();
                assert!(
                    values.clone().all(|v| v != "*"),
                    "{} grants a wildcard in {field}: {rule}",
                    role["metadata"]["name"]
                );
            }
            for verb in rule["verbs"].as_array().into_iter().flatten() {
                assert!(
                    ![
                        "delete",
                        "deletecollection",
                        "escalate",
                        "bind",
                        "impersonate"
                    ]
                    .contains(&verb.as_str().unwrap_or_default()),
                    "{} grants {verb}: {rule}",
                    role["metadata"]["name"]
                );
            }
        }
    }
    // The policies are bound and stored as rendered (the API server accepted the CEL).
    let stored = cp
        .kubectl()
        .args(["get", "validatingadmissionpolicybindings", "-o", "name"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("kubectl: {e}"));
    let stored = String::from_utf8_lossy(&stored.stdout);
    for binding in chart.objects_of_kind("ValidatingAdmissionPolicyBinding") {
        let name = binding["metadata"]["name"].as_str().unwrap_or_default();
        assert!(stored.contains(name), "{name} not stored:\n{stored}");
    }
}

#[tokio::test]
async fn an_agent_writes_its_own_zfsnode_and_status_and_no_other() {
    let c = cluster("chart-agent").await;
    let agent_a = zfs_nodes(ok(c.agent_a.client().await));
    let agent_b = zfs_nodes(ok(c.agent_b.client().await));
    let apply = PatchParams::apply("tidepool-agent");

    // Its own name, but claiming to describe another node.
    assert_refused_by_policy(
        agent_a
            .patch(
                &c.node_a,
                &apply,
                &Patch::Apply(zfs_node(&c.node_a, &c.node_b)),
            )
            .await,
        "agent A creating ZfsNode A with spec.nodeName B",
        "must describe its own node",
    );

    // Its own node: create (server-side apply), update, status by apply and by update.
    assert_allowed(
        agent_a
            .patch(
                &c.node_a,
                &apply,
                &Patch::Apply(zfs_node(&c.node_a, &c.node_a)),
            )
            .await,
        "agent A creating ZfsNode A",
    );
    let mut own = assert_allowed(agent_a.get(&c.node_a).await, "agent A reading ZfsNode A");
    own.metadata
        .labels
        .get_or_insert_default()
        .insert("tidepool.dev/agent".into(), "up".into());
    assert_allowed(
        agent_a
            .replace(&c.node_a, &PostParams::default(), &own)
            .await,
        "agent A updating ZfsNode A",
    );
    let status = assert_allowed(
        agent_a
            .patch_status(&c.node_a, &apply, &Patch::Apply(zfs_node_status("2.3.2")))
            .await,
        "agent A applying ZfsNode A's status",
    );
    assert_eq!(status.data["status"]["zfsVersion"], "2.3.2");
    let mut own = assert_allowed(agent_a.get(&c.node_a).await, "agent A reading ZfsNode A");
    own.data["status"]["zfsVersion"] = json!("2.3.3");
    let replaced = assert_allowed(
        agent_a
            .replace_status(&c.node_a, &PostParams::default(), &own)
            .await,
        "agent A updating ZfsNode A's status",
    );
    assert_eq!(replaced.data["status"]["zfsVersion"], "2.3.3");

    // Another node: not created, and once agent B made it, neither changed nor its status.
    assert_refused_by_policy(
        agent_a
            .patch(
                &c.node_b,
                &apply,
                &Patch::Apply(zfs_node(&c.node_b, &c.node_b)),
            )
            .await,
        "agent A creating ZfsNode B",
        "may write only ZfsNode",
    );
    assert_allowed(
        agent_b
            .patch(
                &c.node_b,
                &apply,
                &Patch::Apply(zfs_node(&c.node_b, &c.node_b)),
            )
            .await,
        "agent B creating ZfsNode B",
    );
    assert_refused_by_policy(
        agent_a
            .patch(
                &c.node_b,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "labels": { "hijacked": "yes" } } })),
            )
            .await,
        "agent A patching ZfsNode B",
        "may write only ZfsNode",
    );
    assert_refused_by_policy(
        agent_a
            .patch_status(&c.node_b, &apply, &Patch::Apply(zfs_node_status("6.6.6")))
            .await,
        "agent A applying ZfsNode B's status",
        "may write only ZfsNode",
    );
    let b = assert_allowed(agent_b.get(&c.node_b).await, "agent B reading ZfsNode B");
    assert!(b.data["status"]["zfsVersion"].is_null(), "{:?}", b.data);
    assert!(b.metadata.labels.is_none(), "{:?}", b.metadata);

    // Nobody may delete a ZfsNode with the agent's rights, not even its own.
    assert_forbidden(
        agent_a.delete(&c.node_a, &DeleteParams::default()).await,
        "agent A deleting ZfsNode A",
    );
}

#[tokio::test]
async fn an_agent_token_not_bound_to_a_pod_on_a_node_writes_no_zfsnode() {
    let c = cluster("chart-unbound").await;
    let agent_sa = ok(c.chart.service_account(Component::Agent));
    // The agent's ServiceAccount, but a token bound to no Pod (so no node-name claim).
    let unbound = zfs_nodes(ok(c
        .cp
        .client_for_service_account(&c.chart.namespace, agent_sa)
        .await));
    assert_refused_by_policy(
        unbound
            .patch(
                &c.node_a,
                &PatchParams::apply("tidepool-agent"),
                &Patch::Apply(zfs_node(&c.node_a, &c.node_a)),
            )
            .await,
        "an unbound agent token creating ZfsNode A",
        "bound to a Pod on a node",
    );
}

#[tokio::test]
async fn an_agent_reviews_tokens_and_reads_nothing_else() {
    let c = cluster("chart-agent-reads").await;
    let agent = ok(c.agent_a.client().await);

    // What the agent's API will do with each caller's token.
    let reviews: Api<TokenReview> = Api::all(agent.clone());
    let review = |token: String| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token),
            audiences: Some(vec![AGENT_AUDIENCE.to_owned()]),
        },
        ..TokenReview::default()
    };
    let reviewed = assert_allowed(
        reviews
            .create(
                &PostParams::default(),
                &review(c.controller_agent_token.clone()),
            )
            .await,
        "agent creating a TokenReview",
    );
    let status = reviewed.status.unwrap_or_default();
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    let user = status.user.unwrap_or_default();
    let controller_sa = ok(c.chart.service_account(Component::Controller));
    assert_eq!(
        user.username.as_deref(),
        Some(
            format!(
                "system:serviceaccount:{}:{controller_sa}",
                c.chart.namespace
            )
            .as_str()
        )
    );
    let extra = user.extra.unwrap_or_default();
    assert_eq!(
        extra.get("authentication.kubernetes.io/node-name"),
        Some(&vec![c.node_a.clone()])
    );
    assert_eq!(status.audiences, Some(vec![AGENT_AUDIENCE.to_owned()]));
    // A token for the API server is not one for the agent.
    let wrong_audience = assert_allowed(
        reviews
            .create(
                &PostParams::default(),
                &review(c.controller.token().to_owned()),
            )
            .await,
        "agent reviewing an API-server token",
    );
    assert_ne!(
        wrong_audience.status.and_then(|s| s.authenticated),
        Some(true)
    );

    let ours = schedules(agent.clone(), &c.user_ns);
    assert_forbidden(
        ours.list(&ListParams::default()).await,
        "agent listing SnapshotSchedules",
    );
    assert_forbidden(
        ours.get("anything").await,
        "agent reading a SnapshotSchedule",
    );
    assert_forbidden(
        ours.create(
            &PostParams::default(),
            &serde_json::from_value(example("snapshot-schedule-interval.yaml", "by-agent"))
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await,
        "agent creating a SnapshotSchedule",
    );
    assert_forbidden(
        policies(agent.clone(), &c.user_ns)
            .list(&ListParams::default())
            .await,
        "agent listing ReplicationPolicies",
    );
    for ns in [&c.user_ns, &c.chart.namespace] {
        let secrets: Api<Secret> = Api::namespaced(agent.clone(), ns);
        assert_forbidden(
            secrets.list(&ListParams::default()).await,
            "agent listing Secrets",
        );
        assert_forbidden(secrets.get("anything").await, "agent reading a Secret");
    }
    assert_forbidden(
        zfs_nodes(agent.clone()).list(&ListParams::default()).await,
        "agent listing ZfsNodes",
    );
    assert_forbidden(
        Api::<Node>::all(agent.clone())
            .list(&ListParams::default())
            .await,
        "agent listing Nodes",
    );
    assert_forbidden(
        Api::<Event>::namespaced(agent, &c.user_ns)
            .create(&PostParams::default(), &event("by-agent", &c.user_ns))
            .await,
        "agent creating an Event",
    );
}

fn event(name: &str, ns: &str) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(Timestamp::now())),
        reporting_controller: Some("tidepool.dev/controller".to_owned()),
        reporting_instance: Some("controller-0".to_owned()),
        action: Some("Snapshot".to_owned()),
        reason: Some("SnapshotTaken".to_owned()),
        type_: Some("Normal".to_owned()),
        note: Some("took tank/apps@tidepool_20261122T093000Z_frequent".to_owned()),
        regarding: Some(ObjectReference {
            api_version: Some("tidepool.dev/v1alpha1".to_owned()),
            kind: Some("SnapshotSchedule".to_owned()),
            name: Some("apps".to_owned()),
            namespace: Some(ns.to_owned()),
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}

#[tokio::test]
async fn the_controller_reads_user_objects_and_writes_only_status_finalizers_events_and_its_lease()
{
    let c = cluster("chart-controller").await;
    let admin = c.cp.admin_client();
    admin_apply(
        &schedules(admin.clone(), &c.user_ns),
        &example("snapshot-schedule-interval.yaml", "apps"),
    )
    .await;
    admin_apply(
        &policies(admin.clone(), &c.user_ns),
        &example("replication-node.yaml", "db"),
    )
    .await;
    let grant_name = format!("{}-grant", c.chart.release);
    admin_apply(
        &grants(admin.clone()),
        &example("dataset-grant.yaml", &grant_name),
    )
    .await;
    admin_apply(&zfs_nodes(admin.clone()), &zfs_node(&c.node_a, &c.node_a)).await;

    let controller = ok(c.controller.client().await);
    let ours = schedules(controller.clone(), &c.user_ns);
    let rps = policies(controller.clone(), &c.user_ns);

    // Reads: the user objects in every namespace, grants, nodes, namespaces.
    for (kind, plural) in [
        ("SnapshotSchedule", "snapshotschedules"),
        ("ReplicationPolicy", "replicationpolicies"),
        ("DatasetGrant", "datasetgrants"),
        ("ZfsNode", "zfsnodes"),
    ] {
        let resource = tidepool_resource(kind, plural);
        let api: Api<DynamicObject> = Api::all_with(controller.clone(), &resource);
        let listed = assert_allowed(api.list(&ListParams::default()).await, plural);
        assert!(!listed.items.is_empty(), "{plural}: none listed");
        watch_allowed(&controller, &resource, plural).await;
    }
    assert_allowed(
        ours.get("apps").await,
        "controller reading a SnapshotSchedule",
    );
    assert_allowed(
        Api::<Namespace>::all(controller.clone())
            .list(&ListParams::default())
            .await,
        "controller listing Namespaces",
    );
    assert_allowed(
        Api::<Node>::all(controller.clone())
            .list(&ListParams::default())
            .await,
        "controller listing Nodes",
    );

    // Status, by server-side apply with its own field manager.
    let ready = json!({
        "type": "Ready", "status": "True", "reason": "SnapshotsCurrent",
        "message": "all nodes current", "lastTransitionTime": "2026-11-22T09:30:00Z",
    });
    for (api, kind, name) in [
        (&ours, "SnapshotSchedule", "apps"),
        (&rps, "ReplicationPolicy", "db"),
    ] {
        let applied = assert_allowed(
            api.patch_status(
                name,
                &PatchParams::apply(CONTROLLER_MANAGER),
                &Patch::Apply(json!({
                    "apiVersion": "tidepool.dev/v1alpha1",
                    "kind": kind,
                    "status": { "observedGeneration": 1, "conditions": [ready] },
                })),
            )
            .await,
            &format!("controller applying a {kind}'s status"),
        );
        assert_eq!(applied.data["status"]["conditions"][0]["type"], "Ready");
    }

    // Its finalizer: added and removed through the object itself.
    let finalizer = "tidepool.dev/snapshots";
    for finalizers in [json!([finalizer]), json!(null)] {
        assert_allowed(
            ours.patch(
                "apps",
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "finalizers": finalizers } })),
            )
            .await,
            "controller changing a SnapshotSchedule's finalizers",
        );
    }

    // Never spec, labels or annotations; never create or delete user objects.
    for (api, what) in [(&ours, "SnapshotSchedule"), (&rps, "ReplicationPolicy")] {
        assert_refused_by_policy(
            api.patch(
                if what == "SnapshotSchedule" {
                    "apps"
                } else {
                    "db"
                },
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "suspend": true } })),
            )
            .await,
            &format!("controller patching a {what}'s spec"),
            "never writes spec",
        );
    }
    let mut current = assert_allowed(ours.get("apps").await, "controller reading apps");
    current.data["spec"]["suspend"] = json!(true);
    assert_refused_by_policy(
        ours.replace("apps", &PostParams::default(), &current).await,
        "controller updating a SnapshotSchedule's spec",
        "never writes spec",
    );
    assert_refused_by_policy(
        ours.patch(
            "apps",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "tidepool.dev/zfs": "false" } } })),
        )
        .await,
        "controller patching a SnapshotSchedule's labels",
        "only metadata.finalizers",
    );
    assert_forbidden(
        ours.create(
            &PostParams::default(),
            &serde_json::from_value(example("snapshot-schedule-interval.yaml", "by-controller"))
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await,
        "controller creating a SnapshotSchedule",
    );
    assert_forbidden(
        ours.delete("apps", &DeleteParams::default()).await,
        "controller deleting a SnapshotSchedule",
    );
    let after = assert_allowed(ours.get("apps").await, "controller reading apps");
    assert!(
        after.data["spec"]["suspend"] != json!(true),
        "{:?}",
        after.data
    );

    // ZfsNodes are the agents'.
    let nodes = zfs_nodes(controller.clone());
    assert_forbidden(
        nodes
            .patch(
                &c.node_b,
                &PatchParams::apply(CONTROLLER_MANAGER),
                &Patch::Apply(zfs_node(&c.node_b, &c.node_b)),
            )
            .await,
        "controller creating a ZfsNode",
    );
    assert_forbidden(
        nodes
            .patch_status(
                &c.node_a,
                &PatchParams::apply(CONTROLLER_MANAGER),
                &Patch::Apply(zfs_node_status("2.3.2")),
            )
            .await,
        "controller applying a ZfsNode's status",
    );
    assert_forbidden(
        Api::<Secret>::namespaced(controller.clone(), &c.user_ns)
            .list(&ListParams::default())
            .await,
        "controller listing Secrets",
    );

    // Events, both APIs, in the user's namespace.
    let events: Api<Event> = Api::namespaced(controller.clone(), &c.user_ns);
    assert_allowed(
        events
            .create(&PostParams::default(), &event("apps.1", &c.user_ns))
            .await,
        "controller creating an events.k8s.io Event",
    );
    assert_allowed(
        events
            .patch(
                "apps.1",
                &PatchParams::default(),
                &Patch::Merge(json!({ "series": { "count": 2, "lastObservedTime": MicroTime(Timestamp::now()) } })),
            )
            .await,
        "controller patching an Event",
    );
    let core_events: Api<CoreEvent> = Api::namespaced(controller.clone(), &c.user_ns);
    assert_allowed(
        core_events
            .create(
                &PostParams::default(),
                &CoreEvent {
                    metadata: ObjectMeta {
                        name: Some("apps.2".to_owned()),
                        ..ObjectMeta::default()
                    },
                    involved_object: ObjectReference {
                        kind: Some("SnapshotSchedule".to_owned()),
                        name: Some("apps".to_owned()),
                        namespace: Some(c.user_ns.clone()),
                        ..ObjectReference::default()
                    },
                    reason: Some("SnapshotTaken".to_owned()),
                    type_: Some("Normal".to_owned()),
                    ..CoreEvent::default()
                },
            )
            .await,
        "controller creating a core Event",
    );

    // Its Lease: created, read and renewed in the release namespace; no other Lease.
    let lease_name = ok(c.chart.controller_lease_name()).to_owned();
    let leases: Api<Lease> = Api::namespaced(controller.clone(), &c.chart.namespace);
    let lease = |name: &str, holder: &str| Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }),
    };
    assert_allowed(
        leases
            .create(&PostParams::default(), &lease(&lease_name, "controller-0"))
            .await,
        "controller creating its Lease",
    );
    let mut held = assert_allowed(
        leases.get(&lease_name).await,
        "controller reading its Lease",
    );
    if let Some(spec) = held.spec.as_mut() {
        spec.renew_time = Some(MicroTime(Timestamp::now()));
    }
    assert_allowed(
        leases
            .replace(&lease_name, &PostParams::default(), &held)
            .await,
        "controller renewing its Lease",
    );
    assert_allowed(
        leases
            .patch(
                &lease_name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "holderIdentity": "controller-1" } })),
            )
            .await,
        "controller patching its Lease",
    );
    let other = "someone-elses-lease";
    Api::<Lease>::namespaced(admin, &c.chart.namespace)
        .create(&PostParams::default(), &lease(other, "someone"))
        .await
        .unwrap_or_else(|e| panic!("admin creating a Lease: {e}"));
    assert_forbidden(leases.get(other).await, "controller reading another Lease");
    assert_forbidden(
        leases
            .patch(
                other,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "holderIdentity": "controller-0" } })),
            )
            .await,
        "controller taking another Lease",
    );
    assert_forbidden(
        Api::<Lease>::namespaced(controller, &c.user_ns)
            .create(&PostParams::default(), &lease(&lease_name, "controller-0"))
            .await,
        "controller creating a Lease outside its namespace",
    );
}

#[tokio::test]
async fn another_service_accounts_pod_token_has_none_of_these_rights() {
    let c = cluster("chart-intruder").await;
    let admin = c.cp.admin_client();
    admin_apply(
        &schedules(admin, &c.user_ns),
        &example("snapshot-schedule-interval.yaml", "apps"),
    )
    .await;
    let intruder = ok(c.intruder.client().await);
    let ours = schedules(intruder.clone(), &c.user_ns);

    assert_forbidden(
        ours.list(&ListParams::default()).await,
        "intruder listing SnapshotSchedules",
    );
    assert_forbidden(
        ours.patch_status(
            "apps",
            &PatchParams::apply(CONTROLLER_MANAGER),
            &Patch::Apply(json!({
                "apiVersion": "tidepool.dev/v1alpha1",
                "kind": "SnapshotSchedule",
                "status": { "observedGeneration": 1 },
            })),
        )
        .await,
        "intruder applying a SnapshotSchedule's status",
    );
    assert_forbidden(
        ours.patch(
            "apps",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": ["x/y"] } })),
        )
        .await,
        "intruder changing finalizers",
    );
    let nodes = zfs_nodes(intruder.clone());
    // Its Pod is on node A, and still: no ZfsNode.
    assert_forbidden(
        nodes
            .patch(
                &c.node_a,
                &PatchParams::apply("tidepool-agent"),
                &Patch::Apply(zfs_node(&c.node_a, &c.node_a)),
            )
            .await,
        "intruder creating its node's ZfsNode",
    );
    assert_forbidden(
        nodes.list(&ListParams::default()).await,
        "intruder listing ZfsNodes",
    );
    assert_forbidden(
        grants(intruder.clone()).list(&ListParams::default()).await,
        "intruder listing DatasetGrants",
    );
    assert_forbidden(
        Api::<TokenReview>::all(intruder.clone())
            .create(
                &PostParams::default(),
                &TokenReview {
                    spec: TokenReviewSpec {
                        token: Some(c.controller_agent_token.clone()),
                        audiences: Some(vec![AGENT_AUDIENCE.to_owned()]),
                    },
                    ..TokenReview::default()
                },
            )
            .await,
        "intruder creating a TokenReview",
    );
    assert_forbidden(
        Api::<Event>::namespaced(intruder.clone(), &c.user_ns)
            .create(&PostParams::default(), &event("by-intruder", &c.user_ns))
            .await,
        "intruder creating an Event",
    );
    let lease_name = ok(c.chart.controller_lease_name()).to_owned();
    assert_forbidden(
        Api::<Lease>::namespaced(intruder.clone(), &c.chart.namespace)
            .get(&lease_name)
            .await,
        "intruder reading the controller's Lease",
    );
    assert_forbidden(
        Api::<Namespace>::all(intruder.clone())
            .list(&ListParams::default())
            .await,
        "intruder listing Namespaces",
    );
    assert_forbidden(
        Api::<Node>::all(intruder)
            .list(&ListParams::default())
            .await,
        "intruder listing Nodes",
    );
}

/// The API server refuses tokens shorter than ten minutes, so the agent's tests of a caller
/// whose token no longer works will end it by deleting its Pod: this pins that it does.
#[tokio::test]
async fn a_pod_bound_token_stops_authenticating_when_its_pod_is_deleted() {
    let c = cluster("chart-pod-gone").await;
    let agent = zfs_nodes(ok(c.agent_a.client().await));
    assert_allowed(
        agent.get_opt(&c.node_a).await,
        "agent A before its Pod is deleted",
    );
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(c.cp.admin_client(), &c.chart.namespace)
        .delete("agent-a", &DeleteParams::default().grace_period(0))
        .await
        .unwrap_or_else(|e| panic!("deleting Pod agent-a: {e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match agent.get_opt(&c.node_a).await {
            Err(kube::Error::Api(s)) if s.code == 401 => break,
            other if std::time::Instant::now() > deadline => {
                panic!("agent A's token still works after its Pod was deleted: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
