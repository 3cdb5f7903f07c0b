//! The ReplicationPolicy reconciler, for `node`, `ssh` and `objectStore` targets ([`target`]; an
//! object store's sync is [`object_store`]): validate the spec, check the
//! namespace's grants on both ends (`Send` on the source, `Receive` on the target), then
//! for each replicated dataset ([`dataset`]: the source, and its descendants when
//! recursive) read both inventories, plan with the pure planner and run its steps through
//! the two agents ([`run`]), plan again until nothing is left, then report ([`status`],
//! [`progress`] while a send runs). A deleted policy lets go of its holds ([`deletion`]).
//!
//! When it runs: at each slot of `spec.schedule`, or without one right after a new
//! snapshot of a schedule covering the source ([`triggers`]) and at the latest every
//! [`crate::ReconcilerConfig::replication_poll`]; at once for a new `trigger.manual`, a
//! grant change or a change of either node's `ZfsNode`; a failing sync backs off. Every run
//! plans from fresh inventories, so a run after a crash, a cut transfer or a lost
//! bookkeeping call repairs what is left.

pub mod dataset;
pub mod deletion;
pub mod drill;
pub mod object_store;
pub mod progress;
pub mod run;
pub mod status;
pub mod store_plan;
pub mod target;
pub mod triggers;

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
use tidepool_api::replication_policy::ReplicationPolicyStatus;
use tidepool_api::{DatasetGrant, DatasetName, Owner, ReplicationPolicy, ValidReplicationPolicy};
use tidepool_plan::replication::{self as planner, ResumeFailure};
use tidepool_plan::schedule::Slots;

use crate::agents::AgentEndpoint;
use crate::checks::labels_of;
use crate::reconcile::{Context, ReconcileError};
use crate::status::Blocker;
use crate::{reasons, resolve, writes};
use dataset::PolicySync;
pub(crate) use dataset::{Replica, TargetPrune, plan_once};
use progress::ProgressReport;
use run::{Ends, Ran, SendContext};
use status::{Outcome, Sync};
pub use target::TargetEnd;
pub(crate) use target::TargetRef;

/// At most this many plan-and-run rounds per reconcile: a full send with intermediates is
/// two sends, then the round that finds nothing left.
pub(crate) const MAX_ROUNDS: usize = 4;

/// What the reconciler remembers between runs of one policy (by uid): the slot it last
/// synced for, and a resume that failed (so the next plan aborts the token).
#[derive(Debug, Default)]
pub struct Memory {
    entries: Mutex<HashMap<String, Remembered>>,
}

#[derive(Debug, Default, Clone)]
pub struct Remembered {
    slot: Option<Timestamp>,
    pub resume_failed: Option<ResumeFailure>,
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
        return deletion::handle(&obj, &ctx, epoch, Timestamp::now()).await;
    }
    deletion::ensure_finalizer(&obj, &ctx).await?;
    ctx.metrics.reconciles.inc();
    let now = Timestamp::now();
    let ns = obj
        .namespace()
        .ok_or(ReconcileError::Incomplete("namespace"))?;
    let name = obj.name_any();
    let uid = obj.uid().ok_or(ReconcileError::Incomplete("uid"))?;
    let old = obj.status.clone().unwrap_or_default();
    let progress = ProgressReport::new(&ns, &name, &old);
    let outcome = evaluate(&obj, &ctx, epoch, &uid, &progress, now).await?;
    let mut new = status::next(&old, &outcome, obj.metadata.generation, now);
    let drilled = if drill::due(&obj, &outcome, &new, Timestamp::now()) {
        match drill::run(&obj, &ctx, epoch, &ns, &uid).await {
            Ok(d) => {
                ctx.metrics.restore_drill(&ns, &name, d.passed, d.time.0);
                Some(d)
            }
            // The API server could not be asked (grants, labels): no verdict on the store;
            // the drill is tried again after `retry`, and the sync's status still goes out.
            Err(e) => {
                tracing::warn!(object = %name, error = %e, "the restore drill could not run");
                None
            }
        }
    } else {
        None
    };
    drill::record(&mut new, &obj, drilled, Timestamp::now());
    if new != old || progress.written() {
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
        // Backing off: the target coming back (its ZfsNode changes) ends the wait at once.
        Outcome::Synced(sync) if sync.failure.is_some() => {
            backoff(ctx.config.retry, new.consecutive_failures)
        }
        Outcome::Synced(sync) => sync.next.map_or(ctx.config.replication_poll, until),
    };
    let wait = drill::requeue(
        wait,
        new.next_drill_time.as_ref().map(|t| until(t.0)),
        &outcome,
        ctx.config.retry,
    );
    Ok(Action::requeue(
        wait.min(ctx.config.max_requeue) + Duration::from_millis(5),
    ))
}

/// `retry` doubled per failure after the first, at most 32 times `retry`.
fn backoff(retry: Duration, consecutive_failures: i32) -> Duration {
    let doublings = u32::try_from(consecutive_failures.saturating_sub(1)).unwrap_or(0);
    retry.saturating_mul(1 << doublings.min(5))
}

fn until(t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
#[test]
fn failures_back_off_doubling_up_to_32_times() {
    let r = Duration::from_secs(2);
    let waits: Vec<u64> = [0, 1, 2, 3, 6, 7, 100, i32::MAX]
        .iter()
        .map(|&n| backoff(r, n).as_secs())
        .collect();
    assert_eq!(waits, [2, 2, 4, 8, 64, 64, 64, 64]);
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
/// target kind this version serves, and grants (`Send` on the source; `Receive` on a
/// target node: a host outside the cluster has no grant of its own, the policy's Secret
/// is its credential).
pub(crate) struct Admitted<'a> {
    pub valid: ValidReplicationPolicy<'a>,
    pub target: TargetRef<'a>,
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
    let Some(target) = TargetRef::of(&obj.spec) else {
        return block(
            reasons::TARGET_KIND_UNSUPPORTED,
            "the spec names no target kind".into(),
        );
    };
    let source = &obj.spec.source;
    if let Err(b) = permitted(ctx, ns, &source.node_name, &source.dataset, Access::Send).await? {
        return Ok(Err(b));
    }
    if let TargetRef::Node(node) = target
        && let Err(b) = permitted(ctx, ns, &node.node_name, &node.dataset, Access::Receive).await?
    {
        return Ok(Err(b));
    }
    Ok(Ok(Admitted { valid, target }))
}

/// Who takes part in a sync: the source agent and the target, the owner the policy
/// records on what it receives, the owner its selection picks, and `<namespace>/<name>`
/// (its holds and bookmarks).
pub(crate) struct Parties {
    pub source: AgentEndpoint,
    pub target: TargetEnd,
    pub owner: Owner,
    pub selection_owner: Option<Owner>,
    pub policy: String,
}

impl Parties {
    pub(crate) async fn of(
        ctx: &Context,
        obj: &ReplicationPolicy,
        target: TargetRef<'_>,
        ns: &str,
    ) -> Result<Result<Parties, Blocker>, ReconcileError> {
        let source = &obj.spec.source;
        let invalid = |e: tidepool_api::owner::OwnerError| Blocker {
            reason: tidepool_api::condition::reason::INVALID_SPEC,
            message: e.to_string(),
        };
        let source_agent = match endpoint(ctx, &source.node_name) {
            Ok(a) => a,
            Err(b) => return Ok(Err(b)),
        };
        let target = match target.resolve(ctx, ns, &source_agent).await? {
            Ok(t) => t,
            Err(b) => return Ok(Err(b)),
        };
        let owned = || -> Result<_, Blocker> {
            let owner = policy_owner(ns, &obj.name_any()).map_err(invalid)?;
            let selection_owner = source
                .snapshots
                .schedule_name
                .as_ref()
                .map(|s| crate::owner::schedule_owner(ns, s))
                .transpose()
                .map_err(invalid)?;
            Ok((owner, selection_owner))
        };
        Ok(owned().map(|(owner, selection_owner)| Parties {
            source: source_agent,
            target,
            owner,
            selection_owner,
            policy: format!("{ns}/{}", obj.name_any()),
        }))
    }

    pub(crate) fn pair(&self) -> Ends<'_> {
        Ends {
            source: &self.source,
            target: &self.target,
        }
    }
}

async fn evaluate(
    obj: &ReplicationPolicy,
    ctx: &Context,
    epoch: LeaderEpoch,
    uid: &str,
    progress: &ProgressReport<'_>,
    now: Timestamp,
) -> Result<Outcome, ReconcileError> {
    let (ns, old) = (progress.namespace, progress.base);
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
    let parties = match Parties::of(ctx, obj, target, ns).await? {
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
        progress,
    };
    let policy_sync = PolicySync {
        ctx,
        epoch,
        parties: &parties,
        send: &send,
        spec: &obj.spec,
        prune: TargetPrune::of(&valid, policy, owner),
    };
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
        replicas: 0,
    };
    match policy_sync.replicas().await {
        Ok(replicas) => {
            sync.replicas = replicas.len();
            for (i, replica) in replicas.iter().enumerate() {
                let one = policy_sync.dataset(replica, &mut memory).await;
                sync.add(i == 0, one);
                // A failed step stops the sync (a child's replica needs its parent's); a
                // blocked dataset (e.g. diverged) does not keep the others from syncing.
                if sync.failure.is_some() {
                    break;
                }
            }
        }
        Err(f) => sync.failure = Some(f),
    }
    sync.ended = Timestamp::now();
    if sync.failure.is_none() {
        memory.slot = slot.or(memory.slot);
        sync.manual = manual;
    }
    ctx.replication_memory.set(uid, memory);
    Ok(Outcome::Synced(Box::new(sync)))
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

/// The agent endpoint a node's `ZfsNode` publishes.
pub(crate) fn endpoint(ctx: &Context, node: &str) -> Result<AgentEndpoint, Blocker> {
    let zfs_node = ctx
        .zfs_nodes
        .get(&kube::runtime::reflector::ObjectRef::new(node));
    AgentEndpoint::of(node, zfs_node.as_deref()).map_err(|e| Blocker {
        reason: e.reason(),
        message: e.to_string(),
    })
}

/// Events for the transitions of `Ready` and `Diverged`, and a Normal event per sync that
/// sent data.
async fn publish_transitions(
    ctx: &Context,
    obj: &ReplicationPolicy,
    old: &ReplicationPolicyStatus,
    new: &ReplicationPolicyStatus,
) {
    for type_ in [kind::READY, kind::DIVERGED, kind::VERIFIED] {
        let (before, after) = (find(&old.conditions, type_), find(&new.conditions, type_));
        let Some(after) = after else { continue };
        if before.is_some_and(|b| b.status == after.status && b.reason == after.reason) {
            continue;
        }
        let good = (after.status == "True") == (type_ != kind::DIVERGED);
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
