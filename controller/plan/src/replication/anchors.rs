//! The anchor steps: what protects the newest common snapshot (holds on both sides, a
//! bookmark on the source), what releases the protection of one a newer one replaced, and
//! the claim of what a receive created. Derived from the inventories every time, so a lost
//! step is repaired by the next plan.

use tidepool_api::values::HOLD_TAG_PREFIX;
use tidepool_api::{BookmarkName, SnapshotName};
use tidepool_wire::SnapshotRef;

use super::common::SourceCommon;
use super::names::bookmark_name;
use super::planner::{Planner, step};
use super::types::*;
use crate::inventory::{BookmarkInfo, SnapshotInfo};

impl<'a> Planner<'a> {
    /// Claim the received snapshots for the policy, then protect `to` as the new common
    /// snapshot and release what protected the previous one.
    pub(super) fn after_send(&self, to: &SnapshotInfo, created: &[&SnapshotInfo]) -> Vec<Step> {
        let mut out: Vec<Step> = self.claim(created).into_iter().collect();
        let (src, dst) = (self.src, self.dst);
        if let Ok(name) = src.dataset.snapshot(&to.name) {
            out.push(self.hold(Side::Source, name, to));
        }
        if let Ok(name) = dst.dataset.snapshot(&to.name)
            && self.input.target_abilities.holds
        {
            out.push(self.hold(Side::Target, name, to));
        }
        if let Ok(bookmark) = bookmark_name(&src.dataset, to, self.input.policy) {
            out.extend(self.bookmark(to, bookmark));
        }
        // `to` is newer than anything the target has now.
        out.extend(self.release_others(to.guid, to.createtxg, u64::MAX));
        out
    }

    fn claim(&self, created: &[&SnapshotInfo]) -> Option<Step> {
        if !self.input.target_abilities.claims {
            return None;
        }
        // An `-I` stream also creates the intermediates the selection did not pick (manual
        // snapshots, another schedule's): they stay unowned on the target, so the policy's
        // retention there never destroys a snapshot it was not asked to replicate.
        let names: Vec<SnapshotRef> = created
            .iter()
            .filter(|s| self.selects(s))
            .filter_map(|s| {
                let snapshot = self.dst.dataset.snapshot(&s.name).ok()?;
                Some(SnapshotRef {
                    snapshot,
                    guid: s.guid,
                })
            })
            .collect();
        if names.is_empty() {
            return None;
        }
        let n = names.len();
        Some(step(
            Action::SetOwner {
                snapshots: names,
                owner: self.input.owner.clone(),
            },
            ReasonCode::ClaimReceived,
            format!(
                "mark the {n} snapshot(s) received into {} as owned by {}, for the target's retention",
                self.dst.dataset, self.input.policy
            ),
        ))
    }

    /// The claim a send's follow-up makes, made again for what a lost follow-up left
    /// unclaimed (a controller gone between the receive and the claim): target snapshots
    /// with no owner whose GUID is a source snapshot the selection picks. Anything else
    /// unowned there (a person's snapshot, an intermediate not selected) stays unowned.
    fn repair_claims(&self) -> Option<Step> {
        let unclaimed: Vec<&SnapshotInfo> = self
            .dst
            .snapshots
            .iter()
            .filter(|t| t.owner.is_none())
            .filter_map(|t| self.src.snapshot_by_guid(t.guid))
            .collect();
        self.claim(&unclaimed)
    }

    fn hold(&self, side: Side, snapshot: SnapshotName, s: &SnapshotInfo) -> Step {
        let message = format!(
            "{snapshot} is the newest common snapshot of {}: held so no retention or person destroys the replication base",
            self.input.policy
        );
        step(
            Action::Hold {
                side,
                snapshot,
                guid: s.guid,
                tag: self.tag.clone(),
            },
            ReasonCode::ProtectCommon,
            message,
        )
    }

    fn bookmark(&self, s: &SnapshotInfo, bookmark: BookmarkName) -> Option<Step> {
        let snapshot = self.src.dataset.snapshot(&s.name).ok()?;
        Some(step(
            Action::Bookmark {
                snapshot,
                guid: s.guid,
                bookmark: bookmark.clone(),
            },
            ReasonCode::ProtectCommon,
            format!(
                "bookmark {bookmark} keeps an incremental base for {} even if the snapshot is destroyed",
                self.input.policy
            ),
        ))
    }

    /// Protect the current newest common snapshot where it is not yet protected, and release
    /// what protected an older one.
    pub(super) fn protect_common(&mut self, common: &SourceCommon<'a>) {
        let (src, dst) = (self.src, self.dst);
        let (guid, txg) = (common.guid(), common.createtxg());
        let mut steps: Vec<Step> = self.repair_claims().into_iter().collect();
        if let SourceCommon::Snapshot(s) = common {
            if !src.has_hold(s.guid, self.tag.as_str())
                && let Ok(name) = src.dataset.snapshot(&s.name)
            {
                steps.push(self.hold(Side::Source, name, s));
            }
            let has_bookmark = src.bookmarks.iter().any(|b| self.is_own_bookmark_of(b, s));
            if !has_bookmark && let Ok(bookmark) = bookmark_name(&src.dataset, s, self.input.policy)
            {
                steps.extend(self.bookmark(s, bookmark));
            }
        }
        if let Some(t) = dst.snapshot_by_guid(guid)
            && self.input.target_abilities.holds
            && !dst.has_hold(guid, self.tag.as_str())
            && let Ok(name) = dst.dataset.snapshot(&t.name)
        {
            steps.push(self.hold(Side::Target, name, t));
        }
        let dst_txg = dst.snapshot_by_guid(guid).map_or(u64::MAX, |t| t.createtxg);
        steps.extend(self.release_others(guid, txg, dst_txg));
        self.steps.extend(steps);
    }

    /// Release this policy's holds on every other snapshot and destroy its bookmarks of
    /// older ones. Only called once the new common snapshot is protected (the steps before
    /// these in the same list).
    fn release_others(&self, keep_guid: u64, src_keep_txg: u64, dst_keep_txg: u64) -> Vec<Step> {
        let mut out = Vec::new();
        // Bookmarks before holds: this policy's hold on the source snapshot is what vouches
        // that a bookmark is this policy's (see `may_destroy_bookmark`), so a run cut short
        // between the two leaves the hold, and the next plan releases it.
        for b in self.src.bookmarks.iter().filter(|b| {
            b.guid != keep_guid && b.createtxg < src_keep_txg && self.may_destroy_bookmark(b)
        }) {
            let Ok(bookmark) = self.src.dataset.bookmark(&b.name) else {
                continue;
            };
            out.push(step(
                Action::DestroyBookmark {
                    bookmark: bookmark.clone(),
                    guid: b.guid,
                },
                ReasonCode::DestroySupersededBookmark,
                format!(
                    "{bookmark} marked an older common snapshot of {}; a newer one is protected now",
                    self.input.policy
                ),
            ));
        }
        for (side, inv, keep_txg) in [
            (Side::Source, self.src, src_keep_txg),
            (Side::Target, self.dst, dst_keep_txg),
        ] {
            for h in inv
                .holds
                .iter()
                .filter(|h| h.tag == self.tag.as_str() && h.guid != keep_guid)
            {
                let Some(s) = inv.snapshot_by_guid(h.guid) else {
                    continue;
                };
                // A hold on a newer snapshot than the common one is not ours to judge.
                if s.createtxg > keep_txg {
                    continue;
                }
                let Ok(snapshot) = inv.dataset.snapshot(&s.name) else {
                    continue;
                };
                out.push(step(
                    Action::Release {
                        side,
                        snapshot: snapshot.clone(),
                        guid: s.guid,
                        tag: self.tag.clone(),
                    },
                    ReasonCode::ReleaseSuperseded,
                    format!(
                        "{snapshot} is no longer the newest common snapshot of {}",
                        self.input.policy
                    ),
                ));
            }
        }
        out
    }

    /// Whether `b` is the bookmark this policy makes of snapshot `s`: `s`'s guid and exactly
    /// the name [`bookmark_name`] gives `s`. A user's bookmark, or another policy's whose
    /// 32-bit suffix happens to be the same, differs in name or guid unless it copies this
    /// policy's name for this very snapshot.
    fn is_own_bookmark_of(&self, b: &BookmarkInfo, s: &SnapshotInfo) -> bool {
        b.guid == s.guid
            && b.name.as_str().ends_with(&self.suffix)
            && bookmark_name(&self.src.dataset, s, self.input.policy)
                .is_ok_and(|own| own.short() == b.name)
    }

    /// Whether this policy may destroy source bookmark `b` as its own: it has this policy's
    /// name for its snapshot, the snapshot is still on the source and held by this policy
    /// (the policy bookmarks exactly the snapshots it holds, so the hold vouches for the
    /// bookmark), and no other Tidepool policy holds that snapshot (one whose suffix is the
    /// same would have made a bookmark of the same name, and may still need it; the last
    /// policy to let go destroys it). When in doubt the bookmark stays: a stray bookmark
    /// costs nearly nothing, a lost one can cost a full send.
    fn may_destroy_bookmark(&self, b: &BookmarkInfo) -> bool {
        let Some(s) = self.src.snapshot_by_guid(b.guid) else {
            return false;
        };
        let held_by_another_policy = self.src.holds.iter().any(|h| {
            h.guid == s.guid && h.tag != self.tag.as_str() && h.tag.starts_with(HOLD_TAG_PREFIX)
        });
        self.is_own_bookmark_of(b, s)
            && self.src.has_hold(s.guid, self.tag.as_str())
            && !held_by_another_policy
    }
}
