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
