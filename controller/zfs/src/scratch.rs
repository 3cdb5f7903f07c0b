//! Scratch datasets: where a restore drill receives a stored chain to prove that it
//! restores, and which it destroys afterwards. The only datasets Tidepool ever destroys,
//! and only under three conditions checked on a fresh read just before:
//! - the name's last component starts with [`SCRATCH_PREFIX`] ([`Scratch::new`]);
//! - it carries [`DRILL_PROPERTY`] **locally** with the drill's own marker, which
//!   [`Zfs::receive_scratch`] set as it received the stream (every other receive excludes
//!   the property, so no stream and no replica can carry it);
//! - it has no child dataset (its snapshots, all received by the drill, go with it; a
//!   child would be someone else's data, and nothing recursive is ever run).

pub use tidepool_api::SCRATCH_PREFIX;
use tidepool_api::{DRILL_PROPERTY, DatasetName};

use crate::client::{CommandKind, Zfs};
use crate::cmd::{Depth, ListRequest, ObjectTypes, zfs};
use crate::error::ZfsError;
use crate::exec::{Argv, Executor};
use crate::parse::{ListEntry, ObjectType, PropertyEntry, PropertySource};
use crate::stream::ReceiveSink;
use crate::{PropertyName, PropertyValue, ReceiveOptions};

/// A dataset a drill may receive into and destroy, and the marker that proves it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scratch {
    dataset: DatasetName,
    marker: PropertyValue,
}

/// Why a scratch dataset was not destroyed (nothing was).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScratchRefused {
    #[error("{dataset} is not a scratch dataset: its name does not start with {SCRATCH_PREFIX}")]
    Name { dataset: DatasetName },
    #[error("the drill marker {marker:?} is not a valid property value: {reason}")]
    Marker { marker: String, reason: String },
    #[error(
        "{dataset} does not carry this drill's mark ({DRILL_PROPERTY} is {found}): it was not received by this drill and is left alone"
    )]
    NotMarked { dataset: DatasetName, found: String },
    #[error("{dataset} has child datasets ({children}): a drill never destroys them")]
    HasChildren {
        dataset: DatasetName,
        children: String,
    },
}

impl Scratch {
    pub fn new(dataset: DatasetName, marker: &str) -> Result<Scratch, ScratchRefused> {
        let leaf = dataset.as_str().rsplit('/').next().unwrap_or_default();
        if !leaf.starts_with(SCRATCH_PREFIX) || dataset.as_str().contains('@') {
            return Err(ScratchRefused::Name { dataset });
        }
        let marker = marker.parse().map_err(|e| ScratchRefused::Marker {
            marker: marker.to_owned(),
            reason: format!("{e}"),
        })?;
        Ok(Scratch { dataset, marker })
    }

    pub fn dataset(&self) -> &DatasetName {
        &self.dataset
    }

    pub fn marker(&self) -> &PropertyValue {
        &self.marker
    }
}

fn drill_property() -> PropertyName {
    DRILL_PROPERTY
        .parse()
        .unwrap_or_else(|_| unreachable!("{DRILL_PROPERTY} is a valid user property name"))
}

/// `zfs receive -u -o canmount=off -o tidepool.dev:drill=<marker> -x <other reserved>
/// <scratch>`: not resumable (a cut drill leaves nothing to resume), never mounted, and
/// marked as it lands, so a crash after the receive still leaves a dataset the next drill
/// may destroy.
pub fn receive_scratch(scratch: &Scratch) -> Argv {
    let mut a = zfs();
    a.args(["receive", "-u", "-o", "canmount=off"]);
    a.args([
        "-o".to_owned(),
        format!("{DRILL_PROPERTY}={}", scratch.marker),
    ]);
    for p in ReceiveOptions::always_excluded().filter(|p| p.as_str() != DRILL_PROPERTY) {
        a.args(["-x".to_owned(), p.to_string()]);
    }
    a.arg(scratch.dataset.as_str());
    a
}

/// `zfs destroy <scratch>@%`: every snapshot of the scratch dataset alone (no `-r`).
fn destroy_all_snapshots(dataset: &DatasetName) -> Argv {
    let mut a = zfs();
    a.args(["destroy".to_owned(), format!("{dataset}@%")]);
    a
}

/// `zfs destroy <scratch>`: never recursive; fails if anything is left below it.
fn destroy_dataset(dataset: &DatasetName) -> Argv {
    let mut a = zfs();
    a.args(["destroy", dataset.as_str()]);
    a
}

impl<E: Executor> Zfs<E> {
    /// Starts `zfs receive` of one stream into the scratch dataset ([`receive_scratch`]).
    pub async fn receive_scratch(&self, scratch: &Scratch) -> Result<ReceiveSink, ZfsError> {
        self.spawn_receive(receive_scratch(scratch)).await
    }

    /// Destroys the scratch dataset and its snapshots, after checking on a fresh read that
    /// it carries this drill's mark locally and has no child dataset ([`destroyable`]).
    /// `Ok(Err(_))`: refused, nothing destroyed; `Ok(Ok(false))`: it did not exist.
    pub async fn destroy_scratch(
        &self,
        scratch: &Scratch,
    ) -> Result<Result<bool, ScratchRefused>, ZfsError> {
        let prop = drill_property();
        let marks = match self
            .get(
                std::slice::from_ref(&prop),
                std::slice::from_ref(&scratch.dataset),
            )
            .await
        {
            Ok(e) => e,
            Err(e) if e.kind() == crate::ErrorKind::NotFound => return Ok(Ok(false)),
            Err(e) => return Err(e),
        };
        let below = ListRequest {
            roots: vec![scratch.dataset.clone()],
            types: ObjectTypes::ALL,
            depth: Depth::Limited(1),
            user_props: Vec::new(),
        };
        let listed = self.list(&below).await?;
        let has_snapshots = match destroyable(scratch, &marks, &listed.entries) {
            Ok(s) => s,
            Err(refused) => return Ok(Err(refused)),
        };
        if has_snapshots {
            self.run(
                CommandKind::Destroy,
                destroy_all_snapshots(&scratch.dataset),
            )
            .await?;
        }
        self.run(CommandKind::Destroy, destroy_dataset(&scratch.dataset))
            .await?;
        Ok(Ok(true))
    }
}

/// Whether the scratch may be destroyed, from its `zfs get tidepool.dev:drill` and its
/// one-level listing: only with this drill's mark set locally and no child dataset.
/// `Ok(true)` when it has snapshots (destroyed first).
pub fn destroyable(
    scratch: &Scratch,
    marks: &[PropertyEntry],
    below: &[ListEntry],
) -> Result<bool, ScratchRefused> {
    let marked = marks.iter().any(|e| {
        e.name.as_str() == scratch.dataset.as_str()
            && e.source == PropertySource::Local
            && e.value == scratch.marker.as_str()
    });
    if !marked {
        let found = marks
            .first()
            .map(|e| format!("{:?} ({:?})", e.value, e.source))
            .unwrap_or_else(|| "unset".to_owned());
        return Err(ScratchRefused::NotMarked {
            dataset: scratch.dataset.clone(),
            found,
        });
    }
    let children: Vec<&str> = below
        .iter()
        .filter(|e| matches!(e.kind, ObjectType::Filesystem | ObjectType::Volume))
        .map(|e| e.name.as_str())
        .filter(|n| *n != scratch.dataset.as_str())
        .collect();
    if !children.is_empty() {
        return Err(ScratchRefused::HasChildren {
            dataset: scratch.dataset.clone(),
            children: children.join(", "),
        });
    }
    Ok(below.iter().any(|e| e.kind == ObjectType::Snapshot))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ds(s: &str) -> DatasetName {
        s.parse().unwrap()
    }

    #[test]
    fn only_names_under_the_prefix_are_scratch() {
        assert!(Scratch::new(ds("tank/tidepool-drill-ab12"), "ReplicationPolicy/ns/p").is_ok());
        for bad in [
            "tank/app",
            "tank/tidepool-drill-x/child",
            "tank/xtidepool-drill-1",
            "tank",
        ] {
            assert!(
                matches!(Scratch::new(ds(bad), "m"), Err(ScratchRefused::Name { .. })),
                "{bad} accepted"
            );
        }
        assert!(matches!(
            Scratch::new(ds("tank/tidepool-drill-1"), "a\tb"),
            Err(ScratchRefused::Marker { .. })
        ));
    }

    #[test]
    fn the_receive_marks_the_scratch_never_mounts_it_and_excludes_the_owner() {
        let s = Scratch::new(ds("tank/tidepool-drill-1"), "ReplicationPolicy/a/b").unwrap();
        let argv = receive_scratch(&s).to_string();
        assert_eq!(
            argv,
            "zfs receive -u -o canmount=off -o tidepool.dev:drill=ReplicationPolicy/a/b -x tidepool.dev:owner tank/tidepool-drill-1"
        );
        assert!(!argv.contains(" -F") && !argv.contains(" -s "));
    }

    fn get(line: &str) -> PropertyEntry {
        crate::parse::parse_get_line(line).unwrap()
    }

    fn listed(lines: &[&str]) -> Vec<ListEntry> {
        let p = crate::parse::ListParser::new(vec![]);
        lines.iter().map(|l| p.parse_line(l).unwrap()).collect()
    }

    const MARK: &str = "ReplicationPolicy/ns/p";

    #[test]
    fn only_a_local_mark_of_this_drill_and_no_child_allow_a_destroy() {
        let s = Scratch::new(ds("tank/tidepool-drill-1"), MARK).unwrap();
        let own = get("tank/tidepool-drill-1\ttidepool.dev:drill\tReplicationPolicy/ns/p\tlocal");
        let alone = listed(&["tank/tidepool-drill-1\tfilesystem\t1\t2\t3\t4\t5\t-"]);
        let with_snap = listed(&[
            "tank/tidepool-drill-1\tfilesystem\t1\t2\t3\t4\t5\t-",
            "tank/tidepool-drill-1@s1\tsnapshot\t6\t2\t3\t4\t5\t-",
        ]);
        assert_eq!(
            destroyable(&s, std::slice::from_ref(&own), &alone),
            Ok(false)
        );
        assert_eq!(
            destroyable(&s, std::slice::from_ref(&own), &with_snap),
            Ok(true)
        );
        for mark in [
            "tank/tidepool-drill-1\ttidepool.dev:drill\tReplicationPolicy/ns/p\tinherited from tank",
            "tank/tidepool-drill-1\ttidepool.dev:drill\tReplicationPolicy/ns/q\tlocal",
            "tank/tidepool-drill-1\ttidepool.dev:drill\tReplicationPolicy/ns/p\treceived",
            "tank/tidepool-drill-1\ttidepool.dev:drill\t-\t-",
            "tank/other\ttidepool.dev:drill\tReplicationPolicy/ns/p\tlocal",
        ] {
            assert!(
                matches!(
                    destroyable(&s, &[get(mark)], &alone),
                    Err(ScratchRefused::NotMarked { .. })
                ),
                "{mark}"
            );
        }
        assert!(matches!(
            destroyable(&s, &[], &alone),
            Err(ScratchRefused::NotMarked { .. })
        ));
        for child in [
            "tank/tidepool-drill-1/kid\tfilesystem\t7\t2\t3\t4\t5\t-",
            "tank/tidepool-drill-1/vol\tvolume\t7\t2\t3\t4\t5\t-",
        ] {
            let mut below = with_snap.clone();
            below.extend(listed(&[child]));
            assert!(matches!(
                destroyable(&s, std::slice::from_ref(&own), &below),
                Err(ScratchRefused::HasChildren { .. })
            ));
        }
    }

    #[test]
    fn destroys_are_never_recursive() {
        let d = ds("tank/tidepool-drill-1");
        assert_eq!(
            destroy_all_snapshots(&d).to_string(),
            "zfs destroy tank/tidepool-drill-1@%"
        );
        assert_eq!(
            destroy_dataset(&d).to_string(),
            "zfs destroy tank/tidepool-drill-1"
        );
    }
}
