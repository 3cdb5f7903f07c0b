//! Issue 9's scale benchmark: N `SnapshotSchedule`s (default 10,000, 24 h interval, so
//! nothing is due) on the real API server, one real agent in the OpenZFS VM, and
//! `tidepool controller` as its own process with the chart's controller ServiceAccount
//! (Pod-bound token). Prints, beside the goals: time to settle, controller RSS, API writes
//! per minute once settled (and what the agent's heartbeats add), and p50/p99 from a spec
//! change to the status that observed it.
//!
//! `cargo run -p tidepool-tests --bin bench-schedules -- [--schedules N] [--window SECS]
//! [--changes N]`

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use tidepool_api::{DatasetGrant, SnapshotSchedule};
use tidepool_tests::agents::{AgentSpec, GuestAgent, sum_samples, tidepool_binary_in_guest};
use tidepool_tests::chart::{ChartRelease, Component};
use tidepool_tests::control_plane::ControlPlane;
use tidepool_tests::kubelet::{Audience, Kubelet};
use tidepool_tests::zfs_vm::{ZfsVm, host_target_dir};

const DATASETS: usize = 10;
const CLIENTS: usize = 8;

struct Args {
    schedules: usize,
    window: Duration,
    changes: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        schedules: 10_000,
        window: Duration::from_secs(60),
        changes: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: u64 = it
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} takes a whole number"))?;
        match flag.as_str() {
            "--schedules" => a.schedules = usize::try_from(value)?,
            "--window" => a.window = Duration::from_secs(value),
            "--changes" => a.changes = usize::try_from(value)?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// The controller process and where its figures are read.
struct Controller {
    child: tokio::process::Child,
    metrics: std::net::SocketAddr,
}

impl Controller {
    fn memory_kib(&self, field: &str) -> Result<u64> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow!("the controller exited"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
    }

    async fn reconciles(&self) -> Result<f64> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(self.metrics).await?;
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n")
            .await?;
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await?;
        Ok(sum_samples(&raw, "tidepool_controller_reconciles_total"))
    }
}

/// `apiserver_request_total` write requests by resource (and subresource).
async fn api_writes(cp: &ControlPlane) -> Result<BTreeMap<String, f64>> {
    let text = cp
        .admin_client()
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |k: &str| {
            series
                .split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_owned()
        };
        let verb = label("verb");
        if ![
            "POST",
            "PUT",
            "PATCH",
            "APPLY",
            "DELETE",
            "DELETECOLLECTION",
        ]
        .contains(&verb.as_str())
        {
            continue;
        }
        let sub = label("subresource");
        let key = if sub.is_empty() {
            label("resource")
        } else {
            format!("{}/{sub}", label("resource"))
        };
        *out.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(out)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn settled(s: &SnapshotSchedule) -> bool {
    s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn row(what: &str, measured: String, goal: &str) {
    println!("{what:<44} {measured:>16}   goal {goal}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = args()?;
    let cp = ControlPlane::shared().await;
    let vm = ZfsVm::shared().await?;
    let ns = cp.create_namespace("bench").await?;
    let users = cp.create_namespace("bench-users").await?;
    let chart = ChartRelease::install(cp, &ns, &ns).await?;
    let node = format!("{ns}-node");
    // The agent's start registers the Node (as a kubelet would).
    let kubelet = Kubelet::new(cp);

    let pool = vm.unique_pool_name("bench");
    vm.create_pool(&pool, 512 << 20).await?;
    let root = format!("{pool}/data");
    for d in 0..DATASETS {
        vm.exec_ok(["zfs", "create", "-p", &format!("{root}/d{d}")])
            .await?;
    }
    let controller_sa = chart.service_account(Component::Controller)?.to_owned();
    let [api_port, metrics_port, ..] = ZfsVm::AGENT_PORTS;
    let agent = GuestAgent::start(
        vm,
        cp,
        &AgentSpec {
            node: node.clone(),
            namespace: ns.clone(),
            agent_service_account: chart.service_account(Component::Agent)?.to_owned(),
            controller_service_account: format!("{ns}/{controller_sa}"),
            pools: vec![pool.clone()],
            dataset_roots: vec![root.clone()],
            api_port,
            metrics_port,
            heartbeat: "10s".to_owned(),
        },
    )
    .await?;
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

    // The controller: its own process, the chart's ServiceAccount through a Pod-bound token.
    tidepool_binary_in_guest(vm)?;
    let pod = kubelet
        .schedule_pod(&ns, "controller-0", &controller_sa, &node)
        .await?;
    let identity = pod.api_identity(cp).await?;
    let token_dir = tempfile::tempdir()?;
    let agent_token = token_dir.path().join("agent-token");
    let minted = pod.mint_token(
        cp,
        Audience::Named("tidepool-agent"),
        Duration::from_secs(3600),
    );
    std::fs::write(&agent_token, minted.await?)?;
    let metrics: std::net::SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let log = std::fs::File::create(token_dir.path().join("controller.log"))?;
    let child = tokio::process::Command::new(host_target_dir().join("debug/tidepool"))
        .arg("controller")
        .args([
            "--lease-namespace",
            &ns,
            "--lease-name",
            chart.controller_lease_name()?,
        ])
        .args([
            "--identity",
            "bench-0",
            "--namespace",
            &users,
            "--http",
            &metrics.to_string(),
        ])
        .arg("--agent-token-file")
        .arg(&agent_token)
        .env("KUBECONFIG", identity.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let controller = Controller { child, metrics };

    // The schedules, from a handful of concurrent clients.
    let api: Api<SnapshotSchedule> = Api::namespaced(cp.admin_client(), &users);
    let started = Instant::now();
    futures::stream::iter(0..args.schedules)
        .map(|i| {
            let (api, root, node) = (api.clone(), root.clone(), node.clone());
            async move {
                let s: SnapshotSchedule = serde_json::from_value(json!({
                    "apiVersion": "tidepool.dev/v1alpha1", "kind": "SnapshotSchedule",
                    "metadata": {"name": format!("s{i:05}")},
                    "spec": {"nodeName": node, "datasets": [{"name": format!("{root}/d{}", i % DATASETS)}],
                             "schedule": {"interval": "24h"}, "retention": {"keepLast": 3}},
                }))?;
                api.create(&PostParams::default(), &s).await.context("creating a schedule")
            }
        })
        .buffer_unordered(CLIENTS)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let created = started.elapsed();
    let settle = loop {
        let list = api.list(&ListParams::default()).await?;
        let done = list.items.iter().filter(|s| settled(s)).count();
        if done == args.schedules {
            break started.elapsed();
        }
        eprintln!(
            "{:>6.0?}: {done}/{} settled",
            started.elapsed(),
            args.schedules
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    tokio::time::sleep(Duration::from_secs(10)).await;

    // A settled window: nothing is due, only heartbeats happen.
    let (writes0, rec0) = (api_writes(cp).await?, controller.reconciles().await?);
    tokio::time::sleep(args.window).await;
    let (writes1, rec1) = (api_writes(cp).await?, controller.reconciles().await?);
    let rss = controller.memory_kib("VmRSS:")?;
    let per_min = |k: &str| {
        let d = writes1.get(k).copied().unwrap_or(0.0) - writes0.get(k).copied().unwrap_or(0.0);
        d * 60.0 / args.window.as_secs_f64()
    };

    // Spec changes to status, seen through a watch opened before the first patch.
    let rv = api
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version;
    let mut watch = api
        .watch(&WatchParams::default(), &rv.unwrap_or_default())
        .await?
        .boxed();
    // Every schedule is at generation 1 until patched: a status observing 2 is the answer.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let patches = {
        let (api, sent) = (api.clone(), sent.clone());
        let names: Vec<String> = (0..args.changes.min(args.schedules))
            .map(|i| format!("s{:05}", i * args.schedules / args.changes.max(1)))
            .collect();
        tokio::spawn(async move {
            futures::stream::iter(names)
                .map(|name| {
                    let (api, sent) = (api.clone(), sent.clone());
                    async move {
                        // Recorded before the request: the status may come back before
                        // the patch's own answer does.
                        sent.lock()
                            .map_err(|_| anyhow!("poisoned"))?
                            .insert(name.clone(), Instant::now());
                        let body = Patch::Merge(json!({"spec": {"retention": {"keepLast": 4}}}));
                        api.patch(&name, &PatchParams::default(), &body).await?;
                        anyhow::Ok(())
                    }
                })
                .buffer_unordered(CLIENTS)
                .try_for_each(|()| async { Ok(()) })
                .await
        })
    };
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while latencies.len() < args.changes && Instant::now() < deadline {
        let Ok(next) = tokio::time::timeout(Duration::from_secs(30), watch.try_next()).await else {
            break;
        };
        let Some(event) = next? else {
            break;
        };
        if let WatchEvent::Modified(s) = event {
            let name = s.metadata.name.clone().unwrap_or_default();
            let observed = s.status.as_ref().and_then(|st| st.observed_generation);
            if observed >= Some(2)
                && let Some(at) = sent.lock().map_err(|_| anyhow!("poisoned"))?.remove(&name)
            {
                latencies.push(at.elapsed());
            }
        }
    }
    patches.await??;
    latencies.sort();

    println!(
        "\n{} schedules, 1 agent, {DATASETS} datasets, controller pid {:?}",
        args.schedules,
        controller.child.id()
    );
    row("created (8 clients)", format!("{created:.1?}"), "-");
    row(
        "settled (all observedGeneration)",
        format!("{settle:.1?}"),
        "-",
    );
    row(
        "controller RSS settled",
        format!("{:.1} MiB", rss as f64 / 1024.0),
        "<= 200 MiB",
    );
    row(
        "controller peak RSS (VmHWM)",
        format!(
            "{:.1} MiB",
            controller.memory_kib("VmHWM:")? as f64 / 1024.0
        ),
        "-",
    );
    let window = format!("over {}s settled", args.window.as_secs());
    let schedule_writes = per_min("snapshotschedules") + per_min("snapshotschedules/status");
    row(
        &format!("schedule writes/min {window}"),
        format!("{schedule_writes:.1}"),
        "0",
    );
    row(
        &format!("event writes/min {window}"),
        format!("{:.1}", per_min("events")),
        "0",
    );
    row(
        &format!("reconciles/min {window}"),
        format!("{:.1}", (rec1 - rec0) * 60.0 / args.window.as_secs_f64()),
        "0",
    );
    row(
        "  zfsnodes/status writes/min (agent heartbeat)",
        format!("{:.1}", per_min("zfsnodes/status") + per_min("zfsnodes")),
        "-",
    );
    row(
        "  leases writes/min (leader election)",
        format!("{:.1}", per_min("leases")),
        "-",
    );
    let p = |q| format!("{:.2?}", percentile(&latencies, q));
    row(
        &format!(
            "spec change -> status p50 ({} of {})",
            latencies.len(),
            args.changes
        ),
        p(0.5),
        "-",
    );
    row("spec change -> status p99", p(0.99), "<= 2s");
    drop(agent);
    Ok(())
}
