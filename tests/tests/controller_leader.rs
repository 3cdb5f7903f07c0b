//! Two controller replicas on the real API server with the chart's RBAC: one leads (holds
//! the Lease, reconciles, reports events as itself), the other waits; when the leader
//! dies without giving the Lease up, the standby takes over within 15 s with a larger
//! epoch (leaseTransitions) and reconciles from then on.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::json;
use tidepool_tests::release::*;

async fn holder(
    cp: &tidepool_tests::control_plane::ControlPlane,
    ns: &str,
    name: &str,
) -> (Option<String>, i32) {
    let lease = Api::<Lease>::namespaced(cp.admin_client(), ns)
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let spec = lease.and_then(|l| l.spec).unwrap_or_default();
    (spec.holder_identity, spec.lease_transitions.unwrap_or(-1))
}

async fn wait_holder(
    cp: &tidepool_tests::control_plane::ControlPlane,
    ns: &str,
    name: &str,
    who: &str,
    within: Duration,
) -> (Duration, i32) {
    let start = Instant::now();
    loop {
        let (h, t) = holder(cp, ns, name).await;
        if h.as_deref() == Some(who) {
            return (start.elapsed(), t);
        }
        if start.elapsed() > within {
            panic!("the Lease is held by {h:?}, not {who}, after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn invalid(node: &str) -> serde_json::Value {
    json!({"nodeName": node, "datasets": [{"name": "tank/x"}], "schedule": {"cron": "0 0 31 2 *"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_within_15_seconds_when_the_leader_dies() {
    let release = Release::install("lead").await;
    let cp = release.cp;
    let lease = release.lease_name();
    let users = ok(cp.create_namespace("lead-users").await);
    let a = release.replica("controller-a").await;
    let b = release.replica("controller-b").await;

    let task_a = release.start(&a, Some(users.clone())).await;
    let (_, t0) = wait_holder(
        cp,
        &release.ns,
        &lease,
        "controller-a",
        Duration::from_secs(30),
    )
    .await;
    let task_b = release.start(&b, Some(users.clone())).await;

    create_schedule(cp, &users, "first", invalid(&release.node)).await;
    let event = wait_event(
        cp,
        &users,
        "first",
        "Warning",
        "InvalidSchedule",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(event.reporting_instance.as_deref(), Some("controller-a"));
    // The standby stays a standby while the leader renews.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        holder(cp, &release.ns, &lease).await.0.as_deref(),
        Some("controller-a")
    );

    // A crash: the task is dropped, the Lease is not given up.
    task_a.abort();
    let (took, t1) = wait_holder(
        cp,
        &release.ns,
        &lease,
        "controller-b",
        Duration::from_secs(20),
    )
    .await;
    eprintln!("takeover after {took:.1?}; leaseTransitions {t0} -> {t1}");
    assert!(took <= Duration::from_secs(15), "takeover took {took:?}");
    assert_eq!(t1, t0 + 1, "the new leader's epoch is one more transition");

    create_schedule(cp, &users, "second", invalid(&release.node)).await;
    let event = wait_event(
        cp,
        &users,
        "second",
        "Warning",
        "InvalidSchedule",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(event.reporting_instance.as_deref(), Some("controller-b"));
    // The new leader found `first` already reported: no second event for it.
    let about_first = events_about(cp, &users, "first").await;
    assert!(
        about_first
            .iter()
            .all(|e| e.reporting_instance.as_deref() == Some("controller-a")),
        "{:?}",
        about_first
            .iter()
            .map(|e| (&e.reason, &e.reporting_instance))
            .collect::<Vec<_>>()
    );

    // Someone else writes the Lease (another controller installation, an admin): the
    // leader sees it at its next renewal, stops acting and ends, rather than fighting.
    let leases: Api<Lease> = Api::namespaced(cp.admin_client(), &release.ns);
    leases
        .patch(
            &lease,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"holderIdentity": "intruder"}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !task_b.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the displaced leader kept running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
