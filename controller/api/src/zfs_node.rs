//! `ZfsNode`: what one node's agent found and offers. Written by agents, read by the
//! controller and by people.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::pattern;
use crate::condition::Condition;

/// The ZFS side of one Kubernetes node, published by the Tidepool agent running there.
/// Cluster-scoped and named after the node.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "tidepool.dev",
    version = "v1alpha1",
    kind = "ZfsNode",
    derive = "PartialEq",
    status = "ZfsNodeStatus",
    shortname = "tpnode",
    category = "tidepool",
    doc = "The ZFS pools, capabilities and agent endpoint of one node, published by its Tidepool agent.",
    printcolumn(name = "OpenZFS", type_ = "string", json_path = ".status.zfsVersion"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Pools", type_ = "string", json_path = ".status.pools[*].name"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Heartbeat",
        type_ = "date",
        json_path = ".status.heartbeatTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.nodeName == oldSelf.nodeName").message("nodeName is immutable"))]
pub struct ZfsNodeSpec {
    /// The Kubernetes node this describes (equal to the object's name).
    #[schemars(length(min = 1, max = 253), regex(pattern = pattern::DNS_SUBDOMAIN))]
    pub node_name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZfsNodeStatus {
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Userland OpenZFS version, e.g. `2.3.2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zfs_version: Option<String>,
    /// Kernel module version, when it differs from userland.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_module_version: Option<String>,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub pools: Vec<PoolStatus>,
    /// `host:port` of the agent's API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// SHA-256 of the agent's TLS certificate (DER), lowercase hex; clients pin it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9a-f]{64}$"))]
    pub tls_certificate_sha256: Option<String>,
    /// Dataset roots the agent's admin allowlist permits on this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_roots: Vec<String>,
    /// Agent version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Updated at a coarse interval (about a minute), not on every loop.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::bounds::lenient_optional_time"
    )]
    #[schemars(schema_with = "crate::bounds::optional_time")]
    pub heartbeat_time: Option<Time>,
}

/// What this node's OpenZFS release can do (the older of userland and kernel module
/// decides). What a pool can do is a separate fact: each pool's `capabilities`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// `zfs bookmark`, `zfs send -i pool/ds#mark` (0.6.4).
    #[serde(default)]
    pub bookmarks: bool,
    /// `zfs receive -s`, `receive_resume_token`, `zfs send -t` (0.7.0).
    #[serde(default)]
    pub resumable_receive: bool,
    /// Native encryption and raw sends, `zfs send -w` (0.8.0).
    #[serde(default)]
    pub raw_send: bool,
    /// Bookmarks copied from bookmarks, redacted sends, `zfs send --saved` (2.0.0).
    #[serde(default)]
    pub bookmark_copy: bool,
    /// `zfs list -j` / `zpool list -j` JSON output (2.3.0).
    #[serde(default)]
    pub json_output: bool,
}

/// What one pool can do: its feature flags (`zpool get feature@...`) as enabled or active
/// on that pool. These are pool facts, not release facts: a pool created with `-d` or
/// imported from an older system lacks features the software has, and the planner plans
/// only what both pools of a replication allow.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolCapabilities {
    /// `feature@bookmarks`: bookmarks can be made on this pool.
    #[serde(default)]
    pub bookmarks: bool,
    /// `feature@bookmark_v2`: bookmarks of encrypted datasets and redaction bookmarks.
    #[serde(default)]
    pub bookmark_v2: bool,
    /// `feature@encryption`: encrypted datasets, and so raw receives of encrypted streams.
    #[serde(default)]
    pub encryption: bool,
    /// `feature@large_blocks`: records above 128 KiB, so `send -L` streams land as sent.
    #[serde(default)]
    pub large_blocks: bool,
    /// `feature@embedded_data`: `send -e` streams can be received.
    #[serde(default)]
    pub embedded_data: bool,
    /// `feature@extensible_dataset`: needed by a resumable receive (`receive -s` keeps its
    /// state in the dataset).
    #[serde(default)]
    pub extensible_dataset: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    pub name: String,
    /// `ONLINE`, `DEGRADED`, `FAULTED`, ...
    pub health: String,
    #[schemars(range(min = 0, max = crate::bounds::MAX_INT64))]
    pub size_bytes: i64,
    #[schemars(range(min = 0, max = crate::bounds::MAX_INT64))]
    pub allocated_bytes: i64,
    #[schemars(range(min = 0, max = crate::bounds::MAX_INT64))]
    pub free_bytes: i64,
    #[serde(default)]
    pub capabilities: PoolCapabilities,
}
