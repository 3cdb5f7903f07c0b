//! The status a reconcile leads to, computed from the old status and what happened. Pure,
//! so "written only when something changed" is a comparison of two values ([`pace`] says
//! when a change is written).
//!
//! Conditions, after each reconcile:
//! - `Ready`: True (`Reconciled`, or `Suspended`) when every node ran; False with the
//!   blocker's or the first failing node's reason otherwise.
//! - `Degraded`: True with the same reason while anything fails (blocked, or some or all
//!   nodes failing; the message says how many of how many), False `AsExpected` otherwise.
//! - `Progressing`: True `Snapshotting` while a run is unfinished on some node and will be
//!   retried; False `WaitingForSchedule` (message: the next slot) when every node is done
//!   until the next slot; False `Suspended`; False with the blocker's reason when nothing
//!   can run until the spec, a grant or a node changes. It is computed after the run, so a
//!   run that succeeds is never seen in flight: True means "still owes work", not "busy
//!   right now", and it does not flap on every slot of a fast schedule.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tidepool_api::LastError;
use tidepool_api::condition::{self, kind, reason};
use tidepool_api::snapshot_schedule::{NodeSnapshotStatus, SnapshotScheduleStatus};

use crate::reasons;

/// Why nothing was touched at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    pub reason: &'static str,
    pub message: String,
}

/// A failure on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFailure {
    pub reason: &'static str,
    pub message: String,
}

/// What happened on one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeRun {
    pub newest: Option<(String, Timestamp)>,
    pub owned: usize,
    pub pruned: usize,
    pub failure: Option<NodeFailure>,
}

/// What one reconcile found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Blocked(Blocker),
    Ran {
        suspended: bool,
        nodes: Vec<(String, NodeRun)>,
        next_due: Option<Timestamp>,
        /// The manual token answered by this reconcile on every node.
        manual_done: Option<String>,
    },
}

pub(crate) fn last_error(
    old: Option<&LastError>,
    node: Option<&str>,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> LastError {
    // The same error again keeps its first time: a retry loop must not rewrite status.
    match old {
        Some(o) if o.node.as_deref() == node && o.reason == reason && o.message == message => {
            o.clone()
        }
        _ => LastError {
            node: node.map(str::to_owned),
            reason: reason.to_owned(),
            message: message.to_owned(),
            time: Time(now),
        },
    }
}

/// The next status.
pub fn next(
    old: &SnapshotScheduleStatus,
    outcome: &Outcome,
    generation: Option<i64>,
    now: Timestamp,
) -> SnapshotScheduleStatus {
    let mut s = old.clone();
    s.observed_generation = generation;
    let set = |s: &mut SnapshotScheduleStatus, t: &str, ok: bool, r: &str, m: &str| {
        condition::set_condition(
            &mut s.conditions,
            condition::condition(t, ok, r, m, generation, now),
        );
    };
    match outcome {
        Outcome::Blocked(b) => {
            set(&mut s, kind::READY, false, b.reason, &b.message);
            set(&mut s, kind::DEGRADED, true, b.reason, &b.message);
            set(
                &mut s,
                kind::PROGRESSING,
                false,
                b.reason,
                "nothing is done until this is fixed",
            );
            s.last_error = Some(last_error(
                old.last_error.as_ref(),
                None,
                b.reason,
                &b.message,
                now,
            ));
            s.next_snapshot_time = None;
        }
        Outcome::Ran {
            suspended,
            nodes,
            next_due,
            manual_done,
        } => {
            let mut node_status = Vec::new();
            let mut first_failure: Option<(String, NodeFailure)> = None;
            for (name, run) in nodes {
                let prev = old.nodes.iter().find(|n| &n.node == name);
                let err = run.failure.as_ref().map(|f| {
                    last_error(
                        prev.and_then(|p| p.last_error.as_ref()),
                        Some(name),
                        f.reason,
                        &f.message,
                        now,
                    )
                });
                if let (None, Some(f)) = (&first_failure, &run.failure) {
                    first_failure = Some((name.clone(), f.clone()));
                }
                node_status.push(NodeSnapshotStatus {
                    node: name.clone(),
                    last_snapshot_time: run
                        .newest
                        .as_ref()
                        .map(|(_, t)| Time(*t))
                        .or_else(|| prev.and_then(|p| p.last_snapshot_time.clone())),
                    snapshot_count: i64::try_from(run.owned).unwrap_or(i64::MAX),
                    pruned_total: prev
                        .map_or(0, |p| p.pruned_total)
                        .saturating_add(i64::try_from(run.pruned).unwrap_or(i64::MAX)),
                    last_error: err,
                });
            }
            s.nodes = node_status;
            if let Some((_, t)) = nodes
                .iter()
                .filter_map(|(_, r)| r.newest.as_ref())
                .max_by_key(|(_, t)| *t)
            {
                let name = nodes
                    .iter()
                    .filter_map(|(_, r)| r.newest.as_ref())
                    .find(|(_, nt)| nt == t)
                    .map(|(n, _)| n.clone());
                s.last_snapshot_time = Some(Time(*t));
                s.last_snapshot_name = name;
            }
            s.next_snapshot_time = next_due.map(Time);
            if let Some(token) = manual_done {
                s.last_manual_trigger = Some(token.clone());
            }
            let failing: Vec<&str> = nodes
                .iter()
                .filter(|(_, r)| r.failure.is_some())
                .map(|(n, _)| n.as_str())
                .collect();
            match first_failure {
                Some((node, f)) => {
                    let message = format!("node {node}: {}", f.message);
                    set(&mut s, kind::READY, false, f.reason, &message);
                    set(
                        &mut s,
                        kind::DEGRADED,
                        true,
                        f.reason,
                        &format!(
                            "{} of {} node(s) failing; {message}",
                            failing.len(),
                            nodes.len()
                        ),
                    );
                    // The run is not finished on the failing nodes: it is retried.
                    set(
                        &mut s,
                        kind::PROGRESSING,
                        true,
                        reason::SNAPSHOTTING,
                        &format!("retrying on node(s) {}", failing.join(", ")),
                    );
                    s.last_error = Some(last_error(
                        old.last_error.as_ref(),
                        Some(&node),
                        f.reason,
                        &message,
                        now,
                    ));
                    s.consecutive_failures = old.consecutive_failures.saturating_add(1);
                }
                None if *suspended => {
                    set(
                        &mut s,
                        kind::READY,
                        true,
                        reason::SUSPENDED,
                        "spec.suspend is set: no snapshots are taken or pruned",
                    );
                    set(&mut s, kind::DEGRADED, false, reason::AS_EXPECTED, "");
                    set(&mut s, kind::PROGRESSING, false, reason::SUSPENDED, "");
                    s.last_error = None;
                    s.consecutive_failures = 0;
                }
                None => {
                    let message = format!("snapshots on {} node(s)", nodes.len());
                    set(&mut s, kind::READY, true, reasons::RECONCILED, &message);
                    set(&mut s, kind::DEGRADED, false, reason::AS_EXPECTED, "");
                    let waiting = match next_due {
                        Some(t) => format!("the next slot is at {t}"),
                        None => "no slot is due".to_owned(),
                    };
                    set(
                        &mut s,
                        kind::PROGRESSING,
                        false,
                        reason::WAITING_FOR_SCHEDULE,
                        &waiting,
                    );
                    s.last_error = None;
                    s.consecutive_failures = 0;
                }
            }
        }
    }
    s
}

/// The Ready condition's (status, reason, message), to detect a transition worth an event.
pub fn ready(status: &SnapshotScheduleStatus) -> Option<(bool, String, String)> {
    condition::find(&status.conditions, kind::READY)
        .map(|c| (c.status == "True", c.reason.clone(), c.message.clone()))
}

pub mod pace;

#[cfg(test)]
mod tests;
