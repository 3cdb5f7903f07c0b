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
//! - No `zfs receive -F`, ever: [`Receive`] has no way to say it. A full stream is only
//!   received where no dataset exists.
//! - The newest common snapshot is held on both sides and bookmarked on the source, per
//!   policy; after a newer one takes its place the previous holds are released and the
//!   superseded bookmarks of this policy destroyed. These anchor steps are planned from
//!   what the inventories show (what the receiver actually committed), every time, so an
//!   interrupted bookkeeping step is repaired by the next plan.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use jiff::Timestamp;
use tidepool_api::names::MAX_SHORT_NAME_LEN;
use tidepool_api::replication_policy::{SendOptions, SnapshotSelection};
use tidepool_api::{
    BookmarkName, DatasetName, NameError, OnDivergence, SnapshotName, SnapshotShortName,
};

use crate::inventory::{BookmarkInfo, DatasetInventory, ResumeToken, SnapshotInfo};
use crate::naming::{NamePrecision, format_time};
use crate::retention::{Protection, Protections};
use crate::schedule::fnv1a;

/// The inputs of one replication step.
#[derive(Debug, Clone, Copy)]
pub struct ReplicationInput<'a> {
    /// `<namespace>/<name>` of the ReplicationPolicy: names its holds and bookmarks.
    pub policy: &'a str,
    pub source: &'a DatasetInventory,
    pub target: &'a DatasetInventory,
    pub send: &'a SendOptions,
    pub selection: &'a SnapshotSelection,
    /// The owner value (`<namespace>/<scheduleName>`) that `selection.scheduleName`
    /// selects; `None` selects snapshots of any owner.
    pub selection_owner: Option<&'a str>,
    pub on_divergence: OnDivergence,
    /// The last attempt to resume failed because the token was stale or invalid.
    pub resume_failed: Option<&'a ResumeFailure>,
}

/// A failed `zfs send -t` / `zfs receive -s`, as the controller saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeFailure {
    pub token: String,
    /// The error, for the message of the abort.
    pub error: String,
}

/// The plan of one replication step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationPlan {
    /// In order; stop at the first failure and plan again.
    pub steps: Vec<Step>,
    /// Set when the target has diverged (also when the plan rotates it aside).
    pub divergence: Option<Divergence>,
    /// Set when nothing can be sent until someone acts; `steps` is then empty.
    pub blocked: Option<Blocked>,
    /// The newest snapshot source and target share, for status.
    pub newest_common: Option<Common>,
}

impl ReplicationPlan {
    /// True when there is nothing to send and nothing blocks.
    pub fn is_up_to_date(&self) -> bool {
        self.blocked.is_none()
            && !self
                .steps
                .iter()
                .any(|s| matches!(s.action, Action::Send(_)))
    }

    /// Add what retention must keep for this policy: the newest common snapshot (on both
    /// sides: its GUID is the same).
    pub fn protect(&self, policy: &str, protections: &mut Protections) {
        if let Some(c) = &self.newest_common {
            protections.protect(
                c.guid,
                Protection::ReplicationBase {
                    policy: policy.to_owned(),
                },
            );
        }
    }

    pub fn sends(&self) -> impl Iterator<Item = &SendStep> {
        self.steps.iter().filter_map(|s| match &s.action {
            Action::Send(send) => Some(send),
            _ => None,
        })
    }
}

/// The newest common snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    pub guid: u64,
    pub name: SnapshotShortName,
    pub creation: Timestamp,
    /// Whether the source still has the snapshot (or only a bookmark of it).
    pub on_source: bool,
}

/// One action and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub action: Action,
    pub reason: Reason,
}

/// Why an action is planned: a code for conditions, events and metrics (bounded), and a
/// sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: ReasonCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonCode {
    /// No target yet: a full send.
    InitialFullSend,
    /// After rotating a diverged target aside: a full send.
    FullSendAfterRotate,
    /// Intermediate snapshots after a full send or a bookmark step.
    CarryIntermediates,
    /// An incremental from the newest common snapshot.
    Incremental,
    /// An incremental from a bookmark of the common snapshot the source no longer has.
    IncrementalFromBookmark,
    /// Resume an interrupted receive.
    ResumeInterrupted,
    /// Abort a partial receive whose token is stale or broken.
    StaleResumeToken,
    /// Rename a diverged target aside before a new full receive.
    RotateDiverged,
    /// Hold or bookmark the newest common snapshot.
    ProtectCommon,
    /// Release the hold of a common snapshot a newer one has replaced.
    ReleaseSuperseded,
    /// Destroy this policy's bookmark of a common snapshot a newer one has replaced.
    DestroySupersededBookmark,
    /// Record the policy as owner of the snapshots a send created on the target.
    ClaimReceived,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::InitialFullSend => "InitialFullSend",
            ReasonCode::FullSendAfterRotate => "FullSendAfterRotate",
            ReasonCode::CarryIntermediates => "CarryIntermediates",
            ReasonCode::Incremental => "Incremental",
            ReasonCode::IncrementalFromBookmark => "IncrementalFromBookmark",
            ReasonCode::ResumeInterrupted => "ResumeInterrupted",
            ReasonCode::StaleResumeToken => "StaleResumeToken",
            ReasonCode::RotateDiverged => "RotateDiverged",
            ReasonCode::ProtectCommon => "ProtectCommon",
            ReasonCode::ReleaseSuperseded => "ReleaseSuperseded",
            ReasonCode::DestroySupersededBookmark => "DestroySupersededBookmark",
            ReasonCode::ClaimReceived => "ClaimReceived",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

/// Which side an action runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `zfs receive -A <target>`: discards a partial receive (never received snapshots).
    AbortReceive {
        target: DatasetName,
    },
    /// `zfs rename <from> <to>` on the target: keeps everything the diverged dataset holds.
    RenameTarget {
        from: DatasetName,
        to: DatasetName,
    },
    Send(SendStep),
    /// `zfs hold <tag> <snapshot>`.
    Hold {
        side: Side,
        snapshot: SnapshotName,
        guid: u64,
        tag: String,
    },
    /// `zfs release <tag> <snapshot>` (absent holds are not an error).
    Release {
        side: Side,
        snapshot: SnapshotName,
        guid: u64,
        tag: String,
    },
    /// `zfs bookmark <snapshot> <bookmark>` on the source.
    Bookmark {
        snapshot: SnapshotName,
        guid: u64,
        bookmark: BookmarkName,
    },
    /// `zfs destroy <bookmark>` on the source: only this policy's own, superseded ones.
    DestroyBookmark {
        bookmark: BookmarkName,
        guid: u64,
    },
    /// `zfs set tidepool.dev:owner=<owner> <snapshots...>` on the target.
    SetOwner {
        snapshots: Vec<SnapshotName>,
        owner: String,
    },
}

/// One `zfs send | zfs receive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendStep {
    pub stream: Stream,
    pub flags: SendFlags,
    pub receive: Receive,
    /// What to do once the receive succeeded: protect the new common snapshot, release the
    /// previous one, claim the received snapshots. The next plan derives the same from the
    /// inventories, so a step lost here is not lost for good.
    pub on_success: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stream {
    /// `zfs send <snapshot>`.
    Full { snapshot: SnapshotName, guid: u64 },
    /// `zfs send -I <base> <to>` (intermediates) or `zfs send -i <base> <to>`.
    Incremental {
        base: Base,
        to: SnapshotName,
        to_guid: u64,
        intermediates: bool,
    },
    /// `zfs send -t <token>`.
    Resume { token: String, to_guid: Option<u64> },
}

/// The base of an incremental: a snapshot the target has, or the source's bookmark of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Snapshot { name: SnapshotName, guid: u64 },
    Bookmark { name: BookmarkName, guid: u64 },
}

impl Base {
    pub fn guid(&self) -> u64 {
        match self {
            Base::Snapshot { guid, .. } | Base::Bookmark { guid, .. } => *guid,
        }
    }
}

impl SendStep {
    /// Add the snapshots a transfer under way uses (its base and the snapshot it sends), so
    /// retention on either side leaves them alone until it ends.
    pub fn protect_in_flight(&self, policy: &str, protections: &mut Protections) {
        let why = || Protection::TransferInUse {
            policy: policy.to_owned(),
        };
        let (base, to) = match &self.stream {
            Stream::Full { guid, .. } => (None, Some(*guid)),
            Stream::Incremental { base, to_guid, .. } => (Some(base.guid()), Some(*to_guid)),
            Stream::Resume { to_guid, .. } => (None, *to_guid),
        };
        for guid in base.into_iter().chain(to) {
            protections.protect(guid, why());
        }
    }
}

impl Stream {
    /// The guid the target must already have for this stream to apply.
    pub fn base_guid(&self) -> Option<u64> {
        match self {
            Stream::Incremental { base, .. } => Some(base.guid()),
            _ => None,
        }
    }
}

/// `zfs send` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendFlags {
    /// `-w`.
    pub raw: bool,
    /// `-c`.
    pub compressed: bool,
    /// `-L`.
    pub large_blocks: bool,
    /// `-e`.
    pub embedded_data: bool,
    /// `-p`.
    pub properties: bool,
}

/// `zfs receive` options. There is deliberately no `force` (`-F`): a receive never rolls
/// back or destroys what the target has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receive {
    pub target: DatasetName,
    /// `-s`: keep a resume token when interrupted.
    pub resumable: bool,
    /// `-u`: do not mount.
    pub unmounted: bool,
    /// `-x <property>`.
    pub exclude_properties: Vec<String>,
    /// `-o <property>=<value>`.
    pub override_properties: Vec<(String, String)>,
}

/// How the target diverged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    pub kind: DivergenceKind,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DivergenceKind {
    /// The target exists but shares no snapshot with the source.
    NoCommonSnapshot { target_snapshots: usize },
    /// The target has snapshots newer than the newest common one.
    SnapshotsAfterCommon {
        count: usize,
        /// Up to five of them, newest first.
        newest: Vec<SnapshotShortName>,
    },
    /// The target was written to since the common snapshot.
    ModifiedSinceCommon { written: u64 },
}

impl DivergenceKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            DivergenceKind::NoCommonSnapshot { .. } => "NoCommonSnapshot",
            DivergenceKind::SnapshotsAfterCommon { .. } => "SnapshotsAfterCommon",
            DivergenceKind::ModifiedSinceCommon { .. } => "ModifiedSinceCommon",
        }
    }
}

/// Why nothing is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub code: BlockedCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockedCode {
    /// The source dataset does not exist.
    SourceMissing,
    /// No source snapshot matches the selection yet.
    NoSourceSnapshots,
    /// The source is encrypted and `send.raw` is false.
    PlaintextOfEncryptedSource,
    /// The target diverged and `onDivergence` is `Fail`.
    Diverged,
    /// The target diverged and cannot be renamed aside (a pool's root, or the new name
    /// would be invalid).
    CannotRotate,
}

impl BlockedCode {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockedCode::SourceMissing => "SourceMissing",
            BlockedCode::NoSourceSnapshots => "NoSourceSnapshots",
            BlockedCode::PlaintextOfEncryptedSource => "PlaintextOfEncryptedSource",
            BlockedCode::Diverged => "Diverged",
            BlockedCode::CannotRotate => "CannotRotate",
        }
    }
}

/// The `zfs hold` tag of a policy: `tidepool:<namespace>/<name>`, or a hash of it when that
/// is too long for a tag.
pub fn hold_tag(policy: &str) -> String {
    let tag = format!("tidepool:{policy}");
    if tag.len() <= 200 {
        tag
    } else {
        format!("tidepool:{:016x}", fnv1a(policy.as_bytes()))
    }
}

/// The suffix that marks this policy's bookmarks on the source: `_tp<8 hex digits>`.
pub fn bookmark_suffix(policy: &str) -> String {
    format!("_tp{:08x}", fnv1a(policy.as_bytes()) & 0xffff_ffff)
}

/// This policy's bookmark of a snapshot: `<snapshot>_tp<hash>`, or `g<guid>_tp<hash>` when
/// that would be too long.
pub fn bookmark_name(
    dataset: &DatasetName,
    snapshot: &SnapshotInfo,
    policy: &str,
) -> Result<BookmarkName, NameError> {
    let suffix = bookmark_suffix(policy);
    let short = format!("{}{suffix}", snapshot.name);
    let readable = if short.len() <= MAX_SHORT_NAME_LEN {
        short
            .parse::<SnapshotShortName>()
            .and_then(|s| dataset.bookmark(&s))
    } else {
        Err(NameError::Empty)
    };
    readable.or_else(|_| {
        let short: SnapshotShortName = format!("g{:016x}{suffix}", snapshot.guid).parse()?;
        dataset.bookmark(&short)
    })
}

/// The name a diverged target is renamed to: `<dataset>-diverged-<UTC time>`.
pub fn rotated_name(target: &DatasetName, now: Timestamp) -> Result<DatasetName, NameError> {
    format!(
        "{target}-diverged-{}",
        format_time(now, NamePrecision::Seconds)
    )
    .parse()
}

/// Plan one replication step.
pub fn plan(input: &ReplicationInput<'_>, now: Timestamp) -> ReplicationPlan {
    Planner::new(input).plan(now)
}

struct Planner<'a> {
    input: &'a ReplicationInput<'a>,
    src: &'a DatasetInventory,
    dst: &'a DatasetInventory,
    tag: String,
    suffix: String,
    raw: bool,
    steps: Vec<Step>,
}

fn step(action: Action, code: ReasonCode, message: String) -> Step {
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

/// The newest common snapshot as seen from the source: a snapshot, or only a bookmark.
enum SourceCommon<'a> {
    Snapshot(&'a SnapshotInfo),
    Bookmark(&'a BookmarkInfo),
}

impl<'a> Planner<'a> {
    fn new(input: &'a ReplicationInput<'a>) -> Self {
        Self {
            input,
            src: input.source,
            dst: input.target,
            tag: hold_tag(input.policy),
            suffix: bookmark_suffix(input.policy),
            raw: input.source.encrypted && input.send.raw,
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
        let base_txg = match &common {
            SourceCommon::Snapshot(s) => s.createtxg,
            SourceCommon::Bookmark(b) => b.createtxg,
        };
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
    fn selects(&self, s: &SnapshotInfo) -> bool {
        self.input
            .selection_owner
            .is_none_or(|o| s.owner.as_deref() == Some(o))
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

    fn receive(&self) -> Receive {
        let o = self.input.send;
        Receive {
            target: self.dst.dataset.clone(),
            resumable: true,
            unmounted: true,
            exclude_properties: o.exclude_properties.iter().map(|p| p.0.clone()).collect(),
            override_properties: o
                .override_properties
                .iter()
                .map(|p| (p.name.0.clone(), p.value.clone()))
                .collect(),
        }
    }

    /// Why a token cannot be resumed, if it cannot.
    fn stale_token(&self, token: &ResumeToken) -> Option<String> {
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
        let by_txg = |v: &[SnapshotInfo]| v.is_sorted_by_key(|s| s.createtxg);
        if by_txg(&self.src.snapshots) && by_txg(&self.dst.snapshots) {
            self.newest_common_lockstep()
        } else {
            self.newest_common_hashed()
        }
    }

    /// Both sides list their snapshots in `createtxg` order (as `zfs list -s createtxg`
    /// does), and snapshots they share are in the same order on both. Walk both from the
    /// newest end, one step each in turn, remembering what each side has shown: the first
    /// guid seen on both is the newest common one (an older common snapshot sits deeper on
    /// both sides, so it is reached later). A target that is a few snapshots behind costs a
    /// few steps, not a set of a million guids.
    fn newest_common_lockstep(&self) -> Option<SourceCommon<'a>> {
        let (src, dst) = (&self.src.snapshots, &self.dst.snapshots);
        let mut bookmarks: Vec<&'a BookmarkInfo> = self.src.bookmarks.iter().collect();
        bookmarks.sort_unstable_by_key(|b| b.createtxg);
        let mut seen_src: HashMap<u64, SourceCommon<'a>, BuildHasherDefault<GuidHasher>> =
            HashMap::default();
        let mut seen_dst: GuidSet = HashSet::default();
        let (mut i, mut b, mut j) = (src.len(), bookmarks.len(), dst.len());
        while i > 0 || b > 0 || j > 0 {
            // The source side's next newest: a snapshot, or a bookmark newer than it (a
            // bookmark of a snapshot still there has the same txg and comes after it).
            let next = match (
                i.checked_sub(1).map(|k| &src[k]),
                b.checked_sub(1).map(|k| bookmarks[k]),
            ) {
                (Some(s), Some(bm)) if bm.createtxg > s.createtxg => {
                    b -= 1;
                    Some(SourceCommon::Bookmark(bm))
                }
                (Some(s), _) => {
                    i -= 1;
                    Some(SourceCommon::Snapshot(s))
                }
                (None, Some(bm)) => {
                    b -= 1;
                    Some(SourceCommon::Bookmark(bm))
                }
                (None, None) => None,
            };
            if let Some(next) = next {
                let guid = match &next {
                    SourceCommon::Snapshot(s) => s.guid,
                    SourceCommon::Bookmark(bm) => bm.guid,
                };
                if seen_dst.contains(&guid) {
                    return Some(next);
                }
                seen_src.entry(guid).or_insert(next);
            }
            if j > 0 {
                j -= 1;
                let guid = dst[j].guid;
                if let Some(found) = seen_src.remove(&guid) {
                    return Some(found);
                }
                seen_dst.insert(guid);
            }
        }
        None
    }

    fn newest_common_hashed(&self) -> Option<SourceCommon<'a>> {
        let mut target_guids: GuidSet =
            HashSet::with_capacity_and_hasher(self.dst.snapshots.len(), Default::default());
        target_guids.extend(self.dst.snapshots.iter().map(|s| s.guid));
        let snapshot = self
            .src
            .snapshots
            .iter()
            .filter(|s| target_guids.contains(&s.guid))
            .max_by_key(|s| s.createtxg);
        let bookmark = self
            .src
            .bookmarks
            .iter()
            .filter(|b| target_guids.contains(&b.guid))
            .max_by_key(|b| b.createtxg);
        match (snapshot, bookmark) {
            (Some(s), Some(b)) if b.createtxg > s.createtxg => Some(SourceCommon::Bookmark(b)),
            (Some(s), _) => Some(SourceCommon::Snapshot(s)),
            (None, Some(b)) => Some(SourceCommon::Bookmark(b)),
            (None, None) => None,
        }
    }

    fn common_status(&self, c: &SourceCommon<'_>) -> Common {
        let guid = match c {
            SourceCommon::Snapshot(s) => s.guid,
            SourceCommon::Bookmark(b) => b.guid,
        };
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
        let guid = match common {
            SourceCommon::Snapshot(s) => s.guid,
            SourceCommon::Bookmark(b) => b.guid,
        };
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
                snapshot: name,
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
                    name: self.src.dataset.snapshot(&first.name).expect("valid above"),
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

    /// Claim the received snapshots for the policy, then protect `to` as the new common
    /// snapshot and release what protected the previous one.
    fn after_send(&self, to: &SnapshotInfo, created: &[&SnapshotInfo]) -> Vec<Step> {
        let mut out: Vec<Step> = self.claim(created).into_iter().collect();
        let (src, dst) = (self.src, self.dst);
        if let Ok(name) = src.dataset.snapshot(&to.name) {
            out.push(self.hold(Side::Source, name, to));
        }
        if let Ok(name) = dst.dataset.snapshot(&to.name) {
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
        // An `-I` stream also creates the intermediates the selection did not pick (manual
        // snapshots, another schedule's): they stay unowned on the target, so the policy's
        // retention there never destroys a snapshot it was not asked to replicate.
        let names: Vec<SnapshotName> = created
            .iter()
            .filter(|s| self.selects(s))
            .filter_map(|s| self.dst.dataset.snapshot(&s.name).ok())
            .collect();
        if names.is_empty() {
            return None;
        }
        let n = names.len();
        Some(step(
            Action::SetOwner {
                snapshots: names,
                owner: self.input.policy.to_owned(),
            },
            ReasonCode::ClaimReceived,
            format!(
                "mark the {n} snapshot(s) received into {} as owned by {}, for the target's retention",
                self.dst.dataset, self.input.policy
            ),
        ))
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
    fn protect_common(&mut self, common: &SourceCommon<'a>) {
        let (src, dst) = (self.src, self.dst);
        let (guid, txg) = match common {
            SourceCommon::Snapshot(s) => (s.guid, s.createtxg),
            SourceCommon::Bookmark(b) => (b.guid, b.createtxg),
        };
        let mut steps = Vec::new();
        if let SourceCommon::Snapshot(s) = common {
            if !src.has_hold(s.guid, &self.tag)
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
            && !dst.has_hold(guid, &self.tag)
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
                .filter(|h| h.tag == self.tag && h.guid != keep_guid)
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
}

impl Planner<'_> {
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
        // `hold_tag` starts every policy's tag with `tidepool:`.
        let held_by_another_policy = self
            .src
            .holds
            .iter()
            .any(|h| h.guid == s.guid && h.tag != self.tag && h.tag.starts_with("tidepool:"));
        self.is_own_bookmark_of(b, s)
            && self.src.has_hold(s.guid, &self.tag)
            && !held_by_another_policy
    }
}

/// GUIDs are random 64-bit numbers already: a set of them needs no SipHash, one multiply
/// spreads them enough (and a million inserts and lookups cost a few milliseconds, not a
/// hundred).
type GuidSet = HashSet<u64, BuildHasherDefault<GuidHasher>>;

#[derive(Default)]
struct GuidHasher(u64);

impl Hasher for GuidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests;
