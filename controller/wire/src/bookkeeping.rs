//! The replication planner's steps besides the send itself, as one node's agent runs them:
//! protect the common snapshot (holds, a bookmark), let go of the superseded one, claim
//! what a receive created, and clear the way for a send (abort a stale partial receive,
//! rename a diverged replica aside). None of them destroys a snapshot or a dataset.
//!
//! Every action names the GUID the controller saw, and the agent checks it on a fresh read
//! before acting: a name that now belongs to another snapshot is refused.

use serde::{Deserialize, Serialize};
use tidepool_api::values::{HOLD_TAG_PREFIX, HoldTag};
use tidepool_api::{BookmarkName, DatasetName};

use crate::operation::{Owner, SnapshotRef};

/// The actions of one replication policy on one node, run in order; the first failure
/// stops the rest (the next plan, made from the inventories, redoes what is missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bookkeeping {
    /// The `ReplicationPolicy` the actions are for (the owner its claims record).
    pub owner: Owner,
    pub actions: Vec<BookkeepingAction>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "action",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum BookkeepingAction {
    /// `zfs hold <tag> <snapshot>`; a hold already there is success.
    Hold { snapshot: SnapshotRef, tag: HoldTag },
    /// `zfs release <tag> <snapshot>`; a hold already gone is success.
    Release { snapshot: SnapshotRef, tag: HoldTag },
    /// `zfs bookmark <snapshot> <bookmark>`; the same bookmark of the same snapshot already
    /// there is success.
    Bookmark {
        snapshot: SnapshotRef,
        bookmark: BookmarkName,
    },
    /// `zfs destroy <dataset>#<bookmark>`: only a Tidepool bookmark (see
    /// [`is_tidepool_bookmark`]) of the snapshot with this GUID.
    DestroyBookmark { bookmark: BookmarkName, guid: u64 },
    /// `zfs set tidepool.dev:owner=<owner>` on snapshots a receive created: only where no
    /// owner is set locally yet (one set to this owner already is success; another owner's
    /// is refused).
    Claim { snapshots: Vec<SnapshotRef> },
    /// `zfs rename -u <from> <to>`: a diverged replica kept under a new name, never
    /// destroyed; `to` must be `<from>-diverged-<time>`.
    RotateAside { from: DatasetName, to: DatasetName },
    /// `zfs receive -A <target>`: discards a partial receive (never a received snapshot).
    AbortReceive { target: DatasetName },
}

impl BookkeepingAction {
    /// The datasets the action touches (for the dataset roots).
    pub fn datasets(&self) -> Vec<DatasetName> {
        match self {
            Self::Hold { snapshot, .. } | Self::Release { snapshot, .. } => {
                vec![snapshot.snapshot.dataset()]
            }
            Self::Bookmark { snapshot, bookmark } => {
                vec![snapshot.snapshot.dataset(), bookmark.dataset()]
            }
            Self::DestroyBookmark { bookmark, .. } => vec![bookmark.dataset()],
            Self::Claim { snapshots } => snapshots.iter().map(|s| s.snapshot.dataset()).collect(),
            Self::RotateAside { from, to } => vec![from.clone(), to.clone()],
            Self::AbortReceive { target } => vec![target.clone()],
        }
    }

    /// A bounded label (metrics, logs).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Hold { .. } => "hold",
            Self::Release { .. } => "release",
            Self::Bookmark { .. } => "bookmark",
            Self::DestroyBookmark { .. } => "destroyBookmark",
            Self::Claim { .. } => "claim",
            Self::RotateAside { .. } => "rotateAside",
            Self::AbortReceive { .. } => "abortReceive",
        }
    }

    /// Why the request itself is not one an agent runs (checked before any zfs call).
    pub fn check(&self) -> Result<(), String> {
        match self {
            Self::Hold { tag, .. } | Self::Release { tag, .. }
                if !tag.as_str().starts_with(HOLD_TAG_PREFIX) =>
            {
                Err(format!(
                    "hold tag {tag} is not Tidepool's (it must start with {HOLD_TAG_PREFIX})"
                ))
            }
            Self::Bookmark { snapshot, bookmark }
                if snapshot.snapshot.dataset() != bookmark.dataset() =>
            {
                Err(format!(
                    "bookmark {bookmark} is not of the dataset of {}",
                    snapshot.snapshot
                ))
            }
            Self::Bookmark { bookmark, .. } | Self::DestroyBookmark { bookmark, .. }
                if !is_tidepool_bookmark(bookmark) =>
            {
                Err(format!(
                    "bookmark {bookmark} is not Tidepool's (its name must end in _tp<8 hex digits>)"
                ))
            }
            Self::Claim { snapshots } if snapshots.is_empty() => {
                Err("a claim names no snapshot".to_owned())
            }
            Self::RotateAside { from, to } if !is_rotated_name(from, to) => Err(format!(
                "{to} is not a rotated name of {from} (<dataset>-diverged-<time>)"
            )),
            _ => Ok(()),
        }
    }
}

/// A bookmark a replication policy made: its short name ends in `_tp` and 8 lowercase hex
/// digits (the policy's hash). Any other bookmark is someone else's.
pub fn is_tidepool_bookmark(bookmark: &BookmarkName) -> bool {
    let short = bookmark.short();
    let short = short.as_str();
    short.len() > 11 && {
        let (head, hash) = short.split_at(short.len() - 8);
        head.ends_with("_tp") && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
}

/// `to` is `from` with `-diverged-<something>` appended, in the same parent.
pub fn is_rotated_name(from: &DatasetName, to: &DatasetName) -> bool {
    to.as_str()
        .strip_prefix(from.as_str())
        .and_then(|rest| rest.strip_prefix("-diverged-"))
        .is_some_and(|time| !time.is_empty() && !time.contains('/'))
}

/// What [`Bookkeeping`] did: how many actions ran (all of them, on success).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bookkept {
    pub actions: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bookmark(s: &str) -> BookmarkName {
        s.parse().unwrap()
    }

    #[test]
    fn only_bookmarks_with_a_policy_suffix_are_tidepools() {
        assert!(is_tidepool_bookmark(&bookmark("tank/a#s1_tp0123abcd")));
        assert!(!is_tidepool_bookmark(&bookmark("tank/a#s1_tp0123abc")));
        assert!(!is_tidepool_bookmark(&bookmark("tank/a#s1_tp0123ABCD")));
        assert!(!is_tidepool_bookmark(&bookmark("tank/a#s1-0123abcd")));
        assert!(!is_tidepool_bookmark(&bookmark("tank/a#mine")));
    }

    #[test]
    fn a_rotated_name_is_the_dataset_with_a_diverged_suffix_beside_it() {
        let from: DatasetName = "tank/r".parse().unwrap();
        let ok: DatasetName = "tank/r-diverged-2026-12-03T20:00:00Z".parse().unwrap();
        assert!(is_rotated_name(&from, &ok));
        for bad in [
            "tank/other",
            "tank/r-diverged-",
            "tank/r/x-diverged-1",
            "tank/rx",
        ] {
            assert!(!is_rotated_name(&from, &bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn foreign_tags_and_bookmarks_are_refused_before_any_zfs_call() {
        let snapshot = SnapshotRef {
            snapshot: "tank/a@s1".parse().unwrap(),
            guid: 7,
        };
        let foreign_tag = BookkeepingAction::Release {
            snapshot: snapshot.clone(),
            tag: "backup-tool".parse().unwrap(),
        };
        assert!(foreign_tag.check().is_err());
        let ours = BookkeepingAction::Release {
            snapshot: snapshot.clone(),
            tag: "tidepool:ns/p".parse().unwrap(),
        };
        assert!(ours.check().is_ok());
        let foreign_bookmark = BookkeepingAction::DestroyBookmark {
            bookmark: bookmark("tank/a#keep"),
            guid: 7,
        };
        assert!(foreign_bookmark.check().is_err());
        let other_dataset = BookkeepingAction::Bookmark {
            snapshot,
            bookmark: bookmark("tank/b#s1_tp0123abcd"),
        };
        assert!(other_dataset.check().is_err());
    }
}
