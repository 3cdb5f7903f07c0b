//! `deletionPolicy: Delete`: the finalizer destroys the object's own snapshots on every
//! node it runs on, then lets the object go.
//!
//! The rule that keeps it from wedging: a node whose agent cannot be reached (or refuses)
//! is retried until `delete_give_up` (default 1 h) after the deletion was requested; then
//! its snapshots are left where they are, a Warning event `DeleteAbandoned` names the
//! nodes, and the finalizer is removed. Until then `Ready=False`, reason `DeleteBlocked`,
//! says which node blocks and when the controller gives up. A namespace without a grant
//! for the datasets has its snapshots left at once (the controller never touches what the
//! namespace may not). `Retain` never adds the finalizer; an object changed from Delete to
//! Retain loses it on the next reconcile.

use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource as _, ResourceExt};
use tidepool_agent::LeaderEpoch;
use tidepool_api::{DeletionPolicy, SnapshotSchedule};
use tidepool_wire::{DestroySnapshots, Request, Response};

use crate::agents::AgentEndpoint;
use crate::inventories::Freshness;
use crate::owner::schedule_owner;
use crate::reconcile::{self, Context, FINALIZER, NodeProblem, ReconcileError};
use crate::status::{self, Blocker, Outcome};
use crate::{reasons, work, writes};

/// Whether the bounded wait for unreachable nodes is over.
pub fn give_up(deleted_at: Timestamp, now: Timestamp, limit: Duration) -> bool {
    let limit = jiff::SignedDuration::try_from(limit).unwrap_or(jiff::SignedDuration::MAX);
    now.duration_since(deleted_at) >= limit
}

pub async fn handle(
    obj: &SnapshotSchedule,
    ctx: &Context,
    epoch: LeaderEpoch,
    now: Timestamp,
) -> Result<Action, ReconcileError> {
    let Some(remaining) = writes::finalizers_without(obj, FINALIZER) else {
        return Ok(Action::await_change());
    };
    let ns = obj
        .namespace()
        .ok_or(ReconcileError::Incomplete("namespace"))?;
    let name = obj.name_any();
    if obj.spec.deletion_policy == DeletionPolicy::Retain {
        reconcile::patch_finalizers(obj, ctx, remaining).await?;
        ctx.metrics.forget(&ns, &name);
        return Ok(Action::await_change());
    }
    let nodes = match reconcile::admissible(obj, ctx, &ns).await? {
        Ok(n) => n,
        Err(b) => {
            reconcile::publish(
                ctx,
                obj,
                EventType::Warning,
                reasons::DELETE_ABANDONED,
                format!("snapshots left in place: {}", b.message),
                "Delete",
            )
            .await;
            reconcile::patch_finalizers(obj, ctx, remaining).await?;
            ctx.metrics.forget(&ns, &name);
            return Ok(Action::await_change());
        }
    };
    let owner = match schedule_owner(&ns, &name) {
        Ok(o) => o,
        Err(e) => {
            // No owner can be spelled, so no snapshot can be this object's.
            reconcile::publish(
                ctx,
                obj,
                EventType::Warning,
                reasons::DELETE_ABANDONED,
                format!("nothing to destroy: {e}"),
                "Delete",
            )
            .await;
            reconcile::patch_finalizers(obj, ctx, remaining).await?;
            ctx.metrics.forget(&ns, &name);
            return Ok(Action::await_change());
        }
    };
    let mut blocked = Vec::new();
    let pool = obj.spec.datasets.first().map(|d| d.name.pool());
    for node in &nodes {
        let result = async {
            let agent = AgentEndpoint::of(
                node,
                ctx.zfs_nodes
                    .get(&kube::runtime::reflector::ObjectRef::new(node))
                    .as_deref(),
            )?;
            let Some(pool) = pool.clone() else {
                return Ok(0);
            };
            let inventory =
                reconcile::inventory(ctx, &agent, epoch, pool, Freshness::AfterAsking).await?;
            let mine = work::all_owned(&inventory, &owner);
            if mine.is_empty() {
                return Ok(0);
            }
            let request = Request::DestroySnapshots(DestroySnapshots {
                snapshots: mine,
                owner: owner.clone(),
                // Deleting the object destroys all it owns: nothing is kept to check.
                keeping: Vec::new(),
            });
            match ctx
                .agents
                .call(&agent, epoch, request)
                .await
                .map_err(NodeProblem::from)?
            {
                Response::SnapshotsDestroyed(d) => Ok(d.destroyed.len()),
                Response::Failed(source) => {
                    Err(NodeProblem::Agent(crate::agents::AgentError::Failed {
                        node: node.clone(),
                        source,
                    }))
                }
                _ => Err(NodeProblem::Spec("unexpected answer to DestroySnapshots")),
            }
        }
        .await;
        match result {
            Ok(n) if n > 0 => {
                ctx.metrics
                    .snapshots_destroyed
                    .inc_by(u64::try_from(n).unwrap_or(0));
                reconcile::publish(
                    ctx,
                    obj,
                    EventType::Normal,
                    reasons::PRUNED,
                    format!("node {node}: deletionPolicy Delete destroyed {n} snapshot(s)"),
                    "Delete",
                )
                .await;
            }
            Ok(_) => {}
            Err(p) => blocked.push((node.clone(), p.message())),
        }
    }
    let deleted_at = obj.meta().deletion_timestamp.as_ref().map_or(now, |t| t.0);
    if blocked.is_empty() || give_up(deleted_at, now, ctx.config.delete_give_up) {
        if !blocked.is_empty() {
            let which: Vec<String> = blocked.iter().map(|(n, m)| format!("{n} ({m})")).collect();
            reconcile::publish(
                ctx,
                obj,
                EventType::Warning,
                reasons::DELETE_ABANDONED,
                format!(
                    "gave up after {:?}; snapshots left on: {}",
                    ctx.config.delete_give_up,
                    which.join("; ")
                ),
                "Delete",
            )
            .await;
        }
        reconcile::patch_finalizers(obj, ctx, remaining).await?;
        ctx.metrics.forget(&ns, &name);
        return Ok(Action::await_change());
    }
    let until = deleted_at
        .checked_add(
            jiff::SignedDuration::try_from(ctx.config.delete_give_up)
                .unwrap_or(jiff::SignedDuration::ZERO),
        )
        .unwrap_or(now);
    let which: Vec<&str> = blocked.iter().map(|(n, _)| n.as_str()).collect();
    let blocker = Blocker {
        reason: reasons::DELETE_BLOCKED,
        message: format!(
            "waiting to destroy this object's snapshots on {}; snapshots there are left at {until}",
            which.join(", ")
        ),
    };
    let old = obj.status.clone().unwrap_or_default();
    let new = status::next(
        &old,
        &Outcome::Blocked(blocker),
        obj.metadata.generation,
        now,
    );
    if new != old {
        reconcile::write_status(ctx, &ns, &name, &new).await?;
    }
    Ok(Action::requeue(ctx.config.retry))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_wait_for_a_node_is_bounded() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let hour = Duration::from_secs(3600);
        assert!(!give_up(t0, t0, hour));
        assert!(!give_up(t0, Timestamp::from_second(4_599).unwrap(), hour));
        assert!(give_up(t0, Timestamp::from_second(4_600).unwrap(), hour));
    }
}
