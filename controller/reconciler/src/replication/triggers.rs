//! What wakes a ReplicationPolicy besides its spec and its own requeue: a ZfsNode change
//! on either end (an agent back with a new endpoint or certificate ends a failing sync's
//! backoff at once), a grant change in its namespace, and — for a policy without a
//! `schedule` — a new snapshot of a schedule whose datasets cover its source (so it syncs
//! right after the snapshot, not at the next poll).

use std::collections::{BTreeSet, HashMap};

use futures::{Stream, StreamExt as _};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use tidepool_api::common::DatasetSelector;
use tidepool_api::{ReplicationPolicy, SnapshotSchedule};
use tokio::sync::mpsc;

/// A change that may concern some policies.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyTrigger {
    /// A ZfsNode changed what a reconcile reads (endpoint, certificate, pools).
    Node(String),
    /// Grants changed for these namespaces (`None`: any namespace).
    Namespaces(Option<BTreeSet<String>>),
    /// A schedule took a new snapshot.
    Snapshot {
        namespace: String,
        schedule: String,
        datasets: Vec<DatasetSelector>,
    },
}

/// Where the schedules' watches send triggers for the policy controller.
#[derive(Debug, Clone)]
pub struct PolicyTriggers(mpsc::UnboundedSender<PolicyTrigger>);

impl PolicyTriggers {
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<PolicyTrigger>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(tx), rx)
    }

    /// Sends, ignoring a policy controller that is gone (leadership ending).
    pub fn send(&self, t: PolicyTrigger) {
        let _ = self.0.send(t);
    }
}

/// The policies each trigger concerns, as a stream for `Controller::reconcile_on`.
pub fn policy_refs(
    mut rx: mpsc::UnboundedReceiver<PolicyTrigger>,
    policies: Store<ReplicationPolicy>,
) -> impl Stream<Item = ObjectRef<ReplicationPolicy>> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
        .map(move |t| {
            policies
                .state()
                .iter()
                .filter(|p| concerns(&t, p))
                .map(|p| ObjectRef::from_obj(&**p))
                .collect::<Vec<_>>()
        })
        .flat_map(futures::stream::iter)
}

/// Whether `t` may change what a reconcile of `p` would do.
pub fn concerns(t: &PolicyTrigger, p: &ReplicationPolicy) -> bool {
    let ns = p.namespace().unwrap_or_default();
    match t {
        PolicyTrigger::Node(node) => {
            &p.spec.source.node_name == node
                || p.spec
                    .target
                    .node
                    .as_ref()
                    .is_some_and(|t| &t.node_name == node)
        }
        PolicyTrigger::Namespaces(None) => true,
        PolicyTrigger::Namespaces(Some(n)) => n.contains(&ns),
        PolicyTrigger::Snapshot {
            namespace,
            schedule,
            datasets,
        } => {
            let source = &p.spec.source;
            *namespace == ns
                && p.spec.schedule.is_none()
                && !p.spec.suspend
                && match &source.snapshots.schedule_name {
                    Some(s) => s == schedule,
                    None => datasets.iter().any(|d| {
                        d.name == source.dataset
                            || (d.recursive
                                && d.name.contains(&source.dataset)
                                && !d.exclude.iter().any(|e| e.contains(&source.dataset)))
                    }),
                }
        }
    }
}

/// Tells new snapshots from other schedule updates: remembers each schedule's
/// `lastSnapshotTime`, and answers a trigger when it moved forward (not when a schedule is
/// first seen: the policies' own first reconcile covers that).
#[derive(Debug, Default)]
pub struct NewSnapshots {
    last: HashMap<(String, String), Option<jiff::Timestamp>>,
}

impl NewSnapshots {
    pub fn on_applied(&mut self, s: &SnapshotSchedule) -> Option<PolicyTrigger> {
        let key = (s.namespace().unwrap_or_default(), s.name_any());
        let now = s
            .status
            .as_ref()
            .and_then(|st| st.last_snapshot_time.as_ref())
            .map(|t| t.0);
        let before = self.last.insert(key.clone(), now);
        match (before, now) {
            (Some(b), Some(n)) if b.is_none_or(|b| b < n) => Some(PolicyTrigger::Snapshot {
                namespace: key.0,
                schedule: key.1,
                datasets: s.spec.datasets.clone(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn policy(spec: serde_json::Value) -> ReplicationPolicy {
        serde_json::from_value(json!({
            "apiVersion": "tidepool.dev/v1alpha1", "kind": "ReplicationPolicy",
            "metadata": {"name": "p", "namespace": "team"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn base() -> serde_json::Value {
        json!({
            "source": {"nodeName": "a", "dataset": "tank/app/db"},
            "target": {"node": {"nodeName": "b", "dataset": "backup/db"}},
        })
    }

    fn snapshot(ns: &str, name: &str, datasets: serde_json::Value) -> PolicyTrigger {
        PolicyTrigger::Snapshot {
            namespace: ns.into(),
            schedule: name.into(),
            datasets: serde_json::from_value(datasets).unwrap(),
        }
    }

    #[test]
    fn a_node_change_concerns_policies_on_either_end_only() {
        let p = policy(base());
        assert!(concerns(&PolicyTrigger::Node("a".into()), &p));
        assert!(concerns(&PolicyTrigger::Node("b".into()), &p));
        assert!(!concerns(&PolicyTrigger::Node("c".into()), &p));
        let mut only_other = BTreeSet::new();
        only_other.insert("other".to_owned());
        assert!(!concerns(&PolicyTrigger::Namespaces(Some(only_other)), &p));
        assert!(concerns(&PolicyTrigger::Namespaces(None), &p));
    }

    #[test]
    fn a_new_snapshot_wakes_unscheduled_policies_whose_source_it_covers() {
        let p = policy(base());
        let covering = json!([{"name": "tank/app", "recursive": true}]);
        assert!(concerns(&snapshot("team", "s", covering.clone()), &p));
        assert!(concerns(
            &snapshot("team", "s", json!([{"name": "tank/app/db"}])),
            &p
        ));
        // Not recursive, excluded, another namespace: no.
        assert!(!concerns(
            &snapshot("team", "s", json!([{"name": "tank/app"}])),
            &p
        ));
        assert!(!concerns(
            &snapshot(
                "team",
                "s",
                json!([{"name": "tank/app", "recursive": true, "exclude": ["tank/app/db"]}])
            ),
            &p
        ));
        assert!(!concerns(&snapshot("elsewhere", "s", covering.clone()), &p));
        // A policy on its own schedule waits for its slots.
        let mut scheduled = base();
        scheduled["schedule"] = json!({"interval": "1h"});
        assert!(!concerns(
            &snapshot("team", "s", covering.clone()),
            &policy(scheduled)
        ));
        // A policy that selects one schedule's snapshots hears only that schedule.
        let mut selecting = base();
        selecting["source"]["snapshots"] = json!({"scheduleName": "db"});
        let selecting = policy(selecting);
        assert!(!concerns(
            &snapshot("team", "s", covering.clone()),
            &selecting
        ));
        assert!(concerns(&snapshot("team", "db", json!([])), &selecting));
    }

    #[test]
    fn only_a_newer_snapshot_time_is_a_new_snapshot() {
        let mut s: SnapshotSchedule = serde_json::from_value(json!({
            "apiVersion": "tidepool.dev/v1alpha1", "kind": "SnapshotSchedule",
            "metadata": {"name": "db", "namespace": "team"},
            "spec": {"nodeName": "a", "datasets": [{"name": "tank/app/db"}],
                     "schedule": {"interval": "1h"}},
        }))
        .unwrap();
        let mut seen = NewSnapshots::default();
        assert_eq!(seen.on_applied(&s), None, "first sight");
        assert_eq!(seen.on_applied(&s), None, "no snapshot yet");
        let at = |secs: i64| Some(Time(jiff::Timestamp::from_second(secs).unwrap()));
        s.status = Some(Default::default());
        s.status.as_mut().unwrap().last_snapshot_time = at(100);
        assert!(matches!(
            seen.on_applied(&s),
            Some(PolicyTrigger::Snapshot { ref schedule, .. }) if schedule == "db"
        ));
        assert_eq!(
            seen.on_applied(&s),
            None,
            "a status write without a new snapshot"
        );
        s.status.as_mut().unwrap().last_snapshot_time = at(160);
        assert!(seen.on_applied(&s).is_some());
    }
}
