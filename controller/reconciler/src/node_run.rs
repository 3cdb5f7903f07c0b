//! One node's part of a schedule's run: read the pool's inventory, ask the planner, take
//! the due snapshot atomically over the node's datasets, read again, prune what retention
//! says. The reconciler runs this for all of a schedule's nodes at once.

use std::sync::Arc;

use jiff::Timestamp;
use kube::runtime::events::EventType;
use tidepool_agent::LeaderEpoch;
use tidepool_api::snapshot_schedule::SnapshotScheduleStatus;
use tidepool_api::{
    DatasetName, Owner, SnapshotSchedule, SnapshotShortName, ValidSnapshotSchedule, ZfsNode,
};
use tidepool_plan::naming::{self, NamePrecision};
use tidepool_plan::schedule::{self, Run, ScheduleDecision, ScheduleInput};
use tidepool_wire::{DestroySnapshots, PoolInventory, Request, Response, TakeSnapshots};

use crate::agents::{AgentEndpoint, AgentError};
use crate::inventories::{Edit, Freshness};
use crate::reconcile::{Context, publish};
use crate::status::NodeRun;
use crate::{reasons, work};

/// What every node's run of one reconcile shares.
pub(crate) struct NodePlan<'a> {
    pub obj: &'a SnapshotSchedule,
    pub valid: &'a ValidSnapshotSchedule<'a>,
    pub uid: &'a str,
    pub created: Timestamp,
    pub owner: &'a Owner,
    pub label: &'a str,
    pub precision: NamePrecision,
    /// The status this run starts from (the manual token already answered).
    pub old: &'a SnapshotScheduleStatus,
}

/// What a node's run did, what the planner decided there, and the manual token answered.
pub(crate) type NodeOutcome = (NodeRun, ScheduleDecision, Option<String>);

// The pure steps of a node's run, shared with `explain` (the dry run), so that what it
// shows is what a run would decide.
impl NodePlan<'_> {
    /// The pool the schedule's datasets are in (one pool: a CEL rule).
    pub(crate) fn pool(&self) -> Result<tidepool_api::PoolName, NodeProblem> {
        self.obj
            .spec
            .datasets
            .first()
            .map(|d| d.name.pool())
            .ok_or(NodeProblem::Spec("spec.datasets is empty"))
    }

    /// The datasets one run covers on this node; an error when the pool cannot be written
    /// or a dataset is missing (absent, or outside the agent's published roots).
    pub(crate) fn datasets(
        &self,
        inventory: &PoolInventory,
        zfs_node: Option<&ZfsNode>,
    ) -> Result<Vec<DatasetName>, NodeProblem> {
        if !inventory.health.is_writable() {
            return Err(NodeProblem::Pool(format!(
                "pool {} is {}",
                inventory.pool, inventory.health
            )));
        }
        work::expand(&self.obj.spec.datasets, inventory).map_err(|m| {
            let roots = zfs_node
                .and_then(|n| n.status.as_ref())
                .map(|s| s.allowed_roots.clone())
                .unwrap_or_default();
            if work::outside_roots(&m.dataset, &roots) {
                NodeProblem::OutsideRoots {
                    dataset: m.dataset,
                    roots: roots.join(", "),
                }
            } else {
                NodeProblem::Missing(m)
            }
        })
    }

    /// The planner's view of this node: the schedule, the trigger, the last run there.
    pub(crate) fn schedule_input<'s>(
        &'s self,
        inventory: &PoolInventory,
        datasets: &[DatasetName],
    ) -> ScheduleInput<'s> {
        let spec = &self.obj.spec;
        ScheduleInput {
            schedule: &self.valid.schedule,
            suspend: spec.suspend,
            jitter_seed: self.uid,
            manual_trigger: spec.trigger.as_ref().and_then(|t| t.manual.as_deref()),
            last_manual_trigger: self.old.last_manual_trigger.as_deref(),
            last_run: work::last_run(inventory, datasets, self.owner, &spec.naming.prefix),
            created: self.created,
        }
    }

    /// The name a run gives its snapshot.
    pub(crate) fn snapshot_name(&self, run: &Run) -> Result<SnapshotShortName, NodeProblem> {
        naming::snapshot_name(
            &self.obj.spec.naming.prefix,
            self.label,
            run.name_time,
            self.precision,
        )
        .map_err(|_| NodeProblem::Spec("spec.naming gives an invalid snapshot name"))
    }
}

/// One node's run, decided from the listing the controller holds. A run that would take a
/// snapshot on a listing older than `inventory_max_age` is decided again on a younger one;
/// a run that fails on the listing held in a way a stale view explains (a dataset missing
/// or created meanwhile, a name taken, the pool changed) is decided once more on a fresh
/// listing before the failure is reported. Nothing of a failed attempt was done (a take is
/// atomic, a destroy checks each snapshot).
pub(crate) async fn run_node(
    ctx: &Context,
    epoch: LeaderEpoch,
    plan: &NodePlan<'_>,
    node: &str,
    now: Timestamp,
) -> Result<NodeOutcome, NodeProblem> {
    let max_age = ctx.config.inventory_max_age;
    let held = Freshness::Held {
        refresh_after: max_age / 2,
    };
    match run_node_from(ctx, epoch, plan, node, now, held).await {
        Err((NodeProblem::ListingTooOld, _)) => {
            let within = Freshness::Within(max_age);
            again(run_node_from(ctx, epoch, plan, node, now, within).await)
        }
        Err((problem, true)) if problem.may_come_from_a_stale_view() => {
            tracing::debug!(node, %problem, "failed on the listing held; deciding again on a fresh one");
            again(run_node_from(ctx, epoch, plan, node, now, Freshness::AfterAsking).await)
        }
        other => other.map_err(|(p, _)| p),
    }
}

fn again(ran: Result<NodeOutcome, (NodeProblem, bool)>) -> Result<NodeOutcome, NodeProblem> {
    ran.map_err(|(p, _)| p)
}

/// A node's run from a listing as fresh as asked; a failure says whether the listing was
/// the one held.
async fn run_node_from(
    ctx: &Context,
    epoch: LeaderEpoch,
    plan: &NodePlan<'_>,
    node: &str,
    now: Timestamp,
    freshness: Freshness,
) -> Result<NodeOutcome, (NodeProblem, bool)> {
    let zfs_node = ctx
        .zfs_nodes
        .get(&kube::runtime::reflector::ObjectRef::new(node));
    let agent = AgentEndpoint::of(node, zfs_node.as_deref()).map_err(|e| (e.into(), false))?;
    let pool = plan.pool().map_err(|p| (p, false))?;
    let (listing, held_age) = ctx
        .inventories
        .get_telling(&ctx.agents, &agent, epoch, pool.clone(), freshness)
        .await;
    let inventory = listing.map_err(|e| (NodeProblem::Agent(AgentError::Shared(e)), false))?;
    let on = On {
        agent: &agent,
        pool: &pool,
        zfs_node: zfs_node.as_deref(),
        too_old_to_take: held_age.is_some_and(|age| age > ctx.config.inventory_max_age),
    };
    let ran = run_on(ctx, epoch, plan, &on, inventory, now).await;
    if let Err(p) = &ran
        && !matches!(p, NodeProblem::ListingTooOld)
    {
        // Whatever failed, the next run lists again.
        ctx.inventories.expire(&agent, &pool);
    }
    ran.map_err(|p| (p, held_age.is_some()))
}

/// The node a run acts on: its agent, the schedule's pool there, its `ZfsNode`.
struct On<'a> {
    agent: &'a AgentEndpoint,
    pool: &'a tidepool_api::PoolName,
    zfs_node: Option<&'a ZfsNode>,
    /// The listing is too old to take a snapshot from (see [`run_node`]).
    too_old_to_take: bool,
}

async fn run_on(
    ctx: &Context,
    epoch: LeaderEpoch,
    plan: &NodePlan<'_>,
    on: &On<'_>,
    mut inventory: Arc<PoolInventory>,
    now: Timestamp,
) -> Result<NodeOutcome, NodeProblem> {
    let NodePlan {
        obj, valid, owner, ..
    } = *plan;
    let (agent, pool, node) = (on.agent, on.pool, on.agent.node.as_str());
    let datasets = plan.datasets(&inventory, on.zfs_node)?;
    let input = plan.schedule_input(&inventory, &datasets);
    let evaluate = |at| schedule::evaluate(&input, at).map_err(|e| NodeProblem::Spec(e.reason()));
    let mut decision = evaluate(now)?;
    let takes = |d: &ScheduleDecision| d.run.is_some() && !d.suspended;
    if takes(&decision) && on.too_old_to_take {
        return Err(NodeProblem::ListingTooOld);
    }
    let mut now = now;
    // Woken early for a slot (the requeue's `prepare_lead`): the inventory is read and the
    // run decided, so at the slot only the snapshot is left to take.
    if let Some(slot) = prepared(&decision, now, ctx.config.prepare_lead) {
        let at_slot = evaluate(slot)?;
        if takes(&at_slot) && on.too_old_to_take {
            return Err(NodeProblem::ListingTooOld);
        }
        if at_slot.run.is_some() {
            wait_until(slot).await;
            // Leadership may have passed while waiting: the new leader takes the slot.
            if *ctx.epoch.borrow() == Some(epoch) {
                decision = at_slot;
                now = slot;
            }
        }
    }
    let mut run = NodeRun {
        newest: work::newest_owned(&inventory, &datasets, owner).map(|(n, t)| (n.to_string(), t)),
        owned: work::owned_count(&inventory, &datasets, owner),
        ..NodeRun::default()
    };
    if decision.suspended {
        return Ok((run, decision, None));
    }
    let mut answered = None;
    if let Some(r) = &decision.run {
        let short = plan.snapshot_name(r)?;
        let todo = work::still_to_take(&inventory, &datasets, &short);
        if !todo.is_empty() {
            let request = Request::TakeSnapshots(TakeSnapshots {
                datasets: todo,
                short_name: short.clone(),
                owner: owner.clone(),
                slot: r.slot,
            });
            match call(ctx, agent, epoch, request).await? {
                Response::SnapshotsTaken(t) => {
                    if let Some(slot) = r.slot {
                        // Measured at this edge: when the agent's answer arrived.
                        ctx.metrics.snapshot_done(slot, Timestamp::now());
                    }
                    ctx.metrics
                        .snapshots_created
                        .inc_by(u64::try_from(t.snapshots.len()).unwrap_or(0));
                    run.owned += t.snapshots.len();
                    // Retention counts the snapshot just taken: pruning from the listing
                    // before it would leave keepLast + 1 on the node between runs.
                    inventory = match t.created {
                        Some(created) => {
                            let edit = Edit::Taken {
                                snapshots: t.snapshots.clone(),
                                created,
                                owner: owner.clone(),
                            };
                            ctx.inventories.edit(agent, pool, edit);
                            Arc::new(work::with_taken(&inventory, &t.snapshots, created, owner))
                        }
                        None => {
                            let fresh = Freshness::AfterAsking;
                            self::inventory(ctx, agent, epoch, pool.clone(), fresh).await?
                        }
                    };
                }
                other => return Err(unexpected(agent, "TakeSnapshots", &other)),
            }
        }
        run.newest = Some((short.to_string(), now));
        answered = r.manual_token.clone();
    }
    if let Some((retention, tz)) = valid.retention() {
        let (destroy, keeping) = work::prune(retention, tz, &inventory, &datasets, owner);
        if !destroy.is_empty() {
            let request = Request::DestroySnapshots(DestroySnapshots {
                snapshots: destroy,
                owner: owner.clone(),
                keeping,
            });
            match call(ctx, agent, epoch, request).await? {
                Response::SnapshotsDestroyed(d) => {
                    ctx.inventories
                        .edit(agent, pool, Edit::Destroyed(d.destroyed.clone()));
                    if !d.refused.is_empty() {
                        // The pool is not as the view said (gone, renamed, held, or a kept
                        // snapshot gone): nothing wrong was destroyed; plan again from a
                        // fresh listing next time.
                        tracing::info!(node, refused = ?d.refused, "the agent refused destroys");
                        ctx.inventories.expire(agent, pool);
                    }
                    let n = d.destroyed.len();
                    ctx.metrics
                        .snapshots_destroyed
                        .inc_by(u64::try_from(n).unwrap_or(0));
                    run.pruned = n;
                    run.owned = run.owned.saturating_sub(n);
                    if n > 0 {
                        // What was destroyed, not what was asked: the agent may refuse some.
                        let names: Vec<String> =
                            d.destroyed.iter().map(|d| d.snapshot.to_string()).collect();
                        publish(
                            ctx,
                            obj,
                            EventType::Normal,
                            reasons::PRUNED,
                            format!(
                                "node {node}: retention destroyed {n} snapshot(s): {}",
                                names.join(", ")
                            ),
                            "Prune",
                        )
                        .await;
                    }
                }
                other => return Err(unexpected(agent, "DestroySnapshots", &other)),
            }
        }
    }
    Ok((run, decision, answered))
}

/// The slot a run should be prepared for now: nothing is due, and the next slot is at most
/// `lead` away.
pub(crate) fn prepared(
    decision: &ScheduleDecision,
    now: Timestamp,
    lead: std::time::Duration,
) -> Option<Timestamp> {
    let next = decision.next_due.filter(|_| decision.run.is_none())?;
    let until = std::time::Duration::try_from(next.duration_since(now)).ok()?;
    (until <= lead).then_some(next)
}

/// Sleeps until the wall clock reads `t` (at once if it already has).
async fn wait_until(t: Timestamp) {
    if let Ok(d) = std::time::Duration::try_from(t.duration_since(Timestamp::now())) {
        tokio::time::sleep(d).await;
    }
}

/// Why one node's part of a run failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeProblem {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Missing(work::DatasetMissing),
    /// Outside the roots the agent published: it would refuse the command.
    #[error("dataset {dataset} is outside the node agent's dataset roots ({roots})")]
    OutsideRoots {
        dataset: tidepool_api::DatasetName,
        roots: String,
    },
    #[error("{0}")]
    Pool(String),
    #[error("{0}")]
    Spec(&'static str),
    /// The run would take a snapshot on a listing older than `inventory_max_age`: decided
    /// again on a younger one, never reported.
    #[error("the pool listing held is too old to take a snapshot from")]
    ListingTooOld,
}

impl NodeProblem {
    /// Whether a listing that no longer holds could explain this failure, so that deciding
    /// again on a fresh one may succeed. An agent that cannot be reached is not: asking
    /// again would only double the wait.
    pub fn may_come_from_a_stale_view(&self) -> bool {
        match self {
            NodeProblem::Missing(_) | NodeProblem::OutsideRoots { .. } | NodeProblem::Pool(_) => {
                true
            }
            NodeProblem::Agent(AgentError::Failed { .. }) => true,
            NodeProblem::ListingTooOld => true,
            NodeProblem::Agent(_) | NodeProblem::Spec(_) => false,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            NodeProblem::Agent(e) => e.reason(),
            NodeProblem::Missing(_) => reasons::DATASET_NOT_FOUND,
            NodeProblem::OutsideRoots { .. } => reasons::OUTSIDE_AGENT_ROOTS,
            NodeProblem::Pool(_) => reasons::POOL_UNAVAILABLE,
            NodeProblem::Spec(_) => reasons::INVALID_SCHEDULE,
            // Never reported (see `run_node`); should it be, the agent was not asked.
            NodeProblem::ListingTooOld => reasons::AGENT_UNAVAILABLE,
        }
    }

    pub fn message(&self) -> String {
        match self {
            NodeProblem::Agent(e) => e.chain(),
            other => other.to_string(),
        }
    }
}

fn unexpected(agent: &AgentEndpoint, asked: &'static str, got: &Response) -> NodeProblem {
    NodeProblem::Agent(AgentError::unexpected(&agent.node, asked, got))
}

async fn call(
    ctx: &Context,
    agent: &AgentEndpoint,
    epoch: LeaderEpoch,
    request: Request,
) -> Result<Response, NodeProblem> {
    Ok(ctx.agents.call(agent, epoch, request).await?)
}

/// The pool's inventory, as fresh as asked (shared with other reconciles on the pool; see
/// [`crate::inventories`]).
pub async fn inventory(
    ctx: &Context,
    agent: &AgentEndpoint,
    epoch: LeaderEpoch,
    pool: tidepool_api::PoolName,
    freshness: Freshness,
) -> Result<Arc<PoolInventory>, NodeProblem> {
    ctx.inventories
        .get(&ctx.agents, agent, epoch, pool, freshness)
        .await
        .map_err(|e| NodeProblem::Agent(AgentError::Shared(e)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use jiff::{Timestamp, ToSpan};
    use tidepool_plan::schedule::{Run, RunReason, ScheduleDecision};

    use super::prepared;

    fn decision(run: bool, next_due: Option<Timestamp>) -> ScheduleDecision {
        ScheduleDecision {
            run: run.then_some(Run {
                reason: RunReason::Scheduled,
                slot: None,
                missed: 0,
                manual_token: None,
                name_time: Timestamp::UNIX_EPOCH,
            }),
            next_due,
            suspended: false,
        }
    }

    #[test]
    fn a_run_is_prepared_only_when_nothing_is_due_and_the_next_slot_is_within_the_lead() {
        let now: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let lead = Duration::from_secs(2);
        let soon = now + 1500.milliseconds();
        assert_eq!(
            prepared(&decision(false, Some(soon)), now, lead),
            Some(soon)
        );
        let edge = now + 2.seconds();
        assert_eq!(
            prepared(&decision(false, Some(edge)), now, lead),
            Some(edge)
        );
        // Too far: the requeue wakes again nearer the slot.
        assert_eq!(
            prepared(&decision(false, Some(now + 3.seconds())), now, lead),
            None
        );
        // A run due now is run now, not a later one prepared.
        assert_eq!(prepared(&decision(true, Some(soon)), now, lead), None);
        // Suspended: no next slot.
        assert_eq!(prepared(&decision(false, None), now, lead), None);
    }
}
