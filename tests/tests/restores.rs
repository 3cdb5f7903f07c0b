//! Restores, end to end: restore drills and `tidepool restore --from-store` (the first
//! test), and a node target's replica brought back by a policy the other way (the second).
//!
//! The first test: the real kube-apiserver
//! with the chart's RBAC, one `tidepool agent` (the source node) in the OpenZFS VM,
//! versitygw on the host, one controller with the chart's identity serving `/metrics`.
//!
//! 1. A policy with `restoreDrill: {every: 10s}` uploads a chain; a drill receives it into
//!    `<root>/tidepool-drill-<uid>` and destroys it: `Verified=True`, `status.lastDrill`
//!    names the chain, the scratch is gone, the metric says 1.
//! 2. `tidepool restore --from-store` (in the guest, where the pool is) rebuilds the chain
//!    into a new dataset with the source's GUID and file checksums; a second restore into
//!    it is refused.
//! 3. A chunk deleted from the store: the next drill turns `Verified` false with reason
//!    `ObjectMissing` naming the object, a Warning event, the metric 0 and the failure
//!    counter up; the scratch does not stay.
//! 4. A dataset a person made where the scratch goes (no drill mark): the drill refuses
//!    (`ScratchRefused`) and the dataset and its file stay.
//! 5. Healing: a new full chain, and the next drill passes again.
//! 6. An age-encrypted chain: the drill checks its checksums only (`received: false`).
//! 7. A ZFS-encrypted source sent raw: the drill receives it without a key.

use kube::Api;
use kube::ResourceExt;
use serde_json::json;
use tidepool_api::ReplicationPolicy;
use tidepool_api::condition::kind;
use tidepool_api::replication_policy::DrillStatus;
use tidepool_reconciler::PinnedAgents;
use tidepool_tests::agents::{http_get, scrape, sum_samples, tidepool_binary_in_guest};
use tidepool_tests::guest_peers::GuestPeers;
use tidepool_tests::release::*;
use tidepool_tests::replicas::*;
use tidepool_tests::s3_server::ObjectStoreServer;
use tidepool_tests::zfs_vm::ZfsVm;
use tokio::time::Instant;

/// The VM forwards two agents' ports: the tests take them one after the other.
static AGENT_SLOTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for a drill that ended after `after` and matches `passed`.
async fn drill_after(
    api: &Api<ReplicationPolicy>,
    name: &str,
    after: jiff::Timestamp,
    passed: bool,
) -> DrillStatus {
    wait_for(
        api,
        name,
        &format!("a drill with passed={passed}"),
        || async {
            status(api, name)
                .await
                .last_drill
                .filter(|d| d.time.0 > after && d.passed == passed)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_verify_the_stored_chain_and_fail_when_an_object_is_lost() {
    let _slots = AGENT_SLOTS.lock().await;
    let started = Instant::now();
    let release = Release::install("drill").await;
    let cp = release.cp;
    let vm = ok(ZfsVm::shared().await);
    let ns = release.ns.clone();
    let server = ok(ObjectStoreServer::start().await);
    let pool = vm.unique_pool_name("dr");
    ok(vm.create_pool(&pool, 512 << 20).await);
    let root = format!("{pool}/data");
    sh(vm, &["zfs", "create", &root]).await;
    let spec = release.agent_spec("src", &[&pool], &[&root], 0);
    let _agent = release.start_agent(vm, &spec).await;
    release
        .grant(&format!("{ns}-grant"), &[&ns], &[&root])
        .await;
    let replica = release.replica("controller-0").await;
    let agents = GuestPeers::new(
        vm,
        PinnedAgents::new(replica.agent_token.clone(), AGENT_CALL_TIMEOUT),
    );
    let http = free_local_addr();
    let _controller = release
        .start_serving_with(
            &replica,
            Some(ns.clone()),
            agents as _,
            test_reconciler_config(),
            http,
        )
        .await;
    ok(server.create_secret(cp.admin_client(), &ns, "bucket").await);
    let policies: Api<ReplicationPolicy> = Api::namespaced(cp.admin_client(), &ns);
    eprintln!("up after {:?}", started.elapsed());

    // --- 1. A chain, drilled.
    let app = format!("{root}/app");
    sh(vm, &["zfs", "create", &app]).await;
    write_random(vm, &format!("/{app}/f1"), 2).await;
    snapshot_next_second(vm, &app, "s1").await;
    create_policy(
        &policies,
        "drilled",
        json!({
            "source": {"nodeName": spec.node, "dataset": app},
            "target": server.target("e2e/drill", "bucket", json!({"fullEvery": {"streams": 2}})),
            "restoreDrill": {"every": "10s"},
        }),
    )
    .await;
    // A sync sends the newest snapshot: s1 first, then s2 against it.
    wait_for(&policies, "drilled", "s1 stored", || async {
        let s = status(&policies, "drilled").await;
        (s.last_common_snapshot.as_deref() == Some("s1")).then_some(())
    })
    .await;
    write_random(vm, &format!("/{app}/f2"), 1).await;
    snapshot_next_second(vm, &app, "s2").await;
    trigger(&policies, "drilled", "s2").await;
    wait_for(&policies, "drilled", "s2 stored", || async {
        let s = status(&policies, "drilled").await;
        (s.last_common_snapshot.as_deref() == Some("s2")).then_some(())
    })
    .await;
    let synced = jiff::Timestamp::now();
    let first = drill_after(&policies, "drilled", synced, true).await;
    eprintln!("first drill after {:?}: {first:?}", started.elapsed());
    assert!(first.received, "a plain chain is received: {first:?}");
    assert_eq!(first.reason, "RestoreDrillPassed");
    assert_eq!(first.snapshot.as_deref(), Some("s2"));
    assert!(
        first.streams.len() == 2
            && first.streams[0].ends_with("-s1-full")
            && first.streams[1].ends_with("-s2-inc-from-s1"),
        "{first:?}"
    );
    let s = status(&policies, "drilled").await;
    assert_eq!(
        condition(&s, kind::VERIFIED),
        Some(("True".into(), "RestoreDrillPassed".into()))
    );
    assert!(s.next_drill_time.is_some());
    let uid = ok(policies.get("drilled").await.map_err(Into::into))
        .uid()
        .unwrap_or_default();
    let scratch = format!("{root}/tidepool-drill-{uid}");
    assert!(
        !exists(vm, &scratch).await,
        "the scratch stays after a drill"
    );
    let metrics = scrape(http).await;
    assert_eq!(
        sum_samples(&metrics, "tidepool_replication_restore_drill_passed"),
        1.0,
        "{metrics}"
    );
    // explain reads the same listing: s2 is the newest stored, nothing left to upload.
    let (code, body) = http_get(
        http,
        &format!("/explain/v1/namespaces/{ns}/replicationpolicies/drilled"),
        Some(replica.identity.token()),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let explained: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    eprintln!("explain: {explained:#}");
    let view = &explained["replication"];
    assert_eq!(
        view["target"]["node"],
        format!("s3:{}/e2e/drill", ObjectStoreServer::BUCKET)
    );
    assert_eq!(view["lastCommon"]["name"], "s2", "{explained:#}");
    assert!(
        explained.get("blocked").is_none_or(|b| b.is_null()),
        "{explained:#}"
    );
    assert!(
        view["steps"]
            .as_array()
            .is_none_or(|steps| steps.iter().all(|s| s["reason"] != "Upload")),
        "{explained:#}"
    );

    // --- 2. tidepool restore --from-store, where the pool is.
    let binary = ok(tidepool_binary_in_guest(vm));
    let restored = format!("{pool}/restored");
    let restore_argv = |to: &str| {
        vec![
            binary.display().to_string(),
            "restore".into(),
            "--from-store".into(),
            server.endpoint_from_guest(),
            "--bucket".into(),
            ObjectStoreServer::BUCKET.into(),
            "--prefix".into(),
            "e2e/drill".into(),
            "--dataset".into(),
            app.clone(),
            "--to".into(),
            to.to_owned(),
        ]
    };
    let keys = [
        ("AWS_ACCESS_KEY_ID", ObjectStoreServer::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", ObjectStoreServer::SECRET_KEY),
    ];
    let mut cmd = vm.command(restore_argv(&restored));
    for (k, v) in keys {
        cmd.env(k, v);
    }
    let out = ok(cmd.output().await);
    assert!(
        out.status.success(),
        "tidepool restore --from-store: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    assert_eq!(
        prop(vm, &format!("{restored}@s2"), "guid").await,
        prop(vm, &format!("{app}@s2"), "guid").await
    );
    assert_eq!(
        checksums(vm, &restored, &["f1", "f2"]).await,
        checksums(vm, &app, &["f1", "f2"]).await
    );
    let mut again = vm.command(restore_argv(&restored));
    for (k, v) in keys {
        again.env(k, v);
    }
    let out = ok(again.output().await);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("exists"),
        "a restore over an existing dataset: {said}"
    );

    // --- 3. A chunk lost: the drill fails, names it, fires the metric.
    let full_dir = first.streams[0].clone();
    let chunk = server
        .bucket_dir()
        .join("e2e/drill")
        .join(&app)
        .join(&full_dir)
        .join("chunk-000001");
    ok(std::fs::remove_file(&chunk).map_err(|e| anyhow::anyhow!("{}: {e}", chunk.display())));
    let lost = drill_after(&policies, "drilled", first.time.0, false).await;
    eprintln!("drill after the loss, {:?}: {lost:?}", started.elapsed());
    assert_eq!(lost.reason, "ObjectMissing");
    let object = format!("e2e/drill/{app}/{full_dir}/chunk-000001");
    assert_eq!(lost.object.as_deref(), Some(object.as_str()), "{lost:?}");
    let s = status(&policies, "drilled").await;
    assert_eq!(
        condition(&s, kind::VERIFIED),
        Some(("False".into(), "ObjectMissing".into()))
    );
    let metrics = scrape(http).await;
    assert!(
        metrics.contains("tidepool_replication_restore_drill_passed{")
            && sum_samples(&metrics, "tidepool_replication_restore_drill_passed") == 0.0
            && sum_samples(
                &metrics,
                "tidepool_replication_restore_drill_failures_total"
            ) >= 1.0,
        "{metrics}"
    );
    wait_for(
        &policies,
        "drilled",
        "a Warning event ObjectMissing",
        || async {
            events_about(cp, &ns, "drilled")
                .await
                .iter()
                .any(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.reason.as_deref() == Some("ObjectMissing")
                })
                .then_some(())
        },
    )
    .await;
    assert!(
        !exists(vm, &scratch).await,
        "a failed drill left its scratch"
    );

    // --- 4. Someone else's dataset where the scratch goes: refused, kept.
    sh(vm, &["zfs", "create", &scratch]).await;
    sh(
        vm,
        &["sh", "-c", &format!("echo keep > /{scratch}/precious")],
    )
    .await;
    let refused = drill_after(&policies, "drilled", lost.time.0, false).await;
    let refused = if refused.reason == "ScratchRefused" {
        refused
    } else {
        drill_after(&policies, "drilled", refused.time.0, false).await
    };
    assert_eq!(refused.reason, "ScratchRefused", "{refused:?}");
    assert_eq!(
        sh(vm, &["cat", &format!("/{scratch}/precious")])
            .await
            .trim(),
        "keep"
    );
    sh(vm, &["zfs", "destroy", &scratch]).await;

    // --- 5. Healing: s3 starts a new chain (fullEvery 2), and the drill passes on it.
    snapshot_next_second(vm, &app, "s3").await;
    trigger(&policies, "drilled", "new-chain").await;
    let healed = drill_after(&policies, "drilled", refused.time.0, true).await;
    eprintln!("healed after {:?}: {healed:?}", started.elapsed());
    assert_eq!(healed.snapshot.as_deref(), Some("s3"));
    assert!(healed.streams.len() == 1 && healed.streams[0].ends_with("-s3-full"));

    // --- 6. An age-encrypted chain: checksums only.
    let identity = age::x25519::Identity::generate();
    let sealed = format!("{root}/sealed");
    sh(vm, &["zfs", "create", &sealed]).await;
    write_random(vm, &format!("/{sealed}/f"), 1).await;
    snapshot_next_second(vm, &sealed, "e1").await;
    create_policy(
        &policies,
        "sealed",
        json!({
            "source": {"nodeName": spec.node, "dataset": sealed},
            "target": server.target("e2e/sealed", "bucket",
                json!({"encryption": {"ageRecipient": identity.to_public().to_string()}})),
            "restoreDrill": {"every": "10s"},
        }),
    )
    .await;
    let sealed_drill = drill_after(&policies, "sealed", jiff::Timestamp::UNIX_EPOCH, true).await;
    assert!(!sealed_drill.received, "{sealed_drill:?}");
    assert!(sealed_drill.message.contains("age"), "{sealed_drill:?}");

    // --- 7. A ZFS-encrypted source sent raw: received locked, no key needed, matched.
    let locked = format!("{root}/locked");
    create_encrypted(vm, &locked, &pool, b"tidepool-drill-passphrase").await;
    write_random(vm, &format!("/{locked}/f"), 1).await;
    snapshot_next_second(vm, &locked, "k1").await;
    create_policy(
        &policies,
        "locked",
        json!({
            "source": {"nodeName": spec.node, "dataset": locked},
            "target": server.target("e2e/locked", "bucket", json!({})),
            "restoreDrill": {"every": "10s"},
        }),
    )
    .await;
    let raw_drill = drill_after(&policies, "locked", jiff::Timestamp::UNIX_EPOCH, true).await;
    assert!(
        raw_drill.received,
        "a raw stream is received: {raw_drill:?}"
    );
    assert_eq!(raw_drill.snapshot.as_deref(), Some("k1"));
    eprintln!("done after {:?}", started.elapsed());
    ok(vm.destroy_pool(&pool).await);
}

/// A node target's replica restores through a second policy the other way
/// (docs/restore.md): the replica as the source, a new dataset on the first node as the
/// target; the restored copy has the source's GUIDs and files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_replica_restores_through_a_policy_the_other_way() {
    let _slots = AGENT_SLOTS.lock().await;
    let started = Instant::now();
    let release = Release::install("back").await;
    let cp = release.cp;
    let vm = ok(ZfsVm::shared().await);
    let ns = release.ns.clone();
    let pair = Pair::start(&release, vm, "bk").await;
    let source = format!("{}/data/db", pair.pool_a);
    let replica = format!("{}/replicas/db", pair.pool_b);
    let restored = format!("{}/data/db-restored", pair.pool_a);
    sh(vm, &["zfs", "create", &source]).await;
    write_random(vm, &format!("/{source}/one"), 2).await;
    snapshot_next_second(vm, &source, "s1").await;
    write_random(vm, &format!("/{source}/two"), 1).await;
    snapshot_next_second(vm, &source, "s2").await;
    let policies: Api<ReplicationPolicy> = Api::namespaced(cp.admin_client(), &ns);
    create_policy(
        &policies,
        "db-to-b",
        json!({
            "source": {"nodeName": pair.spec_a.node, "dataset": source},
            "target": {"node": {"nodeName": pair.spec_b.node, "dataset": replica}},
        }),
    )
    .await;
    let ready = |name: &'static str| {
        let policies = policies.clone();
        async move {
            wait_for(&policies, name, "Ready with s2 in common", || async {
                let s = status(&policies, name).await;
                (s.last_common_snapshot.as_deref() == Some("s2")
                    && condition(&s, kind::READY).map(|c| c.0) == Some("True".into()))
                .then_some(())
            })
            .await
        }
    };
    ready("db-to-b").await;
    eprintln!("replicated after {:?}", started.elapsed());
    create_policy(
        &policies,
        "db-restore",
        json!({
            "source": {"nodeName": pair.spec_b.node, "dataset": replica},
            "target": {"node": {"nodeName": pair.spec_a.node, "dataset": restored}},
        }),
    )
    .await;
    ready("db-restore").await;
    eprintln!("restored after {:?}", started.elapsed());
    assert_eq!(guids(vm, &restored).await, guids(vm, &source).await);
    assert_eq!(
        checksums(vm, &restored, &["one", "two"]).await,
        checksums(vm, &source, &["one", "two"]).await
    );
    ok(vm.destroy_pool(&pair.pool_a).await);
    ok(vm.destroy_pool(&pair.pool_b).await);
}
