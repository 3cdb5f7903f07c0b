//! The agent's own `ZfsNode`: created with server-side apply under the agent's field
//! manager, its status applied at each heartbeat (about once a minute, not every loop).
//! The API server lets an agent write only the ZfsNode of the node its Pod-bound token
//! names (the chart's admission policy), so this is the node's trust root for endpoint and
//! fingerprint.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tidepool_agent::{AgentMetrics, CertificateFingerprint, DatasetRoots, NodeZfs};
use tidepool_api::Condition;
use tidepool_api::zfs_node::{Capabilities, PoolStatus, ZfsNode, ZfsNodeStatus};
use tidepool_zfs::{Executor, InventoryError, Zfs, ZfsVersion};

/// The field manager of every agent write.
pub const FIELD_MANAGER: &str = "tidepool-agent";

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("applying ZfsNode {node}")]
    Apply {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading pools")]
    Pools(#[source] InventoryError),
}

/// What stays the same between heartbeats.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub node_name: String,
    pub endpoint: String,
    pub fingerprint: CertificateFingerprint,
    pub roots: DatasetRoots,
    pub version: ZfsVersion,
}

impl NodeFacts {
    fn capabilities(&self) -> Capabilities {
        self.version.capabilities()
    }
}

/// Health, space and features of each pool the agent publishes.
pub async fn pool_statuses<E: Executor>(
    zfs: &Zfs<E>,
    node: &NodeZfs,
    metrics: &AgentMetrics,
) -> Result<Vec<PoolStatus>, PublishError> {
    let entries = zfs
        .pools(node.pools())
        .await
        .map_err(|e| PublishError::Pools(e.into()))?;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Some(pool) = node.pools().iter().find(|p| p.as_str() == e.name.as_str()) else {
            continue;
        };
        let capabilities = zfs
            .pool_capabilities(pool)
            .await
            .map_err(PublishError::Pools)?;
        metrics
            .pool_free_bytes
            .with_label_values(&[pool.as_str()])
            .set(i64::try_from(e.free).unwrap_or(i64::MAX));
        metrics
            .pool_size_bytes
            .with_label_values(&[pool.as_str()])
            .set(i64::try_from(e.size).unwrap_or(i64::MAX));
        let bytes = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        out.push(PoolStatus {
            name: pool.as_str().to_owned(),
            health: e.health.to_string(),
            size_bytes: bytes(e.size),
            allocated_bytes: bytes(e.allocated),
            free_bytes: bytes(e.free),
            capabilities,
        });
    }
    Ok(out)
}

/// The status of one heartbeat. `ready_since` keeps the Ready condition's transition time
/// stable across heartbeats.
pub fn status(
    facts: &NodeFacts,
    pools: Vec<PoolStatus>,
    now: jiff::Timestamp,
    ready_since: jiff::Timestamp,
) -> ZfsNodeStatus {
    let missing = !facts.roots.as_slice().is_empty() && pools.is_empty();
    let (status, reason, message) = if missing {
        (
            "False",
            "NoPools",
            "none of the configured pools is imported".to_owned(),
        )
    } else {
        (
            "True",
            "Serving",
            format!("serving {} pool(s)", pools.len()),
        )
    };
    ZfsNodeStatus {
        conditions: vec![Condition {
            type_: "Ready".to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time: Time(ready_since),
            observed_generation: None,
        }],
        zfs_version: Some(facts.version.userland.to_string()),
        kernel_module_version: facts
            .version
            .kernel
            .filter(|k| *k != facts.version.userland)
            .map(|k| k.to_string()),
        capabilities: facts.capabilities(),
        pools,
        endpoint: Some(facts.endpoint.clone()),
        tls_certificate_sha256: Some(facts.fingerprint.to_string()),
        allowed_roots: facts
            .roots
            .as_slice()
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        heartbeat_time: Some(Time(now)),
    }
}

/// Applies the object (spec) and then its status.
pub async fn publish(
    api: &Api<ZfsNode>,
    node_name: &str,
    status: &ZfsNodeStatus,
) -> Result<(), PublishError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let apply_err = |source| PublishError::Apply {
        node: node_name.to_owned(),
        source,
    };
    let object = json!({
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "ZfsNode",
        "metadata": { "name": node_name },
        "spec": { "nodeName": node_name },
    });
    api.patch(node_name, &params, &Patch::Apply(&object))
        .await
        .map_err(apply_err)?;
    let status_patch = json!({
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "ZfsNode",
        "metadata": { "name": node_name },
        "status": status,
    });
    api.patch_status(node_name, &params, &Patch::Apply(&status_patch))
        .await
        .map_err(apply_err)?;
    Ok(())
}
