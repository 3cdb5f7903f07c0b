//! A replica read back for the replication tests: snapshots with GUIDs, owners, holds and
//! bookmarks from fresh `zfs` reads in the guest, and a ReplicationPolicy's status and
//! conditions from the API. The readers tolerate a snapshot or dataset that is gone: the
//! controller's retention runs beside the tests.

use std::time::Duration;

use kube::Api;
use tidepool_api::ReplicationPolicy;
use tidepool_api::condition::find;
use tidepool_api::replication_policy::ReplicationPolicyStatus;
use tokio::time::Instant;

use crate::release::ok;
use crate::zfs_vm::ZfsVm;

/// How long [`wait_for`] waits.
pub const WITHIN: Duration = Duration::from_secs(150);

pub async fn sh(vm: &ZfsVm, argv: &[&str]) -> String {
    ok(vm.exec_ok(argv.iter().copied()).await)
}

/// Snapshots of `dataset` (not below it) by short name → GUID, oldest first by createtxg;
/// none when the dataset does not exist (yet).
pub async fn guids(vm: &ZfsVm, dataset: &str) -> Vec<(String, String)> {
    let out = ok(vm
        .exec([
            "zfs",
            "list",
            "-H",
            "-p",
            "-o",
            "name,guid",
            "-t",
            "snapshot",
            "-s",
            "createtxg",
            "-d",
            "1",
            dataset,
        ])
        .await);
    if !out.status.success() {
        assert!(
            out.stderr_lossy().contains("does not exist"),
            "listing {dataset}: {}",
            out.stderr_lossy()
        );
        return Vec::new();
    }
    out.stdout_lossy()
        .lines()
        .filter_map(|l| {
            let (name, guid) = l.split_once('\t')?;
            let short = name.split_once('@')?.1;
            Some((short.to_owned(), guid.to_owned()))
        })
        .collect()
}

pub async fn exists(vm: &ZfsVm, dataset: &str) -> bool {
    ok(vm.exec(["zfs", "list", "-H", "-o", "name", dataset]).await)
        .status
        .success()
}

pub async fn prop(vm: &ZfsVm, target: &str, property: &str) -> String {
    sh(vm, &["zfs", "get", "-H", "-o", "value", property, target])
        .await
        .trim()
        .to_owned()
}

pub async fn prop_source(vm: &ZfsVm, target: &str, property: &str) -> String {
    sh(vm, &["zfs", "get", "-H", "-o", "source", property, target])
        .await
        .trim()
        .to_owned()
}

/// The hold tags on `snapshot`; none when it is gone (retention runs beside the test).
/// Every snapshot of `dataset` with its `tidepool.dev:owner` value and source, in one
/// `zfs get` (retention runs beside the test; one read sees one state).
pub async fn owners(vm: &ZfsVm, dataset: &str) -> Vec<(String, String, String)> {
    let out = ok(vm
        .exec([
            "zfs",
            "get",
            "-H",
            "-o",
            "name,value,source",
            "-t",
            "snapshot",
            "-d",
            "1",
            "tidepool.dev:owner",
            dataset,
        ])
        .await);
    out.stdout_lossy()
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let short = f.next()?.split_once('@')?.1.to_owned();
            Some((short, f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect()
}

pub async fn hold_tags(vm: &ZfsVm, snapshot: &str) -> Vec<String> {
    let out = ok(vm.exec(["zfs", "holds", "-H", snapshot]).await);
    out.stdout_lossy()
        .lines()
        .filter_map(|l| l.split('\t').nth(1).map(str::to_owned))
        .collect()
}

pub async fn bookmarks(vm: &ZfsVm, dataset: &str) -> Vec<String> {
    sh(
        vm,
        &[
            "zfs", "list", "-H", "-o", "name", "-t", "bookmark", "-d", "1", dataset,
        ],
    )
    .await
    .lines()
    .map(str::to_owned)
    .collect()
}

pub async fn status(api: &Api<ReplicationPolicy>, name: &str) -> ReplicationPolicyStatus {
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .status
        .unwrap_or_default()
}

pub fn condition(s: &ReplicationPolicyStatus, type_: &str) -> Option<(String, String)> {
    find(&s.conditions, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

/// Polls `check` every second until it returns `Some`, or panics with `what` and the last
/// status after [`WITHIN`].
pub async fn wait_for<T, F, Fut>(
    api: &Api<ReplicationPolicy>,
    name: &str,
    what: &str,
    check: F,
) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + WITHIN;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > end {
            panic!(
                "{what}: not within {WITHIN:?}; status {:#?}",
                status(api, name).await
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
