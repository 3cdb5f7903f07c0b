//! ReplicationPolicy across two kernels: two OpenZFS VMs (each with a pool called `tank`,
//! as two real nodes would have), the source agent in VM A, the target agent in VM B, one
//! `tidepool controller` on the host. Controller and agents run with the chart's RBAC
//! (Pod-bound tokens of its ServiceAccounts), the real pinned-TLS transport and the ticket
//! broker; the admin only plays the user and reads.
//!
//! The stream crosses a real network hop: the source agent in guest A connects to the
//! target agent in guest B through the host (guest A's `10.0.2.2:<B's forwarded port>`,
//! qemu user networking: A's kernel, the host's TCP stack, B's kernel), routed by
//! [`GuestPeers::across`]; a preflight checks that this path is open before anything else.
//!
//! Asserted from fresh `zfs` reads in each guest and from the API: a SnapshotSchedule on
//! node A takes snapshots every few seconds and a policy with `scheduleName` and
//! `intermediates` replicates the chain into VM B: at least three schedule snapshots arrive
//! one incremental after the other (the first keeps its GUID: no re-seed), a manual source
//! snapshot between two of them arrives as an intermediate (`-I`), every snapshot on both
//! sides has the same GUID, `Ready=True` with `lastCommonSnapshot`, the replica is
//! unmounted, the common snapshot is held on both sides with the policy's tag and
//! bookmarked on the source. Then new data on A: the next sync is an incremental (a few
//! MiB, not the full stream), the new common snapshot has the same GUID on both sides and
//! is held there, the superseded holds are released.

use std::collections::BTreeMap;

use kube::Api;
use serde_json::json;
use tidepool_api::ReplicationPolicy;
use tidepool_api::condition::kind;
use tidepool_reconciler::PinnedAgents;
use tidepool_tests::guest_peers::GuestPeers;
use tidepool_tests::release::*;
use tidepool_tests::replicas::*;
use tidepool_tests::zfs_vm::ZfsVm;
use tokio::time::Instant;

const POOL: &str = "tank";
const SOURCE: &str = "tank/data/db";
const TARGET: &str = "tank/replicas/db";

/// Checks from inside `from` that `to`'s forwarded agent port answers at
/// `10.0.2.2:<host port>`: the path the stream takes from one VM to the other.
async fn preflight_cross_vm_path(from: &ZfsVm, to: &ZfsVm, guest_port: u16) {
    let host_port = to
        .forwarded_port(guest_port)
        .unwrap_or_else(|| panic!("guest port {guest_port} is not forwarded"));
    let addr = format!("/dev/tcp/{}/{host_port}", ZfsVm::HOST_FROM_GUEST);
    let out = ok(from
        .exec([
            "timeout",
            "20",
            "bash",
            "-c",
            "exec 3<>\"$1\"",
            "probe",
            &addr,
        ])
        .await);
    assert!(
        out.status.success(),
        "VM A cannot open a TCP connection to VM B's agent at {}:{host_port} (qemu user \
         networking: the host's loopback as the guest sees it): {}",
        ZfsVm::HOST_FROM_GUEST,
        out.stderr_lossy()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_incrementals_replicates_from_one_vm_to_another() {
    let started = Instant::now();
    let release = Release::install("r2vm").await;
    let cp = release.cp;
    let ns = release.ns.clone();

    // Two kernels, so both nodes have a pool called `tank`.
    let (vm_a, vm_b) = tokio::join!(ZfsVm::boot(), ZfsVm::boot());
    let (vm_a, vm_b) = (ok(vm_a), ok(vm_b));
    eprintln!(
        "two VMs booted in {:.1?} / {:.1?} (after {:?})",
        vm_a.boot_time(),
        vm_b.boot_time(),
        started.elapsed()
    );
    let (a, b) = tokio::join!(
        vm_a.create_pool(POOL, 512 << 20),
        vm_b.create_pool(POOL, 512 << 20)
    );
    ok(a);
    ok(b);
    sh(&vm_a, &["zfs", "create", "-p", SOURCE]).await;
    sh(&vm_b, &["zfs", "create", "-p", "tank/replicas"]).await;
    write_random(&vm_a, &format!("/{SOURCE}/one"), 4).await;

    let spec_a = release.agent_spec("a", &[POOL], &["tank/data"], 0);
    let spec_b = release.agent_spec("b", &[POOL], &["tank/replicas"], 0);
    let (agent_a, agent_b) = tokio::join!(
        release.start_agent(&vm_a, &spec_a),
        release.start_agent(&vm_b, &spec_b)
    );
    preflight_cross_vm_path(&vm_a, &vm_b, spec_b.api_port).await;
    release
        .grant(
            &format!("{ns}-grant"),
            &[&ns],
            &["tank/data", "tank/replicas"],
        )
        .await;
    let replica = release.replica("controller-0").await;
    let agents = GuestPeers::across(
        &[&vm_a, &vm_b],
        PinnedAgents::new(replica.agent_token.clone(), AGENT_CALL_TIMEOUT),
    );
    let controller = release
        .start_with(&replica, Some(ns.clone()), agents as _)
        .await;
    eprintln!("agents and controller up after {:?}", started.elapsed());

    let policies: Api<ReplicationPolicy> = Api::namespaced(cp.admin_client(), &ns);
    create_schedule(
        cp,
        &ns,
        "db",
        json!({
            "nodeName": spec_a.node,
            "datasets": [{"name": SOURCE}],
            "schedule": {"interval": "5s"},
            "retention": {"keepLast": 4},
        }),
    )
    .await;
    let schedule_owner = format!("SnapshotSchedule/{ns}/db");
    let policy_owner = format!("ReplicationPolicy/{ns}/db-to-b");
    // A first schedule snapshot, then one taken by hand before the policy exists.
    wait_owned_snapshot(&vm_a, SOURCE, &schedule_owner).await;
    write_random(&vm_a, &format!("/{SOURCE}/two"), 1).await;
    sh(&vm_a, &["zfs", "snapshot", &format!("{SOURCE}@manual1")]).await;
    write_random(&vm_a, &format!("/{SOURCE}/three"), 1).await;

    create_policy(
        &policies,
        "db-to-b",
        json!({
            "source": {"nodeName": spec_a.node, "dataset": SOURCE,
                       "snapshots": {"scheduleName": "db", "intermediates": true}},
            "target": {"node": {"nodeName": spec_b.node, "dataset": TARGET}},
            "onDivergence": "Fail",
        }),
    )
    .await;

    // The first arrival: the seed (and with it its GUID, which an incremental keeps).
    let first = wait_for(&policies, "db-to-b", "a first snapshot on B", || async {
        guids(&vm_b, TARGET).await.into_iter().next()
    })
    .await;
    eprintln!("seeded with {} after {:?}", first.0, started.elapsed());
    // The chain: at least three schedule snapshots on B, one of them after manual1.
    let synced = wait_for(
        &policies,
        "db-to-b",
        "three schedule snapshots on B, past manual1",
        || async {
            let on_b = guids(&vm_b, TARGET).await;
            let tidepool = on_b
                .iter()
                .filter(|(s, _)| s.starts_with("tidepool_"))
                .count();
            let past_manual = on_b
                .iter()
                .skip_while(|(s, _)| s != "manual1")
                .any(|(s, _)| s.starts_with("tidepool_"));
            (tidepool >= 3 && past_manual).then_some(on_b)
        },
    )
    .await;
    eprintln!(
        "chain on B after {:?}: {:?}",
        started.elapsed(),
        synced.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    assert!(
        synced.contains(&first),
        "the replica was re-seeded: its first snapshot {first:?} is gone from {synced:?}"
    );
    assert!(
        synced.iter().any(|(s, _)| s == "manual1"),
        "the manual snapshot between two selected ones arrived as an intermediate: {synced:?}"
    );
    assert_eq!(
        prop_source(&vm_b, &format!("{TARGET}@manual1"), "tidepool.dev:owner").await,
        "-",
        "an intermediate the selection did not pick is not claimed"
    );
    for short in owned(&vm_b, TARGET, &policy_owner).await {
        assert!(short.starts_with("tidepool_"), "{short} claimed on B");
    }

    // Up to date and protected.
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
    // triggers a sync that moves the common snapshot on between separate reads.
    let common = wait_for(
        &policies,
        "db-to-b",
        "the common snapshot held on both sides and bookmarked on the source",
        || async {
            let c = status(&policies, "db-to-b").await.last_common_snapshot?;
            let src = hold_tags(&vm_a, &format!("{SOURCE}@{c}")).await;
            let dst = hold_tags(&vm_b, &format!("{TARGET}@{c}")).await;
            let marked = bookmarks(&vm_a, SOURCE)
                .await
                .iter()
                .any(|b| b.starts_with(&format!("{SOURCE}#{c}_tp")));
            (src.contains(&tag) && dst.contains(&tag) && marked).then_some(c)
        },
    )
    .await;

    // GUIDs, read fresh in each guest: every snapshot both sides hold is the same one, and
    // the held common snapshot is among them.
    let on_a: BTreeMap<String, String> = guids(&vm_a, SOURCE).await.into_iter().collect();
    let on_b: BTreeMap<String, String> = guids(&vm_b, TARGET).await.into_iter().collect();
    let both: Vec<&String> = on_b.keys().filter(|s| on_a.contains_key(*s)).collect();
    assert!(
        both.contains(&&common),
        "the common snapshot {common} is on both sides: A {on_a:?}, B {on_b:?}"
    );
    assert!(both.len() >= 2, "A {on_a:?}, B {on_b:?}");
    for short in &both {
        assert_eq!(
            on_a[*short], on_b[*short],
            "{short}: the replica's GUID differs from the source's"
        );
    }
    assert_eq!(
        prop(&vm_b, TARGET, "mounted").await,
        "no",
        "received unmounted"
    );
    // Two kernels, two pools of one name: the replica lives only on B's.
    let pool_guid = |vm: &ZfsVm| {
        let vm = vm.remote();
        async move {
            ok(vm
                .command(["zpool", "get", "-H", "-o", "value", "guid", POOL])
                .output_ok()
                .await)
            .trim()
            .to_owned()
        }
    };
    let (ga, gb) = tokio::join!(pool_guid(&vm_a), pool_guid(&vm_b));
    assert_ne!(ga, gb, "the two `tank`s are one pool");
    assert!(!exists(&vm_a, TARGET).await, "the replica is not on A");
    eprintln!(
        "verified after {:?}: {} snapshots in common, common {common}, last sync {} bytes in {:?}",
        started.elapsed(),
        both.len(),
        st.last_sync_bytes.unwrap_or(0),
        st.last_sync_duration
    );

    // --- The next incremental carries new data over the hop: a new common snapshot,
    // the old one's holds released, far fewer bytes than a full stream (8 MiB of random
    // data by then).
    write_random(&vm_a, &format!("/{SOURCE}/four"), 2).await;
    let written_at = jiff::Timestamp::now();
    let (next, bytes) = wait_for(&policies, "db-to-b", "a sync of the new data", || async {
        let s = status(&policies, "db-to-b").await;
        let c = s.last_common_snapshot.clone()?;
        let taken = tidepool_tests::snapshots::slot_time(&c, "db");
        (condition(&s, kind::READY).map(|c| c.0) == Some("True".into()) && taken > written_at)
            .then_some((c, s.last_sync_bytes.unwrap_or(0)))
    })
    .await;
    let on_a: BTreeMap<String, String> = guids(&vm_a, SOURCE).await.into_iter().collect();
    let on_b: BTreeMap<String, String> = guids(&vm_b, TARGET).await.into_iter().collect();
    assert_eq!(on_a.get(&next), on_b.get(&next), "{next}: GUIDs");
    assert!(on_b.contains_key(&next), "{next} is on B: {on_b:?}");
    assert_eq!(
        on_b.get(&first.0),
        Some(&first.1),
        "the replica was re-seeded"
    );
    assert!(
        bytes < 4 << 20,
        "the sync of 2 MiB of new data sent {bytes} bytes: not an incremental"
    );
    for (vm, dataset) in [(&vm_a, SOURCE), (&vm_b, TARGET)] {
        let old = hold_tags(vm, &format!("{dataset}@{common}")).await;
        assert!(
            !old.contains(&tag),
            "{dataset}@{common}: the superseded hold is still there"
        );
    }
    wait_for(
        &policies,
        "db-to-b",
        "the new common held on both sides",
        || async {
            let src = hold_tags(&vm_a, &format!("{SOURCE}@{next}")).await;
            let dst = hold_tags(&vm_b, &format!("{TARGET}@{next}")).await;
            (src.contains(&tag) && dst.contains(&tag)).then_some(())
        },
    )
    .await;
    eprintln!(
        "incremental over the hop after {:?}: common {next}, {bytes} bytes",
        started.elapsed()
    );

    print_events(cp, &ns, "db-to-b").await;
    controller.abort();
    drop((agent_a, agent_b));
}
