//! `status.progress` while a send runs: the source agent's own count of the stream bytes
//! it read from `zfs send` (`ListTransfers`) against its `-nP` estimate, written at most
//! every `status_min_interval`. The controller never sees the bytes, so it asks the agent.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tidepool_agent::LeaderEpoch;
use tidepool_api::replication_policy::{ReplicationPolicyStatus, SyncProgress};
use tidepool_api::{Owner, ReplicationPolicy};
use tidepool_wire::transfer::{StepId, TransferProgress, TransferSide, TransfersInFlight};

use crate::agents::{AgentEndpoint, TransferAnswer, TransferCall};
use crate::reconcile::Context;
use crate::writes;

/// Where one reconcile's progress goes: the policy, and its status as the reconcile found
/// it (progress is written on top of it; nothing else writes the status meanwhile, as one
/// object is never reconciled twice at once).
pub struct ProgressReport<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub base: &'a ReplicationPolicyStatus,
    written: AtomicBool,
}

impl<'a> ProgressReport<'a> {
    pub fn new(namespace: &'a str, name: &'a str, base: &'a ReplicationPolicyStatus) -> Self {
        Self {
            namespace,
            name,
            base,
            written: AtomicBool::new(false),
        }
    }

    /// Whether progress was written: the final status must then be written even when it
    /// equals the one the reconcile found, to clear it.
    pub fn written(&self) -> bool {
        self.written.load(Ordering::Relaxed)
    }

    /// Runs `send` to its end, reporting the progress of `step` meanwhile.
    pub async fn around<F: Future>(
        &self,
        ctx: &Context,
        epoch: LeaderEpoch,
        source: &AgentEndpoint,
        owner: &Owner,
        step: &StepId,
        send: F,
    ) -> F::Output {
        tokio::pin!(send);
        let mut tick = tokio::time::interval(ctx.config.status_min_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: a send shorter than the interval writes nothing.
        tick.tick().await;
        loop {
            tokio::select! {
                out = &mut send => return out,
                _ = tick.tick() => self.once(ctx, epoch, source, owner, step).await,
            }
        }
    }

    async fn once(
        &self,
        ctx: &Context,
        epoch: LeaderEpoch,
        source: &AgentEndpoint,
        owner: &Owner,
        step: &StepId,
    ) {
        // A failed read or write only skips this report; the send goes on.
        let Ok(TransferAnswer::Listed(listed)) =
            ctx.agents.transfer(source, epoch, TransferCall::List).await
        else {
            return;
        };
        let Some(progress) = progress_of(&listed, owner, step) else {
            return;
        };
        let mut status = self.base.clone();
        status.progress = Some(progress);
        let written =
            writes::apply_status::<ReplicationPolicy>(ctx, self.namespace, self.name, &status)
                .await;
        if written.is_ok() {
            self.written.store(true, Ordering::Relaxed);
            ctx.metrics.status_writes.inc();
        }
    }
}

/// The source side's progress of `step`, as the status shows it.
pub fn progress_of(
    listed: &TransfersInFlight,
    owner: &Owner,
    step: &StepId,
) -> Option<SyncProgress> {
    let t: &TransferProgress = listed
        .transfers
        .iter()
        .find(|t| &t.owner == owner && &t.step == step && t.side == TransferSide::Source)?;
    Some(SyncProgress {
        bytes_done: i64::try_from(t.bytes).unwrap_or(i64::MAX),
        bytes_total: t.estimated_bytes.and_then(|b| i64::try_from(b).ok()),
        started: Time(t.started_at),
    })
}
