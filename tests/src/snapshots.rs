//! Reading a schedule's snapshots back from zfs in the guest, as the end-to-end tests and
//! the demo check them: fresh `zfs get` listings, never the agent's inventory (the thing
//! under test).
//!
//! Like [`crate::release`], the helpers panic with the whole error: a failed reading ends
//! the run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::release::ok;
use crate::zfs_vm::ZfsVm;

/// One snapshot as the guest's zfs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snap {
    pub dataset: String,
    pub short: String,
    pub createtxg: u64,
    pub guid: u64,
    /// `(value, source)` of `tidepool.dev:owner`.
    pub owner: Option<(String, String)>,
}

impl Snap {
    /// `dataset@short`.
    pub fn full(&self) -> String {
        format!("{}@{}", self.dataset, self.short)
    }

    /// The `tidepool.dev:owner` value, wherever it was set.
    pub fn owner_value(&self) -> Option<&str> {
        self.owner.as_ref().map(|(value, _)| value.as_str())
    }
}

/// Every snapshot under `root`, read fresh from zfs in the guest in one listing.
pub async fn snapshots_under(vm: &ZfsVm, root: &str) -> Vec<Snap> {
    let out = ok(vm
        .exec_ok([
            "zfs",
            "get",
            "-H",
            "-p",
            "-r",
            "-t",
            "snapshot",
            "-o",
            "name,property,value,source",
            "createtxg,guid,tidepool.dev:owner",
            root,
        ])
        .await);
    let mut by_name: BTreeMap<String, Snap> = BTreeMap::new();
    for l in out.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(f.len(), 4, "{l}");
        let (dataset, short) = f[0].split_once('@').unwrap_or_else(|| panic!("{l}"));
        let snap = by_name.entry(f[0].to_owned()).or_insert_with(|| Snap {
            dataset: dataset.to_owned(),
            short: short.to_owned(),
            createtxg: 0,
            guid: 0,
            owner: None,
        });
        let number = || f[2].parse::<u64>().unwrap_or_else(|e| panic!("{l}: {e}"));
        match f[1] {
            "createtxg" => snap.createtxg = number(),
            "guid" => snap.guid = number(),
            _ if f[2] != "-" => snap.owner = Some((f[2].to_owned(), f[3].to_owned())),
            _ => {}
        }
    }
    by_name.into_values().collect()
}

/// The snapshots under `root` whose owner value is `owner`.
pub async fn owned_under(vm: &ZfsVm, root: &str, owner: &str) -> Vec<Snap> {
    snapshots_under(vm, root)
        .await
        .into_iter()
        .filter(|s| s.owner_value() == Some(owner))
        .collect()
}

/// The snapshots of `owner` under `root`, by short name, each with its datasets.
pub async fn owned_once(vm: &ZfsVm, root: &str, owner: &str) -> BTreeMap<String, Vec<Snap>> {
    let mut by_name: BTreeMap<String, Vec<Snap>> = BTreeMap::new();
    for s in snapshots_under(vm, root).await {
        if s.owner_value() == Some(owner) {
            by_name.entry(s.short.clone()).or_default().push(s);
        }
    }
    by_name
}

/// [`owned_once`] outside a prune or a take, when every set covers `sets_of` datasets;
/// `node` names the node in messages. `zfs destroy` takes one dataset per call, so a
/// reading in the middle of a prune sees the sets being pruned (the oldest ones: more than
/// one when a run before was cut short between its take and its prune) on some datasets
/// only; and a recursive `zfs get` reads one dataset after another, so a reading that
/// overlaps an atomic `zfs snapshot` can see the newest set on some datasets only. So a
/// partial set must be the newest or older than every whole one, and whole or gone soon.
pub async fn owned_whole(
    vm: &ZfsVm,
    node: &str,
    root: &str,
    owner: &str,
    sets_of: usize,
) -> BTreeMap<String, Vec<Snap>> {
    for _ in 0..20 {
        let owned = owned_once(vm, root, owner).await;
        let txg = |snaps: &Vec<Snap>| snaps.iter().map(|s| s.createtxg).min().unwrap_or(0);
        let (whole, partial): (Vec<_>, Vec<_>) =
            owned.iter().partition(|(_, snaps)| snaps.len() == sets_of);
        if partial.is_empty() {
            return owned;
        }
        let oldest_whole = whole.iter().map(|(_, s)| txg(s)).min().unwrap_or(u64::MAX);
        let newest = owned.values().map(txg).max();
        assert!(
            partial
                .iter()
                .all(|(_, s)| txg(s) < oldest_whole || Some(txg(s)) == newest),
            "{node} {root}: a partial snapshot set that is neither being pruned nor being taken: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{node} {root}: a snapshot set stayed partial for 4 s");
}

/// The slot time in `tidepool_<YYYYMMDD>T<HHMMSS>Z_<label>`, checked to be basic ISO 8601
/// UTC and recent.
pub fn slot_time(short: &str, label: &str) -> jiff::Timestamp {
    let time = short
        .strip_prefix("tidepool_")
        .and_then(|r| r.strip_suffix(&format!("_{label}")))
        .unwrap_or_else(|| panic!("{short} is not tidepool_<UTC>_{label}"));
    assert!(
        time.len() == 16
            && time.as_bytes()[8] == b'T'
            && time.ends_with('Z')
            && time[..8].bytes().all(|b| b.is_ascii_digit())
            && time[9..15].bytes().all(|b| b.is_ascii_digit()),
        "{short}: the time is not basic ISO 8601 UTC"
    );
    let at = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", time)
        .and_then(|t| t.to_zoned(jiff::tz::TimeZone::UTC))
        .unwrap_or_else(|e| panic!("{short}: {e}"))
        .timestamp();
    let age = jiff::Timestamp::now().duration_since(at);
    assert!(
        age.as_secs() >= -5 && age.as_secs() < 600,
        "{short} is not a recent UTC time"
    );
    at
}

/// Every set: on exactly `covered`, in one transaction (one createtxg), named
/// `tidepool_<UTC>_<label>`, owned locally by `owner`. Returns the short names, oldest first.
pub fn assert_atomic_named_owned(
    node: &str,
    covered: &BTreeSet<String>,
    label: &str,
    owner: &str,
    owned: &BTreeMap<String, Vec<Snap>>,
) -> Vec<String> {
    let mut order: Vec<(u64, String)> = Vec::new();
    for (short, snaps) in owned {
        let datasets: BTreeSet<String> = snaps.iter().map(|s| s.dataset.clone()).collect();
        assert_eq!(&datasets, covered, "{node} {short}: recursive and exclude");
        let txgs: BTreeSet<u64> = snaps.iter().map(|s| s.createtxg).collect();
        assert_eq!(
            txgs.len(),
            1,
            "{node} {short}: not one transaction: {snaps:?}"
        );
        slot_time(short, label);
        for s in snaps {
            assert_eq!(
                s.owner,
                Some((owner.to_owned(), "local".to_owned())),
                "{node} {}@{short}",
                s.dataset
            );
        }
        order.push((snaps[0].createtxg, short.clone()));
    }
    order.sort();
    order.into_iter().map(|(_, s)| s).collect()
}
