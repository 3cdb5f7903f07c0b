//! A ReplicationPolicy's transfer cut and resumed, driven by the controller: the real
//! kube-apiserver with the chart's RBAC, two agents in the OpenZFS VM (node a holds the
//! source, node b the replica), one controller replica on the host.
//!
//! 1. A full send limited to 2 MiB/s is cut part way by killing the source agent. The
//!    target keeps the partial receive (`receive -s`); when the source agent is back, the
//!    next run resumes from the target's token (`zfs send -t`): the replica gets the
//!    source's GUID, no token is left, and the bytes the target received in all exceed one
//!    whole stream by less than 10 %.
//! 2. A stale token: an incremental is cut the same way, and then its snapshot is released
//!    and destroyed on the source by hand, so the token names a snapshot that no longer
//!    exists. The next run's resume fails, the one after aborts the partial receive
//!    (`receive -A`, received snapshots kept) and sends afresh: the replica catches up to
//!    a newer snapshot with no operator action and no token left.

use std::time::Duration;

use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tidepool_api::ReplicationPolicy;
use tidepool_api::condition::kind;
use tidepool_tests::agents::GuestAgent;
use tidepool_tests::release::*;
use tidepool_tests::replicas::*;
use tidepool_tests::zfs_vm::ZfsVm;
use tokio::time::Instant;

const POLICY: &str = "cut";

/// Stream bytes the target agent has written into `zfs receive`, all finished transfers
/// together (the counter moves when a transfer ends, cut or not).
async fn received(agent: &GuestAgent) -> u64 {
    ok(agent
        .metric_sum("tidepool_agent_transfer_bytes_total", "side=\"target\"")
        .await) as u64
}

/// The pool's allocated bytes: a receive under way shows here as its transaction groups
/// sync (every few seconds).
async fn allocated(vm: &ZfsVm, pool: &str) -> u64 {
    sh(
        vm,
        &["zpool", "get", "-Hp", "-o", "value", "allocated", pool],
    )
    .await
    .trim()
    .parse()
    .unwrap_or_else(|e| panic!("allocated of {pool}: {e}"))
}

/// The size `zfs send -nP` gives for a stream.
async fn stream_size(vm: &ZfsVm, args: &[&str]) -> u64 {
    let mut argv = vec!["zfs", "send", "-nP"];
    argv.extend_from_slice(args);
    let out = sh(vm, &argv).await;
    out.lines()
        .find_map(|l| l.strip_prefix("size\t"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no size in `zfs send -nP`: {out}"))
}

/// Waits until the target pool has grown by `bytes` since `from`, then kills the source
/// agent: the cut, part way through a transfer.
async fn cut_at(vm: &ZfsVm, pool: &str, source: &mut GuestAgent, from: u64, bytes: u64) {
    let end = Instant::now() + WITHIN;
    while allocated(vm, pool).await < from + bytes {
        assert!(
            Instant::now() < end,
            "the transfer never reached {bytes} bytes; source log:\n{}",
            source.log_tail(vm).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ok(source.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_transfer_resumes_from_the_token_and_a_stale_token_is_cleared() {
    let started = Instant::now();
    let release = Release::install("resume").await;
    let cp = release.cp;
    let vm = ok(ZfsVm::shared().await);
    let ns = release.ns.clone();
    let mut pair = Pair::start(&release, vm, "c").await;
    let (pool_a, pool_b) = (pair.pool_a.clone(), pair.pool_b.clone());
    let (spec_a, spec_b) = (pair.spec_a.clone(), pair.spec_b.clone());
    let source = format!("{pool_a}/data/db");
    let target = format!("{pool_b}/replicas/db");
    sh(vm, &["zfs", "create", &source]).await;
    let write = |file: &str, mib: u32| {
        let path = format!("/{source}/{file}");
        async move { write_random(vm, &path, mib).await }
    };
    write("one", 40).await;
    sh(vm, &["zfs", "snapshot", &format!("{source}@s1")]).await;
    eprintln!("agents and controller up after {:?}", started.elapsed());

    // --- 1. A full stream cut at about half, then resumed.
    let full = stream_size(vm, &[&format!("{source}@s1")]).await;
    let before = received(&pair.agent_b).await;
    let pool_b_before = allocated(vm, &pool_b).await;
    let policies: Api<ReplicationPolicy> = Api::namespaced(cp.admin_client(), &ns);
    let policy: ReplicationPolicy = serde_json::from_value(json!({
        "apiVersion": "tidepool.dev/v1alpha1", "kind": "ReplicationPolicy",
        "metadata": {"name": POLICY, "namespace": ns},
        "spec": {
            "source": {"nodeName": spec_a.node, "dataset": source},
            "target": {"node": {"nodeName": spec_b.node, "dataset": target}},
            "send": {"bandwidthLimit": "2Mi"},
        },
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap_or_else(|e| panic!("creating the policy: {e}"));
    cut_at(vm, &pool_b, &mut pair.agent_a, pool_b_before, full / 3).await;
    let token = wait_for(
        &policies,
        POLICY,
        "a resume token on the target",
        || async {
            let t = prop(vm, &target, "receive_resume_token").await;
            (t != "-" && !t.is_empty()).then_some(t)
        },
    )
    .await;
    eprintln!(
        "cut after {:?}: {} of {full} bytes received, token {}...",
        started.elapsed(),
        received(&pair.agent_b).await - before,
        &token[..token.len().min(24)]
    );
    ok(pair.agent_a.restart(vm, cp, &spec_a).await);
    let source_guid = prop(vm, &format!("{source}@s1"), "guid").await;
    wait_for(&policies, POLICY, "s1 resumed onto the target", || async {
        let s = status(&policies, POLICY).await;
        let on_target = guids(vm, &target).await;
        (condition(&s, kind::READY).map(|c| c.0) == Some("True".into())
            && on_target.contains(&("s1".to_owned(), source_guid.clone())))
        .then_some(())
    })
    .await;
    assert_eq!(prop(vm, &target, "receive_resume_token").await, "-");
    let total = received(&pair.agent_b).await - before;
    let resent = total.saturating_sub(full);
    eprintln!(
        "resumed after {:?}: {total} bytes received for a {full}-byte stream ({:.2} % re-sent)",
        started.elapsed(),
        resent as f64 * 100.0 / full as f64
    );
    assert!(
        resent * 10 < full,
        "the resume re-sent {resent} of {full} bytes (goal < 10 %)"
    );

    // --- 2. A stale token: cut an incremental, then destroy its snapshot on the source.
    write("two", 24).await;
    sh(vm, &["zfs", "snapshot", &format!("{source}@s2")]).await;
    let incremental = stream_size(vm, &["-i", "@s1", &format!("{source}@s2")]).await;
    let pool_b_before = allocated(vm, &pool_b).await;
    cut_at(
        vm,
        &pool_b,
        &mut pair.agent_a,
        pool_b_before,
        incremental / 4,
    )
    .await;
    wait_for(&policies, POLICY, "a resume token for s2", || async {
        let t = prop(vm, &target, "receive_resume_token").await;
        (t != "-" && !t.is_empty()).then_some(())
    })
    .await;
    // The policy held s2 before sending it; someone releases and destroys it anyway.
    let s2 = format!("{source}@s2");
    for tag in hold_tags(vm, &s2).await {
        sh(vm, &["zfs", "release", &tag, &s2]).await;
    }
    sh(vm, &["zfs", "destroy", &s2]).await;
    write("three", 2).await;
    sh(vm, &["zfs", "snapshot", &format!("{source}@s3")]).await;
    ok(pair.agent_a.restart(vm, cp, &spec_a).await);
    let s3_guid = prop(vm, &format!("{source}@s3"), "guid").await;
    wait_for(
        &policies,
        POLICY,
        "s3 sent afresh after the stale token",
        || async {
            let s = status(&policies, POLICY).await;
            let on_target = guids(vm, &target).await;
            (condition(&s, kind::READY).map(|c| c.0) == Some("True".into())
                && on_target.contains(&("s3".to_owned(), s3_guid.clone())))
            .then_some(())
        },
    )
    .await;
    assert_eq!(prop(vm, &target, "receive_resume_token").await, "-");
    let on_target = guids(vm, &target).await;
    assert!(
        on_target
            .iter()
            .any(|(s, g)| s == "s1" && *g == source_guid),
        "the abort kept the received s1: {on_target:?}"
    );
    assert!(!on_target.iter().any(|(s, _)| s == "s2"), "{on_target:?}");
    assert!(!status(&policies, POLICY).await.resume_token_present);
    eprintln!("stale token cleared after {:?}", started.elapsed());
}
