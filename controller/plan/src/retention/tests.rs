use std::sync::Arc;

use proptest::prelude::*;
use tidepool_api::{HumanDuration, SnapshotShortName};

use super::*;

const OWNER: &str = "ns/hourly";

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn snap(i: u64, creation: Timestamp, owner: Option<&str>) -> SnapshotInfo {
    SnapshotInfo {
        name: format!("s{i}").parse::<SnapshotShortName>().expect("name"),
        guid: 1000 + i,
        createtxg: 10 + i,
        creation,
        owner: owner.map(Arc::from),
        held: false,
    }
}

/// `n` owned snapshots, one every `step`, the newest at `newest`, oldest first.
fn series(n: u64, newest: Timestamp, step: SignedDuration) -> Vec<SnapshotInfo> {
    (0..n)
        .map(|i| {
            let age = step * i32::try_from(n - 1 - i).expect("small");
            snap(i, newest - age, Some(OWNER))
        })
        .collect()
}

fn inventory(snapshots: Vec<SnapshotInfo>) -> DatasetInventory {
    DatasetInventory::with_snapshots("tank/db".parse().expect("dataset"), snapshots)
}

use jiff::SignedDuration;

fn run(
    retention: &Retention,
    tz: &str,
    protections: &Protections,
    inv: &DatasetInventory,
    now: Timestamp,
) -> (Vec<String>, Vec<(String, KeepReasons)>) {
    let tz = TimeZone::get(tz).expect("zone");
    let rules = RetentionRules {
        retention,
        time_zone: &tz,
        owner: OWNER,
        protections,
    };
    let plan = plan_dataset(&rules, inv, now);
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

fn kept_names(kept: &[(String, KeepReasons)]) -> Vec<&str> {
    kept.iter().map(|(n, _)| n.as_str()).collect()
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
            name: "keepWithin keeps the younger ones (strictly)",
            retention: Retention {
                keep_within: Some("3h".parse::<HumanDuration>().expect("d")),
                ..Default::default()
            },
            snapshots: hourly_10.clone(),
            tz: "UTC",
            kept: vec!["s9", "s8", "s7"],
        },
        Case {
            name: "the newest is kept even when every rule has expired it",
            retention: Retention {
                keep_within: Some("1m".parse::<HumanDuration>().expect("d")),
                ..Default::default()
            },
            snapshots: series(
                5,
                now - SignedDuration::from_hours(48),
                SignedDuration::from_hours(1),
            ),
            tz: "UTC",
            kept: vec!["s4"],
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
            name: "daily buckets are days of the schedule's zone",
            retention: Retention {
                daily: Some(2),
                ..Default::default()
            },
            // 21:30, 22:30, 23:30 UTC on the 21st and 00:30 on the 22nd: in Tokyo (+9)
            // all four are on the 22nd, so only the newest is kept by `daily`...
            snapshots: series(4, ts("2026-11-22T00:30:00Z"), SignedDuration::from_hours(1)),
            tz: "Asia/Tokyo",
            kept: vec!["s3"],
        },
        Case {
            name: "... while in UTC they span two days",
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
    ];
    for c in cases {
        let inv = inventory(c.snapshots);
        let (destroyed, kept) = run(&c.retention, c.tz, &Protections::new(), &inv, now);
        assert_eq!(kept_names(&kept), c.kept, "{}", c.name);
        assert_eq!(
            destroyed.len() + kept.len(),
            inv.snapshots.len(),
            "{}",
            c.name
        );
    }
}

#[test]
fn never_destroys_what_is_not_owned_held_or_protected() {
    let now = ts("2026-11-22T12:00:00Z");
    let mut snapshots = series(8, now, SignedDuration::from_hours(1));
    snapshots[0].owner = None; // a snapshot someone made by hand
    snapshots[1].owner = Some(Arc::from("ns/other")); // another object's
    snapshots[2].held = true;
    let mut protections = Protections::new();
    protections.protect(
        snapshots[3].guid,
        Protection::ReplicationBase {
            policy: "ns/offsite".into(),
        },
    );
    protections.protect(
        snapshots[4].guid,
        Protection::TransferInUse {
            policy: "ns/offsite".into(),
        },
    );
    let retention = Retention {
        keep_last: Some(1),
        ..Default::default()
    };
    let inv = inventory(snapshots);
    let (destroyed, kept) = run(&retention, "UTC", &protections, &inv, now);
    assert_eq!(destroyed, vec!["s5", "s6"], "oldest first");
    let reasons: Vec<(&str, String)> = kept
        .iter()
        .map(|(n, r)| (n.as_str(), r.to_string()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("s7", "newest, keepLast".to_owned()),
            ("s4", "transfer in use".to_owned()),
            ("s3", "replication base".to_owned()),
            ("s2", "held".to_owned()),
        ]
    );
    let tz = TimeZone::UTC;
    let rules = RetentionRules {
        retention: &retention,
        time_zone: &tz,
        owner: OWNER,
        protections: &protections,
    };
    let plan = plan_dataset(&rules, &inv, now);
    assert_eq!(plan.not_owned, 2);
    let d = plan.destroy[0];
    assert_eq!(d.reason.as_str(), "RetentionExpired");
    assert_eq!(
        d.full_name(&inv.dataset).expect("name").as_str(),
        "tank/db@s5"
    );
    assert!(d.message(OWNER).contains("kept by no retention rule"));
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
    let (want, _) = run(
        &retention,
        "UTC",
        &Protections::new(),
        &inventory(sorted),
        now,
    );
    for other in [reversed, shuffled] {
        let (got, _) = run(
            &retention,
            "UTC",
            &Protections::new(),
            &inventory(other),
            now,
        );
        assert_eq!(got, want);
    }
}

#[test]
fn dst_fold_hours_are_one_bucket() {
    // Fall back in Berlin (25 October 2026, 03:00 CEST → 02:00 CET): 02:10 CEST and
    // 02:50 CET are both "02" local and share the hourly bucket.
    let a = snap(0, ts("2026-10-25T00:10:00Z"), Some(OWNER));
    let b = snap(1, ts("2026-10-25T01:50:00Z"), Some(OWNER));
    let retention = Retention {
        hourly: Some(2),
        ..Default::default()
    };
    let inv = inventory(vec![a, b]);
    let (destroyed, _) = run(
        &retention,
        "Europe/Berlin",
        &Protections::new(),
        &inv,
        ts("2026-10-26T00:00:00Z"),
    );
    assert_eq!(destroyed, vec!["s0"]);
}

// ---- property tests ----

fn arb_retention() -> impl Strategy<Value = Retention> {
    let n = || proptest::option::of(1i32..6);
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

/// A random history: gaps of minutes to weeks, mostly increasing creation times (sometimes
/// a clock step backwards), owners among the object, another one and nobody, some held,
/// some protected.
fn arb_inventory() -> impl Strategy<Value = (DatasetInventory, Protections)> {
    proptest::collection::vec(
        (1i64..20_000, 0u8..10, any::<bool>(), 0u8..20, 0u8..20),
        0..80,
    )
    .prop_map(|steps| {
        let mut t = ts("2024-01-01T00:00:00Z");
        let mut snapshots = Vec::new();
        let mut protections = Protections::new();
        for (i, (gap_min, owner, held, hold_roll, protect_roll)) in steps.into_iter().enumerate() {
            let i = i as u64;
            // One in ten steps goes back in time.
            let gap = if owner == 9 { -gap_min / 10 } else { gap_min };
            t += SignedDuration::from_mins(gap);
            let owner = match owner {
                0 => None,
                1 => Some("ns/other"),
                _ => Some(OWNER),
            };
            let mut s = snap(i, t, owner);
            s.held = held && hold_roll == 0;
            if protect_roll == 0 {
                protections.protect(s.guid, Protection::ReplicationBase { policy: "p".into() });
            } else if protect_roll == 1 {
                protections.protect(s.guid, Protection::TransferInUse { policy: "p".into() });
            }
            snapshots.push(s);
        }
        (inventory(snapshots), protections)
    })
}

fn arb_zone() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("UTC"),
        Just("Europe/Berlin"),
        Just("America/New_York"),
        Just("Australia/Lord_Howe"),
        Just("Asia/Kolkata"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn retention_invariants(
        (inv, protections) in arb_inventory(),
        retention in arb_retention(),
        zone in arb_zone(),
        now_offset_h in 0i64..2000,
    ) {
        let tz = TimeZone::get(zone).expect("zone");
        let last = inv.snapshots.iter().map(|s| s.creation).max().unwrap_or(ts("2024-01-01T00:00:00Z"));
        let now = last + SignedDuration::from_hours(now_offset_h);
        let rules = RetentionRules { retention: &retention, time_zone: &tz, owner: OWNER, protections: &protections };
        let plan = plan_dataset(&rules, &inv, now);

        let owned: Vec<&SnapshotInfo> = inv.snapshots.iter().filter(|s| s.owner.as_deref() == Some(OWNER)).collect();
        // Every owned snapshot is either destroyed or kept; nothing else is touched.
        prop_assert_eq!(plan.destroy.len() + plan.keep.len(), owned.len());
        for d in &plan.destroy {
            prop_assert_eq!(d.snapshot.owner.as_deref(), Some(OWNER));
            prop_assert!(!d.snapshot.held, "destroyed a held snapshot");
            prop_assert!(protections.get(d.snapshot.guid).is_none(), "destroyed a protected snapshot");
        }
        // A dataset that had owned snapshots keeps at least one, and its newest.
        if let Some(newest) = owned.iter().max_by_key(|s| (s.creation, s.createtxg)) {
            prop_assert!(!plan.keep.is_empty());
            prop_assert!(plan.destroy.iter().all(|d| d.snapshot.guid != newest.guid));
        }
        // Idempotent: apply the destroys and plan again: nothing more goes.
        let gone: std::collections::HashSet<u64> = plan.destroy.iter().map(|d| d.snapshot.guid).collect();
        let mut after = inv.clone();
        after.snapshots.retain(|s| !gone.contains(&s.guid));
        let again = plan_dataset(&rules, &after, now);
        prop_assert!(again.destroy.is_empty(), "second plan destroys {:?}", again.destroy.iter().map(|d| d.snapshot.name.to_string()).collect::<Vec<_>>());
        prop_assert_eq!(again.keep.len(), plan.keep.len());
    }
}
