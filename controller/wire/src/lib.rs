//! The vocabulary the agent and the controller share (DESIGN.md, layer 4): what an agent
//! reports of its pools ([`pool`], [`inventory`]), what a replication step asks of send and
//! receive ([`send`]), and the typed operations it accepts and their results
//! ([`operation`]), and how a replication stream is brokered between two agents
//! ([`transfer`]). The planner reads the same inventory types and the zfs layer builds
//! them from listings, so nothing is re-parsed or re-checked between the layers.
//!
//! Values only (serde, no I/O, no async runtime). Wire formats decode leniently where a
//! newer peer may add fields: unknown fields are ignored, never an error.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bookkeeping;
pub mod fingerprint;
pub mod inventory;
pub mod objstore;
pub mod operation;
pub mod pool;
pub mod send;
pub mod ssh;
pub mod transfer;

pub use bookkeeping::{Bookkeeping, BookkeepingAction, Bookkept};
pub use fingerprint::CertificateFingerprint;
pub use inventory::{
    BookmarkInfo, DatasetInventory, HoldInfo, PartialReceive, SnapshotInfo, UnnamedSnapshot,
};
pub use operation::{
    DestroySnapshots, InventoryAnswer, InventoryGeneration, InventoryRequest, OperationError,
    Owner, RefusalReason, RefusedDestroy, Request, RequestError, Response, SetCreated, SnapshotRef,
    SnapshotsDestroyed, SnapshotsTaken, TakeSnapshots,
};
pub use pool::{PoolHealth, PoolInventory};
pub use send::{ReceiveOptions, ReceiveOptionsError, SendFlags};
pub use ssh::{RemoteOperation, RemoteRequest, SendToSsh, SshAccess};
/// What a pool can do is published in the `ZfsNode` status too, so its type is the api
/// crate's; the agent reports it here with each pool.
pub use tidepool_api::PoolCapabilities;

#[cfg(test)]
mod tests;
