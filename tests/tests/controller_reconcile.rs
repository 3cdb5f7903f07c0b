//! The reconciler against the real API server, as the chart's controller ServiceAccount
//! (Pod-bound token): an admitted-but-invalid schedule, a namespace without a grant and a
//! node without a reachable agent each end in `Ready=False` with their own reason and a
//! Warning event, side by side, none of them blocking the others.

use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tidepool_api::{DatasetGrant, ZfsNode};
use tidepool_tests::release::*;

const WITHIN: Duration = Duration::from_secs(60);

/// A port on 127.0.0.1 that nothing listens on (bound once, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    l.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ungranted_and_unreachable_schedules_each_say_why() {
    let release = Release::install("ctrl").await;
    let cp = release.cp;
    let granted = ok(cp.create_namespace("ctrl-apps").await);
    let ungranted = ok(cp.create_namespace("ctrl-other").await);
    let node = release.node.clone();

    // The node's agent published an endpoint where nothing answers (the admin writes the
    // ZfsNode here; in the product the agent does).
    let zfs_nodes: Api<ZfsNode> = Api::all(cp.admin_client());
    zfs_nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "tidepool.dev/v1alpha1", "kind": "ZfsNode",
                "metadata": {"name": node}, "spec": {"nodeName": node},
            }))
            .unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    zfs_nodes
        .patch_status(
            &node,
            &PatchParams::apply("tidepool-tests").force(),
            &Patch::Apply(json!({
                "apiVersion": "tidepool.dev/v1alpha1", "kind": "ZfsNode",
                "status": {
                    "endpoint": format!("127.0.0.1:{}", closed_port()),
                    "tlsCertificateSha256": "ab".repeat(32),
                    "pools": [{"name": "tank", "health": "ONLINE", "sizeBytes": 1, "allocatedBytes": 0, "freeBytes": 1}],
                },
            })),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let grant_name = format!("{}-apps", release.ns);
    Api::<DatasetGrant>::all(cp.admin_client())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "tidepool.dev/v1alpha1", "kind": "DatasetGrant",
                "metadata": {"name": grant_name},
                "spec": {"namespaces": [granted], "datasets": ["tank/apps"], "nodeNames": [node], "access": ["Snapshot"]},
            }))
            .unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let spec = |schedule: serde_json::Value| json!({"nodeName": node, "datasets": [{"name": "tank/apps/db"}], "schedule": schedule, "retention": {"keepLast": 3}});
    // Admitted (every field matches its pattern) but never due: February 31st.
    create_schedule(cp, &granted, "never", spec(json!({"cron": "0 0 31 2 *"}))).await;
    create_schedule(cp, &granted, "hourly", spec(json!({"interval": "1h"}))).await;
    create_schedule(cp, &ungranted, "hourly", spec(json!({"interval": "1h"}))).await;

    let replica = release.replica("controller-0").await;
    let controller = release.start(&replica, None).await;

    let never = wait_ready(cp, &granted, "never", "False", "InvalidSchedule", WITHIN).await;
    let status = never.status.unwrap_or_default();
    let message = &status
        .last_error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_default();
    assert!(
        message.starts_with("spec.schedule.cron"),
        "the message names the field: {message}"
    );
    assert!(
        status.nodes.is_empty(),
        "no agent was asked: {:?}",
        status.nodes
    );
    wait_event(cp, &granted, "never", "Warning", "InvalidSchedule", WITHIN).await;

    let ours = wait_ready(cp, &granted, "hourly", "False", "AgentUnavailable", WITHIN).await;
    let status = ours.status.unwrap_or_default();
    assert_eq!(status.nodes.len(), 1, "{:?}", status.nodes);
    assert_eq!(status.nodes[0].node, node);
    let node_error = status.nodes[0]
        .last_error
        .clone()
        .unwrap_or_else(|| panic!("no per-node error"));
    assert_eq!(node_error.reason, "AgentUnavailable");
    assert_eq!(
        status.last_error.as_ref().and_then(|e| e.node.clone()),
        Some(node.clone())
    );
    assert!(status.consecutive_failures >= 1);
    wait_event(
        cp,
        &granted,
        "hourly",
        "Warning",
        "AgentUnavailable",
        WITHIN,
    )
    .await;

    let theirs = wait_ready(cp, &ungranted, "hourly", "False", "NotPermitted", WITHIN).await;
    let status = theirs.status.unwrap_or_default();
    assert!(
        status.nodes.is_empty(),
        "nothing was touched: {:?}",
        status.nodes
    );
    let message = status.last_error.map(|e| e.message).unwrap_or_default();
    assert!(
        message.contains(&ungranted) && message.contains("tank/apps/db"),
        "{message}"
    );
    wait_event(cp, &ungranted, "hourly", "Warning", "NotPermitted", WITHIN).await;

    // Granting the namespace fixes it by itself: the grant watch triggers a reconcile, and
    // the schedule goes on to its agent (which is unreachable).
    Api::<DatasetGrant>::all(cp.admin_client())
        .patch(
            &grant_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"namespaces": [granted, ungranted]}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_ready(
        cp,
        &ungranted,
        "hourly",
        "False",
        "AgentUnavailable",
        WITHIN,
    )
    .await;

    // Failures repeat without rewriting the error's time: the same error keeps its first
    // time across retries (the retry interval is 2 s here).
    let first = wait_ready(cp, &granted, "hourly", "False", "AgentUnavailable", WITHIN).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = wait_ready(cp, &granted, "hourly", "False", "AgentUnavailable", WITHIN).await;
    let time = |s: &tidepool_api::SnapshotSchedule| {
        s.status
            .as_ref()
            .and_then(|s| s.last_error.as_ref())
            .map(|e| e.time.clone())
    };
    assert_eq!(time(&first), time(&later));
    let warnings = events_about(cp, &granted, "hourly")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("AgentUnavailable"))
        .count();
    assert_eq!(warnings, 1, "one event per transition, not per retry");

    // deletionPolicy: Delete puts the finalizer on (the chart's RBAC and spec guard let
    // the controller change exactly that); deleting waits for the unreachable node, says
    // so, and gives up after the bounded wait instead of holding the object for ever.
    let mut delete = spec(json!({"interval": "1h"}));
    delete["deletionPolicy"] = json!("Delete");
    create_schedule(cp, &granted, "deleting", delete).await;
    let schedules: Api<tidepool_api::SnapshotSchedule> =
        Api::namespaced(cp.admin_client(), &granted);
    let with_finalizer = wait_ready(
        cp,
        &granted,
        "deleting",
        "False",
        "AgentUnavailable",
        WITHIN,
    )
    .await;
    assert_eq!(
        with_finalizer.metadata.finalizers.unwrap_or_default(),
        vec!["tidepool.dev/snapshots".to_owned()]
    );
    let asked = std::time::Instant::now();
    schedules
        .delete("deleting", &kube::api::DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let blocked = wait_ready(cp, &granted, "deleting", "False", "DeleteBlocked", WITHIN).await;
    assert!(blocked.metadata.deletion_timestamp.is_some());
    loop {
        if schedules
            .get_opt("deleting")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
        {
            break;
        }
        assert!(
            asked.elapsed() < DELETE_GIVE_UP + WITHIN,
            "the finalizer wedged the object"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        asked.elapsed() >= DELETE_GIVE_UP,
        "gone before the bounded wait: {:?}",
        asked.elapsed()
    );
    wait_event(
        cp,
        &granted,
        "deleting",
        "Warning",
        "DeleteAbandoned",
        WITHIN,
    )
    .await;

    controller.abort();
}
