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
//! ([`inventory`]) that the controller fills from what the agents report. Every action
//! carries a reason, a bounded code plus a sentence, so status, events and logs can explain
//! each destroy and each send.

#![forbid(unsafe_code)]

pub mod inventory;
pub mod naming;
pub mod replication;
pub mod retention;
pub mod schedule;

pub use inventory::{BookmarkInfo, DatasetInventory, HoldInfo, ResumeToken, SnapshotInfo};
pub use naming::{NamePrecision, parse_snapshot_time, snapshot_name};
pub use replication::{ReplicationInput, ReplicationPlan};
pub use retention::{Protection, Protections, RetentionRules};
pub use schedule::{Run, RunReason, ScheduleDecision, ScheduleInput};
