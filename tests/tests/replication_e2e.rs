//! ReplicationPolicy end to end: the real kube-apiserver with the chart's RBAC, two
//! `tidepool agent` processes in the OpenZFS VM (node a holds the source pool, node b the
//! replicas), one `tidepool controller` replica with the chart's controller identity and
//! the real pinned-TLS transport and ticket broker. A SnapshotSchedule takes the source's
//! snapshots; the policy replicates them; everything is read back from fresh zfs reads in
//! the guest and from the API.
//!
//! In steps, on one pair of pools:
//! 1. The chain: the target holds the schedule's snapshots with the source's GUIDs, a
//!    manual source snapshot between two of them arrived as an intermediate (`-I`) and is
//!    not claimed, the replica is unmounted, the newest common snapshot is held on both
//!    sides (this policy's tag) and bookmarked on the source, superseded holds are gone.
//! 2. The target's agent stops for several intervals while the source keeps only one
//!    snapshot (`keepLast: 1`): the held common snapshot survives on the source, and when
//!    the agent is back replication catches up incrementally: the replica's older snapshots
//!    keep their GUIDs (no re-seed).
//! 3. Someone snapshots the replica: `Diverged=True` (`Ready=False`), nothing on the target
//!    is destroyed; with `onDivergence: Rotate` the diverged replica is kept under
//!    `<dataset>-diverged-<time>` with that snapshot, and a new replica is seeded.
//! 4. A second policy replicates the same source to another target while the first's
//!    target is offline: the second keeps syncing, the first's base stays held on the
//!    source (retention keeps one snapshot), and the first catches up when back.
//!
//! Between steps 1 and 2, and in 3, `tidepool explain` (the built binary, against the
//! controller's explain route) of the suspended policy lists the `-I` send from the last
//! common snapshot to the source's newest, and target retention keeping the common one as
//! the replication base; of the diverged policy, the divergence with the replica's own
//! snapshot, blocked, and no prune.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::Value;
use serde_json::json;
use tidepool_api::condition::kind;
use tidepool_api::{ReplicationPolicy, SnapshotSchedule};
use tidepool_tests::agents::tidepool_binary;
use tidepool_tests::release::*;
use tidepool_tests::replicas::*;
use tidepool_tests::zfs_vm::ZfsVm;
use tokio::time::Instant;

/// The policy's own retention on the target (the source's schedule keeps 3, later 1).
const KEEP_ON_TARGET: usize = 2;

/// `tidepool explain replicationpolicy/NAME` (plus `extra`) as the controller's
/// ServiceAccount (it may `get` policies), against the replica's explain route: stdout.
async fn explain(pair: &Pair, ns: &str, name: &str, extra: &[&str]) -> String {
    let binary = ok(tidepool_binary());
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(&binary)
            .args(["explain", &format!("replicationpolicy/{name}"), "-n", ns])
            .args(["--controller", &format!("http://{}", pair.http)])
            .args(["--token", pair.replica.identity.token()])
            .args(extra)
            .env_remove("KUBECONFIG")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("tidepool explain did not end within 120 s"))
    .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tidepool explain {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn explain_json(pair: &Pair, ns: &str, name: &str) -> Value {
    let out = explain(pair, ns, name, &["-o", "json"]).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("explain -o json: {e}\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_replicates_a_chain_protects_its_base_survives_an_outage_and_handles_divergence() {
    let started = Instant::now();
    let release = Release::install("repl").await;
    let cp = release.cp;
    let vm = ok(ZfsVm::shared().await);
    let ns = release.ns.clone();
    let mut pair = Pair::start(&release, vm, "r").await;
    let (pool_a, pool_b) = (pair.pool_a.clone(), pair.pool_b.clone());
    let (spec_a, spec_b) = (pair.spec_a.clone(), pair.spec_b.clone());
    let source = format!("{pool_a}/data/db");
    let target = format!("{pool_b}/replicas/db");
    sh(vm, &["zfs", "create", &source]).await;
    let write = |file: &str, mib: u32| {
        let path = format!("/{source}/{file}");
        async move { write_random(vm, &path, mib).await }
    };
    write("one", 4).await;
    eprintln!("agents and controller up after {:?}", started.elapsed());

    // --- 1. The chain.
    let schedules: Api<SnapshotSchedule> = Api::namespaced(cp.admin_client(), &ns);
    let policies: Api<ReplicationPolicy> = Api::namespaced(cp.admin_client(), &ns);
    let schedule: SnapshotSchedule = serde_json::from_value(json!({
        "apiVersion": "tidepool.dev/v1alpha1", "kind": "SnapshotSchedule",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {
            "nodeName": spec_a.node,
            "datasets": [{"name": source}],
            "schedule": {"interval": "4s"},
            "retention": {"keepLast": 3},
        },
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    schedules
        .create(&PostParams::default(), &schedule)
        .await
        .unwrap_or_else(|e| panic!("creating the schedule: {e}"));
    let schedule_owner = format!("SnapshotSchedule/{ns}/db");
    let policy_owner = format!("ReplicationPolicy/{ns}/db-to-b");
    // A first schedule snapshot, then one taken by hand before the policy exists.
    let owned_on_source = || async {
        let mut owned = Vec::new();
        for (short, _) in guids(vm, &source).await {
            let snap = format!("{source}@{short}");
            if prop(vm, &snap, "tidepool.dev:owner").await == schedule_owner {
                owned.push(short);
            }
        }
        owned
    };
    let end = Instant::now() + WITHIN;
    while owned_on_source().await.is_empty() {
        assert!(Instant::now() < end, "the schedule took no snapshot");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    write("two", 1).await;
    sh(vm, &["zfs", "snapshot", &format!("{source}@manual1")]).await;
    write("three", 1).await;

    let policy: ReplicationPolicy = serde_json::from_value(json!({
        "apiVersion": "tidepool.dev/v1alpha1", "kind": "ReplicationPolicy",
        "metadata": {"name": "db-to-b", "namespace": ns},
        "spec": {
            "source": {"nodeName": spec_a.node, "dataset": source,
                       "snapshots": {"scheduleName": "db", "intermediates": true}},
            "target": {"node": {"nodeName": spec_b.node, "dataset": target}},
            "onDivergence": "Fail",
            "retention": {"keepLast": KEEP_ON_TARGET},
        },
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap_or_else(|e| panic!("creating the policy: {e}"));

    // Wait until the target holds a schedule snapshot taken after manual1.
    let synced = wait_for(&policies, "db-to-b", "a sync past manual1", || async {
        let on_target = guids(vm, &target).await;
        let after_manual = on_target
            .iter()
            .skip_while(|(s, _)| s != "manual1")
            .any(|(s, _)| s.starts_with("tidepool_"));
        after_manual.then_some(on_target)
    })
    .await;
    eprintln!("replicated past manual1 after {:?}", started.elapsed());
    let on_source: BTreeMap<String, String> = guids(vm, &source).await.into_iter().collect();
    for (short, guid) in &synced {
        if let Some(g) = on_source.get(short) {
            assert_eq!(
                g, guid,
                "{short}: the replica's GUID differs from the source's"
            );
        }
    }
    assert!(
        synced.iter().any(|(s, _)| s == "manual1"),
        "the manual snapshot between two selected ones arrived as an intermediate: {synced:?}"
    );
    assert_eq!(
        prop_source(vm, &format!("{target}@manual1"), "tidepool.dev:owner").await,
        "-",
        "an intermediate the selection did not pick is not claimed"
    );
    assert_eq!(
        prop(vm, &target, "mounted").await,
        "no",
        "received unmounted"
    );

    // Up to date and protected: Ready, the common snapshot held on both sides, bookmarked.
    let st = wait_for(
        &policies,
        "db-to-b",
        "Ready=True with a common snapshot",
        || async {
            let s = status(&policies, "db-to-b").await;
            (condition(&s, kind::READY).map(|c| c.0) == Some("True".into())
                && s.last_common_snapshot.is_some())
            .then_some(s)
        },
    )
    .await;
    assert!(
        st.last_sync_time.is_some() && st.last_sync_bytes.unwrap_or(0) > 0,
        "{st:#?}"
    );
    let tag = format!("tidepool:{ns}/db-to-b");
    // Held on both sides and bookmarked, seen in one poll: each new schedule snapshot
    // (every 4 s) triggers a sync that moves the common snapshot on, so separate reads
    // could each see another one.
    let common = wait_for(
        &policies,
        "db-to-b",
        "the common snapshot held on both sides and bookmarked on the source",
        || async {
            let s = status(&policies, "db-to-b").await;
            let c = s.last_common_snapshot?;
            let src = hold_tags(vm, &format!("{source}@{c}")).await;
            let dst = hold_tags(vm, &format!("{target}@{c}")).await;
            let marked = bookmarks(vm, &source)
                .await
                .iter()
                .any(|b| b.starts_with(&format!("{source}#{c}_tp")));
            (src.contains(&tag) && dst.contains(&tag) && marked).then_some(c)
        },
    )
    .await;
    // Claimed: every schedule snapshot up to the common one (a newer one may be arriving).
    for (short, value, source) in owners(vm, &target).await {
        if short.starts_with("tidepool_") && short <= common {
            assert_eq!(
                (value, source),
                (policy_owner.clone(), "local".to_owned()),
                "{short}"
            );
        }
    }
    // Only one snapshot per side carries the policy's hold.
    for (dataset, list) in [
        (&source, guids(vm, &source).await),
        (&target, synced.clone()),
    ] {
        let mut held = Vec::new();
        for (short, _) in list {
            if hold_tags(vm, &format!("{dataset}@{short}"))
                .await
                .contains(&tag)
            {
                held.push(short);
            }
        }
        assert!(
            held.len() <= 2,
            "{dataset}: superseded holds released: {held:?}"
        );
    }
    // Target retention: the policy's oldest own snapshots go as newer ones arrive (keepLast
    // KEEP_ON_TARGET), the unclaimed intermediate stays.
    let first_own = synced
        .iter()
        .find(|(s, _)| s.starts_with("tidepool_"))
        .map(|(s, _)| s.clone())
        .unwrap_or_else(|| panic!("no schedule snapshot replicated: {synced:?}"));
    wait_for(
        &policies,
        "db-to-b",
        "target retention pruning the oldest",
        || async {
            let on_target = guids(vm, &target).await;
            let own = owners(vm, &target)
                .await
                .into_iter()
                .filter(|(_, v, src)| *v == policy_owner && src == "local")
                .count();
            (!on_target.iter().any(|(s, _)| *s == first_own) && own >= KEEP_ON_TARGET).then_some(())
        },
    )
    .await;
    assert!(
        guids(vm, &target).await.iter().any(|(s, _)| s == "manual1"),
        "target retention destroyed an unclaimed snapshot"
    );
    eprintln!("chain verified after {:?}", started.elapsed());

    // --- Explain, suspended: the source runs ahead of the replica, nothing is sent.
    policies
        .patch(
            "db-to-b",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Reconciles of one policy run one at a time: once the status says Suspended, a sync
    // that was in flight when the patch landed has ended (bookkeeping included).
    wait_for(&policies, "db-to-b", "the suspension observed", || async {
        let s = status(&policies, "db-to-b").await;
        (condition(&s, kind::READY).map(|c| c.1) == Some("Suspended".into())).then_some(())
    })
    .await;
    // The replica stands still once a sync in flight has ended; then the schedule takes a
    // newer snapshot on the source. Expected from fresh zfs reads, compared with explain.
    let (e, common, newest) = wait_for(
        &policies,
        "db-to-b",
        "explain of a replica behind its source",
        || async {
            let on_target = guids(vm, &target).await;
            let on_source = guids(vm, &source).await;
            let common = on_target
                .iter()
                .rfind(|t| on_source.contains(t))
                .map(|(s, _)| s.clone())?;
            let newest = owned(vm, &source, &schedule_owner).await.pop()?;
            let e = explain_json(&pair, &ns, "db-to-b").await;
            let stable = guids(vm, &target).await == on_target
                && owned(vm, &source, &schedule_owner).await.last() == Some(&newest);
            (stable && newest > common && e["replication"]["lastCommon"]["name"] == common.as_str())
                .then_some((e, common, newest))
        },
    )
    .await;
    eprintln!("explain -o json (suspended):\n{e:#}");
    let r = &e["replication"];
    assert_eq!(e["kind"], "ReplicationPolicy");
    assert!(e.get("blocked").is_none(), "{e:#}");
    assert_eq!(r["suspended"], true);
    assert_eq!(r["source"]["node"], spec_a.node.as_str());
    assert_eq!(r["source"]["dataset"], source.as_str());
    assert_eq!(r["target"]["node"], spec_b.node.as_str());
    assert_eq!(r["target"]["dataset"], target.as_str());
    let sends: Vec<&Value> = r["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps: {r:#}"))
        .iter()
        .filter(|s| s["action"].as_str().is_some_and(|a| a.ends_with("Send")))
        .collect();
    assert_eq!(sends.len(), 1, "one incremental catches up: {r:#}");
    let send = sends[0];
    assert_eq!(send["action"], "IncrementalSend", "{send:#}");
    assert_eq!(send["reason"], "Incremental", "{send:#}");
    assert_eq!(
        send["base"]["snapshot"],
        format!("{source}@{common}"),
        "{send:#}"
    );
    assert_eq!(send["to"], format!("{source}@{newest}"), "{send:#}");
    assert_eq!(send["intermediates"], true, "-I: {send:#}");
    let then: Vec<String> = send["then"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| format!("{} {}", t["action"], t["snapshot"]))
        .collect();
    assert!(
        then.iter()
            .any(|t| *t == format!("\"Hold\" \"{target}@{newest}\"")),
        "after the send the new common snapshot is held on the target: {then:?}"
    );
    // Target retention: the policy's own snapshots only, the common one kept as the base.
    let retention = &r["targetRetention"];
    assert_eq!(retention["afterSteps"], true, "{retention:#}");
    assert_eq!(retention["dataset"], target.as_str());
    let listed: BTreeSet<String> = ["destroy", "keep"]
        .iter()
        .flat_map(|k| retention[*k].as_array().cloned().unwrap_or_default())
        .map(|s| s["snapshot"].as_str().unwrap_or_default().to_owned())
        .collect();
    let own: BTreeSet<String> = owned(vm, &target, &policy_owner)
        .await
        .into_iter()
        .map(|s| format!("{target}@{s}"))
        .collect();
    assert_eq!(listed, own, "retention considers exactly the policy's own");
    let base = retention["keep"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["snapshot"] == format!("{target}@{common}"))
        .unwrap_or_else(|| panic!("the common snapshot is not kept: {retention:#}"));
    assert!(
        base["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x == "replication base")),
        "{base:#}"
    );
    let text = explain(&pair, &ns, "db-to-b", &[]).await;
    eprintln!("tidepool explain (suspended):\n{text}");
    for line in [
        format!("ReplicationPolicy {ns}/db-to-b"),
        format!(
            "source {source} on node {} -> target {target} on node {}",
            spec_a.node, spec_b.node
        ),
        "suspended: nothing is sent or destroyed".to_owned(),
        format!("last common snapshot: {common} (guid"),
        format!("  SEND     -I {source}@{common} {source}@"),
        format!("target retention on {target} (once the steps above are done"),
    ] {
        assert!(text.contains(&line), "{line:?} not in:\n{text}");
    }
    policies
        .patch(
            "db-to-b",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Step 2 reads the common snapshot from the status: wait until it has moved on.
    wait_for(&policies, "db-to-b", "a sync after resuming", || async {
        let s = status(&policies, "db-to-b").await;
        (condition(&s, kind::READY).map(|c| c.0) == Some("True".into())
            && s.last_common_snapshot.is_some_and(|c| c >= newest))
        .then_some(())
    })
    .await;
    eprintln!("explained after {:?}", started.elapsed());

    // --- 2. The target is away for several intervals; the source keeps one snapshot.
    // The replica dataset's own GUID: a re-seed would be a new dataset.
    let replica_guid = prop(vm, &target, "guid").await;
    ok(pair.agent_b.stop().await);
    schedules
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"retention": {"keepLast": 1}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let held_base = status(&policies, "db-to-b")
        .await
        .last_common_snapshot
        .unwrap_or_else(|| panic!("no common snapshot before the outage"));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let src_now: Vec<String> = guids(vm, &source)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert!(
        src_now.contains(&held_base),
        "retention destroyed the held common snapshot {held_base}: {src_now:?}"
    );
    let failing = status(&policies, "db-to-b").await;
    assert_eq!(
        condition(&failing, kind::READY).map(|c| c.0),
        Some("False".into()),
        "an unreachable target is reported: {failing:#?}"
    );
    ok(pair.agent_b.restart(vm, cp, &spec_b).await);
    let caught_up = wait_for(
        &policies,
        "db-to-b",
        "catching up after the outage",
        || async {
            let s = status(&policies, "db-to-b").await;
            let newest_src = guids(vm, &source)
                .await
                .into_iter()
                .rfind(|(n, _)| n.starts_with("tidepool_"))?;
            let on_target = guids(vm, &target).await;
            (condition(&s, kind::READY).map(|c| c.0) == Some("True".into())
                && on_target.contains(&newest_src))
            .then_some(on_target)
        },
    )
    .await;
    assert_eq!(
        prop(vm, &target, "guid").await,
        replica_guid,
        "the replica was re-seeded instead of caught up: {caught_up:?}"
    );
    eprintln!("caught up after {:?}", started.elapsed());

    // --- 3. Divergence: someone snapshots the replica.
    let local = format!("{target}@by-hand");
    sh(vm, &["zfs", "snapshot", &local]).await;
    let diverged = wait_for(&policies, "db-to-b", "Diverged=True", || async {
        let s = status(&policies, "db-to-b").await;
        (condition(&s, kind::DIVERGED).map(|c| c.0) == Some("True".into())).then_some(s)
    })
    .await;
    assert_eq!(
        condition(&diverged, kind::READY).map(|c| c.0),
        Some("False".into()),
        "{diverged:#?}"
    );
    assert!(
        exists(vm, &local).await,
        "the target's own snapshot was destroyed"
    );
    let e = explain_json(&pair, &ns, "db-to-b").await;
    eprintln!("explain -o json (diverged):\n{e:#}");
    assert_eq!(e["blocked"]["reason"], "Diverged", "{e:#}");
    let d = &e["replication"]["divergence"];
    assert_eq!(d["kind"], "SnapshotsAfterCommon", "{e:#}");
    assert_eq!(d["newer"], json!(["by-hand"]), "{e:#}");
    assert!(
        d["message"].as_str().is_some_and(|m| m.contains(&target)),
        "{d:#}"
    );
    assert_eq!(
        e["replication"]["steps"],
        json!([]),
        "nothing is planned: {e:#}"
    );
    assert!(
        e["replication"].get("targetRetention").is_none(),
        "a blocked plan prunes nothing: {e:#}"
    );
    let text = explain(&pair, &ns, "db-to-b", &[]).await;
    assert!(
        text.contains("blocked: Diverged:") && text.contains("diverged: SnapshotsAfterCommon:"),
        "{text}"
    );
    policies
        .patch(
            "db-to-b",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"onDivergence": "Rotate"}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rotated = wait_for(&policies, "db-to-b", "rotated and re-seeded", || async {
        let listed = sh(
            vm,
            &[
                "zfs",
                "list",
                "-H",
                "-o",
                "name",
                "-r",
                &format!("{pool_b}/replicas"),
            ],
        )
        .await;
        let aside = listed
            .lines()
            .find(|l| l.starts_with(&format!("{target}-diverged-")))?
            .to_owned();
        let s = status(&policies, "db-to-b").await;
        let seeded = !exists(vm, &local).await && !guids(vm, &target).await.is_empty();
        (seeded && condition(&s, kind::READY).map(|c| c.0) == Some("True".into())).then_some(aside)
    })
    .await;
    assert!(
        exists(vm, &format!("{rotated}@by-hand")).await,
        "the diverged replica's state is kept under {rotated}"
    );
    let after = status(&policies, "db-to-b").await;
    assert_eq!(
        condition(&after, kind::DIVERGED).map(|c| c.0),
        Some("False".into()),
        "{after:#?}"
    );
    eprintln!("divergence handled after {:?}", started.elapsed());

    // --- 4. A second policy from the same source to another target (node a's own pool);
    // node b goes away. The second keeps syncing; the first's base stays on the source,
    // held by the first policy alone, while the schedule keeps one snapshot.
    let copy = format!("{pool_a}/data/copy");
    let second: ReplicationPolicy = serde_json::from_value(json!({
        "apiVersion": "tidepool.dev/v1alpha1", "kind": "ReplicationPolicy",
        "metadata": {"name": "db-to-a", "namespace": ns},
        "spec": {
            "source": {"nodeName": spec_a.node, "dataset": source,
                       "snapshots": {"scheduleName": "db"}},
            "target": {"node": {"nodeName": spec_a.node, "dataset": copy}},
        },
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    policies
        .create(&PostParams::default(), &second)
        .await
        .unwrap_or_else(|e| panic!("creating the second policy: {e}"));
    wait_for(&policies, "db-to-a", "the second policy Ready", || async {
        let s = status(&policies, "db-to-a").await;
        (condition(&s, kind::READY).map(|c| c.0) == Some("True".into())).then_some(())
    })
    .await;
    wait_for(&policies, "db-to-b", "the first policy Ready", || async {
        let s = status(&policies, "db-to-b").await;
        (condition(&s, kind::READY).map(|c| c.0) == Some("True".into())).then_some(())
    })
    .await;
    ok(pair.agent_b.stop().await);
    let newest_then = guids(vm, &source).await.last().cloned();
    tokio::time::sleep(Duration::from_secs(20)).await;
    // What the first policy needs to go on incrementally: a source snapshot held with its
    // tag that its (offline) target has with the same GUID. Read in the guest: the VM is
    // up, only node b's agent is gone.
    let src_now = guids(vm, &source).await;
    let on_first_target = guids(vm, &target).await;
    let first_tag = format!("tidepool:{ns}/db-to-b");
    let mut bases = Vec::new();
    for snap in &src_now {
        if hold_tags(vm, &format!("{source}@{}", snap.0))
            .await
            .contains(&first_tag)
            && on_first_target.contains(snap)
        {
            bases.push(snap.0.clone());
        }
    }
    assert!(
        !bases.is_empty(),
        "no base of the offline target survives on the source (held and on the target): \
         source {src_now:?}, target {on_first_target:?}"
    );
    let newest_src = src_now
        .iter()
        .rfind(|(n, _)| n.starts_with("tidepool_"))
        .cloned()
        .unwrap_or_else(|| panic!("no schedule snapshot on the source"));
    assert_ne!(
        Some(&newest_src),
        newest_then.as_ref(),
        "the schedule kept going"
    );
    wait_for(
        &policies,
        "db-to-a",
        "the second policy keeps syncing",
        || async { guids(vm, &copy).await.contains(&newest_src).then_some(()) },
    )
    .await;
    ok(pair.agent_b.restart(vm, cp, &spec_b).await);
    // Caught up: the target gets a snapshot the source took while it was away.
    wait_for(
        &policies,
        "db-to-b",
        "the first policy catches up",
        || async { guids(vm, &target).await.contains(&newest_src).then_some(()) },
    )
    .await;
    eprintln!("two targets, one offline, after {:?}", started.elapsed());
}
