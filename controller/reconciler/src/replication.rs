//! The ReplicationPolicy reconciler, for `node` targets: validate the spec, check the
//! namespace's grants on both ends (`Send` on the source, `Receive` on the target), read
//! both inventories, plan with the pure planner and run its steps through the two agents
//! ([`run`]), plan again until nothing is left, then report ([`status`]).
//!
//! When it runs: at each slot of `spec.schedule`, or without one every
//! [`crate::ReconcilerConfig::replication_poll`] (a new source snapshot is then picked up within
//! that time); at once for a new `trigger.manual`. Every run plans from fresh inventories,
//! so a run after a crash, a cut transfer or a lost bookkeeping call repairs what is left.

pub mod run;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tidepool_agent::LeaderEpoch;
use tidepool_api::condition::{find, kind};
use tidepool_api::dataset_grant::Access;
use tidepool_api::owner::OwnerKind;
use tidepool_api::replication_policy::{NodeTarget, ReplicationPolicyStatus};
use tidepool_api::{DatasetGrant, DatasetName, Owner, ReplicationPolicy, ValidReplicationPolicy};
use tidepool_plan::DatasetInventory;
use tidepool_plan::replication::{self as planner, ReplicationInput, ResumeFailure};
use tidepool_plan::schedule::Slots;
use tidepool_wire::PoolInventory;

use tidepool_plan::retention::{self, DatasetRetention, Protections, RetentionRules};
use tidepool_wire::{DestroySnapshots, Request, Response, SnapshotRef};

use crate::agents::{AgentEndpoint, AgentError};
use crate::checks::labels_of;
use crate::node_run::inventory;
use crate::reconcile::{Context, ReconcileError};
use crate::status::Blocker;
use crate::{reasons, resolve, writes};
use run::{Ends, Ran, SendContext, StepFailed};
use status::{Outcome, Sync};

/// At most this many plan-and-run rounds per reconcile: a full send with intermediates is
/// two sends, then the round that finds nothing left.
const MAX_ROUNDS: usize = 4;

/// What the reconciler remembers between runs of one policy (by uid): the slot it last
/// synced for, and a resume that failed (so the next plan aborts the token).
#[derive(Debug, Default)]
pub struct Memory {
    entries: Mutex<HashMap<String, Remembered>>,
}

#[derive(Debug, Default, Clone)]
struct Remembered {
    slot: Option<Timestamp>,
    resume_failed: Option<ResumeFailure>,
}

impl Memory {
    fn get(&self, uid: &str) -> Remembered {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(uid).cloned().unwrap_or_default()
    }

    /// The resume that failed last, which the next plan aborts instead of resuming.
    pub(crate) fn resume_failed(&self, uid: &str) -> Option<ResumeFailure> {
        self.get(uid).resume_failed
    }

    fn set(&self, uid: &str, r: Remembered) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.insert(uid.to_owned(), r);
    }
}

/// `ReplicationPolicy/<namespace>/<name>`: the owner of what the policy received.
pub fn policy_owner(ns: &str, name: &str) -> Result<Owner, tidepool_api::owner::OwnerError> {
    Owner::new(OwnerKind::ReplicationPolicy, ns, name)
}

pub async fn reconcile(
    obj: Arc<ReplicationPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let Some(epoch) = *ctx.epoch.borrow() else {
        return Ok(Action::await_change());
    };
    if obj.metadata.deletion_timestamp.is_some() {
        // No finalizer yet: the replica stays (as `deletionPolicy: Retain`).
        return Ok(Action::await_change());
    }
    ctx.metrics.reconciles.inc();
    let now = Timestamp::now();
    let ns = obj
        .namespace()
        .ok_or(ReconcileError::Incomplete("namespace"))?;
    let name = obj.name_any();
    let uid = obj.uid().ok_or(ReconcileError::Incomplete("uid"))?;
    let old = obj.status.clone().unwrap_or_default();
    let outcome = evaluate(&obj, &ctx, epoch, &ns, &uid, &old, now).await?;
    let new = status::next(&old, &outcome, obj.metadata.generation, now);
    if new != old {
        writes::apply_status::<ReplicationPolicy>(&ctx, &ns, &name, &new).await?;
        ctx.metrics.status_writes.inc();
    }
    publish_transitions(&ctx, &obj, &old, &new).await;
    if let Outcome::Synced(sync) = &outcome {
        if sync.pruned > 0 {
            let note = format!(
                "retention destroyed {} replicated snapshot(s) on the target",
                sync.pruned
            );
            writes::publish(
                &ctx,
                obj.as_ref(),
                EventType::Normal,
                reasons::PRUNED,
                note,
                "Prune",
            )
            .await;
        }
        let took = (sync.ran.sends > 0).then(|| {
            i64::try_from(sync.ended.duration_since(sync.started).as_millis()).unwrap_or(i64::MAX)
        });
        ctx.metrics
            .replication_run(&ns, &name, sync.ran.bytes, new.consecutive_failures, took);
    }
    if let Some(t) = &new.last_replicated_snapshot_time {
        ctx.metrics
            .replication_lag(&ns, &name, Timestamp::now().duration_since(t.0).as_secs());
    }
    let wait = match &outcome {
        Outcome::Blocked(_) => ctx.config.max_requeue,
        Outcome::Suspended => ctx.config.max_requeue,
        Outcome::NotDue { next } => until(*next),
        Outcome::Synced(sync) if sync.failure.is_some() => ctx.config.retry,
        Outcome::Synced(sync) => sync.next.map_or(ctx.config.replication_poll, until),
    };
    Ok(Action::requeue(
        wait.min(ctx.config.max_requeue) + Duration::from_millis(5),
    ))
}

fn until(t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO)
}

pub fn error_policy(
    obj: Arc<ReplicationPolicy>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    tracing::warn!(object = %obj.name_any(), error = %error, "replication reconcile failed");
    ctx.metrics.error(error.reason());
    Action::requeue(ctx.config.retry)
}

fn blocked(reason: &'static str, message: impl Into<String>) -> Outcome {
    Outcome::Blocked(Blocker {
        reason,
        message: message.into(),
    })
}

/// What both the reconcile and `explain` establish before anything else: a valid spec, a
/// `node` target, and grants on both ends (`Send` on the source, `Receive` on the target).
pub(crate) struct Admitted<'a> {
    pub valid: ValidReplicationPolicy<'a>,
    pub target: &'a NodeTarget,
}

pub(crate) async fn admit<'a>(
    obj: &'a ReplicationPolicy,
    ctx: &Context,
    ns: &str,
) -> Result<Result<Admitted<'a>, Blocker>, ReconcileError> {
    let block = |reason: &'static str, message: String| Ok(Err(Blocker { reason, message }));
    let valid = match obj.spec.validate() {
        Ok(v) => v,
        Err(e) => return block(e.reason(), e.to_string()),
    };
    let Some(target) = &obj.spec.target.node else {
        return block(
            reasons::TARGET_KIND_UNSUPPORTED,
            "only `node` targets are served by this version; `ssh` and `objectStore` targets come later".into(),
        );
    };
    let source = &obj.spec.source;
    if let Err(b) = permitted(ctx, ns, &source.node_name, &source.dataset, Access::Send).await? {
        return Ok(Err(b));
    }
    if let Err(b) = permitted(ctx, ns, &target.node_name, &target.dataset, Access::Receive).await? {
        return Ok(Err(b));
    }
    Ok(Ok(Admitted { valid, target }))
}

/// Who takes part in a sync: the two agents, the owner the policy records on what it
/// receives, the owner its selection picks, and `<namespace>/<name>` (its holds and
/// bookmarks).
pub(crate) struct Parties {
    pub ends: (AgentEndpoint, AgentEndpoint),
    pub owner: Owner,
    pub selection_owner: Option<Owner>,
    pub policy: String,
}

impl Parties {
    pub(crate) fn of(
        ctx: &Context,
        obj: &ReplicationPolicy,
        target: &NodeTarget,
        ns: &str,
    ) -> Result<Parties, Blocker> {
        let source = &obj.spec.source;
        let invalid = |e: tidepool_api::owner::OwnerError| Blocker {
            reason: tidepool_api::condition::reason::INVALID_SPEC,
            message: e.to_string(),
        };
        let ends = endpoints(ctx, &source.node_name, &target.node_name)?;
        let owner = policy_owner(ns, &obj.name_any()).map_err(invalid)?;
        let selection_owner = source
            .snapshots
            .schedule_name
            .as_ref()
            .map(|s| crate::owner::schedule_owner(ns, s))
            .transpose()
            .map_err(invalid)?;
        Ok(Parties {
            ends,
            owner,
            selection_owner,
            policy: format!("{ns}/{}", obj.name_any()),
        })
    }

    pub(crate) fn pair(&self) -> Ends<'_> {
        Ends {
            source: &self.ends.0,
            target: &self.ends.1,
        }
    }
}

/// One plan from fresh inventories of both ends, and the inventories it was made from.
pub(crate) struct Planned {
    pub target: DatasetInventory,
    pub plan: planner::ReplicationPlan,
}

/// Reads both inventories (through the shared cache) and plans. Sends nothing.
pub(crate) async fn plan_once(
    ctx: &Context,
    epoch: LeaderEpoch,
    obj: &ReplicationPolicy,
    parties: &Parties,
    target: &NodeTarget,
    resume_failed: Option<&ResumeFailure>,
    now: Timestamp,
) -> Result<Planned, EarlyFailure> {
    let source = &obj.spec.source;
    let (src, dst) = inventories(ctx, epoch, &parties.pair(), &source.dataset, target).await?;
    let input = ReplicationInput {
        policy: &parties.policy,
        source: &src,
        target: &dst,
        send: &obj.spec.send,
        selection: &source.snapshots,
        selection_owner: parties.selection_owner.as_ref(),
        owner: &parties.owner,
        on_divergence: obj.spec.on_divergence,
        resume_failed,
    };
    let plan = planner::plan(&input, now);
    Ok(Planned { target: dst, plan })
}

async fn evaluate(
    obj: &ReplicationPolicy,
    ctx: &Context,
    epoch: LeaderEpoch,
    ns: &str,
    uid: &str,
    old: &ReplicationPolicyStatus,
    now: Timestamp,
) -> Result<Outcome, ReconcileError> {
    let Admitted { valid, target } = match admit(obj, ctx, ns).await? {
        Ok(a) => a,
        Err(b) => return Ok(Outcome::Blocked(b)),
    };
    if obj.spec.suspend {
        return Ok(Outcome::Suspended);
    }
    let mut memory = ctx.replication_memory.get(uid);
    let manual = obj
        .spec
        .trigger
        .as_ref()
        .and_then(|t| t.manual.clone())
        .filter(|m| old.last_manual_trigger.as_ref() != Some(m));
    let slots = match &valid.schedule {
        Some(s) => match Slots::new(s, uid) {
            Ok(slots) => Some(slots),
            Err(e) => return Ok(blocked(e.reason(), e.to_string())),
        },
        None => None,
    };
    let (slot, next) = match &slots {
        Some(slots) => (
            slots.latest_at_or_before(now).ok(),
            slots.next_after(now).ok(),
        ),
        None => (None, None),
    };
    let due = slots.is_none() || slot.is_some_and(|s| memory.slot.is_none_or(|m| m < s));
    if !due && manual.is_none() {
        return Ok(match next {
            Some(next) => Outcome::NotDue { next },
            None => blocked(reasons::INVALID_SCHEDULE, "the schedule has no next slot"),
        });
    }
    let parties = match Parties::of(ctx, obj, target, ns) {
        Ok(p) => p,
        Err(b) => return Ok(Outcome::Blocked(b)),
    };
    let Parties { owner, policy, .. } = &parties;
    let step_prefix = format!("g{}", obj.metadata.generation.unwrap_or(0));
    let hold_tag = planner::hold_tag(policy);
    let send = SendContext {
        owner,
        hold_tag: &hold_tag,
        step_prefix: &step_prefix,
        bandwidth_limit: valid.bandwidth_limit,
    };
    let pair = parties.pair();
    let mut sync = Sync {
        started: now,
        ended: now,
        plan: None,
        ran: Ran::default(),
        failure: None,
        target_newest: None,
        resume_token_present: false,
        manual: None,
        next,
        pruned: 0,
    };
    let mut last_target = None;
    // One plan more than rounds that run: the status reports the last plan, which must
    // see what the last round did. (Were it the plan of the round that ran, the status
    // would name the common snapshot that round's send replaced and whose holds it
    // released: seen on emulated nodes, where each round finds a newer schedule snapshot.)
    for round in 0..=MAX_ROUNDS {
        let resume_failed = memory.resume_failed.as_ref();
        let planned = match plan_once(
            ctx,
            epoch,
            obj,
            &parties,
            target,
            resume_failed,
            Timestamp::now(),
        )
        .await
        {
            Ok(p) => p,
            Err(f) => {
                sync.failure = Some(f.with(&sync.ran));
                break;
            }
        };
        let dst = planned.target;
        sync.target_newest = dst.snapshots.iter().map(|s| s.creation).max();
        sync.resume_token_present = dst.receive_resume_token.is_some();
        let steps = planned.plan.steps.clone();
        sync.plan = Some(planned.plan);
        if steps.is_empty() || round == MAX_ROUNDS {
            if steps.is_empty() {
                last_target = Some(dst);
            }
            break;
        }
        match run::run_steps(ctx, epoch, &pair, &send, &steps).await {
            Ok(ran) => {
                // A resume that went through, or a token aborted: the failure is history.
                memory.resume_failed = None;
                sync.ran.sends += ran.sends;
                sync.ran.bytes += ran.bytes;
                sync.ran.rotated_to = ran.rotated_to.or(sync.ran.rotated_to.take());
            }
            Err(f) => {
                sync.ran.sends += f.ran.sends;
                sync.ran.bytes += f.ran.bytes;
                memory.resume_failed = f.resume_failed.clone();
                ctx.metrics.error(f.reason);
                sync.failure = Some(f);
                break;
            }
        }
    }
    // Target retention only once the replica is up to date: nothing in flight then, and
    // the newest common snapshot (held anyway) is protected.
    if let (None, Some(prune), Some(dst), Some(plan)) = (
        &sync.failure,
        TargetPrune::of(&valid, policy, owner),
        &last_target,
        &sync.plan,
    ) && plan.blocked.is_none()
    {
        match prune.run(ctx, epoch, pair.target, dst, plan).await {
            Ok(n) => sync.pruned = n,
            Err(f) => sync.failure = Some(f.with(&sync.ran)),
        }
    }
    sync.ended = Timestamp::now();
    if sync.failure.is_none() {
        memory.slot = slot.or(memory.slot);
        sync.manual = manual;
    }
    ctx.replication_memory.set(uid, memory);
    Ok(Outcome::Synced(Box::new(sync)))
}

/// Retention on the target, over the snapshots this policy received and claimed only. It
/// runs once the replica is up to date (a plan with no steps left); the newest common
/// snapshot is protected.
pub(crate) struct TargetPrune<'a> {
    retention: &'a tidepool_api::common::Retention,
    time_zone: jiff::tz::TimeZone,
    policy: &'a str,
    owner: &'a Owner,
}

impl<'a> TargetPrune<'a> {
    /// `None` when the policy has no retention: every snapshot on the target is kept.
    pub(crate) fn of(
        valid: &ValidReplicationPolicy<'a>,
        policy: &'a str,
        owner: &'a Owner,
    ) -> Option<Self> {
        Some(Self {
            retention: valid.spec.retention.as_ref()?,
            // Periods are counted in the schedule's time zone, UTC without one.
            time_zone: valid
                .schedule
                .as_ref()
                .map_or(jiff::tz::TimeZone::UTC, |s| s.time_zone.clone()),
            policy,
            owner,
        })
    }

    /// What retention destroys and keeps on the target, and why.
    pub(crate) fn plan<'d>(
        &self,
        dst: &'d DatasetInventory,
        plan: &planner::ReplicationPlan,
    ) -> DatasetRetention<'d> {
        let mut protections = Protections::new();
        plan.protect(self.policy, &mut protections);
        let rules = RetentionRules {
            retention: self.retention,
            time_zone: &self.time_zone,
            owner: self.owner,
            protections: &protections,
        };
        retention::plan_dataset(&rules, dst)
    }

    /// Destroys what retention lets go; how many were destroyed.
    async fn run(
        &self,
        ctx: &Context,
        epoch: LeaderEpoch,
        target: &AgentEndpoint,
        dst: &DatasetInventory,
        plan: &planner::ReplicationPlan,
    ) -> Result<u32, EarlyFailure> {
        let snapshots: Vec<SnapshotRef> = self
            .plan(dst, plan)
            .destroy
            .iter()
            .filter_map(|d| {
                Some(SnapshotRef {
                    snapshot: d.full_name(&dst.dataset).ok()?,
                    guid: d.snapshot.guid,
                })
            })
            .collect();
        if snapshots.is_empty() {
            return Ok(0);
        }
        let request = Request::DestroySnapshots(DestroySnapshots {
            snapshots,
            owner: self.owner.clone(),
        });
        let failed = |e: AgentError| EarlyFailure {
            node: target.node.clone(),
            reason: e.reason(),
            message: e.chain(),
        };
        match ctx.agents.call(target, epoch, request).await {
            Ok(Response::SnapshotsDestroyed(d)) => {
                ctx.metrics
                    .snapshots_destroyed
                    .inc_by(d.destroyed.len() as u64);
                Ok(u32::try_from(d.destroyed.len()).unwrap_or(u32::MAX))
            }
            Ok(other) => Err(failed(AgentError::unexpected(
                &target.node,
                "DestroySnapshots",
                &other,
            ))),
            Err(e) => Err(failed(e)),
        }
    }
}

/// Whether the namespace's grants let it use `dataset` on `node` for `access`.
async fn permitted(
    ctx: &Context,
    ns: &str,
    node: &str,
    dataset: &DatasetName,
    access: Access,
) -> Result<Result<(), Blocker>, ReconcileError> {
    let grants: Vec<DatasetGrant> = ctx.grants.state().iter().map(|g| (**g).clone()).collect();
    let ns_labels = if resolve::needs_namespace_labels(&grants) {
        labels_of::<k8s_openapi::api::core::v1::Namespace>(&ctx.client, ns).await?
    } else {
        resolve::Labels::new()
    };
    let node_labels = if resolve::needs_node_labels(&grants) {
        labels_of::<k8s_openapi::api::core::v1::Node>(&ctx.client, node).await?
    } else {
        resolve::Labels::new()
    };
    if resolve::permitted(&grants, ns, &ns_labels, node, &node_labels, dataset, access) {
        Ok(Ok(()))
    } else {
        Ok(Err(Blocker {
            reason: reasons::NOT_PERMITTED,
            message: format!(
                "no DatasetGrant lets namespace {ns} use {dataset} on node {node} for {access:?}"
            ),
        }))
    }
}

fn endpoints(
    ctx: &Context,
    source: &str,
    target: &str,
) -> Result<(AgentEndpoint, AgentEndpoint), Blocker> {
    let of = |node: &str| {
        let zfs_node = ctx
            .zfs_nodes
            .get(&kube::runtime::reflector::ObjectRef::new(node));
        AgentEndpoint::of(node, zfs_node.as_deref()).map_err(|e| Blocker {
            reason: e.reason(),
            message: e.to_string(),
        })
    };
    Ok((of(source)?, of(target)?))
}

/// A failure before any step ran (an inventory), as a step failure.
pub(crate) struct EarlyFailure {
    pub node: String,
    pub reason: &'static str,
    pub message: String,
}

impl EarlyFailure {
    fn with(self, ran: &Ran) -> StepFailed {
        StepFailed {
            node: self.node,
            reason: self.reason,
            message: self.message,
            resume_failed: None,
            ran: ran.clone(),
        }
    }
}

/// Both datasets' inventories, read at once.
async fn inventories(
    ctx: &Context,
    epoch: LeaderEpoch,
    ends: &Ends<'_>,
    source: &DatasetName,
    target: &NodeTarget,
) -> Result<(DatasetInventory, DatasetInventory), EarlyFailure> {
    let read = |agent: &AgentEndpoint, dataset: DatasetName| {
        let agent = agent.clone();
        async move {
            let pool: Arc<PoolInventory> = inventory(ctx, &agent, epoch, dataset.pool())
                .await
                .map_err(|p| EarlyFailure {
                    node: agent.node.clone(),
                    reason: p.reason(),
                    message: p.message(),
                })?;
            Ok::<_, EarlyFailure>(
                pool.dataset(&dataset)
                    .cloned()
                    .unwrap_or_else(|| DatasetInventory::absent(dataset)),
            )
        }
    };
    let (src, dst) = futures::join!(
        read(ends.source, source.clone()),
        read(ends.target, target.dataset.clone())
    );
    Ok((src?, dst?))
}

/// Events for the transitions of `Ready` and `Diverged`, and a Normal event per sync that
/// sent data.
async fn publish_transitions(
    ctx: &Context,
    obj: &ReplicationPolicy,
    old: &ReplicationPolicyStatus,
    new: &ReplicationPolicyStatus,
) {
    for type_ in [kind::READY, kind::DIVERGED] {
        let (before, after) = (find(&old.conditions, type_), find(&new.conditions, type_));
        let Some(after) = after else { continue };
        if before.is_some_and(|b| b.status == after.status && b.reason == after.reason) {
            continue;
        }
        let good = (after.status == "True") == (type_ == kind::READY);
        if before.is_none() && good && type_ == kind::DIVERGED {
            continue;
        }
        let event = if good {
            EventType::Normal
        } else {
            EventType::Warning
        };
        writes::publish(
            ctx,
            obj,
            event,
            &after.reason,
            after.message.clone(),
            "Replicate",
        )
        .await;
    }
    if new.last_sync_time != old.last_sync_time
        && let Some(c) = &new.last_common_snapshot
    {
        let note = format!(
            "sent {} bytes; the target now holds {c}",
            new.last_sync_bytes.unwrap_or(0)
        );
        writes::publish(
            ctx,
            obj,
            EventType::Normal,
            reasons::SYNCED,
            note,
            "Replicate",
        )
        .await;
    }
}
