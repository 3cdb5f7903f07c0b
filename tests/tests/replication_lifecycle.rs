//! A ReplicationPolicy's life beyond one dataset's chain, end to end (the real
//! kube-apiserver with the chart's RBAC, two `tidepool agent` processes in the OpenZFS VM,
//! one controller with the chart's identity). The controller here polls policies only once
//! an hour, so every sync after the first is one a trigger started.
//!
//! 1. A recursive source: each descendant is replicated as its own replica below the
//!    target, parents first, GUIDs equal; a child created later arrives too.
//! 2. Triggered by the schedule: a policy without a `schedule` syncs each new snapshot of
//!    the schedule it selects within seconds (the poll is an hour).
//! 3. Progress while a send runs: a bandwidth-limited send shows `status.progress`
//!    (bytes done rising, the `-nP` estimate as the total), cleared when it ends.
//! 4. Deletion: `Retain` lets go of the policy's holds and bookmarks and keeps the replica
//!    and its snapshots; `Delete` also destroys the snapshots the policy claimed on every
//!    replica dataset, and never a dataset.

use std::time::Duration;

use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use tidepool_api::ReplicationPolicy;
use tidepool_reconciler::ReconcilerConfig;
use tidepool_tests::release::*;
use tidepool_tests::replicas::*;
use tidepool_tests::zfs_vm::ZfsVm;
use tokio::time::Instant;

/// Every hold tag on every snapshot of `dataset`.
async fn all_hold_tags(vm: &ZfsVm, dataset: &str) -> Vec<String> {
    let mut tags = Vec::new();
    for (short, _) in guids(vm, dataset).await {
        tags.extend(hold_tags(vm, &format!("{dataset}@{short}")).await);
    }
    tags
}

/// Waits until the object is gone from the API (its finalizer removed).
async fn wait_gone(api: &Api<ReplicationPolicy>, name: &str) {
    let end = Instant::now() + WITHIN;
    while api.get_opt(name).await.ok().flatten().is_some() {
        assert!(
            Instant::now() < end,
            "{name} still exists (finalizer not removed)"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_triggered_progress_and_deletion() {
    let started = Instant::now();
    let release = Release::install("rlife").await;
    let cp = release.cp;
    let vm = ok(ZfsVm::shared().await);
    let ns = release.ns.clone();
    let config = ReconcilerConfig {
        // Only triggers (and the first reconcile) sync in this test.
        replication_poll: Duration::from_secs(3600),
        status_min_interval: Duration::from_secs(1),
        ..test_reconciler_config()
    };
    let pair = Pair::start_configured(&release, vm, "l", config).await;
    let (pool_a, pool_b) = (pair.pool_a.clone(), pair.pool_b.clone());
    let (node_a, node_b) = (pair.spec_a.node.clone(), pair.spec_b.node.clone());
    let app = format!("{pool_a}/data/app");
    let replica = format!("{pool_b}/replicas/app");
    for d in ["", "/logs", "/logs/old"] {
        sh(vm, &["zfs", "create", &format!("{app}{d}")]).await;
        write_random(vm, &format!("/{app}{d}/f"), 1).await;
    }
    eprintln!("agents and controller up after {:?}", started.elapsed());

    // --- 1. A recursive source, its schedule's snapshots replicated to every replica.
    let policies: Api<ReplicationPolicy> = Api::namespaced(cp.admin_client(), &ns);
    create_schedule(
        cp,
        &ns,
        "app",
        json!({
            "nodeName": node_a,
            "datasets": [{"name": app, "recursive": true}],
            // Slower than a sync of three datasets on an emulated node (about 20 s).
            "schedule": {"interval": "30s"},
            "retention": {"keepLast": 4},
        }),
    )
    .await;
    let schedule_owner = format!("SnapshotSchedule/{ns}/app");
    wait_owned_snapshot(vm, &app, &schedule_owner).await;
    create_policy(
        &policies,
        "app",
        json!({
            "source": {"nodeName": node_a, "dataset": app, "recursive": true,
                       "snapshots": {"scheduleName": "app"}},
            "target": {"node": {"nodeName": node_b, "dataset": replica}},
        }),
    )
    .await;
    let pairs = [
        (app.clone(), replica.clone()),
        (format!("{app}/logs"), format!("{replica}/logs")),
        (format!("{app}/logs/old"), format!("{replica}/logs/old")),
    ];
    let schedule_owner = &schedule_owner;
    // Each replica shares a snapshot (by GUID) with its source dataset.
    let mirrored = |pairs: Vec<(String, String)>| async move {
        for (src, dst) in &pairs {
            let on_target = guids(vm, dst).await;
            if !guids(vm, src).await.iter().any(|s| on_target.contains(s)) {
                return None;
            }
        }
        Some(())
    };
    wait_for(
        &policies,
        "app",
        "every replica sharing a snapshot with its source",
        || mirrored(pairs.to_vec()),
    )
    .await;
    for (_, dst) in &pairs {
        assert_eq!(
            prop(vm, dst, "mounted").await,
            "no",
            "{dst} is received unmounted"
        );
    }
    let policy_owner = format!("ReplicationPolicy/{ns}/app");
    assert!(
        !owned(vm, &format!("{replica}/logs/old"), &policy_owner)
            .await
            .is_empty(),
        "the grandchild's replica snapshots are claimed by the policy"
    );
    eprintln!(
        "1. recursive: three replicas in sync after {:?}",
        started.elapsed()
    );

    // --- 2. Triggered: each new schedule snapshot arrives within seconds, with a poll of
    // an hour. A child created now arrives with the schedule's next snapshot.
    sh(vm, &["zfs", "create", &format!("{app}/new")]).await;
    for round in 0..2 {
        let before = owned(vm, &app, schedule_owner).await.pop();
        let end = Instant::now() + WITHIN;
        let newest = loop {
            let now = owned(vm, &app, schedule_owner).await.pop();
            if now != before && now.is_some() {
                break now.unwrap_or_default();
            }
            assert!(Instant::now() < end, "the schedule took no new snapshot");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let taken = Instant::now();
        let guid = guids(vm, &app)
            .await
            .into_iter()
            .find(|(s, _)| *s == newest)
            .map(|(_, g)| g);
        loop {
            if guids(vm, &replica)
                .await
                .into_iter()
                .any(|(_, g)| Some(g) == guid)
            {
                break;
            }
            assert!(
                taken.elapsed() < Duration::from_secs(60),
                "round {round}: {newest} not replicated within 60 s of being taken (the poll is an hour): {:#?}",
                status(&policies, "app").await
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!(
            "2. round {round}: {newest} on the replica {:?} after it was seen on the source",
            taken.elapsed()
        );
    }
    let new_child = format!("{replica}/new");
    wait_for(&policies, "app", "the new child replicated", || async {
        (!guids(vm, &new_child).await.is_empty()).then_some(())
    })
    .await;

    // --- 3. Progress of a slow send.
    let big = format!("{pool_a}/data/big");
    let big_replica = format!("{pool_b}/replicas/big");
    sh(vm, &["zfs", "create", "-o", "compression=off", &big]).await;
    write_random(vm, &format!("/{big}/f"), 24).await;
    sh(vm, &["zfs", "snapshot", &format!("{big}@one")]).await;
    create_policy(
        &policies,
        "big",
        json!({
            "source": {"nodeName": node_a, "dataset": big},
            "target": {"node": {"nodeName": node_b, "dataset": big_replica}},
            "send": {"bandwidthLimit": "2Mi"},
        }),
    )
    .await;
    let mut seen = Vec::new();
    let end = Instant::now() + WITHIN;
    loop {
        let s = status(&policies, "big").await;
        if let Some(p) = &s.progress {
            seen.push((p.bytes_done, p.bytes_total));
        }
        if s.last_sync_time.is_some() {
            assert!(
                s.progress.is_none(),
                "progress cleared after the sync: {s:#?}"
            );
            break;
        }
        assert!(Instant::now() < end, "no sync of big: {s:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("3. progress seen: {seen:?}");
    assert!(
        seen.len() >= 2,
        "a 12 s send reported progress at least twice: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0) && seen.first() != seen.last(),
        "bytes done rise: {seen:?}"
    );
    let total = seen.last().and_then(|s| s.1).unwrap_or(0);
    // The `-nP` estimate is close to the stream, not an upper bound (a few bytes over).
    assert!(
        total > 24 << 20 && seen.iter().all(|s| s.0 <= total + total / 100),
        "the total is the stream's estimate (over 24 MiB): {seen:?}"
    );

    // --- 4. Deletion. Retain: holds and bookmark let go, the replica and its snapshots kept.
    let big_tag = format!("tidepool:{ns}/big");
    assert!(all_hold_tags(vm, &big).await.contains(&big_tag));
    assert!(!bookmarks(vm, &big).await.is_empty());
    let kept = guids(vm, &big_replica).await;
    policies
        .delete("big", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_gone(&policies, "big").await;
    let said = events_about(cp, &ns, "big").await;
    assert!(
        said.iter().any(|e| e.reason.as_deref() == Some("Released")
            && e.note
                .as_deref()
                .is_some_and(|n| n.contains("the replica is kept"))),
        "a Released event says what was let go: {:?}",
        said.iter()
            .map(|e| (&e.reason, &e.note))
            .collect::<Vec<_>>()
    );
    assert!(
        !all_hold_tags(vm, &big).await.contains(&big_tag),
        "source hold released"
    );
    assert!(
        !all_hold_tags(vm, &big_replica).await.contains(&big_tag),
        "target hold released"
    );
    assert!(
        bookmarks(vm, &big).await.is_empty(),
        "the policy's bookmark destroyed"
    );
    assert_eq!(
        guids(vm, &big_replica).await,
        kept,
        "Retain keeps every replicated snapshot"
    );
    // The source's snapshot is free again: nothing of Tidepool's pins it.
    sh(vm, &["zfs", "destroy", &format!("{big}@one")]).await;

    // Delete: the policy's claimed snapshots go on every replica dataset; datasets stay.
    let app_tag = format!("tidepool:{ns}/app");
    policies
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"deletionPolicy": "Delete"}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A snapshot on the replica the policy does not own stays.
    sh(
        vm,
        &["zfs", "snapshot", &format!("{replica}/logs@users-own")],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    policies
        .delete("app", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_gone(&policies, "app").await;
    for (src, dst) in pairs
        .iter()
        .chain([&(format!("{app}/new"), new_child.clone())])
    {
        assert!(exists(vm, dst).await, "{dst} is kept");
        assert!(
            owned(vm, dst, &policy_owner).await.is_empty(),
            "{dst}: the policy's snapshots destroyed"
        );
        assert!(
            !all_hold_tags(vm, src).await.contains(&app_tag),
            "{src}: released"
        );
        assert!(
            bookmarks(vm, src).await.is_empty(),
            "{src}: bookmark destroyed"
        );
    }
    assert!(
        guids(vm, &format!("{replica}/logs"))
            .await
            .iter()
            .any(|(s, _)| s == "users-own"),
        "a snapshot the policy does not own is never destroyed"
    );
    // The schedule's snapshots on the source are untouched.
    assert!(!owned(vm, &app, schedule_owner).await.is_empty());
    eprintln!("4. deletion done after {:?}", started.elapsed());
    drop(pair);
}
