//! Retention + replication planning over 1,000,000 snapshots: in one dataset, and spread
//! over 10,000 datasets of 100. Prints wall time and peak heap per phase, next to
//! baselines so the figures have a ratio:
//! - `sort only`: collecting references to the snapshots and sorting them by time, the
//!   least any planner that orders snapshots must do;
//! - `naive`: a straightforward clone-heavy planner (owned `String` names, a `Zoned` per
//!   snapshot and rule, maps keyed by formatted period strings, a formatted message per
//!   destroy, the target's snapshots cloned into a map).
//!
//! Targets: ≤ 1 s and ≤ 200 MB for retention + replication planning.
//!
//! Run with `cargo bench -p tidepool-plan`.

// The workspace forbids unsafe code. A `GlobalAlloc` implementation is unsafe by
// definition; this one only forwards to the system allocator and counts bytes, so the
// bench can report the peak heap of each phase, not just the process high-water mark.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use tidepool_api::replication_policy::{SendOptions, SnapshotSelection};
use tidepool_api::{DatasetName, OnDivergence, Owner, Retention, SnapshotShortName};
use tidepool_plan::replication::{self, ReplicationInput, TargetAbilities};
use tidepool_plan::retention::{self, Protection, Protections, RetentionRules};
use tidepool_plan::{DatasetInventory, SnapshotInfo};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwards the caller's layout to the system allocator unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as `GlobalAlloc::realloc`, forwarded.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const OWNER: &str = "SnapshotSchedule/ns/minutely";
const POLICY: &str = "ns/offsite";
const POLICY_OWNER: &str = "ReplicationPolicy/ns/offsite";

fn owner(text: &str) -> Owner {
    text.parse().expect("owner")
}

fn owner_of_policy() -> Owner {
    owner(POLICY_OWNER)
}

/// Run `f` a few times; report the fastest wall time and the peak heap above what was
/// allocated before it started.
fn measure<T>(label: &str, runs: usize, mut f: impl FnMut() -> T) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut peak = 0;
    for _ in 0..runs {
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let start = Instant::now();
        let out = f();
        let took = start.elapsed();
        black_box(&out);
        drop(out);
        best = best.min(took);
        peak = peak.max(PEAK.load(Ordering::Relaxed) - base);
    }
    println!(
        "  {label:<44} {:>9.1} ms  {:>8.2} MB peak heap",
        best.as_secs_f64() * 1e3,
        peak as f64 / 1e6
    );
    (best, peak)
}

fn name(i: u64, t: Timestamp) -> SnapshotShortName {
    let dt = TimeZone::UTC.to_datetime(t);
    format!(
        "tidepool_{:04}{:02}{:02}T{:02}{:02}{:02}Z_m{}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        i % 10
    )
    .parse()
    .expect("valid name")
}

/// `n` snapshots `spacing` apart, the newest at `now`, oldest first (as `zfs list -s
/// createtxg` lists them).
fn history(
    n: u64,
    now: Timestamp,
    spacing: SignedDuration,
    owner: &Owner,
    guid_base: u64,
) -> Vec<SnapshotInfo> {
    (0..n)
        .map(|i| {
            let t = now - spacing * i32::try_from(n - 1 - i).expect("fits");
            SnapshotInfo {
                name: name(i, t),
                guid: guid_base + i,
                createtxg: 1000 + i,
                creation: t,
                owner: Some(owner.clone()),
                held: i % 100_000 == 7,
            }
        })
        .collect()
}

/// The target received all but the newest `lag` snapshots: same names and guids.
fn received(source: &[SnapshotInfo], lag: usize, owner: &Owner) -> Vec<SnapshotInfo> {
    source[..source.len() - lag]
        .iter()
        .map(|s| SnapshotInfo {
            createtxg: s.createtxg + 5,
            owner: Some(owner.clone()),
            ..s.clone()
        })
        .collect()
}

fn retention_rules() -> Retention {
    Retention {
        keep_last: Some(24),
        keep_within: Some("1d".parse().expect("duration")),
        hourly: Some(48),
        daily: Some(30),
        weekly: Some(12),
        monthly: Some(12),
        yearly: Some(5),
    }
}

/// A plain shuffle (xorshift), so "unsorted input" is reproducible.
fn shuffle<T>(v: &mut [T]) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// The clone-heavy baseline: what a first, careless implementation would do.
fn naive_retention(inv: &DatasetInventory, r: &Retention, tz: &TimeZone) -> Vec<(String, String)> {
    let mut owned: Vec<SnapshotInfo> = inv
        .snapshots
        .iter()
        .filter(|s| s.owner.as_ref().map(Owner::as_str) == Some(OWNER))
        .cloned()
        .collect();
    owned.sort_by_key(|s| std::cmp::Reverse(s.createtxg));
    let newest = owned.first().map_or(Timestamp::MIN, |s| s.creation);
    let mut keep: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    if let Some(first) = owned.first() {
        keep.entry(first.name.to_string())
            .or_default()
            .push("newest");
    }
    for s in owned.iter().take(r.keep_last.unwrap_or(0) as usize) {
        keep.entry(s.name.to_string()).or_default().push("last");
    }
    let cutoff = newest
        - r.keep_within
            .as_ref()
            .map_or(Duration::ZERO, |d| d.as_std());
    for s in owned.iter().filter(|s| s.creation > cutoff) {
        keep.entry(s.name.to_string()).or_default().push("within");
    }
    let rules: [(&'static str, Option<i32>, &str); 5] = [
        ("hourly", r.hourly, "%Y-%m-%d %H"),
        ("daily", r.daily, "%Y-%m-%d"),
        ("weekly", r.weekly, "%G-%V"),
        ("monthly", r.monthly, "%Y-%m"),
        ("yearly", r.yearly, "%Y"),
    ];
    for (label, n, fmt) in rules {
        let Some(n) = n else { continue };
        let mut buckets: BTreeMap<String, String> = BTreeMap::new();
        for s in &owned {
            let key = s.creation.to_zoned(tz.clone()).strftime(fmt).to_string();
            if !buckets.contains_key(&key) {
                if buckets.len() == n as usize {
                    break;
                }
                buckets.insert(key, s.name.to_string());
            }
        }
        for name in buckets.into_values() {
            keep.entry(name).or_default().push(label);
        }
    }
    owned
        .iter()
        .filter(|s| !keep.contains_key(s.name.as_str()) && !s.held)
        .map(|s| {
            (
                format!("{}@{}", inv.dataset, s.name),
                format!("{} expired by retention of {OWNER}", s.name),
            )
        })
        .collect()
}

fn naive_replication(
    source: &DatasetInventory,
    target: &DatasetInventory,
) -> Option<(String, String)> {
    let by_guid: HashMap<u64, SnapshotInfo> = target
        .snapshots
        .iter()
        .map(|s| (s.guid, s.clone()))
        .collect();
    let mut src: Vec<SnapshotInfo> = source.snapshots.clone();
    src.sort_by_key(|s| s.createtxg);
    let common = src.iter().rev().find(|s| by_guid.contains_key(&s.guid))?;
    let newest = src.last()?;
    Some((
        format!("{}@{}", source.dataset, common.name),
        format!("{}@{}", source.dataset, newest.name),
    ))
}

struct Scenario {
    sources: Vec<DatasetInventory>,
    targets: Vec<DatasetInventory>,
}

fn scenario(datasets: u64, per_dataset: u64, spacing: SignedDuration, now: Timestamp) -> Scenario {
    let owner = owner(OWNER);
    let policy = owner_of_policy();
    let mut sources = Vec::with_capacity(datasets as usize);
    let mut targets = Vec::with_capacity(datasets as usize);
    for d in 0..datasets {
        let snaps = history(per_dataset, now, spacing, &owner, d * 10_000_000);
        let recv = received(&snaps, 10.min(per_dataset as usize - 1), &policy);
        let src: DatasetName = format!("tank/vols/v{d}").parse().expect("dataset");
        let dst: DatasetName = format!("backup/vols/v{d}").parse().expect("dataset");
        sources.push(DatasetInventory::with_snapshots(src, snaps));
        targets.push(DatasetInventory::with_snapshots(dst, recv));
    }
    Scenario { sources, targets }
}

fn vm_hwm_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1e3)
}

fn run(label: &str, datasets: u64, per_dataset: u64, spacing: SignedDuration) {
    let now: Timestamp = "2026-11-22T12:00:00Z".parse().expect("timestamp");
    let tz = TimeZone::get("Europe/Berlin").expect("zone");
    let before = CURRENT.load(Ordering::Relaxed);
    let start = Instant::now();
    let s = scenario(datasets, per_dataset, spacing, now);
    let inputs = CURRENT.load(Ordering::Relaxed) - before;
    println!(
        "\n{label}: {} source + {} target snapshots in {datasets} dataset(s); inputs {:.1} MB, built in {:.1} s",
        datasets * per_dataset,
        s.targets.iter().map(|t| t.snapshots.len()).sum::<usize>(),
        inputs as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    let retention = retention_rules();
    let mut protections = Protections::new();
    for src in &s.sources {
        // The newest common snapshot of the replication, as the controller would pass it.
        let common = &src.snapshots[src.snapshots.len() - 11];
        protections.protect(
            common.guid,
            Protection::ReplicationBase {
                policy: POLICY.into(),
            },
        );
    }
    let schedule = owner(OWNER);
    let policy = owner_of_policy();
    let rules = RetentionRules {
        retention: &retention,
        time_zone: &tz,
        owner: &schedule,
        protections: &protections,
    };
    let send = SendOptions::default();
    let selection = SnapshotSelection {
        intermediates: true,
        ..Default::default()
    };

    let (sort_t, sort_m) = measure("baseline: collect refs + sort (shuffled)", 3, || {
        let mut total = 0usize;
        for src in &s.sources {
            let mut refs: Vec<&SnapshotInfo> = src.snapshots.iter().collect();
            shuffle(&mut refs);
            refs.sort_unstable_by_key(|x| x.createtxg);
            total += refs.len();
        }
        total
    });
    // Keeps every dataset's result, as the combined tidepool-plan variant below does, so
    // their peak heaps compare like with like.
    let (naive_t, naive_m) = measure("baseline: naive clone-heavy retention+repl", 1, || {
        let mut results = Vec::with_capacity(s.sources.len());
        for (src, dst) in s.sources.iter().zip(&s.targets) {
            let destroy = naive_retention(src, &retention, &tz);
            results.push((destroy, black_box(naive_replication(src, dst))));
        }
        results
    });

    let (ret_t, ret_m) = measure("tidepool-plan retention", 3, || {
        s.sources
            .iter()
            .map(|inv| retention::plan_dataset(&rules, inv).destroy.len())
            .sum::<usize>()
    });
    let (rep_t, rep_m) = measure("tidepool-plan replication", 3, || {
        let mut sends = 0usize;
        for (src, dst) in s.sources.iter().zip(&s.targets) {
            let input = ReplicationInput {
                policy: POLICY,
                source: src,
                target: dst,
                send: &send,
                selection: &selection,
                selection_owner: Some(&schedule),
                owner: &policy,
                on_divergence: OnDivergence::Fail,
                resume_failed: None,
                target_abilities: TargetAbilities::AGENT_POOL,
            };
            sends += replication::plan(&input, now).sends().count();
        }
        sends
    });
    let (both_t, both_m) = measure("tidepool-plan retention + replication", 3, || {
        let mut destroys = 0usize;
        let mut plans = Vec::with_capacity(s.sources.len());
        for (src, dst) in s.sources.iter().zip(&s.targets) {
            let r = retention::plan_dataset(&rules, src);
            destroys += r.destroy.len();
            let input = ReplicationInput {
                policy: POLICY,
                source: src,
                target: dst,
                send: &send,
                selection: &selection,
                selection_owner: Some(&schedule),
                owner: &policy,
                on_divergence: OnDivergence::Fail,
                resume_failed: None,
                target_abilities: TargetAbilities::AGENT_POOL,
            };
            plans.push((r, replication::plan(&input, now)));
        }
        (destroys, plans)
    });

    let r = retention::plan_dataset(&rules, &s.sources[0]);
    println!(
        "  per dataset: {} destroyed, {} kept",
        r.destroy.len(),
        r.keep.len()
    );
    drop(r);
    drop(s);
    // The same with the inventory in random order (the planner must sort then).
    let mut shuffled = scenario(datasets, per_dataset, spacing, now).sources;
    for inv in &mut shuffled {
        shuffle(&mut inv.snapshots);
    }
    let (shuf_t, shuf_m) = measure("tidepool-plan retention (shuffled input)", 3, || {
        shuffled
            .iter()
            .map(|inv| retention::plan_dataset(&rules, inv).destroy.len())
            .sum::<usize>()
    });
    drop(shuffled);

    println!(
        "  ratios: retention+replication is {:.2}x the sort-only baseline's time and {:.1}x faster than naive; heap {:.1} MB vs naive {:.1} MB; shuffled retention {:.2}x sort-only",
        both_t.as_secs_f64() / sort_t.as_secs_f64(),
        naive_t.as_secs_f64() / both_t.as_secs_f64(),
        both_m as f64 / 1e6,
        naive_m as f64 / 1e6,
        shuf_t.as_secs_f64() / sort_t.as_secs_f64(),
    );
    let verdict = |ok: bool| if ok { "ok" } else { "OVER TARGET" };
    println!(
        "  targets: time {:.1} ms ≤ 1000 ms: {}; planning heap {:.1} MB ≤ 200 MB: {}; planning heap + inputs {:.1} MB",
        both_t.as_secs_f64() * 1e3,
        verdict(both_t <= Duration::from_secs(1)),
        both_m as f64 / 1e6,
        verdict(both_m <= 200_000_000),
        (both_m + inputs) as f64 / 1e6,
    );
    let _ = (ret_t, ret_m, rep_t, rep_m, sort_m, shuf_m);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, with tiny sizes.
    let quick = !std::env::args().any(|a| a == "--bench");
    // The machine is shared: the load says how much of it this run had.
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at start: {}", load.trim());
    }
    if quick {
        run("smoke", 10, 1000, SignedDuration::from_mins(1));
        return;
    }
    // A snapshot a minute for ~23 months; retention keeps ~1,500 of them.
    run("one dataset", 1, 1_000_000, SignedDuration::from_mins(1));
    // A snapshot an hour for ~4 days in each; retention keeps about half.
    run(
        "10,000 datasets",
        10_000,
        100,
        SignedDuration::from_hours(1),
    );
    if let Some(hwm) = vm_hwm_mb() {
        println!("\nprocess VmHWM (inputs of both scenarios, baselines included): {hwm:.0} MB");
    }
}
