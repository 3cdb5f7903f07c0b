use std::collections::HashSet;

use proptest::prelude::*;

use super::*;

fn snap(s: &str) -> SnapshotShortName {
    s.parse().expect("valid short name")
}

/// `day` days after 2026-01-01, `snapshot` from `parent` (or full).
fn stream(day: i64, snapshot: &str, parent: Option<&str>) -> StreamName {
    let time = Timestamp::from_second(1_767_225_600 + day * 86_400).expect("in range");
    let kind = match parent {
        None => StreamKind::Full,
        Some(p) => StreamKind::Incremental { parent: snap(p) },
    };
    StreamName::new(time, snap(snapshot), kind).expect("valid")
}

fn listed(streams: &[StreamName]) -> Vec<ListedStream> {
    streams
        .iter()
        .map(|name| ListedStream {
            name: name.clone(),
            complete: true,
        })
        .collect()
}

fn names(streams: &[StreamName]) -> Vec<String> {
    streams.iter().map(|s| s.snapshot.to_string()).collect()
}

#[test]
fn sorts_streams_into_chains_orphans_and_incomplete() {
    let mut listing = listed(&[
        stream(0, "s0", None),
        stream(1, "s1", Some("s0")),
        stream(2, "s2", Some("s0")),
        stream(3, "s3", None),
        stream(4, "s4", Some("s3")),
        stream(5, "s5", Some("s4")),
        stream(6, "s6", Some("gone")),
    ]);
    listing.push(ListedStream {
        name: stream(7, "s7", Some("s5")),
        complete: false,
    });
    listing.reverse(); // order in the listing does not matter
    let c = chains(&listing);
    let got: Vec<Vec<String>> = c.chains.iter().map(|c| names(&c.streams)).collect();
    assert_eq!(got, [vec!["s0", "s1", "s2"], vec!["s3", "s4", "s5"]]);
    assert_eq!(names(&c.orphans), ["s6"]);
    assert_eq!(names(&c.incomplete), ["s7"]);
    assert_eq!(
        restore_path(&c, &snap("s5")).map(|p| names(&p)),
        Some(vec!["s3".to_owned(), "s4".to_owned(), "s5".to_owned()])
    );
    assert_eq!(
        restore_path(&c, &snap("s2")).map(|p| names(&p)),
        Some(vec!["s0".to_owned(), "s2".to_owned()])
    );
    assert_eq!(restore_path(&c, &snap("s6")), None);
    assert_eq!(restore_path(&c, &snap("s7")), None);
}

#[test]
fn next_stream_follows_the_policy() {
    let five = NonZeroUsize::new(3).expect("non-zero");
    let by_count = |base| ChainPolicy {
        full_every: FullEvery::Streams(five),
        incremental_from: base,
    };
    let now = Timestamp::from_second(1_767_225_600 + 10 * 86_400).expect("in range");
    let empty = chains(&[]);
    assert_eq!(
        next_stream(&empty, &by_count(IncrementalBase::LastFull), now),
        NextStream::Full(WhyFull::NoChain)
    );
    let two = chains(&listed(&[stream(0, "a", None), stream(1, "b", Some("a"))]));
    assert_eq!(
        next_stream(&two, &by_count(IncrementalBase::LastFull), now),
        NextStream::Incremental { parent: snap("a") }
    );
    assert_eq!(
        next_stream(&two, &by_count(IncrementalBase::Previous), now),
        NextStream::Incremental { parent: snap("b") }
    );
    let three = chains(&listed(&[
        stream(0, "a", None),
        stream(1, "b", Some("a")),
        stream(2, "c", Some("a")),
    ]));
    assert_eq!(
        next_stream(&three, &by_count(IncrementalBase::LastFull), now),
        NextStream::Full(WhyFull::ChainHasStreams(3))
    );
    let weekly = ChainPolicy {
        full_every: FullEvery::Age(SignedDuration::from_hours(7 * 24)),
        incremental_from: IncrementalBase::LastFull,
    };
    let day = |d: i64| Timestamp::from_second(1_767_225_600 + d * 86_400).expect("in range");
    assert_eq!(
        next_stream(&two, &weekly, day(6)),
        NextStream::Incremental { parent: snap("a") }
    );
    assert_eq!(
        next_stream(&two, &weekly, day(7)),
        NextStream::Full(WhyFull::ChainAge(SignedDuration::from_hours(7 * 24)))
    );
}

#[test]
fn retention_deletes_only_whole_old_chains() {
    let mut listing = listed(&[
        stream(0, "s0", None),
        stream(1, "s1", Some("s0")),
        stream(2, "x", Some("gone")),
        stream(3, "s3", None),
        stream(4, "s4", Some("s3")),
        stream(5, "s5", None),
        stream(6, "s6", Some("s5")),
        stream(8, "late", Some("gone")),
    ]);
    for (day, name) in [(1, "cut"), (9, "running")] {
        listing.push(ListedStream {
            name: stream(day, name, Some("s0")),
            complete: false,
        });
    }
    let c = chains(&listing);
    let one = NonZeroUsize::new(1).expect("non-zero");
    assert_eq!(
        names(&expired(&c, one)),
        ["s0", "cut", "s1", "x", "s3", "s4"]
    );
    let two = NonZeroUsize::new(2).expect("non-zero");
    assert_eq!(names(&expired(&c, two)), ["s0", "cut", "s1", "x"]);
    let ten = NonZeroUsize::new(10).expect("non-zero");
    assert_eq!(names(&expired(&c, ten)), ["cut"]);
}

fn arb_listing() -> impl Strategy<Value = Vec<ListedStream>> {
    // Each stream i: full, or incremental from an earlier i (or from a missing snapshot),
    // complete or not, on day i.
    prop::collection::vec(
        (
            0u8..4,
            any::<prop::sample::Index>(),
            prop::bool::weighted(0.9),
        ),
        1..30,
    )
    .prop_map(|specs| {
        specs
            .iter()
            .enumerate()
            .map(|(i, (kind, pick, complete))| {
                let parent = match kind {
                    0 => None,
                    _ if i == 0 => Some("missing".to_owned()),
                    1 => Some("missing".to_owned()),
                    _ => Some(format!("s{}", pick.index(i))),
                };
                ListedStream {
                    name: stream(i as i64, &format!("s{i}"), parent.as_deref()),
                    complete: *complete,
                }
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn retention_never_breaks_what_it_keeps(listing in arb_listing(), keep in 1usize..4) {
        let c = chains(&listing);
        let deleted: HashSet<String> =
            expired(&c, NonZeroUsize::new(keep).expect("non-zero")).iter().map(StreamName::dir_name).collect();
        // Every kept complete stream still restores, and nothing on its path was deleted.
        for chain in &c.chains {
            let chain_deleted = chain.streams.iter().filter(|s| deleted.contains(&s.dir_name())).count();
            prop_assert!(chain_deleted == 0 || chain_deleted == chain.streams.len(), "a chain was cut: {chain:?}");
            if chain_deleted == 0 {
                for s in &chain.streams {
                    let path = restore_path(&c, &s.snapshot).expect("a chain member restores");
                    prop_assert!(path.iter().all(|p| !deleted.contains(&p.dir_name())));
                }
            }
        }
        // The newest chain is always kept whole.
        if let Some(newest) = c.chains.last() {
            prop_assert!(newest.streams.iter().all(|s| !deleted.contains(&s.dir_name())));
        }
        // Kept chains are the newest ones.
        let kept = c.chains.iter().filter(|ch| !deleted.contains(&ch.full().dir_name())).count();
        prop_assert_eq!(kept, c.chains.len().min(keep));
        // The newest unfinished upload (maybe still running) is never deleted if it is the newest of all.
        if let Some(last) = listing.iter().max_by(|a, b| order(&a.name, &b.name))
            && !last.complete
        {
            prop_assert!(!deleted.contains(&last.name.dir_name()));
        }
    }
}
