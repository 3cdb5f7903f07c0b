//! The planner: from the two inventories and the policy to the steps of one replication
//! step (the rules are in the module doc of [`super`]).

use jiff::Timestamp;
use tidepool_api::replication_policy::SendOptions;
use tidepool_api::values::HoldTag;
use tidepool_api::{
    DatasetName, ExcludedProperty, OnDivergence, ReceiveProperty, SnapshotShortName,
};
use tidepool_wire::{ReceiveOptions, SendFlags};

use super::common::{SourceCommon, newest_common};
use super::names::{bookmark_suffix, hold_tag, rotated_name};
use super::types::*;
use crate::inventory::{DatasetInventory, PartialReceive, SnapshotInfo};

pub(super) struct Planner<'a> {
    pub(super) input: &'a ReplicationInput<'a>,
    pub(super) src: &'a DatasetInventory,
    pub(super) dst: &'a DatasetInventory,
    pub(super) tag: HoldTag,
    pub(super) suffix: String,
    raw: bool,
    /// Built once, from the policy through the allowlist; every send receives with it.
    receive: ReceiveOptions,
    pub(super) steps: Vec<Step>,
}

/// Plan one replication step.
pub fn plan(input: &ReplicationInput<'_>, now: Timestamp) -> ReplicationPlan {
    match receive_options(input.send, &input.target.dataset) {
        Ok(receive) => Planner::new(input, receive).plan(now),
        Err(message) => blocked(BlockedCode::InvalidReceiveProperties, message),
    }
}

/// The policy's `-o`/`-x` through the allowlist: the object may have been admitted before
/// a rule existed, so the code that acts checks again and names the field it refuses.
fn receive_options(send: &SendOptions, target: &DatasetName) -> Result<ReceiveOptions, String> {
    let set = send
        .override_properties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            ReceiveProperty::new(p.name.as_str(), &p.value)
                .map_err(|e| format!("spec.send.overrideProperties[{i}]: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let exclude = send
        .exclude_properties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            ExcludedProperty::new(p.as_str())
                .map_err(|e| format!("spec.send.excludeProperties[{i}]: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    ReceiveOptions::with_properties(target.clone(), set, exclude)
        .map_err(|e| format!("spec.send: {e}"))
}

pub(super) fn step(action: Action, code: ReasonCode, message: String) -> Step {
    Step {
        action,
        reason: Reason { code, message },
    }
}

fn blocked(code: BlockedCode, message: String) -> ReplicationPlan {
    ReplicationPlan {
        steps: Vec::new(),
        divergence: None,
        blocked: Some(Blocked { code, message }),
        newest_common: None,
    }
}

impl<'a> Planner<'a> {
    fn new(input: &'a ReplicationInput<'a>, receive: ReceiveOptions) -> Self {
        Self {
            input,
            src: input.source,
            dst: input.target,
            tag: hold_tag(input.policy),
            suffix: bookmark_suffix(input.policy),
            raw: input.source.encrypted && input.send.raw,
            receive,
            steps: Vec::new(),
        }
    }

    fn plan(mut self, now: Timestamp) -> ReplicationPlan {
        let (src, dst) = (self.src, self.dst);
        if !src.exists {
            return blocked(
                BlockedCode::SourceMissing,
                format!("source dataset {} does not exist", src.dataset),
            );
        }
        if src.encrypted && !self.input.send.raw {
            return blocked(
                BlockedCode::PlaintextOfEncryptedSource,
                format!(
                    "source {} is encrypted and send.raw is false: the target would hold its plaintext; set send.raw: true",
                    src.dataset
                ),
            );
        }
        let selected = self.selected();
        let Some(&newest_selected) = selected.last() else {
            return blocked(
                BlockedCode::NoSourceSnapshots,
                format!(
                    "source {} has no snapshot that the selection picks",
                    src.dataset
                ),
            );
        };

        // A resume token first: resume it, or abort it and plan as if it were not there.
        let mut target_absent = !dst.exists;
        if let Some(token) = &dst.receive_resume_token {
            match self.stale_token(token) {
                None => {
                    let message = format!(
                        "an interrupted receive into {} left a resume token{}",
                        dst.dataset,
                        token
                            .to_guid
                            .and_then(|g| src.snapshot_by_guid(g))
                            .map(|s| format!(" for {}", s.name))
                            .unwrap_or_default()
                    );
                    let on_success = token
                        .to_guid
                        .and_then(|g| src.snapshot_by_guid(g))
                        .map(|to| self.after_send(to, &[to]))
                        .unwrap_or_default();
                    let send = SendStep {
                        stream: Stream::Resume {
                            token: token.token.clone(),
                            to_guid: token.to_guid,
                        },
                        flags: self.flags(),
                        receive: self.receive(),
                        on_success,
                    };
                    self.steps.push(step(
                        Action::Send(send),
                        ReasonCode::ResumeInterrupted,
                        message,
                    ));
                    let common = self.newest_common();
                    let newest_common = common.as_ref().map(|c| self.common_status(c));
                    return self.finish(None, newest_common);
                }
                Some(why) => {
                    self.steps.push(step(
                        Action::AbortReceive {
                            target: dst.dataset.clone(),
                        },
                        ReasonCode::StaleResumeToken,
                        format!(
                            "the resume token on {} is stale ({why}); aborting the partial receive (received snapshots are kept) and planning afresh",
                            dst.dataset
                        ),
                    ));
                    // An interrupted first receive is the dataset itself; -A removes it.
                    if dst.snapshots.is_empty() {
                        target_absent = true;
                    }
                }
            }
        }

        if target_absent {
            self.full_send(
                &selected,
                ReasonCode::InitialFullSend,
                "the target does not exist yet",
            );
            return self.finish(None, None);
        }

        let common = self.newest_common();
        let divergence = self.divergence(common.as_ref());
        let newest_common = common.as_ref().map(|c| self.common_status(c));
        if let Some(divergence) = divergence {
            return match self.input.on_divergence {
                OnDivergence::Fail => {
                    let message = format!(
                        "{}; onDivergence is Fail, so nothing is sent until the target is repaired or the policy says Rotate",
                        divergence.message
                    );
                    ReplicationPlan {
                        steps: Vec::new(),
                        divergence: Some(divergence),
                        blocked: Some(Blocked {
                            code: BlockedCode::Diverged,
                            message,
                        }),
                        newest_common,
                    }
                }
                OnDivergence::Rotate => match rotated_name(&dst.dataset, now) {
                    Ok(to) if dst.dataset.parent().is_some() => {
                        self.steps.push(step(
                            Action::RenameTarget {
                                from: dst.dataset.clone(),
                                to: to.clone(),
                            },
                            ReasonCode::RotateDiverged,
                            format!(
                                "{}; onDivergence is Rotate: {} is kept, renamed to {to}",
                                divergence.message, dst.dataset
                            ),
                        ));
                        self.full_send(
                            &selected,
                            ReasonCode::FullSendAfterRotate,
                            "the diverged target was renamed aside",
                        );
                        self.finish(Some(divergence), None)
                    }
                    _ => ReplicationPlan {
                        steps: Vec::new(),
                        blocked: Some(Blocked {
                            code: BlockedCode::CannotRotate,
                            message: format!(
                                "{}; {} cannot be renamed aside (a pool's root dataset, or the new name would be too long)",
                                divergence.message, dst.dataset
                            ),
                        }),
                        divergence: Some(divergence),
                        newest_common,
                    },
                },
            };
        }
        let Some(common) = common else {
            // Not diverged and no common snapshot: only when the target is absent, handled
            // above. Keep the planner total anyway.
            return self.finish(None, newest_common);
        };

        self.protect_common(&common);
        let base_txg = common.createtxg();
        if newest_selected.createtxg > base_txg {
            self.incremental(&common, &selected, newest_selected);
        }
        self.finish(None, newest_common)
    }

    fn finish(
        self,
        divergence: Option<Divergence>,
        newest_common: Option<Common>,
    ) -> ReplicationPlan {
        ReplicationPlan {
            steps: self.steps,
            divergence,
            blocked: None,
            newest_common,
        }
    }

    /// Source snapshots the selection picks, oldest first by `createtxg`.
    fn selected(&self) -> Vec<&'a SnapshotInfo> {
        let mut v: Vec<&SnapshotInfo> = self
            .src
            .snapshots
            .iter()
            .filter(|s| self.selects(s))
            .collect();
        if !v.is_sorted_by_key(|s| s.createtxg) {
            v.sort_unstable_by_key(|s| s.createtxg);
        }
        v
    }

    /// Whether the policy's selection picks this snapshot (by owner and name prefix).
    pub(super) fn selects(&self, s: &SnapshotInfo) -> bool {
        self.input
            .selection_owner
            .is_none_or(|o| s.owner.as_ref() == Some(o))
            && self
                .input
                .selection
                .name_prefix
                .as_deref()
                .is_none_or(|p| s.name.as_str().starts_with(p))
    }

    fn flags(&self) -> SendFlags {
        let o = self.input.send;
        SendFlags {
            raw: self.raw,
            compressed: o.compressed,
            large_blocks: o.large_blocks,
            embedded_data: o.embedded_data,
            properties: o.properties,
        }
    }

    fn receive(&self) -> ReceiveOptions {
        self.receive.clone()
    }

    /// Why a token cannot be resumed, if it cannot.
    fn stale_token(&self, token: &PartialReceive) -> Option<String> {
        if let Some(failure) = self.input.resume_failed
            && failure.token == token.token
        {
            return Some(format!("the last resume failed: {}", failure.error));
        }
        if let Some(to) = token.to_guid
            && self.src.snapshot_by_guid(to).is_none()
        {
            return Some(format!(
                "the snapshot it was sending (guid {to}) is gone from the source"
            ));
        }
        if let Some(from) = token.from_guid {
            let on_source = self.src.snapshots.iter().any(|s| s.guid == from)
                || self.src.bookmarks.iter().any(|b| b.guid == from);
            let on_target = self.dst.snapshots.iter().any(|s| s.guid == from);
            if !on_source || !on_target {
                return Some(format!("its base (guid {from}) is gone"));
            }
        }
        if let Some(raw) = token.raw
            && raw != self.raw
        {
            return Some(format!(
                "it was made by a {} stream and this policy sends {}",
                if raw { "raw" } else { "non-raw" },
                if self.raw { "raw" } else { "non-raw" }
            ));
        }
        None
    }

    fn newest_common(&self) -> Option<SourceCommon<'a>> {
        newest_common(self.src, self.dst)
    }

    fn common_status(&self, c: &SourceCommon<'_>) -> Common {
        let guid = c.guid();
        // The target's snapshot carries the name the user knows.
        let on_target = self.dst.snapshot_by_guid(guid);
        match (c, on_target) {
            (_, Some(t)) => Common {
                guid,
                name: t.name.clone(),
                creation: t.creation,
                on_source: matches!(c, SourceCommon::Snapshot(_)),
            },
            (SourceCommon::Snapshot(s), None) => Common {
                guid,
                name: s.name.clone(),
                creation: s.creation,
                on_source: true,
            },
            (SourceCommon::Bookmark(b), None) => Common {
                guid,
                name: b.name.clone(),
                creation: b.creation,
                on_source: false,
            },
        }
    }

    fn divergence(&self, common: Option<&SourceCommon<'_>>) -> Option<Divergence> {
        let dst = self.dst;
        let Some(common) = common else {
            let n = dst.snapshots.len();
            return Some(Divergence {
                kind: DivergenceKind::NoCommonSnapshot {
                    target_snapshots: n,
                },
                message: format!(
                    "target {} exists but shares no snapshot with the source ({n} snapshot(s) of its own); receiving a full stream would need -F and destroy them",
                    dst.dataset
                ),
            });
        };
        let guid = common.guid();
        let common_txg = dst.snapshot_by_guid(guid).map_or(0, |s| s.createtxg);
        let mut after: Vec<&SnapshotInfo> = dst
            .snapshots
            .iter()
            .filter(|s| s.createtxg > common_txg)
            .collect();
        if !after.is_empty() {
            after.sort_unstable_by_key(|s| std::cmp::Reverse(s.createtxg));
            let newest: Vec<SnapshotShortName> =
                after.iter().take(5).map(|s| s.name.clone()).collect();
            let list: Vec<&str> = newest.iter().map(|n| n.as_str()).collect();
            return Some(Divergence {
                kind: DivergenceKind::SnapshotsAfterCommon {
                    count: after.len(),
                    newest: newest.clone(),
                },
                message: format!(
                    "target {} has {} snapshot(s) newer than the newest common one (newest: {})",
                    dst.dataset,
                    after.len(),
                    list.join(", ")
                ),
            });
        }
        if dst.written_since_newest > 0 {
            return Some(Divergence {
                kind: DivergenceKind::ModifiedSinceCommon {
                    written: dst.written_since_newest,
                },
                message: format!(
                    "target {} was written to since the newest common snapshot ({} bytes)",
                    dst.dataset, dst.written_since_newest
                ),
            });
        }
        None
    }

    fn full_send(&mut self, selected: &[&'a SnapshotInfo], code: ReasonCode, why: &str) {
        let (Some(&oldest), Some(&newest)) = (selected.first(), selected.last()) else {
            return;
        };
        let intermediates = self.input.selection.intermediates;
        let first = if intermediates { oldest } else { newest };
        let Ok(name) = self.src.dataset.snapshot(&first.name) else {
            return;
        };
        // Protect `first` at once, even when a `-I` step follows: if that step fails, the
        // full stream's snapshot is the only common one and must survive retention.
        let on_success = self.after_send(first, &[first]);
        let send = SendStep {
            stream: Stream::Full {
                snapshot: name.clone(),
                guid: first.guid,
            },
            flags: self.flags(),
            receive: self.receive(),
            on_success,
        };
        let message = format!(
            "{why}: full send of {}@{} into {}",
            self.src.dataset, first.name, self.dst.dataset
        );
        self.steps.push(step(Action::Send(send), code, message));
        if first.guid != newest.guid {
            self.send_incremental(
                Base::Snapshot {
                    name,
                    guid: first.guid,
                },
                first.createtxg,
                newest,
                true,
                ReasonCode::CarryIntermediates,
                format!("the snapshots after {} up to {}", first.name, newest.name),
            );
        }
    }

    fn incremental(
        &mut self,
        common: &SourceCommon<'a>,
        selected: &[&'a SnapshotInfo],
        to: &'a SnapshotInfo,
    ) {
        let intermediates = self.input.selection.intermediates;
        match common {
            SourceCommon::Snapshot(base) => {
                let Ok(name) = self.src.dataset.snapshot(&base.name) else {
                    return;
                };
                self.send_incremental(
                    Base::Snapshot {
                        name,
                        guid: base.guid,
                    },
                    base.createtxg,
                    to,
                    intermediates,
                    ReasonCode::Incremental,
                    format!(
                        "{} is the newest common snapshot; sending up to {}",
                        base.name, to.name
                    ),
                );
            }
            SourceCommon::Bookmark(bm) => {
                let Ok(name) = self.src.dataset.bookmark(&bm.name) else {
                    return;
                };
                // `-I` does not take a bookmark: one `-i` step to the first selected
                // snapshot after it, then `-I` onwards when intermediates are wanted.
                let first = if intermediates {
                    selected
                        .iter()
                        .copied()
                        .find(|s| s.createtxg > bm.createtxg)
                        .unwrap_or(to)
                } else {
                    to
                };
                self.send_incremental(
                    Base::Bookmark {
                        name,
                        guid: bm.guid,
                    },
                    bm.createtxg,
                    first,
                    false,
                    ReasonCode::IncrementalFromBookmark,
                    format!(
                        "the source no longer has the newest common snapshot, only its bookmark #{}; sending {}",
                        bm.name, first.name
                    ),
                );
                if first.guid != to.guid
                    && let Ok(first_name) = self.src.dataset.snapshot(&first.name)
                {
                    self.send_incremental(
                        Base::Snapshot {
                            name: first_name,
                            guid: first.guid,
                        },
                        first.createtxg,
                        to,
                        true,
                        ReasonCode::CarryIntermediates,
                        format!("the snapshots after {} up to {}", first.name, to.name),
                    );
                }
            }
        }
    }

    fn send_incremental(
        &mut self,
        base: Base,
        base_txg: u64,
        to: &'a SnapshotInfo,
        intermediates: bool,
        code: ReasonCode,
        message: String,
    ) {
        let Ok(to_name) = self.src.dataset.snapshot(&to.name) else {
            return;
        };
        // What the receive creates on the target: with -I every source snapshot in
        // (base, to], with -i only `to`.
        let created: Vec<&SnapshotInfo> = if intermediates {
            let mut v: Vec<&SnapshotInfo> = self
                .src
                .snapshots
                .iter()
                .filter(|s| s.createtxg > base_txg && s.createtxg <= to.createtxg)
                .collect();
            v.sort_unstable_by_key(|s| s.createtxg);
            v
        } else {
            vec![to]
        };
        let send = SendStep {
            stream: Stream::Incremental {
                base,
                to: to_name,
                to_guid: to.guid,
                intermediates,
            },
            flags: self.flags(),
            receive: self.receive(),
            on_success: self.after_send(to, &created),
        };
        self.steps.push(step(Action::Send(send), code, message));
    }
}
