//! Failures that say what is wrong and heal themselves, end to end: the real kube-apiserver
//! with the chart's RBAC, `tidepool agent` processes in the OpenZFS VM with Pod-bound
//! tokens, one `tidepool controller` replica with the chart's controller ServiceAccount.
//!
//! Six broken schedules sit beside a healthy one, all at once: a dataset that does not
//! exist, an agent that is killed, a full pool, a namespace without a grant, a granted
//! dataset outside the agent's `--dataset-root`s, and a spec the API server admits but
//! `validate()` refuses (`0 0 31 2 *`). Each must end in `Ready=False` with its own reason
//! and a Warning event of the same reason, touch nothing in zfs, and, once its cause is
//! fixed (the dataset created, the agent started, space freed, a grant created, the
//! agent restarted with the root, the spec corrected), come back to `Ready=True` with a
//! Normal event and take snapshots, with no edit to the object except the invalid spec.
//! The healthy schedule keeps taking snapshots the whole time (counted in zfs).
//!
//! Node a's agent serves five pools (healthy, missing, full, grant, invalid); node b's
//! agent serves one pool with two schedules (the unreachable agent, the outside root):
//! restarting it with the extra root is also how the killed agent comes back.

#[path = "sched_support/mod.rs"]
mod support;

use std::time::Duration;

use futures::future::join_all;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::wait_event_since;
use tidepool_api::SnapshotSchedule;
use tidepool_reconciler::reasons;
use tidepool_tests::control_plane::ControlPlane;
use tidepool_tests::release::*;
use tidepool_tests::snapshots::{Snap, owned_under, snapshots_under};
use tidepool_tests::zfs_vm::ZfsVm;
use tokio::time::Instant;

const WITHIN: Duration = Duration::from_secs(90);
const POOL_BYTES: u64 = 64 << 20;

/// One schedule of the scenario.
struct Case {
    name: &'static str,
    ns: String,
    /// The dataset it snapshots.
    dataset: String,
    /// The reason it fails with before its fix.
    broken: &'static str,
}

impl Case {
    fn owner(&self) -> String {
        format!("SnapshotSchedule/{}/{}", self.ns, self.name)
    }
    fn pool(&self) -> &str {
        self.dataset.split('/').next().unwrap_or_default()
    }
    async fn owned(&self, vm: &ZfsVm) -> Vec<Snap> {
        owned_under(vm, self.pool(), &self.owner()).await
    }
}

fn spec(node: &str, dataset: &str, schedule: serde_json::Value) -> serde_json::Value {
    json!({"nodeName": node, "datasets": [{"name": dataset}], "schedule": schedule})
}

/// Ready=(status, reason) and an event of the matching type and reason since `since`.
async fn wait_state(
    cp: &'static ControlPlane,
    c: &Case,
    ready: bool,
    reason: &str,
    since: jiff::Timestamp,
) {
    let status = if ready { "True" } else { "False" };
    let obj = wait_ready(cp, &c.ns, c.name, status, reason, WITHIN).await;
    let type_ = if ready { "Normal" } else { "Warning" };
    wait_event_since(cp, &c.ns, c.name, (type_, reason), since, WITHIN).await;
    let last_error = obj.status.and_then(|s| s.last_error).map(|e| e.reason);
    if ready {
        assert_eq!(last_error, None, "{}: a success clears lastError", c.name);
    } else {
        assert_eq!(last_error.as_deref(), Some(reason), "{}: lastError", c.name);
    }
}

/// Waits until `c` has more owned snapshots than `than`; returns how many.
async fn wait_more(vm: &ZfsVm, c: &Case, than: usize) -> usize {
    let deadline = Instant::now() + WITHIN;
    loop {
        let n = c.owned(vm).await.len();
        if n > than {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "{}: stuck at {n} snapshots",
            c.name
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_names_its_reason_touches_nothing_and_heals_when_fixed() {
    let started = Instant::now();
    let release = Release::install("fail").await;
    let cp = release.cp;
    let vm = ok(ZfsVm::shared().await);
    let ns = release.ns.clone();
    let users = ok(cp.create_namespace("fail-users").await);
    let outsider = ok(cp.create_namespace("fail-out").await);
    let node_a = format!("{ns}-a");
    let node_b = format!("{ns}-b");

    let [ph, pm, pf, pg, pi, pb] =
        ["ph", "pm", "pf", "pg", "pi", "pb"].map(|p| vm.unique_pool_name(p));
    for p in [&ph, &pm, &pf, &pg, &pi, &pb] {
        ok(vm.create_pool(p, POOL_BYTES).await);
    }
    for d in [
        format!("{ph}/data/app"),
        format!("{pg}/data/app"),
        format!("{pi}/data/app"),
        format!("{pf}/data/app"),
        format!("{pb}/data/app"),
        format!("{pb}/extra/app"),
    ] {
        ok(vm.exec_ok(["zfs", "create", "-p", &d]).await);
    }
    // `pm/data` exists, `pm/data/later` not yet.
    ok(vm.exec_ok(["zfs", "create", &format!("{pm}/data")]).await);

    // A full pool. OpenZFS keeps a slop reserve (half of a pool this small) that user
    // writes cannot use; a refreservation takes all but 2 MiB of the rest, and a file
    // written until ENOSPC takes that. On OpenZFS 2.3 `zfs snapshot` then fails "out of
    // space" (a snapshot's sync task needs a little room above the slop); with 1 MiB left
    // it still succeeds, so "nearly full" is no failure.
    let avail: u64 = ok(vm
        .exec_ok(["zfs", "get", "-Hp", "-o", "value", "available", &pf])
        .await)
    .trim()
    .parse()
    .unwrap_or_else(|e| panic!("{e}"));
    ok(vm
        .exec_ok([
            "zfs",
            "create",
            "-o",
            &format!("refreservation={}", avail - (2 << 20)),
            &format!("{pf}/ballast"),
        ])
        .await);
    ok(vm
        .exec_ok([
            "zfs",
            "create",
            "-o",
            "compression=off",
            &format!("{pf}/fill"),
        ])
        .await);
    let fill = format!("dd if=/dev/zero of=/{pf}/fill/f bs=128k 2>/dev/null; sync");
    ok(vm.exec(["sh", "-c", &fill]).await);
    let by_hand = ok(vm
        .exec(["zfs", "snapshot", &format!("{pf}/data/app@by-hand")])
        .await);
    assert!(
        !by_hand.status.success()
            && String::from_utf8_lossy(&by_hand.stderr).contains("out of space"),
        "the premise: zfs snapshot fails on the full pool: {by_hand:?}"
    );

    let spec_a = release.agent_spec(
        "a",
        &[&ph, &pm, &pf, &pg, &pi],
        &[
            &format!("{ph}/data"),
            &format!("{pm}/data"),
            &format!("{pf}/data"),
            &format!("{pg}/data"),
            &format!("{pi}/data"),
        ],
        0,
    );
    let mut spec_b = release.agent_spec("b", &[&pb], &[&format!("{pb}/data")], 1);
    let (_agent_a, mut agent_b) = tokio::join!(
        release.start_agent(vm, &spec_a),
        release.start_agent(vm, &spec_b)
    );
    eprintln!("agents registered after {:?}", started.elapsed());

    // `users` may use every pool's data and all of pb (pb/extra too: only the agent's
    // roots refuse it); `outsider` nothing yet.
    let granted: Vec<String> = [&ph, &pm, &pf, &pi]
        .iter()
        .map(|p| format!("{p}/data"))
        .chain([format!("{pg}/data"), pb.clone()])
        .collect();
    let granted: Vec<&str> = granted.iter().map(String::as_str).collect();
    release
        .grant(&format!("{ns}-users"), &[&users], &granted)
        .await;

    let every = json!({"interval": "2s"});
    let case = |name, ns: &str, dataset: String, broken| Case {
        name,
        ns: ns.to_owned(),
        dataset,
        broken,
    };
    let healthy = case(
        "healthy",
        &users,
        format!("{ph}/data/app"),
        reasons::RECONCILED,
    );
    let unreachable = case(
        "unreachable",
        &users,
        format!("{pb}/data/app"),
        reasons::AGENT_UNAVAILABLE,
    );
    let broken = [
        case(
            "missing",
            &users,
            format!("{pm}/data/later"),
            reasons::DATASET_NOT_FOUND,
        ),
        case("full", &users, format!("{pf}/data/app"), reasons::POOL_FULL),
        case(
            "ungranted",
            &outsider,
            format!("{pg}/data/app"),
            reasons::NOT_PERMITTED,
        ),
        case(
            "outside-roots",
            &users,
            format!("{pb}/extra/app"),
            reasons::OUTSIDE_AGENT_ROOTS,
        ),
        case(
            "invalid",
            &users,
            format!("{pi}/data/app"),
            reasons::INVALID_SCHEDULE,
        ),
    ];
    for c in broken.iter().chain([&healthy, &unreachable]) {
        let node = if c.pool() == pb { &node_b } else { &node_a };
        let schedule = if c.name == "invalid" {
            json!({"cron": "0 0 31 2 *"})
        } else {
            every.clone()
        };
        create_schedule(cp, &c.ns, c.name, spec(node, &c.dataset, schedule)).await;
    }
    let replica = release.replica("controller-0").await;
    let controller = release.start(&replica, None).await;

    // Each broken one says why; the healthy ones run.
    let t0 = jiff::Timestamp::now();
    join_all(
        broken
            .iter()
            .map(|c| wait_state(cp, c, false, c.broken, t0))
            .chain(
                [&healthy, &unreachable].map(|c| wait_state(cp, c, true, reasons::RECONCILED, t0)),
            ),
    )
    .await;
    eprintln!("every failure reported after {:?}", started.elapsed());

    // The agent of node b dies: its schedules cannot run, node a's keep going.
    let healthy_before_kill = healthy.owned(vm).await.len();
    let t1 = jiff::Timestamp::now();
    ok(agent_b.stop().await);
    wait_state(cp, &unreachable, false, reasons::AGENT_UNAVAILABLE, t1).await;
    eprintln!("unreachable agent reported after {:?}", started.elapsed());

    // Refused means untouched: nothing new on any broken schedule's pool (the full pool
    // and node b hold no snapshot at all, nor does any pool of a refused schedule).
    for c in &broken {
        assert_eq!(c.owned(vm).await, vec![], "{}: something was taken", c.name);
        if c.name != "outside-roots" {
            assert_eq!(
                snapshots_under(vm, c.pool()).await,
                vec![],
                "{}: its pool was touched",
                c.name
            );
        }
    }
    assert_eq!(
        snapshots_under(vm, &format!("{pb}/extra")).await,
        vec![],
        "outside the roots, touched"
    );
    let healthy_during = wait_more(vm, &healthy, healthy_before_kill).await;

    // Fix every cause; no object is edited except the invalid spec.
    let t2 = jiff::Timestamp::now();
    ok(vm
        .exec_ok(["zfs", "create", &format!("{pm}/data/later")])
        .await);
    ok(vm
        .exec_ok([
            "zfs",
            "set",
            "refreservation=none",
            &format!("{pf}/ballast"),
        ])
        .await);
    release
        .grant(
            &format!("{ns}-outsider"),
            &[&outsider],
            &[&format!("{pg}/data")],
        )
        .await;
    Api::<SnapshotSchedule>::namespaced(cp.admin_client(), &users)
        .patch(
            "invalid",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"schedule": {"cron": null, "interval": "2s"}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    spec_b.dataset_roots.push(format!("{pb}/extra"));
    ok(agent_b.restart(vm, cp, &spec_b).await);

    join_all(
        broken
            .iter()
            .chain([&unreachable])
            .map(|c| wait_state(cp, c, true, reasons::RECONCILED, t2)),
    )
    .await;
    eprintln!("every failure healed after {:?}", started.elapsed());
    for c in broken.iter().chain([&unreachable]) {
        wait_more(vm, c, 0).await;
    }
    wait_more(vm, &healthy, healthy_during).await;
    let status = wait_ready(cp, &users, "healthy", "True", reasons::RECONCILED, WITHIN).await;
    assert_eq!(status.status.map(|s| s.consecutive_failures), Some(0));
    eprintln!("scenario done after {:?}", started.elapsed());

    controller.abort();
    drop((_agent_a, agent_b));
    for p in [&ph, &pm, &pf, &pg, &pi, &pb] {
        ok(vm.destroy_pool(p).await);
    }
}
