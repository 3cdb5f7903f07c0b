//! The vocabulary the agent and the controller share (DESIGN.md, layer 4): what an agent
//! reports of its pools ([`inventory`]), what a replication step asks of send and
//! receive ([`send`]), and, as they are written, the typed operations it
//! accepts and their results. The planner reads the same inventory types and the zfs layer
//! builds them from listings, so nothing is re-parsed or re-checked between the layers.
//!
//! Values only (serde, no I/O, no async runtime). Wire formats decode leniently where a
//! newer peer may add fields: unknown fields are ignored, never an error.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod inventory;
pub mod send;

pub use inventory::{BookmarkInfo, DatasetInventory, HoldInfo, PartialReceive, SnapshotInfo};
pub use send::{ReceiveOptions, ReceiveOptionsError, SendFlags};
