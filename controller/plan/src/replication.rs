//! What one replication step does, from the source and target inventories.
//!
//! Snapshots are matched by GUID, never by name. Rules (each has a test):
//! - An encrypted source is sent raw; with `send.raw: false` it is refused, so no target
//!   ever holds plaintext of an encrypted source.
//! - A resume token on the target is resumed (`zfs send -t`), unless it is stale: the last
//!   resume of this very token failed, or what it decodes to no longer fits (its snapshot or
//!   base is gone, or its raw flag differs from the planned one). A stale token is aborted
//!   (`zfs receive -A`, which discards only the partial stream, never received snapshots)
//!   and the step is planned again as if it had never been there.
//! - No target dataset: a full send (the oldest selected snapshot and then `-I` to the newest
//!   when intermediates are wanted, the newest alone otherwise).
//! - A common snapshot: an incremental from the newest one, `-I` to carry intermediates or
//!   `-i` to skip them. When the source has destroyed that snapshot but kept a bookmark of
//!   it, from the bookmark (`-i #bookmark`, then `-I` onwards when intermediates are wanted).
//! - Divergence: the target has snapshots newer than the newest common one, or none in
//!   common while it exists, or was written to since the common one (`written > 0`). It is
//!   reported. With `onDivergence: Fail` nothing is planned; with `Rotate` the target is
//!   renamed aside (`<dataset>-diverged-<UTC time>`) and a full send starts a new replica.
//! - No `zfs receive -F`, ever: [`ReceiveOptions`] has no way to say it. A full stream is
//!   only received where no dataset exists. Every receive is unmounted (`-u`) and excludes
//!   Tidepool's own properties; a policy's `-o`/`-x` pass the receive allowlist
//!   ([`tidepool_api::receive_property`]) or nothing is planned
//!   ([`BlockedCode::InvalidReceiveProperties`]).
//! - The newest common snapshot is held on both sides and bookmarked on the source, per
//!   policy; after a newer one takes its place the previous holds are released and the
//!   superseded bookmarks of this policy destroyed. These anchor steps are planned from
//!   what the inventories show (what the receiver actually committed), every time, so an
//!   interrupted bookkeeping step is repaired by the next plan.

//!
//! Files: [`types`] (what a plan is made of), [`names`] (tags, bookmarks, rotation),
//! `common` (the newest common snapshot), `planner` (the steps), `anchors` (holds,
//! bookmarks, releases, claims).

mod anchors;
mod common;
pub mod names;
mod planner;
pub mod types;

pub use names::{bookmark_name, bookmark_suffix, hold_tag, rotated_name};
pub use planner::plan;
pub use tidepool_wire::{ReceiveOptions, SendFlags};
pub use types::*;

#[cfg(test)]
mod tests;
