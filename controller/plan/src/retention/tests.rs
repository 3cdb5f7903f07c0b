//! Retention tests: a table of rules, the calendar corners, one test per safety rule, and
//! property tests against an independent oracle (`oracle.rs`).

mod oracle;

use jiff::SignedDuration;
use proptest::prelude::*;
use tidepool_api::{HumanDuration, OwnerKind, SnapshotShortName};

use super::*;

fn owner(text: &str) -> Owner {
    text.parse().expect("owner")
}

/// The object whose retention runs.
fn me() -> Owner {
    owner("SnapshotSchedule/ns/hourly")
}

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn snap(i: u64, creation: Timestamp, owner: Option<&Owner>) -> SnapshotInfo {
    SnapshotInfo {
        name: format!("s{i}").parse::<SnapshotShortName>().expect("name"),
        guid: 1000 + i,
        createtxg: 10 + i,
        creation,
        owner: owner.cloned(),
        held: false,
    }
}

/// `n` owned snapshots, one every `step`, the newest at `newest`, oldest first.
fn series(n: u64, newest: Timestamp, step: SignedDuration) -> Vec<SnapshotInfo> {
    let me = me();
    (0..n)
        .map(|i| {
            let age = step * i32::try_from(n - 1 - i).expect("small");
            snap(i, newest - age, Some(&me))
        })
        .collect()
}

/// Owned snapshots at these times, oldest first.
fn at(times: &[&str]) -> Vec<SnapshotInfo> {
    let me = me();
    times
        .iter()
        .enumerate()
        .map(|(i, t)| snap(i as u64, ts(t), Some(&me)))
        .collect()
}

fn inventory(snapshots: Vec<SnapshotInfo>) -> DatasetInventory {
    DatasetInventory::with_snapshots("tank/db".parse().expect("dataset"), snapshots)
}

fn within(d: &str) -> Option<HumanDuration> {
    Some(d.parse().expect("duration"))
}

fn reasons(bits: &[KeepReasons]) -> KeepReasons {
    let mut all = KeepReasons::default();
    for bit in bits {
        all.insert(*bit);
    }
    all
}

type Outcome = (Vec<String>, Vec<(String, KeepReasons)>);

fn run(
    retention: &Retention,
    tz: &str,
    protections: &Protections,
    inv: &DatasetInventory,
) -> Outcome {
    let tz = TimeZone::get(tz).expect("zone");
    let me = me();
    let rules = RetentionRules {
        retention,
        time_zone: &tz,
        owner: &me,
        protections,
    };
    let plan = plan_dataset(&rules, inv);
    (
        plan.destroy
            .iter()
            .map(|d| d.snapshot.name.to_string())
            .collect(),
        plan.keep
            .iter()
            .map(|k| (k.snapshot.name.to_string(), k.reasons))
            .collect(),
    )
}

fn kept(retention: &Retention, tz: &str, snapshots: Vec<SnapshotInfo>) -> Vec<String> {
    let (_, kept) = run(retention, tz, &Protections::new(), &inventory(snapshots));
    kept.into_iter().map(|(n, _)| n).collect()
}

fn destroyed(
    retention: &Retention,
    protections: &Protections,
    snapshots: Vec<SnapshotInfo>,
) -> Vec<String> {
    run(retention, "UTC", protections, &inventory(snapshots)).0
}

#[test]
fn rules_table() {
    let now = ts("2026-11-22T12:00:00Z");
    let hourly_10 = series(10, now, SignedDuration::from_hours(1));
    struct Case {
        name: &'static str,
        retention: Retention,
        snapshots: Vec<SnapshotInfo>,
        tz: &'static str,
        kept: Vec<&'static str>,
    }
    let cases = vec![
        Case {
            name: "keepLast keeps the newest N",
            retention: Retention {
                keep_last: Some(3),
                ..Default::default()
            },
            snapshots: hourly_10.clone(),
            tz: "UTC",
            kept: vec!["s9", "s8", "s7"],
        },
        Case {
            name: "keepWithin keeps those created less than d before the newest (strictly)",
            retention: Retention {
                keep_within: within("3h"),
                ..Default::default()
            },
            snapshots: hourly_10.clone(),
            tz: "UTC",
            kept: vec!["s9", "s8", "s7"],
        },
        Case {
            name: "no rule at all still keeps the newest",
            retention: Retention::default(),
            snapshots: hourly_10.clone(),
            tz: "UTC",
            kept: vec!["s9"],
        },
        Case {
            name: "hourly keeps the newest of each hour",
            retention: Retention {
                hourly: Some(2),
                ..Default::default()
            },
            // Every 20 minutes, newest at 12:00: hours 12 (s8), 11 (s7 at 11:40), ...
            snapshots: series(9, now, SignedDuration::from_mins(20)),
            tz: "UTC",
            kept: vec!["s8", "s7"],
        },
        Case {
            name: "daily buckets are days of the schedule's zone; an unfilled count keeps the oldest",
            retention: Retention {
                daily: Some(2),
                ..Default::default()
            },
            // 21:30, 22:30, 23:30 UTC on the 21st and 00:30 on the 22nd: in Tokyo (+9)
            // all four are on the 22nd: one day, the count is not used up.
            snapshots: series(4, ts("2026-11-22T00:30:00Z"), SignedDuration::from_hours(1)),
            tz: "Asia/Tokyo",
            kept: vec!["s3", "s0"],
        },
        Case {
            name: "... while in UTC they span two days, which use the count up",
            retention: Retention {
                daily: Some(2),
                ..Default::default()
            },
            snapshots: series(4, ts("2026-11-22T00:30:00Z"), SignedDuration::from_hours(1)),
            tz: "UTC",
            kept: vec!["s3", "s2"],
        },
        Case {
            name: "periods without snapshots do not count (restic/borg semantics)",
            retention: Retention {
                daily: Some(3),
                ..Default::default()
            },
            // One a week for five weeks.
            snapshots: series(5, now, SignedDuration::from_hours(24 * 7)),
            tz: "UTC",
            kept: vec!["s4", "s3", "s2"],
        },
        Case {
            name: "weekly uses ISO weeks (Monday starts a week)",
            retention: Retention {
                weekly: Some(2),
                ..Default::default()
            },
            // Sat 21, Sun 22, Mon 23 November 2026 at noon: weeks 47, 47, 48.
            snapshots: series(
                3,
                ts("2026-11-23T12:00:00Z"),
                SignedDuration::from_hours(24),
            ),
            tz: "UTC",
            kept: vec!["s2", "s1"],
        },
        Case {
            name: "monthly and yearly",
            retention: Retention {
                monthly: Some(2),
                yearly: Some(3),
                ..Default::default()
            },
            // Every 100 days back from now: 2026-11-22, 2026-08-14, 2026-05-06,
            // 2026-01-26, 2025-10-18, 2025-07-10, 2025-04-01, 2024-12-22.
            snapshots: series(8, now, SignedDuration::from_hours(2400)),
            tz: "UTC",
            kept: vec!["s7", "s6", "s3", "s0"],
        },
        Case {
            name: "rules add up",
            retention: Retention {
                keep_last: Some(1),
                daily: Some(2),
                ..Default::default()
            },
            snapshots: series(5, now, SignedDuration::from_hours(12)),
            tz: "UTC",
            // 12:00 22nd (s4), 00:00 22nd (s3), 12:00 21st (s2), 00:00 21st (s1), 12:00 20th
            kept: vec!["s4", "s2"],
        },
        Case {
            name: "{yearly: 2} over two snapshots of one day keeps both (restic#4366)",
            retention: Retention {
                yearly: Some(2),
                ..Default::default()
            },
            snapshots: at(&["2026-11-22T01:00:00Z", "2026-11-22T02:00:00Z"]),
            tz: "UTC",
            kept: vec!["s1", "s0"],
        },
        Case {
            name: "counts beyond the periods present: the newest of each, and the oldest",
            retention: Retention {
                daily: Some(7),
                monthly: Some(12),
                ..Default::default()
            },
            // Three a day on three days.
            snapshots: at(&[
                "2026-11-20T01:00:00Z",
                "2026-11-20T09:00:00Z",
                "2026-11-20T17:00:00Z",
                "2026-11-21T01:00:00Z",
                "2026-11-21T09:00:00Z",
                "2026-11-21T17:00:00Z",
                "2026-11-22T01:00:00Z",
                "2026-11-22T09:00:00Z",
                "2026-11-22T17:00:00Z",
            ]),
            tz: "UTC",
            kept: vec!["s8", "s5", "s2", "s0"],
        },
        Case {
            name: "a used-up count does not keep the oldest",
            retention: Retention {
                daily: Some(3),
                ..Default::default()
            },
            snapshots: at(&[
                "2026-11-20T01:00:00Z",
                "2026-11-20T09:00:00Z",
                "2026-11-21T01:00:00Z",
                "2026-11-22T01:00:00Z",
            ]),
            tz: "UTC",
            kept: vec!["s3", "s2", "s1"],
        },
    ];
    for c in cases {
        let inv = inventory(c.snapshots);
        let (destroyed, kept) = run(&c.retention, c.tz, &Protections::new(), &inv);
        let names: Vec<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, c.kept, "{}", c.name);
        assert_eq!(
            destroyed.len() + kept.len(),
            inv.snapshots.len(),
            "{}",
            c.name
        );
    }
}

#[test]
fn keep_within_counts_from_the_newest_snapshot_not_from_now() {
    // Snapshotting stopped a month ago (a full pool, a failing agent): 100 hourly snapshots,
    // the newest taken 30 days before anyone plans. Everything created less than a day
    // before the newest stays, however long the outage lasts: retention has no `now`.
    let newest = ts("2026-10-23T12:00:00Z");
    let snapshots = series(100, newest, SignedDuration::from_hours(1));
    let retention = Retention {
        keep_within: within("1d"),
        ..Default::default()
    };
    let inv = inventory(snapshots);
    let (destroyed, kept) = run(&retention, "UTC", &Protections::new(), &inv);
    let want: Vec<String> = (76..100).rev().map(|i| format!("s{i}")).collect();
    let names: Vec<String> = kept.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        names, want,
        "ages 0..23h are within 1d of the newest; 24h is not"
    );
    assert!(kept.iter().all(|(_, r)| r.contains(KeepReasons::WITHIN)));
    assert_eq!(destroyed.len(), 76);
    // Planning again (any number of later runs while snapshotting still fails) keeps all 24.
    let mut after = inv.clone();
    after
        .snapshots
        .retain(|s| !destroyed.contains(&s.name.to_string()));
    let (again, kept_again) = run(&retention, "UTC", &Protections::new(), &after);
    assert!(again.is_empty());
    assert_eq!(kept_again.len(), 24);
}

#[test]
fn snapshots_are_ordered_by_createtxg_not_creation() {
    // The clock stepped back a year between s2 and s3: by `creation` s3 and s4 would be the
    // oldest. ZFS wrote them last, so they are the newest.
    let mut snapshots = series(5, ts("2026-11-22T12:00:00Z"), SignedDuration::from_hours(1));
    for s in &mut snapshots[3..] {
        s.creation -= SignedDuration::from_hours(24 * 365);
    }
    let retention = Retention {
        keep_last: Some(2),
        ..Default::default()
    };
    let (destroyed, kept) = run(
        &retention,
        "UTC",
        &Protections::new(),
        &inventory(snapshots.clone()),
    );
    assert_eq!(destroyed, ["s0", "s1", "s2"]);
    assert_eq!(
        kept[0],
        (
            "s4".to_owned(),
            reasons(&[KeepReasons::NEWEST, KeepReasons::LAST])
        )
    );
    assert_eq!(kept[1].0, "s3");
    // keepWithin is measured from the newest by createtxg (s4), not from the latest
    // `creation` (s2's, a year later, which would expire s3): s3 is 1h before s4, and
    // s0..s2 carry later stamps than s4, so nothing shows they are older than the window
    // (kept: the safe side).
    let retention = Retention {
        keep_within: within("2h"),
        ..Default::default()
    };
    let (destroyed, kept) = run(
        &retention,
        "UTC",
        &Protections::new(),
        &inventory(snapshots),
    );
    assert!(destroyed.is_empty(), "{destroyed:?}");
    assert!(kept.iter().all(|(_, r)| r.contains(KeepReasons::WITHIN)));
}

#[test]
fn snapshots_of_one_transaction_group_have_one_order_whatever_the_listing_order() {
    // `zfs snapshot ds@a ds@b` writes both in one txg.
    let me = me();
    let mut a = snap(1, ts("2026-11-22T12:00:00Z"), Some(&me));
    let mut b = snap(2, ts("2026-11-22T12:00:00Z"), Some(&me));
    a.createtxg = 50;
    b.createtxg = 50;
    let old = snap(0, ts("2026-11-22T11:00:00Z"), Some(&me));
    let retention = Retention {
        keep_last: Some(1),
        ..Default::default()
    };
    let one = kept(&retention, "UTC", vec![old.clone(), a.clone(), b.clone()]);
    let other = kept(&retention, "UTC", vec![b, old, a]);
    assert_eq!(one, ["s2"], "the higher GUID orders later");
    assert_eq!(one, other);
}

#[test]
fn order_of_the_inventory_does_not_matter() {
    let now = ts("2026-11-22T12:00:00Z");
    let retention = Retention {
        keep_last: Some(2),
        hourly: Some(3),
        daily: Some(2),
        ..Default::default()
    };
    let sorted = series(50, now, SignedDuration::from_mins(37));
    let mut reversed = sorted.clone();
    reversed.reverse();
    let mut shuffled = sorted.clone();
    shuffled.rotate_left(17);
    shuffled.swap(3, 40);
    let want = destroyed(&retention, &Protections::new(), sorted);
    assert!(!want.is_empty());
    for other in [reversed, shuffled] {
        assert_eq!(destroyed(&retention, &Protections::new(), other), want);
    }
}

// ---- calendar corners ----

#[test]
fn dst_fold_hours_are_one_bucket() {
    // Fall back in Berlin (25 October 2026, 03:00 CEST → 02:00 CET): 02:10 CEST and
    // 02:50 CET are both "02" local and share the hourly bucket; 01:30 CEST is the next
    // bucket back, which uses the count up.
    let snapshots = at(&[
        "2026-10-24T23:30:00Z",
        "2026-10-25T00:10:00Z",
        "2026-10-25T01:50:00Z",
    ]);
    let retention = Retention {
        hourly: Some(2),
        ..Default::default()
    };
    assert_eq!(
        kept(&retention, "Europe/Berlin", snapshots.clone()),
        ["s2", "s0"]
    );
    // In UTC they are three hours.
    assert_eq!(kept(&retention, "UTC", snapshots), ["s2", "s1"]);
}

#[test]
fn dst_fold_of_half_an_hour_is_one_bucket() {
    // Lord Howe Island leaves +11 for +10:30 at 02:00 on 5 April 2026: 01:40 (+11) and
    // 01:40 (+10:30) are one civil hour, 00:50 (+11) the one before.
    let snapshots = at(&[
        "2026-04-04T13:50:00Z",
        "2026-04-04T14:40:00Z",
        "2026-04-04T15:10:00Z",
    ]);
    let retention = Retention {
        hourly: Some(2),
        ..Default::default()
    };
    assert_eq!(
        kept(&retention, "Australia/Lord_Howe", snapshots),
        ["s2", "s0"]
    );
}

#[test]
fn dst_gap_hours_are_the_hours_that_exist() {
    // Spring forward in Berlin (29 March 2026, 02:00 CET → 03:00 CEST): 01:10, 01:50 CET and
    // 03:10, 03:50 CEST are two civil hours, so {hourly: 3} is not used up.
    let snapshots = at(&[
        "2026-03-29T00:10:00Z",
        "2026-03-29T00:50:00Z",
        "2026-03-29T01:10:00Z",
        "2026-03-29T01:50:00Z",
    ]);
    let retention = Retention {
        hourly: Some(3),
        ..Default::default()
    };
    assert_eq!(
        kept(&retention, "Europe/Berlin", snapshots),
        ["s3", "s1", "s0"]
    );
}

#[test]
fn half_hour_zones_cut_hours_at_half_past_utc() {
    // Kolkata is +05:30: 10:00, 10:20, 10:40 UTC are 15:30, 15:50 and 16:10 there.
    let snapshots = at(&[
        "2026-11-22T10:00:00Z",
        "2026-11-22T10:20:00Z",
        "2026-11-22T10:40:00Z",
    ]);
    let retention = Retention {
        hourly: Some(2),
        ..Default::default()
    };
    assert_eq!(
        kept(&retention, "Asia/Kolkata", snapshots.clone()),
        ["s2", "s1"]
    );
    // In UTC all three are one hour: the count is not used up, the oldest stays.
    assert_eq!(kept(&retention, "UTC", snapshots), ["s2", "s0"]);
}

#[test]
fn year_ends_in_the_schedules_zone() {
    // 22:30 and 23:30 UTC on 31 December are 23:30 on the 31st and 00:30 on 1 January in
    // Berlin.
    let snapshots = at(&[
        "2026-12-31T22:30:00Z",
        "2026-12-31T23:30:00Z",
        "2027-01-01T00:30:00Z",
    ]);
    let retention = Retention {
        yearly: Some(2),
        ..Default::default()
    };
    assert_eq!(
        kept(&retention, "Europe/Berlin", snapshots.clone()),
        ["s2", "s0"]
    );
    assert_eq!(kept(&retention, "UTC", snapshots), ["s2", "s1"]);
}

#[test]
fn iso_week_53_spans_the_year_end() {
    // 2026 has 53 ISO weeks: Mon 28 December 2026 to Sun 3 January 2027 is 2026-W53.
    let snapshots = at(&[
        "2026-12-27T12:00:00Z", // Sunday, 2026-W52
        "2026-12-28T12:00:00Z", // Monday, 2026-W53
        "2027-01-03T12:00:00Z", // Sunday, still 2026-W53
        "2027-01-04T12:00:00Z", // Monday, 2027-W01
    ]);
    let retention = Retention {
        weekly: Some(3),
        ..Default::default()
    };
    assert_eq!(kept(&retention, "UTC", snapshots), ["s3", "s2", "s0"]);
}

// ---- safety rules: each test fails when its rule is removed ----

/// A retention that keeps only the newest of these, and eight hourly snapshots.
fn keep_one() -> (Retention, Vec<SnapshotInfo>) {
    let retention = Retention {
        keep_last: Some(1),
        ..Default::default()
    };
    (
        retention,
        series(8, ts("2026-11-22T12:00:00Z"), SignedDuration::from_hours(1)),
    )
}

#[test]
fn never_destroys_a_snapshot_without_owner() {
    // A snapshot someone made by hand, or one whose owner value is inherited from the
    // dataset or came in a stream: the inventory reports both without owner.
    let (retention, mut snapshots) = keep_one();
    snapshots[0].owner = None;
    let inv = inventory(snapshots);
    assert!(
        !destroyed(&retention, &Protections::new(), inv.snapshots.clone())
            .contains(&"s0".to_owned())
    );
    let tz = TimeZone::UTC;
    let me = me();
    let rules = RetentionRules {
        retention: &retention,
        time_zone: &tz,
        owner: &me,
        protections: &Protections::new(),
    };
    assert_eq!(plan_dataset(&rules, &inv).not_owned, 1);
}

#[test]
fn never_destroys_another_objects_snapshot() {
    let (retention, mut snapshots) = keep_one();
    snapshots[0].owner = Some(owner("SnapshotSchedule/ns/other"));
    snapshots[1].owner = Some(owner("SnapshotSchedule/other-ns/hourly"));
    // A ReplicationPolicy of the same namespace and name is another object.
    snapshots[2].owner =
        Some(Owner::new(OwnerKind::ReplicationPolicy, "ns", "hourly").expect("owner"));
    let gone = destroyed(&retention, &Protections::new(), snapshots);
    assert_eq!(gone, ["s3", "s4", "s5", "s6"]);
}

#[test]
fn never_destroys_a_held_snapshot() {
    let (retention, mut snapshots) = keep_one();
    snapshots[2].held = true;
    let inv = inventory(snapshots);
    let (gone, kept) = run(&retention, "UTC", &Protections::new(), &inv);
    assert!(!gone.contains(&"s2".to_owned()));
    assert!(kept.contains(&("s2".to_owned(), KeepReasons::HELD)));
}

#[test]
fn never_destroys_a_protected_snapshot() {
    let (retention, snapshots) = keep_one();
    let mut protections = Protections::new();
    protections
        .protect(
            snapshots[3].guid,
            Protection::ReplicationBase {
                policy: "ns/offsite".into(),
            },
        )
        .protect(
            snapshots[4].guid,
            Protection::TransferInUse {
                policy: "ns/offsite".into(),
            },
        );
    let inv = inventory(snapshots);
    let (gone, kept) = run(&retention, "UTC", &protections, &inv);
    assert_eq!(gone, ["s0", "s1", "s2", "s5", "s6"]);
    let reasons: Vec<(&str, String)> = kept
        .iter()
        .map(|(n, r)| (n.as_str(), r.to_string()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("s7", "newest, keepLast".to_owned()),
            ("s4", "transfer in use".to_owned()),
            ("s3", "replication base".to_owned()),
        ]
    );
    assert!(kept.iter().all(|(_, r)| r.is_safety()));
}

#[test]
fn never_destroys_the_newest() {
    // No rule keeps anything: the newest still stays, by the newest rule alone.
    let (_, snapshots) = keep_one();
    let inv = inventory(snapshots);
    let (gone, kept) = run(&Retention::default(), "UTC", &Protections::new(), &inv);
    assert_eq!(kept, [("s7".to_owned(), KeepReasons::NEWEST)]);
    assert_eq!(gone.len(), 7);
}

#[test]
fn destroys_come_oldest_first_with_a_reason() {
    let (retention, snapshots) = keep_one();
    let inv = inventory(snapshots);
    let tz = TimeZone::UTC;
    let me = me();
    let protections = Protections::new();
    let rules = RetentionRules {
        retention: &retention,
        time_zone: &tz,
        owner: &me,
        protections: &protections,
    };
    let plans = plan(&rules, std::slice::from_ref(&inv));
    assert_eq!(plans.len(), 1);
    let d = plans[0].destroy[0];
    assert_eq!(d.snapshot.name.as_str(), "s0");
    assert_eq!(d.reason.as_str(), "RetentionExpired");
    assert_eq!(
        d.full_name(&inv.dataset).expect("name").as_str(),
        "tank/db@s0"
    );
    let message = d.message(&me);
    assert!(
        message.contains("owned by SnapshotSchedule/ns/hourly"),
        "{message}"
    );
    assert!(message.contains("kept by no retention rule"), "{message}");
    assert_eq!(plans[0].dataset, &inv.dataset);
}

#[test]
fn reasons_print_in_a_fixed_order() {
    let all = reasons(&[
        KeepReasons::TRANSFER_IN_USE,
        KeepReasons::NEWEST,
        KeepReasons::LAST,
        KeepReasons::WITHIN,
        KeepReasons::REPLICATION_BASE,
        KeepReasons::YEARLY,
        KeepReasons::MONTHLY,
        KeepReasons::WEEKLY,
        KeepReasons::DAILY,
        KeepReasons::HOURLY,
        KeepReasons::HELD,
    ]);
    assert_eq!(
        all.to_string(),
        "newest, keepLast, keepWithin, hourly, daily, weekly, monthly, yearly, held, replication base, transfer in use"
    );
    assert_eq!(KeepReasons::default().to_string(), "");
    assert!(KeepReasons::default().is_empty());
    for safety in [
        KeepReasons::NEWEST,
        KeepReasons::HELD,
        KeepReasons::REPLICATION_BASE,
        KeepReasons::TRANSFER_IN_USE,
    ] {
        assert!(safety.is_safety());
    }
    for rule in [
        KeepReasons::LAST,
        KeepReasons::WITHIN,
        KeepReasons::HOURLY,
        KeepReasons::DAILY,
        KeepReasons::WEEKLY,
        KeepReasons::MONTHLY,
        KeepReasons::YEARLY,
    ] {
        assert!(!rule.is_safety());
        assert!(!rule.is_empty());
    }
}

#[test]
fn protections_report_what_they_hold() {
    let mut p = Protections::new();
    assert!(p.is_empty());
    p.protect(
        7,
        Protection::ReplicationBase {
            policy: "ns/a".into(),
        },
    );
    assert!(!p.is_empty());
    assert_eq!(p.guids().collect::<Vec<_>>(), [7]);
    assert_eq!(p.get(8), None);
}

// ---- property tests ----

fn arb_retention() -> impl Strategy<Value = Retention> {
    // Counts up to 8 often exceed the periods a short history has.
    let n = || proptest::option::of(1i32..9);
    (
        n(),
        proptest::option::of(1u64..200),
        n(),
        n(),
        n(),
        n(),
        n(),
    )
        .prop_map(
            |(keep_last, within_h, hourly, daily, weekly, monthly, yearly)| Retention {
                keep_last,
                keep_within: within_h.map(|h| format!("{h}h").parse().expect("duration")),
                hourly,
                daily,
                weekly,
                monthly,
                yearly,
            },
        )
}

fn arb_zone() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("UTC"),
        Just("Europe/Berlin"),
        Just("America/New_York"),
        Just("Australia/Lord_Howe"),
        Just("Asia/Kolkata"),
        Just("Asia/Kathmandu"),
        Just("America/St_Johns"),
        Just("Pacific/Chatham"),
    ]
}

/// Where histories start: year ends (2020 and 2026 have an ISO week 53), DST changes in
/// Europe, North America and Lord Howe.
fn arb_start() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        Just(ts("2026-12-20T00:00:00Z")),
        Just(ts("2020-12-24T00:00:00Z")),
        Just(ts("2026-03-28T20:00:00Z")),
        Just(ts("2026-10-24T20:00:00Z")),
        Just(ts("2026-11-01T00:00:00Z")),
        Just(ts("2026-04-04T10:00:00Z")),
        Just(ts("2024-01-01T00:00:00Z")),
    ]
}

/// Gaps from a minute to weeks, mostly short, so periods have several snapshots.
fn arb_gap_mins() -> impl Strategy<Value = i64> {
    prop_oneof![4 => 1i64..90, 3 => 60i64..3_000, 1 => 3_000i64..60_000]
}

const OTHER_OWNERS: [&str; 2] = ["SnapshotSchedule/ns/other", "ReplicationPolicy/ns/hourly"];

/// A history in time order (createtxg rises with creation), listed in a random order,
/// with snapshots of other owners and none, some held, some protected.
fn arb_history() -> impl Strategy<Value = (DatasetInventory, Protections)> {
    (
        arb_start(),
        proptest::collection::vec((arb_gap_mins(), 0u8..10, 0u8..20, 0u8..20), 0..70),
        any::<u64>(),
    )
        .prop_map(|(start, steps, seed)| {
            let me = me();
            let others: Vec<Owner> = OTHER_OWNERS.iter().map(|o| owner(o)).collect();
            let mut t = start;
            let mut snapshots = Vec::new();
            let mut protections = Protections::new();
            for (i, (gap, who, hold_roll, protect_roll)) in steps.into_iter().enumerate() {
                t += SignedDuration::from_mins(gap);
                let who = match who {
                    0 => None,
                    1 => Some(&others[0]),
                    2 => Some(&others[1]),
                    _ => Some(&me),
                };
                let mut s = snap(i as u64, t, who);
                s.held = hold_roll == 0;
                match protect_roll {
                    0 => {
                        protections
                            .protect(s.guid, Protection::ReplicationBase { policy: "p".into() });
                    }
                    1 => {
                        protections
                            .protect(s.guid, Protection::TransferInUse { policy: "p".into() });
                    }
                    _ => {}
                }
                snapshots.push(s);
            }
            shuffle(&mut snapshots, seed);
            (inventory(snapshots), protections)
        })
}

fn shuffle<T>(v: &mut [T], mut x: u64) {
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// Like [`arb_history`], but the clock sometimes steps back (`creation` falls while
/// `createtxg` rises).
fn arb_history_with_clock_steps() -> impl Strategy<Value = (DatasetInventory, Protections)> {
    (
        arb_history(),
        proptest::collection::vec((0usize..70, 1i64..100_000), 0..4),
    )
        .prop_map(|((mut inv, protections), steps)| {
            for (at, back_mins) in steps {
                for s in &mut inv.snapshots {
                    if s.createtxg >= 10 + at as u64 {
                        s.creation -= SignedDuration::from_mins(back_mins);
                    }
                }
            }
            (inv, protections)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// The plan keeps exactly what the rules, read word by word, keep.
    #[test]
    fn retention_matches_the_oracle(
        (inv, protections) in arb_history(),
        retention in arb_retention(),
        zone in arb_zone(),
    ) {
        let tz = TimeZone::get(zone).expect("zone");
        let me = me();
        let rules = RetentionRules { retention: &retention, time_zone: &tz, owner: &me, protections: &protections };
        let plan = plan_dataset(&rules, &inv);
        let mut got: Vec<u64> = plan.keep.iter().map(|k| k.snapshot.guid).collect();
        got.sort_unstable();
        let want = oracle::kept(&retention, &tz, &me, &protections, &inv.snapshots);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn retention_invariants(
        (inv, protections) in arb_history_with_clock_steps(),
        retention in arb_retention(),
        zone in arb_zone(),
    ) {
        let tz = TimeZone::get(zone).expect("zone");
        let me = me();
        let rules = RetentionRules { retention: &retention, time_zone: &tz, owner: &me, protections: &protections };
        let plan = plan_dataset(&rules, &inv);

        let owned: Vec<&SnapshotInfo> = inv.snapshots.iter().filter(|s| s.owner.as_ref() == Some(&me)).collect();
        // Every owned snapshot is either destroyed or kept; nothing else is touched.
        prop_assert_eq!(plan.destroy.len() + plan.keep.len(), owned.len());
        prop_assert_eq!(plan.not_owned, inv.snapshots.len() - owned.len());
        for d in &plan.destroy {
            prop_assert_eq!(d.snapshot.owner.as_ref(), Some(&me));
            prop_assert!(!d.snapshot.held, "destroyed a held snapshot");
            prop_assert!(protections.get(d.snapshot.guid).is_none(), "destroyed a protected snapshot");
        }
        // Destroys oldest first, keeps newest first, by createtxg.
        prop_assert!(plan.destroy.is_sorted_by_key(|d| d.snapshot.createtxg));
        prop_assert!(plan.keep.is_sorted_by(|a, b| a.snapshot.createtxg >= b.snapshot.createtxg));
        // A dataset that had owned snapshots keeps its newest (by createtxg).
        if let Some(newest) = owned.iter().max_by_key(|s| s.createtxg) {
            prop_assert_eq!(plan.keep.first().map(|k| k.snapshot.guid), Some(newest.guid));
        }
        // Idempotent: apply the destroys and plan again: nothing more goes.
        let gone: std::collections::HashSet<u64> = plan.destroy.iter().map(|d| d.snapshot.guid).collect();
        let mut after = inv.clone();
        after.snapshots.retain(|s| !gone.contains(&s.guid));
        let again = plan_dataset(&rules, &after);
        prop_assert!(again.destroy.is_empty(), "second plan destroys {:?}", again.destroy.iter().map(|d| d.snapshot.name.to_string()).collect::<Vec<_>>());
        prop_assert_eq!(again.keep.len(), plan.keep.len());
    }
}

#[test]
fn a_snapshot_at_the_instant_of_a_transition_takes_the_new_offset() {
    // Berlin falls back at 01:00 UTC on 25 October 2026 (03:00 CEST → 02:00 CET). After a
    // clock step the walk meets 00:59 UTC (02:59 CEST) first, then 01:00 UTC (02:00 CET,
    // the same civil hour), then 20:00 UTC the day before.
    let mut snapshots = at(&[
        "2026-10-24T20:00:00Z",
        "2026-10-25T01:00:00Z",
        "2026-10-25T00:59:00Z",
    ]);
    snapshots[2].createtxg = 99;
    let retention = Retention {
        hourly: Some(2),
        ..Default::default()
    };
    assert_eq!(kept(&retention, "Europe/Berlin", snapshots), ["s2", "s0"]);
}
