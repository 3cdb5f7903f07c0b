#![allow(clippy::unwrap_used)]

use std::num::NonZeroUsize;

use tidepool_objstore::chain::{FullEvery, IncrementalBase as ChainBase};
use tidepool_plan::replication::hold_tag;
use tidepool_wire::{BookmarkInfo, HoldInfo};

use super::*;

const POLICY: &str = "ns/p";

fn t(hour: i64) -> Timestamp {
    Timestamp::from_second(1_790_000_000 + hour * 3600).unwrap()
}

fn snap(name: &str, hour: i64) -> SnapshotInfo {
    SnapshotInfo {
        name: name.parse().unwrap(),
        guid: 1000 + hour as u64,
        createtxg: 10 + hour as u64,
        creation: t(hour),
        owner: None,
        held: false,
    }
}

fn source(hours: &[i64]) -> DatasetInventory {
    DatasetInventory::with_snapshots(
        "tank/app".parse().unwrap(),
        hours.iter().map(|&h| snap(&format!("s{h}"), h)).collect(),
    )
}

/// A stored stream of snapshot `s<hour>`, full or from `s<parent>`.
fn stored(hour: i64, parent: Option<i64>) -> StoredStream {
    let kind = match parent {
        None => tidepool_objstore::naming::StreamKind::Full,
        Some(p) => tidepool_objstore::naming::StreamKind::Incremental {
            parent: format!("s{p}").parse().unwrap(),
        },
    };
    let name = StreamName::new(t(hour), format!("s{hour}").parse().unwrap(), kind).unwrap();
    StoredStream {
        key: name.dir_name(),
        time: name.time,
        snapshot: name.snapshot.clone(),
        parent: name.parent().cloned(),
        guid: Some(1000 + hour as u64),
        parent_guid: parent.map(|p| 1000 + p as u64),
        stored_bytes: 1,
    }
}

fn policy(n: usize, from: ChainBase) -> ChainPolicy {
    ChainPolicy {
        full_every: FullEvery::Streams(NonZeroUsize::new(n).unwrap()),
        incremental_from: from,
    }
}

fn run(src: &DatasetInventory, streams: &[StoredStream], chain: ChainPolicy) -> StorePlan {
    let tag = hold_tag(POLICY);
    let all = |_: &SnapshotInfo| true;
    plan(
        &StoreInput {
            source: src,
            streams,
            chain,
            selects: &all,
            policy: POLICY,
            tag: &tag,
        },
        t(100),
    )
}

fn kind(p: &StorePlan) -> String {
    match &p.send.as_ref().unwrap().stream {
        TransferStream::Full { snapshot } => format!("full {snapshot}"),
        TransferStream::Incremental { base, to, .. } => match base {
            IncrementalBase::Snapshot { name } => format!("inc {name} -> {to}"),
            IncrementalBase::Bookmark { name } => format!("inc {name} -> {to}"),
        },
        TransferStream::Resume { .. } => "resume".into(),
    }
}

#[test]
fn an_empty_store_gets_a_full_of_the_newest_snapshot() {
    let p = run(&source(&[1, 2]), &[], policy(3, ChainBase::LastFull));
    assert_eq!(kind(&p), "full tank/app@s2");
    assert!(p.anchors.is_empty() && p.newest_stored.is_none());
}

#[test]
fn incrementals_go_against_the_last_full_which_is_held_and_bookmarked() {
    let src = source(&[1, 2, 3]);
    let p = run(
        &src,
        &[stored(1, None), stored(2, Some(1))],
        policy(3, ChainBase::LastFull),
    );
    assert_eq!(kind(&p), "inc tank/app@s1 -> tank/app@s3");
    assert_eq!(p.send.as_ref().unwrap().parent.as_ref().unwrap().guid, 1001);
    assert_eq!(p.newest_stored.as_ref().unwrap().guid, 1002);
    // Both the base (s1) and the newest stored (s2) are kept on the source.
    let held: Vec<u64> = p
        .anchors
        .iter()
        .filter_map(|a| match a {
            BookkeepingAction::Hold { snapshot, .. } => Some(snapshot.guid),
            _ => None,
        })
        .collect();
    assert_eq!(held, [1001, 1002]);
    assert_eq!(
        p.anchors
            .iter()
            .filter(|a| matches!(a, BookkeepingAction::Bookmark { .. }))
            .count(),
        2
    );
    // `Previous`: from the newest stream.
    let p = run(
        &src,
        &[stored(1, None), stored(2, Some(1))],
        policy(3, ChainBase::Previous),
    );
    assert_eq!(kind(&p), "inc tank/app@s2 -> tank/app@s3");
}

#[test]
fn a_full_chain_starts_a_new_full() {
    let p = run(
        &source(&[1, 2, 3, 4]),
        &[stored(1, None), stored(2, Some(1)), stored(3, Some(1))],
        policy(3, ChainBase::LastFull),
    );
    assert_eq!(kind(&p), "full tank/app@s4");
    assert!(p.send.unwrap().why.contains("holds 3 streams"));
    let p = run(&source(&[1]), &[], policy(3, ChainBase::LastFull));
    assert!(p.send.unwrap().why.contains("no chain"));
}

#[test]
fn what_is_already_held_and_bookmarked_is_not_asked_again() {
    let mut src = source(&[1, 2]);
    let tag = hold_tag(POLICY);
    src.holds.push(HoldInfo {
        guid: 1001,
        tag: tag.to_string(),
    });
    let own = bookmark_name(&src.dataset, &src.snapshots[0], POLICY).unwrap();
    // Another bookmark of s1 (a person's), and ours under the GUID of another snapshot: neither
    // counts as this policy's bookmark of s1.
    for (name, guid) in [("s1_mine", 1001), (own.short().as_str(), 1002)] {
        src.bookmarks.push(BookmarkInfo {
            name: name.parse().unwrap(),
            guid,
            createtxg: 11,
            creation: t(1),
        });
    }
    let p = run(&src, &[stored(1, None)], policy(3, ChainBase::LastFull));
    assert_eq!(
        p.anchors,
        [BookkeepingAction::Bookmark {
            snapshot: SnapshotRef {
                snapshot: "tank/app@s1".parse().unwrap(),
                guid: 1001
            },
            bookmark: own.clone()
        }]
    );
    src.bookmarks.push(BookmarkInfo {
        name: own.short(),
        guid: 1001,
        createtxg: 11,
        creation: t(1),
    });
    let p = run(&src, &[stored(1, None)], policy(3, ChainBase::LastFull));
    assert!(p.anchors.is_empty(), "{:?}", p.anchors);
}

#[test]
fn a_hold_on_a_snapshot_of_the_same_second_after_the_stored_one_is_kept() {
    let mut src = source(&[1, 2]);
    src.snapshots[1].creation = t(1);
    src.holds.push(HoldInfo {
        guid: 1002,
        tag: hold_tag(POLICY).to_string(),
    });
    let p = run(&src, &[stored(1, None)], policy(3, ChainBase::LastFull));
    assert!(
        !p.anchors
            .iter()
            .any(|a| matches!(a, BookkeepingAction::Release { .. })),
        "{:?}",
        p.anchors
    );
}

#[test]
fn a_parent_gone_from_the_source_is_sent_from_its_bookmark_or_replaced_by_a_full() {
    let mut src = source(&[3]);
    let streams = [stored(1, None)];
    let p = run(&src, &streams, policy(3, ChainBase::LastFull));
    assert_eq!(kind(&p), "full tank/app@s3");
    assert!(
        p.send
            .as_ref()
            .unwrap()
            .why
            .contains("gone from the source")
    );
    src.bookmarks.push(BookmarkInfo {
        name: "s1_tpabcdef01".parse().unwrap(),
        guid: 1001,
        createtxg: 11,
        creation: t(1),
    });
    let p = run(&src, &streams, policy(3, ChainBase::LastFull));
    assert_eq!(kind(&p), "inc tank/app#s1_tpabcdef01 -> tank/app@s3");
}

#[test]
fn an_up_to_date_store_sends_nothing_and_old_holds_are_released() {
    let mut src = source(&[1, 2, 3, 5]);
    let tag = hold_tag(POLICY);
    for guid in [1001, 1002, 1005] {
        src.holds.push(HoldInfo {
            guid,
            tag: tag.to_string(),
        });
    }
    src.holds.push(HoldInfo {
        guid: 1003,
        tag: "tidepool:other/policy".into(),
    });
    // s1 full, s2 from s1, then a new full s3 is the newest chain: s1's hold is not needed.
    let streams = [stored(1, None), stored(2, Some(1)), stored(3, None)];
    let mut only_3 = src.clone();
    only_3.snapshots.retain(|s| s.guid != 1005);
    let p = run(&only_3, &streams, policy(3, ChainBase::LastFull));
    assert!(p.send.is_none());
    let released: Vec<u64> = p
        .anchors
        .iter()
        .filter_map(|a| match a {
            BookkeepingAction::Release { snapshot, .. } => Some(snapshot.guid),
            _ => None,
        })
        .collect();
    assert_eq!(released, [1001, 1002]);
    // A hold on a snapshot newer than the newest stored one (a send in flight) stays.
    let p = run(&src, &streams, policy(3, ChainBase::LastFull));
    assert!(!p.anchors.iter().any(
        |a| matches!(a, BookkeepingAction::Release { snapshot, .. } if snapshot.guid == 1005)
    ));
    assert_eq!(kind(&p), "inc tank/app@s3 -> tank/app@s5");
}

#[test]
fn a_snapshot_taken_in_the_same_second_as_the_stored_one_is_still_sent() {
    let mut src = source(&[1, 2]);
    src.snapshots[1].creation = t(1);
    let mut s1 = stored(1, None);
    s1.time = t(1);
    let p = run(&src, &[s1], policy(3, ChainBase::LastFull));
    assert_eq!(kind(&p), "inc tank/app@s1 -> tank/app@s2");
    // The stored snapshot itself is never sent again.
    let p = run(
        &source(&[1]),
        &[stored(1, None)],
        policy(3, ChainBase::LastFull),
    );
    assert!(p.send.is_none());
}

#[test]
fn unfinished_uploads_are_neither_common_nor_a_parent() {
    let mut unfinished = stored(2, Some(1));
    unfinished.guid = None;
    let p = run(
        &source(&[1, 2, 3]),
        &[stored(1, None), unfinished],
        policy(3, ChainBase::Previous),
    );
    assert_eq!(p.newest_stored.as_ref().unwrap().guid, 1001);
    assert_eq!(kind(&p), "inc tank/app@s1 -> tank/app@s3");
}

#[test]
fn without_the_stored_snapshot_on_the_source_holds_are_judged_by_time() {
    // s2 is stored but destroyed on the source; s1 is older, s3 newer, `x` of the same second.
    let mut src = source(&[1, 3]);
    let mut same_second = snap("x", 2);
    same_second.guid = 7;
    src.snapshots.push(same_second);
    let tag = hold_tag(POLICY);
    for guid in [1001, 1003, 7] {
        src.holds.push(HoldInfo {
            guid,
            tag: tag.to_string(),
        });
    }
    let p = run(&src, &[stored(2, None)], policy(1, ChainBase::LastFull));
    let released: Vec<u64> = p
        .anchors
        .iter()
        .filter_map(|a| match a {
            BookkeepingAction::Release { snapshot, .. } => Some(snapshot.guid),
            _ => None,
        })
        .collect();
    assert_eq!(released, [1001]);
}
