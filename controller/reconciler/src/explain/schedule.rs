//! The dry run of a `SnapshotSchedule`: the same steps as a reconcile's (`checks`, and
//! `NodePlan`'s datasets, planner input and snapshot name, `work::retention_plans`), with
//! every agent call but the inventory read left out.

use jiff::Timestamp;
use kube::ResourceExt as _;
use tidepool_agent::LeaderEpoch;
use tidepool_api::{SnapshotSchedule, ZfsNode};
use tidepool_plan::naming;
use tidepool_plan::schedule;
use tidepool_wire::{PoolInventory, SetCreated, SnapshotRef};

use super::view::{DatasetPlan, Explanation, NodeExplanation, PlannedSnapshot, Problem};
use crate::agents::AgentEndpoint;
use crate::inventories::Freshness;
use crate::node_run::{NodePlan, NodeProblem, inventory};
use crate::owner::schedule_owner;
use crate::reconcile::{Context, ReconcileError, admissible};
use crate::work;

/// The GUID the snapshot a run would take stands in with: ZFS never gives a dataset or
/// snapshot GUID 0, so it cannot collide with one in the inventory.
const PLANNED_GUID: u64 = 0;

pub(crate) async fn explain(
    ctx: &Context,
    epoch: LeaderEpoch,
    obj: &SnapshotSchedule,
    now: Timestamp,
) -> Result<Explanation, ReconcileError> {
    let ns = obj
        .namespace()
        .ok_or(ReconcileError::Incomplete("namespace"))?;
    let mut out = Explanation {
        kind: "SnapshotSchedule".into(),
        namespace: ns.clone(),
        name: obj.name_any(),
        generation: obj.metadata.generation,
        now,
        blocked: None,
        nodes: Vec::new(),
        replication: None,
    };
    let blocked = |reason: &str, message: String| {
        Some(Problem {
            reason: reason.to_owned(),
            message,
        })
    };
    let valid = match obj.spec.validate() {
        Ok(v) => v,
        Err(e) => {
            out.blocked = blocked(e.reason(), e.message());
            return Ok(out);
        }
    };
    let nodes = match admissible(obj, ctx, &ns).await? {
        Ok(n) => n,
        Err(b) => {
            out.blocked = blocked(b.reason, b.message);
            return Ok(out);
        }
    };
    let uid = obj.uid().ok_or(ReconcileError::Incomplete("uid"))?;
    let created = obj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .ok_or(ReconcileError::Incomplete("creationTimestamp"))?;
    let owner = match schedule_owner(&ns, &obj.name_any()) {
        Ok(o) => o,
        Err(e) => {
            out.blocked = blocked(tidepool_api::condition::reason::INVALID_SPEC, e.to_string());
            return Ok(out);
        }
    };
    let label = naming::label_for(obj.spec.naming.label.as_deref(), &obj.name_any());
    let old = obj.status.clone().unwrap_or_default();
    let plan = NodePlan {
        obj,
        valid: &valid,
        uid: &uid,
        created,
        owner: &owner,
        label: &label,
        precision: schedule::name_precision(&valid.schedule),
        old: &old,
    };
    out.nodes = futures::future::join_all(nodes.into_iter().map(|node| {
        let plan = &plan;
        async move {
            let zfs_node = ctx
                .zfs_nodes
                .get(&kube::runtime::reflector::ObjectRef::new(&node));
            let mut e = NodeExplanation {
                node: node.clone(),
                pool: plan.pool().ok(),
                problem: None,
                suspended: false,
                take: None,
                next_due: None,
                retention: None,
            };
            let fetched = match (AgentEndpoint::of(&node, zfs_node.as_deref()), plan.pool()) {
                (Ok(agent), Ok(pool)) => {
                    inventory(ctx, &agent, epoch, pool, Freshness::AfterAsking).await
                }
                (Err(a), _) => Err(a.into()),
                (_, Err(p)) => Err(p),
            };
            let result =
                fetched.and_then(|inv| explain_node(plan, &inv, zfs_node.as_deref(), now, &mut e));
            if let Err(p) = result {
                e.problem = Some(Problem {
                    reason: p.reason().to_owned(),
                    message: p.message(),
                });
            }
            e
        }
    }))
    .await;
    Ok(out)
}

/// What a run on this node now would decide, from its inventory. Pure.
pub(crate) fn explain_node(
    plan: &NodePlan<'_>,
    inventory: &PoolInventory,
    zfs_node: Option<&ZfsNode>,
    now: Timestamp,
    out: &mut NodeExplanation,
) -> Result<(), NodeProblem> {
    let datasets = plan.datasets(inventory, zfs_node)?;
    let input = plan.schedule_input(inventory, &datasets);
    let decision = schedule::evaluate(&input, now).map_err(|e| NodeProblem::Spec(e.reason()))?;
    out.next_due = decision.next_due;
    out.suspended = decision.suspended;
    if decision.suspended {
        // A suspended schedule neither takes nor prunes.
        return Ok(());
    }
    // Retention counts the snapshot a run takes first (as `run_node` does after the take).
    let mut counted = None;
    if let Some(run) = &decision.run {
        let short = plan.snapshot_name(run)?;
        let todo = work::still_to_take(inventory, &datasets, &short);
        let already_taken = datasets
            .iter()
            .filter(|d| !todo.contains(d))
            .cloned()
            .collect();
        if !todo.is_empty() {
            let planned: Vec<SnapshotRef> = todo
                .iter()
                .filter_map(|d| d.snapshot(&short).ok())
                .map(|snapshot| SnapshotRef {
                    snapshot,
                    guid: PLANNED_GUID,
                })
                .collect();
            let next_txg = inventory
                .datasets
                .iter()
                .flat_map(|d| d.snapshots.iter().map(|s| s.createtxg))
                .max()
                .unwrap_or(0)
                + 1;
            let created = SetCreated {
                createtxg: next_txg,
                creation: now,
            };
            counted = Some(work::with_taken(inventory, &planned, created, plan.owner));
        }
        out.take = Some(PlannedSnapshot {
            name: short,
            reason: run.reason.as_str().to_owned(),
            message: run.message(),
            datasets: todo,
            already_taken,
        });
    }
    if let Some((retention, tz)) = plan.valid.retention() {
        let inventory = counted.as_ref().unwrap_or(inventory);
        let plans = work::retention_plans(retention, tz, inventory, &datasets, plan.owner);
        out.retention = Some(
            plans
                .iter()
                .map(|p| DatasetPlan::of(p, plan.owner, Some(PLANNED_GUID)))
                .collect(),
        );
    }
    Ok(())
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
