//! Tidepool's planner: pure decisions, values in and values out.
//!
//! - [`schedule`]: when a schedule runs (intervals down to milliseconds, cron in an IANA time
//!   zone across DST, jitter, suspend, manual triggers, one catch-up after downtime).
//! - [`retention`]: which owned snapshots retention destroys, never a protected one.
//! - [`replication`]: what one replication step sends (full, `-i`/`-I`, from a bookmark,
//!   resume or abort a token, raw), how divergence is handled, and which holds and
//!   bookmarks protect the newest common snapshot.
//! - [`naming`]: the time-sortable snapshot names.
//!
//! No clock (`now` is a parameter), no I/O, no async runtime. Inventories are plain values
//! ([`inventory`], from the wire crate) that the agents report. Every action
//! carries a reason, a bounded code plus a sentence, so status, events and logs can explain
//! each destroy and each send.
//!
//! The controller's side of the contract (the simulation in `replication/tests.rs` plays
//! it):
//! - Plan again from fresh inventories after every step that changed something; the
//!   anchor steps (holds, bookmarks, releases) are derived from what the inventories show,
//!   so a lost follow-up step is repaired by the next plan.
//! - Run retention with [`Protections`] built from a replication plan made from the
//!   current inventories ([`ReplicationPlan::protect`]) and from the transfers under way
//!   ([`replication::SendStep::protect_in_flight`]), on the source and on the target.
//! - Echo [`Run::manual_token`] to `status.lastManualTrigger` once a manual run is done,
//!   and pass the time in the newest owned snapshot's name as
//!   [`ScheduleInput::last_run`].

#![forbid(unsafe_code)]

/// The inventory types are the wire crate's: the agent reports them, the planner reads them.
pub use tidepool_wire::inventory;
pub mod naming;
pub mod replication;
pub mod retention;
pub mod schedule;

pub use inventory::{BookmarkInfo, DatasetInventory, HoldInfo, PartialReceive, SnapshotInfo};
pub use naming::{NamePrecision, parse_snapshot_time, snapshot_name};
pub use replication::{ReplicationInput, ReplicationPlan};
pub use retention::{Protection, Protections, RetentionRules};
pub use schedule::{Run, RunReason, ScheduleDecision, ScheduleInput};
