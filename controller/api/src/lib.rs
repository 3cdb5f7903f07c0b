//! Tidepool's `tidepool.dev/v1alpha1` API: the custom resources, their validation, typed
//! ZFS names and status-condition helpers.
//!
//! This crate does no I/O and has no async runtime: it is the vocabulary every other layer
//! shares.

pub mod names;

pub use names::{BookmarkName, DatasetName, NameError, PoolName, SnapshotName, SnapshotShortName};
