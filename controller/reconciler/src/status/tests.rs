#![allow(clippy::unwrap_used)]

use super::*;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn failing(msg: &str) -> Outcome {
    Outcome::Ran {
        suspended: false,
        nodes: vec![(
            "n1".into(),
            NodeRun {
                failure: Some(NodeFailure {
                    reason: reasons::AGENT_UNAVAILABLE,
                    message: msg.into(),
                }),
                ..NodeRun::default()
            },
        )],
        next_due: Some(at(100)),
        manual_done: None,
    }
}

fn ok(pruned: usize) -> Outcome {
    Outcome::Ran {
        suspended: false,
        nodes: vec![(
            "n1".into(),
            NodeRun {
                newest: Some(("tidepool_x_s".into(), at(50))),
                owned: 3,
                pruned,
                failure: None,
            },
        )],
        next_due: Some(at(100)),
        manual_done: Some("t1".into()),
    }
}

#[test]
fn the_same_outcome_twice_changes_nothing() {
    let s1 = next(&SnapshotScheduleStatus::default(), &ok(0), Some(1), at(60));
    let s2 = next(&s1, &ok(0), Some(1), at(70));
    assert_eq!(s1, s2);
    let b = Outcome::Blocked(Blocker {
        reason: reasons::INVALID_SCHEDULE,
        message: "spec.schedule.cron: bad".into(),
    });
    let b1 = next(&s1, &b, Some(2), at(80));
    assert_eq!(next(&b1, &b, Some(2), at(90)), b1);
    assert_eq!(ready(&b1).unwrap().1, "InvalidSchedule");
}

#[test]
fn a_failure_is_recorded_per_node_and_a_later_success_clears_it() {
    let f = next(
        &SnapshotScheduleStatus::default(),
        &failing("refused"),
        Some(1),
        at(10),
    );
    assert_eq!(f.consecutive_failures, 1);
    assert_eq!(f.last_error.as_ref().unwrap().node.as_deref(), Some("n1"));
    assert_eq!(f.last_error.as_ref().unwrap().reason, "AgentUnavailable");
    assert_eq!(
        ready(&f).unwrap(),
        (false, "AgentUnavailable".into(), "node n1: refused".into())
    );
    let again = next(&f, &failing("refused"), Some(1), at(20));
    assert_eq!(again.last_error.as_ref().unwrap().time, Time(at(10)));
    assert_eq!(again.consecutive_failures, 2);
    let fixed = next(&again, &ok(2), Some(1), at(30));
    assert_eq!(fixed.last_error, None);
    assert_eq!(fixed.consecutive_failures, 0);
    assert!(fixed.nodes[0].last_error.is_none());
    assert_eq!(fixed.nodes[0].pruned_total, 2);
    assert_eq!(fixed.last_manual_trigger.as_deref(), Some("t1"));
    assert!(ready(&fixed).unwrap().0);
    let more = next(&fixed, &ok(3), Some(1), at(40));
    assert_eq!(more.nodes[0].pruned_total, 5);
}

fn cond(s: &SnapshotScheduleStatus, t: &str) -> (String, String, String) {
    let c = condition::find(&s.conditions, t).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn two_nodes(fail_b: bool) -> Outcome {
    let good = |n: &str| {
        (
            n.to_owned(),
            NodeRun {
                newest: Some(("tidepool_x_s".into(), at(50))),
                owned: 2,
                ..NodeRun::default()
            },
        )
    };
    let mut nodes = vec![good("a"), good("b")];
    if fail_b {
        nodes[1].1 = NodeRun {
            failure: Some(NodeFailure {
                reason: reasons::DATASET_NOT_FOUND,
                message: "dataset tank/x does not exist".into(),
            }),
            ..NodeRun::default()
        };
    }
    Outcome::Ran {
        suspended: false,
        nodes,
        next_due: Some(at(100)),
        manual_done: None,
    }
}

#[test]
fn progressing_and_degraded_say_what_is_owed_and_what_fails() {
    let ok = next(
        &SnapshotScheduleStatus::default(),
        &two_nodes(false),
        Some(1),
        at(60),
    );
    assert_eq!(
        cond(&ok, kind::PROGRESSING),
        (
            "False".into(),
            "WaitingForSchedule".into(),
            "the next slot is at 1970-01-01T00:01:40Z".into()
        )
    );
    assert_eq!(cond(&ok, kind::DEGRADED).0, "False");
    assert_eq!(cond(&ok, kind::DEGRADED).1, "AsExpected");

    // One node of two fails: degraded with that node's reason, the run still owed there.
    let partial = next(&ok, &two_nodes(true), Some(1), at(70));
    assert_eq!(
        cond(&partial, kind::DEGRADED),
        (
            "True".into(),
            "DatasetNotFound".into(),
            "1 of 2 node(s) failing; node b: dataset tank/x does not exist".into()
        )
    );
    assert_eq!(
        cond(&partial, kind::PROGRESSING),
        (
            "True".into(),
            "Snapshotting".into(),
            "retrying on node(s) b".into()
        )
    );
    assert_eq!(cond(&partial, kind::READY).0, "False");
    // The node that ran keeps its summary; the failing one has its own error.
    assert!(partial.nodes[0].last_error.is_none());
    assert_eq!(partial.nodes[0].snapshot_count, 2);
    assert_eq!(
        partial.nodes[1].last_error.as_ref().unwrap().reason,
        "DatasetNotFound"
    );
    // Failing again: consecutive failures count, the conditions stay put.
    let again = next(&partial, &two_nodes(true), Some(1), at(80));
    assert_eq!(again.consecutive_failures, 2);
    assert_eq!(again.conditions, partial.conditions);

    // Recovered: both back to False, the transition times moved.
    let fixed = next(&again, &two_nodes(false), Some(1), at(90));
    assert_eq!(cond(&fixed, kind::DEGRADED).0, "False");
    assert_eq!(cond(&fixed, kind::PROGRESSING).1, "WaitingForSchedule");
    let t = |s: &SnapshotScheduleStatus, k| {
        condition::find(&s.conditions, k)
            .unwrap()
            .last_transition_time
            .clone()
    };
    assert_eq!(t(&fixed, kind::DEGRADED), Time(at(90)));
    assert_eq!(t(&partial, kind::DEGRADED), Time(at(70)));

    // Suspended and blocked: nothing owed, nothing in flight.
    let suspended = next(
        &fixed,
        &Outcome::Ran {
            suspended: true,
            nodes: vec![],
            next_due: None,
            manual_done: None,
        },
        Some(2),
        at(95),
    );
    assert_eq!(cond(&suspended, kind::PROGRESSING).1, "Suspended");
    assert_eq!(cond(&suspended, kind::PROGRESSING).0, "False");
    let blocked = next(
        &fixed,
        &Outcome::Blocked(Blocker {
            reason: reasons::NOT_PERMITTED,
            message: "no grant".into(),
        }),
        Some(2),
        at(95),
    );
    assert_eq!(cond(&blocked, kind::PROGRESSING).0, "False");
    assert_eq!(cond(&blocked, kind::PROGRESSING).1, "NotPermitted");
    assert_eq!(
        cond(&blocked, kind::DEGRADED),
        ("True".into(), "NotPermitted".into(), "no grant".into())
    );
}
