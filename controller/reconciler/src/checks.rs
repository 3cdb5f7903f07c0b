//! The checks before anything is touched: which nodes a schedule runs on and whether
//! its namespace's grants cover every dataset there (the decisions are `resolve`'s; this
//! reads what they need).

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::ListParams;
use kube::{Api, Client, Resource, ResourceExt};
use tidepool_api::{DatasetGrant, SnapshotSchedule, ZfsNode};

use crate::reconcile::{Context, ReconcileError, kube_err};
use crate::resolve::{self, Labels};
use crate::status::Blocker;

/// Labels of a cluster object, read only when a selector needs them.
pub(crate) async fn labels_of<K>(client: &Client, name: &str) -> Result<Labels, ReconcileError>
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    Ok(api
        .get_opt(name)
        .await
        .map_err(kube_err("reading labels"))?
        .map(|o| o.labels().clone().into_iter().collect())
        .unwrap_or_default())
}

/// The nodes a schedule runs on, with their labels when a grant needs them.
pub async fn nodes_of(
    obj: &SnapshotSchedule,
    ctx: &Context,
    grants: &[DatasetGrant],
) -> Result<Result<Vec<(String, Labels)>, resolve::ResolveError>, ReconcileError> {
    let spec = &obj.spec;
    let names: Vec<String> = if let Some(n) = &spec.node_name {
        vec![n.clone()]
    } else if let Some(sel) = &spec.node_selector {
        let selector = sel
            .0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes: Api<Node> = Api::all(ctx.client.clone());
        let mut names: Vec<String> = nodes
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err("listing nodes"))?
            .items
            .iter()
            .map(|n| n.name_any())
            .collect();
        names.sort();
        if names.is_empty() {
            return Ok(Err(resolve::ResolveError::NoMatchingNode));
        }
        names
    } else {
        let zfs_nodes: Vec<ZfsNode> = ctx
            .zfs_nodes
            .state()
            .iter()
            .map(|n| (**n).clone())
            .collect();
        match resolve::default_nodes(spec, &zfs_nodes) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        }
    };
    let mut out = Vec::new();
    for n in names {
        let labels = if resolve::needs_node_labels(grants) {
            labels_of::<Node>(&ctx.client, &n).await?
        } else {
            Labels::new()
        };
        out.push((n, labels));
    }
    Ok(Ok(out))
}

/// Validation, nodes and grants: the checks before anything is touched.
pub async fn admissible(
    obj: &SnapshotSchedule,
    ctx: &Context,
    ns: &str,
) -> Result<Result<Vec<String>, Blocker>, ReconcileError> {
    let grants: Vec<DatasetGrant> = ctx.grants.state().iter().map(|g| (**g).clone()).collect();
    let nodes = match nodes_of(obj, ctx, &grants).await? {
        Ok(n) => n,
        Err(e) => {
            return Ok(Err(Blocker {
                reason: e.reason(),
                message: e.to_string(),
            }));
        }
    };
    let ns_labels = if resolve::needs_namespace_labels(&grants) {
        labels_of::<Namespace>(&ctx.client, ns).await?
    } else {
        Labels::new()
    };
    if let Err(e) = resolve::check_grants(&grants, &obj.spec, ns, &ns_labels, &nodes) {
        return Ok(Err(Blocker {
            reason: e.reason(),
            message: e.to_string(),
        }));
    }
    Ok(Ok(nodes.into_iter().map(|(n, _)| n).collect()))
}
