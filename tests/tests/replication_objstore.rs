//! A ReplicationPolicy with an `objectStore` target, end to end: the real kube-apiserver
//! with the chart's RBAC, one `tidepool agent` (the source node) in the OpenZFS VM, a real
//! S3-compatible server (versitygw) on the host, reached from the guest at the host's
//! loopback through QEMU's user network, and one controller with the chart's identity.
//!
//! 1. A chain under `fullEvery: {streams: 3}`: a full, two incrementals against it
//!    (`inc-from-<full>`), keys sorted by time; the source holds and bookmarks the base;
//!    the chain restored from the test (`tidepool_objstore::restore` into `zfs receive -u`)
//!    has the source's GUIDs and file checksums. The next stream is a new full, and
//!    retention (`keepLast: 1`, counted in chains) deletes the whole old chain.
//!    Deleting the policy releases its holds and bookmarks on the source; the objects stay.
//! 2. `encryption.ageRecipient`: no plaintext in the stored objects; no restore without
//!    the identity; with it, the GUID of the source.
//! 3. An upload cut by killing the source agent midway leaves no manifest; once the agent
//!    is back the next sync uploads the stream whole.
//! 4. Deleting that policy with `deletionPolicy: Delete` deletes the streams it uploaded
//!    (their manifests name it) and keeps one another uploader put under its prefix.

use std::sync::Arc;
use std::time::Duration;

use kube::Api;
use kube::api::DeleteParams;
use object_store::ObjectStore;
use serde_json::json;
use tidepool_api::condition::kind;
use tidepool_api::{DatasetName, ReplicationPolicy};
use tidepool_objstore::{Error, Prefix, StreamKey, list, restore};
use tidepool_reconciler::PinnedAgents;
use tidepool_tests::guest_peers::GuestPeers;
use tidepool_tests::release::*;
use tidepool_tests::replicas::*;
use tidepool_tests::s3_server::ObjectStoreServer;
use tidepool_tests::zfs_vm::ZfsVm;
use tokio::time::Instant;

const MARKER: &str = "tidepool-plaintext-marker;";

/// The stream directories of `dataset` (complete ones marked), oldest first.
async fn keys(store: &Arc<dyn ObjectStore>, prefix: &str, dataset: &str) -> Vec<(String, bool)> {
    let prefix = ok(Prefix::new(prefix).map_err(Into::into));
    let dataset: DatasetName = dataset.parse().unwrap_or_else(|e| panic!("{e}"));
    let mut listed = ok(list::list_streams(store, &prefix, &dataset)
        .await
        .map_err(Into::into));
    listed.sort_by_key(|l| (l.name.time, l.name.dir_name()));
    listed
        .into_iter()
        .map(|l| (l.name.dir_name(), l.complete))
        .collect()
}

/// The complete streams' directories, with their time prefix cut off.
fn complete(keys: &[(String, bool)]) -> Vec<String> {
    keys.iter()
        .filter(|(_, c)| *c)
        .map(|(k, _)| k[17..].to_owned())
        .collect()
}

fn key(prefix: &str, dataset: &str, dir: &str) -> StreamKey {
    StreamKey {
        prefix: ok(Prefix::new(prefix).map_err(Into::into)),
        dataset: dataset.parse().unwrap_or_else(|e| panic!("{e}")),
        name: tidepool_objstore::StreamName::parse(dir).unwrap_or_else(|| panic!("{dir}")),
    }
}

/// Restores `key` into `target` with `zfs receive -u`; on a restore error the receive is
/// killed (it never sees the end of the stream).
async fn receive(
    vm: &ZfsVm,
    store: &Arc<dyn ObjectStore>,
    key: &StreamKey,
    target: &str,
    identity: Option<&age::x25519::Identity>,
) -> Result<(), Error> {
    let mut child = ok(vm.spawn(["zfs", "receive", "-u", target]).await);
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
    match restore::restore(store, key, identity, &mut stdin).await {
        Ok(_) => {
            drop(stdin);
            let out = ok(child.wait_with_output().await);
            ok(out.check(&["zfs".to_owned(), "receive".to_owned()]));
            Ok(())
        }
        Err(e) => {
            ok(child.kill().await);
            Err(e)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_chain_restore_encryption_retention_and_a_cut_upload() {
    let started = Instant::now();
    let release = Release::install("robj").await;
    let cp = release.cp;
    let vm = ok(ZfsVm::shared().await);
    let ns = release.ns.clone();
    let server = ok(ObjectStoreServer::start().await);
    let store = ok(server.s3().connect().map_err(Into::into));
    let pool = vm.unique_pool_name("ob");
    ok(vm.create_pool(&pool, 512 << 20).await);
    let root = format!("{pool}/data");
    sh(vm, &["zfs", "create", &root]).await;
    let spec = release.agent_spec("src", &[&pool], &[&root], 0);
    let mut agent = release.start_agent(vm, &spec).await;
    release
        .grant(&format!("{ns}-grant"), &[&ns], &[&root])
        .await;
    let replica = release.replica("controller-0").await;
    let agents = GuestPeers::new(
        vm,
        PinnedAgents::new(replica.agent_token.clone(), AGENT_CALL_TIMEOUT),
    );
    let _controller = release
        .start_with(&replica, Some(ns.clone()), agents as _)
        .await;
    ok(server.create_secret(cp.admin_client(), &ns, "bucket").await);
    let policies: Api<ReplicationPolicy> = Api::namespaced(cp.admin_client(), &ns);
    let target = |prefix: &str, extra: serde_json::Value| server.target(prefix, "bucket", extra);
    eprintln!(
        "agent, controller and versitygw up after {:?}",
        started.elapsed()
    );

    // --- 1. A chain: full, incrementals against it, a new full, retention by chains.
    let app = format!("{root}/app");
    sh(vm, &["zfs", "create", &app]).await;
    write_random(vm, &format!("/{app}/f1"), 2).await;
    snapshot_next_second(vm, &app, "s1").await;
    create_policy(
        &policies,
        "plain",
        json!({
            "source": {"nodeName": spec.node, "dataset": app},
            "target": target("e2e/plain", json!({"fullEvery": {"streams": 3}})),
            "retention": {"keepLast": 1},
        }),
    )
    .await;
    let stored = |want: Vec<&'static str>| {
        let (store, app) = (store.clone(), app.clone());
        async move {
            let k = keys(&store, "e2e/plain", &app).await;
            (complete(&k) == want).then_some(k)
        }
    };
    wait_for(&policies, "plain", "the full of s1", || {
        stored(vec!["s1-full"])
    })
    .await;
    eprintln!("full uploaded after {:?}", started.elapsed());
    let tag = format!("tidepool:{ns}/plain");
    write_random(vm, &format!("/{app}/s2"), 1).await;
    snapshot_next_second(vm, &app, "s2").await;
    trigger(&policies, "plain", "t2").await;
    wait_for(&policies, "plain", "s2 against s1", || {
        stored(vec!["s1-full", "s2-inc-from-s1"])
    })
    .await;
    // While the chain is open its full is the next incremental's base: held and bookmarked
    // on the source (the store cannot hold).
    wait_for(
        &policies,
        "plain",
        "s1 held and bookmarked on the source",
        || async {
            let held = hold_tags(vm, &format!("{app}@s1")).await.contains(&tag);
            let marked = bookmarks(vm, &app)
                .await
                .iter()
                .any(|b| b.contains("#s1_tp"));
            (held && marked).then_some(())
        },
    )
    .await;
    write_random(vm, &format!("/{app}/s3"), 1).await;
    snapshot_next_second(vm, &app, "s3").await;
    trigger(&policies, "plain", "t3").await;
    let chain = wait_for(&policies, "plain", "two incrementals against s1", || {
        stored(vec!["s1-full", "s2-inc-from-s1", "s3-inc-from-s1"])
    })
    .await;
    eprintln!("chain after {:?}: {chain:?}", started.elapsed());
    let times: Vec<&str> = chain.iter().map(|(k, _)| &k[..16]).collect();
    assert!(times.is_sorted(), "keys sort by time: {chain:?}");
    // The chain is closed (3 streams): the newest stored snapshot is held, the full let go.
    wait_for(&policies, "plain", "s3 held, s1 released", || async {
        let s3 = hold_tags(vm, &format!("{app}@s3")).await.contains(&tag);
        let s1 = hold_tags(vm, &format!("{app}@s1")).await.contains(&tag);
        (s3 && !s1).then_some(())
    })
    .await;
    let st = wait_for(
        &policies,
        "plain",
        "Ready with s3 as the last common snapshot",
        || async {
            let s = status(&policies, "plain").await;
            (s.last_common_snapshot.as_deref() == Some("s3")
                && condition(&s, kind::READY).map(|c| c.0) == Some("True".into()))
            .then_some(s)
        },
    )
    .await;
    assert!(st.last_replicated_snapshot_time.is_some());
    // Restore the chain: the full, then the incremental against it.
    let restored = format!("{pool}/restored");
    for dir in [&chain[0].0, &chain[2].0] {
        receive(vm, &store, &key("e2e/plain", &app, dir), &restored, None)
            .await
            .unwrap_or_else(|e| panic!("restoring {dir}: {e}"));
    }
    assert_eq!(
        prop(vm, &format!("{restored}@s3"), "guid").await,
        prop(vm, &format!("{app}@s3"), "guid").await
    );
    let files = ["f1", "s2", "s3"];
    assert_eq!(
        checksums(vm, &restored, &files).await,
        checksums(vm, &app, &files).await
    );
    eprintln!("chain restored and checked after {:?}", started.elapsed());
    // The chain holds 3 streams: the next one is a new full, and keepLast 1 (chains)
    // deletes the old chain whole.
    write_random(vm, &format!("/{app}/s4"), 1).await;
    snapshot_next_second(vm, &app, "s4").await;
    trigger(&policies, "plain", "t4").await;
    let after = wait_for(
        &policies,
        "plain",
        "a new full, the old chain gone",
        || async {
            let k = keys(&store, "e2e/plain", &app).await;
            (k.iter()
                .map(|(d, c)| (d[17..].to_owned(), *c))
                .collect::<Vec<_>>()
                == [("s4-full".to_owned(), true)])
            .then_some(k)
        },
    )
    .await;
    eprintln!(
        "new full, retention after {:?}: {after:?}",
        started.elapsed()
    );
    assert!(hold_tags(vm, &format!("{app}@s1")).await.is_empty());
    assert!(hold_tags(vm, &format!("{app}@s4")).await.contains(&tag));
    // Deleting the policy lets go of its holds and bookmarks on the source; the objects stay.
    ok(policies
        .delete("plain", &DeleteParams::default())
        .await
        .map(drop)
        .map_err(Into::into));
    let end = Instant::now() + WITHIN;
    while !hold_tags(vm, &format!("{app}@s4")).await.is_empty()
        || bookmarks(vm, &app).await.iter().any(|b| b.contains("_tp"))
    {
        assert!(Instant::now() < end, "the deleted policy's holds stayed");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        complete(&keys(&store, "e2e/plain", &app).await),
        ["s4-full"]
    );

    // --- 2. age encryption: nothing readable in the store without the identity.
    let identity = age::x25519::Identity::generate();
    let sealed = format!("{root}/sealed");
    sh(vm, &["zfs", "create", &sealed]).await;
    sh(
        vm,
        &[
            "python3",
            "-c",
            &format!("open('/{sealed}/m','w').write({MARKER:?} * 20000)"),
        ],
    )
    .await;
    snapshot_next_second(vm, &sealed, "e1").await;
    create_policy(
        &policies,
        "sealed",
        json!({
            "source": {"nodeName": spec.node, "dataset": sealed},
            "target": target("e2e/sealed", json!({"encryption": {"ageRecipient": identity.to_public().to_string()}})),
        }),
    )
    .await;
    let sealed_keys = wait_for(&policies, "sealed", "the encrypted full", || async {
        let k = keys(&store, "e2e/sealed", &sealed).await;
        (complete(&k) == ["e1-full"]).then_some(k)
    })
    .await;
    let mut stored_bytes = Vec::new();
    for entry in walk(&server.bucket_dir().join("e2e/sealed")) {
        stored_bytes.extend(std::fs::read(&entry).unwrap_or_default());
    }
    assert!(stored_bytes.len() > 1000);
    assert!(
        !stored_bytes
            .windows(MARKER.len())
            .any(|w| w == MARKER.as_bytes()),
        "plaintext in the stored objects"
    );
    let k = key("e2e/sealed", &sealed, &sealed_keys[0].0);
    let opened = format!("{pool}/opened");
    match receive(vm, &store, &k, &opened, None).await {
        Err(Error::IdentityRequired { .. }) => {}
        other => panic!("restored without the identity: {other:?}"),
    }
    receive(vm, &store, &k, &opened, Some(&identity))
        .await
        .unwrap_or_else(|e| panic!("restoring with the identity: {e}"));
    assert_eq!(
        prop(vm, &format!("{opened}@e1"), "guid").await,
        prop(vm, &format!("{sealed}@e1"), "guid").await
    );
    eprintln!("encrypted stream checked after {:?}", started.elapsed());

    // --- 3. An upload cut by killing the source agent: no manifest; then it completes.
    let big = format!("{root}/big");
    sh(vm, &["zfs", "create", &big]).await;
    write_random(vm, &format!("/{big}/f"), 24).await;
    snapshot_next_second(vm, &big, "b1").await;
    create_policy(
        &policies,
        "cut",
        json!({
            "source": {"nodeName": spec.node, "dataset": big},
            "target": target("e2e/cut", json!({})),
            "send": {"bandwidthLimit": "2Mi"},
        }),
    )
    .await;
    wait_for(&policies, "cut", "the upload under way", || async {
        let s = status(&policies, "cut").await;
        s.progress.filter(|p| p.bytes_done > 6 << 20)
    })
    .await;
    ok(agent.stop().await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut = keys(&store, "e2e/cut", &big).await;
    assert!(
        cut.iter().all(|(_, complete)| !complete),
        "a cut upload has no manifest: {cut:?}"
    );
    eprintln!("cut after {:?}: {cut:?}", started.elapsed());
    ok(agent.restart(vm, cp, &spec).await);
    trigger(&policies, "cut", "again").await;
    let whole = wait_for(&policies, "cut", "the stream uploaded whole", || async {
        let k = keys(&store, "e2e/cut", &big).await;
        (complete(&k) == ["b1-full"]).then_some(k)
    })
    .await;
    let k = whole
        .iter()
        .find(|(_, c)| *c)
        .map(|(d, _)| key("e2e/cut", &big, d))
        .unwrap_or_else(|| panic!("{whole:?}"));
    let back = format!("{pool}/back");
    receive(vm, &store, &k, &back, None)
        .await
        .unwrap_or_else(|e| panic!("restoring the re-sent stream: {e}"));
    assert_eq!(
        prop(vm, &format!("{back}@b1"), "guid").await,
        prop(vm, &format!("{big}@b1"), "guid").await
    );
    eprintln!("re-sent after the cut after {:?}", started.elapsed());

    // --- 4. `deletionPolicy: Delete`: the policy's streams go, another uploader's stay.
    let foreign = StreamKey {
        prefix: ok(Prefix::new("e2e/cut").map_err(Into::into)),
        dataset: big.parse().unwrap_or_else(|e| panic!("{e}")),
        name: ok(tidepool_objstore::StreamName::new(
            "2026-01-01T00:00:00Z"
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
            "by-hand".parse().unwrap_or_else(|e| panic!("{e}")),
            tidepool_objstore::StreamKind::Full,
        )
        .map_err(Into::into)),
    };
    let guids = tidepool_objstore::Guids {
        snapshot: 7,
        parent: None,
    };
    ok(tidepool_objstore::upload::upload(
        &store,
        &foreign,
        guids,
        &b"not ours"[..],
        &tidepool_objstore::UploadOptions::default(),
    )
    .await
    .map(drop)
    .map_err(Into::into));
    ok(policies
        .patch(
            "cut",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"deletionPolicy": "Delete"}})),
        )
        .await
        .map(drop)
        .map_err(Into::into));
    ok(policies
        .delete("cut", &DeleteParams::default())
        .await
        .map(drop)
        .map_err(Into::into));
    let end = Instant::now() + WITHIN;
    loop {
        let left = complete(&keys(&store, "e2e/cut", &big).await);
        if left == ["by-hand-full"] {
            break;
        }
        assert!(
            Instant::now() < end,
            "the Delete policy's streams stayed: {left:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(hold_tags(vm, &format!("{big}@b1")).await.is_empty());
    eprintln!(
        "Delete removed the policy's streams after {:?}",
        started.elapsed()
    );
    ok(vm.destroy_pool(&pool).await);
}

/// Every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
