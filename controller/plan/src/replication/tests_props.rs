//! Properties of single plans over random histories of one source, its target and a second
//! policy on the same source. Each check states a safety rule from what an executor would
//! see, not from how the planner decides.

use std::collections::HashSet;

use proptest::prelude::*;
use tidepool_api::replication_policy::{SendOptions, SnapshotSelection};

use super::*;

/// Two policies whose bookmark suffixes are the same 32 bits (found by a birthday search):
/// each names its bookmark of a snapshot exactly as the other does.
pub(super) const MINE: &str = "ns/offsite-205081";
pub(super) const OTHER: &str = "ns/offsite-851190";
/// The schedule a selection by `scheduleName` picks.
const SCHEDULE: &str = "SnapshotSchedule/ns/hourly";

/// Who took source snapshot `i`.
#[derive(Debug, Clone, Copy)]
enum Taker {
    Schedule,
    OtherSchedule,
    Person,
}

/// Which bookmark of source snapshot `i` exists, and whose it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BookmarkKind {
    None,
    /// MINE's, of a snapshot MINE held as its common one (its hold is on the source while
    /// the snapshot is).
    Mine,
    /// OTHER's (the same name as MINE's would be), with OTHER's hold likewise.
    Others,
    /// A person's bookmark whose name carries the suffix, of an unrelated guid.
    UserUnrelatedGuid,
    /// A person's bookmark named as the policies name snapshot `i`'s, but of another guid.
    UserNameOfAnother,
}

#[derive(Debug, Clone)]
struct Per {
    taker: Taker,
    src_keeps: bool,
    dst_keeps: bool,
    bookmark: BookmarkKind,
    /// Bit 0: MINE holds it on the source (a stale hold), 1: OTHER does, 2: a person does,
    /// 3: MINE holds the target's copy.
    holds: u8,
    /// A snapshot made on the target right after its copy of this one.
    extra_after: bool,
}

#[derive(Debug, Clone)]
struct History {
    source: DatasetInventory,
    target: DatasetInventory,
    send: SendOptions,
    selection: SnapshotSelection,
    selection_owner: Option<Owner>,
    rotate: bool,
    failed: bool,
    /// Bookmark names each policy must never destroy.
    not_mine: HashSet<String>,
    not_others: HashSet<String>,
    /// Mostly an agent's pool; sometimes a target without holds or claims (offsite).
    abilities: TargetAbilities,
}

fn arb_per() -> impl Strategy<Value = Per> {
    (
        prop_oneof![
            6 => Just(Taker::Schedule),
            1 => Just(Taker::OtherSchedule),
            1 => Just(Taker::Person)
        ],
        any::<(bool, bool)>(),
        prop_oneof![
            4 => Just(BookmarkKind::None),
            2 => Just(BookmarkKind::Mine),
            1 => Just(BookmarkKind::Others),
            1 => Just(BookmarkKind::UserUnrelatedGuid),
            1 => Just(BookmarkKind::UserNameOfAnother),
        ],
        any::<u8>(),
        proptest::bool::weighted(0.1),
    )
        .prop_map(
            |(taker, (src_keeps, dst_keeps), bookmark, holds, extra_after)| Per {
                taker,
                src_keeps,
                dst_keeps,
                bookmark,
                holds,
                extra_after,
            },
        )
}

fn taken(i: u64, taker: Taker) -> SnapshotInfo {
    let (name, owner) = match taker {
        Taker::Schedule => (format!("tidepool_s{i:03}_h"), Some(owner(SCHEDULE))),
        Taker::OtherSchedule => (
            format!("tidepool_s{i:03}_d"),
            Some(owner("SnapshotSchedule/ns/daily")),
        ),
        Taker::Person => (format!("manual{i:03}"), None),
    };
    SnapshotInfo {
        name: name.parse().expect("name"),
        owner,
        ..snap(i)
    }
}

/// `zfs hold` refuses a tag a snapshot already has.
fn add_hold(inv: &mut DatasetInventory, guid: u64, tag: String) {
    if !inv.has_hold(guid, &tag) {
        inv.holds.push(HoldInfo { guid, tag });
    }
}

fn arb_history() -> impl Strategy<Value = History> {
    (
        1u64..25,
        0u64..25,
        proptest::collection::vec(arb_per(), 25),
        (0u8..4, proptest::bool::weighted(0.1)),
        (0u8..8, 0u64..30, 0u64..30),
        any::<(bool, bool, bool, bool)>(),
        (any::<bool>(), proptest::bool::weighted(0.85)),
        (any::<bool>(), any::<bool>()),
        (
            proptest::bool::weighted(0.75),
            proptest::bool::weighted(0.75),
        ),
    )
        .prop_map(
            |(
                n,
                received_n,
                per,
                (extra_at_end, written),
                (token_kind, to, from),
                (intermediates, rotate, failed, target_exists),
                (encrypted, raw),
                (by_schedule, by_prefix),
                (holds, claims),
            )| {
                let received_n = received_n.min(n);
                let mut src = source(&[]);
                src.encrypted = encrypted;
                let mut dst = target(&[]);
                dst.exists = target_exists || received_n > 0;
                let (mut not_mine, mut not_others) = (HashSet::new(), HashSet::new());
                for i in 0..n {
                    let p = &per[i as usize];
                    let s = taken(i, p.taker);
                    let on_source = p.src_keeps || i == n - 1;
                    let own_name = || {
                        bookmark_name(&src.dataset, &s, MINE)
                            .expect("name")
                            .short()
                            .to_string()
                    };
                    let bookmark = |name: String, guid: u64| BookmarkInfo {
                        name: name.parse().expect("name"),
                        guid,
                        createtxg: s.createtxg,
                        creation: s.creation,
                    };
                    match p.bookmark {
                        BookmarkKind::None => {}
                        BookmarkKind::Mine => {
                            src.bookmarks.push(bookmark(own_name(), s.guid));
                            not_others.insert(own_name());
                            if on_source {
                                add_hold(&mut src, s.guid, hold_tag(MINE).to_string());
                            }
                        }
                        BookmarkKind::Others => {
                            src.bookmarks.push(bookmark(own_name(), s.guid));
                            not_mine.insert(own_name());
                            if on_source {
                                add_hold(&mut src, s.guid, hold_tag(OTHER).to_string());
                            }
                        }
                        BookmarkKind::UserUnrelatedGuid => {
                            // Of a snapshot destroyed long ago, between two of these.
                            let name = format!("u{i}{}", bookmark_suffix(MINE));
                            src.bookmarks.push(BookmarkInfo {
                                createtxg: s.createtxg + 1,
                                ..bookmark(name.clone(), 0xe000 + i)
                            });
                            not_mine.insert(name.clone());
                            not_others.insert(name);
                        }
                        BookmarkKind::UserNameOfAnother => {
                            let next = snap(i + 1);
                            src.bookmarks.push(BookmarkInfo {
                                createtxg: next.createtxg,
                                creation: next.creation,
                                ..bookmark(own_name(), next.guid)
                            });
                            not_mine.insert(own_name());
                            not_others.insert(own_name());
                        }
                    }
                    if on_source {
                        for (bit, tag) in [
                            (1, hold_tag(MINE).to_string()),
                            (2, hold_tag(OTHER).to_string()),
                            (4, "keep".to_owned()),
                        ] {
                            if p.holds & bit != 0 {
                                add_hold(&mut src, s.guid, tag);
                            }
                        }
                        src.snapshots.push(s.clone());
                    }
                    if i < received_n && p.dst_keeps {
                        dst.snapshots.push(SnapshotInfo {
                            createtxg: 5000 + 7 * i,
                            owner: Some(owner_of_policy(MINE)),
                            ..s.clone()
                        });
                        if p.holds & 8 != 0 {
                            add_hold(&mut dst, s.guid, hold_tag(MINE).to_string());
                        }
                    }
                    if i < received_n && p.extra_after {
                        // Made on the target between two received snapshots: older than
                        // whatever the target receives later.
                        dst.snapshots.push(SnapshotInfo {
                            name: format!("mid{i}").parse().expect("name"),
                            guid: 0xf100 + i,
                            createtxg: 5000 + 7 * i + 3,
                            owner: None,
                            ..s
                        });
                    }
                }
                if dst.exists {
                    for k in 0..u64::from(extra_at_end) {
                        dst.snapshots.push(SnapshotInfo {
                            guid: 0xf000 + k,
                            name: format!("local{k}").parse().expect("name"),
                            owner: None,
                            ..received(30 + k)
                        });
                    }
                    if written {
                        dst.written_since_newest = 1;
                    }
                    let decoded = |raw: Option<bool>| PartialReceive {
                        token: tok("t"),
                        to_guid: Some(snap(to).guid),
                        from_guid: Some(snap(from).guid),
                        raw,
                    };
                    dst.receive_resume_token = match token_kind {
                        0 => Some(PartialReceive::opaque(tok("t"))),
                        1 => Some(decoded(None)),
                        2 => Some(decoded(Some(true))),
                        3 => Some(decoded(Some(false))),
                        _ => None,
                    };
                }
                History {
                    source: src,
                    target: dst,
                    send: SendOptions {
                        raw,
                        ..SendOptions::default()
                    },
                    selection: SnapshotSelection {
                        intermediates,
                        name_prefix: by_prefix.then(|| "tidepool_".to_owned()),
                        ..SnapshotSelection::default()
                    },
                    selection_owner: by_schedule.then(|| owner(SCHEDULE)),
                    rotate,
                    failed,
                    not_mine,
                    not_others,
                    abilities: TargetAbilities { holds, claims },
                }
            },
        )
}

fn plan_for(h: &History, policy: &str) -> ReplicationPlan {
    let failure = ResumeFailure {
        token: tok("t"),
        error: "stale".into(),
    };
    let owner = owner_of_policy(policy);
    let input = ReplicationInput {
        policy,
        source: &h.source,
        target: &h.target,
        send: &h.send,
        selection: &h.selection,
        selection_owner: h.selection_owner.as_ref(),
        owner: &owner,
        on_divergence: if h.rotate {
            OnDivergence::Rotate
        } else {
            OnDivergence::Fail
        },
        resume_failed: h.failed.then_some(&failure),
        target_abilities: h.abilities,
    };
    plan(&input, now())
}

/// The selection, as the policy's spec words it.
fn picked(h: &History, s: &SnapshotInfo) -> bool {
    h.selection_owner
        .as_ref()
        .is_none_or(|o| s.owner.as_ref() == Some(o))
        && h.selection
            .name_prefix
            .as_deref()
            .is_none_or(|p| s.name.as_str().starts_with(p))
}

/// The source txg of a guid, from a snapshot or a bookmark.
fn source_txg(src: &DatasetInventory, guid: u64) -> Option<u64> {
    src.snapshot_by_guid(guid).map(|s| s.createtxg).or_else(|| {
        src.bookmarks
            .iter()
            .find(|b| b.guid == guid)
            .map(|b| b.createtxg)
    })
}

/// Why a resume token cannot be resumed, by the rules in the module documentation.
fn token_is_stale(h: &History, token: &PartialReceive, raw: bool) -> bool {
    let (src, dst) = (&h.source, &h.target);
    (h.failed && token.token == tok("t"))
        || token
            .to_guid
            .is_some_and(|g| src.snapshot_by_guid(g).is_none())
        || token
            .from_guid
            .is_some_and(|g| source_txg(src, g).is_none() || dst.snapshot_by_guid(g).is_none())
        || token.raw.is_some_and(|r| r != raw)
}

/// A receive can only say what is safe. `ReceiveOptions` (tidepool_wire's `send.rs`) has
/// no way to say `-F` or to mount: every receive is unmounted (`-u`) and never forced, by
/// the type, and the zfs layer builds its argv from these fields alone. Its fields are
/// private, so instead of destructuring it this compares its `Debug` form with one spelled
/// from the accessors: a new field (a way to force, say) changes that form, and must be
/// looked at here before this passes.
fn check_receive(r: &ReceiveOptions, h: &History) -> Result<(), TestCaseError> {
    let (target, resumable, set, exclude) = (r.target(), r.resumable(), r.set(), r.exclude());
    prop_assert_eq!(
        format!("{r:?}"),
        format!(
            "ReceiveOptions {{ target: {target:?}, resumable: {resumable:?}, set: {set:?}, exclude: {exclude:?} }}"
        ),
        "ReceiveOptions has a field this check does not look at"
    );
    prop_assert_eq!(target, &h.target.dataset);
    prop_assert!(resumable, "a receive that leaves no resume token");
    prop_assert_eq!(exclude.len(), h.send.exclude_properties.len());
    prop_assert_eq!(set.len(), h.send.override_properties.len());
    Ok(())
}

/// What the target has, newest last, as the executor would see it step by step.
struct TargetState {
    present: bool,
    guids: Vec<u64>,
    written: u64,
    token: bool,
}

/// Check one plan of `policy` against the safety rules.
fn check_plan(
    h: &History,
    policy: &str,
    plan: &ReplicationPlan,
    not_ours: &HashSet<String>,
) -> Result<(), TestCaseError> {
    let (src, dst) = (&h.source, &h.target);
    let tag = hold_tag(policy);
    let raw = src.encrypted && h.send.raw;

    // Raw for encrypted, plaintext refused.
    if src.encrypted && !h.send.raw {
        prop_assert_eq!(
            plan.blocked.as_ref().map(|b| b.code),
            Some(BlockedCode::PlaintextOfEncryptedSource)
        );
        prop_assert!(plan.steps.is_empty());
        return Ok(());
    }
    for send in plan.sends() {
        prop_assert_eq!(send.flags.raw, raw, "raw flag");
    }

    // Nothing is asked of a target that cannot do it, in the plan or after any send.
    let followups = plan.sends().flat_map(|s| s.on_success.iter());
    for step in plan.steps.iter().chain(followups) {
        match &step.action {
            Action::Hold {
                side: Side::Target, ..
            } => prop_assert!(h.abilities.holds, "a hold on a target without holds"),
            Action::SetOwner { .. } => {
                prop_assert!(h.abilities.claims, "a claim on a target without claims");
            }
            _ => {}
        }
    }

    // A stale token is aborted first; a good one is resumed and nothing else happens. (A
    // plan blocked by divergence does nothing at all, the abort included.)
    if let (Some(token), None) = (&dst.receive_resume_token, &plan.blocked) {
        let first = plan.steps.first().map(|s| &s.action);
        if token_is_stale(h, token, raw) {
            prop_assert!(
                matches!(first, Some(Action::AbortReceive { .. })),
                "stale token not aborted"
            );
        } else {
            let resumed = matches!(first, Some(Action::Send(SendStep { stream: Stream::Resume { token: t, .. }, .. })) if *t == token.token);
            prop_assert!(resumed, "good token not resumed");
            prop_assert_eq!(plan.steps.len(), 1);
        }
    }

    // Not diverged when the target's newest is shared and untouched.
    let newest_on_target = dst.newest_snapshot();
    if dst.receive_resume_token.is_none()
        && dst.written_since_newest == 0
        && newest_on_target.is_some_and(|t| source_txg(src, t.guid).is_some())
    {
        prop_assert!(plan.divergence.is_none(), "false divergence");
    }
    // Divergence: with Fail nothing at all; with Rotate the old dataset is renamed first.
    if plan.divergence.is_some() {
        if h.rotate {
            let renamed = plan
                .steps
                .iter()
                .any(|s| matches!(s.action, Action::RenameTarget { .. }));
            prop_assert!(plan.blocked.is_some() || renamed, "diverged without rename");
        } else {
            prop_assert!(plan.steps.is_empty());
            prop_assert_eq!(
                plan.blocked.as_ref().map(|b| b.code),
                Some(BlockedCode::Diverged)
            );
        }
    }

    let mut sorted: Vec<&SnapshotInfo> = dst.snapshots.iter().collect();
    sorted.sort_by_key(|s| s.createtxg);
    let mut t = TargetState {
        present: dst.exists,
        guids: sorted.iter().map(|s| s.guid).collect(),
        written: dst.written_since_newest,
        token: dst.receive_resume_token.is_some(),
    };
    let common = plan.newest_common.as_ref().map(|c| c.guid);
    for step in &plan.steps {
        prop_assert!(!step.reason.message.is_empty());
        match &step.action {
            Action::AbortReceive { target } => {
                prop_assert_eq!(target, &dst.dataset);
                prop_assert!(t.token, "abort without a token");
                t.token = false;
                if t.guids.is_empty() {
                    t.present = false;
                }
            }
            Action::RenameTarget { from, to } => {
                prop_assert_eq!(from, &dst.dataset);
                let prefix = format!("{}-diverged-", dst.dataset);
                prop_assert!(to.as_str().starts_with(&prefix), "rotated to {}", to);
                prop_assert!(plan.divergence.is_some() && h.rotate);
                t = TargetState {
                    present: false,
                    guids: Vec::new(),
                    written: 0,
                    token: false,
                };
            }
            Action::Send(send) => {
                check_receive(&send.receive, h)?;
                let created: Vec<u64> = match &send.stream {
                    Stream::Full { guid, .. } => {
                        // A full stream only lands where there is no dataset (no -F).
                        prop_assert!(!t.present, "full receive over an existing target");
                        vec![*guid]
                    }
                    Stream::Incremental {
                        base,
                        to_guid,
                        intermediates,
                        ..
                    } => {
                        prop_assert!(t.present && !t.token);
                        // No rollback needed: the base is the target's newest snapshot and
                        // nothing was written since.
                        prop_assert_eq!(
                            t.guids.last(),
                            Some(&base.guid()),
                            "the target has something newer than the base"
                        );
                        prop_assert_eq!(t.written, 0, "target written since the base");
                        if matches!(base, Base::Bookmark { .. }) {
                            prop_assert!(!intermediates, "-I from a bookmark");
                        }
                        let from = source_txg(src, base.guid()).expect("base on the source");
                        let to = source_txg(src, *to_guid).expect("to on the source");
                        prop_assert!(from < to, "an incremental that goes backwards");
                        let mut created: Vec<&SnapshotInfo> = src
                            .snapshots
                            .iter()
                            .filter(|s| {
                                s.createtxg == to
                                    || (*intermediates && s.createtxg > from && s.createtxg < to)
                            })
                            .collect();
                        created.sort_by_key(|s| s.createtxg);
                        created.iter().map(|s| s.guid).collect()
                    }
                    Stream::Resume { token, to_guid } => {
                        prop_assert!(t.token, "resume without a token");
                        prop_assert_eq!(
                            Some(token),
                            dst.receive_resume_token.as_ref().map(|r| &r.token)
                        );
                        to_guid.iter().copied().collect()
                    }
                };
                t.present = true;
                t.token = false;
                t.written = 0;
                t.guids.extend(&created);
                check_after_send(h, policy, send, &created, not_ours)?;
            }
            Action::Hold {
                side,
                guid,
                tag: t_tag,
                ..
            } => {
                prop_assert_eq!(t_tag, &tag);
                match side {
                    Side::Target => prop_assert!(t.guids.contains(guid)),
                    Side::Source => prop_assert!(src.snapshot_by_guid(*guid).is_some()),
                }
            }
            Action::Release {
                guid, tag: t_tag, ..
            } => {
                prop_assert_eq!(t_tag, &tag, "released another's hold");
                prop_assert_ne!(Some(*guid), common, "released the newest common snapshot");
            }
            Action::Bookmark { guid, .. } => {
                prop_assert!(src.snapshot_by_guid(*guid).is_some());
            }
            Action::DestroyBookmark { bookmark, guid } => {
                let name = bookmark.short().to_string();
                prop_assert!(
                    !not_ours.contains(&name),
                    "destroyed a foreign bookmark {}",
                    name
                );
                prop_assert_ne!(Some(*guid), common, "destroyed the common bookmark");
            }
            // A claim outside a send's follow-up repairs a lost one: only unowned target
            // snapshots that are selected source snapshots, with their GUIDs.
            Action::SetOwner { snapshots, owner } => {
                prop_assert_eq!(owner, &owner_of_policy(policy));
                for r in snapshots {
                    let t = dst.snapshot_by_guid(r.guid);
                    prop_assert!(
                        t.is_some_and(|t| t.owner.is_none()),
                        "claimed an owned or absent target snapshot"
                    );
                    let s = src.snapshot_by_guid(r.guid);
                    prop_assert!(
                        s.is_some_and(|s| picked(h, s)),
                        "claimed what the selection did not pick"
                    );
                }
            }
        }
    }

    // The newest common snapshot ends the plan held on both sides and bookmarked on the
    // source (a resume and a blocked plan change nothing yet; retention keeps it through
    // `protect`).
    let resumes = plan
        .sends()
        .any(|s| matches!(s.stream, Stream::Resume { .. }));
    if let (Some(c), None, None, false) = (
        &plan.newest_common,
        &plan.blocked,
        &plan.divergence,
        resumes,
    ) {
        let planned = |f: &dyn Fn(&Action) -> bool| plan.steps.iter().any(|s| f(&s.action));
        let held_on = |side: Side, inv: &DatasetInventory| {
            inv.has_hold(c.guid, tag.as_str())
                || planned(
                    &|a| matches!(a, Action::Hold { side: sd, guid, .. } if *sd == side && *guid == c.guid),
                )
        };
        if h.abilities.holds {
            prop_assert!(held_on(Side::Target, dst), "common not held on the target");
        }
        if c.on_source {
            prop_assert!(held_on(Side::Source, src), "common not held on the source");
            let s = src.snapshot_by_guid(c.guid).expect("on source");
            let own = bookmark_name(&src.dataset, s, policy)
                .expect("name")
                .short();
            let bookmarked = src
                .bookmarks
                .iter()
                .any(|b| b.name == own && b.guid == c.guid)
                || planned(&|a| matches!(a, Action::Bookmark { guid, .. } if *guid == c.guid));
            prop_assert!(bookmarked, "common not bookmarked by the policy");
        }
    }
    Ok(())
}

/// What runs after a send: bookkeeping only, for what the send delivered.
fn check_after_send(
    h: &History,
    policy: &str,
    send: &SendStep,
    created: &[u64],
    not_ours: &HashSet<String>,
) -> Result<(), TestCaseError> {
    let tag = hold_tag(policy);
    let to_guid = created.last().copied();
    for step in &send.on_success {
        match &step.action {
            Action::Hold { tag: t, .. } | Action::Release { tag: t, .. } => {
                prop_assert_eq!(t, &tag, "touched another's hold");
                if let Action::Release { guid, .. } = &step.action {
                    prop_assert_ne!(Some(*guid), to_guid, "released what was just sent");
                }
            }
            Action::Bookmark { guid, .. } => prop_assert_eq!(Some(*guid), to_guid),
            Action::DestroyBookmark { bookmark, guid } => {
                let name = bookmark.short().to_string();
                prop_assert!(
                    !not_ours.contains(&name),
                    "destroyed a foreign bookmark {}",
                    name
                );
                prop_assert_ne!(Some(*guid), to_guid);
            }
            Action::SetOwner { snapshots, owner } => {
                prop_assert_eq!(owner, &owner_of_policy(policy));
                for name in snapshots {
                    prop_assert_eq!(name.snapshot.dataset(), h.target.dataset.clone());
                    let s = h
                        .source
                        .snapshots
                        .iter()
                        .find(|s| s.name == name.snapshot.short())
                        .expect("a claimed snapshot is a source snapshot");
                    prop_assert_eq!(s.guid, name.guid, "claimed with another snapshot's GUID");
                    prop_assert!(
                        created.contains(&s.guid),
                        "claimed what the send did not create"
                    );
                    prop_assert!(
                        picked(h, s),
                        "claimed {} that the selection did not pick",
                        s.name
                    );
                }
            }
            Action::AbortReceive { .. } | Action::RenameTarget { .. } | Action::Send(_) => {
                prop_assert!(
                    false,
                    "a follow-up that is not bookkeeping: {:?}",
                    step.action
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn replication_invariants(h in arb_history()) {
        prop_assert_eq!(bookmark_suffix(MINE), bookmark_suffix(OTHER));
        for (policy, not_ours) in [(MINE, &h.not_mine), (OTHER, &h.not_others)] {
            let plan = plan_for(&h, policy);
            check_plan(&h, policy, &plan, not_ours)?;
        }
    }

    /// Inventories list snapshots in any order: a plan does not depend on it.
    #[test]
    fn plans_do_not_depend_on_listing_order(h in arb_history(), which in 1u8..4) {
        let mut shuffled = h.clone();
        if which & 1 != 0 {
            shuffled.source.snapshots.reverse();
        }
        if which & 2 != 0 {
            shuffled.target.snapshots.rotate_left(h.target.snapshots.len() / 2);
        }
        prop_assert_eq!(plan_for(&shuffled, MINE), plan_for(&h, MINE));
    }

    /// The hashed search finds the newest common snapshot a brute-force scan finds (the
    /// oracle stands in for the lockstep walk this once compared it with, now dropped).
    #[test]
    fn the_common_snapshot_search_agrees_with_brute_force(h in arb_history()) {
        let guid = |c: Option<SourceCommon<'_>>| c.map(|c| match c {
            SourceCommon::Snapshot(x) => (x.guid, false),
            SourceCommon::Bookmark(b) => (b.guid, true),
        });
        prop_assert_eq!(
            guid(newest_common(&h.source, &h.target)),
            guid(naive_newest_common(&h.source, &h.target))
        );
    }
}
