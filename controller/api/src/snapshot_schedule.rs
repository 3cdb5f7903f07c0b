//! `SnapshotSchedule`: take atomic snapshots of datasets on a schedule and prune them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{
    DatasetSelector, DeletionPolicy, LastError, NodeSelector, Retention, Schedule, Trigger, pattern,
};
use crate::condition::Condition;

/// Take snapshots of datasets on one or more nodes on a schedule, and prune them.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "tidepool.dev",
    version = "v1alpha1",
    kind = "SnapshotSchedule",
    namespaced,
    derive = "PartialEq",
    status = "SnapshotScheduleStatus",
    shortname = "tpss",
    category = "tidepool",
    doc = "Takes atomic ZFS snapshots of datasets on a schedule and prunes them by retention rules.",
    printcolumn(
        name = "Interval",
        type_ = "string",
        json_path = ".spec.schedule.interval"
    ),
    printcolumn(name = "Cron", type_ = "string", json_path = ".spec.schedule.cron"),
    printcolumn(
        name = "Suspended",
        type_ = "boolean",
        json_path = ".spec.suspend",
        priority = 1
    ),
    printcolumn(name = "Last", type_ = "date", json_path = ".status.lastSnapshotTime"),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextSnapshotTime"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.nodeName) && has(self.nodeSelector))").message("set at most one of nodeName and nodeSelector"))]
#[x_kube(validation = Rule::new("self.datasets.all(d, d.name.split('/')[0] == self.datasets[0].name.split('/')[0])").message("all datasets of one schedule must be in one pool: snapshots are atomic only within a pool"))]
pub struct SnapshotScheduleSpec {
    /// Run on this node only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = pattern::DNS_SUBDOMAIN))]
    pub node_name: Option<String>,
    /// Run on every node whose labels match. With neither this nor `nodeName`, run on every
    /// node whose agent reports the datasets' pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<NodeSelector>,
    /// The datasets to snapshot; on each node, all of them in one atomic call.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub datasets: Vec<DatasetSelector>,
    pub schedule: Schedule,
    /// Leave out to keep every snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    #[serde(default)]
    pub naming: Naming,
    /// Stop taking and pruning snapshots until set back to false.
    #[serde(default)]
    pub suspend: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// How snapshots are named: `<prefix>_<UTC time, basic ISO 8601>_<label>`, e.g.
/// `tidepool_20261122T093000Z_hourly`. Names sort by time; ownership is recorded in ZFS
/// user properties, not in the name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Naming {
    #[serde(default = "default_prefix")]
    #[schemars(regex(pattern = pattern::SNAPSHOT_PREFIX))]
    pub prefix: String,
    /// Defaults to the object's name (cut to 63 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = pattern::SNAPSHOT_LABEL))]
    pub label: Option<String>,
}

impl Default for Naming {
    fn default() -> Self {
        Self {
            prefix: default_prefix(),
            label: None,
        }
    }
}

fn default_prefix() -> String {
    "tidepool".to_owned()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotScheduleStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = crate::bounds::MAX_INT64))]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// When the newest snapshot was taken (on any node).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::bounds::lenient_optional_time"
    )]
    #[schemars(schema_with = "crate::bounds::optional_time")]
    pub last_snapshot_time: Option<Time>,
    /// The newest snapshot's short name (the part after `@`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot_name: Option<String>,
    /// When the next snapshot is due.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::bounds::lenient_optional_time"
    )]
    #[schemars(schema_with = "crate::bounds::optional_time")]
    pub next_snapshot_time: Option<Time>,
    /// The last `spec.trigger.manual` value that has been run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_manual_trigger: Option<String>,
    /// Bounded in the schema: the API server does not check `format: int32`, and a value
    /// beyond it would fail typed decoding of the whole list.
    #[serde(default)]
    #[schemars(range(min = 0, max = 2147483647))]
    pub consecutive_failures: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    /// One entry per node the schedule runs on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["node".into()]))]
    pub nodes: Vec<NodeSnapshotStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSnapshotStatus {
    pub node: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::bounds::lenient_optional_time"
    )]
    #[schemars(schema_with = "crate::bounds::optional_time")]
    pub last_snapshot_time: Option<Time>,
    /// How many snapshots this schedule owns on the node, over all its datasets.
    #[serde(default)]
    #[schemars(range(min = 0, max = crate::bounds::MAX_INT64))]
    pub snapshot_count: i64,
    /// Snapshots destroyed by retention since the object was created.
    #[serde(default)]
    #[schemars(range(min = 0, max = crate::bounds::MAX_INT64))]
    pub pruned_total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}
