//! Benchmark: what an agent's inventory refresh costs on a big pool, after a small change,
//! against a full relist (issue 9: "a 1,000-dataset pool with one new snapshot costs a
//! couple of zfs calls, not a full relist").
//!
//! Real parts: OpenZFS 2.3 in the test VM, and the agent's own code path (its
//! `InventoryCache` over the zfs layer, commands measured by its `MeteredExecutor`), the
//! commands running in the guest through the harness's executor.
//!
//! Setup is test setup inside the guest, not product code, and is not measured: the
//! datasets by `zfs create -u`, four at a time (`xargs -P 4`: each create waits for a txg
//! sync, and concurrent ones share it; about 0.15 s a dataset under TCG against 0.3 s one
//! by one); then each round of snapshots (`@s1`, `@s2`, ...) is one channel program
//! (`zfs program`, `SNAPSHOT_ALL_LUA`) that walks the pool with `zfs.list.children` and
//! snapshots every dataset with `zfs.sync.snapshot`, all in one txg, as `zfs snapshot -r`
//! would, but without libzfs opening every dataset from user space. Under TCG a round over
//! 1,000 datasets takes about 50 s (`zfs snapshot -r`: more than 80 s; one `zfs snapshot`
//! naming all 1,000: 64 s), nearly all of it the txg sync of 1,000 new snapshots. A dataset
//! takes one snapshot per txg, so one program cannot make several rounds.
//!
//! ```text
//! cargo run -p tidepool-tests --bin bench-inventory -- [--datasets 1000] [--snapshots 100] [--runs 5] [--full-runs 1]
//! ```
//!
//! `--datasets` counts the pool's root dataset too; every dataset gets `--snapshots`
//! snapshots (`zfs snapshot -r`). Each scenario is measured `--runs` times, the full relist
//! `--full-runs` times (default 1: under TCG it is the slow one), and the median wall time
//! printed; calls, lines and bytes are those of the median run. Each refresh must show
//! what changed (the new snapshots, or the very listing when nothing did), and after the
//! last one the cache must equal a fresh full relist: the bench fails otherwise.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use tidepool_agent::inventory_cache::InventoryCache;
use tidepool_agent::metered::MeteredExecutor;
use tidepool_agent::metrics::{AgentMetrics, COMMANDS};
use tidepool_api::names::PoolName;
use tidepool_tests::zfs_exec::VmExecutor;
use tidepool_tests::zfs_vm::ZfsVm;
use tidepool_wire::operation::InventoryAnswer;
use tidepool_wire::pool::PoolInventory;
use tidepool_zfs::Zfs;

struct Args {
    datasets: usize,
    snapshots: usize,
    runs: usize,
    full_runs: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        datasets: 1000,
        snapshots: 100,
        runs: 5,
        full_runs: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: usize = it
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} takes a number"))?;
        match flag.as_str() {
            "--datasets" => a.datasets = value.max(1),
            "--snapshots" => a.snapshots = value.max(1),
            "--runs" => a.runs = value.max(1),
            "--full-runs" => a.full_runs = value.max(1),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// What the metered executor counted, at one moment.
#[derive(Clone, Copy, Default)]
struct Counts {
    zfs_calls: u64,
    zpool_calls: u64,
    lines: u64,
    bytes: u64,
    reread: u64,
}

fn counts(m: &AgentMetrics) -> Counts {
    let calls = |prefix: &str| -> u64 {
        COMMANDS
            .iter()
            .filter(|c| c.starts_with(prefix))
            .map(|c| {
                m.zfs_command_seconds
                    .with_label_values(&[c])
                    .get_sample_count()
            })
            .sum()
    };
    Counts {
        zfs_calls: calls("zfs "),
        zpool_calls: calls("zpool "),
        lines: m.output_lines(),
        bytes: m.output_bytes(),
        reread: m.inventory_datasets_reread.get(),
    }
}

fn delta(before: Counts, after: Counts) -> Counts {
    Counts {
        zfs_calls: after.zfs_calls - before.zfs_calls,
        zpool_calls: after.zpool_calls - before.zpool_calls,
        lines: after.lines - before.lines,
        bytes: after.bytes - before.bytes,
        reread: after.reread - before.reread,
    }
}

/// One measured refresh.
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    counts: Counts,
}

/// The run with the median wall time.
fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by_key(|r| r.wall);
    runs[runs.len() / 2]
}

struct Bench {
    vm: ZfsVm,
    zfs: Zfs<MeteredExecutor>,
    metrics: AgentMetrics,
    pool: PoolName,
    cache: InventoryCache,
}

impl Bench {
    /// One refresh through `cache` as the agent answers it (`since: None`, so the whole
    /// inventory comes back to compare).
    async fn refresh_with(&self, cache: &mut InventoryCache) -> Result<(Run, PoolInventory)> {
        let before = counts(&self.metrics);
        let started = Instant::now();
        let (answer, _) = cache
            .answer(
                &self.zfs,
                &self.metrics,
                &self.pool,
                None,
                &HashSet::new(),
                Timestamp::now(),
            )
            .await?;
        let wall = started.elapsed();
        let counts = delta(before, counts(&self.metrics));
        match answer {
            InventoryAnswer::Full { inventory, .. } => Ok((Run { wall, counts }, inventory)),
            other => bail!("a refresh without `since` answered {other:?}"),
        }
    }

    async fn incremental(&mut self) -> Result<(Run, PoolInventory)> {
        let mut cache = std::mem::replace(&mut self.cache, InventoryCache::new(true, FULL_EVERY));
        let out = self.refresh_with(&mut cache).await;
        self.cache = cache;
        out
    }

    async fn full(&self) -> Result<(Run, PoolInventory)> {
        self.refresh_with(&mut InventoryCache::new(true, FULL_EVERY))
            .await
    }

    /// The refreshed inventory must equal a fresh full relist (pool space aside: it may
    /// move between the two reads as a txg lands).
    async fn check(&self, label: &str, refreshed: &PoolInventory) -> Result<()> {
        let (_, fresh) = self.full().await?;
        if fresh.datasets != refreshed.datasets
            || fresh.unnamed_datasets != refreshed.unnamed_datasets
            || fresh.capabilities != refreshed.capabilities
        {
            let differ = fresh
                .datasets
                .iter()
                .zip(&refreshed.datasets)
                .find(|(a, b)| a != b)
                .map(|(a, _)| a.dataset.to_string());
            bail!(
                "{label}: the refreshed inventory differs from a full relist \
                 ({} vs {} datasets; first differing: {differ:?})",
                refreshed.datasets.len(),
                fresh.datasets.len()
            );
        }
        Ok(())
    }

    /// Waits into the next whole second, so that a change and a read are never in the
    /// same second (`snapshots_changed` has whole seconds; the cache re-reads a dataset
    /// changed in the second of its last read, by design).
    async fn next_second(&self) {
        let now = Timestamp::now();
        let into = now.subsec_nanosecond();
        let wait = 1_000_000_000 - i64::from(into) + 50_000_000;
        tokio::time::sleep(Duration::from_nanos(u64::try_from(wait).unwrap_or(0))).await;
    }

    async fn guest(&self, script: &str) -> Result<Duration> {
        let started = Instant::now();
        self.vm
            .exec_ok(["bash", "-c", script])
            .await
            .with_context(|| format!("guest script: {script}"))?;
        Ok(started.elapsed())
    }
}

/// Where the setup's channel program goes in the guest.
const SNAPSHOT_ALL: &str = "/var/tmp/tidepool/snapshot-all.lua";

/// Setup only: a channel program that snapshots `root` and every filesystem and volume
/// below it as `<dataset>@<name>`, all in one txg (what `zfs snapshot -r root@name` does,
/// without libzfs walking the tree from user space: under TCG that walk made one recursive
/// snapshot over 1,000 datasets take more than 80 s). One name per call: ZFS takes at most
/// one snapshot of a dataset per txg, so a second round in the same program fails
/// (`EAGAIN`). A few tens of Lua instructions a dataset: `zfs program`'s default limits
/// (10 million instructions, 10 MiB) hold for some 100,000 datasets.
const SNAPSHOT_ALL_LUA: &str = r#"local argv = (...)["argv"]
local root, name = argv[1], argv[2]
local datasets = {}
local function walk(ds)
  table.insert(datasets, ds)
  for child in zfs.list.children(ds) do
    walk(child)
  end
end
walk(root)
for _, ds in ipairs(datasets) do
  local err = zfs.sync.snapshot(ds .. "@" .. name)
  if err ~= 0 then
    error("snapshot " .. ds .. "@" .. name .. ": error " .. err)
  end
end
return #datasets
"#;

/// Long enough that no incremental refresh here turns into a full one.
const FULL_EVERY: Duration = Duration::from_secs(24 * 3600);

fn expect_snapshot(inv: &PoolInventory, dataset: &str, short: &str) -> Result<()> {
    let found = inv
        .datasets
        .iter()
        .find(|d| d.dataset.as_str() == dataset)
        .is_some_and(|d| d.snapshots.iter().any(|s| s.name.as_str() == short));
    if !found {
        bail!("the refreshed inventory lacks {dataset}@{short}");
    }
    Ok(())
}

fn dataset(pool: &str, i: usize) -> String {
    format!("{pool}/d{i:04}")
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let vm = ZfsVm::boot().await?;
    println!(
        "VM booted in {:.1?} (OpenZFS: {})",
        vm.boot_time(),
        vm.exec_ok(["zfs", "version"])
            .await?
            .lines()
            .next()
            .unwrap_or("?")
    );
    let pool_name = vm.unique_pool_name("bench");
    vm.create_pool(&pool_name, 4 << 30).await?;
    let metrics = AgentMetrics::new()?;
    let zfs = Zfs::new(MeteredExecutor::new(
        Arc::new(VmExecutor::of(&vm)),
        metrics.clone(),
    ));
    let mut b = Bench {
        vm,
        zfs,
        metrics,
        pool: pool_name.parse()?,
        cache: InventoryCache::new(true, FULL_EVERY),
    };

    // --- Setup: datasets (the root counts as one), then one snapshot of every dataset
    // per round, each round one channel program (one txg, like `zfs snapshot -r`).
    let children = a.datasets - 1;
    let took = b
        .guest(&format!(
            "set -eo pipefail; [ {children} -eq 0 ] || \
             printf '{pool_name}/d%04d\\n' $(seq 1 {children}) | xargs -P 4 -n 1 zfs create -u"
        ))
        .await?;
    println!("setup: {children} datasets created in {took:.1?}");
    b.guest(&format!(
        "cat > {SNAPSHOT_ALL} <<'EOF'\n{SNAPSHOT_ALL_LUA}EOF\n"
    ))
    .await?;
    let setup = Instant::now();
    for from in (1..=a.snapshots).step_by(10) {
        let to = (from + 9).min(a.snapshots);
        b.guest(&format!(
            "set -e; for i in $(seq {from} {to}); do \
             zfs program {pool_name} {SNAPSHOT_ALL} {pool_name} s$i >/dev/null; done"
        ))
        .await?;
        println!(
            "setup: {to} rounds of snapshots ({} snapshots) after {:.1?}",
            to * a.datasets,
            setup.elapsed()
        );
    }

    // --- Full relist: the agent cache's first answer (as a starting agent's), then
    // `--full-runs - 1` more from fresh caches.
    b.next_second().await;
    let (first, listed) = b.incremental().await?;
    let mut full_runs = vec![first];
    for _ in 1..a.full_runs {
        full_runs.push(b.full().await?.0);
    }
    let full = median(full_runs);
    // Where a full relist's time goes (sums over all its runs), to weigh what to cut.
    for c in COMMANDS {
        let h = b.metrics.zfs_command_seconds.with_label_values(&[c]);
        if h.get_sample_count() > 0 {
            println!(
                "  full relists: {c}: {} calls, {:.2}s, {} lines",
                h.get_sample_count(),
                h.get_sample_sum(),
                b.metrics.zfs_output_lines.with_label_values(&[c]).get()
            );
        }
    }
    let snapshots: usize = listed.datasets.iter().map(|d| d.snapshots.len()).sum();
    println!(
        "pool {pool_name}: {} datasets, {snapshots} snapshots listed",
        listed.datasets.len()
    );

    // --- (b) nothing changed: the same datasets and snapshots as listed.
    b.next_second().await;
    let mut runs = Vec::new();
    for _ in 0..a.runs {
        let (run, inv) = b.incremental().await?;
        if inv.datasets != listed.datasets {
            bail!("nothing changed, yet the refreshed datasets differ from the listing");
        }
        runs.push(run);
    }
    let unchanged = median(runs);

    // --- (a) one new snapshot on one dataset.
    let one = dataset(&pool_name, children / 2 + 1);
    let mut runs = Vec::new();
    for i in 0..a.runs {
        b.next_second().await;
        b.guest(&format!("zfs snapshot {one}@one{i}")).await?;
        let (run, inv) = b.incremental().await?;
        expect_snapshot(&inv, &one, &format!("one{i}"))?;
        runs.push(run);
    }
    let one_new = median(runs);

    // --- (c) one atomic snapshot over 50 datasets.
    let n = 50.min(children);
    let fifty: Vec<String> = (0..n)
        .map(|k| dataset(&pool_name, 1 + k * children / n.max(1)))
        .collect();
    let mut runs = Vec::new();
    let mut last = None;
    for i in 0..a.runs {
        b.next_second().await;
        // Settle: the previous run's datasets were read in their change's second.
        b.incremental().await?;
        b.next_second().await;
        let names: Vec<String> = fifty.iter().map(|d| format!("{d}@fifty{i}")).collect();
        b.guest(&format!("zfs snapshot {}", names.join(" ")))
            .await?;
        let (run, inv) = b.incremental().await?;
        for d in &fifty {
            expect_snapshot(&inv, d, &format!("fifty{i}"))?;
        }
        runs.push(run);
        last = Some(inv);
    }
    let fifty_new = median(runs);
    // After every incremental step above, the cache must hold what a relist reads now.
    b.check("after all incremental refreshes", &last.context("no run")?)
        .await?;

    // --- Report.
    println!();
    println!(
        "inventory refresh, pool of {} datasets x {} snapshots ({snapshots} snapshots), \
         median of {} (full: {}):",
        a.datasets, a.snapshots, a.runs, a.full_runs
    );
    println!(
        "{:<40} {:>10} {:>6} {:>6} {:>9} {:>11} {:>7} {:>8} {:>8}",
        "scenario", "wall", "zfs", "zpool", "lines", "bytes", "reread", "time/full", "lines/full"
    );
    let row = |name: &str, r: Run| {
        println!(
            "{:<40} {:>10} {:>6} {:>6} {:>9} {:>11} {:>7} {:>8.3} {:>8.4}",
            name,
            format!("{:.3?}", r.wall),
            r.counts.zfs_calls,
            r.counts.zpool_calls,
            r.counts.lines,
            r.counts.bytes,
            r.counts.reread,
            r.wall.as_secs_f64() / full.wall.as_secs_f64(),
            r.counts.lines as f64 / full.counts.lines.max(1) as f64,
        );
    };
    row("full relist (baseline)", full);
    row("(b) nothing changed", unchanged);
    row("(a) one new snapshot on one dataset", one_new);
    row("(c) one atomic snapshot, 50 datasets", fifty_new);
    println!(
        "goal: a couple of zfs calls after one new snapshot, cost proportional to change \
         (the dataset listing, one line per dataset, is the floor); every refreshed \
         inventory equalled a fresh full relist"
    );
    Ok(())
}
