//! The names a policy leaves on ZFS: its hold tag, its bookmarks, the name a diverged
//! target is rotated to.

use jiff::Timestamp;
use tidepool_api::names::MAX_SHORT_NAME_LEN;
use tidepool_api::values::{HOLD_TAG_PREFIX, HoldTag};
use tidepool_api::{BookmarkName, DatasetName, NameError, SnapshotShortName};

use crate::inventory::SnapshotInfo;
use crate::naming::{NamePrecision, format_time};
use crate::schedule::fnv1a;

/// The `zfs hold` tag of a policy: `tidepool:<namespace>/<name>`, or a hash of it when that
/// is too long for a tag or not one (a policy name is a DNS name, so only a caller's
/// mistake gets the hash for the second reason).
pub fn hold_tag(policy: &str) -> HoldTag {
    let readable = format!("{HOLD_TAG_PREFIX}{policy}");
    match readable.parse::<HoldTag>() {
        Ok(tag) if readable.len() <= 200 => tag,
        _ => HoldTag::tidepool_hashed(fnv1a(policy.as_bytes())),
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
