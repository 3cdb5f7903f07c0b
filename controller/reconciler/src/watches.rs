//! The `ZfsNode` and `DatasetGrant` watches as streams of the schedules to reconcile (the
//! decisions are [`crate::triggers`]'). Polling these streams also keeps the reflector
//! stores they were built over current.

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tidepool_api::{DatasetGrant, SnapshotSchedule, ZfsNode};

use crate::replication::triggers::{PolicyTrigger, PolicyTriggers};
use crate::resolve::Labels;
use crate::triggers::{
    Change, Changes, GrantView, NodeView, grant_namespaces, node_affects, selector_matches,
};

type Events<K> = dyn Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send;

/// The schedules each relevant `ZfsNode` change can affect (and the node, to `policies`).
pub fn node_triggers(
    events: impl Stream<Item = Result<watcher::Event<ZfsNode>, watcher::Error>> + Send + 'static,
    schedules: Store<SnapshotSchedule>,
    client: Client,
    policies: PolicyTriggers,
) -> impl Stream<Item = ObjectRef<SnapshotSchedule>> + Send + 'static {
    changes(Box::pin(events), NodeView::of)
        .then(move |change| {
            let (schedules, client) = (schedules.clone(), client.clone());
            if let Some(v) = change.after.as_ref().or(change.before.as_ref()) {
                policies.send(PolicyTrigger::Node(v.node.clone()));
            }
            async move { on_node(&change, &schedules, &client).await }
        })
        .flat_map(futures::stream::iter)
}

/// The schedules of the namespaces each grant change reaches (and the namespaces, to
/// `policies`).
pub fn grant_triggers(
    events: impl Stream<Item = Result<watcher::Event<DatasetGrant>, watcher::Error>> + Send + 'static,
    schedules: Store<SnapshotSchedule>,
    policies: PolicyTriggers,
) -> impl Stream<Item = ObjectRef<SnapshotSchedule>> + Send + 'static {
    changes(Box::pin(events), GrantView::of)
        .map(move |change| {
            let namespaces = grant_namespaces(&change);
            policies.send(PolicyTrigger::Namespaces(namespaces.clone()));
            schedules
                .state()
                .iter()
                .filter(|s| {
                    let ns = s.namespace().unwrap_or_default();
                    namespaces.as_ref().is_none_or(|n| n.contains(&ns))
                })
                .map(|s| ObjectRef::from_obj(&**s))
                .collect::<Vec<_>>()
        })
        .flat_map(futures::stream::iter)
}

/// The changes that matter, one at a time (watch errors are retried by the watcher's
/// backoff and carry no change).
fn changes<K, V>(
    events: std::pin::Pin<Box<Events<K>>>,
    view: fn(&K) -> V,
) -> impl Stream<Item = Change<V>> + Send + 'static
where
    K: kube::Resource + Send + 'static,
    V: Clone + PartialEq + Send + 'static,
{
    events
        .filter_map(|e| async move { e.ok() })
        .scan(Changes::<V>::default(), move |seen, event| {
            let out = seen.on_event(&event, view);
            async move { Some(out) }
        })
        .flat_map(futures::stream::iter)
}

async fn on_node(
    change: &Change<NodeView>,
    schedules: &Store<SnapshotSchedule>,
    client: &Client,
) -> Vec<ObjectRef<SnapshotSchedule>> {
    let all = schedules.state();
    let node = change.after.as_ref().or(change.before.as_ref());
    // A selector matches the Node's labels (not the ZfsNode's); read them once, and only
    // when some schedule has a selector. Unreadable: every selector counts as matching.
    let labels: Option<Labels> = match node {
        Some(v) if all.iter().any(|s| s.spec.node_selector.is_some()) => {
            Api::<Node>::all(client.clone())
                .get_opt(&v.node)
                .await
                .ok()
                .map(|n| {
                    n.map(|n| n.labels().clone().into_iter().collect())
                        .unwrap_or_default()
                })
        }
        _ => None,
    };
    all.iter()
        .filter(|s| {
            node_affects(s, change, |sel| {
                labels.as_ref().is_none_or(|l| selector_matches(sel, l))
            })
        })
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}
