//! Which schedules a `ZfsNode` or `DatasetGrant` event reconciles.
//!
//! Agents heartbeat their `ZfsNode` (free bytes, heartbeat time): with thousands of
//! schedules, re-queuing all of them on every such write would keep the controller
//! reconciling for nothing. So an event counts only when something a schedule depends on
//! changed ([`NodeView`], [`GrantView`]), and then only the schedules it can affect are
//! queued: for a node, those that name it, select it, list it in their status, or (with
//! neither `nodeName` nor `nodeSelector`) use a pool it reports; for a grant, those in the
//! namespaces it names before or after the change.

use std::collections::{BTreeSet, HashMap, HashSet};

use kube::ResourceExt;
use kube::runtime::watcher::Event;
use tidepool_api::{DatasetGrant, DatasetGrantSpec, SnapshotSchedule, ZfsNode};

use crate::resolve::Labels;

/// What of a `ZfsNode` a schedule's reconcile reads. Free bytes and the heartbeat time
/// are not in it: they change on every heartbeat and decide nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeView {
    pub node: String,
    pub labels: Labels,
    pub endpoint: Option<String>,
    pub fingerprint: Option<String>,
    /// (name, health), in the order published.
    pub pools: Vec<(String, String)>,
    pub allowed_roots: Vec<String>,
}

impl NodeView {
    pub fn of(n: &ZfsNode) -> Self {
        let status = n.status.as_ref();
        Self {
            node: n.spec.node_name.clone(),
            labels: n.labels().clone().into_iter().collect(),
            endpoint: status.and_then(|s| s.endpoint.clone()),
            fingerprint: status.and_then(|s| s.tls_certificate_sha256.clone()),
            pools: status
                .map(|s| {
                    s.pools
                        .iter()
                        .map(|p| (p.name.clone(), p.health.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            allowed_roots: status.map(|s| s.allowed_roots.clone()).unwrap_or_default(),
        }
    }

    fn has_pool(&self, pool: &str) -> bool {
        self.pools.iter().any(|(p, _)| p == pool)
    }
}

/// What of a grant decides who may do what: its whole spec.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantView(pub DatasetGrantSpec);

impl GrantView {
    pub fn of(g: &DatasetGrant) -> Self {
        Self(g.spec.clone())
    }
}

/// A change of one object's view: `before` is `None` when it is new, `after` when gone.
#[derive(Debug, Clone, PartialEq)]
pub struct Change<V> {
    pub before: Option<V>,
    pub after: Option<V>,
}

/// The last view of each object, to tell a change that matters from one that does not.
#[derive(Debug)]
pub struct Changes<V> {
    seen: HashMap<String, V>,
    /// Names listed since the watch (re)started: those not listed again are gone.
    relisting: Option<HashSet<String>>,
    /// The first listing is over.
    primed: bool,
}

impl<V> Default for Changes<V> {
    fn default() -> Self {
        Self {
            seen: HashMap::new(),
            relisting: None,
            primed: false,
        }
    }
}

impl<V: Clone + PartialEq> Changes<V> {
    /// The changes one watch event makes. The first listing is not a change (the
    /// schedules' own first listing reconciles every one of them); a relisting after a
    /// broken watch reports what differs, including objects that went meanwhile.
    pub fn on_event<K: ResourceExt>(
        &mut self,
        event: &Event<K>,
        view: impl Fn(&K) -> V,
    ) -> Vec<Change<V>> {
        match event {
            Event::Init => {
                self.relisting = Some(HashSet::new());
                Vec::new()
            }
            Event::InitApply(o) => {
                let name = o.name_any();
                if let Some(r) = &mut self.relisting {
                    r.insert(name.clone());
                }
                let change = self.apply(name, Some(view(o)));
                change.filter(|_| self.primed).into_iter().collect()
            }
            Event::InitDone => {
                let Some(listed) = self.relisting.take() else {
                    return Vec::new();
                };
                if !std::mem::replace(&mut self.primed, true) {
                    return Vec::new();
                }
                let gone: Vec<String> = self
                    .seen
                    .keys()
                    .filter(|k| !listed.contains(*k))
                    .cloned()
                    .collect();
                gone.into_iter()
                    .filter_map(|name| self.apply(name, None))
                    .collect()
            }
            Event::Apply(o) => self
                .apply(o.name_any(), Some(view(o)))
                .into_iter()
                .collect(),
            Event::Delete(o) => self.apply(o.name_any(), None).into_iter().collect(),
        }
    }

    fn apply(&mut self, name: String, after: Option<V>) -> Option<Change<V>> {
        let before = match &after {
            Some(v) => self.seen.insert(name, v.clone()),
            None => self.seen.remove(&name),
        };
        if before == after {
            return None;
        }
        Some(Change { before, after })
    }
}

/// Whether a node's change can affect `s`. `selected`: whether `s`'s nodeSelector matches
/// the node's `Node` labels (asked only when `s` has a selector).
pub fn node_affects(
    s: &SnapshotSchedule,
    change: &Change<NodeView>,
    selected: impl Fn(&tidepool_api::common::NodeSelector) -> bool,
) -> bool {
    let Some(node) = change
        .after
        .as_ref()
        .or(change.before.as_ref())
        .map(|v| v.node.as_str())
    else {
        return false;
    };
    let listed = s
        .status
        .as_ref()
        .is_some_and(|st| st.nodes.iter().any(|n| n.node == node));
    if listed {
        return true;
    }
    if let Some(n) = &s.spec.node_name {
        return n == node;
    }
    if let Some(sel) = &s.spec.node_selector {
        return selected(sel);
    }
    let pool = s.spec.datasets.first().map(|d| d.name.pool());
    pool.is_some_and(|p| {
        [&change.before, &change.after]
            .into_iter()
            .flatten()
            .any(|v| v.has_pool(p.as_str()))
    })
}

/// The namespaces a grant change reaches: those named before and after. `None`: every
/// namespace (a namespace selector, before or after, may match any of them).
pub fn grant_namespaces(change: &Change<GrantView>) -> Option<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for v in [&change.before, &change.after].into_iter().flatten() {
        if v.0.namespace_selector.is_some() {
            return None;
        }
        out.extend(v.0.namespaces.iter().cloned());
    }
    Some(out)
}

/// Whether `selector` matches `labels` (every key equal).
pub fn selector_matches(selector: &tidepool_api::common::NodeSelector, labels: &Labels) -> bool {
    selector.0.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
#[path = "triggers_tests.rs"]
mod tests;
