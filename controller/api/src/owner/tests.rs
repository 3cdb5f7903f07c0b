use proptest::prelude::*;

use super::*;

fn owner(s: &str) -> Owner {
    s.parse().expect("owner")
}

#[test]
fn the_documented_examples_round_trip() {
    for text in [
        "SnapshotSchedule/default/db-hourly",
        "ReplicationPolicy/default/offsite",
        "SnapshotSchedule/a/b.c.d",
        "ReplicationPolicy/0/9",
    ] {
        let o = owner(text);
        assert_eq!(o.to_string(), text);
        assert_eq!(o.as_str(), text);
        assert_eq!(owner(&o.to_string()), o);
    }
    let o = owner("ReplicationPolicy/team-a/offsite.eu");
    assert_eq!(o.kind(), OwnerKind::ReplicationPolicy);
    assert_eq!(o.namespace(), "team-a");
    assert_eq!(o.name(), "offsite.eu");
    let s = Owner::new(OwnerKind::SnapshotSchedule, "team-a", "offsite.eu").expect("owner");
    assert_eq!(s.kind(), OwnerKind::SnapshotSchedule);
    assert_eq!(s.as_str(), "SnapshotSchedule/team-a/offsite.eu");
}

#[test]
fn a_schedule_and_a_policy_of_one_name_are_different_owners() {
    let schedule = Owner::new(OwnerKind::SnapshotSchedule, "ns", "x").expect("owner");
    let policy = Owner::new(OwnerKind::ReplicationPolicy, "ns", "x").expect("owner");
    assert_ne!(schedule, policy);
    assert_eq!(schedule.namespace(), policy.namespace());
    assert_eq!(schedule.name(), policy.name());
}

#[test]
fn other_formats_are_not_owners() {
    type Check = fn(&OwnerError) -> bool;
    let cases: &[(&str, Check)] = &[
        // The `<namespace>/<name>` of earlier drafts.
        ("default/db-hourly", |e| {
            matches!(e, OwnerError::Shape { .. })
        }),
        ("", |e| matches!(e, OwnerError::Shape { .. })),
        ("SnapshotSchedule", |e| {
            matches!(e, OwnerError::Shape { .. })
        }),
        ("snapshotschedule/ns/x", |e| {
            matches!(e, OwnerError::Kind { .. })
        }),
        ("Schedule/ns/x", |e| matches!(e, OwnerError::Kind { .. })),
        ("SnapshotSchedule /ns/x", |e| {
            matches!(e, OwnerError::Kind { .. })
        }),
        ("SnapshotSchedule//x", |e| {
            matches!(e, OwnerError::Namespace { .. })
        }),
        ("SnapshotSchedule/NS/x", |e| {
            matches!(e, OwnerError::Namespace { .. })
        }),
        ("SnapshotSchedule/-ns/x", |e| {
            matches!(e, OwnerError::Namespace { .. })
        }),
        ("SnapshotSchedule/ns-/x", |e| {
            matches!(e, OwnerError::Namespace { .. })
        }),
        ("SnapshotSchedule/n.s/x", |e| {
            matches!(e, OwnerError::Namespace { .. })
        }),
        ("SnapshotSchedule/ns/", |e| {
            matches!(e, OwnerError::Name { .. })
        }),
        ("SnapshotSchedule/ns/x/y", |e| {
            matches!(e, OwnerError::Name { .. })
        }),
        ("SnapshotSchedule/ns/a..b", |e| {
            matches!(e, OwnerError::Name { .. })
        }),
        ("SnapshotSchedule/ns/.a", |e| {
            matches!(e, OwnerError::Name { .. })
        }),
        ("SnapshotSchedule/ns/a-.b", |e| {
            matches!(e, OwnerError::Name { .. })
        }),
        ("SnapshotSchedule/ns/Db", |e| {
            matches!(e, OwnerError::Name { .. })
        }),
        ("SnapshotSchedule/ns/x\t", |e| {
            matches!(e, OwnerError::Name { .. })
        }),
        ("SnapshotSchedule/ns/x ", |e| {
            matches!(e, OwnerError::Name { .. })
        }),
    ];
    for (text, is_expected) in cases {
        let err = text.parse::<Owner>().expect_err(text);
        assert!(is_expected(&err), "{text:?}: {err}");
    }
}

#[test]
fn length_limits_are_kubernetes_ones() {
    let ns63 = "n".repeat(63);
    assert!(Owner::new(OwnerKind::SnapshotSchedule, &ns63, "x").is_ok());
    assert!(matches!(
        Owner::new(OwnerKind::SnapshotSchedule, &format!("{ns63}n"), "x"),
        Err(OwnerError::Namespace { .. })
    ));
    // 253 bytes of dot-separated labels.
    let name253 = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(name253.len(), 253);
    assert!(Owner::new(OwnerKind::ReplicationPolicy, "ns", &name253).is_ok());
    assert!(matches!(
        Owner::new(OwnerKind::ReplicationPolicy, "ns", &format!("{name253}d")),
        Err(OwnerError::Name { .. })
    ));
}

#[test]
fn serde_is_the_text_strict_or_lenient() {
    let o = owner("SnapshotSchedule/default/db-hourly");
    let json = serde_json::to_string(&o).expect("json");
    assert_eq!(json, "\"SnapshotSchedule/default/db-hourly\"");
    assert_eq!(serde_json::from_str::<Owner>(&json).expect("owner"), o);
    assert!(serde_json::from_str::<Owner>("\"default/db-hourly\"").is_err());

    #[derive(serde::Deserialize)]
    struct Holder {
        #[serde(default, deserialize_with = "deserialize_lenient")]
        owner: Option<Owner>,
    }
    let read = |json: &str| serde_json::from_str::<Holder>(json).expect("holder").owner;
    assert_eq!(
        read(r#"{"owner": "SnapshotSchedule/default/db-hourly"}"#),
        Some(o)
    );
    assert_eq!(read(r#"{"owner": "default/db-hourly"}"#), None);
    assert_eq!(read(r#"{"owner": "BackupPolicy/default/db"}"#), None);
    assert_eq!(read(r#"{"owner": null}"#), None);
    assert_eq!(read("{}"), None);
}

fn arb_label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"
}

proptest! {
    #[test]
    fn valid_parts_round_trip(
        schedule in any::<bool>(),
        namespace in arb_label(),
        labels in proptest::collection::vec(arb_label(), 1..4),
    ) {
        let kind = if schedule { OwnerKind::SnapshotSchedule } else { OwnerKind::ReplicationPolicy };
        let name = labels.join(".");
        let o = Owner::new(kind, &namespace, &name).expect("owner");
        prop_assert_eq!(o.kind(), kind);
        prop_assert_eq!(o.namespace(), namespace.as_str());
        prop_assert_eq!(o.name(), name.as_str());
        let again: Owner = o.to_string().parse().expect("parse");
        prop_assert_eq!(again, o);
    }

    #[test]
    fn parsing_anything_never_panics_and_what_parses_prints_back(
        text in "(SnapshotSchedule|ReplicationPolicy|[A-Za-z]{0,3})?[/a-z0-9.-]{0,12}(/[a-zA-Z0-9. \t/-]{0,12})?",
    ) {
        if let Ok(o) = text.parse::<Owner>() {
            prop_assert_eq!(o.to_string(), text.clone());
            prop_assert_eq!(
                format!("{}/{}/{}", o.kind(), o.namespace(), o.name()),
                text
            );
        }
    }
}
