//! Round trips through JSON, lenient decoding, and the request checks.

use jiff::Timestamp;
use serde_json::json;

use crate::*;

fn owner(text: &str) -> Owner {
    text.parse().unwrap()
}

fn snapshot_ref(name: &str, guid: u64) -> SnapshotRef {
    SnapshotRef {
        snapshot: name.parse().unwrap(),
        guid,
    }
}

fn pool_inventory() -> PoolInventory {
    let mut ds = DatasetInventory::with_snapshots(
        "tank/db".parse().unwrap(),
        vec![SnapshotInfo {
            name: "tidepool_20261122T093000Z_hourly".parse().unwrap(),
            guid: 7,
            createtxg: 40,
            creation: Timestamp::from_second(1_763_800_000).unwrap(),
            owner: Some(owner("SnapshotSchedule/default/db-hourly")),
            held: true,
        }],
    );
    ds.holds.push(HoldInfo {
        guid: 7,
        tag: "tidepool:x".into(),
    });
    ds.unnamed_snapshots.push(UnnamedSnapshot {
        printed_name: "before upgrade".into(),
        guid: 8,
        createtxg: 41,
    });
    ds.receive_resume_token = Some(PartialReceive::opaque("1-abc-def".parse().unwrap()));
    PoolInventory {
        pool: "tank".parse().unwrap(),
        health: PoolHealth::Degraded,
        size_bytes: 1 << 30,
        allocated_bytes: 1 << 20,
        free_bytes: (1 << 30) - (1 << 20),
        capabilities: PoolCapabilities {
            bookmarks: true,
            encryption: true,
            ..PoolCapabilities::default()
        },
        datasets: vec![ds],
        unnamed_datasets: 1,
    }
}

fn round_trip<T>(v: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    serde_json::from_str(&serde_json::to_string(v).unwrap()).unwrap()
}

#[test]
fn every_request_and_response_round_trips() {
    let requests = [
        Request::TakeSnapshots(TakeSnapshots {
            datasets: vec!["tank/a".parse().unwrap(), "tank/b".parse().unwrap()],
            short_name: "tidepool_20261122T093000Z_hourly".parse().unwrap(),
            owner: owner("SnapshotSchedule/default/db-hourly"),
            slot: Some(Timestamp::from_millisecond(1_763_800_000_250).unwrap()),
        }),
        Request::DestroySnapshots(DestroySnapshots {
            snapshots: vec![snapshot_ref("tank/a@x", 1)],
            owner: owner("ReplicationPolicy/default/db-hourly"),
            keeping: vec![snapshot_ref("tank/a@y", 2)],
        }),
        Request::Inventory(InventoryRequest {
            pool: "tank".parse().unwrap(),
            since: Some(InventoryGeneration(3)),
        }),
    ];
    for r in &requests {
        assert_eq!(&round_trip(r), r);
    }
    let responses = [
        Response::SnapshotsTaken(SnapshotsTaken {
            snapshots: vec![snapshot_ref("tank/a@x", 9)],
            created: None,
        }),
        Response::SnapshotsTaken(SnapshotsTaken {
            snapshots: vec![snapshot_ref("tank/a@x", 9), snapshot_ref("tank/b@x", 10)],
            created: Some(SetCreated {
                createtxg: 77,
                creation: "2026-12-03T10:00:00Z".parse().unwrap(),
            }),
        }),
        Response::SnapshotsDestroyed(SnapshotsDestroyed {
            destroyed: vec![snapshot_ref("tank/a@x", 1)],
            refused: vec![
                RefusedDestroy {
                    snapshot: snapshot_ref("tank/a@y", 2),
                    reason: RefusalReason::GuidChanged { found: 3 },
                },
                RefusedDestroy {
                    snapshot: snapshot_ref("tank/a@z", 4),
                    reason: RefusalReason::NotOwned {
                        found: Some(owner("SnapshotSchedule/default/other")),
                    },
                },
                RefusedDestroy {
                    snapshot: snapshot_ref("tank/a@w", 5),
                    reason: RefusalReason::NotOwned { found: None },
                },
                RefusedDestroy {
                    snapshot: snapshot_ref("tank/a@v", 6),
                    reason: RefusalReason::Held,
                },
            ],
        }),
        Response::Inventory(InventoryAnswer::Full {
            generation: InventoryGeneration(4),
            inventory: pool_inventory(),
        }),
        Response::Inventory(InventoryAnswer::Unchanged {
            generation: InventoryGeneration(4),
        }),
        Response::Failed(OperationError::InvalidRequest(RequestError::SpansPools {
            first: "a".parse().unwrap(),
            other: "b".parse().unwrap(),
        })),
        Response::Failed(OperationError::Zfs {
            kind: "Busy".into(),
            message: "dataset is busy".into(),
        }),
    ];
    for r in &responses {
        assert_eq!(&round_trip(r), r);
    }
}

#[test]
fn the_wire_shape_is_tagged_camel_case() {
    let v = serde_json::to_value(Request::Inventory(InventoryRequest {
        pool: "tank".parse().unwrap(),
        since: None,
    }))
    .unwrap();
    assert_eq!(v, json!({"op": "inventory", "pool": "tank"}));
    let v = serde_json::to_value(pool_inventory()).unwrap();
    assert_eq!(v["health"], "DEGRADED");
    assert_eq!(v["capabilities"]["bookmarks"], true);
    assert_eq!(
        v["datasets"][0]["unnamedSnapshots"][0]["printedName"],
        "before upgrade"
    );
}

#[test]
fn unknown_fields_and_states_from_a_newer_peer_decode() {
    let r: Request = serde_json::from_value(json!({
        "op": "destroySnapshots",
        "snapshots": [{"snapshot": "tank/a@x", "guid": 1, "size": 5}],
        "owner": "SnapshotSchedule/default/a",
        "fencingToken": 12,
    }))
    .unwrap();
    assert_eq!(
        r,
        Request::DestroySnapshots(DestroySnapshots {
            snapshots: vec![snapshot_ref("tank/a@x", 1)],
            owner: owner("SnapshotSchedule/default/a"),
            keeping: Vec::new(),
        })
    );
    let mut v = serde_json::to_value(pool_inventory()).unwrap();
    v["health"] = json!("RESILVERING_SOMEDAY");
    v["capabilities"]["blockCloning"] = json!(true);
    v["datasets"][0]["quota"] = json!(5);
    let inv: PoolInventory = serde_json::from_value(v).unwrap();
    assert_eq!(inv.health, PoolHealth::Other("RESILVERING_SOMEDAY".into()));
    assert!(!inv.health.is_writable());
    assert_eq!(inv.datasets, pool_inventory().datasets);
    // An older agent's inventory without the newer fields still decodes.
    let mut v = serde_json::to_value(pool_inventory()).unwrap();
    let obj = v.as_object_mut().unwrap();
    obj.remove("capabilities");
    obj.remove("unnamedDatasets");
    let inv: PoolInventory = serde_json::from_value(v).unwrap();
    assert_eq!(inv.capabilities, PoolCapabilities::default());
}

#[test]
fn a_take_without_a_slot_decodes_and_the_slot_is_omitted_when_absent() {
    // What a controller before the slot field sends.
    let r: Request = serde_json::from_value(json!({
        "op": "takeSnapshots",
        "datasets": ["tank/a"],
        "shortName": "x",
        "owner": "SnapshotSchedule/default/a",
    }))
    .unwrap();
    let Request::TakeSnapshots(take) = &r else {
        panic!("{r:?}")
    };
    assert_eq!(take.slot, None);
    assert!(serde_json::to_value(&r).unwrap().get("slot").is_none());
    let with = serde_json::to_value(Request::TakeSnapshots(TakeSnapshots {
        slot: Some(Timestamp::from_millisecond(1_763_800_000_500).unwrap()),
        ..take.clone()
    }))
    .unwrap();
    assert_eq!(with["slot"], json!("2025-11-22T08:26:40.5Z"));
}

#[test]
fn a_name_the_strict_types_refuse_fails_decoding() {
    let r = serde_json::from_value::<Request>(json!({
        "op": "takeSnapshots",
        "datasets": ["tank/../etc"],
        "shortName": "x",
        "owner": "SnapshotSchedule/default/a",
    }));
    assert!(r.is_err());
    let r = serde_json::from_value::<Request>(json!({"op": "runCommand", "argv": ["rm"]}));
    assert!(r.is_err());
}

#[test]
fn requests_are_one_pool_and_name_nothing_twice() {
    let take = |datasets: &[&str]| TakeSnapshots {
        datasets: datasets.iter().map(|d| d.parse().unwrap()).collect(),
        short_name: "s".parse().unwrap(),
        owner: owner("SnapshotSchedule/default/a"),
        slot: None,
    };
    assert_eq!(
        take(&["tank/a", "tank/b/c"]).check(),
        Ok("tank".parse().unwrap())
    );
    assert_eq!(take(&[]).check(), Err(RequestError::Empty));
    assert_eq!(
        take(&["tank/a", "backup/a"]).check(),
        Err(RequestError::SpansPools {
            first: "tank".parse().unwrap(),
            other: "backup".parse().unwrap()
        })
    );
    assert_eq!(
        take(&["tank/a", "tank/a"]).check(),
        Err(RequestError::Duplicate {
            name: "tank/a".into()
        })
    );
    let names = take(&["tank/a", "tank/b"]).snapshots().unwrap();
    assert_eq!(names[1].as_str(), "tank/b@s");

    let destroy = |snaps: &[&str]| DestroySnapshots {
        snapshots: snaps.iter().map(|s| snapshot_ref(s, 1)).collect(),
        owner: owner("SnapshotSchedule/default/a"),
        keeping: Vec::new(),
    };
    assert_eq!(
        destroy(&["tank/a@x", "tank/b@x"]).check(),
        Ok("tank".parse().unwrap())
    );
    assert_eq!(destroy(&[]).check(), Err(RequestError::Empty));
    assert!(matches!(
        destroy(&["tank/a@x", "other/a@x"]).check(),
        Err(RequestError::SpansPools { .. })
    ));
    assert!(matches!(
        destroy(&["tank/a@x", "tank/a@x"]).check(),
        Err(RequestError::Duplicate { .. })
    ));
}
