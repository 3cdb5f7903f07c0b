//! Benchmark: lateness of fast schedules measured at the agent, and how often their status
//! is written. Real parts: the harness's kube-apiserver with the chart's RBAC, one
//! `tidepool agent` in the OpenZFS VM (Pod-bound tokens), one controller replica on the
//! host with the chart's controller ServiceAccount and the pinned-TLS transport.
//!
//! Two schedules on one node, `every-1s` (interval 1 s) and `every-500ms` (500 ms), run for
//! the measured window (default 90 s, `--seconds N`) after a warm-up. Printed beside the
//! goals: p50/p99/max lateness from the agent's `tidepool_agent_snapshot_lateness_seconds`
//! (slot → `zfs snapshot` returned, by the guest's clock; the guest/host clock offset is
//! measured and printed, since the slot is computed by the host), the controller's own
//! lateness histogram, slots missed and duplicated (from the snapshot names in zfs), and
//! status writes per minute per schedule (counted from a watch on the API server).
//!
//! `cargo run -p tidepool-tests --bin bench-lateness [-- --seconds 90] [--intervals 1s,500ms]`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use futures::StreamExt;
use jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::watcher;
use serde_json::json;
use tidepool_api::{DatasetGrant, SnapshotSchedule};
use tidepool_reconciler::{ControllerConfig, LeaseConfig, PinnedAgents, ReconcilerConfig};
use tidepool_tests::agents::{AgentSpec, GuestAgent};
use tidepool_tests::chart::Component;
use tidepool_tests::release::{Release, create_schedule, wait_ready};
use tidepool_tests::zfs_vm::ZfsVm;
use tokio::time::Instant;

const LATENESS_GOAL_MS: f64 = 100.0;

/// A cumulative Prometheus histogram: (upper bound, count) ascending, `+Inf` last.
#[derive(Debug, Clone, Default)]
struct Histogram(Vec<(f64, f64)>);

impl Histogram {
    fn parse(text: &str, name: &str) -> Self {
        let prefix = format!("{name}_bucket{{");
        let mut b: Vec<(f64, f64)> = text
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, l.rsplit_once(' ')?.1.parse().ok()?))
            })
            .collect();
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        Self(b)
    }

    /// The samples between `earlier` and `self`.
    fn since(&self, earlier: &Histogram) -> Self {
        Self(
            self.0
                .iter()
                .map(|(le, c)| {
                    let before = earlier
                        .0
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0.0, |(_, c)| *c);
                    (*le, c - before)
                })
                .collect(),
        )
    }

    fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |(_, c)| *c)
    }

    /// The q-quantile, interpolated linearly inside its bucket (as `histogram_quantile`).
    fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, c) in &self.0 {
            if c >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let inside = c - lower.1;
                let frac = if inside > 0.0 {
                    (rank - lower.1) / inside
                } else {
                    1.0
                };
                return Some(lower.0 + (le - lower.0) * frac);
            }
            lower = (le, c);
        }
        None
    }

    /// The upper bound of the highest non-empty bucket: the max is at most this.
    fn max_bound(&self) -> Option<f64> {
        let mut prev = 0.0;
        let mut bound = None;
        for &(le, c) in &self.0 {
            if c > prev {
                bound = Some(le);
            }
            prev = c;
        }
        bound
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .ok_or_else(|| anyhow!("not an HTTP response from {addr}"))
}

/// The guest's clock minus the host's, and the uncertainty (half the round trip).
async fn clock_offset(vm: &ZfsVm) -> Result<(f64, f64)> {
    let mut best: Option<(f64, f64)> = None;
    for _ in 0..5 {
        let before = Timestamp::now();
        let out = vm.exec_ok(["date", "+%s.%N"]).await?;
        let after = Timestamp::now();
        let guest: f64 = out.trim().parse().context("guest date")?;
        let half = after.duration_since(before).as_secs_f64() / 2.0;
        let mid = before.as_millisecond() as f64 / 1000.0 + half;
        if best.is_none_or(|(_, h)| half < h) {
            best = Some((guest - mid, half));
        }
    }
    best.ok_or_else(|| anyhow!("no clock reading"))
}

/// Per zfs/zpool subcommand: (calls, seconds in all), from the agent's duration histogram.
fn zfs_costs(text: &str) -> BTreeMap<String, (f64, f64)> {
    let name = "tidepool_agent_zfs_command_duration_seconds";
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for l in text.lines() {
        let Some((series, value)) = l.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some(command) = series
            .split("command=\"")
            .nth(1)
            .and_then(|c| c.split('"').next())
        else {
            continue;
        };
        let e = out.entry(command.to_owned()).or_default();
        if series.starts_with(&format!("{name}_count{{")) {
            e.0 = value;
        } else if series.starts_with(&format!("{name}_sum{{")) {
            e.1 = value;
        }
    }
    out
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |s| format!("{:.1} ms", s * 1000.0))
}

/// Slot times of `owner`'s snapshots on `dataset` (from their names), in order.
async fn slots_taken(vm: &ZfsVm, dataset: &str, owner: &str) -> Result<Vec<Timestamp>> {
    let out = vm
        .exec_ok([
            "zfs",
            "get",
            "-H",
            "-p",
            "-d",
            "1",
            "-t",
            "snapshot",
            "-o",
            "name,value",
            "tidepool.dev:owner",
            dataset,
        ])
        .await?;
    let mut times: Vec<Timestamp> = out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, v)| *v == owner)
        .filter_map(|(n, _)| tidepool_plan::parse_snapshot_time(n.split_once('@')?.1, "tidepool"))
        .collect();
    times.sort();
    Ok(times)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let seconds: u64 = match std::env::args().skip_while(|a| a != "--seconds").nth(1) {
        Some(s) => s.parse().context("--seconds")?,
        None => 90,
    };
    let release = Release::install("bench").await;
    let cp = release.cp;
    let vm = ZfsVm::shared().await?;
    let ns = release.ns.clone();
    let users = cp.create_namespace("bench-users").await?;
    let pool = vm.unique_pool_name("pl");
    vm.create_pool(&pool, 512 << 20).await?;
    let root = format!("{pool}/data");
    let intervals = match std::env::args().skip_while(|a| a != "--intervals").nth(1) {
        Some(s) => s,
        None => "1s,500ms".to_owned(),
    };
    let schedules: Vec<(String, String, i64)> = intervals
        .split(',')
        .map(|i| {
            let d: tidepool_api::duration::HumanDuration =
                i.parse().map_err(|e| anyhow!("{i}: {e}"))?;
            let period_ms = i64::try_from(d.as_std().as_millis())?;
            Ok((format!("every-{i}"), i.to_owned(), period_ms))
        })
        .collect::<Result<_>>()?;
    for (name, _, _) in &schedules {
        vm.exec_ok(["zfs", "create", "-p", &format!("{root}/{name}")])
            .await?;
    }
    let node = format!("{ns}-a");
    let [api_port, metrics_port, ..] = ZfsVm::AGENT_PORTS;
    let spec = AgentSpec {
        node: node.clone(),
        namespace: ns.clone(),
        agent_service_account: release.chart.service_account(Component::Agent)?.to_owned(),
        controller_service_account: format!(
            "{ns}/{}",
            release.chart.service_account(Component::Controller)?
        ),
        pools: vec![pool.clone()],
        dataset_roots: vec![root.clone()],
        api_port,
        metrics_port,
        heartbeat: "30s".to_owned(),
    };
    let agent = GuestAgent::start(vm, cp, &spec).await?;
    agent.wait_registered(vm, cp).await?;
    Api::<DatasetGrant>::all(cp.admin_client())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "tidepool.dev/v1alpha1", "kind": "DatasetGrant",
                "metadata": {"name": format!("{ns}-grant")},
                "spec": {"namespaces": [users], "datasets": [root]},
            }))?,
        )
        .await?;
    for (name, interval, _) in &schedules {
        create_schedule(
            cp,
            &users,
            name,
            json!({
                "nodeName": node,
                "datasets": [{"name": format!("{root}/{name}")}],
                "schedule": {"interval": interval},
            }),
        )
        .await;
    }

    // The controller, as `Release::start` runs it, plus its /metrics.
    let replica = release.replica("controller-0").await;
    let http = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let mut lease = LeaseConfig::new(ns.clone(), release.lease_name(), replica.name.clone());
    lease.retry_period = Duration::from_secs(1);
    let config = ControllerConfig {
        lease,
        watch_namespace: Some(users.clone()),
        reconciler: ReconcilerConfig::default(),
        http: Some(http),
    };
    let client = replica.identity.client().await?;
    let agents = PinnedAgents::new(replica.agent_token.clone(), Duration::from_secs(5));
    let controller = tokio::spawn(async move {
        let r = tidepool_reconciler::run(client, config, agents, futures::future::pending()).await;
        eprintln!("controller stopped: {r:?}");
    });
    for (name, _, _) in &schedules {
        wait_ready(
            cp,
            &users,
            name,
            "True",
            "Reconciled",
            Duration::from_secs(120),
        )
        .await;
    }
    // Status writes as the API server sees them: every change of an object is a watch event.
    let writes: std::sync::Arc<std::sync::Mutex<BTreeMap<String, u64>>> = Default::default();
    let counting = {
        let writes = writes.clone();
        let api: Api<SnapshotSchedule> = Api::namespaced(cp.admin_client(), &users);
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default()).boxed();
            while let Some(Ok(e)) = events.next().await {
                if let watcher::Event::Apply(o) = e {
                    let name = o.metadata.name.unwrap_or_default();
                    if let Ok(mut w) = writes.lock() {
                        *w.entry(name).or_default() += 1;
                    }
                }
            }
        })
    };
    eprintln!("warming up for 10 s");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let agent_metric = "tidepool_agent_snapshot_lateness_seconds";
    let start_metric = "tidepool_agent_snapshot_start_lateness_seconds";
    let ctl_metric = "tidepool_controller_snapshot_lateness_seconds";
    let agent_text = agent.probe("/metrics").await?.1;
    let agent_before = Histogram::parse(&agent_text, agent_metric);
    let start_before = Histogram::parse(&agent_text, start_metric);
    let zfs_before = zfs_costs(&agent_text);
    let ctl_text = http_get(http, "/metrics").await?;
    let ctl_before = Histogram::parse(&ctl_text, ctl_metric);
    let sum = tidepool_tests::agents::sum_samples;
    let deferred_before = sum(
        &ctl_text,
        "tidepool_controller_status_writes_deferred_total",
    );
    let writes_before = writes.lock().map(|w| w.clone()).unwrap_or_default();
    let (offset_start, unc_start) = clock_offset(vm).await?;
    let window_start = Timestamp::now();
    let started = Instant::now();
    eprintln!("measuring for {seconds} s");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let window_end = Timestamp::now();
    let agent_text = agent.probe("/metrics").await?.1;
    let agent_after = Histogram::parse(&agent_text, agent_metric);
    let start_after = Histogram::parse(&agent_text, start_metric);
    let zfs_after = zfs_costs(&agent_text);
    let ctl_text = http_get(http, "/metrics").await?;
    let ctl_after = Histogram::parse(&ctl_text, ctl_metric);
    let deferred = sum(
        &ctl_text,
        "tidepool_controller_status_writes_deferred_total",
    ) - deferred_before;
    let writes_after = writes.lock().map(|w| w.clone()).unwrap_or_default();
    let (offset_end, unc_end) = clock_offset(vm).await?;
    controller.abort();
    counting.abort();

    let agent_h = agent_after.since(&agent_before);
    let start_h = start_after.since(&start_before);
    let ctl_h = ctl_after.since(&ctl_before);
    println!("\nlateness of fast schedules, {elapsed:.0} s measured, both schedules together");
    println!(
        "guest clock - host clock: {:+.1} ms (±{:.1}) at start, {:+.1} ms (±{:.1}) at end",
        offset_start * 1000.0,
        unc_start * 1000.0,
        offset_end * 1000.0,
        unc_end * 1000.0
    );
    println!(
        "{:<34} {:>8} {:>10} {:>10} {:>12} {:>8}",
        "measured at", "samples", "p50", "p99", "max ≤", "goal p99"
    );
    for (what, h) in [
        ("agent (slot → zfs snapshot starts)", &start_h),
        ("agent (slot → zfs snapshot done)", &agent_h),
        ("controller (slot → answer)", &ctl_h),
    ] {
        println!(
            "{:<34} {:>8} {:>10} {:>10} {:>12} {:>8}",
            what,
            h.count(),
            ms(h.quantile(0.5)),
            ms(h.quantile(0.99)),
            ms(h.max_bound()),
            format!("≤ {LATENESS_GOAL_MS} ms")
        );
    }
    println!(
        "\n{:<12} {:>9} {:>8} {:>7} {:>11} {:>20} {:>22}",
        "schedule", "expected", "taken", "missed", "duplicated", "status writes/min", "goal"
    );
    for (name, _, period_ms) in &schedules {
        let owner = format!("SnapshotSchedule/{users}/{name}");
        let times = slots_taken(vm, &format!("{root}/{name}"), &owner).await?;
        let inside: Vec<Timestamp> = times
            .iter()
            .copied()
            .filter(|t| *t > window_start && *t <= window_end)
            .collect();
        let expected =
            (window_end.as_millisecond() / period_ms) - (window_start.as_millisecond() / period_ms);
        let mut per_slot: BTreeMap<i64, u32> = BTreeMap::new();
        for t in &inside {
            *per_slot
                .entry(t.as_millisecond().div_euclid(*period_ms))
                .or_default() += 1;
        }
        let duplicated: u32 = per_slot.values().map(|n| n.saturating_sub(1)).sum();
        let missed = expected - i64::try_from(per_slot.len()).unwrap_or(0);
        let w = writes_after.get(name).copied().unwrap_or(0)
            - writes_before.get(name).copied().unwrap_or(0);
        println!(
            "{:<12} {:>9} {:>8} {:>7} {:>11} {:>20.1} {:>22}",
            name,
            expected,
            inside.len(),
            missed,
            duplicated,
            w as f64 * 60.0 / elapsed,
            format!("< {} (2/s)", 120)
        );
    }
    println!("status writes held back by the rate limit: {deferred}");
    println!(
        "\nwhat the runs cost in the guest, {elapsed:.0} s\n{:<20} {:>7} {:>12} {:>12}",
        "command", "calls", "mean", "busy"
    );
    for (command, (calls, secs)) in &zfs_after {
        let (calls_before, secs_before) = zfs_before.get(command).copied().unwrap_or_default();
        let (calls, secs) = (calls - calls_before, secs - secs_before);
        if calls > 0.0 {
            println!(
                "{:<20} {:>7} {:>12} {:>11.0}%",
                command,
                calls,
                ms(Some(secs / calls)),
                100.0 * secs / elapsed
            );
        }
    }
    drop(agent);
    vm.destroy_pool(&pool).await?;
    Ok(())
}
