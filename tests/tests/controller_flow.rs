//! The controller's side of the agent contract on the real API server, with the chart's
//! controller ServiceAccount: what it asks an agent for, and what it writes to status.
//!
//! The agent here is an in-process stand-in that keeps one pool's inventory in memory and
//! records every operation; it is NOT evidence that snapshots happen on ZFS (the end-to-end
//! test with real agents in the OpenZFS VM is). What this proves: the controller sends one
//! atomic TakeSnapshots per run naming exactly the expanded datasets (recursive, exclude),
//! prunes only this object's snapshots as the planner says, writes Ready/last/next/per-node
//! counts, echoes a manual trigger once, and stops everything when suspended.

mod controller_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller_support::*;
use futures::future::BoxFuture;
use jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tidepool_agent::LeaderEpoch;
use tidepool_api::{DatasetName, PoolCapabilities, SnapshotSchedule, ZfsNode};
use tidepool_reconciler::{AgentEndpoint, AgentError, Agents};
use tidepool_wire::{
    DatasetInventory, InventoryAnswer, InventoryGeneration, Owner, PoolHealth, PoolInventory,
    Request, Response, SnapshotInfo, SnapshotRef, SnapshotsDestroyed, SnapshotsTaken,
};

const WITHIN: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Pool {
    inventory: Option<PoolInventory>,
    next_guid: u64,
    taken: Vec<Vec<DatasetName>>,
    destroyed: Vec<SnapshotRef>,
    epochs: Vec<LeaderEpoch>,
}

struct StandIn(Mutex<Pool>);

impl StandIn {
    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Agents for StandIn {
    fn call<'a>(
        &'a self,
        _agent: &'a AgentEndpoint,
        epoch: LeaderEpoch,
        request: Request,
    ) -> BoxFuture<'a, Result<Response, AgentError>> {
        Box::pin(async move {
            let mut p = self.pool();
            p.epochs.push(epoch);
            let now = Timestamp::now();
            let response = match request {
                Request::Inventory(_) => Response::Inventory(InventoryAnswer::Full {
                    generation: InventoryGeneration(p.next_guid),
                    inventory: p.inventory.clone().unwrap_or_else(|| panic!("no pool")),
                }),
                Request::TakeSnapshots(t) => {
                    let mut made = Vec::new();
                    p.taken.push(t.datasets.clone());
                    for d in &t.datasets {
                        p.next_guid += 1;
                        let guid = p.next_guid;
                        let inv = p
                            .inventory
                            .as_mut()
                            .and_then(|i| i.datasets.iter_mut().find(|x| &x.dataset == d));
                        let inv = inv.unwrap_or_else(|| {
                            panic!("asked to snapshot {d}, which does not exist")
                        });
                        inv.snapshots.push(SnapshotInfo {
                            name: t.short_name.clone(),
                            guid,
                            createtxg: guid,
                            creation: now,
                            owner: Some(t.owner.clone()),
                            held: false,
                        });
                        made.push(SnapshotRef {
                            snapshot: d.snapshot(&t.short_name).unwrap_or_else(|e| panic!("{e}")),
                            guid,
                        });
                    }
                    Response::SnapshotsTaken(SnapshotsTaken { snapshots: made })
                }
                Request::DestroySnapshots(d) => {
                    let mut destroyed = Vec::new();
                    for r in d.snapshots {
                        let dataset = r.snapshot.dataset();
                        let inv = p
                            .inventory
                            .as_mut()
                            .and_then(|i| i.datasets.iter_mut().find(|x| x.dataset == dataset));
                        if let Some(inv) = inv {
                            let before = inv.snapshots.len();
                            // What the real agent checks too: same GUID, owned locally by the requester.
                            inv.snapshots.retain(|s| {
                                !(s.guid == r.guid && s.owner.as_ref() == Some(&d.owner))
                            });
                            if inv.snapshots.len() < before {
                                destroyed.push(r.clone());
                            }
                        }
                    }
                    p.destroyed.extend(destroyed.clone());
                    Response::SnapshotsDestroyed(SnapshotsDestroyed {
                        destroyed,
                        refused: vec![],
                    })
                }
            };
            Ok(response)
        })
    }
}

fn ds(s: &str) -> DatasetName {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn snapshot(name: &str, guid: u64, owner: Option<&str>) -> SnapshotInfo {
    SnapshotInfo {
        name: name.parse().unwrap_or_else(|e| panic!("{e}")),
        guid,
        createtxg: guid,
        creation: Timestamp::from_second(1_700_000_000).unwrap_or_else(|e| panic!("{e}")),
        owner: owner.map(|o| o.parse::<Owner>().unwrap_or_else(|e| panic!("{e}"))),
        held: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_snapshots_prunes_reports_triggers_and_suspends() {
    let release = Release::install("flow").await;
    let cp = release.cp;
    let users = ok(cp.create_namespace("flow-users").await);
    let node = release.node.clone();
    let owner = format!("SnapshotSchedule/{users}/apps");
    let foreign = format!("SnapshotSchedule/{users}/someone-else");
    let apps = DatasetInventory::with_snapshots(
        ds("tank/apps"),
        vec![
            snapshot("manual", 1, None),
            snapshot("tidepool_20231114T221320Z_other", 2, Some(&foreign)),
        ],
    );
    let inventory = PoolInventory {
        pool: "tank".parse().unwrap_or_else(|e| panic!("{e}")),
        health: PoolHealth::Online,
        size_bytes: 1 << 30,
        allocated_bytes: 0,
        free_bytes: 1 << 30,
        capabilities: PoolCapabilities::default(),
        datasets: vec![
            DatasetInventory::with_snapshots(ds("tank"), vec![]),
            apps,
            DatasetInventory::with_snapshots(ds("tank/apps/db"), vec![]),
            DatasetInventory::with_snapshots(ds("tank/apps/scratch"), vec![]),
            DatasetInventory::with_snapshots(ds("tank/apps/scratch/tmp"), vec![]),
        ],
        unnamed_datasets: 0,
    };
    let agent = Arc::new(StandIn(Mutex::new(Pool {
        inventory: Some(inventory),
        next_guid: 100,
        ..Pool::default()
    })));

    let zfs_nodes: Api<ZfsNode> = Api::all(cp.admin_client());
    zfs_nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "tidepool.dev/v1alpha1", "kind": "ZfsNode",
                "metadata": {"name": node}, "spec": {"nodeName": node},
            }))
            .unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    zfs_nodes
        .patch_status(&node, &PatchParams::apply("tidepool-tests").force(), &Patch::Apply(json!({
            "apiVersion": "tidepool.dev/v1alpha1", "kind": "ZfsNode",
            "status": {"endpoint": "127.0.0.1:9", "tlsCertificateSha256": "cd".repeat(32),
                       "pools": [{"name": "tank", "health": "ONLINE", "sizeBytes": 1, "allocatedBytes": 0, "freeBytes": 1}]},
        })))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Api::<tidepool_api::DatasetGrant>::all(cp.admin_client())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "tidepool.dev/v1alpha1", "kind": "DatasetGrant",
                "metadata": {"name": format!("{}-grant", release.ns)},
                "spec": {"namespaces": [users], "datasets": ["tank/apps"]},
            }))
            .unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    create_schedule(cp, &users, "apps", json!({
        "nodeName": node,
        "datasets": [{"name": "tank/apps", "recursive": true, "exclude": ["tank/apps/scratch"]}],
        "schedule": {"interval": "1s"},
        "retention": {"keepLast": 2},
    }))
    .await;
    let replica = release.replica("controller-0").await;
    let controller = release
        .start_with(&replica, Some(users.clone()), agent.clone())
        .await;

    wait_ready(cp, &users, "apps", "True", "Reconciled", WITHIN).await;
    // Several runs and prunes.
    let deadline = tokio::time::Instant::now() + WITHIN;
    while agent.pool().destroyed.len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention never pruned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    {
        let p = agent.pool();
        for datasets in &p.taken {
            assert_eq!(
                datasets,
                &vec![ds("tank/apps"), ds("tank/apps/db")],
                "one atomic call, excludes honoured"
            );
        }
        assert!(
            p.destroyed.iter().all(|r| r.guid > 100),
            "only snapshots this controller made: {:?}",
            p.destroyed
        );
        assert!(
            p.epochs.iter().all(|e| *e == p.epochs[0]),
            "one leader, one epoch"
        );
        let inv = p.inventory.as_ref().unwrap_or_else(|| panic!("no pool"));
        let apps = inv
            .dataset(&ds("tank/apps"))
            .unwrap_or_else(|| panic!("tank/apps"));
        assert!(
            apps.snapshots.iter().any(|s| s.name.as_str() == "manual"),
            "manual snapshot kept"
        );
        assert!(
            apps.snapshots
                .iter()
                .any(|s| s.owner.as_ref().map(Owner::as_str) == Some(foreign.as_str())),
            "foreign snapshot kept"
        );
        let mine = apps
            .snapshots
            .iter()
            .filter(|s| s.owner.as_ref().map(Owner::as_str) == Some(owner.as_str()))
            .count();
        assert!(
            (2..=3).contains(&mine),
            "keepLast 2 (plus the run after the prune): {mine}"
        );
    }
    let schedules: Api<SnapshotSchedule> = Api::namespaced(cp.admin_client(), &users);
    let status = schedules
        .get("apps")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .status
        .unwrap_or_default();
    assert!(
        status.last_snapshot_time.is_some() && status.next_snapshot_time.is_some(),
        "{status:?}"
    );
    assert!(
        status
            .last_snapshot_name
            .as_deref()
            .is_some_and(|n| n.starts_with("tidepool_") && n.ends_with("Z_apps")),
        "{status:?}"
    );
    let node_status = status.nodes;
    assert_eq!(node_status.len(), 1);
    assert!(
        node_status[0].pruned_total > 0 && node_status[0].snapshot_count >= 4,
        "{node_status:?}"
    );

    // A manual trigger runs and is echoed.
    schedules
        .patch(
            "apps",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"trigger": {"manual": "run-1"}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let s = schedules
            .get("apps")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .status
            .unwrap_or_default();
        if s.last_manual_trigger.as_deref() == Some("run-1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "trigger not echoed: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Suspend stops snapshots and pruning.
    schedules
        .patch(
            "apps",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_ready(cp, &users, "apps", "True", "Suspended", WITHIN).await;
    let (taken, destroyed) = {
        let p = agent.pool();
        (p.taken.len(), p.destroyed.len())
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    let p = agent.pool();
    assert_eq!(
        (p.taken.len(), p.destroyed.len()),
        (taken, destroyed),
        "suspended, yet it acted"
    );
    drop(p);
    controller.abort();
}
