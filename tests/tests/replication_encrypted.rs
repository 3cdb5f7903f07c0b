//! An encrypted source replicates raw, end to end: the real kube-apiserver with the chart's
//! RBAC, two `tidepool agent` processes in the OpenZFS VM (node a holds the encrypted
//! source, node b the replicas), one `tidepool controller` with the chart's controller
//! identity, the real pinned-TLS transport and ticket broker. A SnapshotSchedule snapshots
//! the source; two policies replicate it.
//!
//! - `send.raw` left at its default (true): the replica arrives still encrypted
//!   (`encryption` not `off`, `keystatus` `unavailable`: the target never had the key), the
//!   snapshots on both sides have the same GUIDs, `Ready=True`. Then the key is loaded on
//!   the target (`zfs load-key -L file://...`, the policy suspended first so nothing
//!   receives meanwhile), the replica mounted read-only, and every file of the newest
//!   common snapshot has the same SHA-256 on both sides (read from `.zfs/snapshot/<name>/`
//!   on each, so both read the same snapshot).
//! - `send.raw: false` on the same source: `Ready=False` with reason
//!   `PlaintextOfEncryptedSource`, and its target dataset is never created (checked at
//!   every reading while the other policy syncs, and at the end).
//! - A claim (the target agent's `Bookkeeping`, called with the controller's token) that
//!   names a snapshot which is not there claims the others and succeeds: an `-I` stream
//!   lacks an intermediate the source's retention pruned between the plan and the send,
//!   and the claim after it must not fail the sync (seen here: `ZfsError` NotFound).

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tidepool_agent::{AgentClient, CertificateFingerprint, LeaderEpoch};
use tidepool_api::condition::kind;
use tidepool_api::{ReplicationPolicy, ZfsNode};
use tidepool_tests::control_plane::ControlPlane;
use tidepool_tests::release::*;
use tidepool_tests::replicas::*;
use tidepool_tests::zfs_vm::ZfsVm;
use tidepool_wire::bookkeeping::{Bookkeeping, BookkeepingAction, Bookkept};
use tidepool_wire::operation::{Owner, Response, SnapshotRef};
use tokio::time::Instant;

/// `file, sha256` of every file under `dir` in the guest, by path relative to it.
async fn checksums(vm: &ZfsVm, dir: &str) -> BTreeMap<String, String> {
    let out = sh(
        vm,
        &[
            "sh",
            "-c",
            "cd \"$1\" && find . -type f -print0 | sort -z | xargs -0 sha256sum",
            "checksums",
            dir,
        ],
    )
    .await;
    out.lines()
        .filter_map(|l| {
            let (sum, file) = l.split_once("  ")?;
            Some((file.to_owned(), sum.to_owned()))
        })
        .collect()
}

/// A client for `node`'s agent at the endpoint and pin its `ZfsNode` publishes.
async fn controller_client(cp: &ControlPlane, node: &str) -> AgentClient {
    let status = Api::<ZfsNode>::all(cp.admin_client())
        .get(node)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .status
        .unwrap_or_default();
    let pin: CertificateFingerprint = status
        .tls_certificate_sha256
        .as_deref()
        .unwrap_or("")
        .parse()
        .unwrap_or_else(|e| panic!("{node}: fingerprint: {e}"));
    AgentClient::new(status.endpoint.as_deref().unwrap_or(""), pin)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_timeout(std::time::Duration::from_secs(60))
}

/// The leader's epoch: the Lease's transitions.
async fn current_epoch(cp: &ControlPlane, ns: &str, lease: &str) -> LeaderEpoch {
    let transitions = Api::<Lease>::namespaced(cp.admin_client(), ns)
        .get(lease)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .spec
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0);
    LeaderEpoch(u64::try_from(transitions).unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_source_replicates_raw_and_never_as_plaintext() {
    let started = Instant::now();
    let release = Release::install("renc").await;
    let cp = release.cp;
    let vm = ok(ZfsVm::shared().await);
    let ns = release.ns.clone();
    let pair = Pair::start(&release, vm, "e").await;
    let (pool_a, pool_b) = (pair.pool_a.clone(), pair.pool_b.clone());
    let (spec_a, spec_b) = (&pair.spec_a, &pair.spec_b);
    let source = format!("{pool_a}/data/secret");
    let target = format!("{pool_b}/replicas/secret");
    let plain_target = format!("{pool_b}/replicas/plain");

    // The key lives on the source's node only (the test later hands it to the target's
    // admin, who loads it by hand).
    let keylocation = create_encrypted(vm, &source, &pool_a, b"tidepool-e2e-passphrase").await;
    write_random(vm, &format!("/{source}/one"), 3).await;
    sh(vm, &["mkdir", &format!("/{source}/dir")]).await;
    write_random(vm, &format!("/{source}/dir/two"), 1).await;

    eprintln!("agents and controller up after {:?}", started.elapsed());

    let policies: Api<ReplicationPolicy> = Api::namespaced(cp.admin_client(), &ns);
    create_schedule(
        cp,
        &ns,
        "secret",
        json!({
            "nodeName": spec_a.node,
            "datasets": [{"name": source}],
            "schedule": {"interval": "5s"},
            "retention": {"keepLast": 3},
        }),
    )
    .await;
    let schedule_owner = format!("SnapshotSchedule/{ns}/secret");
    wait_owned_snapshot(vm, &source, &schedule_owner).await;
    let selection = json!({"scheduleName": "secret"});
    create_policy(
        &policies,
        "raw",
        json!({
            "source": {"nodeName": spec_a.node, "dataset": source, "snapshots": selection},
            "target": {"node": {"nodeName": spec_b.node, "dataset": target}},
        }),
    )
    .await;
    create_policy(
        &policies,
        "plain",
        json!({
            "source": {"nodeName": spec_a.node, "dataset": source, "snapshots": selection},
            "target": {"node": {"nodeName": spec_b.node, "dataset": plain_target}},
            "send": {"raw": false},
        }),
    )
    .await;

    // --- The plaintext policy is refused, and nothing lands.
    let refused = wait_for(
        &policies,
        "plain",
        "Ready=False PlaintextOfEncryptedSource",
        || async {
            assert!(
                !exists(vm, &plain_target).await,
                "plaintext of an encrypted source landed on the target"
            );
            let s = status(&policies, "plain").await;
            (condition(&s, kind::READY)
                == Some(("False".into(), "PlaintextOfEncryptedSource".into())))
            .then_some(s)
        },
    )
    .await;
    eprintln!(
        "send.raw: false refused after {:?}: {:?}",
        started.elapsed(),
        refused.last_error
    );

    // --- The raw policy: synced, still encrypted on the target, same GUIDs.
    let st = wait_for(
        &policies,
        "raw",
        "Ready=True with a common snapshot",
        || async {
            assert!(!exists(vm, &plain_target).await, "plaintext landed");
            let s = status(&policies, "raw").await;
            (condition(&s, kind::READY).map(|c| c.0) == Some("True".into())
                && s.last_common_snapshot.is_some())
            .then_some(s)
        },
    )
    .await;
    eprintln!(
        "raw policy Ready after {:?}: {:?}",
        started.elapsed(),
        st.last_common_snapshot
    );
    // Suspended, so nothing is received (or held, or released) while the key is loaded
    // and the replica read below.
    policies
        .patch(
            "raw",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let common = wait_for(&policies, "raw", "the policy suspended", || async {
        let s = status(&policies, "raw").await;
        (condition(&s, kind::READY) == Some(("True".into(), "Suspended".into())))
            .then_some(s.last_common_snapshot)
            .flatten()
    })
    .await;

    let encryption = prop(vm, &target, "encryption").await;
    assert_ne!(encryption, "off", "the replica is not encrypted");
    assert_ne!(encryption, "-", "the replica is not encrypted");
    assert_eq!(
        prop(vm, &target, "keystatus").await,
        "unavailable",
        "the target holds the key of a raw replica"
    );
    assert_eq!(
        prop(vm, &target, "mounted").await,
        "no",
        "received unmounted"
    );
    let on_a: BTreeMap<String, String> = guids(vm, &source).await.into_iter().collect();
    let on_b: BTreeMap<String, String> = guids(vm, &target).await.into_iter().collect();
    assert!(
        on_b.contains_key(&common) && on_a.contains_key(&common),
        "the common snapshot {common} is on both sides: A {on_a:?}, B {on_b:?}"
    );
    for (short, guid) in &on_b {
        if let Some(g) = on_a.get(short) {
            assert_eq!(g, guid, "{short}: the replica's GUID differs");
        }
    }

    // --- The data verify once the key is loaded on the target.
    sh(vm, &["zfs", "load-key", "-L", &keylocation, &target]).await;
    assert_eq!(prop(vm, &target, "keystatus").await, "available");
    sh(vm, &["zfs", "mount", "-o", "ro", &target]).await;
    let mountpoint = prop(vm, &target, "mountpoint").await;
    let source_files = checksums(vm, &format!("/{source}/.zfs/snapshot/{common}")).await;
    let target_files = checksums(vm, &format!("{mountpoint}/.zfs/snapshot/{common}")).await;
    assert_eq!(
        source_files.keys().collect::<Vec<_>>(),
        ["./dir/two", "./one"],
        "the source's files at {common}"
    );
    assert_eq!(
        target_files, source_files,
        "the replica's files at {common} differ from the source's"
    );

    assert!(
        !exists(vm, &plain_target).await,
        "plaintext of an encrypted source landed on the target"
    );
    let still = status(&policies, "plain").await;
    assert_eq!(
        condition(&still, kind::READY),
        Some(("False".into(), "PlaintextOfEncryptedSource".into())),
        "{still:#?}"
    );
    // --- A claim that names a snapshot which is not there claims the others. The race
    // behind it: the source's retention prunes an intermediate between the plan and the
    // `-I` send, so the stream does not bring it; the claim after the send used to fail
    // as a whole (a `ZfsError` NotFound and `Ready=False` until the next run). Called as
    // the controller does: its token, the current epoch, the target agent's pinned TLS.
    let probe = format!("{pool_b}/replicas/claims");
    sh(vm, &["zfs", "create", &probe]).await;
    let present = format!("{probe}@present");
    sh(vm, &["zfs", "snapshot", &present]).await;
    let snapshot_ref = |name: &str, guid: u64| SnapshotRef {
        snapshot: name.parse().unwrap_or_else(|e| panic!("{name}: {e}")),
        guid,
    };
    let present_guid: u64 = prop(vm, &present, "guid")
        .await
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let raw_owner = format!("ReplicationPolicy/{ns}/raw");
    let claim = Bookkeeping {
        owner: raw_owner.parse::<Owner>().unwrap_or_else(|e| panic!("{e}")),
        actions: vec![BookkeepingAction::Claim {
            snapshots: vec![
                snapshot_ref(&format!("{probe}@pruned-before-the-send"), 1),
                snapshot_ref(&present, present_guid),
            ],
        }],
    };
    let answer = controller_client(cp, &spec_b.node)
        .await
        .call(
            &std::fs::read_to_string(&pair.replica.agent_token).unwrap_or_else(|e| panic!("{e}")),
            current_epoch(cp, &ns, &release.lease_name()).await,
            claim,
        )
        .await
        .unwrap_or_else(|e| panic!("the claim call: {e:?}"));
    assert!(
        matches!(answer, Response::Bookkept(Bookkept { actions: 1 })),
        "a claim naming a missing snapshot: {answer:?}"
    );
    assert_eq!(prop(vm, &present, "tidepool.dev:owner").await, raw_owner);
    assert_eq!(
        prop_source(vm, &present, "tidepool.dev:owner").await,
        "local"
    );

    print_events(cp, &ns, "raw").await;
    print_events(cp, &ns, "plain").await;
    eprintln!("scenario done after {:?}", started.elapsed());
}
