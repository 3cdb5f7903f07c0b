//! The values a replication plan is made of: its input, its steps and why, and what it
//! reports (divergence, what blocks it, the newest common snapshot).

use std::fmt;

use jiff::Timestamp;
use tidepool_api::replication_policy::{SendOptions, SnapshotSelection};
use tidepool_api::values::{HoldTag, ResumeToken};
use tidepool_api::{
    BookmarkName, DatasetName, OnDivergence, Owner, SnapshotName, SnapshotShortName,
};
use tidepool_wire::{ReceiveOptions, SendFlags, SnapshotRef};

use crate::inventory::DatasetInventory;
use crate::retention::{Protection, Protections};

/// The inputs of one replication step.
#[derive(Debug, Clone, Copy)]
pub struct ReplicationInput<'a> {
    /// `<namespace>/<name>` of the ReplicationPolicy: names its holds and bookmarks.
    pub policy: &'a str,
    pub source: &'a DatasetInventory,
    pub target: &'a DatasetInventory,
    pub send: &'a SendOptions,
    pub selection: &'a SnapshotSelection,
    /// The owner (`SnapshotSchedule/<namespace>/<scheduleName>`) that
    /// `selection.scheduleName` selects; `None` selects snapshots of any owner.
    pub selection_owner: Option<&'a Owner>,
    /// The owner this policy records on the snapshots it receives
    /// (`ReplicationPolicy/<namespace>/<name>`, the object `policy` names); the target's
    /// retention considers only snapshots of this owner.
    pub owner: &'a Owner,
    pub on_divergence: OnDivergence,
    /// The last attempt to resume failed because the token was stale or invalid.
    pub resume_failed: Option<&'a ResumeFailure>,
    /// What the target can keep besides the stream.
    pub target_abilities: TargetAbilities,
}

/// What a target can keep besides the received stream. A pool behind a Tidepool agent can
/// do all of it; the offsite kinds to come cannot (an SSH host may refuse `zfs hold` to a
/// restricted user; object storage has neither holds nor user properties). Without holds
/// the common snapshot is protected on the source only (its hold and bookmark); without
/// claims nothing on the target is the policy's, so target retention destroys nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetAbilities {
    /// `zfs hold` on the target's copy of the common snapshot.
    pub holds: bool,
    /// `tidepool.dev:owner` set locally on received snapshots (the claim retention needs).
    pub claims: bool,
}

impl TargetAbilities {
    /// A ZFS pool on a node with a Tidepool agent.
    pub const AGENT_POOL: Self = Self {
        holds: true,
        claims: true,
    };
}

/// A failed `zfs send -t` / `zfs receive -s`, as the controller saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeFailure {
    pub token: ResumeToken,
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
        tag: HoldTag,
    },
    /// `zfs release <tag> <snapshot>` (absent holds are not an error).
    Release {
        side: Side,
        snapshot: SnapshotName,
        guid: u64,
        tag: HoldTag,
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
    /// `zfs set tidepool.dev:owner=<owner> <snapshots...>` on the target, each with the
    /// GUID it was received with (the agent claims nothing that has another).
    SetOwner {
        snapshots: Vec<SnapshotRef>,
        owner: Owner,
    },
}

/// One `zfs send | zfs receive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendStep {
    pub stream: Stream,
    pub flags: SendFlags,
    pub receive: ReceiveOptions,
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
    Resume {
        token: ResumeToken,
        to_guid: Option<u64>,
    },
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
    /// `send.overrideProperties`/`send.excludeProperties` name something the receive
    /// allowlist refuses (an object admitted before the rule existed): nothing is received
    /// until the policy is fixed.
    InvalidReceiveProperties,
}

impl BlockedCode {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockedCode::SourceMissing => "SourceMissing",
            BlockedCode::NoSourceSnapshots => "NoSourceSnapshots",
            BlockedCode::PlaintextOfEncryptedSource => "PlaintextOfEncryptedSource",
            BlockedCode::Diverged => "Diverged",
            BlockedCode::CannotRotate => "CannotRotate",
            BlockedCode::InvalidReceiveProperties => "InvalidReceiveProperties",
        }
    }
}
