//! Tidepool's `tidepool.dev/v1alpha1` API: the custom resources, their validation, typed
//! ZFS names and status-condition helpers.
//!
//! This crate does no I/O and has no async runtime: it is the vocabulary every other layer
//! shares. Validation lives in two places that agree: the generated CRD schema (patterns,
//! ranges, CEL rules, checked by the API server at admission) and the Rust parsers of the
//! value types (checked again by the agent). Where a parser is stricter than its schema the
//! wire type is [`Lenient`], so an admitted object always decodes; [`validation`] is what
//! the acting code calls.

#![forbid(unsafe_code)]
// kube's `printcolumn(name = .., type_ = ..)` repeats argument names across columns, which
// clippy reads as duplicated attributes.
#![allow(clippy::duplicated_attributes)]
// Tests state their expectations with unwrap; a failure there is the test failing.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bounds;
pub mod common;
pub mod condition;
pub mod crds;
pub mod cron;
pub mod dataset_grant;
pub mod duration;
pub mod lenient;
pub mod names;
pub mod owner;
pub mod receive_property;
pub mod replication_policy;
pub mod snapshot_schedule;
pub mod validation;
pub mod values;
pub mod zfs_node;

pub use common::{DatasetSelector, DeletionPolicy, LastError, Retention, Schedule, Trigger};
pub use condition::Condition;
pub use cron::CronExpression;
pub use dataset_grant::{Access, DatasetGrant, DatasetGrantSpec};
pub use duration::HumanDuration;
pub use lenient::Lenient;
pub use names::{BookmarkName, DatasetName, NameError, PoolName, SnapshotName, SnapshotShortName};
pub use owner::{Owner, OwnerError, OwnerKind};
pub use receive_property::{ExcludedProperty, ReceiveProperty, ReceivePropertyError};
pub use replication_policy::{OnDivergence, ReplicationPolicy, ReplicationPolicySpec};
pub use snapshot_schedule::{SnapshotSchedule, SnapshotScheduleSpec};
pub use validation::{
    Cadence, SpecError, SpecProblem, ValidReplicationPolicy, ValidSchedule, ValidSnapshotSchedule,
};
pub use values::{HoldTag, PropertyName, PropertyValue, ResumeToken, ValueError};
pub use zfs_node::{Capabilities, PoolCapabilities, ZfsNode, ZfsNodeSpec};

/// The API group.
pub const GROUP: &str = "tidepool.dev";
/// The ZFS user property that records which object owns a snapshot ([`Owner`]:
/// `<Kind>/<namespace>/<name>`). It counts only where set locally on the snapshot.
pub const OWNER_PROPERTY: &str = "tidepool.dev:owner";
/// The ZFS user property a restore drill sets locally on its scratch dataset as it receives
/// it (the drill's owner): the only mark that lets Tidepool destroy a dataset.
pub const DRILL_PROPERTY: &str = "tidepool.dev:drill";
/// The last name component of a restore drill's scratch dataset starts with this.
pub const SCRATCH_PREFIX: &str = "tidepool-drill-";
