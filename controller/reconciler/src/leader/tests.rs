#![allow(clippy::unwrap_used)]

use super::*;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn spec(holder: Option<&str>, renew: i64, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: holder.map(str::to_owned),
        renew_time: Some(MicroTime(at(renew))),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

const D: Duration = Duration::from_secs(10);

#[test]
fn the_holder_renews_without_a_new_transition() {
    let o = observe(None, &spec(Some("me"), 100, 4), at(101));
    assert_eq!(decide(&o, "me", D, at(101)), Step::Renew { transitions: 4 });
}

#[test]
fn a_free_lease_is_taken_with_one_more_transition() {
    let o = observe(None, &spec(None, 100, 4), at(101));
    assert_eq!(
        decide(&o, "me", D, at(101)),
        Step::Acquire { transitions: 5 }
    );
    let empty = observe(None, &spec(Some(""), 100, 0), at(101));
    assert_eq!(
        decide(&empty, "me", D, at(101)),
        Step::Acquire { transitions: 1 }
    );
}

#[test]
fn another_holder_is_waited_for_until_silent_for_the_duration_by_our_clock() {
    // The holder's renew time is far in the past by our clock (skew): that alone does not
    // make it expired; only our own observation of silence does.
    let first = observe(None, &spec(Some("other"), 0, 2), at(1_000));
    assert!(matches!(
        decide(&first, "me", D, at(1_000)),
        Step::Wait { .. }
    ));
    let same = observe(Some(first), &spec(Some("other"), 0, 2), at(1_009));
    assert!(matches!(
        decide(&same, "me", D, at(1_009)),
        Step::Wait { .. }
    ));
    assert_eq!(
        decide(&same, "me", D, at(1_010)),
        Step::Acquire { transitions: 3 }
    );
}

#[test]
fn a_renewal_restarts_the_silence() {
    let first = observe(None, &spec(Some("other"), 0, 2), at(1_000));
    let renewed = observe(Some(first), &spec(Some("other"), 8, 2), at(1_008));
    assert!(matches!(
        decide(&renewed, "me", D, at(1_015)),
        Step::Wait { .. }
    ));
    assert_eq!(
        decide(&renewed, "me", D, at(1_018)),
        Step::Acquire { transitions: 3 }
    );
}

#[test]
fn epochs_never_go_negative_or_overflow() {
    assert_eq!(epoch(-3), LeaderEpoch(0));
    let o = observe(None, &spec(None, 0, i32::MAX), at(1));
    assert_eq!(
        decide(&o, "me", D, at(1)),
        Step::Acquire {
            transitions: i32::MAX
        }
    );
}
