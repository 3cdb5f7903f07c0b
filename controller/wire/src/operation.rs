//! The typed operations an agent accepts from the controller, and their results. Narrow on
//! purpose (DESIGN.md: typed operations, never "run this command"): each request names
//! exactly what may change, and the agent checks it again against a fresh read of its
//! pool before acting.
//!
//! Decoding is lenient where a newer peer may add something: unknown fields are ignored.
//! An unknown operation is an error the agent answers with, not a crash.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tidepool_api::{DatasetName, PoolName, SnapshotName, SnapshotShortName};

use crate::pool::PoolInventory;

/// The object that owns a snapshot, as recorded in `tidepool.dev:owner`: the api crate's
/// typed owner (`<Kind>/<namespace>/<name>`), the same type [`crate::SnapshotInfo::owner`]
/// holds.
pub use tidepool_api::Owner;

/// One request to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    TakeSnapshots(TakeSnapshots),
    DestroySnapshots(DestroySnapshots),
    Inventory(InventoryRequest),
    Bookkeeping(crate::bookkeeping::Bookkeeping),
    /// One of the above on a far host, through this (the source) agent's SSH client.
    Remote(crate::ssh::RemoteRequest),
}

/// `zfs snapshot -o tidepool.dev:owner=<owner> a@<short> b@<short> ...`: one atomic
/// transaction, so every dataset must be in one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TakeSnapshots {
    pub datasets: Vec<DatasetName>,
    /// The part after `@`, the same for every dataset.
    pub short_name: SnapshotShortName,
    pub owner: Owner,
    /// The schedule slot this run stands for (absent for a manual run), so the agent can
    /// measure lateness from the slot to the moment `zfs snapshot` returned. Defaulted and
    /// omitted when absent: requests of controllers before it still decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<jiff::Timestamp>,
}

impl TakeSnapshots {
    /// The pool the snapshots are taken in, once the request is one the agent can run.
    pub fn check(&self) -> Result<PoolName, RequestError> {
        let mut seen = BTreeSet::new();
        for d in &self.datasets {
            if !seen.insert(d) {
                return Err(RequestError::Duplicate {
                    name: d.to_string(),
                });
            }
        }
        one_pool(self.datasets.iter().map(DatasetName::pool))
    }

    /// The snapshot names this request creates.
    pub fn snapshots(&self) -> Result<Vec<SnapshotName>, tidepool_api::NameError> {
        self.datasets
            .iter()
            .map(|d| d.snapshot(&self.short_name))
            .collect()
    }
}

/// A snapshot named together with the GUID the controller saw: a snapshot destroyed and
/// taken again under the same name (by someone else) has another GUID, and is not the one
/// the plan meant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRef {
    pub snapshot: SnapshotName,
    pub guid: u64,
}

/// Destroy snapshots the owner owns. The agent destroys a snapshot only if, in a fresh
/// read, it still has this GUID and its `tidepool.dev:owner` is set locally on it to
/// exactly this owner; every other one is refused and reported, never destroyed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestroySnapshots {
    pub snapshots: Vec<SnapshotRef>,
    pub owner: Owner,
    /// The owner's snapshots that the caller's plan keeps on the datasets it destroys on:
    /// what justifies the destroys (retention lets the oldest go because these stay). When
    /// one of them is gone, has another GUID or is no longer the owner's, the plan was made
    /// from a view that no longer holds, and nothing on that dataset is destroyed
    /// ([`RefusalReason::KeptGone`]). Empty: no such check (deleting an object destroys
    /// all it owns, whatever else exists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keeping: Vec<SnapshotRef>,
}

impl DestroySnapshots {
    /// The pool of the snapshots, once the request is one the agent can run.
    pub fn check(&self) -> Result<PoolName, RequestError> {
        let mut seen = BTreeSet::new();
        for s in &self.snapshots {
            if !seen.insert(&s.snapshot) {
                return Err(RequestError::Duplicate {
                    name: s.snapshot.to_string(),
                });
            }
        }
        one_pool(self.snapshots.iter().map(|s| s.snapshot.dataset().pool()))
    }
}

/// Ask for a pool's inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryRequest {
    pub pool: PoolName,
    /// The generation of an inventory the caller already holds: when the agent knows the
    /// pool has not changed since, it answers [`InventoryAnswer::Unchanged`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<InventoryGeneration>,
}

/// An agent's label for one state of a pool's inventory. Opaque to the controller: equal
/// means unchanged, nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InventoryGeneration(pub u64);

fn one_pool(mut pools: impl Iterator<Item = PoolName>) -> Result<PoolName, RequestError> {
    let first = pools.next().ok_or(RequestError::Empty)?;
    for p in pools {
        if p != first {
            return Err(RequestError::SpansPools {
                first: first.clone(),
                other: p,
            });
        }
    }
    Ok(first)
}

/// Why a request was refused before anything ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "camelCase")]
pub enum RequestError {
    #[error("the request names nothing")]
    Empty,
    #[error("{name} is named twice")]
    Duplicate { name: String },
    /// `zfs snapshot` is atomic only within one pool; a batch is one node's one pool.
    #[error("the request spans pools {first} and {other}; one request is one pool")]
    SpansPools { first: PoolName, other: PoolName },
    #[error("{dataset} is outside the dataset roots this agent may touch")]
    OutsideAllowedRoots { dataset: DatasetName },
    #[error("pool {pool} is not imported on this node")]
    UnknownPool { pool: PoolName },
}

/// One answer from an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Response {
    SnapshotsTaken(SnapshotsTaken),
    SnapshotsDestroyed(SnapshotsDestroyed),
    Inventory(InventoryAnswer),
    Bookkept(crate::bookkeeping::Bookkept),
    Failed(OperationError),
}

/// The snapshots [`TakeSnapshots`] made, with the GUIDs read back after the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotsTaken {
    pub snapshots: Vec<SnapshotRef>,
    /// The set's `createtxg` and `creation`, one for all (one atomic `zfs snapshot` is one
    /// transaction group), so the caller can add the set to the inventory it holds instead
    /// of listing the pool again. Absent from agents before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<SetCreated>,
}

/// When one atomic snapshot set was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetCreated {
    pub createtxg: u64,
    pub creation: jiff::Timestamp,
}

/// What [`DestroySnapshots`] did with each snapshot it named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotsDestroyed {
    pub destroyed: Vec<SnapshotRef>,
    #[serde(default)]
    pub refused: Vec<RefusedDestroy>,
}

/// A snapshot the agent did not destroy, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedDestroy {
    pub snapshot: SnapshotRef,
    pub reason: RefusalReason,
}

/// Why a snapshot named in [`DestroySnapshots`] was left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "camelCase")]
pub enum RefusalReason {
    /// No snapshot of that name exists any more (already destroyed: nothing to do).
    Gone,
    /// The name now belongs to another snapshot.
    GuidChanged { found: u64 },
    /// Its `tidepool.dev:owner` is not set locally to the requesting owner (unset,
    /// inherited, received, or another owner's).
    NotOwned {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        found: Option<Owner>,
    },
    /// Someone holds it (`zfs hold`); it stays until released.
    Held,
    /// A snapshot the plan keeps on the same dataset (in [`DestroySnapshots::keeping`]) is
    /// gone, has another GUID or is no longer the owner's: the plan that chose this one was
    /// made from a stale view. Plan again from a fresh inventory.
    KeptGone { kept: SnapshotRef },
}

/// The answer to [`InventoryRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum InventoryAnswer {
    Full {
        generation: InventoryGeneration,
        inventory: PoolInventory,
    },
    Unchanged {
        generation: InventoryGeneration,
    },
}

/// Why an operation failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "camelCase")]
pub enum OperationError {
    #[error("invalid request: {0}")]
    InvalidRequest(RequestError),
    /// A zfs command failed. `kind` is the zfs layer's bounded error code (`NotFound`,
    /// `Busy`, ...); a code this version does not know is kept as sent.
    #[error("zfs failed ({kind}): {message}")]
    Zfs { kind: String, message: String },
    /// The agent could not read back what it had just done (the operation may have
    /// happened: plan again from a fresh inventory).
    #[error("the outcome is unknown: {message}")]
    Unknown { message: String },
}
