//! A ReplicationPolicy with an `ssh` target, end to end: the real kube-apiserver with the
//! chart's RBAC, one `tidepool agent` (the source node) and a far host in the OpenZFS VM
//! (Debian's sshd, a login that is not root with `zfs allow` delegations only, its key
//! forced to `tidepool ssh-gate`), one controller with the chart's identity.
//!
//! 1. A chain: a full send, then `-I` incrementals, GUIDs equal, the replica unmounted,
//!    claimed and held on the far side, target retention there over the policy's own
//!    snapshots only.
//! 2. A connection cut mid-transfer: the far side keeps a resume token, the next sync
//!    resumes from it and sends only the rest.
//! 3. A host key that is not the one in the Secret's `known_hosts`: refused, with a
//!    `HostKeyMismatch` condition, nothing received.
//! 4. Shell injection: a dataset name that would be shell syntax is refused at admission;
//!    the gate refuses command lines Tidepool does not make, flags that destroy, and
//!    datasets outside its root.
//! 5. `tidepool restore --from-ssh` pulls a snapshot back into a new dataset (GUID and
//!    file checksums equal), and refuses an existing one.
//! 6. Deleting the policy releases its holds on the far host.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use tidepool_api::ReplicationPolicy;
use tidepool_api::condition::kind;
use tidepool_reconciler::PinnedAgents;
use tidepool_tests::far_host::FarHost;
use tidepool_tests::guest_peers::GuestPeers;
use tidepool_tests::release::*;
use tidepool_tests::replicas::*;
use tidepool_tests::zfs_vm::ZfsVm;
use tokio::time::Instant;

/// sshd's port in the guest (free: agents use 7100 and up).
const SSH_PORT: u16 = 2222;

async fn secret(api: &Api<Secret>, name: &str, key: &str, known_hosts: &str) {
    let mut s = Secret::default();
    s.metadata.name = Some(name.to_owned());
    s.type_ = Some("kubernetes.io/ssh-auth".to_owned());
    s.data = Some(
        [("ssh-privatekey", key), ("known_hosts", known_hosts)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect(),
    );
    api.create(&PostParams::default(), &s)
        .await
        .unwrap_or_else(|e| panic!("creating Secret {name}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_target_chain_resume_host_key_gate_and_release() {
    let started = Instant::now();
    let release = Release::install("rssh").await;
    let cp = release.cp;
    let vm = ok(ZfsVm::shared().await);
    let ns = release.ns.clone();
    let pool_a = vm.unique_pool_name("sa");
    let far_pool = vm.unique_pool_name("far");
    ok(vm.create_pool(&pool_a, 512 << 20).await);
    ok(vm.create_pool(&far_pool, 512 << 20).await);
    let root_a = format!("{pool_a}/data");
    sh(vm, &["zfs", "create", &root_a]).await;
    let spec_a = release.agent_spec("src", &[&pool_a], &[&root_a], 0);
    let _agent_a = release.start_agent(vm, &spec_a).await;
    release
        .grant(&format!("{ns}-grant"), &[&ns], &[&root_a])
        .await;
    let replica = release.replica("controller-0").await;
    let agents = GuestPeers::new(
        vm,
        PinnedAgents::new(replica.agent_token.clone(), AGENT_CALL_TIMEOUT),
    );
    let _controller = release
        .start_with(&replica, Some(ns.clone()), agents as _)
        .await;
    let far = ok(FarHost::start(vm, &far_pool, "tpfar", SSH_PORT).await);
    let app = format!("{root_a}/app");
    sh(vm, &["zfs", "create", &app]).await;
    write_random(vm, &format!("/{app}/f"), 2).await;
    let target = format!("{}/app", far.root);
    eprintln!(
        "agent, controller and far host up after {:?}",
        started.elapsed()
    );

    // --- 1. A chain to the far host.
    let secrets: Api<Secret> = Api::namespaced(cp.admin_client(), &ns);
    secret(&secrets, "far-login", &far.private_key, &far.known_hosts).await;
    let policies: Api<ReplicationPolicy> = Api::namespaced(cp.admin_client(), &ns);
    sh(vm, &["zfs", "snapshot", &format!("{app}@s1")]).await;
    create_policy(
        &policies,
        "app",
        json!({
            "source": {"nodeName": spec_a.node, "dataset": app},
            "target": {"ssh": {"host": "127.0.0.1", "port": SSH_PORT, "user": far.user,
                               "dataset": target, "secretRef": {"name": "far-login"}}},
            "retention": {"keepLast": 2},
        }),
    )
    .await;
    let same = |n: usize| {
        let (app, target) = (app.clone(), target.clone());
        async move {
            let (src, dst) = (guids(vm, &app).await, guids(vm, &target).await);
            (dst.len() >= n.min(2) && src.iter().rev().take(n.min(2)).all(|s| dst.contains(s)))
                .then_some(dst)
        }
    };
    let first = wait_for(&policies, "app", "s1 on the far host", || same(1)).await;
    eprintln!(
        "full send to the far host after {:?}: {first:?}",
        started.elapsed()
    );
    let replica_guid = prop(vm, &target, "guid").await;
    for s in ["s2", "s3"] {
        write_random(vm, &format!("/{app}/{s}"), 1).await;
        sh(vm, &["zfs", "snapshot", &format!("{app}@{s}")]).await;
    }
    trigger(&policies, "app", "chain").await;
    // Retention runs once the replica is up to date: s1 (the policy's own) goes.
    let chain = wait_for(
        &policies,
        "app",
        "s2 and s3 on the far host, s1 pruned",
        || async {
            let dst = same(3).await?;
            let shorts: Vec<&str> = dst.iter().map(|(s, _)| s.as_str()).collect();
            (shorts == ["s2", "s3"]).then_some(dst)
        },
    )
    .await;
    eprintln!("incrementals and retention on the far host: {chain:?}");
    assert_eq!(
        prop(vm, &target, "guid").await,
        replica_guid,
        "the incrementals landed in the same replica dataset"
    );
    assert_eq!(prop(vm, &target, "mounted").await, "no");
    let owner = format!("ReplicationPolicy/{ns}/app");
    assert_eq!(owned(vm, &target, &owner).await, ["s2", "s3"]);
    let held = hold_tags(vm, &format!("{target}@s3")).await;
    assert!(
        held.iter().any(|t| t.starts_with("tidepool:")),
        "the common snapshot is held on the far host: {held:?}"
    );
    let s = status(&policies, "app").await;
    assert_eq!(condition(&s, kind::READY).map(|c| c.0), Some("True".into()));
    assert_eq!(s.last_common_snapshot.as_deref(), Some("s3"));
    eprintln!("chain of incrementals after {:?}", started.elapsed());

    // --- 2. A cut connection, resumed from the far side's token.
    write_random(vm, &format!("/{app}/big"), 12).await;
    sh(vm, &["zfs", "snapshot", &format!("{app}@s4")]).await;
    policies
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"send": {"bandwidthLimit": "1Mi"},
                                          "trigger": {"manual": "big"}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (done_at_cut, total) = wait_for(&policies, "app", "a third of s4 sent", || async {
        let p = status(&policies, "app").await.progress?;
        let total = p.bytes_total?;
        (p.bytes_done * 3 > total).then_some((p.bytes_done, total))
    })
    .await;
    // The agent's ssh client dies: the far side's receive sees its stream end early.
    sh(vm, &["pkill", "-x", "ssh"]).await;
    let token = wait_for(
        &policies,
        "app",
        "a resume token on the far host",
        || async {
            let t = prop(vm, &target, "receive_resume_token").await;
            (t != "-").then_some(t)
        },
    )
    .await;
    eprintln!(
        "cut at {done_at_cut} of {total} bytes; token {}...",
        &token[..token.len().min(24)]
    );
    policies
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"send": {"bandwidthLimit": null}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for(&policies, "app", "s4 on the far host", || same(4)).await;
    let resumed = wait_for(
        &policies,
        "app",
        "a clean sync after the resume",
        || async {
            let s = status(&policies, "app").await;
            (condition(&s, kind::READY).map(|c| c.0).as_deref() == Some("True"))
                .then_some(s.last_sync_bytes.unwrap_or(0))
        },
    )
    .await;
    // `done_at_cut` is what `zfs send` had produced, some of it still in pipes when the
    // connection broke: the resumed part may be a little more than the rest.
    let resent = (done_at_cut + resumed) as f64 / total as f64 - 1.0;
    eprintln!(
        "resumed: {resumed} bytes ({:.1} % of the stream) after the cut at {done_at_cut} of \
         {total} ({:.1} %): {:.2} % sent twice",
        resumed as f64 * 100.0 / total as f64,
        done_at_cut as f64 * 100.0 / total as f64,
        resent.max(0.0) * 100.0
    );
    assert!(
        resumed < total,
        "the sync after the cut resumed, not a full re-send"
    );
    assert!(
        resent < 0.10,
        "re-sent {:.2} % (goal < 10 %)",
        resent * 100.0
    );
    assert_eq!(prop(vm, &target, "receive_resume_token").await, "-");

    // --- 3. A host key that is not the one the Secret names.
    secret(
        &secrets,
        "far-wrong",
        &far.private_key,
        &far.wrong_known_hosts,
    )
    .await;
    let other = format!("{}/other", far.root);
    create_policy(
        &policies,
        "wrongkey",
        json!({
            "source": {"nodeName": spec_a.node, "dataset": app},
            "target": {"ssh": {"host": "127.0.0.1", "port": SSH_PORT, "user": far.user,
                               "dataset": other, "secretRef": {"name": "far-wrong"}}},
        }),
    )
    .await;
    let refused = wait_for(&policies, "wrongkey", "HostKeyMismatch", || async {
        let s = status(&policies, "wrongkey").await;
        condition(&s, kind::READY)
            .filter(|(st, reason)| st == "False" && reason == "HostKeyMismatch")?;
        s.last_error.map(|e| e.message)
    })
    .await;
    eprintln!("wrong host key: {refused}");
    assert!(!exists(vm, &other).await, "nothing received for wrongkey");

    // --- 4. Shell injection.
    let raw: Api<DynamicObject> = Api::namespaced_with(
        cp.admin_client(),
        &ns,
        &ApiResource::erase::<ReplicationPolicy>(&()),
    );
    for bad in [
        format!("{}/x;reboot", far.root),
        format!("{}/$(reboot)", far.root),
    ] {
        // Sent as plain JSON: the typed client would refuse the name before the API does.
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "tidepool.dev/v1alpha1", "kind": "ReplicationPolicy",
            "metadata": {"name": "inject", "namespace": ns},
            "spec": {
                "source": {"nodeName": spec_a.node, "dataset": app},
                "target": {"ssh": {"host": "127.0.0.1", "port": SSH_PORT, "user": far.user,
                                   "dataset": bad, "secretRef": {"name": "far-login"}}},
            },
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let e = raw
            .create(&PostParams::default(), &obj)
            .await
            .expect_err("a dataset name with shell syntax is refused at admission");
        assert!(e.to_string().contains("dataset"), "{e}");
        eprintln!(
            "admission refused {bad:?}: {}",
            e.to_string().chars().take(200).collect::<String>()
        );
    }
    let before = guids(vm, &target).await;
    for (remote, why) in [
        ("zfs list; reboot".to_owned(), "not a quoted command line"),
        (format!("'zfs' 'destroy' '-r' '{target}@s3'"), "destroy -r"),
        (
            format!("'zfs' 'destroy' '{target}'"),
            "destroying a dataset",
        ),
        (
            format!("'zfs' 'receive' '-F' '-u' '{target}'"),
            "receive -F",
        ),
        (
            format!("'zfs' 'list' '-H' '{far_pool}'"),
            "outside the root",
        ),
        ("'sh' '-c' 'id'".to_owned(), "not zfs"),
    ] {
        let out = ok(far.ssh(vm, &remote).await);
        assert!(
            !out.status.success() && out.stderr_lossy().contains("refused"),
            "the gate let through {why}: {remote} → {} {}",
            out.stdout_lossy(),
            out.stderr_lossy()
        );
    }
    let listed = ok(far
        .ssh(vm, &format!("'zfs' 'list' '-H' '-o' 'name' '{target}'"))
        .await);
    assert_eq!(
        listed.stdout_lossy().trim(),
        target,
        "{}",
        listed.stderr_lossy()
    );
    assert_eq!(
        guids(vm, &target).await,
        before,
        "nothing destroyed by the attempts"
    );

    // --- 5. A restore pulls s4 back from the far host into a new dataset, through the
    // gate, and never into one that exists.
    let restored = format!("{root_a}/restored");
    let restore = |to: String| {
        let (dir, snapshot) = (far.dir.clone(), format!("{target}@s4"));
        let from = format!("{}@127.0.0.1:{SSH_PORT}", far.user);
        async move {
            ok(vm
                .exec([
                    "/usr/local/bin/tidepool",
                    "restore",
                    "--from-ssh",
                    &from,
                    "--key",
                    &format!("{dir}/client"),
                    "--known-hosts",
                    &format!("{dir}/known_hosts"),
                    "--snapshot",
                    &snapshot,
                    "--to",
                    &to,
                ])
                .await)
        }
    };
    let out = restore(restored.clone()).await;
    assert!(out.status.success(), "restore: {}", out.stderr_lossy());
    eprintln!("{}", out.stdout_lossy().trim());
    assert_eq!(
        prop(vm, &format!("{restored}@s4"), "guid").await,
        prop(vm, &format!("{app}@s4"), "guid").await
    );
    sh(vm, &["zfs", "mount", &restored]).await;
    let sums = |dir: String| async move {
        sh(
            vm,
            &["sha256sum", &format!("/{dir}/f"), &format!("/{dir}/big")],
        )
        .await
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
        .collect::<Vec<_>>()
    };
    assert_eq!(sums(restored.clone()).await, sums(app.clone()).await);
    let again = restore(restored.clone()).await;
    assert!(
        !again.status.success() && again.stderr_lossy().contains("new dataset only"),
        "a restore over an existing dataset: {}",
        again.stderr_lossy()
    );

    // --- 6. Deleting the policy lets go of its holds on the far host.
    for name in ["app", "wrongkey"] {
        policies
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let end = Instant::now() + WITHIN;
    while policies.get_opt("app").await.ok().flatten().is_some() {
        assert!(
            Instant::now() < end,
            "the policy's finalizer was not removed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (short, _) in guids(vm, &target).await {
        let tags = hold_tags(vm, &format!("{target}@{short}")).await;
        assert!(
            !tags.iter().any(|t| t.starts_with("tidepool:")),
            "{short} still held: {tags:?}"
        );
    }
    assert_eq!(
        guids(vm, &target).await,
        before,
        "Retain keeps the replica's snapshots"
    );
    eprintln!("done after {:?}", started.elapsed());
}
