#![allow(clippy::unwrap_used)]

use super::*;
use crate::reasons;
use crate::status::{NodeFailure, NodeRun, Outcome, next};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const WINDOW: Duration = Duration::from_secs(5);

fn at_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap()
}

/// One successful run on n1 at `ms`, pruning `pruned`, next slot a second later.
fn ran(ms: i64, pruned: usize) -> Outcome {
    Outcome::Ran {
        suspended: false,
        nodes: vec![(
            "n1".into(),
            NodeRun {
                newest: Some((format!("tidepool_{ms}_s"), at_ms(ms))),
                owned: 3,
                pruned,
                failure: None,
            },
        )],
        next_due: Some(at_ms(ms + 1000)),
        manual_done: None,
    }
}

fn failed(ms: i64) -> Outcome {
    Outcome::Ran {
        suspended: false,
        nodes: vec![(
            "n1".into(),
            NodeRun {
                failure: Some(NodeFailure {
                    reason: reasons::AGENT_UNAVAILABLE,
                    message: "refused".into(),
                }),
                ..NodeRun::default()
            },
        )],
        next_due: Some(at_ms(ms + 1000)),
        manual_done: None,
    }
}

/// Plays a reconcile at `ms` through the memory the way `reconcile` does; returns the
/// decision and the status the API server holds afterwards.
fn reconcile(
    memory: &StatusMemory,
    stored: &mut SnapshotScheduleStatus,
    outcome: &Outcome,
    ms: i64,
) -> Write {
    let now = at_ms(ms);
    let known = memory.known("uid-1", stored);
    let new = next(&known.previous, outcome, Some(1), now);
    let write = decide(&known.written, &new, known.written_at, WINDOW, now);
    memory.record("uid-1", &known, &new, write == Write::Now, now);
    if write == Write::Now {
        *stored = new;
    }
    write
}

#[test]
fn a_one_second_schedule_writes_once_per_window_and_loses_no_count() {
    let memory = StatusMemory::default();
    let mut stored = SnapshotScheduleStatus::default();
    let mut writes = 0;
    // 60 runs a second apart, each pruning one snapshot.
    for i in 0..60 {
        let ms = 1_000_000 + i * 1000;
        match reconcile(&memory, &mut stored, &ran(ms, 1), ms) {
            Write::Now => writes += 1,
            Write::Defer { until } => assert!(until > at_ms(ms) && until <= at_ms(ms + 5000)),
            Write::Unchanged => panic!("every run moves the times"),
        }
    }
    // The first run writes (conditions appear), then one per 5 s window.
    assert_eq!(writes, 12, "{writes} writes in 60 s");
    // What was held back is carried by the next write: the counter is whole.
    let ms = 1_000_000 + 65_000;
    assert_eq!(reconcile(&memory, &mut stored, &ran(ms, 1), ms), Write::Now);
    assert_eq!(stored.nodes[0].pruned_total, 61);
    assert_eq!(stored.last_snapshot_time, Some(Time(at_ms(ms))));
}

#[test]
fn a_failure_and_its_recovery_are_written_at_once_inside_the_window() {
    let memory = StatusMemory::default();
    let mut stored = SnapshotScheduleStatus::default();
    assert_eq!(reconcile(&memory, &mut stored, &ran(0, 0), 0), Write::Now);
    assert!(matches!(
        reconcile(&memory, &mut stored, &ran(1000, 0), 1000),
        Write::Defer { .. }
    ));
    // Ready flips, lastError appears: written although the window is not over.
    assert_eq!(
        reconcile(&memory, &mut stored, &failed(1500), 1500),
        Write::Now
    );
    assert_eq!(
        stored.last_error.as_ref().unwrap().reason,
        "AgentUnavailable"
    );
    assert_eq!(stored.consecutive_failures, 1);
    // The same failure again: only the count moves, so it waits.
    assert!(matches!(
        reconcile(&memory, &mut stored, &failed(2000), 2000),
        Write::Defer { .. }
    ));
    assert_eq!(stored.consecutive_failures, 1);
    // The success clears the error at once, and counted from what was computed.
    assert_eq!(
        reconcile(&memory, &mut stored, &ran(2500, 0), 2500),
        Write::Now
    );
    assert_eq!(stored.last_error, None);
    assert_eq!(stored.consecutive_failures, 0);
}

#[test]
fn decide_by_field() {
    let now = at_ms(10_000);
    let base = next(
        &SnapshotScheduleStatus::default(),
        &ran(0, 0),
        Some(1),
        at_ms(0),
    );
    let just = Some(at_ms(9_000));
    assert_eq!(decide(&base, &base, just, WINDOW, now), Write::Unchanged);
    let mut routine = base.clone();
    routine.next_snapshot_time = Some(Time(at_ms(2000)));
    routine.nodes[0].snapshot_count += 1;
    assert_eq!(
        decide(&base, &routine, just, WINDOW, now),
        Write::Defer {
            until: at_ms(14_000)
        }
    );
    // The window is over, or this leader never wrote it: now.
    assert_eq!(
        decide(&base, &routine, Some(at_ms(5_000)), WINDOW, now),
        Write::Now
    );
    assert_eq!(decide(&base, &routine, None, WINDOW, now), Write::Now);
    let significant_changes: [fn(&mut SnapshotScheduleStatus); 5] = [
        |s| s.observed_generation = Some(2),
        |s| s.last_manual_trigger = Some("run-1".into()),
        |s| s.conditions[0].status = "False".into(),
        |s| s.conditions[1].reason = "Other".into(),
        |s| s.nodes[0].node = "n2".into(),
    ];
    for change in significant_changes {
        let mut s = base.clone();
        change(&mut s);
        assert_eq!(decide(&base, &s, just, WINDOW, now), Write::Now, "{s:?}");
    }
    // A message alone (the next slot's time in Progressing) is routine.
    let mut message = base.clone();
    message.conditions[0].message = "other words".into();
    assert!(matches!(
        decide(&base, &message, just, WINDOW, now),
        Write::Defer { .. }
    ));
}

#[test]
fn a_new_object_with_the_same_name_and_a_new_leader_start_from_the_stored_status() {
    let memory = StatusMemory::default();
    let stored = next(
        &SnapshotScheduleStatus::default(),
        &ran(0, 2),
        Some(1),
        at_ms(0),
    );
    let known = memory.known("uid-1", &stored);
    assert_eq!(known.previous, stored);
    assert_eq!(known.written_at, None);
    let newer = next(&stored, &ran(1000, 1), Some(1), at_ms(1000));
    memory.record("uid-1", &known, &newer, false, at_ms(1000));
    assert_eq!(memory.known("uid-1", &stored).previous, newer);
    assert_eq!(memory.known("uid-1", &stored).written, stored);
    assert_eq!(memory.known("uid-2", &stored).previous, stored);
    // Entries of objects not reconciled for hours (deleted) are dropped.
    memory.record("uid-2", &known, &stored, true, at_ms(1000));
    memory.record("uid-3", &known, &stored, true, at_ms(5 * 3_600_000));
    assert_eq!(memory.len(), 1);
}
