use std::collections::HashSet;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use tidepool_api::replication_policy::{SendOptions, SnapshotSelection};
use tidepool_api::values::ResumeToken;
use tidepool_api::{DatasetName, OnDivergence, Owner};

use super::common::{SourceCommon, newest_common};
use super::*;
use crate::inventory::{BookmarkInfo, DatasetInventory, HoldInfo, PartialReceive, SnapshotInfo};

const POLICY: &str = "ns/offsite";

fn tok(s: &str) -> ResumeToken {
    s.parse().expect("token")
}

/// The newest common snapshot by brute force: every pair, newest `createtxg` wins, a
/// snapshot over a bookmark of the same txg. The oracle for [`newest_common`].
fn naive_newest_common<'a>(
    src: &'a DatasetInventory,
    dst: &DatasetInventory,
) -> Option<SourceCommon<'a>> {
    let on_target = |guid: u64| dst.snapshots.iter().any(|t| t.guid == guid);
    let mut best: Option<SourceCommon<'a>> = None;
    for s in src.snapshots.iter().filter(|s| on_target(s.guid)) {
        if best.is_none_or(|b| s.createtxg >= b.createtxg()) {
            best = Some(SourceCommon::Snapshot(s));
        }
    }
    for b in src.bookmarks.iter().filter(|b| on_target(b.guid)) {
        if best.is_none_or(|x| b.createtxg > x.createtxg()) {
            best = Some(SourceCommon::Bookmark(b));
        }
    }
    best
}

fn owner(text: &str) -> Owner {
    text.parse().expect("owner")
}

/// The owner `POLICY` records on what it receives.
fn policy_owner() -> Owner {
    owner("ReplicationPolicy/ns/offsite")
}

/// The owner a policy named `<namespace>/<name>` records on what it receives.
fn owner_of_policy(policy: &str) -> Owner {
    owner(&format!("ReplicationPolicy/{policy}"))
}

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn now() -> Timestamp {
    ts("2026-11-22T12:00:00Z")
}

/// Snapshot number `i` of the source history: guid and txg follow from `i`.
fn snap(i: u64) -> SnapshotInfo {
    SnapshotInfo {
        name: format!("tidepool_s{i:03}_h").parse().expect("name"),
        guid: 0xa000 + i,
        createtxg: 100 + 10 * i,
        creation: ts("2026-11-01T00:00:00Z") + SignedDuration::from_hours(i as i64),
        owner: Some(owner("SnapshotSchedule/ns/hourly")),
        held: false,
    }
}

/// The same snapshot as received on the target: same guid and name, its own txg.
fn received(i: u64) -> SnapshotInfo {
    SnapshotInfo {
        createtxg: 5000 + 7 * i,
        ..snap(i)
    }
}

fn source(ids: &[u64]) -> DatasetInventory {
    DatasetInventory::with_snapshots(
        "tank/db".parse().expect("dataset"),
        ids.iter().map(|i| snap(*i)).collect(),
    )
}

fn target(ids: &[u64]) -> DatasetInventory {
    DatasetInventory::with_snapshots(
        "backup/db".parse().expect("dataset"),
        ids.iter().map(|i| received(*i)).collect(),
    )
}

fn absent_target() -> DatasetInventory {
    DatasetInventory::absent("backup/db".parse().expect("dataset"))
}

fn bookmark_of(i: u64, name: &str) -> BookmarkInfo {
    let s = snap(i);
    BookmarkInfo {
        name: name.parse().expect("name"),
        guid: s.guid,
        createtxg: s.createtxg,
        creation: s.creation,
    }
}

struct Setup {
    source: DatasetInventory,
    target: DatasetInventory,
    send: SendOptions,
    selection: SnapshotSelection,
    on_divergence: OnDivergence,
    resume_failed: Option<ResumeFailure>,
    selection_owner: Option<Owner>,
    owner: Owner,
    target_abilities: TargetAbilities,
}

impl Setup {
    fn new(source: DatasetInventory, target: DatasetInventory) -> Self {
        Self {
            source,
            target,
            send: SendOptions::default(),
            selection: SnapshotSelection {
                intermediates: true,
                ..Default::default()
            },
            on_divergence: OnDivergence::Fail,
            resume_failed: None,
            selection_owner: None,
            owner: policy_owner(),
            target_abilities: TargetAbilities::AGENT_POOL,
        }
    }

    fn plan(&self) -> ReplicationPlan {
        let input = ReplicationInput {
            policy: POLICY,
            source: &self.source,
            target: &self.target,
            send: &self.send,
            selection: &self.selection,
            selection_owner: self.selection_owner.as_ref(),
            owner: &self.owner,
            on_divergence: self.on_divergence,
            resume_failed: self.resume_failed.as_ref(),
            target_abilities: self.target_abilities,
        };
        plan(&input, now())
    }

    /// Mark the newest common snapshot `i` as protected already (held on both sides,
    /// bookmarked on the source), as after an earlier successful step.
    fn protected(mut self, i: u64) -> Self {
        let tag = hold_tag(POLICY);
        self.source.holds.push(HoldInfo {
            guid: snap(i).guid,
            tag: tag.to_string(),
        });
        self.target.holds.push(HoldInfo {
            guid: snap(i).guid,
            tag: tag.to_string(),
        });
        let bm = bookmark_name(&self.source.dataset, &snap(i), POLICY).expect("name");
        self.source
            .bookmarks
            .push(bookmark_of(i, bm.short().as_str()));
        self
    }
}

/// A compact description of a plan: one line per step.
fn describe(plan: &ReplicationPlan) -> Vec<String> {
    let short = |n: &str| {
        n.rsplit_once(['@', '#'])
            .map_or(n.to_owned(), |(_, s)| s.to_owned())
    };
    plan.steps
        .iter()
        .map(|s| match &s.action {
            Action::AbortReceive { target } => format!("abort {target}"),
            Action::RenameTarget { to, .. } => format!("rename {to}"),
            Action::Send(send) => match &send.stream {
                Stream::Full { snapshot, .. } => format!("full {}", short(snapshot.as_str())),
                Stream::Incremental {
                    base,
                    to,
                    intermediates,
                    ..
                } => {
                    let base = match base {
                        Base::Snapshot { name, .. } => short(name.as_str()),
                        Base::Bookmark { name, .. } => format!("#{}", short(name.as_str())),
                    };
                    let flag = if *intermediates { "-I" } else { "-i" };
                    format!("{flag} {base} {}", short(to.as_str()))
                }
                Stream::Resume { token, .. } => format!("resume {token}"),
            },
            Action::Hold { side, snapshot, .. } => {
                format!("hold {side:?} {}", short(snapshot.as_str()))
            }
            Action::Release { side, snapshot, .. } => {
                format!("release {side:?} {}", short(snapshot.as_str()))
            }
            Action::Bookmark { snapshot, .. } => format!("bookmark {}", short(snapshot.as_str())),
            Action::DestroyBookmark { bookmark, .. } => {
                format!("destroy bookmark {}", short(bookmark.as_str()))
            }
            Action::SetOwner { snapshots, .. } => format!("claim {}", snapshots.len()),
        })
        .collect()
}

#[test]
fn first_run_is_a_full_send() {
    // Intermediates: the oldest in full, then -I to the newest.
    let s = Setup::new(source(&[1, 2, 3]), absent_target());
    let plan = s.plan();
    assert_eq!(
        describe(&plan),
        ["full tidepool_s001_h", "-I tidepool_s001_h tidepool_s003_h"]
    );
    assert_eq!(plan.steps[0].reason.code, ReasonCode::InitialFullSend);
    assert!(plan.divergence.is_none() && plan.blocked.is_none());
    // Without: the newest alone.
    let mut s = Setup::new(source(&[1, 2, 3]), absent_target());
    s.selection.intermediates = false;
    assert_eq!(describe(&s.plan()), ["full tidepool_s003_h"]);
}

#[test]
fn incremental_from_the_newest_common_snapshot_by_guid() {
    let mut s = Setup::new(source(&[1, 2, 3, 4, 5]), target(&[1, 2, 3])).protected(3);
    // The target's copy of 3 has another name: identity is the guid.
    s.target.snapshots[2].name = "renamed-on-target".parse().expect("name");
    let plan = s.plan();
    assert_eq!(describe(&plan), ["-I tidepool_s003_h tidepool_s005_h"]);
    let send = plan.sends().next().expect("send");
    assert_eq!(send.stream.base_guid(), Some(snap(3).guid));
    assert_eq!(plan.steps[0].reason.code, ReasonCode::Incremental);
    assert_eq!(
        plan.newest_common.as_ref().map(|c| c.guid),
        Some(snap(3).guid)
    );
    assert_eq!(
        plan.newest_common.as_ref().map(|c| c.name.as_str()),
        Some("renamed-on-target")
    );
    // The receive lands in the target, resumable, with nothing the policy did not ask for
    // (the type itself has no way to say `-F` or to mount).
    assert_eq!(send.receive.target(), &s.target.dataset);
    assert!(send.receive.resumable());
    assert!(send.receive.set().is_empty() && send.receive.exclude().is_empty());
    // What happens after: claim the two received snapshots, hold 5 on both sides,
    // bookmark it, destroy 3's bookmark, then release 3's holds (which vouch for it).
    let after: Vec<String> = describe(&ReplicationPlan {
        steps: send.on_success.clone(),
        divergence: None,
        blocked: None,
        newest_common: None,
    });
    assert_eq!(
        after,
        [
            "claim 2",
            "hold Source tidepool_s005_h",
            "hold Target tidepool_s005_h",
            "bookmark tidepool_s005_h",
            &format!(
                "destroy bookmark tidepool_s003_h{}",
                bookmark_suffix(POLICY)
            ),
            "release Source tidepool_s003_h",
            "release Target renamed-on-target",
        ]
    );

    // -i when the policy skips intermediates.
    s.selection.intermediates = false;
    assert_eq!(describe(&s.plan()), ["-i tidepool_s003_h tidepool_s005_h"]);
}

#[test]
fn a_target_without_holds_or_claims_is_protected_on_the_source_only() {
    let abilities = TargetAbilities {
        holds: false,
        claims: false,
    };
    // After a send: the source's hold and bookmark, nothing asked of the target.
    let mut s = Setup::new(source(&[1, 2, 3]), target(&[1])).protected(1);
    s.target.holds.clear();
    s.target_abilities = abilities;
    let plan = s.plan();
    let send = plan.sends().next().expect("send");
    let after: Vec<String> = describe(&ReplicationPlan {
        steps: send.on_success.clone(),
        divergence: None,
        blocked: None,
        newest_common: None,
    });
    assert_eq!(
        after,
        [
            "hold Source tidepool_s003_h",
            "bookmark tidepool_s003_h",
            &format!(
                "destroy bookmark tidepool_s001_h{}",
                bookmark_suffix(POLICY)
            ),
            "release Source tidepool_s001_h",
        ]
    );
    // Up to date, with unclaimed, unheld copies on the target: nothing to repair there.
    let unclaimed = || {
        let mut t = target(&[1, 2]);
        for s in &mut t.snapshots {
            s.owner = None;
        }
        Setup::new(source(&[1, 2]), t)
    };
    let mut s = unclaimed();
    s.target_abilities = abilities;
    assert_eq!(
        describe(&s.plan()),
        ["hold Source tidepool_s002_h", "bookmark tidepool_s002_h"]
    );
    // The same with an agent's pool: the target's hold and the claim are planned.
    let agent = describe(&unclaimed().plan());
    assert!(
        agent.contains(&"hold Target tidepool_s002_h".to_owned()),
        "{agent:?}"
    );
    assert!(agent.contains(&"claim 2".to_owned()), "{agent:?}");
}

#[test]
fn plans_feed_retention_protections() {
    let s = Setup::new(source(&[1, 2, 3, 4]), target(&[1, 2])).protected(2);
    let plan = s.plan();
    let mut p = crate::retention::Protections::new();
    plan.protect(POLICY, &mut p);
    assert!(matches!(
        p.get(snap(2).guid),
        Some(crate::retention::Protection::ReplicationBase { .. })
    ));
    plan.sends()
        .next()
        .expect("send")
        .protect_in_flight(POLICY, &mut p);
    assert!(matches!(
        p.get(snap(4).guid),
        Some(crate::retention::Protection::TransferInUse { .. })
    ));
    // The base is both; the later protection says why it is kept now.
    assert!(p.get(snap(2).guid).is_some());
    assert!(p.get(snap(3).guid).is_none());
}

#[test]
fn up_to_date_protects_the_common_snapshot_once() {
    let s = Setup::new(source(&[1, 2, 3]), target(&[1, 2, 3]));
    let plan = s.plan();
    assert_eq!(
        describe(&plan),
        [
            "hold Source tidepool_s003_h",
            "bookmark tidepool_s003_h",
            "hold Target tidepool_s003_h"
        ]
    );
    assert!(plan.is_up_to_date());
    assert!(
        plan.steps
            .iter()
            .all(|s| s.reason.code == ReasonCode::ProtectCommon)
    );
    // Once protected, nothing.
    let s = Setup::new(source(&[1, 2, 3]), target(&[1, 2, 3])).protected(3);
    assert!(s.plan().steps.is_empty());
}

#[test]
fn from_a_bookmark_when_the_source_lost_the_common_snapshot() {
    // The source destroyed 3 (the target's newest) but kept a bookmark of it.
    let mut s = Setup::new(source(&[1, 4, 5, 6]), target(&[1, 2, 3]));
    s.source.bookmarks.push(bookmark_of(3, "keep3"));
    let plan = s.plan();
    assert_eq!(
        describe(&plan),
        [
            "hold Target tidepool_s003_h",
            "-i #keep3 tidepool_s004_h",
            "-I tidepool_s004_h tidepool_s006_h"
        ]
    );
    let codes: Vec<ReasonCode> = plan.steps.iter().map(|s| s.reason.code).collect();
    assert_eq!(
        codes,
        [
            ReasonCode::ProtectCommon,
            ReasonCode::IncrementalFromBookmark,
            ReasonCode::CarryIntermediates
        ]
    );
    assert_eq!(
        plan.newest_common.as_ref().map(|c| c.on_source),
        Some(false)
    );
    // Without intermediates, one step straight to the newest.
    s.selection.intermediates = false;
    assert_eq!(
        describe(&s.plan()),
        ["hold Target tidepool_s003_h", "-i #keep3 tidepool_s006_h"]
    );
}

/// A hold tag spells the policy out up to 200 bytes and is a hash beyond (OpenZFS refuses
/// tags of 256 bytes and more; the margin keeps clear of that limit).
#[test]
fn long_policy_names_get_a_hashed_hold_tag() {
    let short = hold_tag("ns/offsite");
    assert_eq!(short.as_str(), "tidepool:ns/offsite");
    let long = format!("ns/{}", "a".repeat(200));
    let tag = hold_tag(&long);
    assert!(tag.as_str().len() <= 200, "{tag}");
    assert!(tag.as_str().starts_with("tidepool:"), "{tag}");
    assert_ne!(tag.as_str(), format!("tidepool:{long}"));
    assert_eq!(tag, hold_tag(&long), "stable");
}

/// A token's base must be on both sides: on the source as a snapshot or a bookmark of it,
/// and on the target as a snapshot. Each side decides alone (a `cargo mutants` run found
/// that no case had the base gone from one side only).
#[test]
fn a_token_base_counts_on_the_source_as_a_snapshot_or_a_bookmark() {
    let token = PartialReceive {
        token: tok("1-abc-def"),
        to_guid: Some(snap(4).guid),
        from_guid: Some(snap(1).guid),
        raw: Some(false),
    };
    let first_step = |source: DatasetInventory| {
        let mut s = Setup::new(source, target(&[1, 2, 3])).protected(3);
        s.target.receive_resume_token = Some(token.clone());
        let plan = s.plan();
        describe(&plan).first().cloned().unwrap_or_default()
    };
    assert_eq!(
        first_step(source(&[2, 3, 4, 5])),
        "abort backup/db",
        "the base is gone from the source (no snapshot, no bookmark) though the target has it"
    );
    let mut bookmarked = source(&[2, 3, 4, 5]);
    bookmarked.bookmarks.push(bookmark_of(1, "kept"));
    assert_eq!(
        first_step(bookmarked),
        "resume 1-abc-def",
        "a bookmark of the base on the source is enough to resume"
    );
    assert_eq!(
        first_step(source(&[1, 2, 3, 4, 5])),
        "resume 1-abc-def",
        "the base as a snapshot on the source is enough to resume"
    );
}

#[test]
fn resume_tokens() {
    let token = |to: Option<u64>, from: Option<u64>, raw: Option<bool>| PartialReceive {
        token: tok("1-abc-def"),
        to_guid: to.map(|i| snap(i).guid),
        from_guid: from.map(|i| snap(i).guid),
        raw,
    };
    struct Case {
        name: &'static str,
        token: PartialReceive,
        failed: bool,
        encrypted: bool,
        want: Vec<&'static str>,
    }
    let cases = [
        Case {
            name: "a valid token is resumed, nothing else",
            token: token(Some(4), Some(3), Some(false)),
            failed: false,
            encrypted: false,
            want: vec!["resume 1-abc-def"],
        },
        Case {
            name: "an opaque token is resumed",
            token: PartialReceive::opaque(tok("1-abc-def")),
            failed: false,
            encrypted: false,
            want: vec!["resume 1-abc-def"],
        },
        Case {
            name: "the last resume of this token failed: abort and plan afresh",
            token: PartialReceive::opaque(tok("1-abc-def")),
            failed: true,
            encrypted: false,
            want: vec!["abort backup/db", "-I tidepool_s003_h tidepool_s005_h"],
        },
        Case {
            name: "its snapshot is gone from the source",
            token: token(Some(9), Some(3), None),
            failed: false,
            encrypted: false,
            want: vec!["abort backup/db", "-I tidepool_s003_h tidepool_s005_h"],
        },
        Case {
            name: "its base is gone",
            token: token(Some(4), Some(0), None),
            failed: false,
            encrypted: false,
            want: vec!["abort backup/db", "-I tidepool_s003_h tidepool_s005_h"],
        },
        Case {
            name: "a raw token while the policy now sends non-raw (unencrypted source)",
            token: token(Some(4), Some(3), Some(true)),
            failed: false,
            encrypted: false,
            want: vec!["abort backup/db", "-I tidepool_s003_h tidepool_s005_h"],
        },
        Case {
            name: "a non-raw token for an encrypted source",
            token: token(Some(4), Some(3), Some(false)),
            failed: false,
            encrypted: true,
            want: vec!["abort backup/db", "-I tidepool_s003_h tidepool_s005_h"],
        },
    ];
    for c in cases {
        let mut s = Setup::new(source(&[1, 2, 3, 4, 5]), target(&[1, 2, 3])).protected(3);
        s.source.encrypted = c.encrypted;
        s.target.receive_resume_token = Some(c.token);
        if c.failed {
            s.resume_failed = Some(ResumeFailure {
                token: tok("1-abc-def"),
                error: "cannot resume send: 'tank/db@x' used in the initial send no longer exists"
                    .into(),
            });
        }
        let plan = s.plan();
        assert_eq!(describe(&plan), c.want, "{}", c.name);
        let first = &plan.steps[0].reason;
        if c.want[0].starts_with("abort") {
            assert_eq!(first.code, ReasonCode::StaleResumeToken, "{}", c.name);
            assert!(first.message.contains("stale"), "{}", c.name);
        } else {
            assert_eq!(first.code, ReasonCode::ResumeInterrupted, "{}", c.name);
        }
    }
}

#[test]
fn interrupted_first_receive() {
    // A full receive was cut short: the target exists with a token and no snapshots.
    let mut t = target(&[]);
    t.receive_resume_token = Some(PartialReceive {
        token: tok("1-full"),
        to_guid: Some(snap(1).guid),
        from_guid: None,
        raw: Some(false),
    });
    let s = Setup::new(source(&[1, 2]), t.clone());
    assert_eq!(describe(&s.plan()), ["resume 1-full"]);
    // Stale: abort (which removes the partial dataset) and start over with a full send.
    let mut s = Setup::new(source(&[1, 2]), t);
    s.resume_failed = Some(ResumeFailure {
        token: tok("1-full"),
        error: "checksum mismatch".into(),
    });
    assert_eq!(
        describe(&s.plan()),
        [
            "abort backup/db",
            "full tidepool_s001_h",
            "-I tidepool_s001_h tidepool_s002_h"
        ]
    );
}

#[test]
fn encryption() {
    // (source encrypted, send.raw, want raw flag or refusal)
    let cases = [
        (true, true, Ok(true)),
        (false, true, Ok(false)),
        (false, false, Ok(false)),
        (true, false, Err(BlockedCode::PlaintextOfEncryptedSource)),
    ];
    for (encrypted, raw, want) in cases {
        let mut s = Setup::new(source(&[1, 2]), absent_target());
        s.source.encrypted = encrypted;
        s.send.raw = raw;
        let plan = s.plan();
        let got = match &plan.blocked {
            Some(b) => Err(b.code),
            None => Ok(plan.sends().all(|send| send.flags.raw)),
        };
        assert_eq!(got, want, "encrypted {encrypted} raw {raw}");
        if got.is_err() {
            assert!(plan.steps.is_empty());
        }
    }
}

#[test]
fn divergence() {
    struct Case {
        name: &'static str,
        target: DatasetInventory,
        kind: &'static str,
    }
    let mut written = target(&[1, 2, 3]);
    written.written_since_newest = 4096;
    let mut foreign = target(&[]);
    foreign.snapshots.push(SnapshotInfo {
        guid: 0xdead,
        ..received(7)
    });
    let mut after_common = target(&[1, 2]);
    after_common.snapshots.push(SnapshotInfo {
        guid: 0xbeef,
        name: "made-on-target".parse().expect("name"),
        ..received(3)
    });
    let cases = [
        Case {
            name: "target has snapshots newer than the common one",
            target: after_common,
            kind: "SnapshotsAfterCommon",
        },
        Case {
            name: "source destroyed what the target still has newest",
            // The target has 4, the source no longer has it (nor a bookmark).
            target: target(&[1, 2, 3, 4]),
            kind: "SnapshotsAfterCommon",
        },
        Case {
            name: "no common snapshot",
            target: foreign,
            kind: "NoCommonSnapshot",
        },
        Case {
            name: "an empty dataset is in the way",
            target: target(&[]),
            kind: "NoCommonSnapshot",
        },
        Case {
            name: "written since the common snapshot",
            target: written,
            kind: "ModifiedSinceCommon",
        },
    ];
    for c in cases {
        let src = source(&[1, 2, 3, 5]);
        // Fail: report, change nothing.
        let mut s = Setup::new(src.clone(), c.target.clone());
        let plan = s.plan();
        let d = plan.divergence.as_ref().expect(c.name);
        assert_eq!(d.kind.as_str(), c.kind, "{}", c.name);
        assert_eq!(
            plan.blocked.as_ref().map(|b| b.code),
            Some(BlockedCode::Diverged),
            "{}",
            c.name
        );
        assert!(plan.steps.is_empty(), "{}", c.name);
        // Rotate: rename aside, then a full send into the now free name.
        s.on_divergence = OnDivergence::Rotate;
        let plan = s.plan();
        assert_eq!(
            describe(&plan),
            [
                "rename backup/db-diverged-20261122T120000Z",
                "full tidepool_s001_h",
                "-I tidepool_s001_h tidepool_s005_h"
            ],
            "{}",
            c.name
        );
        assert_eq!(
            plan.divergence.as_ref().map(|d| d.kind.as_str()),
            Some(c.kind)
        );
        assert!(plan.blocked.is_none());
        assert_eq!(plan.steps[0].reason.code, ReasonCode::RotateDiverged);
        assert_eq!(plan.steps[1].reason.code, ReasonCode::FullSendAfterRotate);
    }
}

#[test]
fn a_pool_root_cannot_rotate() {
    let mut t = target(&[]);
    t.dataset = "backup".parse().expect("dataset");
    t.snapshots.push(SnapshotInfo {
        guid: 0xdead,
        ..received(1)
    });
    let mut s = Setup::new(source(&[1]), t);
    s.on_divergence = OnDivergence::Rotate;
    let plan = s.plan();
    assert_eq!(
        plan.blocked.map(|b| b.code),
        Some(BlockedCode::CannotRotate)
    );
    assert!(plan.steps.is_empty());
}

#[test]
fn selection_picks_what_is_sent() {
    let mut src = source(&[1, 2, 3, 4]);
    src.snapshots[3].owner = Some(owner("SnapshotSchedule/ns/other"));
    src.snapshots[3].name = "manual-4".parse().expect("name");
    // By owner (scheduleName): 4 is another object's.
    let mut s = Setup::new(src.clone(), target(&[1])).protected(1);
    s.selection_owner = Some(owner("SnapshotSchedule/ns/hourly"));
    assert_eq!(describe(&s.plan()), ["-I tidepool_s001_h tidepool_s003_h"]);
    // By name prefix.
    let mut s = Setup::new(src.clone(), target(&[1])).protected(1);
    s.selection.name_prefix = Some("manual".into());
    assert_eq!(describe(&s.plan()), ["-I tidepool_s001_h manual-4"]);
    // Nothing selected.
    let mut s = Setup::new(src, absent_target());
    s.selection.name_prefix = Some("nope".into());
    assert_eq!(
        s.plan().blocked.map(|b| b.code),
        Some(BlockedCode::NoSourceSnapshots)
    );
    // No source.
    let mut s = Setup::new(source(&[]), absent_target());
    s.source.exists = false;
    assert_eq!(
        s.plan().blocked.map(|b| b.code),
        Some(BlockedCode::SourceMissing)
    );
}

#[test]
fn names_of_holds_bookmarks_and_rotations() {
    assert_eq!(hold_tag("ns/offsite").as_str(), "tidepool:ns/offsite");
    assert!(hold_tag(&"x".repeat(300)).as_str().len() < 40);
    // Not a valid tag spelled out (a space): the hashed form, still a valid tag.
    assert!(hold_tag("ns/a b").as_str().starts_with("tidepool:"));
    assert!(!hold_tag("ns/a b").as_str().contains(' '));
    let ds: DatasetName = "tank/db".parse().expect("dataset");
    let b = bookmark_name(&ds, &snap(1), POLICY).expect("bookmark");
    assert_eq!(
        b.as_str(),
        format!("tank/db#tidepool_s001_h{}", bookmark_suffix(POLICY))
    );
    let mut long = snap(1);
    long.name = "a".repeat(195).parse().expect("name");
    let b = bookmark_name(&ds, &long, POLICY).expect("bookmark");
    assert!(b.as_str().starts_with("tank/db#g000000000000a001_tp"));
    assert_eq!(
        rotated_name(&"backup/db".parse().expect("dataset"), now())
            .expect("name")
            .as_str(),
        "backup/db-diverged-20261122T120000Z"
    );
    assert!(
        rotated_name(
            &format!("backup/{}", "d".repeat(240)).parse().expect("ds"),
            now()
        )
        .is_err()
    );
}

#[path = "tests_labels.rs"]
mod labels;
#[path = "tests_props.rs"]
mod props;
#[path = "tests_safety.rs"]
mod safety;

// ---- simulated histories: schedule, replicate, prune, over many rounds ----

mod simulation {
    use super::*;
    use crate::retention::{self, Protections, RetentionRules};
    use jiff::tz::TimeZone;
    use tidepool_api::Retention;

    fn schedule_owner() -> Owner {
        owner("SnapshotSchedule/ns/hourly")
    }

    struct World {
        src: DatasetInventory,
        dst: DatasetInventory,
        next: u64,
        dst_txg: u64,
        t: Timestamp,
        /// Fail the command after this many more succeeded (counting the follow-up steps
        /// of a send too).
        fail_after: Option<usize>,
    }

    impl World {
        fn take_snapshot(&mut self, by_schedule: bool) {
            let i = self.next;
            self.next += 1;
            self.t += SignedDuration::from_mins(37);
            self.src.snapshots.push(SnapshotInfo {
                name: if by_schedule {
                    format!("tidepool_{i:05}_h")
                } else {
                    format!("manual{i:05}")
                }
                .parse()
                .expect("name"),
                guid: 0x5000_0000 + i * 7919,
                createtxg: 100 + i * 3,
                creation: self.t,
                owner: by_schedule.then(schedule_owner),
                held: false,
            });
        }

        fn inv(&mut self, side: Side) -> &mut DatasetInventory {
            match side {
                Side::Source => &mut self.src,
                Side::Target => &mut self.dst,
            }
        }

        fn refresh_held(inv: &mut DatasetInventory) {
            for s in &mut inv.snapshots {
                s.held = inv.holds.iter().any(|h| h.guid == s.guid);
            }
        }

        /// Execute the steps in order, as the controller and agents would; `fail_at` cuts
        /// the run short (a failed command). Returns false when it failed.
        fn execute(&mut self, steps: &[Step]) -> bool {
            for step in steps {
                match &mut self.fail_after {
                    Some(0) => return false,
                    Some(n) => *n -= 1,
                    None => {}
                }
                match &step.action {
                    Action::AbortReceive { .. } => self.dst.receive_resume_token = None,
                    Action::RenameTarget { .. } => {
                        panic!("no divergence in a normal history: {}", step.reason)
                    }
                    Action::Send(send) => {
                        let (base_txg, to_guid, all) = match &send.stream {
                            Stream::Full { guid, .. } => {
                                assert!(!self.dst.exists, "full receive over an existing target");
                                self.dst.exists = true;
                                (0, *guid, false)
                            }
                            Stream::Incremental {
                                base,
                                to_guid,
                                intermediates,
                                ..
                            } => {
                                assert!(
                                    self.dst.snapshots.iter().any(|s| s.guid == base.guid()),
                                    "base missing on target"
                                );
                                let txg = self
                                    .src
                                    .snapshots
                                    .iter()
                                    .map(|s| (s.guid, s.createtxg))
                                    .chain(self.src.bookmarks.iter().map(|b| (b.guid, b.createtxg)))
                                    .find(|(g, _)| *g == base.guid())
                                    .map(|(_, t)| t)
                                    .expect("base on source");
                                (txg, *to_guid, *intermediates)
                            }
                            Stream::Resume { .. } => unreachable!("no tokens here"),
                        };
                        let to_txg = self
                            .src
                            .snapshot_by_guid(to_guid)
                            .expect("to on source")
                            .createtxg;
                        let mut new: Vec<SnapshotInfo> = self
                            .src
                            .snapshots
                            .iter()
                            .filter(|s| {
                                s.createtxg == to_txg
                                    || (all && s.createtxg > base_txg && s.createtxg < to_txg)
                            })
                            .cloned()
                            .collect();
                        new.sort_by_key(|s| s.createtxg);
                        for mut s in new {
                            self.dst_txg += 1;
                            s.createtxg = self.dst_txg;
                            s.owner = None;
                            s.held = false;
                            self.dst.snapshots.push(s);
                        }
                        self.dst.written_since_newest = 0;
                        if !self.execute(&send.on_success) {
                            return false;
                        }
                    }
                    Action::Hold {
                        side, guid, tag, ..
                    } => {
                        let inv = self.inv(*side);
                        assert!(
                            inv.snapshots.iter().any(|s| s.guid == *guid),
                            "hold of a missing snapshot"
                        );
                        if !inv.has_hold(*guid, tag.as_str()) {
                            inv.holds.push(HoldInfo {
                                guid: *guid,
                                tag: tag.to_string(),
                            });
                        }
                        Self::refresh_held(inv);
                    }
                    Action::Release {
                        side, guid, tag, ..
                    } => {
                        let inv = self.inv(*side);
                        inv.holds
                            .retain(|h| !(h.guid == *guid && h.tag == tag.as_str()));
                        Self::refresh_held(inv);
                    }
                    Action::Bookmark { guid, bookmark, .. } => {
                        let s = self
                            .src
                            .snapshot_by_guid(*guid)
                            .expect("bookmark of a missing snapshot")
                            .clone();
                        if !self
                            .src
                            .bookmarks
                            .iter()
                            .any(|b| b.name == bookmark.short())
                        {
                            self.src.bookmarks.push(BookmarkInfo {
                                name: bookmark.short(),
                                guid: s.guid,
                                createtxg: s.createtxg,
                                creation: s.creation,
                            });
                        }
                    }
                    Action::DestroyBookmark { bookmark, .. } => {
                        self.src.bookmarks.retain(|b| b.name != bookmark.short());
                    }
                    Action::SetOwner { snapshots, owner } => {
                        for name in snapshots {
                            if let Some(s) = self
                                .dst
                                .snapshots
                                .iter_mut()
                                .find(|s| s.name == name.snapshot.short())
                            {
                                s.owner = Some(owner.clone());
                            }
                        }
                    }
                }
            }
            true
        }

        fn prune(
            &mut self,
            side: Side,
            retention: &Retention,
            owner: &Owner,
            protections: &Protections,
        ) {
            let tz = TimeZone::UTC;
            let rules = RetentionRules {
                retention,
                time_zone: &tz,
                owner,
                protections,
            };
            let inv = self.inv(side);
            let plan = retention::plan_dataset(&rules, inv);
            let gone: HashSet<u64> = plan.destroy.iter().map(|d| d.snapshot.guid).collect();
            for d in &plan.destroy {
                assert!(!d.snapshot.held, "retention destroyed a held snapshot");
            }
            inv.snapshots.retain(|s| !gone.contains(&s.guid));
        }
    }

    #[derive(Debug, Clone)]
    struct Round {
        snapshots: u8,
        replicate: bool,
        fail_at: Option<usize>,
        prune_source: bool,
        prune_target: bool,
        /// A person takes a snapshot of the source too, after the schedule's.
        manual: bool,
    }

    fn arb_round() -> impl Strategy<Value = Round> {
        (
            0u8..4,
            proptest::bool::weighted(0.6),
            proptest::option::weighted(0.2, 0usize..8),
            any::<bool>(),
            any::<bool>(),
            proptest::bool::weighted(0.2),
        )
            .prop_map(
                |(snapshots, replicate, fail_at, prune_source, prune_target, manual)| Round {
                    snapshots,
                    replicate,
                    fail_at,
                    prune_source,
                    prune_target,
                    manual,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Over random histories of snapshots, interrupted or skipped replication (target
        /// offline) and aggressive retention on both sides: once a replica exists the two
        /// sides never lose their common snapshot, never diverge, never need a new full
        /// send, and no send lacks its base.
        #[test]
        fn replication_survives_retention(
            rounds in proptest::collection::vec(arb_round(), 1..40),
            keep_last in 1i32..4,
            intermediates in any::<bool>(),
        ) {
            let mut w = World {
                src: DatasetInventory::with_snapshots("tank/db".parse().expect("ds"), Vec::new()),
                dst: DatasetInventory::absent("backup/db".parse().expect("ds")),
                next: 0,
                dst_txg: 10_000,
                t: ts("2026-01-01T00:00:00Z"),
                fail_after: None,
            };
            let retention = Retention { keep_last: Some(keep_last), ..Default::default() };
            let send = SendOptions::default();
            let selection = SnapshotSelection { intermediates, ..Default::default() };
            let mut replicated = false;
            let schedule = schedule_owner();
            let policy = policy_owner();
            for round in rounds {
                for _ in 0..round.snapshots {
                    w.take_snapshot(true);
                }
                if round.manual {
                    w.take_snapshot(false);
                }
                let input = ReplicationInput {
                    policy: POLICY,
                    source: &w.src,
                    target: &w.dst,
                    send: &send,
                    selection: &selection,
                    selection_owner: Some(&schedule),
                    owner: &policy,
                    on_divergence: OnDivergence::Fail,
                    resume_failed: None,
                    target_abilities: TargetAbilities::AGENT_POOL,
                };
                let plan = plan(&input, w.t);
                if replicated {
                    prop_assert!(plan.divergence.is_none(), "diverged: {:?}", plan.divergence);
                    prop_assert!(plan.blocked.is_none(), "blocked: {:?}", plan.blocked);
                    prop_assert!(plan.newest_common.is_some(), "lost the common snapshot");
                    prop_assert!(
                        plan.sends().all(|s| !matches!(s.stream, Stream::Full { .. })),
                        "a new full send after the replica existed"
                    );
                }
                let mut protections = Protections::new();
                plan.protect(POLICY, &mut protections);
                if round.replicate {
                    let steps = plan.steps.clone();
                    w.fail_after = round.fail_at;
                    w.execute(&steps);
                    w.fail_after = None;
                    replicated |= !w.dst.snapshots.is_empty();
                    // The controller's contract: retention runs with the protections of a
                    // replication plan made from the inventories as they are now (here
                    // added to the stale ones), so a send whose bookkeeping failed still
                    // protects what it delivered.
                    let input = ReplicationInput {
                        policy: POLICY,
                        source: &w.src,
                        target: &w.dst,
                        send: &send,
                        selection: &selection,
                        selection_owner: Some(&schedule),
                        owner: &policy,
                        on_divergence: OnDivergence::Fail,
                        resume_failed: None,
                        target_abilities: TargetAbilities::AGENT_POOL,
                    };
                    super::plan(&input, w.t).protect(POLICY, &mut protections);
                }
                if round.prune_source {
                    w.prune(Side::Source, &retention, &schedule, &protections);
                }
                // A person's snapshots that -I carried across stay theirs: unclaimed, so
                // neither side's retention ever destroys one.
                for inv in [&w.src, &w.dst] {
                    for s in inv.snapshots.iter().filter(|s| s.name.as_str().starts_with("manual")) {
                        prop_assert!(s.owner.is_none(), "{} claimed", s.name);
                    }
                }
                let manual_on_target: Vec<u64> = w
                    .dst
                    .snapshots
                    .iter()
                    .filter(|s| s.owner.is_none())
                    .map(|s| s.guid)
                    .collect();
                if round.prune_target {
                    w.prune(Side::Target, &retention, &policy, &protections);
                }
                for guid in manual_on_target {
                    prop_assert!(w.dst.snapshot_by_guid(guid).is_some(), "a person's snapshot pruned");
                }
            }
        }
    }
}

#[test]
fn receive_properties_pass_the_allowlist_or_nothing_is_planned() {
    use tidepool_api::replication_policy::PropertyOverride;
    let over = |name: &str, value: &str| PropertyOverride {
        name: name.parse().expect("name"),
        value: value.to_owned(),
    };
    // Allowed ones reach every receive as typed options.
    let mut s = Setup::new(source(&[1, 2]), absent_target());
    s.send.override_properties = vec![over("readonly", "on"), over("com.example:x", "y")];
    s.send.exclude_properties = vec!["compression".parse().expect("name")];
    let plan = s.plan();
    assert!(plan.blocked.is_none());
    assert_eq!(plan.sends().count(), 2);
    for send in plan.sends() {
        let set: Vec<String> = send.receive.set().iter().map(|p| p.to_string()).collect();
        assert_eq!(set, ["readonly=on", "com.example:x=y"]);
        let excluded: Vec<&str> = send
            .receive
            .exclude()
            .iter()
            .map(|p| p.name().as_str())
            .collect();
        assert_eq!(excluded, ["compression"]);
    }
    // A policy admitted before the allowlist (or past a broken schema) is refused by the
    // planner too, naming the field; nothing is sent.
    for (sets, excludes, field) in [
        (
            vec![over("mountpoint", "/etc")],
            vec![],
            "spec.send.overrideProperties[0]",
        ),
        (
            vec![over("readonly", "on"), over("canmount", "on")],
            vec![],
            "spec.send.overrideProperties[1]",
        ),
        (
            vec![over("tidepool.dev:owner", "x")],
            vec![],
            "spec.send.overrideProperties[0]",
        ),
        (
            vec![over("com.example:x", "a\rb")],
            vec![],
            "spec.send.overrideProperties[0]",
        ),
        (
            vec![],
            vec!["tidepool.dev:owner"],
            "spec.send.excludeProperties[0]",
        ),
        (vec![], vec!["mountpoint"], "spec.send.excludeProperties[0]"),
        (vec![over("atime", "off")], vec!["atime"], "spec.send"),
    ] {
        let mut s = Setup::new(source(&[1, 2]), absent_target());
        s.send.override_properties = sets;
        s.send.exclude_properties = excludes.iter().map(|n| n.parse().expect("name")).collect();
        let plan = s.plan();
        assert!(plan.steps.is_empty(), "{field}: {:?}", describe(&plan));
        let blocked = plan.blocked.expect("blocked");
        assert_eq!(blocked.code, BlockedCode::InvalidReceiveProperties);
        assert!(blocked.message.starts_with(field), "{}", blocked.message);
    }
}
