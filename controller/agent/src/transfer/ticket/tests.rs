//! The ticket rules: forged, replayed, expired, bound to someone else, revoked by a retry,
//! bounded in number, compared in constant time.

use super::*;

const TTL: Duration = Duration::from_secs(60);

fn grant(target: &str, step: &str) -> ReceiveGrant {
    ReceiveGrant {
        receive: ReceiveOptions::new(target.parse().expect("dataset")),
        binding: TransferBinding {
            owner: "ReplicationPolicy/ns/db".parse().expect("owner"),
            step: step.parse().expect("step"),
            source_node: "node-a".to_owned(),
        },
        epoch: LeaderEpoch(4),
        stall: Duration::from_secs(60),
    }
}

fn as_bound<'a>(step: &'a str) -> PresentedBinding<'a> {
    PresentedBinding {
        owner: "ReplicationPolicy/ns/db",
        step,
        source_node: "node-a",
    }
}

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("time")
}

fn at(seconds: i64) -> Timestamp {
    t0().checked_add(SignedDuration::from_secs(seconds))
        .expect("time")
}

#[test]
fn a_minted_ticket_is_redeemed_once_for_exactly_its_receive() {
    let registry = TicketRegistry::new(TTL, 8);
    let (ticket, expires) = registry
        .issue(grant("back/db", "s1"), t0())
        .expect("issued");
    assert_eq!(expires, at(60));
    let redeemed = registry
        .redeem(Some(&ticket.reveal()), as_bound("s1"), at(1))
        .expect("redeemed");
    assert_eq!(redeemed, grant("back/db", "s1"));
    // Replayed: refused, and again.
    for _ in 0..2 {
        assert_eq!(
            registry.redeem(Some(&ticket.reveal()), as_bound("s1"), at(2)),
            Err(TicketRefused::Used)
        );
    }
}

#[test]
fn two_tickets_are_never_alike() {
    let registry = TicketRegistry::new(TTL, 8);
    let (a, _) = registry.issue(grant("back/a", "s"), t0()).expect("a");
    let (b, _) = registry.issue(grant("back/b", "s"), t0()).expect("b");
    assert_ne!(a, b);
}

#[test]
fn forged_missing_and_malformed_tickets_are_refused() {
    let registry = TicketRegistry::new(TTL, 8);
    let (real, _) = registry
        .issue_with(grant("back/db", "s1"), [0xab; 32], t0())
        .expect("issued");
    let mut near = [0xab_u8; 32];
    near[31] = 0xac;
    let forged = TransferTicket::from_bytes(near).reveal();
    assert_eq!(
        registry.redeem(Some(&forged), as_bound("s1"), at(1)),
        Err(TicketRefused::Unknown)
    );
    assert_eq!(
        registry.redeem(None, as_bound("s1"), at(1)),
        Err(TicketRefused::Missing)
    );
    for bad in [
        "",
        "07",
        &real.reveal().to_uppercase(),
        &format!("{} ", real.reveal()),
    ] {
        assert_eq!(
            registry.redeem(Some(bad), as_bound("s1"), at(1)),
            Err(TicketRefused::Malformed),
            "{bad:?}"
        );
    }
    // None of that touched the real ticket.
    assert!(
        registry
            .redeem(Some(&real.reveal()), as_bound("s1"), at(1))
            .is_ok()
    );
}

#[test]
fn an_expired_ticket_is_refused_and_burnt() {
    let registry = TicketRegistry::new(TTL, 8);
    let (ticket, _) = registry
        .issue(grant("back/db", "s1"), t0())
        .expect("issued");
    assert_eq!(
        registry.redeem(Some(&ticket.reveal()), as_bound("s1"), at(60)),
        Err(TicketRefused::Expired)
    );
    assert_eq!(
        registry.redeem(Some(&ticket.reveal()), as_bound("s1"), at(61)),
        Err(TicketRefused::Used)
    );
    // Forgotten once a second time-to-live has passed.
    assert_eq!(
        registry.redeem(Some(&ticket.reveal()), as_bound("s1"), at(200)),
        Err(TicketRefused::Unknown)
    );
    assert!(registry.is_empty());
}

#[test]
fn a_binding_mismatch_burns_the_ticket() {
    for (presented, field) in [
        (
            PresentedBinding {
                owner: "ReplicationPolicy/ns/other",
                step: "s1",
                source_node: "node-a",
            },
            "policy",
        ),
        (as_bound("s2"), "step"),
        (
            PresentedBinding {
                owner: "ReplicationPolicy/ns/db",
                step: "s1",
                source_node: "node-b",
            },
            "source node",
        ),
    ] {
        let registry = TicketRegistry::new(TTL, 8);
        let (ticket, _) = registry
            .issue(grant("back/db", "s1"), t0())
            .expect("issued");
        assert_eq!(
            registry.redeem(Some(&ticket.reveal()), presented, at(1)),
            Err(TicketRefused::BindingMismatch { field })
        );
        // The rightful presenter comes too late: a ticket seen by another is worthless.
        assert_eq!(
            registry.redeem(Some(&ticket.reveal()), as_bound("s1"), at(1)),
            Err(TicketRefused::Used)
        );
    }
}

#[test]
fn preparing_again_for_a_target_revokes_its_unused_ticket() {
    let registry = TicketRegistry::new(TTL, 8);
    let (first, _) = registry.issue(grant("back/db", "s1"), t0()).expect("first");
    let (other, _) = registry
        .issue(grant("back/web", "s1"), t0())
        .expect("other");
    let (second, _) = registry
        .issue(grant("back/db", "s1"), at(1))
        .expect("second");
    assert_eq!(
        registry.redeem(Some(&first.reveal()), as_bound("s1"), at(2)),
        Err(TicketRefused::Unknown)
    );
    assert!(
        registry
            .redeem(Some(&second.reveal()), as_bound("s1"), at(2))
            .is_ok()
    );
    assert!(
        registry
            .redeem(Some(&other.reveal()), as_bound("s1"), at(2))
            .is_ok()
    );
}

#[test]
fn outstanding_tickets_are_bounded() {
    let registry = TicketRegistry::new(TTL, 2);
    registry.issue(grant("back/a", "s"), t0()).expect("a");
    registry.issue(grant("back/b", "s"), t0()).expect("b");
    assert_eq!(
        registry.issue(grant("back/c", "s"), t0()),
        Err(IssueError::Full(2))
    );
    // Room again once the old ones are forgotten.
    assert!(registry.issue(grant("back/c", "s"), at(121)).is_ok());
}

#[test]
fn constant_time_eq_compares_every_byte() {
    let a = [0x5a; 32];
    assert!(constant_time_eq(&a, &a));
    for i in [0, 15, 31] {
        for bit in [0x01, 0x80] {
            let mut b = a;
            b[i] ^= bit;
            assert!(!constant_time_eq(&a, &b), "byte {i} bit {bit:#x}");
        }
    }
}
