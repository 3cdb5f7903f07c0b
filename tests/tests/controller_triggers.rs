//! Which schedules a ZfsNode or DatasetGrant change reconciles, on the real API server,
//! with the controller as the chart's ServiceAccount, counted with its own
//! `tidepool_controller_reconciles_total`: a heartbeat (heartbeat time, free bytes)
//! reconciles nothing; an endpoint change reconciles the schedules of that node only; a
//! grant change reconciles the schedules of the namespaces it names, before and after.
//!
//! The schedules are all `NotPermitted` (no grant covers their dataset), so nothing else
//! re-queues them (a blocked schedule waits for a change) and the counter moves only with
//! the triggers under test.

use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tidepool_api::{DatasetGrant, ZfsNode};
use tidepool_reconciler::{ControllerConfig, LeaseConfig, PinnedAgents, ReconcilerConfig};
use tidepool_tests::agents::{scrape, sum_samples};
use tidepool_tests::kubelet::Kubelet;
use tidepool_tests::release::*;

const WITHIN: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    l.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
}

async fn reconciles(metrics: std::net::SocketAddr) -> f64 {
    sum_samples(
        &scrape(metrics).await,
        "tidepool_controller_reconciles_total",
    )
}

/// The counter once it has not moved for 3 s (a loaded machine may still be working off
/// a trigger).
async fn quiet(metrics: std::net::SocketAddr) -> f64 {
    let mut last = reconciles(metrics).await;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = reconciles(metrics).await;
        if now == last {
            return now;
        }
        last = now;
    }
}

async fn publish(zfs_nodes: &Api<ZfsNode>, node: &str, endpoint: &str, free: i64, beat: &str) {
    zfs_nodes
        .patch_status(
            node,
            &PatchParams::apply("tidepool-tests").force(),
            &Patch::Apply(json!({
                "apiVersion": "tidepool.dev/v1alpha1", "kind": "ZfsNode",
                "status": {
                    "endpoint": endpoint,
                    "tlsCertificateSha256": "ab".repeat(32),
                    "heartbeatTime": beat,
                    "pools": [{"name": "tank", "health": "ONLINE", "sizeBytes": 100, "allocatedBytes": 100 - free, "freeBytes": free}],
                },
            })),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_reconcile_nothing_and_changes_reach_only_their_schedules() {
    let release = Release::install("trig").await;
    let cp = release.cp;
    let (a, b) = (release.node.clone(), format!("{}-node-b", release.ns));
    ok(Kubelet::new(cp).register_node(&b).await);
    let zfs_nodes: Api<ZfsNode> = Api::all(cp.admin_client());
    for n in [&a, &b] {
        zfs_nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "tidepool.dev/v1alpha1", "kind": "ZfsNode",
                    "metadata": {"name": n}, "spec": {"nodeName": n},
                }))
                .unwrap_or_else(|e| panic!("{e}")),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        publish(&zfs_nodes, n, "127.0.0.1:1", 50, "2026-01-01T00:00:00Z").await;
    }
    let one = ok(cp.create_namespace("trig-one").await);
    let two = ok(cp.create_namespace("trig-two").await);
    let spec = |node: &str| json!({"nodeName": node, "datasets": [{"name": "tank/apps"}], "schedule": {"interval": "24h"}});
    for i in 0..3 {
        create_schedule(cp, &one, &format!("a{i}"), spec(&a)).await;
        create_schedule(cp, &one, &format!("b{i}"), spec(&b)).await;
        create_schedule(cp, &two, &format!("b{i}"), spec(&b)).await;
    }

    let replica = release.replica("trig-0").await;
    let client = ok(replica.identity.client().await);
    let metrics: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = ControllerConfig {
        lease: LeaseConfig::new(
            release.ns.clone(),
            release.lease_name(),
            replica.name.clone(),
        ),
        watch_namespace: None,
        reconciler: ReconcilerConfig::default(),
        http: Some(metrics),
    };
    let agents = PinnedAgents::new(replica.agent_token.clone(), Duration::from_secs(5));
    let _controller = tokio::spawn(tidepool_reconciler::run(
        client,
        config,
        agents,
        futures::future::pending(),
    ));
    for (ns, name) in [(&one, "a0"), (&one, "b2"), (&two, "b1")] {
        wait_ready(cp, ns, name, "False", "NotPermitted", WITHIN).await;
    }
    for ns in [&one, &two] {
        for i in 0..3 {
            wait_ready(cp, ns, &format!("b{i}"), "False", "NotPermitted", WITHIN).await;
        }
    }
    let start = quiet(metrics).await;
    assert!(
        start >= 9.0,
        "each schedule reconciled at least once: {start}"
    );

    // Heartbeats of both nodes: the heartbeat time and free bytes move, nothing else.
    for beat in 1..=3 {
        for n in [&a, &b] {
            let time = format!("2026-01-01T00:0{beat}:00Z");
            publish(&zfs_nodes, n, "127.0.0.1:1", 50 - beat, &time).await;
        }
    }
    let after_beats = quiet(metrics).await;
    assert_eq!(after_beats, start, "heartbeats reconciled schedules");

    // Node b's agent moved: its six schedules (two namespaces), not node a's three.
    publish(&zfs_nodes, &b, "127.0.0.1:2", 40, "2026-01-01T00:05:00Z").await;
    let after_move = quiet(metrics).await;
    assert_eq!(
        after_move - after_beats,
        6.0,
        "an endpoint change on node b"
    );

    // A grant for namespace two (over another dataset: everyone stays NotPermitted).
    let grants: Api<DatasetGrant> = Api::all(cp.admin_client());
    let grant = format!("{}-g", release.ns);
    let grant_spec =
        |ns: &str| json!({"namespaces": [ns], "datasets": ["tank/other"], "access": ["Snapshot"]});
    grants
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "tidepool.dev/v1alpha1", "kind": "DatasetGrant",
                "metadata": {"name": grant}, "spec": grant_spec(&two),
            }))
            .unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let after_grant = quiet(metrics).await;
    assert_eq!(
        after_grant - after_move,
        3.0,
        "a grant naming namespace two"
    );

    // The grant moves from namespace two to one: both are reached (two lost it).
    grants
        .patch(
            &grant,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": grant_spec(&one)})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let after_move_grant = quiet(metrics).await;
    assert_eq!(
        after_move_grant - after_grant,
        9.0,
        "a grant moving from two to one"
    );
}
