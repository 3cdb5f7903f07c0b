//! The retention rules computed from their words, one snapshot at a time, by brute force:
//! no sorting, no walk, no period arithmetic shared with the implementation (periods are
//! formatted civil times, as a person would write them). Valid for histories whose
//! `creation` rises with `createtxg` (no clock step), where "the newest of a period" and
//! "the first N periods" mean the same whichever order one reads.

use std::collections::HashSet;

use jiff::SignedDuration;
use jiff::tz::TimeZone;
use tidepool_api::{Owner, Retention};

use crate::inventory::SnapshotInfo;
use crate::retention::Protections;

/// The GUIDs kept, ascending.
pub(super) fn kept(
    retention: &Retention,
    tz: &TimeZone,
    owner: &Owner,
    protections: &Protections,
    snapshots: &[SnapshotInfo],
) -> Vec<u64> {
    let owned: Vec<&SnapshotInfo> = snapshots
        .iter()
        .filter(|s| s.owner.as_ref() == Some(owner))
        .collect();
    // How many owned snapshots ZFS wrote after `s`.
    let written_after =
        |s: &SnapshotInfo| owned.iter().filter(|t| t.createtxg > s.createtxg).count();
    let newest = owned.iter().find(|s| written_after(s) == 0);
    let oldest = owned.iter().find(|s| written_after(s) == owned.len() - 1);
    let periods: [(Option<i32>, &str); 5] = [
        (retention.hourly, "%Y-%m-%d %H"),
        (retention.daily, "%Y-%m-%d"),
        (retention.weekly, "%G-W%V"),
        (retention.monthly, "%Y-%m"),
        (retention.yearly, "%Y"),
    ];
    let period = |s: &SnapshotInfo, format: &str| {
        s.creation.to_zoned(tz.clone()).strftime(format).to_string()
    };

    let mut kept: Vec<u64> = owned
        .iter()
        .filter(|s| {
            let is_newest = newest.is_some_and(|n| n.guid == s.guid);
            let is_oldest = oldest.is_some_and(|o| o.guid == s.guid);
            let last = retention
                .keep_last
                .is_some_and(|n| written_after(s) < usize::try_from(n).unwrap_or(0));
            let within = match (&retention.keep_within, newest) {
                (Some(d), Some(n)) => {
                    let d = SignedDuration::try_from(d.as_std()).expect("duration");
                    n.creation.duration_since(s.creation) < d
                }
                _ => false,
            };
            // "The newest snapshot of each of the first N periods that have snapshots, and
            // the oldest snapshot while fewer than N periods have snapshots."
            let bucket = periods.iter().any(|(n, format)| {
                let Some(n) = n.and_then(|n| usize::try_from(n).ok()) else {
                    return false;
                };
                let mine = period(s, format);
                let newer_periods: HashSet<String> = owned
                    .iter()
                    .filter(|t| t.createtxg > s.createtxg)
                    .map(|t| period(t, format))
                    .collect();
                let newest_of_its_period = !newer_periods.contains(&mine);
                let all_periods: HashSet<String> =
                    owned.iter().map(|t| period(t, format)).collect();
                (newest_of_its_period && newer_periods.len() < n)
                    || (is_oldest && all_periods.len() < n)
            });
            is_newest || last || within || bucket || s.held || protections.get(s.guid).is_some()
        })
        .map(|s| s.guid)
        .collect();
    kept.sort_unstable();
    kept
}
