//! The builder against listing lines in the shape OpenZFS 2.3 prints them.

use super::*;
use crate::parse::{parse_get_line, parse_hold_line};

/// `name type guid createtxg creation used written receive_resume_token userrefs encryption`
const LISTING: &[&str] = &[
    "tank\tfilesystem\t1\t1\t1763800000\t100\t0\t-\t-\toff",
    "tank/db\tfilesystem\t2\t5\t1763800000\t100\t4096\t1-abc-def\t-\taes-256-gcm",
    // Listed out of createtxg order on purpose.
    "tank/db@tidepool_20261122T093000Z_hourly\tsnapshot\t30\t30\t1763800300\t0\t0\t-\t1\taes-256-gcm",
    "tank/db@before-upgrade\tsnapshot\t20\t20\t1763800200\t0\t0\t-\t0\taes-256-gcm",
    "tank/db@tidepool_20261122T083000Z_hourly\tsnapshot\t10\t10\t1763800100\t0\t0\t-\t0\taes-256-gcm",
    "tank/db@with space\tsnapshot\t25\t25\t1763800250\t0\t0\t-\t0\taes-256-gcm",
    "tank/db#tidepool_b\tbookmark\t10\t10\t1763800100\t-\t-\t-\t-\t-",
    "tank/my data\tfilesystem\t3\t6\t1763800000\t100\t0\t-\t-\toff",
    "tank/my data@x\tsnapshot\t40\t40\t1763800000\t0\t0\t-\t0\toff",
];

const OWNER_A: &str = "SnapshotSchedule/default/db-hourly";

fn build(get: &[&str]) -> (Vec<DatasetInventory>, u64) {
    let parser = listing_request(&"tank".parse().unwrap(), Depth::Recursive).parser();
    let mut b = InventoryBuilder::new();
    for line in LISTING {
        b.add_entry(&parser.parse_line(line).unwrap()).unwrap();
    }
    for line in get {
        b.add_local_owner(&parse_get_line(line).unwrap());
    }
    b.finish()
}

fn owner_of<'a>(d: &'a DatasetInventory, short: &str) -> Option<&'a str> {
    d.snapshots
        .iter()
        .find(|s| s.name.as_str() == short)
        .unwrap_or_else(|| panic!("{short} listed"))
        .owner
        .as_ref()
        .map(Owner::as_str)
}

#[test]
fn constant_property_names_parse() {
    for c in EXTRA_COLUMNS.iter().chain([&OWNER_PROPERTY]) {
        assert!(c.parse::<PropertyName>().is_ok(), "{c}");
    }
}

#[test]
fn listing_becomes_inventories() {
    let (datasets, unnamed) = build(&[]);
    assert_eq!(unnamed, 1, "`tank/my data` cannot be named");
    let names: Vec<&str> = datasets.iter().map(|d| d.dataset.as_str()).collect();
    assert_eq!(names, ["tank", "tank/db"]);
    let db = &datasets[1];
    assert!(db.exists && db.encrypted && !datasets[0].encrypted);
    assert_eq!(db.written_since_newest, 4096);
    assert_eq!(
        db.receive_resume_token.as_ref().map(|t| t.token.as_str()),
        Some("1-abc-def")
    );
    let order: Vec<(&str, u64, bool)> = db
        .snapshots
        .iter()
        .map(|s| (s.name.as_str(), s.createtxg, s.held))
        .collect();
    assert_eq!(
        order,
        [
            ("tidepool_20261122T083000Z_hourly", 10, false),
            ("before-upgrade", 20, false),
            ("tidepool_20261122T093000Z_hourly", 30, true),
        ],
        "by createtxg, held from userrefs"
    );
    assert_eq!(db.snapshots[2].creation.as_second(), 1763800300);
    assert_eq!(
        db.unnamed_snapshots,
        [UnnamedSnapshot {
            printed_name: "with space".into(),
            guid: 25,
            createtxg: 25
        }]
    );
    assert_eq!(db.bookmarks.len(), 1);
    assert_eq!(
        (db.bookmarks[0].name.as_str(), db.bookmarks[0].guid),
        ("tidepool_b", 10)
    );
    assert!(db.snapshots.iter().all(|s| s.owner.is_none()));
}

/// The safety rule: only a value set locally on the snapshot is a claim.
#[test]
fn only_a_locally_set_owner_is_a_claim() {
    let (datasets, _) = build(&[
        &format!("tank/db@tidepool_20261122T093000Z_hourly\ttidepool.dev:owner\t{OWNER_A}\tlocal"),
        // Inherited from an owner an admin set on the dataset.
        &format!("tank/db@before-upgrade\ttidepool.dev:owner\t{OWNER_A}\tinherited from tank/db"),
        // Received in a stream (`send -p`).
        &format!(
            "tank/db@tidepool_20261122T083000Z_hourly\ttidepool.dev:owner\t{OWNER_A}\treceived"
        ),
        // Local, but on the dataset itself, and on a snapshot that is not listed.
        &format!("tank/db\ttidepool.dev:owner\t{OWNER_A}\tlocal"),
        &format!("tank/db@gone\ttidepool.dev:owner\t{OWNER_A}\tlocal"),
    ]);
    let db = &datasets[1];
    assert_eq!(
        owner_of(db, "tidepool_20261122T093000Z_hourly"),
        Some(OWNER_A)
    );
    assert_eq!(
        owner_of(db, "before-upgrade"),
        None,
        "inherited is no claim"
    );
    assert_eq!(
        owner_of(db, "tidepool_20261122T083000Z_hourly"),
        None,
        "received is no claim"
    );
}

#[test]
fn a_local_owner_of_another_property_or_empty_is_no_claim() {
    let (datasets, _) = build(&[
        "tank/db@before-upgrade\ttidepool.dev:other\tx\tlocal",
        "tank/db@tidepool_20261122T083000Z_hourly\ttidepool.dev:owner\t\tlocal",
    ]);
    assert!(datasets[1].snapshots.iter().all(|s| s.owner.is_none()));
}

#[test]
fn owners_share_one_allocation() {
    let (datasets, _) = build(&[
        &format!("tank/db@tidepool_20261122T093000Z_hourly\ttidepool.dev:owner\t{OWNER_A}\tlocal"),
        &format!("tank/db@tidepool_20261122T083000Z_hourly\ttidepool.dev:owner\t{OWNER_A}\tlocal"),
    ]);
    let s = &datasets[1].snapshots;
    let (a, b) = (s[0].owner.as_ref().unwrap(), s[2].owner.as_ref().unwrap());
    assert_eq!(a, b);
    assert!(std::ptr::eq(a.as_str(), b.as_str()), "one allocation");
}

#[test]
fn a_local_value_not_in_the_owner_format_is_no_claim() {
    let (datasets, _) = build(&[
        "tank/db@tidepool_20261122T093000Z_hourly\ttidepool.dev:owner\tdefault/db-hourly\tlocal",
        "tank/db@tidepool_20261122T083000Z_hourly\ttidepool.dev:owner\tCronJob/default/x\tlocal",
    ]);
    assert!(datasets[1].snapshots.iter().all(|s| s.owner.is_none()));
}

#[test]
fn hold_tags_attach_by_name_to_the_listed_guid() {
    let parser = listing_request(&"tank".parse().unwrap(), Depth::Recursive).parser();
    let mut b = InventoryBuilder::new();
    for line in LISTING {
        b.add_entry(&parser.parse_line(line).unwrap()).unwrap();
    }
    let held: Vec<String> = b.held_snapshots().iter().map(|s| s.to_string()).collect();
    assert_eq!(held, ["tank/db@tidepool_20261122T093000Z_hourly"]);
    b.add_hold(
        &parse_hold_line("tank/db@tidepool_20261122T093000Z_hourly\ttidepool:backup\t1763800400")
            .unwrap(),
    );
    b.add_hold(&parse_hold_line("tank/db@unknown\tx\t1763800400").unwrap());
    let (datasets, _) = b.finish();
    assert!(datasets[1].has_hold(30, "tidepool:backup"));
    assert_eq!(datasets[1].holds.len(), 1);
}

#[test]
fn bad_numbers_are_typed_errors_not_panics() {
    let parser = listing_request(&"tank".parse().unwrap(), Depth::Recursive).parser();
    let mut b = InventoryBuilder::new();
    let e = parser
        .parse_line("tank/a@s\tsnapshot\t1\t1\t1\t0\t0\t-\t+1\toff")
        .unwrap();
    assert!(matches!(
        b.add_entry(&e),
        Err(InventoryError::Entry {
            reason: EntryError::NotANumber {
                column: "userrefs",
                ..
            },
            ..
        })
    ));
    let e = parser
        .parse_line("tank/a@s\tsnapshot\t1\t1\t1\t0\t0\t-\t-\toff")
        .unwrap();
    assert!(matches!(
        b.add_entry(&e),
        Err(InventoryError::Entry {
            reason: EntryError::MissingColumn { column: "userrefs" },
            ..
        })
    ));
    let e = parser
        .parse_line(&format!(
            "tank/a@s\tsnapshot\t1\t1\t{}\t0\t0\t-\t0\toff",
            i64::MAX
        ))
        .unwrap();
    assert!(matches!(
        b.add_entry(&e),
        Err(InventoryError::Entry {
            reason: EntryError::Creation { .. },
            ..
        })
    ));
}

#[test]
fn a_snapshot_listed_before_its_dataset_still_lands_in_it() {
    let parser = listing_request(&"tank".parse().unwrap(), Depth::Recursive).parser();
    let mut b = InventoryBuilder::new();
    for line in [LISTING[2], LISTING[1]] {
        b.add_entry(&parser.parse_line(line).unwrap()).unwrap();
    }
    let (datasets, _) = b.finish();
    assert_eq!(datasets.len(), 1);
    assert!(datasets[0].encrypted && datasets[0].snapshots.len() == 1);
}

#[test]
fn a_destroy_rests_on_every_kept_snapshot_still_being_the_owners() {
    let owner: Owner = OWNER_A.parse().unwrap();
    let (datasets, _) = build(&[
        "tank/db@tidepool_20261122T093000Z_hourly\ttidepool.dev:owner\tSnapshotSchedule/default/db-hourly\tlocal",
        "tank/db@tidepool_20261122T083000Z_hourly\ttidepool.dev:owner\tSnapshotSchedule/default/db-hourly\tlocal",
    ]);
    let db = &datasets[1];
    let dataset: DatasetName = "tank/db".parse().unwrap();
    let kept = |name: &str, guid| SnapshotRef {
        snapshot: format!("tank/db@{name}").parse().unwrap(),
        guid,
    };
    let newest = kept("tidepool_20261122T093000Z_hourly", 30);
    assert_eq!(
        kept_gone(Some(db), &dataset, std::slice::from_ref(&newest), &owner),
        None
    );
    assert_eq!(kept_gone(Some(db), &dataset, &[], &owner), None);
    // Gone, another GUID under the name, not the owner's: the plan no longer holds.
    for stale in [
        kept("tidepool_20261122T103000Z_hourly", 31),
        kept("tidepool_20261122T093000Z_hourly", 99),
        kept("before-upgrade", 20),
    ] {
        assert_eq!(
            kept_gone(Some(db), &dataset, &[newest.clone(), stale.clone()], &owner),
            Some(stale)
        );
    }
    assert_eq!(
        kept_gone(None, &dataset, std::slice::from_ref(&newest), &owner),
        Some(newest.clone())
    );
    // Another owner's view of the same snapshot is not this owner's.
    let other: Owner = "SnapshotSchedule/default/other".parse().unwrap();
    assert_eq!(
        kept_gone(Some(db), &dataset, std::slice::from_ref(&newest), &other),
        Some(newest.clone())
    );
    // Kept snapshots of other datasets are judged there, not here.
    let elsewhere = SnapshotRef {
        snapshot: "tank/other@x".parse().unwrap(),
        guid: 7,
    };
    assert_eq!(kept_gone(Some(db), &dataset, &[elsewhere], &owner), None);
}
