//! Issue 10's in-VM replication benchmark, on real OpenZFS: two agents in the test VM on
//! two pools (two simulated nodes, as `tests/tests/replication_datapath.rs` runs them),
//! with the chart's RBAC and Pod-bound tokens; this binary plays the controller.
//!
//! 1. Throughput of one full stream of a dataset filled with incompressible data (default
//!    1 GiB) through Tidepool's path (`PrepareReceive` on the target agent, `SendToPeer` on
//!    the source agent, no wire compression, no limit) against a bare
//!    `zfs send pool_a/ds@s | zfs receive -u pool_b/…` pipe in the same guest on the same
//!    snapshot. The bare pipe is a `bash -c` pipeline started through the VM's exec
//!    channel (benchmark setup, not product code: the exec channel connects a process to
//!    the host, not two guest processes to each other, and routing the stream through the
//!    host would slow the baseline). Each run is timed from the host, whole call: prepare +
//!    send for Tidepool (the `-nP` estimate and the TLS handshake included), spawn to exit
//!    for the pipe. Runs alternate; the received copy is destroyed (and its space freed)
//!    between runs. Goal: Tidepool ≥ 0.95× the pipe.
//! 2. Bytes re-sent after a 50 % cut: the same stream, bandwidth-limited so it can be
//!    watched, the source agent SIGKILLed once about half of it is through (progress from
//!    `ListTransfers`), restarted, the target's `receive_resume_token` read with a fresh
//!    `zfs get`, and a `TransferStream::Resume` step sent from it. Bytes before the cut are
//!    what the target wrote into `zfs receive` (its `tidepool_agent_transfer_bytes_total`
//!    moved by the cut transfer alone). Re-sent fraction = (before + resume − total) / total.
//!    Goal: < 10 %. The received snapshot's GUID must equal the source's.
//!
//! ```text
//! cargo run --release -p tidepool-tests --bin bench-replication -- [--mib 1024] [--runs 3] [--cut-limit-mib 32]
//! ```
//!
//! Build in release: the agents in the guest are built with the harness's profile.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use tidepool_agent::{AgentClient, CertificateFingerprint, DEFAULT_AUDIENCE, LeaderEpoch};
use tidepool_api::ZfsNode;
use tidepool_tests::agents::{AgentSpec, GuestAgent};
use tidepool_tests::chart::{ChartRelease, Component};
use tidepool_tests::control_plane::ControlPlane;
use tidepool_tests::kubelet::{Audience, Kubelet};
use tidepool_tests::zfs_vm::ZfsVm;
use tidepool_wire::operation::Owner;
use tidepool_wire::transfer::{
    ListTransfers, PeerTarget, PrepareReceive, PrepareReceiveAnswer, SendToPeer, SendToPeerAnswer,
    StepId, TransferBinding, TransferReport, TransferStream, WireCompression,
};
use tidepool_wire::{ReceiveOptions, SendFlags};

const EPOCH: LeaderEpoch = LeaderEpoch(1);

struct Args {
    mib: u64,
    runs: usize,
    cut_limit_mib: u64,
}

fn args() -> Result<Args> {
    let mut a = Args {
        mib: 1024,
        runs: 3,
        cut_limit_mib: 32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: u64 = it
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} takes a whole number"))?;
        match flag.as_str() {
            "--mib" => a.mib = value.max(1),
            "--runs" => a.runs = usize::try_from(value)?.max(2),
            "--cut-limit-mib" => a.cut_limit_mib = value.max(1),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn name<T: std::str::FromStr>(s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| anyhow!("{s}: {e}"))
}

fn mib_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / took.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn fingerprint_of(zn: &ZfsNode) -> Result<CertificateFingerprint> {
    name(
        zn.status
            .as_ref()
            .and_then(|s| s.tls_certificate_sha256.as_deref())
            .unwrap_or(""),
    )
}

fn client_for(zn: &ZfsNode, agent: &GuestAgent) -> Result<AgentClient> {
    Ok(
        AgentClient::new(&agent.endpoint.to_string(), fingerprint_of(zn)?)?
            // Long calls: a 1 GiB stream under TCG, or one slowed by a bandwidth limit.
            .with_timeout(Duration::from_secs(1800)),
    )
}

/// What the bench needs of the guest, in one place.
struct Guest<'a> {
    vm: &'a ZfsVm,
}

impl Guest<'_> {
    async fn sh(&self, argv: &[&str]) -> Result<String> {
        self.vm.exec_ok(argv.iter().copied()).await
    }

    async fn get(&self, property: &str, dataset: &str) -> Result<String> {
        Ok(self
            .sh(&["zfs", "get", "-H", "-p", "-o", "value", property, dataset])
            .await?
            .trim()
            .to_owned())
    }

    async fn exists(&self, dataset: &str) -> Result<bool> {
        Ok(self
            .vm
            .exec(["zfs", "list", "-H", "-o", "name", dataset])
            .await?
            .status
            .success())
    }

    /// Destroys `dataset` (and a partial receive into it) if present, then waits until its
    /// pool has freed the space, so the next run writes into a pool in the same state.
    async fn destroy_and_settle(&self, pool: &str, dataset: &str) -> Result<()> {
        if self.exists(dataset).await? {
            self.sh(&["zfs", "destroy", "-r", dataset]).await?;
        }
        // An aborted resumable receive keeps a hidden `%recv` child even without the parent.
        let _ = self.vm.exec(["zfs", "receive", "-A", dataset]).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            self.sh(&["zpool", "sync", pool]).await?;
            let freeing = self
                .sh(&["zpool", "get", "-H", "-p", "-o", "value", "freeing", pool])
                .await?;
            if freeing.trim() == "0" {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{pool} still freeing {} bytes",
                freeing.trim()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

struct Controller {
    token: String,
    source: AgentClient,
    target: AgentClient,
    owner: Owner,
    source_node: String,
    /// The target's endpoint as the source sees it (both agents are in one guest).
    target_endpoint: String,
    target_pin: CertificateFingerprint,
}

impl Controller {
    fn binding(&self, step: &str) -> Result<TransferBinding> {
        Ok(TransferBinding {
            owner: self.owner.clone(),
            step: name::<StepId>(step)?,
            source_node: self.source_node.clone(),
        })
    }

    /// `PrepareReceive` then `SendToPeer`, as the controller would run one step.
    async fn replicate(
        &self,
        step: &str,
        stream: TransferStream,
        target_dataset: &str,
        bandwidth_limit: Option<u64>,
    ) -> Result<SendToPeerAnswer> {
        let prepare = PrepareReceive {
            receive: ReceiveOptions::new(name(target_dataset)?),
            binding: self.binding(step)?,
            stall_timeout_seconds: Some(60),
        };
        let ticket = match self.target.call(&self.token, EPOCH, prepare).await {
            Ok(PrepareReceiveAnswer::Prepared(p)) => p.ticket,
            other => bail!("PrepareReceive {step}: {other:?}"),
        };
        let send = SendToPeer {
            stream,
            flags: SendFlags::default(),
            peer: PeerTarget {
                endpoint: self.target_endpoint.clone(),
                fingerprint: self.target_pin,
            },
            ticket,
            binding: self.binding(step)?,
            compression: WireCompression::None,
            bandwidth_limit,
            stall_timeout_seconds: Some(60),
        };
        self.source
            .call(&self.token, EPOCH, send)
            .await
            .map_err(|e| anyhow!("SendToPeer {step}: {e:?}"))
    }
}

fn sent(answer: SendToPeerAnswer, what: &str) -> Result<TransferReport> {
    match answer {
        SendToPeerAnswer::Sent(report) => Ok(report),
        SendToPeerAnswer::Failed(e) => bail!("{what}: {e:?}"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = args()?;
    let cp = ControlPlane::shared().await;
    let vm = ZfsVm::boot().await?;
    let g = Guest { vm: &vm };
    let ns = cp.create_namespace("benchrepl").await?;
    let chart = ChartRelease::install(cp, &ns, &ns).await?;
    let agent_sa = chart.service_account(Component::Agent)?.to_owned();
    let controller_sa = chart.service_account(Component::Controller)?.to_owned();

    // Room for the data, metadata and one received copy (a partial one during the cut).
    let pool_size = ((a.mib + a.mib / 4 + 256) << 20).max(512 << 20);
    let pool_a = vm.unique_pool_name("benchsrc");
    let pool_b = vm.unique_pool_name("benchdst");
    vm.create_pool(&pool_a, pool_size).await?;
    vm.create_pool(&pool_b, pool_size).await?;
    let source = format!("{pool_a}/data/ds");
    g.sh(&["zfs", "create", "-p", "-o", "compression=off", &source])
        .await?;
    g.sh(&["zfs", "create", &format!("{pool_b}/replicas")])
        .await?;
    let filled = Instant::now();
    g.sh(&[
        "dd",
        "if=/dev/urandom",
        &format!("of=/{source}/random"),
        "bs=1M",
        &format!("count={}", a.mib),
        "status=none",
    ])
    .await?;
    g.sh(&["zfs", "snapshot", &format!("{source}@s")]).await?;
    let snapshot = format!("{source}@s");
    eprintln!(
        "filled {source} with {} MiB from /dev/urandom in {:.1} s",
        a.mib,
        filled.elapsed().as_secs_f64()
    );

    // The guest's CPU is emulated (TCG): what TLS's ciphers cost there frames the figures.
    for cipher in ["aes-128-gcm", "chacha20-poly1305"] {
        let out = vm
            .exec([
                "openssl", "speed", "-seconds", "2", "-bytes", "16384", "-evp", cipher,
            ])
            .await?;
        let line = out
            .stdout_lossy()
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned();
        println!("guest openssl speed, 16 KiB blocks: {line}");
    }
    let node_a = format!("{ns}-node-a");
    let node_b = format!("{ns}-node-b");
    let spec = |node: &str, pool: &str, root: &str, api_port: u16, metrics_port: u16| AgentSpec {
        node: node.to_owned(),
        namespace: ns.clone(),
        agent_service_account: agent_sa.clone(),
        controller_service_account: format!("{ns}/{controller_sa}"),
        pools: vec![pool.to_owned()],
        dataset_roots: vec![format!("{pool}/{root}")],
        api_port,
        metrics_port,
        heartbeat: "10s".to_owned(),
    };
    let [p1, p2, p3, p4] = ZfsVm::AGENT_PORTS;
    let spec_a = spec(&node_a, &pool_a, "data", p1, p2);
    let mut agent_a = GuestAgent::start(&vm, cp, &spec_a).await?;
    let agent_b = GuestAgent::start(&vm, cp, &spec(&node_b, &pool_b, "replicas", p3, p4)).await?;
    let zn_a = agent_a.wait_registered(&vm, cp).await?;
    let zn_b = agent_b.wait_registered(&vm, cp).await?;
    let controller_pod = Kubelet::new(cp)
        .schedule_pod(&ns, "controller-0", &controller_sa, &node_a)
        .await?;
    let token = controller_pod
        .mint_token(
            cp,
            Audience::Named(DEFAULT_AUDIENCE),
            Duration::from_secs(3600),
        )
        .await?;
    let mut c = Controller {
        token,
        source: client_for(&zn_a, &agent_a)?,
        target: client_for(&zn_b, &agent_b)?,
        owner: name(&format!("ReplicationPolicy/{ns}/bench"))?,
        source_node: node_a.clone(),
        target_endpoint: format!("127.0.0.1:{p3}"),
        target_pin: fingerprint_of(&zn_b)?,
    };
    let full = || -> Result<TransferStream> {
        Ok(TransferStream::Full {
            snapshot: name(&snapshot)?,
        })
    };

    // --- 1. Throughput, alternating the two paths.
    let copy = format!("{pool_b}/replicas/copy");
    let mut tidepool = Vec::new();
    let mut bare = Vec::new();
    let mut stream_bytes = 0;
    for run in 0..a.runs {
        g.destroy_and_settle(&pool_b, &copy).await?;
        let started = Instant::now();
        let report = sent(
            c.replicate(&format!("tp-{run}"), full()?, &copy, None)
                .await?,
            "Tidepool's full send",
        )?;
        let tp_wall = started.elapsed();
        ensure!(
            report.bytes_sent == report.bytes_received,
            "sent {} but received {}",
            report.bytes_sent,
            report.bytes_received
        );
        ensure!(
            g.get("guid", &format!("{copy}@s")).await? == g.get("guid", &snapshot).await?,
            "the received snapshot's GUID differs from the source's"
        );
        stream_bytes = report.bytes_sent;

        g.destroy_and_settle(&pool_b, &copy).await?;
        let started = Instant::now();
        vm.command([
            "bash",
            "-c",
            "set -o pipefail; zfs send \"$1\" | zfs receive -u \"$2\"",
            "bench",
            &snapshot,
            &copy,
        ])
        .output_ok()
        .await?;
        let pipe_wall = started.elapsed();
        ensure!(
            g.get("guid", &format!("{copy}@s")).await? == g.get("guid", &snapshot).await?,
            "the bare pipe's snapshot GUID differs from the source's"
        );

        let (t, b) = (
            mib_per_s(stream_bytes, tp_wall),
            mib_per_s(stream_bytes, pipe_wall),
        );
        println!(
            "run {run}: tidepool {t:6.1} MiB/s ({:.2} s wall, {} ms in the agent) | bare pipe {b:6.1} MiB/s ({:.2} s)",
            tp_wall.as_secs_f64(),
            report.duration_ms,
            pipe_wall.as_secs_f64()
        );
        tidepool.push(t);
        bare.push(b);
    }
    g.destroy_and_settle(&pool_b, &copy).await?;
    let (tb, bb) = (best(&tidepool), best(&bare));
    let (tm, bm) = (median(tidepool), median(bare));
    println!();
    println!(
        "full stream of {} MiB of /dev/urandom ({stream_bytes} stream bytes), {} runs each, in the VM",
        a.mib, a.runs
    );
    println!("{:<48} {:>11} {:>11}", "", "best", "median");
    println!(
        "{:<48} {tb:>6.1} MiB/s {tm:>6.1} MiB/s",
        "tidepool (prepare + SendToPeer, TLS, no zstd)"
    );
    println!(
        "{:<48} {bb:>6.1} MiB/s {bm:>6.1} MiB/s",
        "zfs send | zfs receive -u (bare pipe)"
    );
    println!(
        "{:<48} {:>10.3}x {:>10.3}x   (goal >= 0.95x)",
        "ratio",
        tb / bb,
        tm / bm
    );
    println!();

    // --- 2. A cut at about half, then a resume from the target's token.
    let cut = format!("{pool_b}/replicas/cut");
    let target_bytes = || async {
        agent_b
            .metric_sum("tidepool_agent_transfer_bytes_total", "side=\"target\"")
            .await
    };
    let received_before = target_bytes().await?;
    let limit = a.cut_limit_mib << 20;
    // The borrow of `c` by the running call ends with this block.
    let (seen_at_cut, cut_answer) = {
        let sending = c.replicate("cut", full()?, &cut, Some(limit));
        let watch = async {
            let deadline = Instant::now() + Duration::from_secs(3600);
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let listed = c
                    .source
                    .call(&c.token, EPOCH, ListTransfers {})
                    .await
                    .map_err(|e| anyhow!("ListTransfers: {e:?}"))?;
                if let Some(t) = listed.transfers.first()
                    && t.bytes >= stream_bytes / 2
                {
                    return Ok::<u64, anyhow::Error>(t.bytes);
                }
                ensure!(
                    Instant::now() < deadline,
                    "the cut transfer never reached half"
                );
            }
        };
        tokio::pin!(sending);
        let seen_at_cut = tokio::select! {
            answer = &mut sending => bail!("the limited transfer ended before the cut: {:?}", answer?),
            seen = watch => seen?,
        };
        agent_a.stop().await?;
        (seen_at_cut, sending.await)
    };
    match &cut_answer {
        Ok(answer) => eprintln!("the source agent was killed; SendToPeer answered {answer:?}"),
        Err(e) => eprintln!("the source agent was killed; SendToPeer failed: {e:#}"),
    }

    // The target aborts its receive when the stream breaks; `-s` leaves the token.
    let deadline = Instant::now() + Duration::from_secs(120);
    let resume_token = loop {
        let idle = c
            .target
            .call(&c.token, EPOCH, ListTransfers {})
            .await
            .map_err(|e| anyhow!("ListTransfers on the target: {e:?}"))?
            .transfers
            .is_empty();
        let token = g
            .get("receive_resume_token", &cut)
            .await
            .unwrap_or_default();
        if idle && !token.is_empty() && token != "-" {
            break token;
        }
        ensure!(
            Instant::now() < deadline,
            "no resume token on {cut} within 120 s (target idle: {idle}, token: {token:?})\n{}",
            agent_b.log_tail(&vm).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let before_cut = (target_bytes().await? - received_before) as u64;

    agent_a.restart(&vm, cp, &spec_a).await?;
    let zn_a = agent_a.wait_registered(&vm, cp).await?;
    c.source = client_for(&zn_a, &agent_a)?;
    let resumed = sent(
        c.replicate(
            "cut-resume",
            TransferStream::Resume {
                token: name(&resume_token)?,
            },
            &cut,
            None,
        )
        .await?,
        "the resume step",
    )?;
    let guid_target = g.get("guid", &format!("{cut}@s")).await?;
    let guid_source = g.get("guid", &snapshot).await?;
    ensure!(
        guid_target == guid_source,
        "after the resume the target's @s has GUID {guid_target}, the source's {guid_source}"
    );
    let left_token = g.get("receive_resume_token", &cut).await?;
    ensure!(
        left_token == "-",
        "a resume token is left after the resume: {left_token}"
    );

    let resent = (before_cut + resumed.bytes_sent) as i64 - stream_bytes as i64;
    println!(
        "cut at about 50 % ({} MiB/s limit; the source's progress read {seen_at_cut} bytes before the kill)",
        a.cut_limit_mib
    );
    println!("{:<40} {:>14}", "total stream bytes", stream_bytes);
    println!(
        "{:<40} {:>14}  ({:.1} %)",
        "bytes before the cut (target wrote)",
        before_cut,
        100.0 * before_cut as f64 / stream_bytes as f64
    );
    println!(
        "{:<40} {:>14}  (estimate {:?})",
        "bytes sent by the resume", resumed.bytes_sent, resumed.estimated_bytes
    );
    println!(
        "{:<40} {:>14}  ({:.3} % of the stream; goal < 10 %)",
        "re-sent",
        resent,
        100.0 * resent as f64 / stream_bytes as f64
    );
    println!("{:<40} {:>14}", "GUID of @s, source = target", guid_source);
    Ok(())
}
