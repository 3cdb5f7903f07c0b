//! One policy's sync, dataset by dataset: which source datasets it replicates (the source
//! alone, or with `recursive` each descendant too, each as its own replica below the
//! target), and for each the plan-and-run rounds and the target's retention.
//!
//! Why not `zfs send -R`: a replication stream carries every snapshot of every descendant
//! and is received with `-F` semantics for the tree (descendants the stream lacks, or
//! snapshots the target has beyond it, are what `-R` receives fight over), and it has one
//! resume token and no per-dataset base. Separate streams per dataset keep every
//! protection the root has — a held base and a bookmark per dataset, divergence detected
//! per dataset, never `-F`, a resume per dataset — at the cost of one send per dataset.

use std::sync::Arc;

use jiff::Timestamp;
use tidepool_agent::LeaderEpoch;
use tidepool_api::common::Retention;
use tidepool_api::replication_policy::ReplicationPolicySpec;
use tidepool_api::{DatasetName, Owner, ValidReplicationPolicy};
use tidepool_plan::DatasetInventory;
use tidepool_plan::replication::{
    self as planner, ReplicationInput, ReplicationPlan, ResumeFailure,
};
use tidepool_plan::retention::{self, DatasetRetention, Protections, RetentionRules};
use tidepool_wire::{DestroySnapshots, PoolInventory, Request, Response};

use super::run::{self, Ran, SendContext, StepFailed};
use super::{MAX_ROUNDS, Parties, Remembered, TargetEnd};
use crate::agents::{AgentEndpoint, AgentError};
use crate::inventories::Freshness;
use crate::node_run::inventory;
use crate::reconcile::Context;

/// A source dataset and the dataset it is received as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub source: DatasetName,
    pub target: DatasetName,
}

/// The datasets a policy replicates, parents before children (a child's replica is
/// received below its parent's, which must exist first): `source` itself, and with
/// `recursive` every existing descendant in the source pool's inventory, each received
/// at the same relative path below `target`.
pub fn replicas(
    source: &DatasetName,
    recursive: bool,
    target: &DatasetName,
    pool: Option<&PoolInventory>,
) -> Result<Vec<Replica>, String> {
    let mut out = vec![Replica {
        source: source.clone(),
        target: target.clone(),
    }];
    let Some(pool) = pool.filter(|_| recursive) else {
        return Ok(out);
    };
    let mut below: Vec<&DatasetName> = pool
        .datasets
        .iter()
        .filter(|d| d.exists && &d.dataset != source && source.contains(&d.dataset))
        .map(|d| &d.dataset)
        .collect();
    below.sort();
    for child in below {
        let relative = &child.as_str()[source.as_str().len() + 1..];
        let replica = target
            .join(relative)
            .map_err(|e| format!("the replica of {child} cannot be named below {target}: {e}"))?;
        out.push(Replica {
            source: child.clone(),
            target: replica,
        });
    }
    Ok(out)
}

/// What stays the same for every dataset of one sync.
pub(crate) struct PolicySync<'a> {
    pub ctx: &'a Context,
    pub epoch: LeaderEpoch,
    pub parties: &'a Parties,
    pub send: &'a SendContext<'a>,
    pub spec: &'a ReplicationPolicySpec,
    /// `None` without `spec.retention`.
    pub prune: Option<TargetPrune<'a>>,
}

/// What one dataset's sync found and did.
#[derive(Debug, Default)]
pub(crate) struct DatasetSync {
    /// The last plan made (after the steps ran, the one that found nothing left to do).
    pub plan: Option<ReplicationPlan>,
    pub ran: Ran,
    pub failure: Option<StepFailed>,
    /// The newest snapshot the replica holds, by creation.
    pub target_newest: Option<Timestamp>,
    pub resume_token_present: bool,
    /// Snapshots target retention destroyed.
    pub pruned: u32,
}

impl PolicySync<'_> {
    /// Reads the source pool's inventory when the policy is recursive (to find the
    /// descendants), and lists the replicas.
    pub async fn replicas(&self) -> Result<Vec<Replica>, StepFailed> {
        let ends = self.parties.pair();
        let source = &self.spec.source;
        let Some(target) = super::TargetRef::of(self.spec) else {
            return Ok(Vec::new());
        };
        let pool = if source.recursive {
            Some(
                read_pool(self.ctx, self.epoch, ends.source, &source.dataset)
                    .await
                    .map_err(|f| f.with(&Ran::default()))?,
            )
        } else {
            None
        };
        replicas(
            &source.dataset,
            source.recursive,
            target.dataset(),
            pool.as_deref(),
        )
        .map_err(|message| StepFailed {
            node: ends.target.node().to_owned(),
            reason: tidepool_api::condition::reason::INVALID_SPEC,
            message,
            resume_failed: None,
            ran: Ran::default(),
        })
    }

    /// Plans and runs rounds for one dataset until nothing is left (or a step fails),
    /// then applies target retention once the replica is up to date.
    pub async fn dataset(&self, replica: &Replica, memory: &mut Remembered) -> DatasetSync {
        if let Some(target) = &self.spec.target.object_store {
            return self.object_store_dataset(replica, target).await;
        }
        let ends = self.parties.pair();
        let mut out = DatasetSync::default();
        let mut last_target = None;
        // One plan more than rounds that run: the status reports the last plan, which must
        // see what the last round did. (Were it the plan of the round that ran, the status
        // would name the common snapshot that round's send replaced and whose holds it
        // released: seen on emulated nodes, where each round finds a newer schedule snapshot.)
        for round in 0..=MAX_ROUNDS {
            let planned = match plan_once(
                self.ctx,
                self.epoch,
                self.spec,
                self.parties,
                replica,
                memory.resume_failed.as_ref(),
                Timestamp::now(),
            )
            .await
            {
                Ok(p) => p,
                Err(f) => {
                    out.failure = Some(f.with(&out.ran));
                    break;
                }
            };
            let (dst, plan) = (planned.target, planned.plan);
            out.target_newest = dst.snapshots.iter().map(|s| s.creation).max();
            out.resume_token_present = dst.receive_resume_token.is_some();
            let steps = plan.steps.clone();
            out.plan = Some(plan);
            if steps.is_empty() || round == MAX_ROUNDS {
                if steps.is_empty() {
                    last_target = Some(dst);
                }
                break;
            }
            match run::run_steps(self.ctx, self.epoch, &ends, self.send, &steps).await {
                Ok(ran) => {
                    // A resume of this replica that went through, or its token aborted:
                    // that failure is history (another replica's is not).
                    let token = dst.receive_resume_token.as_ref().map(|p| &p.token);
                    if memory
                        .resume_failed
                        .as_ref()
                        .is_some_and(|f| Some(&f.token) == token)
                    {
                        memory.resume_failed = None;
                    }
                    out.ran.add(&ran);
                }
                Err(f) => {
                    out.ran.add(&f.ran);
                    memory.resume_failed = f.resume_failed.clone();
                    self.ctx.metrics.error(f.reason);
                    out.failure = Some(f);
                    break;
                }
            }
        }
        // Target retention only once the replica is up to date: nothing in flight then, and
        // the newest common snapshot (held anyway) is protected.
        if let (None, Some(prune), Some(dst), Some(plan)) =
            (&out.failure, &self.prune, &last_target, &out.plan)
            && plan.blocked.is_none()
        {
            match prune
                .run(self.ctx, self.epoch, ends.target, dst, plan)
                .await
            {
                Ok(n) => out.pruned = n,
                Err(f) => out.failure = Some(f.with(&out.ran)),
            }
        }
        out
    }
}

/// One plan from fresh inventories of both ends, and the target's inventory it was made
/// from.
pub(crate) struct Planned {
    pub target: DatasetInventory,
    pub plan: ReplicationPlan,
}

/// Reads both datasets' inventories at once (through the shared cache) and plans one
/// replica. Sends nothing: `explain` uses it as the reconcile does.
pub(crate) async fn plan_once(
    ctx: &Context,
    epoch: LeaderEpoch,
    spec: &ReplicationPolicySpec,
    parties: &Parties,
    replica: &Replica,
    resume_failed: Option<&ResumeFailure>,
    now: Timestamp,
) -> Result<Planned, EarlyFailure> {
    let ends = parties.pair();
    let of = |pool: Arc<PoolInventory>, dataset: &DatasetName| {
        pool.dataset(dataset)
            .cloned()
            .unwrap_or_else(|| DatasetInventory::absent(dataset.clone()))
    };
    let (src, dst) = futures::join!(
        read_pool(ctx, epoch, ends.source, &replica.source),
        ends.target.read_pool(ctx, epoch, &replica.target)
    );
    let src = of(src?, &replica.source);
    let dst = match dst {
        Ok(pool) => of(pool, &replica.target),
        Err((reason, message)) => {
            return Err(EarlyFailure {
                node: ends.target.node().to_owned(),
                reason,
                message,
            });
        }
    };
    let input = ReplicationInput {
        policy: &parties.policy,
        source: &src,
        target: &dst,
        send: &spec.send,
        selection: &spec.source.snapshots,
        selection_owner: parties.selection_owner.as_ref(),
        owner: &parties.owner,
        on_divergence: spec.on_divergence,
        resume_failed,
        target_abilities: ends.target.abilities(),
    };
    let plan = planner::plan(&input, now);
    Ok(Planned { target: dst, plan })
}

/// Retention on the target, over the snapshots this policy received and claimed only. It
/// runs once the replica is up to date (a plan with no steps left); the newest common
/// snapshot is protected.
pub(crate) struct TargetPrune<'a> {
    retention: &'a Retention,
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
        plan: &ReplicationPlan,
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
        target: &TargetEnd,
        dst: &DatasetInventory,
        plan: &ReplicationPlan,
    ) -> Result<u32, EarlyFailure> {
        let (snapshots, keeping) = self.plan(dst, plan).destroy_request();
        if snapshots.is_empty() {
            return Ok(0);
        }
        let request = Request::DestroySnapshots(DestroySnapshots {
            snapshots,
            owner: self.owner.clone(),
            keeping,
        });
        let failed = |e: AgentError| EarlyFailure {
            node: target.node().to_owned(),
            reason: e.reason(),
            message: e.chain(),
        };
        match target.call(ctx, epoch, request).await {
            Ok(Response::SnapshotsDestroyed(d)) => {
                if !d.refused.is_empty() {
                    tracing::info!(node = target.node(), refused = ?d.refused, "the target refused destroys");
                }
                ctx.metrics
                    .snapshots_destroyed
                    .inc_by(d.destroyed.len() as u64);
                Ok(u32::try_from(d.destroyed.len()).unwrap_or(u32::MAX))
            }
            Ok(other) => Err(failed(AgentError::unexpected(
                target.node(),
                "DestroySnapshots",
                &other,
            ))),
            Err(e) => Err(failed(e)),
        }
    }
}

/// The inventory of the pool `dataset` lives in, from `agent`.
async fn read_pool(
    ctx: &Context,
    epoch: LeaderEpoch,
    agent: &AgentEndpoint,
    dataset: &DatasetName,
) -> Result<Arc<PoolInventory>, EarlyFailure> {
    inventory(ctx, agent, epoch, dataset.pool(), Freshness::AfterAsking)
        .await
        .map_err(|p| EarlyFailure {
            node: agent.node.clone(),
            reason: p.reason(),
            message: p.message(),
        })
}

/// A failure before any step ran (an inventory), as a step failure.
pub(crate) struct EarlyFailure {
    pub node: String,
    pub reason: &'static str,
    pub message: String,
}

impl EarlyFailure {
    pub(crate) fn with(self, ran: &Ran) -> StepFailed {
        StepFailed {
            node: self.node,
            reason: self.reason,
            message: self.message,
            resume_failed: None,
            ran: ran.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ds(name: &str) -> DatasetName {
        name.parse().unwrap()
    }

    fn pool(names: &[&str]) -> PoolInventory {
        let mut p: PoolInventory = serde_json::from_value(serde_json::json!({
            "pool": "tank", "health": "ONLINE", "sizeBytes": 1, "allocatedBytes": 0,
            "freeBytes": 1,
        }))
        .unwrap();
        p.datasets = names
            .iter()
            .map(|n| {
                let mut d = DatasetInventory::absent(ds(n));
                d.exists = true;
                d
            })
            .collect();
        p
    }

    fn pairs(r: &[Replica]) -> Vec<(String, String)> {
        r.iter()
            .map(|r| (r.source.to_string(), r.target.to_string()))
            .collect()
    }

    #[test]
    fn recursive_replicates_each_descendant_below_the_target_parents_first() {
        let p = pool(&[
            "tank/app/b/deep",
            "tank/app",
            "tank/app-other",
            "tank/app/b",
            "tank/app/a",
            "tank",
        ]);
        let r = replicas(&ds("tank/app"), true, &ds("backup/app"), Some(&p)).unwrap();
        assert_eq!(
            pairs(&r),
            [
                ("tank/app", "backup/app"),
                ("tank/app/a", "backup/app/a"),
                ("tank/app/b", "backup/app/b"),
                ("tank/app/b/deep", "backup/app/b/deep"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        // Without `recursive`, the descendants stay out.
        let r = replicas(&ds("tank/app"), false, &ds("backup/app"), Some(&p)).unwrap();
        assert_eq!(
            pairs(&r),
            [("tank/app".to_owned(), "backup/app".to_owned())]
        );
    }

    #[test]
    fn a_descendant_whose_replica_name_is_too_long_is_an_error_not_skipped() {
        let long = format!("tank/app/{}", "x".repeat(200));
        let p = pool(&["tank/app", &long]);
        let target = format!("backup/{}", "y".repeat(60));
        let e = replicas(&ds("tank/app"), true, &ds(&target), Some(&p)).unwrap_err();
        assert!(e.contains("cannot be named"), "{e}");
    }
}
