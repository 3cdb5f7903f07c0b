//! A deleted ReplicationPolicy lets go of what it kept: every policy has the finalizer
//! [`FINALIZER`], because its holds would otherwise pin the source's snapshots for ever
//! (the source's retention can never destroy a held snapshot) and its bookmarks would
//! stay. On deletion the controller releases the policy's holds on both sides and
//! destroys its own bookmarks on the source, for every replicated dataset; with
//! `deletionPolicy: Delete` it then destroys the snapshots the policy claimed on its
//! replicas. It never destroys a dataset (the replica stays, with its data), nor anything
//! in a replica rotated aside (kept because it diverged), nor a snapshot it does not own.
//!
//! As for schedules: a node that cannot be reached is retried until `delete_give_up`
//! after the deletion, then left (a `DeleteAbandoned` event names it); a namespace
//! without its grants has its policy let go at once (the controller never touches what
//! the namespace may not).

use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource as _, ResourceExt};
use tidepool_agent::LeaderEpoch;
use tidepool_api::dataset_grant::Access;
use tidepool_api::values::HoldTag;
use tidepool_api::{DeletionPolicy, Owner, ReplicationPolicy};
use tidepool_plan::DatasetInventory;
use tidepool_plan::replication as planner;
use tidepool_plan::replication::Side;
use tidepool_wire::{
    Bookkeeping, BookkeepingAction, DestroySnapshots, PoolInventory, Request, Response, SnapshotRef,
};

use super::dataset::{Replica, replicas};
use super::object_store::Store;
use super::run::Ends;
use super::{TargetEnd, TargetRef, endpoint, permitted, policy_owner, status};
use crate::agents::AgentError;
use crate::deletion::give_up;
use crate::inventories::Freshness;
use crate::node_run::inventory;
use crate::reconcile::{Context, ReconcileError};
use crate::status::Blocker;
use crate::{reasons, work, writes};

/// On every ReplicationPolicy while it exists.
pub const FINALIZER: &str = "tidepool.dev/replication";

/// Adds the finalizer to a live policy (before anything is held for it).
pub async fn ensure_finalizer(
    obj: &ReplicationPolicy,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    if obj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut finalizers = obj.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    writes::patch_finalizers(obj, ctx, finalizers).await
}

/// What letting go did.
#[derive(Debug, Default)]
struct LetGo {
    released: usize,
    bookmarks: usize,
    destroyed: usize,
    /// Object-store streams deleted.
    objects: usize,
}

pub async fn handle(
    obj: &ReplicationPolicy,
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
    let done = || {
        ctx.metrics.forget_replication(&ns, &name);
        writes::patch_finalizers(obj, ctx, remaining.clone())
    };
    let Some(target) = TargetRef::of(&obj.spec) else {
        done().await?;
        return Ok(Action::await_change());
    };
    let source = &obj.spec.source;
    let mut grants_needed = vec![(&source.node_name, &source.dataset, Access::Send)];
    if let TargetRef::Node(node) = target {
        grants_needed.push((&node.node_name, &node.dataset, Access::Receive));
    }
    for (node, dataset, access) in grants_needed {
        if let Err(b) = permitted(ctx, &ns, node, dataset, access).await? {
            abandoned(ctx, obj, &b.message).await;
            done().await?;
            return Ok(Action::await_change());
        }
    }
    let owner = policy_owner(&ns, &name).map_err(|_| ReconcileError::Incomplete("owner"))?;
    match let_go(obj, ctx, epoch, &owner).await {
        Ok(n) => {
            if n.released + n.bookmarks + n.destroyed + n.objects > 0 {
                let note = format!(
                    "released {} hold(s), destroyed {} bookmark(s){}",
                    n.released,
                    n.bookmarks,
                    if obj.spec.deletion_policy == DeletionPolicy::Delete
                        && obj.spec.target.object_store.is_some()
                    {
                        format!(" and deleted {} stored stream(s)", n.objects)
                    } else if obj.spec.deletion_policy == DeletionPolicy::Delete {
                        format!(" and {} replicated snapshot(s)", n.destroyed)
                    } else {
                        "; the replica is kept (deletionPolicy Retain)".to_owned()
                    }
                );
                writes::publish(
                    ctx,
                    obj,
                    EventType::Normal,
                    reasons::RELEASED,
                    note,
                    "Delete",
                )
                .await;
            }
            done().await?;
            Ok(Action::await_change())
        }
        Err(blocked) => {
            let deleted_at = obj.meta().deletion_timestamp.as_ref().map_or(now, |t| t.0);
            if give_up(deleted_at, now, ctx.config.delete_give_up) {
                let message = format!(
                    "gave up after {:?}; holds, bookmarks and snapshots left: {blocked}",
                    ctx.config.delete_give_up
                );
                abandoned(ctx, obj, &message).await;
                done().await?;
                return Ok(Action::await_change());
            }
            let old = obj.status.clone().unwrap_or_default();
            let outcome = status::Outcome::Blocked(Blocker {
                reason: reasons::DELETE_BLOCKED,
                message: format!("waiting to let go of this policy's holds: {blocked}"),
            });
            let new = status::next(&old, &outcome, obj.metadata.generation, now);
            if new != old {
                writes::apply_status::<ReplicationPolicy>(ctx, &ns, &name, &new).await?;
            }
            Ok(Action::requeue(ctx.config.retry))
        }
    }
}

async fn abandoned(ctx: &Context, obj: &ReplicationPolicy, message: &str) {
    writes::publish(
        ctx,
        obj,
        EventType::Warning,
        reasons::DELETE_ABANDONED,
        message.to_owned(),
        "Delete",
    )
    .await;
}

/// Releases, destroys bookmarks and (for `Delete`) snapshots on both nodes; the first
/// failure stops it, as a message naming the node.
async fn let_go(
    obj: &ReplicationPolicy,
    ctx: &Context,
    epoch: LeaderEpoch,
    owner: &Owner,
) -> Result<LetGo, String> {
    let source = &obj.spec.source;
    let Some(target) = TargetRef::of(&obj.spec) else {
        return Ok(LetGo::default());
    };
    let src_agent = endpoint(ctx, &source.node_name).map_err(|b| b.message)?;
    let dst = target
        .resolve(ctx, owner.namespace(), &src_agent)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|b| b.message)?;
    let src_pool = inventory(
        ctx,
        &src_agent,
        epoch,
        source.dataset.pool(),
        Freshness::AfterAsking,
    )
    .await
    .map_err(|p| format!("node {}: {}", src_agent.node, p.message()))?;
    // An object store keeps no holds or claims: the source has the holds and bookmarks to
    // let go; `Delete` also deletes the streams whose manifests name this policy.
    let dst_pool = match &dst {
        TargetEnd::ObjectStore { .. } => None,
        _ => Some(
            dst.read_pool(ctx, epoch, target.dataset())
                .await
                .map_err(|(_, message)| format!("{}: {message}", dst.node()))?,
        ),
    };
    let list = replicas(
        &source.dataset,
        source.recursive,
        target.dataset(),
        Some(&src_pool),
    )?;
    let policy = format!("{}/{}", owner.namespace(), owner.name());
    let tag = planner::hold_tag(&policy);
    let suffix = planner::bookmark_suffix(&policy);
    let of = |pool: &PoolInventory, ds: &tidepool_api::DatasetName| pool.dataset(ds).cloned();
    let mut src_actions = Vec::new();
    let mut dst_actions = Vec::new();
    let mut destroy = Vec::new();
    for Replica { source, target } in &list {
        if let Some(d) = of(&src_pool, source) {
            src_actions.extend(letting_go(&d, &tag, Some(&suffix)));
        }
        if let Some(d) = dst_pool.as_deref().and_then(|p| of(p, target)) {
            dst_actions.extend(letting_go(&d, &tag, None));
            if obj.spec.deletion_policy == DeletionPolicy::Delete {
                destroy.extend(work::owned_in(&d, owner));
            }
        }
    }
    let mut out = LetGo::default();
    let ends = Ends {
        source: &src_agent,
        target: &dst,
    };
    for (side, actions) in [(Side::Source, src_actions), (Side::Target, dst_actions)] {
        count(&mut out, &actions);
        if actions.is_empty() {
            continue;
        }
        let request = Request::Bookkeeping(Bookkeeping {
            owner: owner.clone(),
            actions,
        });
        match ends.call(ctx, epoch, side, request).await {
            Ok(Response::Bookkept(_)) => {}
            Ok(other) => {
                return Err(AgentError::unexpected(ends.node(side), "Bookkeeping", &other).chain());
            }
            Err(e) => return Err(e.chain()),
        }
    }
    if obj.spec.deletion_policy == DeletionPolicy::Delete
        && let Some(store) = Store::of(ctx, epoch, &dst)
    {
        for Replica { source, .. } in &list {
            out.objects += store
                .delete_owned(source, owner)
                .await
                .map_err(|f| format!("{}: {}", f.node, f.message))?;
        }
    }
    if !destroy.is_empty() {
        let request = Request::DestroySnapshots(DestroySnapshots {
            snapshots: destroy,
            owner: owner.clone(),
            keeping: Vec::new(),
        });
        match dst.call(ctx, epoch, request).await {
            Ok(Response::SnapshotsDestroyed(d)) => {
                out.destroyed = d.destroyed.len();
                ctx.metrics
                    .snapshots_destroyed
                    .inc_by(u64::try_from(d.destroyed.len()).unwrap_or(0));
            }
            Ok(other) => {
                return Err(AgentError::unexpected(dst.node(), "DestroySnapshots", &other).chain());
            }
            Err(e) => return Err(e.chain()),
        }
    }
    Ok(out)
}

fn count(out: &mut LetGo, actions: &[BookkeepingAction]) {
    for a in actions {
        match a {
            BookkeepingAction::Release { .. } => out.released += 1,
            BookkeepingAction::DestroyBookmark { .. } => out.bookmarks += 1,
            _ => {}
        }
    }
}

/// The policy's holds on `d` released, and (with `bookmark_suffix`, on the source) its
/// bookmarks destroyed.
pub fn letting_go(
    d: &DatasetInventory,
    tag: &HoldTag,
    bookmark_suffix: Option<&str>,
) -> Vec<BookkeepingAction> {
    let mut out: Vec<BookkeepingAction> = d
        .holds
        .iter()
        .filter(|h| h.tag == tag.as_str())
        .filter_map(|h| {
            let s = d.snapshots.iter().find(|s| s.guid == h.guid)?;
            Some(BookkeepingAction::Release {
                snapshot: SnapshotRef {
                    snapshot: d.dataset.snapshot(&s.name).ok()?,
                    guid: s.guid,
                },
                tag: tag.clone(),
            })
        })
        .collect();
    if let Some(suffix) = bookmark_suffix {
        out.extend(
            d.bookmarks
                .iter()
                .filter(|b| b.name.as_str().ends_with(suffix))
                .filter_map(|b| {
                    Some(BookkeepingAction::DestroyBookmark {
                        bookmark: d.dataset.bookmark(&b.name).ok()?,
                        guid: b.guid,
                    })
                }),
        );
    }
    out
}

#[cfg(test)]
mod tests;
