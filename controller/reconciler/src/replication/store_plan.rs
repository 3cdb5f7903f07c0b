//! What one sync of an object-store target does, decided from values: the store's
//! listing (its streams with their manifests' GUIDs: a store has no holds, bookmarks or
//! GUID listing, so this is its whole inventory) and the source dataset's inventory.
//!
//! - The stream to upload is the newest snapshot the selection picks, when it is newer
//!   than the newest complete stream. Its kind comes from the chain policy
//!   ([`chain::next_stream`]): a full, or an incremental from the chain's full or newest
//!   stream. The incremental's base must still be on the source, as a snapshot or a
//!   bookmark with the parent's GUID (from the manifest); when it is not, a full is sent.
//! - The store cannot hold, so the source keeps what the next incremental needs: the
//!   newest stored snapshot and the chain's base (its full, with `LastFull`) are held with
//!   the policy's tag and bookmarked; the policy's holds on older snapshots are released.
//!   A hold on a snapshot newer than the newest stored one (a send in flight, or one that
//!   failed) is not judged here.

use std::collections::BTreeSet;

use jiff::Timestamp;
use tidepool_api::SnapshotName;
use tidepool_api::values::HoldTag;
use tidepool_objstore::chain::{self, ChainPolicy, ListedStream, NextStream, WhyFull};
use tidepool_objstore::naming::StreamName;
use tidepool_plan::DatasetInventory;
use tidepool_plan::replication::{Common, bookmark_name};
use tidepool_wire::bookkeeping::BookkeepingAction;
use tidepool_wire::objstore::{NamedGuid, StoredStream};
use tidepool_wire::transfer::{IncrementalBase, TransferStream};
use tidepool_wire::{SnapshotInfo, SnapshotRef};

/// The upload one sync makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSend {
    pub stream: TransferStream,
    pub snapshot: NamedGuid,
    pub created: Timestamp,
    /// `None` for a full.
    pub parent: Option<NamedGuid>,
    /// Why this kind of stream, for logs and `explain`.
    pub why: String,
}

/// What a sync of one dataset to an object store does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StorePlan {
    pub send: Option<StoreSend>,
    /// The newest complete stream's snapshot (the last common one).
    pub newest_stored: Option<Common>,
    /// Source-side holds, bookmarks and releases, in order.
    pub anchors: Vec<BookkeepingAction>,
}

/// The inputs of [`plan`].
pub struct StoreInput<'a> {
    pub source: &'a DatasetInventory,
    /// The store's streams of the dataset (any order).
    pub streams: &'a [StoredStream],
    pub chain: ChainPolicy,
    /// Whether the policy's selection picks a source snapshot.
    pub selects: &'a dyn Fn(&SnapshotInfo) -> bool,
    /// `<namespace>/<name>`: bookmark names.
    pub policy: &'a str,
    pub tag: &'a HoldTag,
}

/// The complete streams with GUIDs, as the chain functions take them, and all of them.
fn listing(streams: &[StoredStream]) -> Vec<ListedStream> {
    streams
        .iter()
        .filter_map(|s| {
            Some(ListedStream {
                name: StreamName::parse(&s.key)?,
                complete: s.guid.is_some(),
            })
        })
        .collect()
}

fn guid_of(streams: &[StoredStream], name: &StreamName) -> Option<u64> {
    let key = name.dir_name();
    streams.iter().find(|s| s.key == key).and_then(|s| s.guid)
}

pub fn plan(input: &StoreInput<'_>, now: Timestamp) -> StorePlan {
    let src = input.source;
    let chains = chain::chains(&listing(input.streams));
    let newest = chains
        .chains
        .iter()
        .flat_map(|c| c.streams.iter())
        .max_by(|a, b| {
            a.time
                .cmp(&b.time)
                .then_with(|| a.dir_name().cmp(&b.dir_name()))
        });
    let newest_stored = newest.and_then(|n| {
        let guid = guid_of(input.streams, n)?;
        Some(Common {
            guid,
            name: n.snapshot.clone(),
            creation: n.time,
            on_source: src.snapshot_by_guid(guid).is_some(),
        })
    });
    let next = chain::next_stream(&chains, &input.chain, now);
    // What the next incremental builds on, and the newest stored snapshot: kept on the source.
    let mut keep: BTreeSet<u64> = newest_stored.iter().map(|c| c.guid).collect();
    let parent = match &next {
        NextStream::Incremental { parent } => chains.chains.last().and_then(|c| {
            let s = c.streams.iter().rev().find(|s| &s.snapshot == parent)?;
            Some(NamedGuid {
                name: s.snapshot.clone(),
                guid: guid_of(input.streams, s)?,
            })
        }),
        NextStream::Full(_) => None,
    };
    keep.extend(parent.iter().map(|p| p.guid));
    let mut anchors = Vec::new();
    for &guid in &keep {
        let Some(s) = src.snapshot_by_guid(guid) else {
            continue;
        };
        let Ok(name) = src.dataset.snapshot(&s.name) else {
            continue;
        };
        let at = SnapshotRef {
            snapshot: name,
            guid,
        };
        if !src.has_hold(guid, input.tag.as_str()) {
            anchors.push(BookkeepingAction::Hold {
                snapshot: at.clone(),
                tag: input.tag.clone(),
            });
        }
        if let Ok(bookmark) = bookmark_name(&src.dataset, s, input.policy)
            && !src
                .bookmarks
                .iter()
                .any(|b| b.guid == guid && b.name == bookmark.short())
        {
            anchors.push(BookkeepingAction::Bookmark {
                snapshot: at,
                bookmark,
            });
        }
    }
    for h in src.holds.iter().filter(|h| h.tag == input.tag.as_str()) {
        let Some(s) = src.snapshot_by_guid(h.guid) else {
            continue;
        };
        if keep.contains(&h.guid) || !older_than_stored(src, s, newest_stored.as_ref()) {
            continue;
        }
        if let Ok(snapshot) = src.dataset.snapshot(&s.name) {
            anchors.push(BookkeepingAction::Release {
                snapshot: SnapshotRef {
                    snapshot,
                    guid: h.guid,
                },
                tag: input.tag.clone(),
            });
        }
    }
    let send = next_send(input, &next, parent, newest_stored.as_ref());
    StorePlan {
        send,
        newest_stored,
        anchors,
    }
}

/// Whether source snapshot `s` is older than the newest stored one: by `createtxg` while
/// the source has that one (creation times have one-second steps), else by time.
fn older_than_stored(src: &DatasetInventory, s: &SnapshotInfo, newest: Option<&Common>) -> bool {
    newest.is_some_and(|c| match src.snapshot_by_guid(c.guid) {
        Some(n) => s.createtxg < n.createtxg,
        None => s.creation < c.creation,
    })
}

/// The newest selected snapshot, when it is newer than what the store holds, as a full or
/// an incremental from `parent` (when the source still has it, as a snapshot or bookmark).
fn next_send(
    input: &StoreInput<'_>,
    next: &NextStream,
    parent: Option<NamedGuid>,
    newest_stored: Option<&Common>,
) -> Option<StoreSend> {
    let src = input.source;
    let to = src
        .snapshots
        .iter()
        .filter(|s| (input.selects)(s))
        .max_by_key(|s| s.createtxg)?;
    // Newer than the newest stored snapshot: by `createtxg` while the source has it
    // (creation times have one-second steps), else by time.
    let stored_already = newest_stored.is_some_and(|c| match src.snapshot_by_guid(c.guid) {
        Some(s) => s.createtxg >= to.createtxg,
        None => c.creation >= to.creation,
    });
    if stored_already {
        return None;
    }
    let to_name: SnapshotName = src.dataset.snapshot(&to.name).ok()?;
    let snapshot = NamedGuid {
        name: to.name.clone(),
        guid: to.guid,
    };
    let full = |why: String| StoreSend {
        stream: TransferStream::Full {
            snapshot: to_name.clone(),
        },
        snapshot: snapshot.clone(),
        created: to.creation,
        parent: None,
        why,
    };
    let parent = match (next, parent) {
        (NextStream::Full(why), _) => return Some(full(why_full(why))),
        (NextStream::Incremental { parent }, None) => {
            return Some(full(format!(
                "the manifest of the parent {parent} has no GUID: a new full"
            )));
        }
        (NextStream::Incremental { .. }, Some(p)) => p,
    };
    let base = if let Some(s) = src.snapshot_by_guid(parent.guid) {
        src.dataset
            .snapshot(&s.name)
            .ok()
            .map(|name| IncrementalBase::Snapshot { name })
    } else {
        src.bookmarks
            .iter()
            .find(|b| b.guid == parent.guid)
            .and_then(|b| src.dataset.bookmark(&b.name).ok())
            .map(|name| IncrementalBase::Bookmark { name })
    };
    let Some(base) = base else {
        return Some(full(format!(
            "the parent {} is gone from the source (no snapshot or bookmark with its GUID): a new full",
            parent.name
        )));
    };
    Some(StoreSend {
        stream: TransferStream::Incremental {
            base,
            to: to_name,
            intermediates: false,
        },
        snapshot,
        created: to.creation,
        why: format!("an incremental from {} (chain policy)", parent.name),
        parent: Some(parent),
    })
}

fn why_full(why: &WhyFull) -> String {
    match why {
        WhyFull::NoChain => "no chain in the store yet: a full".to_owned(),
        WhyFull::ChainHasStreams(n) => format!("the chain holds {n} streams: a new full"),
        WhyFull::ChainAge(age) => format!("the chain's full is {age:#} old: a new full"),
    }
}

#[cfg(test)]
mod tests;
