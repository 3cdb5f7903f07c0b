//! The SnapshotSchedule reconciler: validate, resolve nodes and grants, ask each node's
//! agent for its inventory, snapshot and prune as the planner says, write status and
//! events. `now` is read once per reconcile, here at the edge, and passed down.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use tidepool_agent::LeaderEpoch;
use tidepool_api::{DatasetGrant, SnapshotSchedule, ZfsNode};
use tidepool_plan::naming;
use tidepool_plan::schedule;
use tokio::sync::watch;

use crate::agents::Agents;
pub use crate::checks::{admissible, nodes_of};
use crate::deletion;
use crate::metrics::Metrics;
use crate::node_run::{NodePlan, run_node};
pub use crate::node_run::{NodeProblem, inventory};
use crate::owner::schedule_owner;
use crate::status::pace::{self, StatusMemory, Write};
use crate::status::{self, Blocker, NodeFailure, NodeRun, Outcome};
use crate::writes::{ensure_finalizer, publish_transition};
pub use crate::writes::{patch_finalizers, publish, write_status};

/// The finalizer that `deletionPolicy: Delete` puts on an object.
pub const FINALIZER: &str = "tidepool.dev/snapshots";

/// Settings of the reconciler.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    pub field_manager: String,
    /// How long deletion waits for an unreachable node before leaving its snapshots.
    pub delete_give_up: Duration,
    /// The longest a schedule goes unlooked-at (also when nothing changes).
    pub max_requeue: Duration,
    /// How soon a failed run is retried (or sooner, at the next slot).
    pub retry: Duration,
    /// The least time between two routine status writes of one object (last/next times,
    /// counts); a change of a condition, an error, the generation or the manual echo is
    /// written at once. See [`crate::status::pace`].
    pub status_min_interval: Duration,
    /// How long before a slot a reconcile wakes to prepare its run (read the inventory,
    /// decide), so that at the slot itself only the `zfs snapshot` is left to do. See
    /// `node_run::prepared`.
    pub prepare_lead: Duration,
    /// How old a pool listing a schedule's run may decide from (with the controller's own
    /// takes and destroys since merged in): a spec change or a prepared slot then needs no
    /// agent round trip. Changes made outside Tidepool (a new child dataset, a snapshot
    /// destroyed by hand) are seen at most this much later; the agent checks every command
    /// against a fresh read whatever the view. See [`crate::inventories`].
    pub inventory_max_age: Duration,
    /// How many objects are reconciled at once. Reconciles on one pool share one inventory
    /// call to its agent, so more at once costs the agents nothing more; too few, and a
    /// burst of changes (200 spec edits, 1,000 slots at :00) waits in line.
    pub concurrency: u16,
    /// How often a ReplicationPolicy without a schedule looks for new source snapshots.
    pub replication_poll: Duration,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            field_manager: "tidepool-controller".into(),
            delete_give_up: Duration::from_secs(3600),
            max_requeue: Duration::from_secs(3600),
            retry: Duration::from_secs(10),
            status_min_interval: Duration::from_secs(5),
            prepare_lead: Duration::from_secs(2),
            inventory_max_age: Duration::from_secs(15),
            concurrency: 256,
            replication_poll: Duration::from_secs(30),
        }
    }
}

/// Everything a reconcile needs: the single injection point.
pub struct Context {
    pub client: Client,
    pub agents: Arc<dyn Agents>,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub epoch: watch::Receiver<Option<LeaderEpoch>>,
    pub zfs_nodes: Store<ZfsNode>,
    pub grants: Store<DatasetGrant>,
    pub config: ReconcilerConfig,
    pub inventories: Arc<crate::inventories::Inventories>,
    /// What status was last written per object, and when (the rate limit's memory).
    pub status_memory: StatusMemory,
    /// What the replication reconciler remembers between runs.
    pub replication_memory: crate::replication::Memory,
}

/// A reconcile that could not complete (the API server refused a write or a read).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("the object has no {0}")]
    Incomplete(&'static str),
    #[error("{what}: {source}")]
    Kube {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
}

impl ReconcileError {
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Incomplete(_) => "IncompleteObject",
            ReconcileError::Kube { .. } => "ApiError",
        }
    }
}

pub(crate) fn kube_err(what: &'static str) -> impl FnOnce(kube::Error) -> ReconcileError {
    move |source| ReconcileError::Kube { what, source }
}

pub async fn reconcile(
    obj: Arc<SnapshotSchedule>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let Some(epoch) = *ctx.epoch.borrow() else {
        // Not (or no longer) the leader: touch nothing.
        return Ok(Action::await_change());
    };
    ctx.metrics.reconciles.inc();
    let now = Timestamp::now();
    let ns = obj
        .namespace()
        .ok_or(ReconcileError::Incomplete("namespace"))?;
    let name = obj.name_any();
    if obj.meta().deletion_timestamp.is_some() {
        return deletion::handle(&obj, &ctx, epoch, now).await;
    }
    ensure_finalizer(&obj, &ctx).await?;

    let uid = obj.uid().ok_or(ReconcileError::Incomplete("uid"))?;
    let known = ctx
        .status_memory
        .known(&uid, &obj.status.clone().unwrap_or_default());
    let (outcome, interval) = evaluate(&obj, &ctx, epoch, &ns, &known.previous, now).await?;
    let new = status::next(&known.previous, &outcome, obj.metadata.generation, now);
    let write = pace::decide(
        &known.written,
        &new,
        known.written_at,
        ctx.config.status_min_interval,
        now,
    );
    match write {
        Write::Now => {
            let written = write_status(&ctx, &ns, &name, &new).await;
            ctx.status_memory
                .record(&uid, &known, &new, written.is_ok(), now);
            written?;
            ctx.metrics.status_writes.inc();
        }
        Write::Defer { .. } => {
            ctx.status_memory.record(&uid, &known, &new, false, now);
            ctx.metrics.status_writes_deferred.inc();
        }
        Write::Unchanged => ctx.status_memory.record(&uid, &known, &new, false, now),
    }
    publish_transition(&ctx, &obj, &known.previous, &new).await;
    let last_success = (new.consecutive_failures == 0)
        .then(|| new.last_snapshot_time.as_ref().map(|t| t.0.as_second()))
        .flatten();
    ctx.metrics.object(
        &ns,
        &name,
        last_success,
        new.consecutive_failures,
        interval.and_then(|i| u64::try_from(i.as_millis()).ok()),
    );
    // The wait starts when this reconcile ends, not when it began: measured from `now`, every
    // run would start late by its own length.
    let ended = Timestamp::now();
    let action = match write {
        Write::Defer { until } => requeue_deferred(&outcome, &ctx.config, until, ended),
        _ => requeue(&outcome, &ctx.config, ended),
    };
    Ok(action)
}

/// When to look again: at the planner's next due time, sooner after a failure.
pub fn requeue(outcome: &Outcome, config: &ReconcilerConfig, now: Timestamp) -> Action {
    Action::requeue(requeue_after(outcome, config, None, now))
}

/// [`requeue`], but no later than `until`, when a held-back status write is due.
pub fn requeue_deferred(
    outcome: &Outcome,
    config: &ReconcilerConfig,
    until: Timestamp,
    now: Timestamp,
) -> Action {
    Action::requeue(requeue_after(outcome, config, Some(until), now))
}

/// The wait [`requeue`] and [`requeue_deferred`] ask for.
pub fn requeue_after(
    outcome: &Outcome,
    config: &ReconcilerConfig,
    write_due: Option<Timestamp>,
    now: Timestamp,
) -> Duration {
    let until = |t: Timestamp| Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO);
    let mut wait = match outcome {
        // Fixed by a spec, grant or ZfsNode change, each of which triggers a reconcile.
        Outcome::Blocked(_) => config.max_requeue,
        Outcome::Ran {
            nodes, next_due, ..
        } => {
            // Woken `prepare_lead` early, the run is ready when its slot comes.
            let mut wait = next_due
                .map_or(config.max_requeue, |t| {
                    until(t).saturating_sub(config.prepare_lead)
                })
                .min(config.max_requeue);
            if nodes.iter().any(|(_, r)| r.failure.is_some()) {
                wait = wait.min(config.retry);
            }
            wait
        }
    };
    if let Some(t) = write_due {
        wait = wait.min(until(t));
    }
    // A few ms more, so a wake for a write or a slot finds it due.
    wait + Duration::from_millis(5)
}

/// What a reconcile found and did, and the gap between the schedule's current slot and
/// its next (the expected interval; for cron it varies from slot to slot).
async fn evaluate(
    obj: &SnapshotSchedule,
    ctx: &Context,
    epoch: LeaderEpoch,
    ns: &str,
    old: &tidepool_api::snapshot_schedule::SnapshotScheduleStatus,
    now: Timestamp,
) -> Result<(Outcome, Option<Duration>), ReconcileError> {
    let valid = match obj.spec.validate() {
        Ok(v) => v,
        Err(e) => {
            return Ok((
                Outcome::Blocked(Blocker {
                    reason: e.reason(),
                    message: e.message(),
                }),
                None,
            ));
        }
    };
    let uid = obj.uid().ok_or(ReconcileError::Incomplete("uid"))?;
    let interval = crate::metrics::expected_interval(&valid.schedule, &uid, now);
    let nodes = match admissible(obj, ctx, ns).await? {
        Ok(n) => n,
        Err(b) => return Ok((Outcome::Blocked(b), interval)),
    };
    let created = obj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .ok_or(ReconcileError::Incomplete("creationTimestamp"))?;
    // Any object the API server stores has a namespace and name an owner can carry; the
    // check stays, so a surprise is a status, not a panic.
    let owner = match schedule_owner(ns, &obj.name_any()) {
        Ok(o) => o,
        Err(e) => {
            return Ok((
                Outcome::Blocked(Blocker {
                    reason: tidepool_api::condition::reason::INVALID_SPEC,
                    message: e.to_string(),
                }),
                interval,
            ));
        }
    };
    let label = naming::label_for(obj.spec.naming.label.as_deref(), &obj.name_any());
    let precision = schedule::name_precision(&valid.schedule);
    let mut runs = Vec::new();
    let mut next_due: Option<Timestamp> = None;
    let mut suspended = false;
    let mut manual_everywhere = true;
    let mut manual_token = None;
    let plan = NodePlan {
        obj,
        valid: &valid,
        uid: &uid,
        created,
        owner: &owner,
        label: &label,
        precision,
        old,
    };
    // Nodes are independent: visited at once, a slow or dead one does not delay the rest.
    let results = futures::future::join_all(nodes.into_iter().map(|node| {
        let plan = &plan;
        async move {
            let result = run_node(ctx, epoch, plan, &node, now).await;
            (node, result)
        }
    }))
    .await;
    for (node, node_run) in results {
        match node_run {
            Ok((run, decision, answered)) => {
                suspended |= decision.suspended;
                next_due = match (next_due, decision.next_due) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let wanted = decision.run.as_ref().and_then(|r| r.manual_token.clone());
                if wanted.is_some() && answered != wanted {
                    manual_everywhere = false;
                }
                manual_token = manual_token.or(answered);
                runs.push((node, run));
            }
            Err(p) => {
                ctx.metrics.error(p.reason());
                manual_everywhere = false;
                runs.push((
                    node,
                    NodeRun {
                        failure: Some(NodeFailure {
                            reason: p.reason(),
                            message: p.message(),
                        }),
                        ..NodeRun::default()
                    },
                ));
            }
        }
    }
    Ok((
        Outcome::Ran {
            suspended,
            nodes: runs,
            next_due,
            manual_done: manual_token.filter(|_| manual_everywhere),
        },
        interval,
    ))
}

pub fn error_policy(
    obj: Arc<SnapshotSchedule>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    tracing::warn!(object = %obj.name_any(), error = %error, "reconcile failed");
    ctx.metrics.error(error.reason());
    Action::requeue(ctx.config.retry)
}
