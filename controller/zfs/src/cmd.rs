//! Typed commands and the argv they become. Pure: nothing here runs anything, so every
//! command line can be unit-tested (and shown in a dry-run plan) as it will be run.
//!
//! Every name passed here is one of the strict [`tidepool_api::names`] types or a
//! validated value from [`crate::name`]; nothing is ever joined into a shell string.

use tidepool_api::names::{BookmarkName, DatasetName, PoolName, SnapshotName, SnapshotShortName};

use crate::exec::Argv;
use crate::name::ZfsTarget;
use crate::parse::{ListParser, POOL_COLUMNS};
use tidepool_api::values::{HoldTag, PropertyName, PropertyValue, ResumeToken};
use tidepool_wire::{ReceiveOptions, SendFlags};

pub(crate) fn zfs() -> Argv {
    Argv::new("zfs")
}

/// Which object types a listing includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectTypes {
    pub filesystem: bool,
    pub volume: bool,
    pub snapshot: bool,
    pub bookmark: bool,
}

impl ObjectTypes {
    pub const ALL: ObjectTypes = ObjectTypes {
        filesystem: true,
        volume: true,
        snapshot: true,
        bookmark: true,
    };
    pub const DATASETS: ObjectTypes = ObjectTypes {
        filesystem: true,
        volume: true,
        snapshot: false,
        bookmark: false,
    };
    pub const SNAPSHOTS: ObjectTypes = ObjectTypes {
        filesystem: false,
        volume: false,
        snapshot: true,
        bookmark: false,
    };
    pub const BOOKMARKS: ObjectTypes = ObjectTypes {
        filesystem: false,
        volume: false,
        snapshot: false,
        bookmark: true,
    };

    fn arg(self) -> String {
        let mut v = Vec::new();
        if self.filesystem {
            v.push("filesystem");
        }
        if self.volume {
            v.push("volume");
        }
        if self.snapshot {
            v.push("snapshot");
        }
        if self.bookmark {
            v.push("bookmark");
        }
        v.join(",")
    }

    fn is_empty(self) -> bool {
        !(self.filesystem || self.volume || self.snapshot || self.bookmark)
    }
}

/// How far below the roots a listing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Only the roots themselves (for snapshots/bookmarks: those of the roots).
    RootsOnly,
    /// `-d N`.
    Limited(u32),
    /// `-r`.
    Recursive,
}

/// `zfs list -H -p -o <fixed columns>,<user props> -t <types> [-r|-d N] <roots...>`.
///
/// A pool's whole inventory is one of these with the pool's root dataset as the root,
/// [`ObjectTypes::ALL`] and [`Depth::Recursive`]: one process, not one per dataset.
#[derive(Debug, Clone)]
pub struct ListRequest {
    pub roots: Vec<DatasetName>,
    pub types: ObjectTypes,
    pub depth: Depth,
    pub user_props: Vec<PropertyName>,
}

impl ListRequest {
    /// Everything under `root`: filesystems, volumes, snapshots and bookmarks.
    pub fn inventory(root: DatasetName, user_props: Vec<PropertyName>) -> ListRequest {
        ListRequest {
            roots: vec![root],
            types: ObjectTypes::ALL,
            depth: Depth::Recursive,
            user_props,
        }
    }

    pub fn parser(&self) -> ListParser {
        ListParser::new(self.user_props.clone())
    }

    pub fn argv(&self) -> Argv {
        let mut a = zfs();
        a.args(["list", "-H", "-p", "-o"]);
        a.arg(self.parser().columns_arg());
        types_and_depth(&mut a, self.types, self.depth);
        a.args(self.roots.iter().map(|r| r.as_str()));
        a
    }
}

/// `zfs snapshot [-o prop=value]... a@x b@x ...`: one atomic transaction for all of them
/// (OpenZFS requires them to be in one pool).
pub fn snapshot(snapshots: &[SnapshotName], props: &[(PropertyName, PropertyValue)]) -> Argv {
    let mut a = zfs();
    a.arg("snapshot");
    for (k, v) in props {
        a.args(["-o".to_owned(), format!("{k}={v}")]);
    }
    a.args(snapshots.iter().map(|s| s.as_str()));
    a
}

/// `zfs destroy dataset@a,b,c`: several snapshots of one dataset in one call.
pub fn destroy_snapshots(dataset: &DatasetName, shorts: &[SnapshotShortName]) -> Argv {
    let mut list = String::new();
    for (i, s) in shorts.iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        list.push_str(s.as_str());
    }
    let mut a = zfs();
    a.args(["destroy".to_owned(), format!("{dataset}@{list}")]);
    a
}

/// `zfs destroy -n -v -p dataset@a,b,c`: what would be destroyed and the space it would
/// free, nothing destroyed.
pub fn destroy_snapshots_dry_run(dataset: &DatasetName, shorts: &[SnapshotShortName]) -> Argv {
    let real = destroy_snapshots(dataset, shorts).into_vec();
    let mut a = zfs();
    a.args(["destroy", "-n", "-v", "-p"]);
    a.args(real.into_iter().skip(2));
    a
}

/// `zfs destroy pool/ds#mark`.
pub fn destroy_bookmark(bookmark: &BookmarkName) -> Argv {
    let mut a = zfs();
    a.args(["destroy", bookmark.as_str()]);
    a
}

/// `zfs destroy pool/ds`: never recursive; fails with `HasDependents` if it has children
/// or snapshots. Only tests destroy datasets (Tidepool itself never does).
#[cfg(any(test, feature = "test-support"))]
pub fn destroy_dataset(dataset: &DatasetName) -> Argv {
    let mut a = zfs();
    a.args(["destroy", dataset.as_str()]);
    a
}

/// `zfs create [-p] [-o prop=value]... pool/ds`.
pub fn create(
    dataset: &DatasetName,
    parents: bool,
    props: &[(PropertyName, PropertyValue)],
) -> Argv {
    let mut a = zfs();
    a.arg("create");
    if parents {
        a.arg("-p");
    }
    for (k, v) in props {
        a.args(["-o".to_owned(), format!("{k}={v}")]);
    }
    a.arg(dataset.as_str());
    a
}

/// `zfs hold tag snap...` (atomic across the snapshots).
pub fn hold(tag: &HoldTag, snapshots: &[SnapshotName]) -> Argv {
    let mut a = zfs();
    a.args(["hold", tag.as_str()]);
    a.args(snapshots.iter().map(|s| s.as_str()));
    a
}

/// `zfs release tag snap...`.
pub fn release(tag: &HoldTag, snapshots: &[SnapshotName]) -> Argv {
    let mut a = zfs();
    a.args(["release", tag.as_str()]);
    a.args(snapshots.iter().map(|s| s.as_str()));
    a
}

/// `zfs holds -H -p [-r] snap...`.
pub fn holds(snapshots: &[SnapshotName], recursive: bool) -> Argv {
    let mut a = zfs();
    a.args(["holds", "-H", "-p"]);
    if recursive {
        a.arg("-r");
    }
    a.args(snapshots.iter().map(|s| s.as_str()));
    a
}

/// What a bookmark is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookmarkSource {
    Snapshot(SnapshotName),
    /// Copying a bookmark (OpenZFS 2.0+).
    Bookmark(BookmarkName),
}

/// `zfs bookmark <snapshot|bookmark> <new bookmark>`.
pub fn bookmark(source: &BookmarkSource, bookmark: &BookmarkName) -> Argv {
    let mut a = zfs();
    a.arg("bookmark");
    a.arg(match source {
        BookmarkSource::Snapshot(s) => s.as_str(),
        BookmarkSource::Bookmark(b) => b.as_str(),
    });
    a.arg(bookmark.as_str());
    a
}

/// `zfs rename [-u] old new` for a filesystem or volume (`-u`: do not remount).
pub fn rename_dataset(from: &DatasetName, to: &DatasetName, no_remount: bool) -> Argv {
    let mut a = zfs();
    a.arg("rename");
    if no_remount {
        a.arg("-u");
    }
    a.args([from.as_str(), to.as_str()]);
    a
}

/// `zfs rename ds@old ds@new`.
pub fn rename_snapshot(from: &SnapshotName, to: &SnapshotShortName) -> Argv {
    let mut a = zfs();
    a.args([
        "rename".to_owned(),
        from.as_str().to_owned(),
        format!("{}@{}", from.dataset(), to),
    ]);
    a
}

/// `zfs get -H -p -o name,property,value,source <props> <targets...>`.
pub fn get<T: ZfsTarget>(props: &[PropertyName], targets: &[T]) -> Argv {
    let mut a = zfs();
    a.args(["get", "-H", "-p", "-o", "name,property,value,source"]);
    a.arg(if props.is_empty() {
        "all".to_owned()
    } else {
        props
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(",")
    });
    a.args(targets.iter().map(|t| t.zfs_arg()));
    a
}

/// `zfs set prop=value... target`.
pub fn set<T: ZfsTarget + ?Sized>(target: &T, props: &[(PropertyName, PropertyValue)]) -> Argv {
    let mut a = zfs();
    a.arg("set");
    a.args(props.iter().map(|(k, v)| format!("{k}={v}")));
    a.arg(target.zfs_arg());
    a
}

/// `zfs inherit prop target` (for a user property: removes it).
pub fn inherit<T: ZfsTarget + ?Sized>(target: &T, prop: &PropertyName) -> Argv {
    let mut a = zfs();
    a.args(["inherit", prop.as_str(), target.zfs_arg()]);
    a
}

/// The base of a send stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendBase {
    /// A full stream.
    Full,
    /// `-i snapshot`: the changes from one snapshot to the sent one.
    Incremental(SnapshotName),
    /// `-i pool/ds#mark`: the changes from a bookmark (its snapshot may be gone).
    FromBookmark(BookmarkName),
    /// `-I snapshot`: every snapshot between the base and the sent one, as one stream.
    WithIntermediates(SnapshotName),
}

/// `zfs send [flags] [-i|-I base] snapshot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    pub snapshot: SnapshotName,
    pub base: SendBase,
    pub flags: SendFlags,
}

impl SendRequest {
    pub fn full(snapshot: SnapshotName) -> SendRequest {
        SendRequest {
            snapshot,
            base: SendBase::Full,
            flags: SendFlags::default(),
        }
    }

    pub fn argv(&self) -> Argv {
        self.argv_with(false)
    }

    /// `zfs send -n -v -P ...`: prints the estimated size, sends nothing.
    pub fn estimate_argv(&self) -> Argv {
        self.argv_with(true)
    }

    fn argv_with(&self, dry_run: bool) -> Argv {
        let mut a = zfs();
        a.arg("send");
        if dry_run {
            a.args(["-n", "-v", "-P"]);
        }
        let f = self.flags;
        for (on, flag) in [
            (f.raw, "-w"),
            (f.compressed, "-c"),
            (f.large_blocks, "-L"),
            (f.embedded_data, "-e"),
            (f.properties, "-p"),
        ] {
            if on {
                a.arg(flag);
            }
        }
        match &self.base {
            SendBase::Full => {}
            SendBase::Incremental(s) => {
                a.args(["-i", s.as_str()]);
            }
            SendBase::FromBookmark(b) => {
                a.args(["-i", b.as_str()]);
            }
            SendBase::WithIntermediates(s) => {
                a.args(["-I", s.as_str()]);
            }
        }
        a.arg(self.snapshot.as_str());
        a
    }
}

/// `zfs send -t <token>`: resumes an interrupted stream. The token carries the original
/// flags (raw, compressed, ...).
pub fn send_resume(token: &ResumeToken, dry_run: bool) -> Argv {
    let mut a = zfs();
    a.arg("send");
    if dry_run {
        a.args(["-n", "-v", "-P"]);
    }
    a.args(["-t", token.as_str()]);
    a
}

/// `zfs receive -s -u [-o prop=value]... [-x prop]... -x tidepool.dev:owner -x
/// tidepool.dev:drill target`.
///
/// There is deliberately no `-F`: forcing a receive rolls the target back and destroys
/// snapshots the source no longer has, which Tidepool must never do over data that exists
/// only on the target (DESIGN.md, safety rules). Divergence surfaces as
/// [`crate::ErrorKind::StreamMismatch`] and is handled above this layer. `-u` and the
/// exclusion of Tidepool's own properties are not options: see [`ReceiveOptions`].
pub fn receive(options: &ReceiveOptions) -> Argv {
    let mut a = zfs();
    a.arg("receive");
    if options.resumable() {
        a.arg("-s");
    }
    a.arg("-u");
    for p in options.set() {
        a.args(["-o".to_owned(), p.to_string()]);
    }
    for p in options.exclude() {
        a.args(["-x", p.name().as_str()]);
    }
    for p in ReceiveOptions::always_excluded() {
        a.args(["-x".to_owned(), p.to_string()]);
    }
    a.arg(options.target().as_str());
    a
}

/// `zfs receive -A target`: discards a partial receive and its resume token.
pub fn receive_abort(target: &DatasetName) -> Argv {
    let mut a = zfs();
    a.args(["receive", "-A", target.as_str()]);
    a
}

/// `zfs version`.
pub fn version() -> Argv {
    let mut a = zfs();
    a.arg("version");
    a
}

/// `zpool list -H -p -o <POOL_COLUMNS> [pool...]`.
pub fn pool_list(pools: &[PoolName]) -> Argv {
    let mut a = Argv::new("zpool");
    a.args(["list", "-H", "-p", "-o", POOL_COLUMNS]);
    a.args(pools.iter().map(|p| p.as_str()));
    a
}

/// `zfs get -H -p -o name,property,value,source -s local -t <types> [-r|-d N] <prop> <roots>`:
/// only the objects on which `prop` is set locally. An inherited value, or one received
/// in a stream, is not printed at all, which is what an ownership claim needs. Several
/// roots in one call let a refresh read the owners of many datasets' snapshots at once
/// without naming each snapshot.
pub fn get_local(
    prop: &PropertyName,
    roots: &[DatasetName],
    types: ObjectTypes,
    depth: Depth,
) -> Argv {
    let mut a = zfs();
    a.args([
        "get",
        "-H",
        "-p",
        "-o",
        "name,property,value,source",
        "-s",
        "local",
    ]);
    types_and_depth(&mut a, types, depth);
    a.arg(prop.as_str());
    a.args(roots.iter().map(DatasetName::as_str));
    a
}

/// `-t <types>` (every type when none is named) and how deep below the roots, the same for
/// `zfs list` and `zfs get`.
fn types_and_depth(a: &mut Argv, types: ObjectTypes, depth: Depth) {
    let types = if types.is_empty() {
        ObjectTypes::ALL
    } else {
        types
    };
    a.args(["-t".to_owned(), types.arg()]);
    match depth {
        Depth::RootsOnly => {
            // Snapshots and bookmarks of a root are one level below it.
            if types.snapshot || types.bookmark {
                a.args(["-d", "1"]);
            }
        }
        Depth::Limited(n) => {
            a.args(["-d".to_owned(), n.to_string()]);
        }
        Depth::Recursive => {
            a.arg("-r");
        }
    }
}

/// `zpool get -H -p -o name,property,value,source feature@a,feature@b... pool`.
pub fn pool_features(pool: &PoolName, features: &[&str]) -> Argv {
    let mut a = Argv::new("zpool");
    a.args(["get", "-H", "-p", "-o", "name,property,value,source"]);
    a.arg(
        features
            .iter()
            .map(|f| format!("feature@{f}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    a.arg(pool.as_str());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidepool_api::{ExcludedProperty, ReceiveProperty};

    fn ds(s: &str) -> DatasetName {
        s.parse().unwrap()
    }
    fn snap(s: &str) -> SnapshotName {
        s.parse().unwrap()
    }
    fn v(a: Argv) -> Vec<String> {
        a.into_vec()
    }

    #[test]
    fn list_argv() {
        let req = ListRequest::inventory(ds("tank"), vec!["tidepool.dev:owner".parse().unwrap()]);
        assert_eq!(
            v(req.argv()),
            [
                "zfs",
                "list",
                "-H",
                "-p",
                "-o",
                "name,type,guid,createtxg,creation,used,written,receive_resume_token,tidepool.dev:owner",
                "-t",
                "filesystem,volume,snapshot,bookmark",
                "-r",
                "tank"
            ]
        );
        let req = ListRequest {
            roots: vec![ds("tank/a"), ds("tank/b")],
            types: ObjectTypes::SNAPSHOTS,
            depth: Depth::RootsOnly,
            user_props: vec![],
        };
        assert_eq!(
            &v(req.argv())[5..],
            [
                "name,type,guid,createtxg,creation,used,written,receive_resume_token",
                "-t",
                "snapshot",
                "-d",
                "1",
                "tank/a",
                "tank/b"
            ]
        );
    }

    #[test]
    fn snapshot_destroy_hold_argv() {
        let props = vec![(
            "tidepool.dev:owner".parse().unwrap(),
            "ns/sched".parse().unwrap(),
        )];
        assert_eq!(
            v(snapshot(&[snap("tank/a@x"), snap("tank/b@x")], &props)),
            [
                "zfs",
                "snapshot",
                "-o",
                "tidepool.dev:owner=ns/sched",
                "tank/a@x",
                "tank/b@x"
            ]
        );
        let shorts: Vec<SnapshotShortName> = vec!["a".parse().unwrap(), "b".parse().unwrap()];
        assert_eq!(
            v(destroy_snapshots(&ds("tank/x"), &shorts)),
            ["zfs", "destroy", "tank/x@a,b"]
        );
        let tag: HoldTag = "tidepool:t1".parse().unwrap();
        assert_eq!(
            v(hold(&tag, &[snap("tank/a@x")])),
            ["zfs", "hold", "tidepool:t1", "tank/a@x"]
        );
        assert_eq!(
            v(holds(&[snap("tank/a@x")], false)),
            ["zfs", "holds", "-H", "-p", "tank/a@x"]
        );
        assert_eq!(
            v(rename_snapshot(&snap("tank/a@x"), &"y".parse().unwrap())),
            ["zfs", "rename", "tank/a@x", "tank/a@y"]
        );
    }

    /// Whatever options a receive is built from, its argv has `-u`, never `-F`, and
    /// excludes Tidepool's own properties; no allowed option names a dangerous property.
    #[test]
    fn every_receive_is_unmounted_and_excludes_tidepool_properties() {
        let options = [
            ReceiveOptions::new(ds("back/a")),
            ReceiveOptions::new(ds("back/a")).not_resumable(),
            ReceiveOptions::with_properties(
                ds("back/a"),
                vec![
                    ReceiveProperty::new("canmount", "noauto").unwrap(),
                    ReceiveProperty::new("com.example:x", "y").unwrap(),
                ],
                vec![ExcludedProperty::new("compression").unwrap()],
            )
            .unwrap(),
        ];
        for o in &options {
            let argv = v(receive(o));
            assert!(argv.iter().any(|a| a == "-u"), "{argv:?}");
            assert!(!argv.iter().any(|a| a == "-F"), "{argv:?}");
            assert!(
                argv.windows(2)
                    .any(|w| w[0] == "-x" && w[1] == tidepool_api::OWNER_PROPERTY),
                "{argv:?}"
            );
            for dangerous in [
                "mountpoint",
                "canmount=on",
                "sharenfs",
                "tidepool.dev:owner=",
            ] {
                assert!(!argv.iter().any(|a| a.starts_with(dangerous)), "{argv:?}");
            }
        }
        // The options themselves cannot be made dangerous: their parts refuse.
        assert!(ReceiveProperty::new("mountpoint", "/").is_err());
        assert!(ExcludedProperty::new("tidepool.dev:owner").is_err());
    }

    #[test]
    fn send_receive_argv() {
        let mut req = SendRequest::full(snap("tank/a@2"));
        req.flags = SendFlags {
            raw: true,
            large_blocks: true,
            ..SendFlags::default()
        };
        req.base = SendBase::FromBookmark("tank/a#1".parse().unwrap());
        assert_eq!(
            v(req.argv()),
            ["zfs", "send", "-w", "-L", "-i", "tank/a#1", "tank/a@2"]
        );
        req.base = SendBase::WithIntermediates(snap("tank/a@0"));
        assert_eq!(
            v(req.estimate_argv()),
            [
                "zfs", "send", "-n", "-v", "-P", "-w", "-L", "-I", "tank/a@0", "tank/a@2"
            ]
        );
        let r = ReceiveOptions::with_properties(
            ds("back/a"),
            vec![ReceiveProperty::new("readonly", "on").unwrap()],
            vec![ExcludedProperty::new("atime").unwrap()],
        )
        .unwrap();
        assert_eq!(
            v(receive(&r)),
            [
                "zfs",
                "receive",
                "-s",
                "-u",
                "-o",
                "readonly=on",
                "-x",
                "atime",
                "-x",
                "tidepool.dev:owner",
                "-x",
                "tidepool.dev:drill",
                "back/a"
            ]
        );
        assert_eq!(
            v(receive(&ReceiveOptions::new(ds("back/a")).not_resumable())),
            [
                "zfs",
                "receive",
                "-u",
                "-x",
                "tidepool.dev:owner",
                "-x",
                "tidepool.dev:drill",
                "back/a"
            ]
        );
        assert_eq!(
            v(receive_abort(&ds("back/a"))),
            ["zfs", "receive", "-A", "back/a"]
        );
    }

    #[test]
    fn local_get_and_pool_feature_argv() {
        let owner: PropertyName = "tidepool.dev:owner".parse().unwrap();
        assert_eq!(
            v(get_local(
                &owner,
                &[ds("tank")],
                ObjectTypes::SNAPSHOTS,
                Depth::Recursive
            )),
            [
                "zfs",
                "get",
                "-H",
                "-p",
                "-o",
                "name,property,value,source",
                "-s",
                "local",
                "-t",
                "snapshot",
                "-r",
                "tidepool.dev:owner",
                "tank"
            ]
        );
        assert_eq!(
            &v(get_local(
                &owner,
                &[ds("tank/a"), ds("tank/b")],
                ObjectTypes::SNAPSHOTS,
                Depth::RootsOnly
            ))[8..],
            [
                "-t",
                "snapshot",
                "-d",
                "1",
                "tidepool.dev:owner",
                "tank/a",
                "tank/b"
            ]
        );
        assert_eq!(
            v(pool_features(
                &"tank".parse().unwrap(),
                &["bookmarks", "encryption"]
            )),
            [
                "zpool",
                "get",
                "-H",
                "-p",
                "-o",
                "name,property,value,source",
                "feature@bookmarks,feature@encryption",
                "tank"
            ]
        );
    }
}
