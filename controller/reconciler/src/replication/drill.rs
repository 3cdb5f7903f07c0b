//! Scheduled restore drills (`spec.restoreDrill`, objectStore targets): every `every`, the
//! source node's agent receives the newest stored chain of the source dataset into a
//! scratch dataset (`<scratchParent>/tidepool-drill-<policy uid>`), compares GUIDs and
//! checksums and destroys the scratch (`RestoreDrill`). The result is the `Verified`
//! condition, `status.lastDrill` and the drill metrics, so a backup that cannot be restored
//! is found before it is needed.
//!
//! The drill runs in the reconcile after the sync (whatever the sync schedule), once the
//! store holds something, never while the policy is blocked or suspended. The scratch
//! needs the namespace's `Receive` grant on the source node, as any dataset the policy
//! writes does; the agent checks its roots and the scratch's name and mark again.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tidepool_agent::LeaderEpoch;
use tidepool_api::condition::{self, kind};
use tidepool_api::dataset_grant::Access;
use tidepool_api::replication_policy::{DrillStatus, ReplicationPolicyStatus};
use tidepool_api::{DatasetName, ReplicationPolicy, SCRATCH_PREFIX};
use tidepool_wire::objstore::{DrillReport, DrillVerdict, RestoreDrill};

use super::status::Outcome;
use super::{Parties, TargetEnd, admit, permitted};
use crate::agents::{TransferAnswer, TransferCall};
use crate::reasons;
use crate::reconcile::{Context, ReconcileError};

/// Whether a drill is due: drills are on, the store holds something, the policy is
/// neither blocked nor suspended, and `every` has passed since the last one.
pub(crate) fn due(
    obj: &ReplicationPolicy,
    outcome: &Outcome,
    new: &ReplicationPolicyStatus,
    now: Timestamp,
) -> bool {
    let Some(drill) = &obj.spec.restore_drill else {
        return false;
    };
    if obj.spec.target.object_store.is_none()
        || matches!(outcome, Outcome::Blocked(_) | Outcome::Suspended)
        || new.last_common_snapshot.is_none()
    {
        return false;
    }
    next_after(new.last_drill.as_ref(), drill.every.as_std()).is_none_or(|t| t <= now)
}

fn next_after(last: Option<&DrillStatus>, every: std::time::Duration) -> Option<Timestamp> {
    let last = last?;
    let every = jiff::SignedDuration::try_from(every).unwrap_or(jiff::SignedDuration::MAX);
    Some(last.time.0.checked_add(every).unwrap_or(Timestamp::MAX))
}

/// The reconcile's wait, woken for the next drill when one can run: never while the
/// policy is blocked or suspended, and never sooner than `retry` (a drill that is overdue
/// because it could not run must not spin the reconcile).
pub(crate) fn requeue(
    wait: std::time::Duration,
    until_drill: Option<std::time::Duration>,
    outcome: &Outcome,
    retry: std::time::Duration,
) -> std::time::Duration {
    match until_drill {
        Some(d) if !matches!(outcome, Outcome::Blocked(_) | Outcome::Suspended) => {
            wait.min(d.max(retry))
        }
        _ => wait,
    }
}

/// The scratch dataset of a policy: below `scratchParent`, else the source's parent (the
/// pool's root dataset for a pool-root source).
pub(crate) fn scratch_of(obj: &ReplicationPolicy, uid: &str) -> Result<DatasetName, String> {
    let source = &obj.spec.source.dataset;
    let parent = obj
        .spec
        .restore_drill
        .as_ref()
        .and_then(|d| d.scratch_parent.clone())
        .or_else(|| source.parent())
        .unwrap_or_else(|| source.clone());
    format!("{parent}/{SCRATCH_PREFIX}{uid}")
        .parse()
        .map_err(|e| format!("the scratch dataset below {parent}: {e}"))
}

/// Runs one drill; what it found, as the status records it.
pub(crate) async fn run(
    obj: &ReplicationPolicy,
    ctx: &Context,
    epoch: LeaderEpoch,
    ns: &str,
    uid: &str,
) -> Result<DrillStatus, ReconcileError> {
    let started = Timestamp::now();
    let failed = |reason: &str, message: String| DrillStatus {
        time: Time(Timestamp::now()),
        passed: false,
        reason: reason.to_owned(),
        snapshot: None,
        streams: Vec::new(),
        received: false,
        bytes: None,
        duration: None,
        object: None,
        message,
    };
    let scratch = match scratch_of(obj, uid) {
        Ok(s) => s,
        Err(m) => return Ok(failed(DrillVerdict::ScratchRefused.as_str(), m)),
    };
    let source = &obj.spec.source;
    if let Err(b) = permitted(ctx, ns, &source.node_name, &scratch, Access::Receive).await? {
        return Ok(failed(
            b.reason,
            format!("the drill's scratch dataset: {}", b.message),
        ));
    }
    let admitted = match admit(obj, ctx, ns).await? {
        Ok(a) => a,
        Err(b) => return Ok(failed(b.reason, b.message)),
    };
    let parties = match Parties::of(ctx, obj, admitted.target, ns).await? {
        Ok(p) => p,
        Err(b) => return Ok(failed(b.reason, b.message)),
    };
    let TargetEnd::ObjectStore { via, access, .. } = &parties.target else {
        return Ok(failed(
            reasons::TARGET_KIND_UNSUPPORTED,
            "restore drills check object-store targets only".into(),
        ));
    };
    let request = RestoreDrill {
        store: (**access).clone(),
        dataset: source.dataset.clone(),
        scratch,
        owner: parties.owner.clone(),
    };
    tracing::info!(policy = %parties.policy, scratch = %request.scratch, "restore drill");
    let call = TransferCall::Drill(Box::new(request));
    let report = match ctx.agents.transfer(via, epoch, call).await {
        Ok(TransferAnswer::Drilled(r)) => r,
        Ok(_) => {
            return Ok(failed(
                reasons::AGENT_REFUSED,
                "the source agent answered a drill with something else".into(),
            ));
        }
        Err(e) => return Ok(failed(e.reason(), e.chain())),
    };
    Ok(status_of(report, started, Timestamp::now()))
}

fn status_of(r: DrillReport, started: Timestamp, ended: Timestamp) -> DrillStatus {
    DrillStatus {
        time: Time(ended),
        passed: r.verdict == DrillVerdict::Passed,
        reason: r.verdict.as_str().to_owned(),
        snapshot: r.snapshot.map(|s| s.to_string()),
        streams: r.streams,
        received: r.received,
        bytes: i64::try_from(r.bytes).ok(),
        duration: Some(format!(
            "{:.1}s",
            ended.duration_since(started).as_secs_f64()
        )),
        object: r.object,
        message: r.message,
    }
}

/// Records a drill that ran (if one did) and the next one's time; drops `Verified` and
/// the drill fields when drills are off.
pub(crate) fn record(
    s: &mut ReplicationPolicyStatus,
    obj: &ReplicationPolicy,
    ran: Option<DrillStatus>,
    now: Timestamp,
) {
    let Some(drill) = &obj.spec.restore_drill else {
        s.conditions.retain(|c| c.type_ != kind::VERIFIED);
        s.last_drill = None;
        s.next_drill_time = None;
        return;
    };
    if let Some(d) = ran {
        let message = match &d.object {
            Some(o) if !d.message.contains(o.as_str()) => format!("{}: {o}", d.message),
            _ => d.message.clone(),
        };
        condition::set_condition(
            &mut s.conditions,
            condition::condition(
                kind::VERIFIED,
                d.passed,
                &d.reason,
                &message,
                obj.metadata.generation,
                now,
            ),
        );
        s.last_drill = Some(d);
    }
    s.next_drill_time = next_after(s.last_drill.as_ref(), drill.every.as_std()).map(Time);
}

#[cfg(test)]
mod tests;
