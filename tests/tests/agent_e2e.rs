//! `tidepool agent` end to end: two agents run as processes inside the OpenZFS VM, one per
//! simulated node, each owning its own pool, with exactly the chart's RBAC and admission
//! policies and Pod-bound tokens the harness mints (it plays the kubelet). The test plays
//! the controller: it reads each agent's endpoint and fingerprint from its `ZfsNode` and
//! calls it over TLS pinned to that fingerprint with the controller ServiceAccount's token.
//!
//! One scenario, in steps, because the agents own the VM's forwarded ports: registration
//! and heartbeat; one agent cannot write the other's ZfsNode; the operations (atomic owned
//! snapshots, destroying only what is owned, refusing datasets outside the roots and
//! callers that are not the controller, nothing run in each refusal); inventory cost after
//! one new snapshot against a full relist, counted by the agent's own metrics.

use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams};
use tidepool_agent::{
    AgentClient, CallError, CertificateFingerprint, Command, DEFAULT_AUDIENCE, LeaderEpoch, Ping,
    RefusalReason,
};
use tidepool_api::{DatasetName, PoolName, ZfsNode};
use tidepool_tests::agents::{AgentSpec, GuestAgent};
use tidepool_tests::chart::{ChartRelease, Component};
use tidepool_tests::control_plane::ControlPlane;
use tidepool_tests::kubelet::{Audience, Kubelet, PodIdentity};
use tidepool_tests::zfs_vm::ZfsVm;
use tidepool_wire::operation::{
    DestroySnapshots, InventoryAnswer, InventoryGeneration, InventoryRequest, OperationError,
    Owner, RefusalReason as DestroyRefusal, Response, SnapshotRef, TakeSnapshots,
};

const EPOCH: LeaderEpoch = LeaderEpoch(1);
const BULK_DATASETS: usize = 20;
const BULK_SNAPSHOTS: usize = 10;

fn ok<T>(result: anyhow::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e:#}"))
}

fn name<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Display,
{
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

async fn sh(vm: &ZfsVm, argv: &[&str]) -> String {
    ok(vm.exec_ok(argv.iter().copied()).await)
}

/// `zfs list -H -o name -t snapshot -d 1 <dataset>`, sorted.
async fn snapshots_of(vm: &ZfsVm, dataset: &str) -> Vec<String> {
    let mut v: Vec<String> = sh(
        vm,
        &[
            "zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-d", "1", dataset,
        ],
    )
    .await
    .lines()
    .map(str::to_owned)
    .collect();
    v.sort();
    v
}

/// `zfs` calls and the lines they printed so far. `zpool` commands are left out: the
/// heartbeat runs them on its own clock, and they cost the same in both modes.
async fn zfs_work(agent: &GuestAgent) -> (f64, f64) {
    let zfs = "command=\"zfs ";
    let calls = ok(agent
        .metric_sum("tidepool_agent_zfs_command_duration_seconds_count", zfs)
        .await);
    let lines = ok(agent
        .metric_sum("tidepool_agent_zfs_output_lines_total", zfs)
        .await);
    (calls, lines)
}

fn refused(result: Result<Response, CallError>) -> (u16, RefusalReason) {
    match result {
        Err(CallError::Refused { status, refusal }) => (status.as_u16(), refusal.reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn inventory(
    client: &AgentClient,
    token: &str,
    pool: &PoolName,
    since: Option<InventoryGeneration>,
) -> InventoryAnswer {
    let request = InventoryRequest {
        pool: pool.clone(),
        since,
    };
    match client.call(token, EPOCH, request).await {
        Ok(Response::Inventory(answer)) => answer,
        other => panic!("inventory of {pool}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_in_the_vm_register_serve_and_refuse() {
    let cp = ControlPlane::shared().await;
    let vm = ok(ZfsVm::shared().await);
    let ns = ok(cp.create_namespace("agent-e2e").await);
    let chart = ok(ChartRelease::install(cp, &ns, &ns).await);
    let agent_sa = ok(chart.service_account(Component::Agent)).to_owned();
    let controller_sa = ok(chart.service_account(Component::Controller)).to_owned();

    // Two nodes, one pool each; a root per node and a dataset outside it.
    let pool_a = vm.unique_pool_name("agenta");
    let pool_b = vm.unique_pool_name("agentb");
    for p in [&pool_a, &pool_b] {
        ok(vm.create_pool(p, 512 << 20).await);
        sh(vm, &["zfs", "create", "-p", &format!("{p}/data/app1")]).await;
        sh(vm, &["zfs", "create", &format!("{p}/data/app2")]).await;
        sh(vm, &["zfs", "create", &format!("{p}/outside")]).await;
    }
    sh(vm, &["zfs", "create", &format!("{pool_a}/data/bulk")]).await;
    for i in 0..BULK_DATASETS {
        sh(vm, &["zfs", "create", &format!("{pool_a}/data/bulk/d{i}")]).await;
    }
    for s in 0..BULK_SNAPSHOTS {
        sh(
            vm,
            &["zfs", "snapshot", "-r", &format!("{pool_a}/data/bulk@s{s}")],
        )
        .await;
    }

    let node_a = format!("{ns}-node-a");
    let node_b = format!("{ns}-node-b");
    let spec = |node: &str, pool: &str, api_port: u16, metrics_port: u16| AgentSpec {
        node: node.to_owned(),
        namespace: ns.clone(),
        agent_service_account: agent_sa.clone(),
        controller_service_account: format!("{ns}/{controller_sa}"),
        pools: vec![pool.to_owned()],
        dataset_roots: vec![format!("{pool}/data")],
        api_port,
        metrics_port,
        heartbeat: "3s".to_owned(),
    };
    let [p1, p2, p3, p4] = ZfsVm::AGENT_PORTS;
    let agent_a = ok(GuestAgent::start(vm, cp, &spec(&node_a, &pool_a, p1, p2)).await);
    let agent_b = ok(GuestAgent::start(vm, cp, &spec(&node_b, &pool_b, p3, p4)).await);
    let zn_a = ok(agent_a.wait_registered(vm, cp).await);
    let zn_b = ok(agent_b.wait_registered(vm, cp).await);

    // --- Registration: pools, capabilities, endpoint, fingerprint, roots, heartbeat.
    for (zn, agent, pool) in [(&zn_a, &agent_a, &pool_a), (&zn_b, &agent_b, &pool_b)] {
        let status = zn.status.clone().unwrap_or_default();
        assert_eq!(
            status.endpoint.as_deref(),
            Some(agent.endpoint.to_string().as_str())
        );
        let fp = status.tls_certificate_sha256.clone().unwrap_or_default();
        assert_eq!(fp.len(), 64, "{fp}");
        assert!(
            status
                .zfs_version
                .as_deref()
                .is_some_and(|v| v.starts_with("2."))
        );
        assert!(status.capabilities.bookmarks && status.capabilities.resumable_receive);
        assert_eq!(status.allowed_roots, vec![format!("{pool}/data")]);
        assert_eq!(status.pools.len(), 1, "{:?}", status.pools);
        let p = &status.pools[0];
        assert_eq!(&p.name, pool);
        assert_eq!(p.health, "ONLINE");
        assert!(p.size_bytes > 0 && p.free_bytes > 0);
        assert!(p.capabilities.bookmarks && p.capabilities.encryption);
        assert!(
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
        assert!(status.heartbeat_time.is_some());
    }
    // The heartbeat moves on its own (3 s here, about a minute by default).
    let first_beat = zn_a.status.as_ref().and_then(|s| s.heartbeat_time.clone());
    let nodes: Api<ZfsNode> = Api::all(cp.admin_client());
    let mut moved = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = ok(nodes.get(&node_a).await.map_err(Into::into));
        if now.status.and_then(|s| s.heartbeat_time) != first_beat {
            moved = true;
            break;
        }
    }
    assert!(moved, "the heartbeat of {node_a} did not move within 20 s");

    // --- Agent A's own token writes its ZfsNode, and is refused on node B's (dry runs).
    let as_agent_a = ok(PodIdentity::write(
        cp,
        &ns,
        &agent_a.pod.name,
        agent_a.api_token.clone(),
    ));
    let agent_a_api: Api<ZfsNode> = Api::all(ok(as_agent_a.client().await));
    let dry = PatchParams::apply("tidepool-agent").force().dry_run();
    let own = serde_json::json!({
        "apiVersion": "tidepool.dev/v1alpha1", "kind": "ZfsNode",
        "metadata": {"name": node_a}, "status": {"endpoint": "127.0.0.1:1"},
    });
    agent_a_api
        .patch_status(&node_a, &dry, &Patch::Apply(&own))
        .await
        .unwrap_or_else(|e| panic!("agent A writing its own ZfsNode: {e}"));
    let hijack = serde_json::json!({
        "apiVersion": "tidepool.dev/v1alpha1", "kind": "ZfsNode",
        "metadata": {"name": node_b}, "status": {"endpoint": "127.0.0.1:1"},
    });
    match agent_a_api
        .patch_status(&node_b, &dry, &Patch::Apply(&hijack))
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("agent A writing node B's ZfsNode must be forbidden, got {other:?}"),
    }

    // --- The controller's side: pinned TLS to the published fingerprint, its own token.
    let kubelet = Kubelet::new(cp);
    let controller_pod = ok(kubelet
        .schedule_pod(&ns, "controller-0", &controller_sa, &node_a)
        .await);
    let token = ok(controller_pod
        .mint_token(
            cp,
            Audience::Named(DEFAULT_AUDIENCE),
            Duration::from_secs(3600),
        )
        .await);
    let pin: CertificateFingerprint = name(
        zn_a.status
            .as_ref()
            .and_then(|s| s.tls_certificate_sha256.as_deref())
            .unwrap_or(""),
    );
    let endpoint = zn_a
        .status
        .as_ref()
        .and_then(|s| s.endpoint.clone())
        .unwrap_or_default();
    let client = AgentClient::new(&endpoint, pin)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_timeout(Duration::from_secs(60));
    let pong = client
        .call(&token, EPOCH, Ping {})
        .await
        .unwrap_or_else(|e| panic!("ping: {e:?}"));
    assert_eq!(pong.node_name, node_a);

    // TakeSnapshots: one atomic snapshot across two datasets, owner set locally.
    let app1 = format!("{pool_a}/data/app1");
    let app2 = format!("{pool_a}/data/app2");
    let short = "tidepool_20261201T000000Z_e2e";
    let owner: Owner = format!("SnapshotSchedule/{ns}/e2e").parse().expect("owner");
    let take = TakeSnapshots {
        datasets: vec![name(&app1), name(&app2)],
        short_name: name(short),
        owner: owner.clone(),
        slot: None,
    };
    let taken = match client.call(&token, EPOCH, take.clone()).await {
        Ok(Response::SnapshotsTaken(t)) => t.snapshots,
        other => panic!("TakeSnapshots: {other:?}"),
    };
    assert_eq!(taken.len(), 2);
    let s1 = format!("{app1}@{short}");
    let s2 = format!("{app2}@{short}");
    let owners = sh(
        vm,
        &[
            "zfs",
            "get",
            "-H",
            "-p",
            "-o",
            "name,value,source",
            "tidepool.dev:owner",
            &s1,
            &s2,
        ],
    )
    .await;
    for line in owners.lines() {
        assert!(line.ends_with(&format!("\t{owner}\tlocal")), "{line}");
    }
    // Taken by the agent's own libzfs_core ioctl (the default), not a `zfs snapshot`.
    let by_ioctl = |body: &str| {
        tidepool_tests::agents::sum_samples_where(
            body,
            "tidepool_agent_zfs_command_duration_seconds_count",
            "command=\"lzc snapshot\"",
        )
    };
    let (_, body) = ok(agent_a.probe("/metrics").await);
    assert_eq!(by_ioctl(&body), 1.0, "{body}");
    assert_eq!(
        tidepool_tests::agents::sum_samples_where(
            &body,
            "tidepool_agent_zfs_command_duration_seconds_count",
            "command=\"zfs snapshot\"",
        ),
        0.0
    );
    // The same set again: the ioctl's EEXIST is classified as `zfs snapshot`'s would be,
    // and nothing of the set is taken twice.
    match client.call(&token, EPOCH, take.clone()).await {
        Ok(Response::Failed(OperationError::Zfs { kind, message })) => {
            assert_eq!(kind, "AlreadyExists", "{message}");
            assert!(message.contains(&s1) || message.contains(&s2), "{message}");
        }
        other => panic!("the same snapshot again: {other:?}"),
    }
    let txgs = sh(
        vm,
        &[
            "zfs",
            "get",
            "-H",
            "-p",
            "-o",
            "value",
            "createtxg",
            &s1,
            &s2,
        ],
    )
    .await;
    let txgs: Vec<&str> = txgs.lines().collect();
    assert_eq!(txgs.len(), 2);
    assert_eq!(txgs[0], txgs[1], "one transaction: the same createtxg");
    let guid1 = sh(vm, &["zfs", "get", "-H", "-p", "-o", "value", "guid", &s1]).await;
    assert_eq!(
        taken
            .iter()
            .find(|r| r.snapshot.as_str() == s1)
            .map(|r| r.guid.to_string()),
        Some(guid1.trim().to_owned())
    );

    // DestroySnapshots: the owned ones go, a manual snapshot named in the same request stays.
    let manual = format!("{app1}@manual");
    sh(vm, &["zfs", "snapshot", &manual]).await;
    let manual_guid: u64 = name(
        sh(
            vm,
            &["zfs", "get", "-H", "-p", "-o", "value", "guid", &manual],
        )
        .await
        .trim(),
    );
    let mut doomed = taken.clone();
    doomed.push(SnapshotRef {
        snapshot: name(&manual),
        guid: manual_guid,
    });
    let destroyed = match client
        .call(
            &token,
            EPOCH,
            DestroySnapshots {
                snapshots: doomed,
                owner: owner.clone(),
                keeping: Vec::new(),
            },
        )
        .await
    {
        Ok(Response::SnapshotsDestroyed(d)) => d,
        other => panic!("DestroySnapshots: {other:?}"),
    };
    assert_eq!(destroyed.destroyed.len(), 2, "{destroyed:?}");
    assert_eq!(destroyed.refused.len(), 1, "{destroyed:?}");
    assert!(matches!(
        destroyed.refused[0].reason,
        DestroyRefusal::NotOwned { .. }
    ));
    assert_eq!(snapshots_of(vm, &app1).await, vec![manual.clone()]);
    assert!(snapshots_of(vm, &app2).await.is_empty());

    // Outside the roots: refused before anything runs, alone or mixed with a permitted one,
    // and another node's pool alike.
    let outside = format!("{pool_a}/outside");
    let other_node = format!("{pool_b}/data/app1");
    for datasets in [
        vec![outside.clone()],
        vec![app2.clone(), outside.clone()],
        vec![other_node.clone()],
    ] {
        let op = TakeSnapshots {
            datasets: datasets.iter().map(|d| name::<DatasetName>(d)).collect(),
            short_name: name("tidepool_20261201T000100Z_outside"),
            owner: owner.clone(),
            slot: None,
        };
        let (status, reason) = refused(client.call(&token, EPOCH, op).await);
        assert_eq!(
            (status, reason),
            (403, RefusalReason::OutsideRoots),
            "{datasets:?}"
        );
    }
    assert!(snapshots_of(vm, &outside).await.is_empty());
    assert!(snapshots_of(vm, &app2).await.is_empty());
    assert!(snapshots_of(vm, &other_node).await.is_empty());

    // Callers that are not the controller: no token, and the agent's own ServiceAccount with
    // the agent's audience. Nothing runs.
    let command = Command {
        epoch: EPOCH,
        operation: take.clone(),
    };
    let (status, reason) = refused(client.send(None, &command).await);
    assert_eq!((status, reason), (401, RefusalReason::Unauthenticated));
    let wrong_sa = ok(agent_a
        .pod
        .mint_token(
            cp,
            Audience::Named(DEFAULT_AUDIENCE),
            Duration::from_secs(3600),
        )
        .await);
    let (status, reason) = refused(client.call(&wrong_sa, EPOCH, take.clone()).await);
    assert_eq!((status, reason), (403, RefusalReason::Forbidden));
    // An API-server token of the controller (wrong audience) is not accepted either.
    let wrong_audience = ok(controller_pod
        .mint_token(cp, Audience::ApiServer, Duration::from_secs(3600))
        .await);
    let (status, _) = refused(client.call(&wrong_audience, EPOCH, take.clone()).await);
    assert_eq!(status, 401);
    assert!(snapshots_of(vm, &app2).await.is_empty());

    // A zfs failure is an answer, counted by kind.
    let missing = TakeSnapshots {
        datasets: vec![name(&format!("{pool_a}/data/missing"))],
        short_name: name(short),
        owner: owner.clone(),
        slot: None,
    };
    match client.call(&token, EPOCH, missing).await {
        Ok(Response::Failed(OperationError::Zfs { kind, .. })) => assert_eq!(kind, "NotFound"),
        other => panic!("a snapshot of a missing dataset: {other:?}"),
    }
    let (code, body) = ok(agent_a.probe("/metrics").await);
    assert_eq!(code, 200);
    assert!(
        body.contains("tidepool_agent_zfs_errors_total{kind=\"NotFound\"} 1"),
        "{body}"
    );
    assert!(
        tidepool_tests::agents::sum_samples(&body, "tidepool_agent_pool_free_bytes") > 0.0,
        "{body}"
    );
    assert_eq!(ok(agent_a.probe("/healthz").await).0, 200);
    assert_eq!(ok(agent_a.probe("/readyz").await).0, 200);

    // --- Inventory: a full relist first, then cost proportional to change.
    let pool: PoolName = name(&pool_a);
    let before_full = zfs_work(&agent_a).await;
    let (mut generation, full) = match inventory(&client, &token, &pool, None).await {
        InventoryAnswer::Full {
            generation,
            inventory,
        } => (generation, inventory),
        other => panic!("first inventory: {other:?}"),
    };
    let after_full = zfs_work(&agent_a).await;
    let bulk0 = full
        .dataset(&name(&format!("{pool_a}/data/bulk/d0")))
        .unwrap_or_else(|| panic!("bulk/d0 missing from {:?}", full.datasets.len()));
    assert_eq!(bulk0.snapshots.len(), BULK_SNAPSHOTS);
    assert!(
        full.dataset(&name(&outside)).is_none(),
        "datasets outside the roots are not reported"
    );
    assert!(
        full.dataset(&name(&app1))
            .is_some_and(|d| d.snapshots.len() == 1)
    );

    // Nothing changed: the same generation is answered `Unchanged` (free space may still
    // settle after the destroy above, so allow a few rounds for the pool to go quiet).
    let mut unchanged = false;
    for _ in 0..10 {
        match inventory(&client, &token, &pool, Some(generation)).await {
            InventoryAnswer::Unchanged { generation: g } => {
                assert_eq!(g, generation);
                unchanged = true;
                break;
            }
            InventoryAnswer::Full { generation: g, .. } => generation = g,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(unchanged, "an unchanged pool was never answered Unchanged");

    // One new snapshot, taken behind the agent's back.
    let changed = format!("{pool_a}/data/bulk/d7");
    sh(vm, &["zfs", "snapshot", &format!("{changed}@new")]).await;
    let before_inc = zfs_work(&agent_a).await;
    let (refreshed_generation, refreshed) =
        match inventory(&client, &token, &pool, Some(generation)).await {
            InventoryAnswer::Full {
                generation: g,
                inventory,
            } => {
                assert_ne!(g, generation);
                (g, inventory)
            }
            other => panic!("the inventory after a new snapshot: {other:?}"),
        };
    let after_inc = zfs_work(&agent_a).await;
    let d7 = refreshed
        .dataset(&name(&changed))
        .unwrap_or_else(|| panic!("{changed} missing"));
    assert_eq!(d7.snapshots.len(), BULK_SNAPSHOTS + 1);
    assert!(d7.snapshots.iter().any(|s| s.name.as_str() == "new"));
    // Everything else is as the full relist saw it.
    for d in &full.datasets {
        if d.dataset.as_str() != changed {
            assert_eq!(refreshed.dataset(&d.dataset), Some(d), "{}", d.dataset);
        }
    }
    let full_calls = after_full.0 - before_full.0;
    let full_lines = after_full.1 - before_full.1;
    let inc_calls = after_inc.0 - before_inc.0;
    let inc_lines = after_inc.1 - before_inc.1;
    eprintln!(
        "inventory of {pool_a} ({} datasets, {} snapshots): full relist {full_calls} zfs calls / \
         {full_lines} lines; after one new snapshot {inc_calls} zfs calls / {inc_lines} lines",
        full.datasets.len(),
        full.datasets
            .iter()
            .map(|d| d.snapshots.len())
            .sum::<usize>(),
    );
    // Both read in a constant number of calls; the full one lists every snapshot, the
    // incremental one the datasets and the snapshots of the one that changed.
    assert!(inc_calls <= full_calls, "{inc_calls} calls vs {full_calls}");
    assert!(inc_calls <= 3.0, "{inc_calls} calls");
    assert!(
        inc_lines * 3.0 < full_lines,
        "{inc_lines} lines vs {full_lines}"
    );

    // One atomic snapshot over five datasets through the agent: the five are re-read
    // together, in the same few calls as one.
    let five: Vec<DatasetName> = (0..5)
        .map(|i| name(&format!("{pool_a}/data/bulk/d{i}")))
        .collect();
    let take_five = TakeSnapshots {
        datasets: five.clone(),
        short_name: name("tidepool_20261201T000200Z_five"),
        owner: owner.clone(),
        slot: None,
    };
    match client.call(&token, EPOCH, take_five).await {
        Ok(Response::SnapshotsTaken(t)) => assert_eq!(t.snapshots.len(), 5),
        other => panic!("TakeSnapshots over five datasets: {other:?}"),
    }
    let before_five = zfs_work(&agent_a).await;
    let after_take = match inventory(&client, &token, &pool, Some(refreshed_generation)).await {
        InventoryAnswer::Full { inventory, .. } => inventory,
        other => panic!("the inventory after five new snapshots: {other:?}"),
    };
    let after_five = zfs_work(&agent_a).await;
    for d in &five {
        let inv = after_take
            .dataset(d)
            .unwrap_or_else(|| panic!("{d} missing"));
        assert!(
            inv.snapshots
                .iter()
                .any(|s| s.name.as_str() == "tidepool_20261201T000200Z_five"
                    && s.owner.as_ref() == Some(&owner)),
            "{d}: {:?}",
            inv.snapshots
        );
    }
    let (five_calls, five_lines) = (after_five.0 - before_five.0, after_five.1 - before_five.1);
    eprintln!(
        "after one atomic snapshot over five datasets: {five_calls} zfs calls / {five_lines} lines"
    );
    assert!(five_calls <= 3.0, "{five_calls} calls");
    drop(agent_a);
    drop(agent_b);
}
