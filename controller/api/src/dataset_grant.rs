//! `DatasetGrant`: the cluster admin's grant of dataset roots to namespaces.
//!
//! `SnapshotSchedule` and `ReplicationPolicy` are namespaced, yet they make root run `zfs`
//! on nodes. A namespaced object may touch a dataset only if some grant names its namespace,
//! a root that contains the dataset, the node it runs on, and the kind of access. The agent
//! enforces its own allowlist of roots on top, whatever the controller asks.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{NodeSelector, pattern};
use crate::condition::Condition;
use crate::names::DatasetName;

/// Grants namespaces access to datasets under some roots, on some nodes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "tidepool.dev",
    version = "v1alpha1",
    kind = "DatasetGrant",
    derive = "PartialEq",
    status = "DatasetGrantStatus",
    shortname = "tpgrant",
    category = "tidepool",
    doc = "Grants namespaces access to ZFS datasets under some roots, on some nodes (cluster admin only).",
    printcolumn(name = "Namespaces", type_ = "string", json_path = ".spec.namespaces"),
    printcolumn(name = "Roots", type_ = "string", json_path = ".spec.datasets"),
    printcolumn(name = "Access", type_ = "string", json_path = ".spec.access"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.namespaces) && size(self.namespaces) > 0) || has(self.namespaceSelector)").message("name at least one namespace or set namespaceSelector"))]
pub struct DatasetGrantSpec {
    /// Namespaces granted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(
            length(min = 1, max = 63),
            regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        )
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub namespaces: Vec<String>,
    /// Namespaces granted by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Dataset roots: each dataset at or below one of these is granted.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub datasets: Vec<DatasetName>,
    /// Nodes the grant applies to, by name. With neither this nor `nodeSelector`: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 253), regex(pattern = pattern::DNS_SUBDOMAIN)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub node_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<NodeSelector>,
    /// What the namespaces may do there.
    #[serde(default = "all_access")]
    #[schemars(length(min = 1, max = 3))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub access: Vec<Access>,
}

/// A kind of access to granted datasets.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum Access {
    /// Take snapshots and prune the ones Tidepool took (SnapshotSchedule).
    Snapshot,
    /// Be the source of a replication (ReplicationPolicy source).
    Send,
    /// Be the target of a replication: receive into, prune replicated snapshots, and rotate
    /// a diverged replica aside (ReplicationPolicy target).
    Receive,
}

fn all_access() -> Vec<Access> {
    vec![Access::Snapshot, Access::Send, Access::Receive]
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetGrantStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = crate::bounds::MAX_INT64))]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
