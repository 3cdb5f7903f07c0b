//! Ownership on real OpenZFS 2.3 (issue 8, "Must show"): an owner property set by an
//! admin on a dataset, or carried in by a stream, never makes a snapshot Tidepool's.
//! The inventory is built by the zfs layer from the real listing, retention is planned by
//! the planner from it, the destroys go through the zfs layer's owned-destroy (the
//! agent's re-check), and the survivors are read back with a fresh listing.
//!
//! One VM for the binary ([`ZfsVm::shared`]); each scenario makes its own pool.
//! Run: `cargo test -p tidepool-tests --test ownership -- --nocapture`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use jiff::tz::TimeZone;
use tidepool_api::names::{DatasetName, PoolName, SnapshotName};
use tidepool_api::{OWNER_PROPERTY, Owner, Retention};
use tidepool_plan::Protections;
use tidepool_plan::inventory::DatasetInventory;
use tidepool_plan::retention::{RetentionRules, plan_dataset};
use tidepool_tests::zfs_exec::{VmExecutor, vm_zfs};
use tidepool_tests::zfs_vm::ZfsVm;
use tidepool_wire::{DestroySnapshots, RefusalReason, SnapshotRef};
use tidepool_zfs::cmd::Depth;
use tidepool_zfs::{PropertyName, PropertyValue, Zfs};

type VmZfs = Zfs<VmExecutor>;

const SCHEDULE: &str = "SnapshotSchedule/default/db";
const POLICY: &str = "ReplicationPolicy/default/db";

async fn vm() -> &'static ZfsVm {
    match ZfsVm::shared().await {
        Ok(vm) => vm,
        Err(e) => panic!("the ownership tests need real OpenZFS 2.3 in the test VM: {e:#}"),
    }
}

async fn new_pool(vm: &ZfsVm, prefix: &str) -> PoolName {
    let name = vm.unique_pool_name(prefix);
    vm.create_pool(&name, 256 << 20).await.unwrap();
    name.parse().unwrap()
}

async fn sh(vm: &ZfsVm, argv: &[&str]) -> String {
    vm.exec_ok(argv.iter().copied()).await.unwrap()
}

fn ds(s: &str) -> DatasetName {
    s.parse().unwrap()
}

fn owner_prop() -> PropertyName {
    OWNER_PROPERTY.parse().unwrap()
}

/// Takes a snapshot as Tidepool does: one `zfs snapshot -o tidepool.dev:owner=...` call.
async fn take(z: &VmZfs, snapshot: &str, owner: &str) {
    let snap: SnapshotName = snapshot.parse().unwrap();
    let value: PropertyValue = owner.parse().unwrap();
    z.snapshot(&[snap], &[(owner_prop(), value)]).await.unwrap();
}

async fn inventory(z: &VmZfs, dataset: &DatasetName) -> DatasetInventory {
    z.dataset_inventories(dataset, Depth::RootsOnly)
        .await
        .unwrap()
        .datasets
        .into_iter()
        .find(|d| &d.dataset == dataset)
        .unwrap()
}

fn names(inv: &DatasetInventory) -> BTreeSet<String> {
    inv.snapshots.iter().map(|s| s.name.to_string()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// What `zfs list` shows as the owner value, whatever its source: what a builder that
/// ignored the source would have taken as a claim.
async fn listed_owner_value(vm: &ZfsVm, snapshot: &str) -> String {
    sh(vm, &["zfs", "list", "-H", "-o", OWNER_PROPERTY, snapshot])
        .await
        .trim()
        .to_owned()
}

/// Plans retention for `owner` with `keepLast: 1` and destroys what it says through the
/// owned-destroy path; returns the short names destroyed.
fn owner_of(text: &str) -> Owner {
    text.parse()
        .expect("an owner in the <Kind>/<namespace>/<name> format")
}

async fn prune(z: &VmZfs, inv: &DatasetInventory, owner: &str) -> BTreeSet<String> {
    let owner = &owner_of(owner);
    let retention = Retention {
        keep_last: Some(1),
        ..Retention::default()
    };
    let tz = TimeZone::UTC;
    let protections = Protections::new();
    let rules = RetentionRules {
        retention: &retention,
        time_zone: &tz,
        owner,
        protections: &protections,
    };
    let plan = plan_dataset(&rules, inv);
    if plan.destroy.is_empty() {
        return BTreeSet::new();
    }
    let (snapshots, keeping) = plan.destroy_request();
    let req = DestroySnapshots {
        snapshots,
        owner: owner.clone(),
        keeping,
    };
    let done = z.destroy_owned(&req).await.unwrap();
    assert!(done.refused.is_empty(), "{:?}", done.refused);
    done.destroyed
        .iter()
        .map(|s| s.snapshot.short().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_set_on_the_dataset_or_received_in_a_stream_claims_nothing() {
    let vm = vm().await;
    let z = vm_zfs(vm);
    let pool = new_pool(vm, "own").await;
    let data = ds(&format!("{pool}/data"));
    let src = ds(&format!("{pool}/src"));
    let recv = ds(&format!("{pool}/data/recv"));
    sh(vm, &["zfs", "create", data.as_str()]).await;
    // An admin (or a tenant) sets the owner on the dataset: every snapshot below inherits it.
    sh(
        vm,
        &[
            "zfs",
            "set",
            &format!("{OWNER_PROPERTY}={SCHEDULE}"),
            data.as_str(),
        ],
    )
    .await;
    sh(vm, &["zfs", "snapshot", &format!("{data}@manual-1")]).await;
    take(
        &z,
        &format!("{data}@tidepool_20260101T000000Z_db"),
        SCHEDULE,
    )
    .await;
    sh(vm, &["zfs", "snapshot", &format!("{data}@manual-2")]).await;
    take(
        &z,
        &format!("{data}@tidepool_20260101T010000Z_db"),
        SCHEDULE,
    )
    .await;
    take(
        &z,
        &format!("{data}@tidepool_20260101T020000Z_db"),
        SCHEDULE,
    )
    .await;

    // A snapshot that carried the owner on its source arrives in a stream (`send -p`).
    sh(vm, &["zfs", "create", src.as_str()]).await;
    take(&z, &format!("{src}@tidepool_20251231T000000Z_db"), SCHEDULE).await;
    let send = format!("zfs send -p {src}@tidepool_20251231T000000Z_db | zfs receive -u {recv}");
    sh(vm, &["sh", "-c", &send]).await;
    sh(
        vm,
        &[
            "zfs",
            "destroy",
            &format!("{src}@tidepool_20251231T000000Z_db"),
        ],
    )
    .await;
    let received = format!("{recv}@tidepool_20251231T000000Z_db");
    println!(
        "[ownership] received snapshot's owner as zfs get sees it:\n{}",
        sh(
            vm,
            &[
                "zfs",
                "get",
                "-H",
                "-o",
                "name,value,source",
                OWNER_PROPERTY,
                &received
            ]
        )
        .await
    );

    // The naive reading: every one of these shows the owner value in a listing.
    for s in [
        format!("{data}@manual-1"),
        format!("{data}@manual-2"),
        received.clone(),
    ] {
        assert_eq!(listed_owner_value(vm, &s).await, SCHEDULE, "{s}");
    }

    let inv = inventory(&z, &data).await;
    let owned: BTreeSet<String> = inv
        .snapshots
        .iter()
        .filter(|s| s.owner.as_ref().map(Owner::as_str) == Some(SCHEDULE))
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(
        owned,
        set(&[
            "tidepool_20260101T000000Z_db",
            "tidepool_20260101T010000Z_db",
            "tidepool_20260101T020000Z_db"
        ]),
        "only the snapshots Tidepool took with -o own"
    );
    let recv_inv = inventory(&z, &recv).await;
    assert!(
        recv_inv.snapshots.iter().all(|s| s.owner.is_none()),
        "a received owner is no claim: {recv_inv:?}"
    );

    // The agent's re-check refuses a manual snapshot named with its real GUID, and a
    // Tidepool snapshot named with a wrong GUID.
    let manual = inv
        .snapshots
        .iter()
        .find(|s| s.name.as_str() == "manual-1")
        .unwrap();
    let newest = inv.newest_snapshot().unwrap();
    let refused = z
        .destroy_owned(&DestroySnapshots {
            snapshots: vec![
                SnapshotRef {
                    snapshot: data.snapshot(&manual.name).unwrap(),
                    guid: manual.guid,
                },
                SnapshotRef {
                    snapshot: data.snapshot(&newest.name).unwrap(),
                    guid: newest.guid ^ 1,
                },
            ],
            owner: owner_of(SCHEDULE),
            keeping: Vec::new(),
        })
        .await
        .unwrap();
    assert!(refused.destroyed.is_empty());
    assert_eq!(
        refused.refused[0].reason,
        RefusalReason::NotOwned { found: None }
    );
    assert_eq!(
        refused.refused[1].reason,
        RefusalReason::GuidChanged { found: newest.guid }
    );

    // Retention from the real inventory destroys only Tidepool's own older snapshots.
    let destroyed = prune(&z, &inv, SCHEDULE).await;
    assert_eq!(
        destroyed,
        set(&[
            "tidepool_20260101T000000Z_db",
            "tidepool_20260101T010000Z_db"
        ])
    );
    assert!(prune(&z, &recv_inv, SCHEDULE).await.is_empty());

    assert_eq!(
        names(&inventory(&z, &data).await),
        set(&["manual-1", "manual-2", "tidepool_20260101T020000Z_db"]),
        "survivors, from a fresh listing"
    );
    assert_eq!(
        names(&inventory(&z, &recv).await),
        set(&["tidepool_20251231T000000Z_db"])
    );
    vm.destroy_pool(pool.as_str()).await.unwrap();
}

/// Retention's safety rule for a plan made from a view that has since changed (the
/// controller plans from the listing it holds, which may be minutes old): a destroy is
/// carried out only while every snapshot the plan keeps on that dataset is still there as
/// the owner's.
/// Here the plan is `keepLast: 2` over three owned snapshots; before the destroy arrives,
/// someone destroys the newest. Carried out anyway, the destroy would leave one snapshot
/// where retention promises two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_planned_from_a_view_that_no_longer_holds_destroys_nothing() {
    let vm = vm().await;
    let z = vm_zfs(vm);
    let pool = new_pool(vm, "stale").await;
    let data = ds(&format!("{pool}/data"));
    sh(vm, &["zfs", "create", data.as_str()]).await;
    let shorts = [
        "tidepool_20260101T000000Z_db",
        "tidepool_20260101T010000Z_db",
        "tidepool_20260101T020000Z_db",
    ];
    for short in shorts {
        take(&z, &format!("{data}@{short}"), SCHEDULE).await;
    }
    let owner = owner_of(SCHEDULE);
    let retention = Retention {
        keep_last: Some(2),
        ..Retention::default()
    };
    let (tz, protections) = (TimeZone::UTC, Protections::new());
    let rules = RetentionRules {
        retention: &retention,
        time_zone: &tz,
        owner: &owner,
        protections: &protections,
    };
    let view = inventory(&z, &data).await;
    let (snapshots, keeping) = plan_dataset(&rules, &view).destroy_request();
    assert_eq!(snapshots.len(), 1, "keepLast 2 of 3 lets the oldest go");
    assert_eq!(keeping.len(), 2);

    sh(vm, &["zfs", "destroy", &format!("{data}@{}", shorts[2])]).await;
    let req = DestroySnapshots {
        snapshots,
        owner: owner.clone(),
        keeping,
    };
    let done = z.destroy_owned(&req).await.unwrap();
    assert!(done.destroyed.is_empty(), "{done:?}");
    assert_eq!(
        done.refused[0].reason,
        RefusalReason::KeptGone {
            kept: req.keeping[0].clone()
        },
        "the newest kept snapshot is the one gone"
    );
    assert_eq!(
        names(&inventory(&z, &data).await),
        set(&shorts[..2]),
        "both survivors stay, from a fresh listing"
    );

    // Planned again from a fresh view, keepLast 2 over two destroys nothing.
    let fresh = inventory(&z, &data).await;
    assert!(plan_dataset(&rules, &fresh).destroy.is_empty());
    vm.destroy_pool(pool.as_str()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_and_a_policy_of_one_name_never_claim_each_others() {
    let vm = vm().await;
    let z = vm_zfs(vm);
    let pool = new_pool(vm, "kinds").await;
    let data = ds(&format!("{pool}/db"));
    sh(vm, &["zfs", "create", data.as_str()]).await;
    for (i, owner) in [SCHEDULE, POLICY, SCHEDULE, POLICY, SCHEDULE, POLICY]
        .iter()
        .enumerate()
    {
        take(&z, &format!("{data}@tidepool_20260101T0{i}0000Z_db"), owner).await;
    }
    let inv = inventory(&z, &data).await;
    assert_eq!(
        prune(&z, &inv, SCHEDULE).await,
        set(&[
            "tidepool_20260101T000000Z_db",
            "tidepool_20260101T020000Z_db"
        ]),
        "the schedule's older two, none of the policy's"
    );
    let inv = inventory(&z, &data).await;
    assert_eq!(
        prune(&z, &inv, POLICY).await,
        set(&[
            "tidepool_20260101T010000Z_db",
            "tidepool_20260101T030000Z_db"
        ])
    );
    let survivors = inventory(&z, &data).await;
    assert_eq!(
        names(&survivors),
        set(&[
            "tidepool_20260101T040000Z_db",
            "tidepool_20260101T050000Z_db"
        ])
    );
    let owners: BTreeSet<Option<&str>> = survivors
        .snapshots
        .iter()
        .map(|s| s.owner.as_ref().map(Owner::as_str))
        .collect();
    assert_eq!(owners, BTreeSet::from([Some(SCHEDULE), Some(POLICY)]));
    vm.destroy_pool(pool.as_str()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_inventory_reads_features_holds_and_encryption() {
    let vm = vm().await;
    let z = vm_zfs(vm);
    let pool = new_pool(vm, "inv").await;
    let data = ds(&format!("{pool}/data"));
    sh(vm, &["zfs", "create", data.as_str()]).await;
    take(
        &z,
        &format!("{data}@tidepool_20260101T000000Z_db"),
        SCHEDULE,
    )
    .await;
    sh(vm, &["zfs", "snapshot", &format!("{data}@manual")]).await;
    sh(
        vm,
        &[
            "zfs",
            "hold",
            "tidepool:target-1",
            &format!("{data}@tidepool_20260101T000000Z_db"),
        ],
    )
    .await;
    sh(
        vm,
        &[
            "zfs",
            "bookmark",
            &format!("{data}@manual"),
            &format!("{data}#manual"),
        ],
    )
    .await;
    let secret = ds(&format!("{pool}/secret"));
    let key = format!("/var/tmp/tidepool/{pool}.key");
    sh(
        vm,
        &["sh", "-c", &format!("printf %s tidepool-test-key > {key}")],
    )
    .await;
    sh(
        vm,
        &[
            "zfs",
            "create",
            "-o",
            "encryption=on",
            "-o",
            "keyformat=passphrase",
            "-o",
            &format!("keylocation=file://{key}"),
            secret.as_str(),
        ],
    )
    .await;
    // A pool without the large_blocks feature (created with only the features named).
    let old = vm.unique_pool_name("old");
    let vdev = format!("/var/tmp/tidepool/{old}.img");
    sh(vm, &["truncate", "-s", "256M", &vdev]).await;
    sh(
        vm,
        &[
            "zpool",
            "create",
            "-d",
            "-o",
            "feature@bookmarks=enabled",
            &old,
            &vdev,
        ],
    )
    .await;

    let inv = z.pool_inventory(&pool).await.unwrap();
    println!(
        "[ownership] capabilities of a default pool: {:?}",
        inv.capabilities
    );
    assert!(inv.health.is_writable());
    assert!(inv.size_bytes > 0 && inv.free_bytes > 0);
    let c = inv.capabilities;
    assert!(c.bookmarks && c.bookmark_v2 && c.encryption && c.large_blocks);
    assert!(c.embedded_data && c.extensible_dataset);
    assert!(inv.dataset(&secret).unwrap().encrypted);
    let d = inv.dataset(&data).unwrap();
    assert!(!d.encrypted);
    let held = d
        .snapshots
        .iter()
        .find(|s| s.name.as_str() == "tidepool_20260101T000000Z_db")
        .unwrap();
    assert!(held.held && d.has_hold(held.guid, "tidepool:target-1"));
    assert_eq!(held.owner.as_ref().map(Owner::as_str), Some(SCHEDULE));
    let manual = d
        .snapshots
        .iter()
        .find(|s| s.name.as_str() == "manual")
        .unwrap();
    assert!(!manual.held && manual.owner.is_none());
    assert_eq!(d.bookmarks.len(), 1);
    assert_eq!(d.bookmarks[0].guid, manual.guid);

    let old_caps = z.pool_capabilities(&old.parse().unwrap()).await.unwrap();
    println!("[ownership] capabilities of a `-d` pool: {old_caps:?}");
    assert!(old_caps.bookmarks);
    assert!(!old_caps.large_blocks && !old_caps.encryption);

    sh(
        vm,
        &[
            "zfs",
            "release",
            "tidepool:target-1",
            &format!("{data}@tidepool_20260101T000000Z_db"),
        ],
    )
    .await;
    sh(vm, &["zpool", "destroy", &old]).await;
    vm.destroy_pool(pool.as_str()).await.unwrap();
}
