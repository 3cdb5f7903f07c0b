//! Tidepool's zfs layer: the only code that runs `zfs` and `zpool` (DESIGN.md, layer 3).
//!
//! - [`cmd`]: typed commands built as argv from the strict names of
//!   [`tidepool_api::names`]; never a shell string.
//! - [`exec`]: the [`Executor`] seam that starts an argv with piped stdio. Production uses
//!   [`LocalExecutor`]; the conformance tests run the same code against real OpenZFS 2.3 in
//!   a VM.
//! - [`parse`]: strict, streaming parsers for the `-H -p` outputs (fixed columns, checked
//!   column count, `-` handled explicitly; names as zfs prints them, see [`ZfsObjectName`]).
//! - [`error`]: failures keep argv, exit status and stderr, classified into [`ErrorKind`].
//! - [`stream`]: `zfs send` as an `AsyncRead`, `zfs receive` as an `AsyncWrite`, each with
//!   byte-count [`Progress`], and [`pipe`] to join them.
//! - [`Zfs`]: all of the above behind one async API.
//!
//! Not offered on purpose: `zfs receive -F`, recursive destroy. Both can destroy data that
//! exists only on one side; DESIGN.md forbids Tidepool from doing that.
//!
//! Proof and figures:
//! - `cargo test -p tidepool-zfs`: argv builders, parsers and the classifier, against
//!   output captured from real OpenZFS 2.3 (`tests/fixtures/`, every error class included).
//! - `cargo test -p tidepool-tests --test zfs_conformance -- --nocapture`: every command
//!   run through this crate against OpenZFS 2.3 in the test VM, effects checked with fresh
//!   reads (the suite also regenerates the fixtures, see its module doc).
//! - `cargo bench -p tidepool-zfs`: a 1,000,000-line snapshot listing parsed through
//!   [`Zfs::list`]'s streaming path, lines/s and peak memory next to a naive baseline.

#![forbid(unsafe_code)]
// Tests state their expectations with unwrap; a failure there is the test failing.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod client;
pub mod cmd;
pub mod error;
pub mod exec;
pub mod features;
pub mod inventory;
pub mod name;
pub mod parse;
pub mod scratch;
pub mod ssh;
pub mod stream;

pub use client::{CommandKind, Timeouts, Zfs};
pub use cmd::{BookmarkSource, Depth, ListRequest, ObjectTypes, SendBase, SendRequest};
pub use error::{CommandFailure, ErrorKind, RequestError, ZfsError, classify};
pub use exec::{Argv, COMMAND_ENV, Executor, ExitStatus, LocalExecutor, Process, Spawned};
pub use features::{FeatureError, POOL_FEATURES};
pub use inventory::{EntryError, Inventories, InventoryBuilder, InventoryError, OwnerInterner};
pub use name::{ZfsObjectName, ZfsTarget};
// The value vocabularies are the api crate's (one type per concept across the layers);
// re-exported because every caller of this crate names them.
pub use parse::{
    DestroyEstimate, Hold, Inventory, LineError, ListEntry, ListParser, ObjectType, PoolEntry,
    PoolHealth, PropertyEntry, PropertySource, ResumeTokenContents, SendEstimate, SendEstimateItem,
    Version, ZfsVersion,
};
pub use scratch::{SCRATCH_PREFIX, Scratch, ScratchRefused};
pub use ssh::{SshDestination, SshExecutor};
pub use stream::{Progress, ReceiveSink, SendStream, StreamLimits, StreamStalled, pipe};
pub use tidepool_api::values::{HoldTag, PropertyName, PropertyValue, ResumeToken, ValueError};
// What a replication step asks of send and receive is the wire crate's, shared with the
// planner; argv is built from it as it is.
pub use tidepool_wire::{ReceiveOptions, SendFlags};
