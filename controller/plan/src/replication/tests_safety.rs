//! Which bookmarks, holds and received snapshots a policy treats as its own.

use super::props::{MINE, OTHER};
use super::*;

/// The plan `policy` makes of the setup (recording its own owner on what it receives).
fn plan_as(s: &Setup, policy: &str) -> ReplicationPlan {
    let owner = owner_of_policy(policy);
    let input = ReplicationInput {
        policy,
        source: &s.source,
        target: &s.target,
        send: &s.send,
        selection: &s.selection,
        selection_owner: s.selection_owner.as_ref(),
        owner: &owner,
        on_divergence: s.on_divergence,
        resume_failed: s.resume_failed.as_ref(),
        target_abilities: TargetAbilities::AGENT_POOL,
    };
    plan(&input, now())
}

/// Every step of a plan, the follow-ups of its sends included.
fn all_steps(plan: &ReplicationPlan) -> Vec<&Step> {
    let mut out = Vec::new();
    for s in &plan.steps {
        out.push(s);
        if let Action::Send(send) = &s.action {
            out.extend(send.on_success.iter());
        }
    }
    out
}

fn destroyed_bookmarks(plan: &ReplicationPlan) -> Vec<String> {
    all_steps(plan)
        .into_iter()
        .filter_map(|s| match &s.action {
            Action::DestroyBookmark { bookmark, .. } => Some(bookmark.short().to_string()),
            _ => None,
        })
        .collect()
}

fn own_bookmark(policy: &str, i: u64) -> BookmarkInfo {
    let ds: DatasetName = "tank/db".parse().expect("dataset");
    let name = bookmark_name(&ds, &snap(i), policy).expect("name");
    bookmark_of(i, name.short().as_str())
}

fn add_hold(inv: &mut DatasetInventory, i: u64, policy: &str) {
    inv.holds.push(HoldInfo {
        guid: snap(i).guid,
        tag: hold_tag(policy).to_string(),
    });
}

/// MINE has protected 2 and now shares 3 with its target, which is behind the source.
fn mine_superseding_2() -> Setup {
    let mut s = Setup::new(source(&[1, 2, 3, 4, 5]), target(&[1, 2, 3]));
    add_hold(&mut s.source, 2, MINE);
    add_hold(&mut s.target, 2, MINE);
    s.source.bookmarks.push(own_bookmark(MINE, 2));
    s
}

#[test]
fn the_colliding_policies_really_collide() {
    // The tests below rely on it; a change of the hash needs a new pair.
    assert_eq!(bookmark_suffix(MINE), bookmark_suffix(OTHER));
    assert_ne!(hold_tag(MINE), hold_tag(OTHER));
    assert_eq!(
        own_bookmark(MINE, 1).name,
        own_bookmark(OTHER, 1).name,
        "same suffix, same bookmark name"
    );
}

#[test]
fn a_superseded_own_bookmark_is_destroyed() {
    // The control for the tests below: the rule does destroy what is this policy's.
    let plan = plan_as(&mine_superseding_2(), MINE);
    // Once as soon as 3 is protected, again after the send (each list stands alone).
    let own2 = own_bookmark(MINE, 2).name.to_string();
    assert_eq!(destroyed_bookmarks(&plan), [own2.clone(), own2]);
}

#[test]
fn foreign_bookmarks_with_the_policys_suffix_survive_every_plan() {
    let suffix = bookmark_suffix(MINE);
    let foreign = vec![
        // A person's, of a guid no snapshot here has.
        BookmarkInfo {
            guid: 0xe001,
            createtxg: 111,
            ..bookmark_of(1, &format!("user{suffix}"))
        },
        // A person's, named as the policy names snapshot 1's, of snapshot 4.
        BookmarkInfo {
            name: own_bookmark(MINE, 1).name,
            ..bookmark_of(4, "x")
        },
        // A person's, named in the policy's fallback form for snapshot 4, of snapshot 1.
        bookmark_of(1, &format!("g{:016x}{suffix}", snap(4).guid)),
        // OTHER's bookmark of 0 (the same name MINE would give it), which OTHER still
        // holds; MINE holds 0 too, from long ago.
        own_bookmark(OTHER, 0),
    ];
    let scenarios: Vec<(&str, Setup)> = vec![
        ("incremental", mine_superseding_2()),
        ("up to date", {
            let mut s = mine_superseding_2();
            s.target = target(&[1, 2, 3, 4, 5]);
            s
        }),
        ("from a bookmark", {
            let mut s = mine_superseding_2();
            s.source.snapshots.retain(|x| x.guid != snap(3).guid);
            s.source.bookmarks.push(own_bookmark(MINE, 3));
            s
        }),
        ("first full send", {
            let mut s = mine_superseding_2();
            s.target = absent_target();
            s
        }),
        ("rotated", {
            let mut s = mine_superseding_2();
            s.target.written_since_newest = 1;
            s.on_divergence = OnDivergence::Rotate;
            s
        }),
    ];
    for (name, mut s) in scenarios {
        for intermediates in [true, false] {
            s.selection.intermediates = intermediates;
            let mut with = Setup {
                source: s.source.clone(),
                target: s.target.clone(),
                send: s.send.clone(),
                selection: s.selection.clone(),
                on_divergence: s.on_divergence,
                resume_failed: None,
                selection_owner: None,
                owner: s.owner.clone(),
                target_abilities: s.target_abilities,
            };
            with.source.snapshots.insert(0, snap(0));
            with.source.bookmarks.extend(foreign.iter().cloned());
            add_hold(&mut with.source, 0, MINE);
            add_hold(&mut with.source, 0, OTHER);
            let plan = plan_as(&with, MINE);
            assert!(plan.blocked.is_none(), "{name}: {:?}", plan.blocked);
            let destroyed = destroyed_bookmarks(&plan);
            for f in &foreign {
                assert!(
                    !destroyed.contains(&f.name.to_string()),
                    "{name}: destroyed foreign {}",
                    f.name
                );
            }
            // Not vacuous: MINE's own superseded bookmark of 2 goes wherever the plan
            // moves the common snapshot on.
            if name != "up to date" && name != "rotated" {
                assert!(
                    destroyed.contains(&own_bookmark(MINE, 2).name.to_string()),
                    "{name}: {destroyed:?}"
                );
            }
        }
    }
}

#[test]
fn two_policies_on_one_source_never_touch_each_others_holds_or_bookmarks() {
    // MINE's target shares 3, OTHER's shares 2; both are protected; the suffixes collide.
    let mut src = source(&[1, 2, 3, 4, 5]);
    add_hold(&mut src, 3, MINE);
    add_hold(&mut src, 2, OTHER);
    src.bookmarks.push(own_bookmark(MINE, 3));
    src.bookmarks.push(own_bookmark(OTHER, 2));
    let mut mine_target = target(&[1, 2, 3]);
    add_hold(&mut mine_target, 3, MINE);
    let mut other_target = target(&[1, 2]);
    other_target.dataset = "offsite/db".parse().expect("dataset");
    add_hold(&mut other_target, 2, OTHER);
    for (policy, theirs, dst, own, foreign) in [
        (MINE, OTHER, mine_target, 3, 2),
        (OTHER, MINE, other_target, 2, 3),
    ] {
        let s = Setup::new(src.clone(), dst);
        let plan = plan_as(&s, policy);
        assert_eq!(
            destroyed_bookmarks(&plan),
            [own_bookmark(policy, own).name.to_string()],
            "{policy}"
        );
        for step in all_steps(&plan) {
            if let Action::Hold { tag, .. } | Action::Release { tag, .. } = &step.action {
                assert_ne!(tag, &hold_tag(theirs), "{policy} touched {theirs}'s hold");
                assert_eq!(tag, &hold_tag(policy));
            }
            if let Action::Release { guid, side, .. } = &step.action {
                assert!(
                    *side == Side::Target || *guid != snap(foreign).guid,
                    "{policy} released on {foreign}"
                );
            }
            if let Action::SetOwner { owner, .. } = &step.action {
                assert_eq!(owner, &owner_of_policy(policy));
            }
        }
    }
}

#[test]
fn claims_only_what_the_selection_picked() {
    // 2 and 4 are a person's, between the schedule's snapshots; -I carries them across.
    let mut src = source(&[1, 2, 3, 4, 5]);
    for i in [1, 3] {
        src.snapshots[i].owner = None;
        src.snapshots[i].name = format!("manual{i}").parse().expect("name");
    }
    let claims = |plan: &ReplicationPlan| -> Vec<Vec<String>> {
        all_steps(plan)
            .into_iter()
            .filter_map(|s| match &s.action {
                Action::SetOwner { snapshots, .. } => Some(
                    snapshots
                        .iter()
                        .map(|n| n.snapshot.short().to_string())
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .collect()
    };
    // By owner, incremental.
    let mut s = Setup::new(src.clone(), target(&[1])).protected(1);
    s.selection_owner = Some(owner("SnapshotSchedule/ns/hourly"));
    let plan = s.plan();
    assert_eq!(
        describe(&plan),
        ["-I tidepool_s001_h tidepool_s005_h"],
        "the intermediates travel"
    );
    assert_eq!(claims(&plan), [["tidepool_s003_h", "tidepool_s005_h"]]);
    // By name prefix, from an absent target: the full stream and the -I after it.
    let mut s = Setup::new(src.clone(), absent_target());
    s.selection.name_prefix = Some("tidepool_".into());
    let plan = s.plan();
    assert_eq!(
        claims(&plan),
        [
            vec!["tidepool_s001_h"],
            vec!["tidepool_s003_h", "tidepool_s005_h"]
        ]
    );
    // Any snapshot selected: everything received is claimed.
    let s = Setup::new(src, target(&[1])).protected(1);
    assert_eq!(
        claims(&s.plan()),
        [["manual1", "tidepool_s003_h", "manual3", "tidepool_s005_h"]]
    );
}

#[test]
fn a_hold_on_a_snapshot_newer_than_the_common_one_stays() {
    // The policy holds 4 on the source while its target shows 3 as the newest: a target
    // listing taken before 4's receive committed looks like this. Releasing 4 would let
    // source retention destroy what may already be the newest common snapshot.
    let mut s = Setup::new(source(&[1, 2, 3, 4, 5]), target(&[1, 2, 3])).protected(3);
    add_hold(&mut s.source, 4, POLICY);
    let plan = s.plan();
    let released_4 = plan.steps.iter().any(
        |s| matches!(s.action, Action::Release { side: Side::Source, guid, .. } if guid == snap(4).guid),
    );
    assert!(!released_4, "{:?}", describe(&plan));
    // Once 5 is delivered and protected, 4 is older than the common snapshot: released.
    let send = plan.sends().next().expect("send");
    let after = describe(&ReplicationPlan {
        steps: send.on_success.clone(),
        divergence: None,
        blocked: None,
        newest_common: None,
    });
    assert!(
        after.contains(&"release Source tidepool_s004_h".to_owned()),
        "{after:?}"
    );
}

#[test]
fn up_to_date_only_when_nothing_is_sent_and_nothing_blocks() {
    // Status reads this: a plan that sends, or that is blocked, is not "in sync".
    assert!(
        !Setup::new(source(&[1, 2]), target(&[1]))
            .plan()
            .is_up_to_date()
    );
    let mut diverged = target(&[1, 2]);
    diverged.written_since_newest = 1;
    let blocked = Setup::new(source(&[1, 2]), diverged).plan();
    assert!(blocked.blocked.is_some() && blocked.steps.is_empty());
    assert!(!blocked.is_up_to_date());
    let protecting = Setup::new(source(&[1, 2]), target(&[1, 2])).plan();
    assert!(!protecting.steps.is_empty() && protecting.is_up_to_date());
}
