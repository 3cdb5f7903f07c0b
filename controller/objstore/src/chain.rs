//! Chains, the next stream's kind and target-side retention: pure functions over a listing.
//!
//! A chain is a full stream and every stream that needs it to be restored (an incremental
//! from a snapshot of the chain). Chains are disjoint, so deleting whole chains never
//! takes a stream that something kept depends on.

use std::collections::HashMap;
use std::num::NonZeroUsize;

use jiff::{SignedDuration, Timestamp};
use tidepool_api::SnapshotShortName;

use crate::naming::{StreamKind, StreamName};

/// One stream directory of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedStream {
    pub name: StreamName,
    /// Its manifest exists (an upload that did not finish has none).
    pub complete: bool,
}

/// A full stream and the streams that depend on it, oldest first (the full first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub streams: Vec<StreamName>,
}

impl Chain {
    pub fn full(&self) -> &StreamName {
        &self.streams[0]
    }

    pub fn newest(&self) -> &StreamName {
        &self.streams[self.streams.len() - 1]
    }
}

/// A dataset's streams sorted out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chains {
    /// Oldest first (by the full's time).
    pub chains: Vec<Chain>,
    /// Complete incrementals whose parent is not in the store: they cannot be restored.
    pub orphans: Vec<StreamName>,
    /// Stream directories without a manifest: uploads that did not finish (or run now).
    pub incomplete: Vec<StreamName>,
}

fn order(a: &StreamName, b: &StreamName) -> std::cmp::Ordering {
    a.time
        .cmp(&b.time)
        .then_with(|| a.dir_name().cmp(&b.dir_name()))
}

/// Sorts a listing into chains. An incremental belongs to the chain of the newest earlier
/// stream of its parent snapshot.
pub fn chains(listing: &[ListedStream]) -> Chains {
    let mut complete: Vec<&StreamName> = Vec::new();
    let mut out = Chains::default();
    for stream in listing {
        if stream.complete {
            complete.push(&stream.name);
        } else {
            out.incomplete.push(stream.name.clone());
        }
    }
    complete.sort_by(|a, b| order(a, b));
    out.incomplete.sort_by(order);
    // The chain holding the newest stream of each snapshot seen so far.
    let mut chain_of: HashMap<&SnapshotShortName, usize> = HashMap::new();
    for name in complete {
        let chain = match &name.kind {
            StreamKind::Full => {
                out.chains.push(Chain {
                    streams: Vec::new(),
                });
                Some(out.chains.len() - 1)
            }
            StreamKind::Incremental { parent } => chain_of.get(parent).copied(),
        };
        match chain {
            Some(i) => {
                out.chains[i].streams.push(name.clone());
                chain_of.insert(&name.snapshot, i);
            }
            None => out.orphans.push(name.clone()),
        }
    }
    out
}

/// The streams to restore, full first, to end at the newest stream of `snapshot`.
pub fn restore_path(chains: &Chains, snapshot: &SnapshotShortName) -> Option<Vec<StreamName>> {
    let chain = chains
        .chains
        .iter()
        .rev()
        .find(|c| c.streams.iter().any(|s| &s.snapshot == snapshot))?;
    let mut path = Vec::new();
    let mut want = Some(snapshot.clone());
    for stream in chain.streams.iter().rev() {
        if want.as_ref() == Some(&stream.snapshot) {
            want = stream.parent().cloned();
            path.push(stream.clone());
        }
    }
    path.reverse();
    (want.is_none() && path.first().is_some_and(|s| s.kind == StreamKind::Full)).then_some(path)
}

/// When a chain ends and a new full starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullEvery {
    /// A chain holds at most this many streams, the full counted.
    Streams(NonZeroUsize),
    /// A chain is closed once its full is this old.
    Age(SignedDuration),
}

/// What an incremental is sent from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrementalBase {
    /// The chain's full (zfs2cloud's choice): each restore needs two streams, and one lost
    /// object loses only its own stream; incrementals grow with the distance to the full.
    LastFull,
    /// The chain's newest stream: smallest incrementals, but a lost object loses every
    /// later stream of its chain.
    Previous,
}

/// The chain policy of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainPolicy {
    pub full_every: FullEvery,
    pub incremental_from: IncrementalBase,
}

/// What to upload next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStream {
    Full(WhyFull),
    /// `zfs send -i <parent>`. The caller sends a full instead when the source no longer
    /// has the parent (nor a bookmark of it).
    Incremental {
        parent: SnapshotShortName,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhyFull {
    NoChain,
    ChainHasStreams(usize),
    ChainAge(SignedDuration),
}

/// The kind of the next stream under `policy` at `now`, given what the store holds.
pub fn next_stream(chains: &Chains, policy: &ChainPolicy, now: Timestamp) -> NextStream {
    let Some(chain) = chains.chains.last() else {
        return NextStream::Full(WhyFull::NoChain);
    };
    match policy.full_every {
        FullEvery::Streams(n) if chain.streams.len() >= n.get() => {
            return NextStream::Full(WhyFull::ChainHasStreams(chain.streams.len()));
        }
        FullEvery::Age(max) => {
            let age = now.duration_since(chain.full().time);
            if age >= max {
                return NextStream::Full(WhyFull::ChainAge(age));
            }
        }
        FullEvery::Streams(_) => {}
    }
    let base = match policy.incremental_from {
        IncrementalBase::LastFull => chain.full(),
        IncrementalBase::Previous => chain.newest(),
    };
    NextStream::Incremental {
        parent: base.snapshot.clone(),
    }
}

/// The streams retention deletes when the newest `keep_chains` chains are kept: every
/// stream of older chains, orphans older than the oldest kept full (nothing restores them),
/// and unfinished uploads older than the newest complete stream (a newer one may be
/// running). Never a stream of a kept chain.
pub fn expired(chains: &Chains, keep_chains: NonZeroUsize) -> Vec<StreamName> {
    let drop_count = chains.chains.len().saturating_sub(keep_chains.get());
    let mut out: Vec<StreamName> = chains.chains[..drop_count]
        .iter()
        .flat_map(|c| c.streams.iter().cloned())
        .collect();
    if let Some(oldest_kept) = chains.chains.get(drop_count) {
        let full = oldest_kept.full();
        out.extend(
            chains
                .orphans
                .iter()
                .filter(|o| order(o, full).is_lt())
                .cloned(),
        );
    }
    let newest = chains
        .chains
        .iter()
        .map(Chain::newest)
        .chain(&chains.orphans)
        .max_by(|a, b| order(a, b));
    if let Some(newest) = newest {
        out.extend(
            chains
                .incomplete
                .iter()
                .filter(|s| order(s, newest).is_lt())
                .cloned(),
        );
    }
    out.sort_by(order);
    out
}

#[cfg(test)]
mod tests;
