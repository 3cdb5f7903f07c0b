//! What an agent reports of a dataset, and what the planner is told: plain values, built by
//! the zfs layer from listings. The planner never asks for more.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tidepool_api::values::ResumeToken;
use tidepool_api::{DatasetName, Owner, SnapshotShortName};

/// One snapshot of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInfo {
    /// The part after `@`.
    pub name: SnapshotShortName,
    /// The snapshot's `guid`: the same on every pool that received it. Identity across
    /// source and target is decided by this, never by the name.
    pub guid: u64,
    /// The transaction group that created it: the order of snapshots within a dataset.
    pub createtxg: u64,
    /// The `creation` property.
    pub creation: Timestamp,
    /// The object that owns the snapshot: the `tidepool.dev:owner` user property, and ONLY
    /// when its source is `local`, i.e. set on the snapshot itself (by Tidepool's
    /// `zfs snapshot -o` or its own claim after a receive). A value inherited from the dataset
    /// or received in a stream is never a claim and is `None` here, as is a value that is not
    /// an [`Owner`] (`<Kind>/<namespace>/<name>`): retention never destroys such a snapshot.
    /// Builders share one [`Owner`] (an `Arc` inside) between the snapshots of one owner.
    /// Decoded leniently: an unknown value reads as `None`, never as an error.
    #[serde(default, deserialize_with = "tidepool_api::owner::deserialize_lenient")]
    pub owner: Option<Owner>,
    /// `userrefs > 0`: someone holds it, and `zfs destroy` would fail anyway.
    pub held: bool,
}

/// One bookmark of a dataset (`dataset#name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BookmarkInfo {
    /// The part after `#`.
    pub name: SnapshotShortName,
    /// The guid of the snapshot it was made from.
    pub guid: u64,
    pub createtxg: u64,
    pub creation: Timestamp,
}

/// A `zfs hold` tag on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldInfo {
    /// The snapshot's guid.
    pub guid: u64,
    pub tag: String,
}

/// An interrupted receive on a target: its resume token, with what `zfs send -nvt <token>`
/// decoded from it when the agent could decode it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartialReceive {
    /// `receive_resume_token`, checked as zfs prints it.
    pub token: ResumeToken,
    /// `toguid`: the snapshot the interrupted stream was sending.
    pub to_guid: Option<u64>,
    /// `fromguid`: the incremental base, absent for a full stream.
    pub from_guid: Option<u64>,
    /// Whether the interrupted stream was raw (`rawok`).
    pub raw: Option<bool>,
}

impl PartialReceive {
    /// A token the agent could not decode: only its text is known.
    pub fn opaque(token: ResumeToken) -> Self {
        Self {
            token,
            to_guid: None,
            from_guid: None,
            raw: None,
        }
    }
}

/// Everything the planner needs to know about one dataset on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetInventory {
    pub dataset: DatasetName,
    /// False when the dataset does not exist (a target before the first receive). The lists
    /// are then empty, except that an interrupted first receive leaves a resume token.
    pub exists: bool,
    /// In any order; the planner orders them by `createtxg`.
    pub snapshots: Vec<SnapshotInfo>,
    pub bookmarks: Vec<BookmarkInfo>,
    /// Hold tags, for the snapshots that have holds (may be empty when not listed).
    pub holds: Vec<HoldInfo>,
    /// The `written` property: bytes written to the dataset since its newest snapshot.
    pub written_since_newest: u64,
    /// `receive_resume_token`, when a resumable receive was interrupted.
    pub receive_resume_token: Option<PartialReceive>,
    /// `encryption` is not `off`.
    pub encrypted: bool,
    /// Snapshots whose names Tidepool's strict names refuse (OpenZFS allows spaces, for
    /// example; such names arrive in streams from other hosts). Never destroyed or claimed,
    /// but they are snapshots of the dataset: by GUID they still count for finding the
    /// common snapshot and for seeing divergence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unnamed_snapshots: Vec<UnnamedSnapshot>,
}

/// A snapshot whose name cannot be spelled as a [`SnapshotShortName`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnnamedSnapshot {
    /// The part after `@`, as zfs printed it.
    pub printed_name: String,
    pub guid: u64,
    pub createtxg: u64,
}

impl DatasetInventory {
    /// An inventory of a dataset that does not exist.
    pub fn absent(dataset: DatasetName) -> Self {
        Self {
            dataset,
            exists: false,
            snapshots: Vec::new(),
            bookmarks: Vec::new(),
            holds: Vec::new(),
            written_since_newest: 0,
            receive_resume_token: None,
            encrypted: false,
            unnamed_snapshots: Vec::new(),
        }
    }

    /// An existing dataset with these snapshots and nothing else.
    pub fn with_snapshots(dataset: DatasetName, snapshots: Vec<SnapshotInfo>) -> Self {
        Self {
            exists: true,
            snapshots,
            ..Self::absent(dataset)
        }
    }

    /// The newest snapshot by `createtxg`.
    pub fn newest_snapshot(&self) -> Option<&SnapshotInfo> {
        self.snapshots.iter().max_by_key(|s| s.createtxg)
    }

    pub fn snapshot_by_guid(&self, guid: u64) -> Option<&SnapshotInfo> {
        self.snapshots.iter().find(|s| s.guid == guid)
    }

    pub fn has_hold(&self, guid: u64, tag: &str) -> bool {
        self.holds.iter().any(|h| h.guid == guid && h.tag == tag)
    }
}
