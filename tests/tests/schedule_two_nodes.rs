//! One schedule over two nodes, and the leader killed mid-run, on real parts: two OpenZFS
//! VMs (one kernel each, so both nodes have a pool of the same name, `tank`, as real nodes
//! would), one `tidepool agent` per VM with the chart's agent ServiceAccount, and two
//! controller replicas (leader and standby) on the host with the chart's controller
//! ServiceAccount and the real pinned-TLS transport. No admin credentials for controller or
//! agents; the admin plays the user (schedule, grant, node labels) and reads.
//!
//! Asserted from fresh `zfs get` listings in each guest (read about every second, so every
//! snapshot is seen before retention prunes it): atomic sets (one createtxg per set and
//! node; recursive and exclude honoured), names `tidepool_<UTC>_<label>`, the owner set
//! locally; per-node counts in status for both nodes. Then the leader's task is aborted
//! right after a take (a crash: no Lease release): the standby takes over within 15 s; no
//! slot is taken twice or off the grid, the slots missed while nobody led are replaced by
//! at most one catch-up, and every slot after it is taken. Last, the stale leader: its own
//! token with the epoch it led under is refused by both agents (409 `StaleEpoch`), and
//! nothing is taken, while the same token with the current epoch is served.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{Seen, Site, covered, lease_holder, prepare, stale_take};
use tidepool_agent::{AgentClient, CallError, CertificateFingerprint, LeaderEpoch, Ping};
use tidepool_api::{SnapshotSchedule, ZfsNode};
use tidepool_reconciler::PinnedAgents;
use tidepool_tests::release::*;
use tidepool_tests::zfs_vm::ZfsVm;
use tokio::time::Instant;

const INTERVAL_SECS: i64 = 3;
const KEEP: usize = 4;
const SCHEDULE: &str = "apps";
const POOL: &str = "tank";
const ROOT: &str = "tank/data";
const NODE_LABEL: &str = "tidepool.dev/zfs";
const TAKEOVER_GOAL: Duration = Duration::from_secs(15);

#[path = "schedule_two_nodes/support.rs"]
mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_schedule_over_two_vms_survives_the_leaders_crash() {
    let started = Instant::now();
    let release = Release::install("two").await;
    let cp = release.cp;
    let ns = release.ns.clone();
    let users = ok(cp.create_namespace("two-users").await);
    let owner = format!("SnapshotSchedule/{users}/{SCHEDULE}");
    eprintln!("control plane and chart after {:?}", started.elapsed());

    // Two kernels, so both nodes have a pool called `tank`.
    let (vm_a, vm_b) = tokio::join!(ZfsVm::boot(), ZfsVm::boot());
    let (vm_a, vm_b) = (ok(vm_a), ok(vm_b));
    eprintln!(
        "two VMs booted in {:.1?} / {:.1?} (after {:?})",
        vm_a.boot_time(),
        vm_b.boot_time(),
        started.elapsed()
    );
    tokio::join!(prepare(&vm_a), prepare(&vm_b));
    let spec_a = release.agent_spec("a", &[POOL], &[ROOT], 0);
    let spec_b = release.agent_spec("b", &[POOL], &[ROOT], 0);
    let (agent_a, agent_b) = tokio::join!(
        release.start_agent(&vm_a, &spec_a),
        release.start_agent(&vm_b, &spec_b)
    );
    let mut sites = [
        Site {
            node: spec_a.node.clone(),
            vm: vm_a,
            agent: Some(agent_a),
        },
        Site {
            node: spec_b.node.clone(),
            vm: vm_b,
            agent: Some(agent_b),
        },
    ];
    eprintln!("agents registered after {:?}", started.elapsed());

    // The admin labels the two nodes; the schedule selects them by that label.
    let nodes: Api<Node> = Api::all(cp.admin_client());
    for s in &sites {
        nodes
            .patch(
                &s.node,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {NODE_LABEL: "true"}}})),
            )
            .await
            .unwrap_or_else(|e| panic!("labelling {}: {e}", s.node));
    }
    release
        .grant(&format!("{ns}-tank"), &[&users], &[ROOT])
        .await;
    create_schedule(
        cp,
        &users,
        SCHEDULE,
        json!({
            "nodeSelector": {NODE_LABEL: "true"},
            "datasets": [
                {"name": format!("{ROOT}/app1"), "recursive": true,
                 "exclude": [format!("{ROOT}/app1/scratch")]},
                {"name": format!("{ROOT}/app2")},
            ],
            "schedule": {"interval": format!("{INTERVAL_SECS}s")},
            "retention": {"keepLast": KEEP},
        }),
    )
    .await;

    // Leader and standby.
    let lease = release.lease_name();
    let replica_a = release.replica("controller-a").await;
    let replica_b = release.replica("controller-b").await;
    // The product's call timeout (`tidepool controller` uses 60 s), not the harness's quick
    // 5 s: a prune on an emulated node can take longer, and a call cut off mid-prune is
    // retried with more to destroy each time.
    let patient = |r: &Replica| PinnedAgents::new(r.agent_token.clone(), AGENT_CALL_TIMEOUT);
    let leader = release
        .start_with(&replica_a, Some(users.clone()), patient(&replica_a))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let epoch_a = loop {
        let (holder, transitions) = lease_holder(cp, &ns, &lease).await;
        if holder.as_deref() == Some("controller-a") {
            break transitions;
        }
        assert!(Instant::now() < deadline, "controller-a did not lead");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let standby = release
        .start_with(&replica_b, Some(users.clone()), patient(&replica_b))
        .await;
    let applied = Instant::now();
    wait_ready(
        cp,
        &users,
        SCHEDULE,
        "True",
        "Reconciled",
        Duration::from_secs(120),
    )
    .await;
    eprintln!("Ready after {:?}", applied.elapsed());

    // Both nodes snapshot on schedule, and retention prunes, seen in zfs and in status.
    let schedules: Api<SnapshotSchedule> = Api::namespaced(cp.admin_client(), &users);
    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        seen.read(&sites, &owner).await;
        let status = schedules
            .get(SCHEDULE)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .status
            .unwrap_or_default();
        let settled = sites.iter().all(|s| {
            seen.count(&s.node) > KEEP + 1
                && status.nodes.iter().any(|n| {
                    n.node == s.node
                        && n.pruned_total > 0
                        && n.last_error.is_none()
                        && n.snapshot_count == i64::try_from(KEEP * covered().len()).unwrap_or(0)
                })
        });
        if settled {
            assert_eq!(status.nodes.len(), 2, "{status:?}");
            eprintln!(
                "both nodes snapshot and prune after {:?}: {:?}",
                applied.elapsed(),
                status
                    .nodes
                    .iter()
                    .map(|n| (&n.node, n.snapshot_count, n.pruned_total))
                    .collect::<Vec<_>>()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the schedule did not settle on both nodes: seen {:?}, status {status:?}",
            sites
                .iter()
                .map(|s| seen.count(&s.node))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Crash the leader right after node a got a new set: mid-run, node b's take of that
    // slot may still be to come.
    let before = seen.count(&sites[0].node);
    while seen.count(&sites[0].node) == before {
        seen.read(&sites[..1], &owner).await;
    }
    leader.abort();
    let crashed = Instant::now();
    let crashed_at = jiff::Timestamp::now();
    eprintln!("leader aborted after {:?}", started.elapsed());

    let (took, epoch_b) = loop {
        let (holder, transitions) = lease_holder(cp, &ns, &lease).await;
        if holder.as_deref() == Some("controller-b") {
            break (crashed.elapsed(), transitions);
        }
        assert!(
            crashed.elapsed() < Duration::from_secs(30),
            "the standby did not take over: the Lease is held by {holder:?}"
        );
        // Nobody leads now, so nothing is taken that a reading could miss.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took_at = jiff::Timestamp::now();
    eprintln!("takeover after {took:.1?} (goal {TAKEOVER_GOAL:?}); epoch {epoch_a} -> {epoch_b}");
    assert!(took <= TAKEOVER_GOAL, "takeover took {took:?}");
    assert_eq!(epoch_b, epoch_a + 1, "one transition");

    // A few slots under the new leader on both nodes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        seen.read(&sites, &owner).await;
        let after = |node: &str| {
            seen.slots(node)
                .iter()
                .filter(|(t, _)| *t > took_at)
                .count()
        };
        if sites.iter().all(|s| after(&s.node) >= 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader does not keep the schedule: {:?}",
            sites.iter().map(|s| after(&s.node)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The slots: on the grid and each once (names are slot times; a name's createtxg never
    // changed, checked at every reading), taken in slot order (nothing back-filled). A
    // controller that is late takes the latest due slot, once: so the cadence is the
    // interval or, when one run over both nodes takes longer (here: TCG VMs, a TLS
    // handshake and a TokenReview per agent call, nodes one after the other), the run's
    // length rounded up to the grid. Across the crash the gap is the takeover plus at most
    // one catch-up: on a node whose take the crash cut off, the old leader's unfinished run
    // (one cadence), the takeover, and the new leader's first run reaching the node (one
    // more). After it the new leader keeps the old one's cadence.
    for s in &sites {
        let slots = seen.slots(&s.node);
        let txgs = seen.txgs_in_slot_order(&s.node);
        assert!(
            txgs.windows(2).all(|w| w[0] < w[1]),
            "{}: slots not taken in order: {txgs:?}",
            s.node
        );
        let first_after = slots
            .iter()
            .find(|(_, seen_at)| *seen_at > crashed)
            .map(|(_, seen_at)| seen_at.duration_since(crashed))
            .unwrap_or_default();
        let gaps: Vec<(i64, jiff::Timestamp, jiff::Timestamp)> = slots
            .windows(2)
            .map(|w| (w[1].0.duration_since(w[0].0).as_secs(), w[0].0, w[1].0))
            .collect();
        let secs: Vec<i64> = gaps.iter().map(|g| g.0).collect();
        assert!(
            secs.iter().all(|g| *g > 0 && g % INTERVAL_SECS == 0),
            "{}: a slot off the {INTERVAL_SECS} s grid or taken twice: {secs:?}",
            s.node
        );
        let crash = gaps
            .iter()
            .position(|(_, t0, t1)| *t0 <= crashed_at && *t1 > crashed_at)
            .unwrap_or_else(|| panic!("{}: no slots on both sides of the crash", s.node));
        let cadence = secs[..crash].iter().copied().max().unwrap_or(INTERVAL_SECS);
        let across = secs[crash];
        let after = secs[crash + 1..].iter().copied().max().unwrap_or(0);
        eprintln!(
            "{}: {} slots, gaps {secs:?} s; cadence before the crash {cadence} s, across it {across} s, after it at most {after} s; first set after the crash seen {first_after:.1?} later",
            s.node,
            slots.len()
        );
        let slack = 2 * INTERVAL_SECS;
        let took_secs = i64::try_from(took.as_secs()).unwrap_or(i64::MAX);
        assert!(
            across <= took_secs + 2 * cadence + slack,
            "{}: {across} s without a slot across a {took:?} takeover at a {cadence} s cadence: more than one catch-up was missed; gaps {secs:?}",
            s.node
        );
        assert!(
            after <= cadence + slack,
            "{}: the new leader misses slots the old one took ({after} s gaps, {cadence} s before); gaps {secs:?}",
            s.node
        );
    }

    // The stale leader: its own agent token with the epoch it led under is refused by both
    // agents and takes nothing; the same token with the current epoch is served (so the
    // refusal is the fence's, not authentication's).
    let token_a = std::fs::read_to_string(&replica_a.agent_token).unwrap_or_else(|e| panic!("{e}"));
    let zfs_nodes: Api<ZfsNode> = Api::all(cp.admin_client());
    let old = LeaderEpoch(u64::try_from(epoch_a).unwrap_or(0));
    let current = LeaderEpoch(u64::try_from(epoch_b).unwrap_or(0));
    for s in &sites {
        let status = zfs_nodes
            .get(&s.node)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .status
            .unwrap_or_default();
        let pin: CertificateFingerprint = status
            .tls_certificate_sha256
            .as_deref()
            .unwrap_or("")
            .parse()
            .unwrap_or_else(|e| panic!("{}: fingerprint: {e}", s.node));
        let client = AgentClient::new(status.endpoint.as_deref().unwrap_or(""), pin)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_timeout(Duration::from_secs(30));
        match client.call(&token_a, old, stale_take(&owner)).await {
            Err(CallError::Refused { status, refusal }) => {
                assert_eq!(status.as_u16(), 409, "{}: {refusal:?}", s.node);
                assert_eq!(
                    refusal.reason,
                    tidepool_agent::RefusalReason::StaleEpoch,
                    "{}",
                    s.node
                );
            }
            other => panic!(
                "{}: a stale leader's take was not refused: {other:?}",
                s.node
            ),
        }
        let pong = client
            .call(&token_a, current, Ping {})
            .await
            .unwrap_or_else(|e| panic!("{}: ping with the current epoch: {e:?}", s.node));
        assert_eq!(pong.node_name, s.node);
        let stale = ok(s
            .vm
            .exec([
                "zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", ROOT,
            ])
            .await
            .map(|o| o.stdout_lossy()));
        assert!(
            !stale.contains("_stale"),
            "{}: the stale command took a snapshot:\n{stale}",
            s.node
        );
    }
    eprintln!("scenario done after {:?}", started.elapsed());

    standby.abort();
    for s in &mut sites {
        drop(s.agent.take());
    }
}
