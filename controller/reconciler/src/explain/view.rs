//! What `explain` answers: the planner's decisions for one object, as JSON. The `tidepool`
//! CLI reads the same types back.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tidepool_api::{DatasetName, PoolName, SnapshotName, SnapshotShortName};

/// The dry run for one object: what a reconcile now would do on each node, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The `now` the planner was asked about.
    pub now: Timestamp,
    /// Why nothing would be touched on any node (invalid spec, no grant, no node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Problem>,
    #[serde(default)]
    pub nodes: Vec<NodeExplanation>,
}

/// A reason (CamelCase, as in conditions) and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub reason: String,
    pub message: String,
}

/// One node's part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeExplanation {
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolName>,
    /// Why this node would fail now (nothing else is planned there then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
    #[serde(default)]
    pub suspended: bool,
    /// The snapshot a run now would take, if one is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take: Option<PlannedSnapshot>,
    /// The next slot after now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_due: Option<Timestamp>,
    /// Retention per dataset, counting the snapshot `take` would add. `None`: the spec has
    /// no retention, so every snapshot is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Vec<DatasetPlan>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedSnapshot {
    pub name: SnapshotShortName,
    /// `Scheduled`, `CatchUp`, `ManualTrigger`, `ManualTriggerAndScheduled`.
    pub reason: String,
    pub message: String,
    /// Taken in one atomic call.
    pub datasets: Vec<DatasetName>,
    /// Datasets that already have it (an earlier attempt got that far).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub already_taken: Vec<DatasetName>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetPlan {
    pub dataset: DatasetName,
    /// Oldest first, in the order they would be destroyed.
    pub destroy: Vec<PlannedDestroy>,
    /// Newest first.
    pub keep: Vec<PlannedKeep>,
    /// Snapshots of other owners (or none): never considered, never destroyed.
    pub not_owned: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedDestroy {
    pub snapshot: SnapshotName,
    pub guid: u64,
    pub created: Timestamp,
    /// `RetentionExpired`.
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedKeep {
    pub snapshot: SnapshotName,
    pub created: Timestamp,
    /// The rules and protections that keep it: `newest`, `keepLast`, `hourly`, `held`, ...
    pub reasons: Vec<String>,
    /// The snapshot `take` would add (not there yet).
    #[serde(default)]
    pub planned: bool,
}
