//! What `explain` answers: the planner's decisions for one object, as JSON. The `tidepool`
//! CLI reads the same types back.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tidepool_api::values::HoldTag;
use tidepool_api::{BookmarkName, DatasetName, Owner, PoolName, SnapshotName, SnapshotShortName};
use tidepool_plan::retention::DatasetRetention;

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
    /// A SnapshotSchedule's nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeExplanation>,
    /// A ReplicationPolicy's sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationExplanation>,
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

impl DatasetPlan {
    /// The view of retention's plan; `planned`: the GUID standing for a snapshot not taken
    /// yet, if any.
    pub(crate) fn of(p: &DatasetRetention<'_>, owner: &Owner, planned: Option<u64>) -> Self {
        let full = |name| p.dataset.snapshot(name).ok();
        DatasetPlan {
            dataset: p.dataset.clone(),
            destroy: p
                .destroy
                .iter()
                .filter_map(|d| {
                    Some(PlannedDestroy {
                        snapshot: full(&d.snapshot.name)?,
                        guid: d.snapshot.guid,
                        created: d.snapshot.creation,
                        reason: d.reason.as_str().to_owned(),
                        message: d.message(owner),
                    })
                })
                .collect(),
            keep: p
                .keep
                .iter()
                .filter_map(|k| {
                    Some(PlannedKeep {
                        snapshot: full(&k.snapshot.name)?,
                        created: k.snapshot.creation,
                        reasons: k
                            .reasons
                            .to_string()
                            .split(", ")
                            .map(str::to_owned)
                            .collect(),
                        planned: Some(k.snapshot.guid) == planned,
                    })
                })
                .collect(),
            not_owned: p.not_owned,
        }
    }
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

/// A ReplicationPolicy's dry run: the steps the planner would have the agents run now, in
/// order, from fresh inventories of both ends, and the target's retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationExplanation {
    pub source: ReplicationEnd,
    /// `None` for a target kind this version does not serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ReplicationEnd>,
    /// `spec.suspend`: a reconcile sends and destroys nothing; the steps are what it would
    /// do once resumed.
    #[serde(default)]
    pub suspended: bool,
    /// The newest snapshot both ends have (by GUID): the base of the next incremental and
    /// never destroyed by the target's retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_common: Option<CommonSnapshot>,
    /// How the target differs from the source, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<PlannedDivergence>,
    /// In order; a reconcile stops at the first failure and plans again. Empty: up to
    /// date (or blocked).
    #[serde(default)]
    pub steps: Vec<PlannedStep>,
    /// Retention on the target over the policy's own snapshots. `None`: no retention in
    /// the spec, or a blocked plan (nothing is destroyed then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_retention: Option<TargetRetention>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationEnd {
    pub node: String,
    pub dataset: DatasetName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommonSnapshot {
    pub name: SnapshotShortName,
    pub guid: u64,
    pub created: Timestamp,
    /// False when the source keeps only a bookmark of it.
    pub on_source: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedDivergence {
    /// `NoCommonSnapshot`, `SnapshotsAfterCommon`, `ModifiedSinceCommon`.
    pub kind: String,
    pub message: String,
    /// The target's snapshots newer than the common one (up to five, newest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub newer: Vec<SnapshotShortName>,
    /// Bytes written to the target since the common snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<u64>,
}

/// One step of the plan and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStep {
    #[serde(flatten)]
    pub action: PlannedAction,
    /// The planner's reason code (`Incremental`, `ProtectCommon`, ...).
    pub reason: String,
    pub message: String,
    /// After a send succeeds: what protects the new common snapshot, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<PlannedStep>,
}

/// What a step does, and on which end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all_fields = "camelCase")]
pub enum PlannedAction {
    /// `zfs send <snapshot>` into a target that does not exist.
    FullSend { snapshot: SnapshotName },
    /// `zfs send -I|-i <base> <to>`.
    IncrementalSend {
        base: SendBase,
        to: SnapshotName,
        /// `-I` (the snapshots in between too) rather than `-i`.
        intermediates: bool,
    },
    /// `zfs send -t <token>`: resumes an interrupted receive.
    ResumeSend {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_guid: Option<u64>,
    },
    /// `zfs receive -A` on the target: discards a stale partial receive.
    AbortReceive { dataset: DatasetName },
    /// `zfs rename` of a diverged target aside.
    RotateAside { from: DatasetName, to: DatasetName },
    Hold {
        side: Side,
        snapshot: SnapshotName,
        tag: HoldTag,
    },
    Release {
        side: Side,
        snapshot: SnapshotName,
        tag: HoldTag,
    },
    /// On the source.
    Bookmark {
        snapshot: SnapshotName,
        bookmark: BookmarkName,
    },
    /// On the source: this policy's superseded bookmark.
    DestroyBookmark { bookmark: BookmarkName },
    /// Records the policy as owner of received snapshots on the target.
    Claim { snapshots: Vec<SnapshotName> },
}

/// The base of an incremental send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SendBase {
    Snapshot(SnapshotName),
    Bookmark(BookmarkName),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Side {
    Source,
    Target,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRetention {
    /// The reconcile prunes only once nothing is left to send: with steps planned it
    /// prunes after them, over what they leave (the snapshots they bring count then).
    pub after_steps: bool,
    #[serde(flatten)]
    pub plan: DatasetPlan,
}
