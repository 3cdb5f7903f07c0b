//! A schedule's life end to end: the real kube-apiserver with the chart's RBAC, a `tidepool
//! agent` in the OpenZFS VM with a Pod-bound token, one `tidepool controller` replica with
//! the chart's controller ServiceAccount.
//!
//! - Cron in a time zone with jitter: `* H,H+1 * * *` in Asia/Kolkata, where `H` is the
//!   hour there now, fires every minute; read as UTC it would never fire (UTC is 5:30
//!   behind). Over at least two slots there is exactly one snapshot per slot: its name is
//!   the slot (the minute plus this object's fixed jitter offset) in UTC, every slot since
//!   the object was created is there once, and nothing else is (a second run of a slot, on
//!   the jitter path or a requeue race, would be a second name or a catch-up named `now`).
//! - `deletionPolicy: Delete`: deleting the object destroys its snapshots and only those
//!   (a manual snapshot and another schedule's on the same dataset keep their GUIDs), and
//!   the object goes away. `Retain` (the default): the object goes away and every one of
//!   its snapshots stays.
//!
//! Both run at once: the deletions happen while the cron slots come by.

#[path = "sched_support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use kube::Api;
use kube::api::DeleteParams;
use serde_json::json;
use support::wait_event_since;
use tidepool_api::SnapshotSchedule;
use tidepool_reconciler::reasons;
use tidepool_tests::release::*;
use tidepool_tests::snapshots::{Snap, owned_under, snapshots_under};
use tidepool_tests::zfs_vm::ZfsVm;
use tokio::time::Instant;

const WITHIN: Duration = Duration::from_secs(60);
const ZONE: &str = "Asia/Kolkata";
const JITTER_SECS: i64 = 30;

/// The time in a `tidepool_<UTC>_<label>` name.
fn name_time(short: &str, label: &str) -> Timestamp {
    let time = short
        .strip_prefix("tidepool_")
        .and_then(|r| r.strip_suffix(&format!("_{label}")))
        .unwrap_or_else(|| panic!("{short} is not tidepool_<UTC>_{label}"));
    jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", time)
        .and_then(|t| t.to_zoned(TimeZone::UTC))
        .map(|z| z.timestamp())
        .unwrap_or_else(|e| panic!("{short}: not basic ISO 8601 UTC: {e}"))
}

/// The cron schedule's slots in `(after, until]`, given its jitter offset in seconds.
fn slots(after: Timestamp, until: Timestamp, offset: i64) -> BTreeSet<Timestamp> {
    let first = after.as_second().div_euclid(60) * 60 + offset;
    (0..)
        .map(|i| first + 60 * i)
        .take_while(|s| *s <= until.as_second())
        .filter(|s| *s > after.as_second())
        .map(|s| Timestamp::from_second(s).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

async fn wait_gone(api: &Api<SnapshotSchedule>, name: &str) {
    let deadline = Instant::now() + WITHIN;
    while api
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_some()
    {
        assert!(Instant::now() < deadline, "{name} was not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_owned(vm: &ZfsVm, root: &str, owner: &str, at_least: usize) -> Vec<Snap> {
    let deadline = Instant::now() + WITHIN;
    loop {
        let owned = owned_under(vm, root, owner).await;
        if owned.len() >= at_least {
            return owned;
        }
        assert!(Instant::now() < deadline, "{owner}: {owned:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_with_zone_and_jitter_runs_once_per_slot_and_deletion_policy_is_honoured() {
    let started = Instant::now();
    let (release, vm) = tokio::join!(Release::install("life"), ZfsVm::shared());
    let (cp, vm) = (release.cp, ok(vm));
    let users = ok(cp.create_namespace("life-users").await);
    let pool = vm.unique_pool_name("pl");
    ok(vm.create_pool(&pool, 64 << 20).await);
    let root = format!("{pool}/data");
    for d in ["cron", "shared", "keep"] {
        ok(vm
            .exec_ok(["zfs", "create", "-p", &format!("{root}/{d}")])
            .await);
    }
    let shared = format!("{root}/shared");
    ok(vm
        .exec_ok(["zfs", "snapshot", &format!("{shared}@manual")])
        .await);
    let agent_spec = release.agent_spec("a", &[&pool], &[&root], 0);
    let node = agent_spec.node.clone();
    let agent = release.start_agent(vm, &agent_spec).await;
    release
        .grant(&format!("{}-users", release.ns), &[&users], &[&root])
        .await;

    let hour = Timestamp::now().to_zoned(TimeZone::get(ZONE).unwrap_or_else(|e| panic!("{e}")));
    let hours = format!("{},{}", hour.hour(), (hour.hour() + 1) % 24);
    let cron = format!("* {hours} * * *");
    let spec = |dataset: &str, schedule: serde_json::Value, policy: &str| {
        json!({"nodeName": node, "datasets": [{"name": dataset}], "schedule": schedule,
               "deletionPolicy": policy})
    };
    let cron_dataset = format!("{root}/cron");
    create_schedule(
        cp,
        &users,
        "cron",
        spec(
            &cron_dataset,
            json!({"cron": cron, "timeZone": ZONE, "jitter": format!("{JITTER_SECS}s")}),
            "Retain",
        ),
    )
    .await;
    let every = json!({"interval": "2s"});
    create_schedule(cp, &users, "del", spec(&shared, every.clone(), "Delete")).await;
    create_schedule(cp, &users, "other", spec(&shared, every.clone(), "Retain")).await;
    create_schedule(
        cp,
        &users,
        "kept",
        spec(&format!("{root}/keep"), every, "Retain"),
    )
    .await;
    let schedules: Api<SnapshotSchedule> = Api::namespaced(cp.admin_client(), &users);
    let created = schedules
        .get("cron")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .metadata
        .creation_timestamp
        .map(|t| t.0)
        .unwrap_or_else(|| panic!("no creationTimestamp"));
    let replica = release.replica("controller-0").await;
    let controller = release.start(&replica, Some(users.clone())).await;
    eprintln!("controller started after {:?}", started.elapsed());

    // Delete: its own snapshots go, everything else on the dataset keeps its GUID.
    let owner = |name: &str| format!("SnapshotSchedule/{users}/{name}");
    wait_owned(vm, &shared, &owner("del"), 2).await;
    wait_owned(vm, &shared, &owner("other"), 2).await;
    let before: Vec<Snap> = snapshots_under(vm, &shared)
        .await
        .into_iter()
        .filter(|s| s.owner_value() != Some(owner("del").as_str()))
        .collect();
    assert!(before.iter().any(|s| s.short == "manual"), "{before:?}");
    let since = Timestamp::now();
    schedules
        .delete("del", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_gone(&schedules, "del").await;
    wait_event_since(
        cp,
        &users,
        "del",
        ("Normal", reasons::PRUNED),
        since,
        WITHIN,
    )
    .await;
    let after = snapshots_under(vm, &shared).await;
    assert!(
        after
            .iter()
            .all(|s| s.owner_value() != Some(owner("del").as_str())),
        "Delete left its snapshots: {after:?}"
    );
    for s in &before {
        assert!(after.contains(s), "{} was destroyed or replaced", s.full());
    }
    eprintln!("Delete done after {:?}", started.elapsed());

    // Retain: the object goes, its snapshots stay (GUIDs), and no new one comes after a
    // run that was under way.
    let kept = wait_owned(vm, &format!("{root}/keep"), &owner("kept"), 2).await;
    schedules
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_gone(&schedules, "kept").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = owned_under(vm, &format!("{root}/keep"), &owner("kept")).await;
    for s in &kept {
        assert!(settled.contains(s), "Retain lost {}", s.full());
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        owned_under(vm, &format!("{root}/keep"), &owner("kept")).await,
        settled,
        "a deleted schedule kept snapshotting"
    );
    eprintln!("Retain done after {:?}", started.elapsed());

    // Cron: two slots at least, each exactly once, named by the slot in UTC.
    let deadline = Instant::now() + Duration::from_secs(150);
    let cron_owner = owner("cron");
    let (names, checked_at) = loop {
        let now = Timestamp::now();
        let snaps = owned_under(vm, &cron_dataset, &cron_owner).await;
        if snaps.len() >= 2 {
            break (snaps, now);
        }
        assert!(Instant::now() < deadline, "cron: {snaps:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let times: Vec<Timestamp> = names.iter().map(|s| name_time(&s.short, "cron")).collect();
    let offset = times[0].as_second().rem_euclid(60);
    assert!(
        offset < JITTER_SECS,
        "offset {offset}s is outside the jitter: {times:?}"
    );
    let unique: BTreeSet<Timestamp> = times.iter().copied().collect();
    assert_eq!(unique.len(), times.len(), "a name twice: {times:?}");
    // Every slot since creation is there, but the one that may be running right now.
    let expected = slots(created, checked_at, offset);
    let settled_slots = slots(created, checked_at - 10.seconds(), offset);
    assert!(
        unique.is_subset(&expected) && settled_slots.is_subset(&unique),
        "cron slots {expected:?} (settled {settled_slots:?}), taken {unique:?}"
    );
    let zone = TimeZone::get(ZONE).unwrap_or_else(|e| panic!("{e}"));
    for t in &unique {
        let local = t.to_zoned(zone.clone()).hour();
        let utc = t.to_zoned(TimeZone::UTC).hour();
        assert!(
            hours.split(',').any(|h| h == local.to_string()) && local != utc,
            "{t}: {local}h in {ZONE}, {utc}h UTC, hours {hours}"
        );
    }
    // One more look after the next slot: still one snapshot per slot.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again: BTreeSet<Timestamp> = owned_under(vm, &cron_dataset, &cron_owner)
        .await
        .iter()
        .map(|s| name_time(&s.short, "cron"))
        .collect();
    assert!(
        again.is_subset(&slots(created, Timestamp::now(), offset)),
        "{again:?}"
    );
    let status = wait_ready(cp, &users, "cron", "True", reasons::RECONCILED, WITHIN).await;
    let next = status
        .status
        .and_then(|s| s.next_snapshot_time)
        .map(|t| t.0);
    assert_eq!(
        next.map(|n| n.as_second().rem_euclid(60)),
        Some(offset),
        "next slot {next:?}"
    );
    eprintln!(
        "cron slots {unique:?}, offset {offset}s, after {:?}",
        started.elapsed()
    );

    controller.abort();
    drop(agent);
    ok(vm.destroy_pool(&pool).await);
}
