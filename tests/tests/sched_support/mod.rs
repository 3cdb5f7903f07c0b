//! What `schedule_failures` and `schedule_lifecycle` both read: snapshots fresh from zfs in
//! the guest, and events seen after a moment.

#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use tidepool_tests::control_plane::ControlPlane;
use tidepool_tests::release::{events_about, ok};
use tidepool_tests::zfs_vm::ZfsVm;

/// One snapshot as the guest's zfs reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Snap {
    pub dataset: String,
    pub short: String,
    pub guid: u64,
    /// `tidepool.dev:owner`, when set.
    pub owner: Option<String>,
}

impl Snap {
    pub fn full(&self) -> String {
        format!("{}@{}", self.dataset, self.short)
    }
}

/// Every snapshot under `root` (recursively), read fresh in one `zfs get`.
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
            "name,property,value",
            "guid,tidepool.dev:owner",
            root,
        ])
        .await);
    let mut snaps: std::collections::BTreeMap<String, Snap> = Default::default();
    for l in out.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(f.len(), 3, "{l}");
        let (dataset, short) = f[0].split_once('@').unwrap_or_else(|| panic!("{l}"));
        let s = snaps.entry(f[0].to_owned()).or_insert_with(|| Snap {
            dataset: dataset.to_owned(),
            short: short.to_owned(),
            guid: 0,
            owner: None,
        });
        match f[1] {
            "guid" => s.guid = f[2].parse().unwrap_or_else(|e| panic!("{l}: {e}")),
            _ if f[2] != "-" => s.owner = Some(f[2].to_owned()),
            _ => {}
        }
    }
    snaps.into_values().collect()
}

/// The snapshots under `root` owned by `owner`.
pub async fn owned_under(vm: &ZfsVm, root: &str, owner: &str) -> Vec<Snap> {
    snapshots_under(vm, root)
        .await
        .into_iter()
        .filter(|s| s.owner.as_deref() == Some(owner))
        .collect()
}

/// When an event was last observed (a repeated event is one object with a series).
pub fn last_seen(e: &Event) -> Option<jiff::Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
}

/// Waits for an event about `name` with this type and reason observed at or after `since`.
pub async fn wait_event_since(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    (type_, reason): (&str, &str),
    since: jiff::Timestamp,
    within: Duration,
) -> Event {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let events = events_about(cp, ns, name).await;
        if let Some(e) = events.iter().find(|e| {
            e.type_.as_deref() == Some(type_)
                && e.reason.as_deref() == Some(reason)
                && last_seen(e).is_some_and(|t| t >= since)
        }) {
            return e.clone();
        }
        if tokio::time::Instant::now() > deadline {
            let seen: Vec<_> = events
                .iter()
                .map(|e| (e.type_.clone(), e.reason.clone(), last_seen(e)))
                .collect();
            panic!(
                "no {type_} {reason} event about {ns}/{name} since {since} within {within:?}; seen {seen:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
