//! Conformance of the zfs layer (`tidepool-zfs`) against real OpenZFS 2.3 in the test VM.
//!
//! Every test runs the layer's own commands through [`VmExecutor`] (the same code as in
//! production, only the process starts inside the VM) and checks the effect with a fresh
//! read. One VM per test binary ([`ZfsVm::shared`]); each test makes its own pools, so
//! tests run in parallel without seeing each other.
//!
//! Run: `cargo test -p tidepool-tests --test zfs_conformance -- --nocapture` (prints the VM
//! boot time and each test's finish time since the binary started; libtest's "finished in"
//! line is the suite's wall time). With `TIDEPOOL_ZFS_CAPTURE=<dir>` set, the raw outputs
//! the parser fixtures come from are written to `<dir>` (the fixtures in
//! `controller/zfs/tests/fixtures/` were made so).

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tidepool_api::names::{BookmarkName, DatasetName, PoolName, SnapshotName, SnapshotShortName};
use tidepool_tests::zfs_exec::{VmExecutor, vm_zfs};
use tidepool_tests::zfs_vm::ZfsVm;
use tidepool_zfs::exec::{BoxFuture, Executor, Spawned};
use tidepool_zfs::{
    Argv, BookmarkSource, Depth, ErrorKind, HoldTag, ListRequest, ObjectType, ObjectTypes,
    PoolHealth, PropertyName, PropertySource, PropertyValue, ReceiveOptions, ResumeToken, SendBase,
    SendFlags, SendRequest, Version, Zfs, ZfsError, pipe,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type VmZfs = Zfs<VmExecutor>;

fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn done(test: &str) {
    println!(
        "[zfs_conformance +{:.1}s] {test} done",
        started().elapsed().as_secs_f64()
    );
}

async fn vm() -> &'static ZfsVm {
    started();
    match ZfsVm::shared().await {
        Ok(vm) => {
            static ONCE: OnceLock<()> = OnceLock::new();
            ONCE.get_or_init(|| {
                println!(
                    "[zfs_conformance] VM ready: boot-to-ready {:.1}s (kernel {})",
                    vm.boot_time().as_secs_f64(),
                    vm.kernel_release()
                )
            });
            vm
        }
        Err(e) => panic!(
            "the conformance suite needs real OpenZFS 2.3 in the test VM, and it could not \
             start: {e:#}"
        ),
    }
}

/// A fresh pool (one simulated node) of 256 MiB.
async fn new_pool(vm: &ZfsVm, prefix: &str) -> PoolName {
    let name = vm.unique_pool_name(prefix);
    vm.create_pool(&name, 256 << 20).await.unwrap();
    name.parse().unwrap()
}

fn ds(s: &str) -> DatasetName {
    s.parse().unwrap()
}
fn snap(s: &str) -> SnapshotName {
    s.parse().unwrap()
}
fn bm(s: &str) -> BookmarkName {
    s.parse().unwrap()
}
fn short(s: &str) -> SnapshotShortName {
    s.parse().unwrap()
}
fn prop(s: &str) -> PropertyName {
    s.parse().unwrap()
}
fn val(s: &str) -> PropertyValue {
    s.parse().unwrap()
}
fn tag(s: &str) -> HoldTag {
    s.parse().unwrap()
}

/// Runs a setup command in the VM (not part of what is under test).
async fn sh(vm: &ZfsVm, argv: &[&str]) -> String {
    vm.exec_ok(argv.iter().copied()).await.unwrap()
}

/// Writes `mib` MiB of random data into a file of a mounted dataset.
async fn write_data(vm: &ZfsVm, dataset: &DatasetName, file: &str, mib: u32) {
    sh(
        vm,
        &[
            "dd",
            "if=/dev/urandom",
            &format!("of=/{dataset}/{file}"),
            "bs=1M",
            &format!("count={mib}"),
            "status=none",
        ],
    )
    .await;
}

fn owner() -> PropertyName {
    prop("tidepool.dev:owner")
}

/// Asserts that `r` failed with `kind`, printing the stderr zfs gave.
fn expect_kind<T: std::fmt::Debug>(r: Result<T, ZfsError>, kind: ErrorKind) -> ZfsError {
    match r {
        Ok(v) => panic!("expected {kind}, got success: {v:?}"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "wrong classification of: {e}");
            if let Some(stderr) = e.stderr() {
                capture_stderr(kind, stderr);
            }
            e
        }
    }
}

fn capture(name: &str, content: &[u8]) {
    if let Some(dir) = std::env::var_os("TIDEPOOL_ZFS_CAPTURE") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), content).unwrap();
    }
}

/// Appends one real stderr and the kind the layer gave it to `stderr-classified.tsv`
/// (`<kind><TAB><stderr with \\ \\n \\t escaped>`), the classifier's fixture.
fn capture_stderr(kind: ErrorKind, stderr: &str) {
    use std::io::Write;
    if let Some(dir) = std::env::var_os("TIDEPOOL_ZFS_CAPTURE") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let escaped = stderr
            .trim_end()
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\t', "\\t");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stderr-classified.tsv"))
            .unwrap();
        f.write_all(format!("{kind}\t{escaped}\n").as_bytes())
            .unwrap();
    }
}

/// Runs an argv through the layer's executor and returns its raw stdout (for fixtures).
async fn raw(z: &VmZfs, argv: Argv) -> Vec<u8> {
    tidepool_zfs::exec::run(z.executor(), &argv, Some(Duration::from_secs(60)))
        .await
        .unwrap()
        .stdout
}

/// Sends `req` into `recv` and returns the bytes moved, checking the progress counters.
async fn send_into(z: &VmZfs, req: &SendRequest, recv: &ReceiveOptions) -> Result<u64, ZfsError> {
    let send = z.send(req).await?;
    let sink = z.receive(recv).await?;
    let (sp, rp) = (send.progress(), sink.progress());
    let n = pipe(send, sink).await?;
    assert_eq!(sp.bytes(), n, "send progress counts every byte");
    assert_eq!(rp.bytes(), n, "receive progress counts every byte");
    Ok(n)
}

fn recv_into(target: &DatasetName) -> ReceiveOptions {
    ReceiveOptions::new(target.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_capabilities_and_pools() {
    let vm = vm().await;
    let z = vm_zfs(vm);
    let v = z.version().await.unwrap();
    capture(
        "zfs-version.txt",
        &raw(&z, tidepool_zfs::cmd::version()).await,
    );
    assert_eq!((v.userland.major, v.userland.minor), (2, 3), "{v:?}");
    assert_eq!(v.kernel.map(|k| (k.major, k.minor)), Some((2, 3)), "{v:?}");
    assert!(v.effective() >= Version::new(2, 3, 0));
    let c = v.capabilities();
    assert!(c.bookmarks && c.raw_send && c.resumable_receive && c.bookmark_copy && c.json_output);

    let pool = new_pool(vm, "ver").await;
    let pools = z.pools(std::slice::from_ref(&pool)).await.unwrap();
    capture(
        "zpool-list.txt",
        &raw(&z, tidepool_zfs::cmd::pool_list(&[])).await,
    );
    let [p] = pools.as_slice() else {
        panic!("{pools:?}")
    };
    assert_eq!(p.name, pool.as_str());
    assert_eq!(p.health, PoolHealth::Online);
    assert!(p.size > 200 << 20 && p.size <= 256 << 20, "{p:?}");
    assert_eq!(p.allocated + p.free, p.size, "{p:?}");
    assert!(
        p.capacity_percent < 5 && !p.readonly && p.guid != 0,
        "{p:?}"
    );
    let all = z.pools(&[]).await.unwrap();
    assert!(all.iter().any(|q| q.name == pool.as_str()));

    let e = expect_kind(
        z.pools(&["nosuchpool".parse().unwrap()]).await,
        ErrorKind::NotFound,
    );
    println!("nonexistent pool: {e}");
    done("version_capabilities_and_pools");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_is_one_listing_and_keeps_unusual_names() {
    let vm = vm().await;
    let z = vm_zfs(vm);
    let pool = new_pool(vm, "inv").await;
    let p = pool.as_str();
    // Names Tidepool would never create but OpenZFS allows: spaces, ':', '.', '-', '_',
    // leading digits.
    for d in [
        format!("{p}/apps"),
        format!("{p}/apps/db"),
        format!("{p}/with space"),
        format!("{p}/a:b.c-d_e"),
        format!("{p}/0lead"),
    ] {
        sh(vm, &["zfs", "create", &d]).await;
    }
    sh(vm, &["zfs", "create", "-V", "16M", &format!("{p}/vol")]).await;
    sh(
        vm,
        &[
            "zfs",
            "snapshot",
            &format!("{p}/with space@snap with space"),
        ],
    )
    .await;
    sh(
        vm,
        &["zfs", "snapshot", &format!("{p}/a:b.c-d_e@s.1:x-y_z")],
    )
    .await;
    sh(
        vm,
        &[
            "zfs",
            "bookmark",
            &format!("{p}/a:b.c-d_e@s.1:x-y_z"),
            &format!("{p}/a:b.c-d_e#mark 1"),
        ],
    )
    .await;
    sh(
        vm,
        &[
            "zfs",
            "set",
            "tidepool.dev:owner=ns a/sched\tb",
            &format!("{p}/with space"),
        ],
    )
    .await;

    // The layer's own commands from here on.
    let apps = ds(&format!("{p}/apps/db"));
    z.snapshot(
        &[snap(&format!("{apps}@tidepool_20261122T093000Z_hourly"))],
        &[(owner(), val("team-a/db-hourly"))],
    )
    .await
    .unwrap();

    let root: DatasetName = pool.clone().into();
    let req = ListRequest::inventory(root.clone(), vec![owner(), prop("tidepool.dev:other")]);
    let raw_listing = raw(&z, req.argv()).await;
    capture("zfs-list-inventory.txt", &raw_listing);
    assert_eq!(
        req.argv().as_slice()[1],
        "list",
        "inventory is one `zfs list -r` call"
    );
    let inv = z.list(&req).await.unwrap();
    let line_count = raw_listing.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(inv.entries.len(), line_count);

    let get = |n: &str| {
        inv.get(n)
            .unwrap_or_else(|| panic!("{n:?} not in {:#?}", inv.entries))
    };
    assert_eq!(get(p).kind, ObjectType::Filesystem);
    assert_eq!(get(&format!("{p}/vol")).kind, ObjectType::Volume);
    let spaced = get(&format!("{p}/with space"));
    // A foreign value with a tab, in a listing of two user properties: zfs's output cannot
    // tell the columns apart, and the parser says so instead of guessing.
    assert!(spaced.user_props_ambiguous());
    assert_eq!(inv.user_prop(spaced, "tidepool.dev:owner"), None);
    // Asked alone, the same value reads exactly (the last column takes the rest).
    let alone = z
        .inventory(&ds(&format!("{p}/apps")), &[owner()])
        .await
        .unwrap();
    assert_eq!(
        alone.user_prop(
            alone
                .get(&format!("{p}/apps/db@tidepool_20261122T093000Z_hourly"))
                .unwrap(),
            "tidepool.dev:owner"
        ),
        Some("team-a/db-hourly")
    );
    let one = ListRequest::inventory(root.clone(), vec![owner()]);
    let one_inv = z.list(&one).await.unwrap();
    let spaced_one = one_inv.get(&format!("{p}/with space")).unwrap();
    assert!(!spaced_one.user_props_ambiguous());
    assert_eq!(
        one_inv.user_prop(spaced_one, "tidepool.dev:owner"),
        Some("ns a/sched\tb"),
        "a value with a space and a tab survives"
    );
    let s = get(&format!("{p}/with space@snap with space"));
    assert_eq!(s.kind, ObjectType::Snapshot);
    assert_eq!(s.name.dataset_part(), format!("{p}/with space"));
    assert_eq!(s.name.short_part(), Some("snap with space"));
    assert!(s.guid != 0 && s.createtxg > 0 && s.creation > 1_700_000_000);
    assert!(s.used.is_some() && s.written.is_some());
    assert!(
        s.name.to_snapshot_name().is_err(),
        "strict names refuse spaces"
    );
    let b = get(&format!("{p}/a:b.c-d_e#mark 1"));
    assert_eq!(b.kind, ObjectType::Bookmark);
    assert_eq!(b.used, None, "bookmarks print '-' for used");
    let bsnap = get(&format!("{p}/a:b.c-d_e@s.1:x-y_z"));
    assert_eq!(b.guid, bsnap.guid, "a bookmark carries its snapshot's guid");
    assert_eq!(b.createtxg, bsnap.createtxg);
    assert_eq!(
        bsnap.name.to_snapshot_name().unwrap().as_str(),
        format!("{p}/a:b.c-d_e@s.1:x-y_z")
    );
    let ours = get(&format!("{apps}@tidepool_20261122T093000Z_hourly"));
    assert_eq!(
        inv.user_prop(ours, "tidepool.dev:owner"),
        Some("team-a/db-hourly")
    );
    assert_eq!(inv.snapshots_of(apps.as_str()).len(), 1);
    assert_eq!(inv.datasets().count(), 7);
    assert!(inv.entries.iter().all(|e| e.receive_resume_token.is_none()));

    // Narrower listings: snapshots of one dataset only; datasets only.
    let snaps = z
        .list(&ListRequest {
            roots: vec![apps.clone()],
            types: ObjectTypes::SNAPSHOTS,
            depth: Depth::RootsOnly,
            user_props: vec![owner()],
        })
        .await
        .unwrap();
    assert_eq!(snaps.entries.len(), 1);
    let datasets = z
        .list(&ListRequest {
            roots: vec![root],
            types: ObjectTypes::DATASETS,
            depth: Depth::Limited(1),
            user_props: vec![],
        })
        .await
        .unwrap();
    assert!(
        datasets
            .entries
            .iter()
            .all(|e| e.kind != ObjectType::Snapshot)
    );
    assert!(
        datasets.get(apps.as_str()).is_none(),
        "depth 1 stops above apps/db"
    );

    let e = expect_kind(
        z.inventory(&ds(&format!("{p}/nonexistent")), &[]).await,
        ErrorKind::NotFound,
    );
    println!("list of a missing dataset: {e}");
    done("inventory_is_one_listing_and_keeps_unusual_names");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_snapshot_destroy_rename_get_set() {
    let vm = vm().await;
    let z = vm_zfs(vm);
    let pool = new_pool(vm, "snap").await;
    let (a, b) = (ds(&format!("{pool}/a")), ds(&format!("{pool}/b")));
    z.create(&a, false, &[]).await.unwrap();
    z.create(&b, false, &[(prop("compression"), val("lz4"))])
        .await
        .unwrap();
    write_data(vm, &a, "f", 1).await;

    // One call, several datasets, user properties: one transaction group.
    let x = short("tidepool_20261122T093000Z_hourly");
    let snaps = [a.snapshot(&x).unwrap(), b.snapshot(&x).unwrap()];
    z.snapshot(
        &snaps,
        &[
            (owner(), val("ns/sched")),
            (prop("tidepool.dev:label"), val("hourly")),
        ],
    )
    .await
    .unwrap();
    let inv = z.inventory(&pool.clone().into(), &[owner()]).await.unwrap();
    let (sa, sb) = (
        inv.get(snaps[0].as_str()).unwrap(),
        inv.get(snaps[1].as_str()).unwrap(),
    );
    assert_eq!(sa.createtxg, sb.createtxg, "atomic: same txg");
    assert_eq!(inv.user_prop(sa, "tidepool.dev:owner"), Some("ns/sched"));

    // get: typed targets, several properties, sources.
    let got = z
        .get(&[owner(), prop("compression"), prop("guid")], &snaps)
        .await
        .unwrap();
    capture(
        "zfs-get.txt",
        &raw(
            &z,
            tidepool_zfs::cmd::get(&[owner(), prop("compression"), prop("guid")], &snaps),
        )
        .await,
    );
    assert_eq!(got.len(), 6, "{got:#?}");
    let find = |n: &str, p: &str| {
        got.iter()
            .find(|e| e.name == n && e.property == p)
            .unwrap_or_else(|| panic!("{n} {p} in {got:#?}"))
    };
    assert_eq!(
        find(snaps[0].as_str(), "tidepool.dev:owner").value,
        "ns/sched"
    );
    assert_eq!(
        find(snaps[0].as_str(), "tidepool.dev:owner").source,
        PropertySource::Local
    );
    // compression does not apply to snapshots: value and source are both '-'.
    let c = find(snaps[1].as_str(), "compression");
    assert_eq!((c.value_opt(), &c.source), (None, &PropertySource::None));
    let bc = ds(&format!("{b}/child"));
    z.create(&bc, false, &[]).await.unwrap();
    let got = z
        .get(&[prop("compression")], &[b.clone(), bc.clone()])
        .await
        .unwrap();
    assert_eq!(
        (got[0].value.as_str(), &got[0].source),
        ("lz4", &PropertySource::Local)
    );
    assert_eq!(
        (got[1].value.as_str(), &got[1].source),
        (
            "lz4",
            &PropertySource::Inherited(tidepool_zfs::ZfsObjectName::new(b.as_str()))
        )
    );
    z.destroy_dataset(&bc).await.unwrap();
    assert_eq!(find(snaps[0].as_str(), "guid").value, sa.guid.to_string());

    // set / get_one / inherit on a dataset.
    z.set(
        &a,
        &[
            (owner(), val("x/y")),
            (prop("tidepool.dev:label"), val("l")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        z.get_one(&owner(), &a).await.unwrap().as_deref(),
        Some("x/y")
    );
    z.inherit(&a, &owner()).await.unwrap();
    assert_eq!(z.get_one(&owner(), &a).await.unwrap(), None);

    // rename a snapshot and a dataset.
    let renamed = a.snapshot(&short("renamed")).unwrap();
    z.rename_snapshot(&snaps[0], &renamed.short())
        .await
        .unwrap();
    let a2 = ds(&format!("{pool}/a2"));
    z.rename_dataset(&a, &a2, false).await.unwrap();
    let inv = z.inventory(&pool.clone().into(), &[]).await.unwrap();
    assert!(
        inv.get(&format!("{a2}@renamed")).is_some(),
        "{:#?}",
        inv.entries
    );
    assert!(inv.get(a.as_str()).is_none());

    // destroy: batched on one dataset, single, and a dataset.
    let more: Vec<SnapshotShortName> = ["m1", "m2", "m3"].iter().map(|s| short(s)).collect();
    for m in &more {
        z.snapshot(&[b.snapshot(m).unwrap()], &[]).await.unwrap();
    }
    let est = z.destroy_snapshots_estimate(&b, &more[..2]).await.unwrap();
    capture(
        "zfs-destroy-nvp.txt",
        &raw(
            &z,
            tidepool_zfs::cmd::destroy_snapshots_dry_run(&b, &more[..2]),
        )
        .await,
    );
    let would: Vec<&str> = est.destroyed.iter().map(|n| n.as_str()).collect();
    assert_eq!(would, [format!("{b}@m1"), format!("{b}@m2")]);
    assert_eq!(
        z.inventory(&b, &[])
            .await
            .unwrap()
            .snapshots_of(b.as_str())
            .len(),
        4,
        "a dry run destroys nothing"
    );
    z.destroy_snapshots(&b, &more[..2]).await.unwrap();
    let left: Vec<String> = z
        .inventory(&b, &[])
        .await
        .unwrap()
        .snapshots_of(b.as_str())
        .iter()
        .map(|e| e.name.short_part().unwrap_or("").to_owned())
        .collect();
    assert_eq!(left, [x.as_str(), "m3"]);
    z.destroy_snapshot(&b.snapshot(&more[2]).unwrap())
        .await
        .unwrap();
    let e = expect_kind(z.destroy_dataset(&b).await, ErrorKind::HasDependents);
    println!("destroy with snapshots: {e}");
    z.destroy_snapshot(&snaps[1]).await.unwrap();
    z.destroy_dataset(&b).await.unwrap();
    assert!(
        z.inventory(&pool.clone().into(), &[])
            .await
            .unwrap()
            .get(b.as_str())
            .is_none()
    );
    done("atomic_snapshot_destroy_rename_get_set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_block_destroy_until_released() {
    let vm = vm().await;
    let z = vm_zfs(vm);
    let pool = new_pool(vm, "hold").await;
    let d = ds(&format!("{pool}/d"));
    z.create(&d, false, &[]).await.unwrap();
    let (s1, s2) = (
        d.snapshot(&short("s1")).unwrap(),
        d.snapshot(&short("s2")).unwrap(),
    );
    z.snapshot(std::slice::from_ref(&s1), &[]).await.unwrap();
    z.snapshot(std::slice::from_ref(&s2), &[]).await.unwrap();
    let (t1, t2) = (tag("tidepool:target-1"), tag("tidepool:target-2"));
    z.hold(&t1, &[s1.clone(), s2.clone()]).await.unwrap();
    z.hold(&t2, std::slice::from_ref(&s1)).await.unwrap();
    capture(
        "zfs-holds.txt",
        &raw(
            &z,
            tidepool_zfs::cmd::holds(&[s1.clone(), s2.clone()], false),
        )
        .await,
    );
    let mut holds = z.holds(&[s1.clone(), s2.clone()]).await.unwrap();
    holds.sort_by(|a, b| (a.snapshot.as_str(), &a.tag).cmp(&(b.snapshot.as_str(), &b.tag)));
    let seen: Vec<(String, String)> = holds
        .iter()
        .map(|h| (h.snapshot.to_string(), h.tag.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (s1.to_string(), t1.to_string()),
            (s1.to_string(), t2.to_string()),
            (s2.to_string(), t1.to_string())
        ]
    );
    assert!(holds.iter().all(|h| h.created > 1_700_000_000));

    let e = expect_kind(z.destroy_snapshot(&s1).await, ErrorKind::Held);
    println!("destroy of a held snapshot: {e}");
    let e = expect_kind(
        z.destroy_snapshots(&d, &[short("s1"), short("s2")]).await,
        ErrorKind::Held,
    );
    println!("batched destroy with a held snapshot: {e}");
    let e = expect_kind(
        z.hold(&t1, std::slice::from_ref(&s1)).await,
        ErrorKind::AlreadyExists,
    );
    println!("second hold with one tag: {e}");
    let e = expect_kind(
        z.release(&tag("tidepool:nope"), std::slice::from_ref(&s1))
            .await,
        ErrorKind::NotFound,
    );
    println!("release of an unknown tag: {e}");

    z.release(&t1, &[s1.clone(), s2.clone()]).await.unwrap();
    expect_kind(z.destroy_snapshot(&s1).await, ErrorKind::Held);
    z.release(&t2, std::slice::from_ref(&s1)).await.unwrap();
    assert!(z.holds(&[s1.clone(), s2.clone()]).await.unwrap().is_empty());
    z.destroy_snapshots(&d, &[short("s1"), short("s2")])
        .await
        .unwrap();
    assert!(
        z.inventory(&d, &[])
            .await
            .unwrap()
            .snapshots_of(d.as_str())
            .is_empty()
    );
    done("holds_block_destroy_until_released");
}

/// Source and target pools with a dataset `src/d` that has snapshots s1..s4, data written
/// between them.
async fn chain(
    vm: &ZfsVm,
    z: &VmZfs,
    prefix: &str,
) -> (DatasetName, DatasetName, Vec<SnapshotName>) {
    let src = new_pool(vm, &format!("{prefix}src")).await;
    let dst = new_pool(vm, &format!("{prefix}dst")).await;
    let d = ds(&format!("{src}/d"));
    z.create(&d, false, &[]).await.unwrap();
    let mut snaps = Vec::new();
    for i in 1..=4 {
        write_data(vm, &d, &format!("f{i}"), 2).await;
        let s = d.snapshot(&short(&format!("s{i}"))).unwrap();
        z.snapshot(std::slice::from_ref(&s), &[(owner(), val("ns/p"))])
            .await
            .unwrap();
        snaps.push(s);
    }
    (d, ds(&format!("{dst}/d")), snaps)
}

fn guid_of(inv: &tidepool_zfs::Inventory, name: &str) -> u64 {
    inv.get(name)
        .unwrap_or_else(|| panic!("{name} not in {:#?}", inv.entries))
        .guid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_chains_with_i_and_capital_i() {
    let vm = vm().await;
    let z = vm_zfs(vm);
    let (src, dst, s) = chain(vm, &z, "chain").await;
    z.set(&src, &[(owner(), val("ns/src"))]).await.unwrap();

    // Full s1, with an estimate first.
    let full = SendRequest {
        snapshot: s[0].clone(),
        base: SendBase::Full,
        flags: SendFlags {
            compressed: true,
            large_blocks: true,
            embedded_data: true,
            properties: true,
            ..SendFlags::default()
        },
    };
    let est = z.send_estimate(&full).await.unwrap();
    capture(
        "zfs-send-nvP-full.txt",
        &raw(&z, full.estimate_argv()).await,
    );
    let n = send_into(&z, &full, &recv_into(&dst)).await.unwrap();
    assert!(n > 1 << 20, "{n}");
    assert!(
        est.total_bytes > n / 2 && est.total_bytes < n * 2,
        "estimate {} vs actual {n}",
        est.total_bytes
    );
    assert_eq!(est.items.len(), 1);
    assert_eq!(est.items[0].from, None);

    // -i s1 s2.
    let inc = SendRequest {
        snapshot: s[1].clone(),
        base: SendBase::Incremental(s[0].clone()),
        flags: SendFlags::default(),
    };
    capture("zfs-send-nvP-i.txt", &raw(&z, inc.estimate_argv()).await);
    send_into(&z, &inc, &recv_into(&dst)).await.unwrap();

    // -I s2 s4: s3 and s4 in one stream.
    let many = SendRequest {
        snapshot: s[3].clone(),
        base: SendBase::WithIntermediates(s[1].clone()),
        flags: SendFlags::default(),
    };
    let est = z.send_estimate(&many).await.unwrap();
    capture("zfs-send-nvP-I.txt", &raw(&z, many.estimate_argv()).await);
    assert_eq!(est.items.len(), 2, "{est:?}");
    send_into(&z, &many, &recv_into(&dst)).await.unwrap();

    let si = z.inventory(&src, &[owner()]).await.unwrap();
    let di = z.inventory(&dst, &[owner()]).await.unwrap();
    for snap in &s {
        let target = format!("{dst}@{}", snap.short());
        assert_eq!(
            guid_of(&si, snap.as_str()),
            guid_of(&di, &target),
            "{target}"
        );
    }
    // -p on the full send carried the dataset's `tidepool.dev:owner`, but every receive
    // excludes Tidepool's own properties (`-x tidepool.dev:owner`): the replica does not
    // take it, so an owner that travelled in a stream is never a claim on the target.
    let got = z.get(&[owner()], std::slice::from_ref(&dst)).await.unwrap();
    assert_eq!(got[0].value_opt(), None, "{got:?}");
    assert_ne!(got[0].source, PropertySource::Received, "{got:?}");
    // Nor does any received snapshot carry it as if Tidepool had set it there.
    let targets: Vec<SnapshotName> = s
        .iter()
        .map(|x| dst.snapshot(&x.short()).unwrap())
        .collect();
    for e in z.get(&[owner()], &targets).await.unwrap() {
        assert_ne!(e.source, PropertySource::Local, "{e:?}");
    }
    // The target was received unmounted (-u).
    assert_eq!(
        z.get_one(&prop("mounted"), &dst).await.unwrap().as_deref(),
        Some("no")
    );
    done("incremental_chains_with_i_and_capital_i");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_from_a_bookmark_after_its_snapshot_is_gone() {
    let vm = vm().await;
    let z = vm_zfs(vm);
    let (src, dst, s) = chain(vm, &z, "bmk").await;
    send_into(&z, &SendRequest::full(s[0].clone()), &recv_into(&dst))
        .await
        .unwrap();
    let mark = src.bookmark(&short("s1")).unwrap();
    z.bookmark(&BookmarkSource::Snapshot(s[0].clone()), &mark)
        .await
        .unwrap();
    // Copying a bookmark (OpenZFS 2.0+).
    let copy = src.bookmark(&short("s1-copy")).unwrap();
    z.bookmark(&BookmarkSource::Bookmark(mark.clone()), &copy)
        .await
        .unwrap();
    let e = expect_kind(
        z.bookmark(&BookmarkSource::Snapshot(s[0].clone()), &mark)
            .await,
        ErrorKind::AlreadyExists,
    );
    println!("second bookmark with one name: {e}");

    z.destroy_snapshot(&s[0]).await.unwrap();
    let inv = z.inventory(&src, &[]).await.unwrap();
    assert!(inv.get(s[0].as_str()).is_none());
    assert_eq!(inv.bookmarks_of(src.as_str()).len(), 2);

    let req = SendRequest {
        snapshot: s[2].clone(),
        base: SendBase::FromBookmark(mark.clone()),
        flags: SendFlags::default(),
    };
    let est = z.send_estimate(&req).await.unwrap();
    assert!(est.total_bytes > 0);
    send_into(&z, &req, &recv_into(&dst)).await.unwrap();
    let si = z.inventory(&src, &[]).await.unwrap();
    let di = z.inventory(&dst, &[]).await.unwrap();
    assert_eq!(
        guid_of(&si, s[2].as_str()),
        guid_of(&di, &format!("{dst}@s3"))
    );
    assert!(di.get(&format!("{dst}@s2")).is_none(), "-i skips s2");

    z.destroy_bookmark(&copy).await.unwrap();
    let e = expect_kind(z.destroy_bookmark(&copy).await, ErrorKind::NotFound);
    println!("destroy of a missing bookmark: {e}");
    done("incremental_from_a_bookmark_after_its_snapshot_is_gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_send_of_an_encrypted_dataset_lands_locked() {
    let vm = vm().await;
    let z = vm_zfs(vm);
    let src = new_pool(vm, "encsrc").await;
    let dst = new_pool(vm, "encdst").await;
    let keyfile = format!("{}/{src}.key", ZfsVm::VDEV_DIR);
    sh(
        vm,
        &[
            "sh",
            "-c",
            &format!("echo 'correct horse battery staple' > {keyfile}"),
        ],
    )
    .await;
    let secret = ds(&format!("{src}/secret"));
    sh(
        vm,
        &[
            "zfs",
            "create",
            "-o",
            "encryption=aes-256-gcm",
            "-o",
            "keyformat=passphrase",
            "-o",
            &format!("keylocation=file://{keyfile}"),
            secret.as_str(),
        ],
    )
    .await;
    write_data(vm, &secret, "f", 2).await;
    let s1 = secret.snapshot(&short("s1")).unwrap();
    z.snapshot(std::slice::from_ref(&s1), &[]).await.unwrap();

    let target = ds(&format!("{dst}/secret"));
    let raw_req = SendRequest {
        snapshot: s1.clone(),
        base: SendBase::Full,
        flags: SendFlags {
            raw: true,
            ..SendFlags::default()
        },
    };
    send_into(&z, &raw_req, &recv_into(&target)).await.unwrap();
    let props = [
        prop("keystatus"),
        prop("encryption"),
        prop("encryptionroot"),
    ];
    let got = z.get(&props, std::slice::from_ref(&target)).await.unwrap();
    let value = |p: &str| got.iter().find(|e| e.property == p).unwrap().value.clone();
    assert_eq!(value("keystatus"), "unavailable", "{got:#?}");
    assert_eq!(value("encryption"), "aes-256-gcm");
    assert_eq!(value("encryptionroot"), target.as_str());
    let si = z.inventory(&secret, &[]).await.unwrap();
    let di = z.inventory(&target, &[]).await.unwrap();
    assert_eq!(
        guid_of(&si, s1.as_str()),
        guid_of(&di, &format!("{target}@s1"))
    );

    // An incremental raw send keeps working without the key on the target.
    write_data(vm, &secret, "g", 1).await;
    let s2 = secret.snapshot(&short("s2")).unwrap();
    z.snapshot(std::slice::from_ref(&s2), &[]).await.unwrap();
    let inc = SendRequest {
        snapshot: s2,
        base: SendBase::Incremental(s1),
        flags: SendFlags {
            raw: true,
            ..SendFlags::default()
        },
    };
    send_into(&z, &inc, &recv_into(&target)).await.unwrap();
    assert_eq!(
        z.get_one(&prop("keystatus"), &target)
            .await
            .unwrap()
            .as_deref(),
        Some("unavailable")
    );
    done("raw_send_of_an_encrypted_dataset_lands_locked");
}

/// Starts `req` into `recv`, moves only the first `cut` bytes, then drops the sender (as
/// a broken connection would) and returns the receive's error.
async fn interrupted(z: &VmZfs, req: &SendRequest, recv: &ReceiveOptions, cut: usize) -> ZfsError {
    let mut send = z.send(req).await.unwrap();
    let mut sink = z.receive(recv).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut moved = 0;
    while moved < cut {
        let want = buf.len().min(cut - moved);
        let n = send.read(&mut buf[..want]).await.unwrap();
        assert!(n > 0, "stream shorter than {cut} bytes");
        sink.write_all(&buf[..n]).await.unwrap();
        moved += n;
    }
    assert_eq!(sink.progress().bytes(), cut as u64);
    send.abort().await;
    let e = sink
        .finish()
        .await
        .expect_err("a cut stream must fail the receive");
    if let Some(stderr) = e.stderr() {
        capture_stderr(e.kind(), stderr);
    }
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_receive_resumes_and_abort_clears_it() {
    let vm = vm().await;
    let z = vm_zfs(vm);
    let src = new_pool(vm, "ressrc").await;
    let dst = new_pool(vm, "resdst").await;
    let d = ds(&format!("{src}/d"));
    z.create(&d, false, &[]).await.unwrap();
    write_data(vm, &d, "big", 24).await;
    let s1 = d.snapshot(&short("s1")).unwrap();
    z.snapshot(std::slice::from_ref(&s1), &[]).await.unwrap();
    let target = ds(&format!("{dst}/d"));

    // Cut a full stream after 4 MiB: the target keeps the partial state and a token.
    let full = SendRequest::full(s1.clone());
    let e = interrupted(&z, &full, &recv_into(&target), 4 << 20).await;
    println!("cut stream: {e}");
    assert_eq!(e.kind(), ErrorKind::StreamInterrupted, "{e}");
    let token = z
        .resume_token(&target)
        .await
        .unwrap()
        .expect("a resume token after an interrupted receive -s");
    let inv = z.inventory(&dst.clone().into(), &[]).await.unwrap();
    assert_eq!(
        inv.get(target.as_str())
            .unwrap()
            .receive_resume_token
            .as_deref(),
        Some(token.as_str()),
        "the listing column shows the same token"
    );

    // A new full stream is refused: OpenZFS says the target exists (it does, partially).
    let e = expect_kind(
        send_into(&z, &full, &recv_into(&target)).await,
        ErrorKind::StreamMismatch,
    );
    println!("new full stream over partial state: {e}");

    // A corrupted token is refused by the sender.
    let mut bad = token.as_str().to_owned();
    let mid = bad.len() / 2;
    bad.replace_range(mid..mid + 8, "00000000");
    let bad: ResumeToken = bad.parse().unwrap();
    let e = expect_kind(
        z.send_resume_estimate(&bad).await,
        ErrorKind::ResumeTokenInvalid,
    );
    println!("corrupt token: {e}");

    // Resume: the rest of the stream completes the snapshot; the token is gone.
    let est = z.send_resume_estimate(&token).await.unwrap();
    // The token names what it resumes: the planner checks it before using it.
    let contents = est
        .resume
        .clone()
        .expect("send -nvP -t prints the token contents");
    assert_eq!(contents.toname.as_deref(), Some(s1.as_str()));
    let si = z.inventory(&d, &[]).await.unwrap();
    assert_eq!(contents.toguid, Some(guid_of(&si, s1.as_str())));
    // What the target committed before the cut: some, at most what was written.
    let committed = contents.bytes.unwrap_or(0);
    assert!(committed > 0 && committed <= 4 << 20, "{contents:?}");
    capture(
        "zfs-send-nvP-t.txt",
        &raw(&z, tidepool_zfs::cmd::send_resume(&token, true)).await,
    );
    let send = z.send_resume(&token).await.unwrap();
    let sink = z.receive(&recv_into(&target)).await.unwrap();
    let rest = pipe(send, sink).await.unwrap();
    assert!(
        rest < 24 << 20 && est.total_bytes > 0,
        "resumed {rest} bytes, estimated {}",
        est.total_bytes
    );
    assert_eq!(z.resume_token(&target).await.unwrap(), None);
    let si = z.inventory(&d, &[]).await.unwrap();
    let di = z.inventory(&target, &[]).await.unwrap();
    assert_eq!(
        guid_of(&si, s1.as_str()),
        guid_of(&di, &format!("{target}@s1"))
    );

    // Interrupt an incremental, then abort it with -A: token gone, s1 intact.
    write_data(vm, &d, "more", 16).await;
    let s2 = d.snapshot(&short("s2")).unwrap();
    z.snapshot(std::slice::from_ref(&s2), &[]).await.unwrap();
    let inc = SendRequest {
        snapshot: s2.clone(),
        base: SendBase::Incremental(s1.clone()),
        flags: SendFlags::default(),
    };
    let e = interrupted(&z, &inc, &recv_into(&target), 2 << 20).await;
    assert_eq!(e.kind(), ErrorKind::StreamInterrupted, "{e}");
    assert!(z.resume_token(&target).await.unwrap().is_some());
    // A new (non-resuming) incremental is refused while the partial state is there.
    let e = expect_kind(
        send_into(&z, &inc, &recv_into(&target)).await,
        ErrorKind::PartialReceiveExists,
    );
    println!("new incremental over partial state: {e}");
    z.receive_abort(&target).await.unwrap();
    assert_eq!(z.resume_token(&target).await.unwrap(), None);
    let di = z.inventory(&target, &[]).await.unwrap();
    assert!(di.get(&format!("{target}@s1")).is_some());
    assert!(di.get(&format!("{target}@s2")).is_none());
    let e = expect_kind(z.receive_abort(&target).await, ErrorKind::NotFound);
    println!("abort without partial state: {e}");

    // Interrupt again, then destroy the source snapshot: the token is stale.
    let e = interrupted(&z, &inc, &recv_into(&target), 2 << 20).await;
    assert_eq!(e.kind(), ErrorKind::StreamInterrupted, "{e}");
    let token = z.resume_token(&target).await.unwrap().unwrap();
    z.destroy_snapshot(&s2).await.unwrap();
    let e = expect_kind(
        z.send_resume_estimate(&token).await,
        ErrorKind::ResumeTokenStale,
    );
    println!("stale token: {e}");
    // Through a pipe the sender's reason wins over the receiver's "stream ended".
    let send = z.send_resume(&token).await.unwrap();
    let sink = z.receive(&recv_into(&target)).await.unwrap();
    let e = expect_kind(pipe(send, sink).await, ErrorKind::ResumeTokenStale);
    println!("stale token through a pipe: {e}");
    z.receive_abort(&target).await.unwrap();
    done("interrupted_receive_resumes_and_abort_clears_it");
}

/// Runs every argv as the unprivileged user `nobody` in the VM.
struct AsNobody(VmExecutor);

impl Executor for AsNobody {
    fn spawn(&self, argv: &Argv) -> BoxFuture<'_, std::io::Result<Spawned>> {
        let mut a = Argv::new("setpriv");
        a.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        a.args(argv.as_slice().iter().cloned());
        self.0.spawn(&a)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_classified() {
    let vm = vm().await;
    let z = vm_zfs(vm);
    let (src, dst, s) = chain(vm, &z, "err").await;
    let pool = ds(src.as_str().split('/').next().unwrap());

    // NotFound.
    let missing = src.snapshot(&short("missing")).unwrap();
    let e = expect_kind(z.destroy_snapshot(&missing).await, ErrorKind::NotFound);
    println!("NotFound (destroy): {e}");
    let e = expect_kind(
        z.get(&[owner()], &[ds(&format!("{pool}/missing"))]).await,
        ErrorKind::NotFound,
    );
    println!("NotFound (get): {e}");
    let e = expect_kind(
        z.holds(std::slice::from_ref(&missing)).await,
        ErrorKind::NotFound,
    );
    println!("NotFound (holds): {e}");
    let e = expect_kind(
        z.send_estimate(&SendRequest::full(missing.clone())).await,
        ErrorKind::NotFound,
    );
    println!("NotFound (send): {e}");

    // AlreadyExists.
    let e = expect_kind(
        z.snapshot(std::slice::from_ref(&s[0]), &[]).await,
        ErrorKind::AlreadyExists,
    );
    println!("AlreadyExists (snapshot): {e}");
    let e = expect_kind(z.create(&src, false, &[]).await, ErrorKind::AlreadyExists);
    println!("AlreadyExists (create): {e}");

    // Busy: a process has its working directory in the mounted dataset.
    let busy = ds(&format!("{pool}/busy"));
    z.create(&busy, false, &[]).await.unwrap();
    let sleeper = vm
        .command(["sleep", "600"])
        .current_dir(format!("/{busy}"))
        .spawn()
        .await
        .unwrap();
    let e = expect_kind(z.destroy_dataset(&busy).await, ErrorKind::Busy);
    println!("Busy: {e}");
    drop(sleeper);

    // StreamMismatch, three ways.
    send_into(&z, &SendRequest::full(s[0].clone()), &recv_into(&dst))
        .await
        .unwrap();
    let e = expect_kind(
        send_into(&z, &SendRequest::full(s[1].clone()), &recv_into(&dst)).await,
        ErrorKind::StreamMismatch,
    );
    println!("StreamMismatch (full over existing): {e}");
    let skip = SendRequest {
        snapshot: s[2].clone(),
        base: SendBase::Incremental(s[1].clone()),
        flags: SendFlags::default(),
    };
    let e = expect_kind(
        send_into(&z, &skip, &recv_into(&dst)).await,
        ErrorKind::StreamMismatch,
    );
    println!("StreamMismatch (wrong incremental base): {e}");
    sh(vm, &["zfs", "mount", dst.as_str()]).await;
    write_data(vm, &dst, "diverged", 1).await;
    let next = SendRequest {
        snapshot: s[1].clone(),
        base: SendBase::Incremental(s[0].clone()),
        flags: SendFlags::default(),
    };
    let e = expect_kind(
        send_into(&z, &next, &recv_into(&dst)).await,
        ErrorKind::StreamMismatch,
    );
    println!("StreamMismatch (target modified): {e}");

    // OutOfSpace: a quota smaller than the stream.
    let dstpool = ds(dst.as_str().split('/').next().unwrap());
    let quota = ds(&format!("{dstpool}/q"));
    z.create(&quota, false, &[(prop("quota"), val("1M"))])
        .await
        .unwrap();
    let e = expect_kind(
        send_into(
            &z,
            &SendRequest::full(s[3].clone()),
            &recv_into(&ds(&format!("{quota}/c"))),
        )
        .await,
        ErrorKind::OutOfSpace,
    );
    println!("OutOfSpace: {e}");

    // PermissionDenied: the same layer, run as an unprivileged user.
    let nobody = Zfs::new(AsNobody(VmExecutor::of(vm)));
    let e = expect_kind(
        nobody
            .snapshot(&[src.snapshot(&short("nope")).unwrap()], &[])
            .await,
        ErrorKind::PermissionDenied,
    );
    println!("PermissionDenied: {e}");

    // Unsupported: a pool with every feature disabled has no bookmarks or encryption.
    let old = vm.unique_pool_name("old");
    let vdev = format!("{}/{old}.img", ZfsVm::VDEV_DIR);
    sh(vm, &["truncate", "-s", "128M", &vdev]).await;
    sh(vm, &["zpool", "create", "-f", "-d", &old, &vdev]).await;
    let old_snap = snap(&format!("{old}@s1"));
    z.snapshot(std::slice::from_ref(&old_snap), &[])
        .await
        .unwrap();
    let e = expect_kind(
        z.bookmark(
            &BookmarkSource::Snapshot(old_snap),
            &bm(&format!("{old}#b1")),
        )
        .await,
        ErrorKind::Unsupported,
    );
    println!("Unsupported (bookmark on a pool without the feature): {e}");
    done("errors_are_classified");
}

/// The layer's commands run in the C locale in the guest too: the classifier matches
/// English messages, and libzfs would translate them. The VM executor runs argv exactly
/// as given, so the environment must travel with the argv.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_in_the_c_locale_in_the_guest() {
    let vm = vm().await;
    let z = vm_zfs(vm);
    // What the guest's exec server gives a process by itself: without LC_ALL=C, or this
    // test could not tell whether the layer sets it.
    let own = sh(vm, &["env"]).await;
    assert!(!own.lines().any(|l| l == "LC_ALL=C"), "{own}");
    let through_layer = raw(&z, Argv::new("env")).await;
    let env = String::from_utf8_lossy(&through_layer);
    assert!(env.lines().any(|l| l == "LC_ALL=C"), "{env}");
    // An executor wrapping another (here: as another user) keeps it.
    let nobody = AsNobody(VmExecutor::of(vm));
    let out = tidepool_zfs::exec::run(&nobody, &Argv::new("env"), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let env = String::from_utf8_lossy(&out.stdout);
    assert!(env.lines().any(|l| l == "LC_ALL=C"), "{env}");
    done("commands_run_in_the_c_locale_in_the_guest");
}

/// A restore drill's scratch dataset: received marked (`-o tidepool.dev:drill=…` set
/// locally, never mounted), destroyed with its snapshots only while it carries this
/// drill's mark locally and has no child; otherwise nothing is destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_datasets_are_destroyed_only_when_marked_and_childless() {
    use tidepool_zfs::{Scratch, ScratchRefused};
    let vm = vm().await;
    let z = vm_zfs(vm);
    let (_, dst, s) = chain(vm, &z, "scr").await;
    let pool = dst.as_str().split('/').next().unwrap().to_owned();
    let mark = "ReplicationPolicy/ns/drill";
    let scratch = Scratch::new(ds(&format!("{pool}/tidepool-drill-1")), mark).unwrap();
    let receive_into = |req: SendRequest| {
        let (z, scratch) = (&z, &scratch);
        async move {
            let send = z.send(&req).await.unwrap();
            let sink = z.receive_scratch(scratch).await.unwrap();
            pipe(send, sink).await.unwrap();
        }
    };
    receive_into(SendRequest::full(s[0].clone())).await;
    receive_into(SendRequest {
        snapshot: s[1].clone(),
        base: SendBase::Incremental(s[0].clone()),
        flags: SendFlags::default(),
    })
    .await;
    let d = scratch.dataset().as_str();
    let got = z
        .get(
            &[
                prop("tidepool.dev:drill"),
                prop("canmount"),
                prop("mounted"),
            ],
            &[scratch.dataset().clone()],
        )
        .await
        .unwrap();
    let of = |p: &str| got.iter().find(|e| e.property == p).unwrap().clone();
    assert_eq!(
        (
            of("tidepool.dev:drill").value.as_str(),
            &of("tidepool.dev:drill").source
        ),
        (mark, &PropertySource::Local)
    );
    assert_eq!(of("canmount").value, "off");
    assert_eq!(of("mounted").value, "no");

    // A child below it: refused, nothing destroyed.
    let kid = ds(&format!("{d}/kid"));
    z.create(&kid, false, &[]).await.unwrap();
    assert!(matches!(
        z.destroy_scratch(&scratch).await.unwrap(),
        Err(ScratchRefused::HasChildren { .. })
    ));
    let inv = z.inventory(scratch.dataset(), &[]).await.unwrap();
    assert!(inv.get(kid.as_str()).is_some() && inv.get(&format!("{d}@s2")).is_some());
    sh(vm, &["zfs", "destroy", kid.as_str()]).await;

    // Another drill's mark: refused.
    let other = Scratch::new(scratch.dataset().clone(), "ReplicationPolicy/ns/other").unwrap();
    assert!(matches!(
        z.destroy_scratch(&other).await.unwrap(),
        Err(ScratchRefused::NotMarked { .. })
    ));
    // Marked, childless: gone with its snapshots; a second destroy finds nothing.
    assert_eq!(z.destroy_scratch(&scratch).await.unwrap(), Ok(true));
    assert!(z.inventory(&ds(&pool), &[]).await.unwrap().get(d).is_none());
    assert_eq!(z.destroy_scratch(&scratch).await.unwrap(), Ok(false));

    // Someone's dataset with the scratch's name, and one that only inherits a mark: kept.
    let made = Scratch::new(ds(&format!("{pool}/tidepool-drill-2")), mark).unwrap();
    z.create(made.dataset(), false, &[]).await.unwrap();
    let parent = ds(&format!("{pool}/marked"));
    z.create(&parent, false, &[(prop("tidepool.dev:drill"), val(mark))])
        .await
        .unwrap();
    let inherits = Scratch::new(ds(&format!("{parent}/tidepool-drill-3")), mark).unwrap();
    z.create(inherits.dataset(), false, &[]).await.unwrap();
    for s in [&made, &inherits] {
        assert!(matches!(
            z.destroy_scratch(s).await.unwrap(),
            Err(ScratchRefused::NotMarked { .. })
        ));
        assert!(
            z.inventory(s.dataset(), &[])
                .await
                .unwrap()
                .get(s.dataset().as_str())
                .is_some()
        );
    }
    done("scratch_datasets_are_destroyed_only_when_marked_and_childless");
}
