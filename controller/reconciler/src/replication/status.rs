//! A ReplicationPolicy's status from what one reconcile found and did: conditions
//! (`Ready`, `Progressing`, `Degraded`, `Diverged`), the last sync, the lag, the newest
//! common snapshot, the resume token, the last error. Pure: the caller writes it only when
//! it changed.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tidepool_api::condition::{self, kind, reason};
use tidepool_api::replication_policy::ReplicationPolicyStatus;
use tidepool_plan::replication::ReplicationPlan;

use super::dataset::DatasetSync;
use super::run::{Ran, StepFailed};
use crate::reasons;
use crate::status::{Blocker, last_error};

/// What a reconcile of a policy came to.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing can run until the spec, a grant or a node changes.
    Blocked(Blocker),
    Suspended,
    /// Not due yet (a `schedule`): only the next time changes.
    NotDue {
        next: Timestamp,
    },
    Synced(Box<Sync>),
}

/// One sync attempt.
#[derive(Debug)]
pub struct Sync {
    pub started: Timestamp,
    pub ended: Timestamp,
    /// The last plan made (after the steps ran, the one that found nothing left to do).
    pub plan: Option<ReplicationPlan>,
    pub ran: Ran,
    pub failure: Option<StepFailed>,
    /// The newest snapshot the target holds, by creation.
    pub target_newest: Option<Timestamp>,
    pub resume_token_present: bool,
    pub manual: Option<String>,
    pub next: Option<Timestamp>,
    /// Snapshots target retention destroyed.
    pub pruned: u32,
    /// How many datasets the policy replicates (more than one when `recursive`).
    pub replicas: usize,
}

impl Sync {
    /// Adds one dataset's sync. The plan reported is the root's, unless a later dataset's
    /// is blocked or diverged (then the first such, so the status says what is wrong);
    /// the lag is the root's.
    pub(crate) fn add(&mut self, root: bool, one: DatasetSync) {
        self.ran.add(&one.ran);
        self.pruned += one.pruned;
        self.resume_token_present |= one.resume_token_present;
        if root {
            self.target_newest = one.target_newest;
        }
        let troubled = |p: &Option<ReplicationPlan>| {
            p.as_ref()
                .is_some_and(|p| p.blocked.is_some() || p.divergence.is_some())
        };
        if root || (troubled(&one.plan) && !troubled(&self.plan)) {
            self.plan = one.plan;
        }
        if self.failure.is_none() {
            self.failure = one.failure;
        }
    }
}

pub fn next(
    old: &ReplicationPolicyStatus,
    outcome: &Outcome,
    generation: Option<i64>,
    now: Timestamp,
) -> ReplicationPolicyStatus {
    let mut s = old.clone();
    s.observed_generation = generation;
    s.progress = None;
    let set = |s: &mut ReplicationPolicyStatus, t: &str, ok: bool, r: &str, m: &str| {
        condition::set_condition(
            &mut s.conditions,
            condition::condition(t, ok, r, m, generation, now),
        );
    };
    let fail = |s: &mut ReplicationPolicyStatus, node: Option<&str>, r: &str, m: &str| {
        s.last_error = Some(last_error(old.last_error.as_ref(), node, r, m, now));
        s.consecutive_failures = old.consecutive_failures.saturating_add(1);
    };
    match outcome {
        Outcome::Blocked(b) => {
            set(&mut s, kind::READY, false, b.reason, &b.message);
            set(&mut s, kind::DEGRADED, true, b.reason, &b.message);
            let idle = "nothing is sent until this is fixed";
            set(&mut s, kind::PROGRESSING, false, b.reason, idle);
            fail(&mut s, None, b.reason, &b.message);
            s.next_sync_time = None;
        }
        Outcome::Suspended => {
            let m = "spec.suspend is set: nothing is sent, held or released";
            set(&mut s, kind::READY, true, reason::SUSPENDED, m);
            set(&mut s, kind::DEGRADED, false, reason::AS_EXPECTED, "");
            set(&mut s, kind::PROGRESSING, false, reason::SUSPENDED, "");
            s.next_sync_time = None;
        }
        Outcome::NotDue { next } => s.next_sync_time = Some(Time(*next)),
        Outcome::Synced(sync) => synced(&mut s, old, sync, generation, now),
    }
    s
}

fn synced(
    s: &mut ReplicationPolicyStatus,
    old: &ReplicationPolicyStatus,
    sync: &Sync,
    generation: Option<i64>,
    now: Timestamp,
) {
    let set = |s: &mut ReplicationPolicyStatus, t: &str, ok: bool, r: &str, m: &str| {
        condition::set_condition(
            &mut s.conditions,
            condition::condition(t, ok, r, m, generation, now),
        );
    };
    s.next_sync_time = sync.next.map(Time);
    s.resume_token_present = sync.resume_token_present;
    if let Some(t) = sync.target_newest {
        s.last_replicated_snapshot_time = Some(Time(t));
    }
    if sync.manual.is_some() {
        s.last_manual_trigger.clone_from(&sync.manual);
    }
    let plan = sync.plan.as_ref();
    if let Some(c) = plan.and_then(|p| p.newest_common.as_ref()) {
        s.last_common_snapshot = Some(c.name.to_string());
    }
    match plan.and_then(|p| p.divergence.as_ref()) {
        Some(d) => set(s, kind::DIVERGED, true, d.kind.as_str(), &d.message),
        None => set(s, kind::DIVERGED, false, reason::AS_EXPECTED, ""),
    }
    if sync.ran.sends > 0 {
        s.last_sync_bytes = i64::try_from(sync.ran.bytes).ok();
    }
    if let Some(f) = &sync.failure {
        set(s, kind::READY, false, f.reason, &f.message);
        set(s, kind::DEGRADED, true, f.reason, &f.message);
        set(s, kind::PROGRESSING, true, reason::SENDING, "retrying");
        s.last_error = Some(last_error(
            old.last_error.as_ref(),
            Some(&f.node),
            f.reason,
            &f.message,
            now,
        ));
        s.consecutive_failures = old.consecutive_failures.saturating_add(1);
        return;
    }
    if let Some(b) = plan.and_then(|p| p.blocked.as_ref()) {
        let r = b.code.as_str();
        set(s, kind::READY, false, r, &b.message);
        set(s, kind::DEGRADED, true, r, &b.message);
        set(
            s,
            kind::PROGRESSING,
            false,
            r,
            "nothing is sent until this is fixed",
        );
        s.last_error = Some(last_error(
            old.last_error.as_ref(),
            None,
            r,
            &b.message,
            now,
        ));
        s.consecutive_failures = old.consecutive_failures.saturating_add(1);
        return;
    }
    let message = match &s.last_common_snapshot {
        Some(c) => format!("the target holds the source's snapshots up to {c}"),
        None => "nothing to replicate yet".to_owned(),
    };
    set(s, kind::READY, true, reasons::SYNCED, &message);
    set(s, kind::DEGRADED, false, reason::AS_EXPECTED, "");
    let waiting = match sync.next {
        Some(t) => format!("the next sync is at {t}"),
        None => "up to date".to_owned(),
    };
    set(
        s,
        kind::PROGRESSING,
        false,
        reason::WAITING_FOR_SCHEDULE,
        &waiting,
    );
    s.last_error = None;
    s.consecutive_failures = 0;
    if sync.ran.sends > 0 {
        s.last_sync_time = Some(Time(sync.ended));
        let took = sync.ended.duration_since(sync.started);
        s.last_sync_duration = Some(format!("{:.1}s", took.as_secs_f64()));
    }
}
