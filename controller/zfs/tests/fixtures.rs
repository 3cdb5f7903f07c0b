//! Parsers and the error classifier against output captured from real OpenZFS 2.3 (the
//! conformance VM; regenerate with `TIDEPOOL_ZFS_CAPTURE=controller/zfs/tests/fixtures
//! cargo test -p tidepool-tests --test zfs_conformance`, then sort -u the stderr file).

#![allow(clippy::unwrap_used)]

use tidepool_zfs::parse::{
    ListParser, parse_destroy_estimate, parse_get_line, parse_hold_line, parse_pool_line,
    parse_send_estimate, parse_version, read_records,
};
use tidepool_zfs::{
    ErrorKind, ObjectType, PoolHealth, PropertySource, Version, ZfsObjectName, classify,
};

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn inventory_listing_with_unusual_names() {
    // `zfs list -H -p -o <fixed>,tidepool.dev:owner,tidepool.dev:other -t all -r inv11`
    let text = fixture("zfs-list-inventory.txt");
    let p = ListParser::new(vec![
        "tidepool.dev:owner".parse().unwrap(),
        "tidepool.dev:other".parse().unwrap(),
    ]);
    let entries: Vec<_> = text.lines().map(|l| p.parse_line(l).unwrap()).collect();
    assert_eq!(entries.len(), 11);
    let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();

    let root = get("inv11");
    assert_eq!((root.kind, root.createtxg), (ObjectType::Filesystem, 1));
    assert!(root.guid != 0 && root.used.is_some() && root.written.is_some());
    assert_eq!(get("inv11/vol").kind, ObjectType::Volume);

    let s = get("inv11/with space@snap with space");
    assert_eq!(s.kind, ObjectType::Snapshot);
    assert_eq!(s.name.dataset_part(), "inv11/with space");
    assert_eq!(s.name.short_part(), Some("snap with space"));
    assert!(s.name.to_snapshot_name().is_err());
    // Its owner value ("ns a/sched<TAB>b", inherited) has a tab and two user properties
    // were asked for: reported as ambiguous, read as unset.
    assert!(s.user_props_ambiguous());
    assert_eq!(s.user_prop(0), None);

    let b = get("inv11/a:b.c-d_e#mark 1");
    assert_eq!(b.kind, ObjectType::Bookmark);
    assert_eq!(
        (b.used, b.written, b.receive_resume_token.as_deref()),
        (None, None, None)
    );
    let bs = get("inv11/a:b.c-d_e@s.1:x-y_z");
    assert_eq!((b.guid, b.createtxg), (bs.guid, bs.createtxg));
    assert_eq!(
        bs.name.to_snapshot_name().unwrap().as_str(),
        "inv11/a:b.c-d_e@s.1:x-y_z"
    );
    assert!(b.name.to_bookmark_name().is_err(), "a space in the mark");

    let ours = get("inv11/apps/db@tidepool_20261122T093000Z_hourly");
    assert!(!ours.user_props_ambiguous());
    assert_eq!(
        (ours.user_prop(0), ours.user_prop(1)),
        (Some("team-a/db-hourly"), None)
    );
    assert_eq!(
        ours.name.to_snapshot_name().unwrap().dataset().as_str(),
        "inv11/apps/db"
    );
}

#[tokio::test]
async fn inventory_listing_streamed_line_by_line() {
    let text = fixture("zfs-list-inventory.txt");
    let p = ListParser::new(vec![
        "tidepool.dev:owner".parse().unwrap(),
        "tidepool.dev:other".parse().unwrap(),
    ]);
    let mut reader = tokio::io::BufReader::with_capacity(16, text.as_bytes());
    let mut names = Vec::new();
    let n = read_records(&mut reader, &mut |l| p.parse_line(l), &mut |e| {
        names.push(e.name)
    })
    .await
    .unwrap();
    assert_eq!(n, 11);
    assert!(names.contains(&ZfsObjectName::new("inv11/with space@snap with space")));
}

#[test]
fn get_holds_pools_version() {
    let got: Vec<_> = fixture("zfs-get.txt")
        .lines()
        .map(|l| parse_get_line(l).unwrap())
        .collect();
    assert_eq!(got.len(), 6);
    assert_eq!(got[0].property, "tidepool.dev:owner");
    assert_eq!(
        (got[0].value.as_str(), &got[0].source),
        ("ns/sched", &PropertySource::Local)
    );
    // compression does not apply to a snapshot: '-' value, '-' source.
    assert_eq!(
        (got[1].value_opt(), &got[1].source),
        (None, &PropertySource::None)
    );
    assert!(got[2].value.parse::<u64>().is_ok());

    let holds: Vec<_> = fixture("zfs-holds.txt")
        .lines()
        .map(|l| parse_hold_line(l).unwrap())
        .collect();
    assert_eq!(holds.len(), 3);
    assert_eq!(holds[0].snapshot, "hold3/d@s1");
    assert!(holds.iter().any(|h| h.tag == "tidepool:target-2"));
    assert!(holds.iter().all(|h| h.created > 1_700_000_000));

    let pools: Vec<_> = fixture("zpool-list.txt")
        .lines()
        .map(|l| parse_pool_line(l).unwrap())
        .collect();
    assert!(pools.len() > 5);
    for p in &pools {
        assert_eq!(p.health, PoolHealth::Online);
        assert_eq!(p.allocated + p.free, p.size, "{p:?}");
        assert!(p.capacity_percent <= 100 && !p.readonly);
    }

    let v = parse_version(&fixture("zfs-version.txt")).unwrap();
    assert_eq!(v.userland, Version::new(2, 3, 2));
    assert_eq!(v.kernel, Some(Version::new(2, 3, 2)));
    assert_eq!(v.userland_raw, "zfs-2.3.2-2~bpo12+2");
    let c = v.capabilities();
    assert!(c.bookmarks && c.raw_send && c.resumable_receive && c.json_output);
}

#[test]
fn send_estimates() {
    let full = parse_send_estimate(&fixture("zfs-send-nvP-full.txt")).unwrap();
    assert_eq!(full.items.len(), 1);
    assert_eq!(full.items[0].from, None);
    assert_eq!(full.total_bytes, full.items[0].bytes);

    let i = parse_send_estimate(&fixture("zfs-send-nvP-i.txt")).unwrap();
    assert_eq!(i.items[0].from.as_deref(), Some("chainsrc5/d@s1"));

    let many = parse_send_estimate(&fixture("zfs-send-nvP-I.txt")).unwrap();
    assert_eq!(many.items.len(), 2);
    assert_eq!(many.items[0].from.as_deref(), Some("s2"));
    assert_eq!(
        many.total_bytes,
        many.items.iter().map(|i| i.bytes).sum::<u64>()
    );

    let t = parse_send_estimate(&fixture("zfs-send-nvP-t.txt")).unwrap();
    let r = t.resume.expect("token contents");
    assert_eq!(r.toname.as_deref(), Some("ressrc0/d@s1"));
    assert_eq!(r.toguid, Some(0x1f45_44d9_db53_f2d9));
    assert_eq!(r.bytes, Some(0x3e_2fc8));
    assert_eq!(r.fromguid, None, "a full stream");
    assert_eq!(t.items.len(), 1);
    assert!(t.total_bytes > 0);
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn every_captured_stderr_is_classified_as_the_suite_saw_it() {
    let text = fixture("stderr-classified.tsv");
    let mut kinds = std::collections::BTreeSet::new();
    for line in text.lines() {
        let (kind, stderr) = line.split_once('\t').unwrap();
        let stderr = unescape(stderr);
        assert_eq!(classify(&stderr).as_str(), kind, "{stderr}");
        kinds.insert(kind.to_owned());
    }
    for k in [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Busy,
        ErrorKind::Held,
        ErrorKind::HasDependents,
        ErrorKind::OutOfSpace,
        ErrorKind::StreamMismatch,
        ErrorKind::PartialReceiveExists,
        ErrorKind::StreamInterrupted,
        ErrorKind::ResumeTokenInvalid,
        ErrorKind::ResumeTokenStale,
        ErrorKind::PermissionDenied,
        ErrorKind::Unsupported,
    ] {
        assert!(
            kinds.contains(k.as_str()),
            "no real stderr captured for {k}"
        );
    }
    assert_eq!(classify("something new went wrong"), ErrorKind::Other);
}

#[test]
fn destroy_estimate() {
    let est = parse_destroy_estimate(&fixture("zfs-destroy-nvp.txt")).unwrap();
    let names: Vec<&str> = est.destroyed.iter().map(|n| n.as_str()).collect();
    assert_eq!(names, ["snap0/b@m1", "snap0/b@m2"]);
    assert_eq!(est.reclaim_bytes, 0);
    assert!(
        parse_destroy_estimate("destroy\tp/d@a\n").is_err(),
        "no reclaim line"
    );
}
