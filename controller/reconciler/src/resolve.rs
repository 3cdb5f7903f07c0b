//! Which nodes a schedule runs on, and whether its namespace may touch its datasets there.
//! Pure functions over values the reconciler has read (ZfsNodes, DatasetGrants, labels).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use tidepool_api::common::NodeSelector;
use tidepool_api::{Access, DatasetGrant, DatasetName, SnapshotScheduleSpec, ZfsNode};

pub type Labels = BTreeMap<String, String>;

/// Why a schedule has no node to run on, or may not run on one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no node matches spec.nodeSelector")]
    NoMatchingNode,
    #[error("no ZfsNode reports pool {pool} (spec.datasets)")]
    NoNodeWithPool { pool: String },
    #[error(
        "namespace {namespace} has no DatasetGrant with Snapshot access to {dataset} on node {node}"
    )]
    NotPermitted {
        namespace: String,
        dataset: DatasetName,
        node: String,
    },
}

impl ResolveError {
    pub fn reason(&self) -> &'static str {
        match self {
            ResolveError::NoMatchingNode | ResolveError::NoNodeWithPool { .. } => {
                tidepool_api::condition::reason::NO_MATCHING_NODE
            }
            ResolveError::NotPermitted { .. } => crate::reasons::NOT_PERMITTED,
        }
    }
}

/// Whether `selector` (matchLabels and matchExpressions) selects `labels`. An empty
/// selector selects everything, as in Kubernetes.
pub fn label_selector_matches(selector: &LabelSelector, labels: &Labels) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match (e.operator.as_str(), labels.get(&e.key)) {
            ("In", Some(v)) => values.contains(v),
            ("In", None) => false,
            ("NotIn", Some(v)) => !values.contains(v),
            ("NotIn", None) => true,
            ("Exists", found) => found.is_some(),
            ("DoesNotExist", found) => found.is_none(),
            // An operator this version does not know selects nothing: the safe side.
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

pub fn node_selector_matches(selector: &NodeSelector, labels: &Labels) -> bool {
    selector.0.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The ZfsNodes (by node name) whose status lists `pool`.
pub fn nodes_with_pool<'a>(nodes: &'a [ZfsNode], pool: &str) -> Vec<&'a str> {
    let mut names: Vec<&str> = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .is_some_and(|s| s.pools.iter().any(|p| p.name == pool))
        })
        .map(|n| n.spec.node_name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The nodes a schedule with neither `nodeName` nor `nodeSelector` runs on.
pub fn default_nodes(
    spec: &SnapshotScheduleSpec,
    zfs_nodes: &[ZfsNode],
) -> Result<Vec<String>, ResolveError> {
    let pool = spec
        .datasets
        .first()
        .map(|d| d.name.pool().to_string())
        .unwrap_or_default();
    let nodes = nodes_with_pool(zfs_nodes, &pool);
    if nodes.is_empty() {
        return Err(ResolveError::NoNodeWithPool { pool });
    }
    Ok(nodes.into_iter().map(str::to_owned).collect())
}

/// Whether some grant lets `namespace` use `dataset` on `node` for `access`.
pub fn permitted(
    grants: &[DatasetGrant],
    namespace: &str,
    namespace_labels: &Labels,
    node: &str,
    node_labels: &Labels,
    dataset: &DatasetName,
    access: Access,
) -> bool {
    grants.iter().any(|g| {
        let s = &g.spec;
        let ns_ok = s.namespaces.iter().any(|n| n == namespace)
            || s.namespace_selector
                .as_ref()
                .is_some_and(|sel| label_selector_matches(sel, namespace_labels));
        let node_ok = match (&s.node_names[..], &s.node_selector) {
            ([], None) => true,
            (names, selector) => {
                names.iter().any(|n| n == node)
                    || selector
                        .as_ref()
                        .is_some_and(|sel| node_selector_matches(sel, node_labels))
            }
        };
        let root_ok = s.datasets.iter().any(|root| root.contains(dataset));
        ns_ok && node_ok && root_ok && s.access.contains(&access)
    })
}

/// Checks every dataset of the schedule on every node; the first refusal wins.
pub fn check_grants(
    grants: &[DatasetGrant],
    spec: &SnapshotScheduleSpec,
    namespace: &str,
    namespace_labels: &Labels,
    nodes: &[(String, Labels)],
) -> Result<(), ResolveError> {
    for (node, labels) in nodes {
        for d in &spec.datasets {
            // A recursive selector's descendants lie below its name, so a root that
            // contains the name contains them too.
            if !permitted(
                grants,
                namespace,
                namespace_labels,
                node,
                labels,
                &d.name,
                Access::Snapshot,
            ) {
                return Err(ResolveError::NotPermitted {
                    namespace: namespace.to_owned(),
                    dataset: d.name.clone(),
                    node: node.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Whether any grant needs namespace labels (so the caller reads the Namespace only then).
pub fn needs_namespace_labels(grants: &[DatasetGrant]) -> bool {
    grants.iter().any(|g| g.spec.namespace_selector.is_some())
}

/// Whether any grant needs node labels.
pub fn needs_node_labels(grants: &[DatasetGrant]) -> bool {
    grants.iter().any(|g| g.spec.node_selector.is_some())
}

#[cfg(test)]
mod tests;
