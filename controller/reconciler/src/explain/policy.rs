//! The dry run of a `ReplicationPolicy`: the reconcile's own steps (`replication::admit`,
//! `Parties::of`, `plan_once` with the shared inventory cache, `TargetPrune::plan`) up to
//! the plan; nothing is sent, held, claimed or destroyed.

use jiff::Timestamp;
use kube::ResourceExt as _;
use tidepool_agent::LeaderEpoch;
use tidepool_api::{Owner, ReplicationPolicy};
use tidepool_plan::DatasetInventory;
use tidepool_plan::replication::{
    Action, Base, Common, Divergence, DivergenceKind, ReplicationPlan, Side as PlanSide, Step,
    Stream,
};

use super::view::{
    CommonSnapshot, DatasetPlan, Explanation, PlannedAction, PlannedDivergence, PlannedStep,
    Problem, ReplicationEnd, ReplicationExplanation, SendBase, Side, TargetRetention,
};
use crate::reconcile::{Context, ReconcileError};
use crate::replication::object_store::{Store, plan_upload};
use crate::replication::store_plan::StorePlan;
use crate::replication::{Admitted, Parties, Replica, TargetPrune, admit, plan_once};
use tidepool_plan::replication as planner;
use tidepool_wire::bookkeeping::BookkeepingAction;
use tidepool_wire::transfer::{IncrementalBase, TransferStream};

pub(crate) async fn explain(
    ctx: &Context,
    epoch: LeaderEpoch,
    obj: &ReplicationPolicy,
    now: Timestamp,
) -> Result<Explanation, ReconcileError> {
    let ns = obj
        .namespace()
        .ok_or(ReconcileError::Incomplete("namespace"))?;
    let spec = &obj.spec;
    let mut view = ReplicationExplanation {
        source: ReplicationEnd {
            node: spec.source.node_name.clone(),
            dataset: spec.source.dataset.clone(),
        },
        target: spec
            .target
            .node
            .as_ref()
            .map(|t| ReplicationEnd {
                node: t.node_name.clone(),
                dataset: t.dataset.clone(),
            })
            .or_else(|| {
                spec.target.ssh.as_ref().map(|t| ReplicationEnd {
                    node: format!("ssh:{}@{}:{}", t.user, t.host, t.port),
                    dataset: t.dataset.clone(),
                })
            })
            .or_else(|| {
                // A store keys the streams by the source dataset's name.
                spec.target.object_store.as_ref().map(|t| ReplicationEnd {
                    node: format!("s3:{}/{}", t.bucket, t.prefix),
                    dataset: spec.source.dataset.clone(),
                })
            }),
        suspended: spec.suspend,
        last_common: None,
        divergence: None,
        steps: Vec::new(),
        target_retention: None,
    };
    let blocked = dry_run(ctx, epoch, obj, &ns, now, &mut view).await?;
    Ok(Explanation {
        kind: "ReplicationPolicy".into(),
        namespace: ns,
        name: obj.name_any(),
        generation: obj.metadata.generation,
        now,
        blocked,
        nodes: Vec::new(),
        replication: Some(view),
    })
}

/// Fills `out` as far as the reconcile would get; what blocks it, if anything.
async fn dry_run(
    ctx: &Context,
    epoch: LeaderEpoch,
    obj: &ReplicationPolicy,
    ns: &str,
    now: Timestamp,
    out: &mut ReplicationExplanation,
) -> Result<Option<Problem>, ReconcileError> {
    let problem = |reason: &str, message: String| {
        Some(Problem {
            reason: reason.to_owned(),
            message,
        })
    };
    let Admitted { valid, target } = match admit(obj, ctx, ns).await? {
        Ok(a) => a,
        Err(b) => return Ok(problem(b.reason, b.message)),
    };
    let parties = match Parties::of(ctx, obj, target, ns).await? {
        Ok(p) => p,
        Err(b) => return Ok(problem(b.reason, b.message)),
    };
    // The root dataset's replica (a recursive policy's descendants are planned alike).
    let root = Replica {
        source: obj.spec.source.dataset.clone(),
        target: target.dataset().clone(),
    };
    if let (Some(store), Some(target)) = (
        Store::of(ctx, epoch, &parties.target),
        obj.spec.target.object_store.as_ref(),
    ) {
        let (src, streams) = match store.read(&parties, &root).await {
            Ok(r) => r,
            Err(f) => return Ok(problem(f.reason, format!("{}: {}", f.node, f.message))),
        };
        let tag = planner::hold_tag(&parties.policy);
        let (plan, blocked) = plan_upload(&obj.spec, &parties, &tag, &src, &streams, target);
        describe_upload(&plan, out);
        return Ok(blocked.and_then(|b| problem(b.code.as_str(), b.message)));
    }
    let uid = obj.uid().ok_or(ReconcileError::Incomplete("uid"))?;
    let resume_failed = ctx.replication_memory.resume_failed(&uid);
    let planned = match plan_once(
        ctx,
        epoch,
        &obj.spec,
        &parties,
        &root,
        resume_failed.as_ref(),
        now,
    )
    .await
    {
        Ok(p) => p,
        Err(f) => {
            return Ok(problem(f.reason, format!("node {}: {}", f.node, f.message)));
        }
    };
    let prune = TargetPrune::of(&valid, &parties.policy, &parties.owner);
    describe(
        &planned.plan,
        prune.as_ref(),
        &planned.target,
        &parties.owner,
        out,
    );
    Ok(planned
        .plan
        .blocked
        .as_ref()
        .and_then(|b| problem(b.code.as_str(), b.message.clone())))
}

/// The plan, and the target's retention under it (none while the plan is blocked: the
/// reconcile prunes nothing then), as `explain` shows them. Pure.
pub(crate) fn describe(
    plan: &ReplicationPlan,
    prune: Option<&TargetPrune<'_>>,
    target: &DatasetInventory,
    owner: &Owner,
    out: &mut ReplicationExplanation,
) {
    out.last_common = plan.newest_common.as_ref().map(common);
    out.divergence = plan.divergence.as_ref().map(divergence);
    out.steps = plan.steps.iter().map(step).collect();
    out.target_retention = prune
        .filter(|_| plan.blocked.is_none())
        .map(|p| TargetRetention {
            after_steps: !plan.steps.is_empty(),
            plan: DatasetPlan::of(&p.plan(target, plan), owner, None),
        });
}

/// An object store's next upload and the source bookkeeping before it, as `explain`
/// shows them. The store's retention (whole chains) is decided by the agent on a fresh
/// listing after the sync, so it is not shown. Pure.
pub(crate) fn describe_upload(plan: &StorePlan, out: &mut ReplicationExplanation) {
    out.last_common = plan.newest_stored.as_ref().map(common);
    out.steps = plan.anchors.iter().map(anchor).collect();
    if let Some(send) = &plan.send {
        let action = match &send.stream {
            TransferStream::Full { snapshot } => PlannedAction::FullSend {
                snapshot: snapshot.clone(),
            },
            TransferStream::Incremental {
                base,
                to,
                intermediates,
            } => PlannedAction::IncrementalSend {
                base: match base {
                    IncrementalBase::Snapshot { name } => SendBase::Snapshot(name.clone()),
                    IncrementalBase::Bookmark { name } => SendBase::Bookmark(name.clone()),
                },
                to: to.clone(),
                intermediates: *intermediates,
            },
            TransferStream::Resume { .. } => PlannedAction::ResumeSend { to_guid: None },
        };
        out.steps.push(PlannedStep {
            action,
            reason: "Upload".into(),
            message: send.why.clone(),
            then: Vec::new(),
        });
    }
}

/// A source-side hold, release or bookmark of an object-store sync.
fn anchor(a: &BookkeepingAction) -> PlannedStep {
    let (action, message) = match a {
        BookkeepingAction::Hold { snapshot, tag } => (
            PlannedAction::Hold {
                side: Side::Source,
                snapshot: snapshot.snapshot.clone(),
                tag: tag.clone(),
            },
            "the store cannot hold: the source keeps what the next incremental needs",
        ),
        BookkeepingAction::Release { snapshot, tag } => (
            PlannedAction::Release {
                side: Side::Source,
                snapshot: snapshot.snapshot.clone(),
                tag: tag.clone(),
            },
            "no stored chain needs it any more",
        ),
        BookkeepingAction::Bookmark { snapshot, bookmark } => (
            PlannedAction::Bookmark {
                snapshot: snapshot.snapshot.clone(),
                bookmark: bookmark.clone(),
            },
            "an incremental can be sent from the bookmark if the snapshot goes",
        ),
        BookkeepingAction::DestroyBookmark { bookmark, .. } => (
            PlannedAction::DestroyBookmark {
                bookmark: bookmark.clone(),
            },
            "superseded",
        ),
        BookkeepingAction::Claim { snapshots } => (
            PlannedAction::Claim {
                snapshots: snapshots.iter().map(|r| r.snapshot.clone()).collect(),
            },
            "",
        ),
        BookkeepingAction::RotateAside { from, to } => (
            PlannedAction::RotateAside {
                from: from.clone(),
                to: to.clone(),
            },
            "",
        ),
        BookkeepingAction::AbortReceive { target } => (
            PlannedAction::AbortReceive {
                dataset: target.clone(),
            },
            "",
        ),
    };
    PlannedStep {
        action,
        reason: "ProtectStoredBase".into(),
        message: message.into(),
        then: Vec::new(),
    }
}

fn common(c: &Common) -> CommonSnapshot {
    CommonSnapshot {
        name: c.name.clone(),
        guid: c.guid,
        created: c.creation,
        on_source: c.on_source,
    }
}

fn divergence(d: &Divergence) -> PlannedDivergence {
    let (newer, written) = match &d.kind {
        DivergenceKind::SnapshotsAfterCommon { newest, .. } => (newest.clone(), None),
        DivergenceKind::ModifiedSinceCommon { written } => (Vec::new(), Some(*written)),
        DivergenceKind::NoCommonSnapshot { .. } => (Vec::new(), None),
    };
    PlannedDivergence {
        kind: d.kind.as_str().to_owned(),
        message: d.message.clone(),
        newer,
        written,
    }
}

fn side(s: PlanSide) -> Side {
    match s {
        PlanSide::Source => Side::Source,
        PlanSide::Target => Side::Target,
    }
}

fn step(s: &Step) -> PlannedStep {
    let mut then = Vec::new();
    let action = match &s.action {
        Action::Send(send) => {
            then = send.on_success.iter().map(step).collect();
            match &send.stream {
                Stream::Full { snapshot, .. } => PlannedAction::FullSend {
                    snapshot: snapshot.clone(),
                },
                Stream::Incremental {
                    base,
                    to,
                    intermediates,
                    ..
                } => PlannedAction::IncrementalSend {
                    base: match base {
                        Base::Snapshot { name, .. } => SendBase::Snapshot(name.clone()),
                        Base::Bookmark { name, .. } => SendBase::Bookmark(name.clone()),
                    },
                    to: to.clone(),
                    intermediates: *intermediates,
                },
                Stream::Resume { to_guid, .. } => PlannedAction::ResumeSend { to_guid: *to_guid },
            }
        }
        Action::AbortReceive { target } => PlannedAction::AbortReceive {
            dataset: target.clone(),
        },
        Action::RenameTarget { from, to } => PlannedAction::RotateAside {
            from: from.clone(),
            to: to.clone(),
        },
        Action::Hold {
            side: s,
            snapshot,
            tag,
            ..
        } => PlannedAction::Hold {
            side: side(*s),
            snapshot: snapshot.clone(),
            tag: tag.clone(),
        },
        Action::Release {
            side: s,
            snapshot,
            tag,
            ..
        } => PlannedAction::Release {
            side: side(*s),
            snapshot: snapshot.clone(),
            tag: tag.clone(),
        },
        Action::Bookmark {
            snapshot, bookmark, ..
        } => PlannedAction::Bookmark {
            snapshot: snapshot.clone(),
            bookmark: bookmark.clone(),
        },
        Action::DestroyBookmark { bookmark, .. } => PlannedAction::DestroyBookmark {
            bookmark: bookmark.clone(),
        },
        Action::SetOwner { snapshots, .. } => PlannedAction::Claim {
            snapshots: snapshots.iter().map(|r| r.snapshot.clone()).collect(),
        },
    };
    PlannedStep {
        action,
        reason: s.reason.code.as_str().to_owned(),
        message: s.reason.message.clone(),
        then,
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
