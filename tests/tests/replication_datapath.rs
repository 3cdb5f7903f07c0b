//! The agent-to-agent replication data path on real OpenZFS: two agents in the VM, one
//! pool each (two simulated nodes), with the chart's RBAC and Pod-bound tokens. The test
//! plays the controller: it asks the target agent to `PrepareReceive` (and gets a one-time
//! ticket), then the source agent to `SendToPeer`; the source streams `zfs send` to the
//! target over TLS pinned to the target's published fingerprint, and the target pipes it
//! into exactly the receive it registered.
//!
//! One scenario, in steps (the agents own the VM's forwarded ports): a full stream, an
//! incremental with an intermediate (`-I`), GUIDs compared from fresh `zfs get` reads in
//! the guest; then the refusals, each leaving the target as it was: a replayed ticket, a
//! forged one, a ticket bound to another step, a source given the wrong fingerprint (which
//! sends nothing, so its ticket still works afterwards), a binding for another source
//! node, a receive outside the target's roots.

use std::time::Duration;

use tidepool_agent::transfer::peer;
use tidepool_agent::{
    AgentClient, CallError, CertificateFingerprint, DEFAULT_AUDIENCE, LeaderEpoch, RefusalReason,
};
use tidepool_api::ZfsNode;
use tidepool_tests::agents::{AgentSpec, GuestAgent};
use tidepool_tests::chart::{ChartRelease, Component};
use tidepool_tests::control_plane::ControlPlane;
use tidepool_tests::kubelet::{Audience, Kubelet};
use tidepool_tests::zfs_vm::ZfsVm;
use tidepool_wire::ReceiveOptions;
use tidepool_wire::SendFlags;
use tidepool_wire::operation::Owner;
use tidepool_wire::transfer::{
    IncrementalBase, ListTransfers, PeerTarget, PrepareReceive, PrepareReceiveAnswer, SendToPeer,
    SendToPeerAnswer, StepId, TransferBinding, TransferError, TransferProgress, TransferReport,
    TransferSide, TransferStream, TransferTicket, WireCompression,
};

const EPOCH: LeaderEpoch = LeaderEpoch(1);

fn ok<T>(result: anyhow::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e:#}"))
}

fn name<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Display,
{
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

async fn sh(vm: &ZfsVm, argv: &[&str]) -> String {
    ok(vm.exec_ok(argv.iter().copied()).await)
}

/// Every snapshot below `dataset` with its GUID, from a fresh `zfs get` in the guest.
async fn guids(vm: &ZfsVm, dataset: &str) -> Vec<(String, String)> {
    let listed = sh(
        vm,
        &[
            "zfs",
            "list",
            "-H",
            "-o",
            "name",
            "-t",
            "snapshot",
            "-s",
            "createtxg",
            "-d",
            "1",
            dataset,
        ],
    )
    .await;
    let mut out = Vec::new();
    for snapshot in listed.lines() {
        let guid = sh(
            vm,
            &["zfs", "get", "-H", "-p", "-o", "value", "guid", snapshot],
        )
        .await;
        let short = snapshot.split_once('@').map(|(_, s)| s).unwrap_or(snapshot);
        out.push((short.to_owned(), guid.trim().to_owned()));
    }
    out
}

/// The target's state as the refusals must leave it: snapshots, GUIDs, resume token.
async fn target_state(vm: &ZfsVm, dataset: &str) -> (Vec<(String, String)>, String) {
    let token = sh(
        vm,
        &[
            "zfs",
            "get",
            "-H",
            "-o",
            "value",
            "receive_resume_token",
            dataset,
        ],
    )
    .await;
    (guids(vm, dataset).await, token.trim().to_owned())
}

fn fingerprint_of(zn: &ZfsNode) -> CertificateFingerprint {
    name(
        zn.status
            .as_ref()
            .and_then(|s| s.tls_certificate_sha256.as_deref())
            .unwrap_or(""),
    )
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
    target_dataset: String,
}

impl Controller {
    fn binding(&self, step: &str) -> TransferBinding {
        TransferBinding {
            owner: self.owner.clone(),
            step: name::<StepId>(step),
            source_node: self.source_node.clone(),
        }
    }

    async fn prepare(&self, step: &str) -> TransferTicket {
        let op = PrepareReceive {
            receive: ReceiveOptions::new(name(&self.target_dataset)),
            binding: self.binding(step),
            stall_timeout_seconds: Some(30),
        };
        match self.target.call(&self.token, EPOCH, op).await {
            Ok(PrepareReceiveAnswer::Prepared(p)) => p.ticket,
            other => panic!("PrepareReceive {step}: {other:?}"),
        }
    }

    async fn send_with(
        &self,
        stream: TransferStream,
        ticket: TransferTicket,
        binding: TransferBinding,
        pin: CertificateFingerprint,
    ) -> SendToPeerAnswer {
        self.send_op(stream, ticket, binding, pin, WireCompression::None, None)
            .await
    }

    async fn send_op(
        &self,
        stream: TransferStream,
        ticket: TransferTicket,
        binding: TransferBinding,
        pin: CertificateFingerprint,
        compression: WireCompression,
        bandwidth_limit: Option<u64>,
    ) -> SendToPeerAnswer {
        let op = SendToPeer {
            stream,
            flags: SendFlags::default(),
            peer: PeerTarget {
                endpoint: self.target_endpoint.clone(),
                fingerprint: pin,
            },
            ticket,
            binding,
            compression,
            bandwidth_limit,
            stall_timeout_seconds: Some(30),
        };
        self.source
            .call(&self.token, EPOCH, op)
            .await
            .unwrap_or_else(|e| panic!("SendToPeer: {e:?}"))
    }

    async fn send(
        &self,
        stream: TransferStream,
        ticket: TransferTicket,
        step: &str,
    ) -> SendToPeerAnswer {
        self.send_with(stream, ticket, self.binding(step), self.target_pin)
            .await
    }
}

fn sent(answer: SendToPeerAnswer, what: &str) -> TransferReport {
    match answer {
        SendToPeerAnswer::Sent(report) => report,
        other => panic!("{what}: {other:?}"),
    }
}

fn refused_by_peer(answer: SendToPeerAnswer) -> (u16, String) {
    match answer {
        SendToPeerAnswer::Failed(TransferError::PeerRefused { status, reason, .. }) => {
            (status, reason)
        }
        other => panic!("expected the target to refuse the stream, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_replicate_to_each_other_with_one_time_tickets() {
    let cp = ControlPlane::shared().await;
    let vm = ok(ZfsVm::shared().await);
    let ns = ok(cp.create_namespace("datapath").await);
    let chart = ok(ChartRelease::install(cp, &ns, &ns).await);
    let agent_sa = ok(chart.service_account(Component::Agent)).to_owned();
    let controller_sa = ok(chart.service_account(Component::Controller)).to_owned();

    // Node A holds the source, node B the replicas.
    let pool_a = vm.unique_pool_name("dpsrc");
    let pool_b = vm.unique_pool_name("dpdst");
    ok(vm.create_pool(&pool_a, 512 << 20).await);
    ok(vm.create_pool(&pool_b, 512 << 20).await);
    let source = format!("{pool_a}/data/db");
    sh(vm, &["zfs", "create", "-p", &source]).await;
    sh(vm, &["zfs", "create", &format!("{pool_b}/replicas")]).await;
    sh(vm, &["zfs", "create", &format!("{pool_b}/other")]).await;
    let write = |file: &'static str, mib: u32| {
        let path = format!("/{source}/{file}");
        async move {
            sh(
                vm,
                &[
                    "dd",
                    "if=/dev/urandom",
                    &format!("of={path}"),
                    "bs=1M",
                    &format!("count={mib}"),
                    "status=none",
                ],
            )
            .await;
        }
    };
    let snap = |short: &'static str| {
        let s = format!("{source}@{short}");
        async move {
            sh(vm, &["zfs", "snapshot", &s]).await;
        }
    };
    write("one", 8).await;
    snap("s1").await;
    write("two", 2).await;
    snap("s2").await;
    write("three", 2).await;
    snap("s3").await;

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
    let agent_a = ok(GuestAgent::start(vm, cp, &spec(&node_a, &pool_a, "data", p1, p2)).await);
    let agent_b = ok(GuestAgent::start(vm, cp, &spec(&node_b, &pool_b, "replicas", p3, p4)).await);
    let zn_a = ok(agent_a.wait_registered(vm, cp).await);
    let zn_b = ok(agent_b.wait_registered(vm, cp).await);

    let controller_pod = ok(Kubelet::new(cp)
        .schedule_pod(&ns, "controller-0", &controller_sa, &node_a)
        .await);
    let token = ok(controller_pod
        .mint_token(
            cp,
            Audience::Named(DEFAULT_AUDIENCE),
            Duration::from_secs(3600),
        )
        .await);
    let client = |zn: &ZfsNode, agent: &GuestAgent| {
        AgentClient::new(&agent.endpoint.to_string(), fingerprint_of(zn))
            .unwrap_or_else(|e| panic!("{e}"))
            .with_timeout(Duration::from_secs(300))
    };
    let target_dataset = format!("{pool_b}/replicas/db");
    let c = Controller {
        token,
        source: client(&zn_a, &agent_a),
        target: client(&zn_b, &agent_b),
        owner: name(&format!("ReplicationPolicy/{ns}/db")),
        source_node: node_a.clone(),
        target_endpoint: format!("127.0.0.1:{p3}"),
        target_pin: fingerprint_of(&zn_b),
        target_dataset: target_dataset.clone(),
    };
    let at = |short: &str| name::<tidepool_api::SnapshotName>(&format!("{source}@{short}"));

    // --- A full stream of s1.
    let ticket = c.prepare("full-s1").await;
    let report = sent(
        c.send(
            TransferStream::Full { snapshot: at("s1") },
            ticket,
            "full-s1",
        )
        .await,
        "full send",
    );
    assert!(report.bytes_sent > 8 << 20, "{report:?}");
    assert_eq!(report.bytes_sent, report.bytes_received, "{report:?}");
    assert_eq!(
        report.wire_bytes, report.bytes_sent,
        "no compression: {report:?}"
    );
    let estimated = report.estimated_bytes.unwrap_or_default();
    assert!(
        estimated > 0 && estimated.abs_diff(report.bytes_sent) < report.bytes_sent / 5,
        "the -nP estimate is near the real size: {report:?}"
    );
    let src = guids(vm, &source).await;
    assert_eq!(guids(vm, &target_dataset).await, src[..1].to_vec());
    let mounted = sh(
        vm,
        &[
            "zfs",
            "get",
            "-H",
            "-o",
            "value",
            "mounted",
            &target_dataset,
        ],
    )
    .await;
    assert_eq!(mounted.trim(), "no", "a replica is received unmounted");

    // --- An incremental with its intermediate: `-I s1 s3` brings s2 and s3.
    let ticket = c.prepare("inc-s3").await;
    let used = ticket.clone();
    let report = sent(
        c.send(
            TransferStream::Incremental {
                base: IncrementalBase::Snapshot { name: at("s1") },
                to: at("s3"),
                intermediates: true,
            },
            ticket,
            "inc-s3",
        )
        .await,
        "incremental send",
    );
    assert!(report.bytes_sent > 4 << 20, "{report:?}");
    assert_eq!(report.bytes_sent, report.bytes_received, "{report:?}");
    assert_eq!(guids(vm, &target_dataset).await, guids(vm, &source).await);
    assert_eq!(guids(vm, &target_dataset).await.len(), 3);

    // --- From here on, every refusal must leave the target exactly as it is.
    write("four", 1).await;
    snap("s4").await;
    let s4_stream = || TransferStream::Incremental {
        base: IncrementalBase::Snapshot { name: at("s3") },
        to: at("s4"),
        intermediates: false,
    };
    let before = target_state(vm, &target_dataset).await;

    // A replayed ticket: the one the incremental used.
    let (status, reason) = refused_by_peer(c.send(s4_stream(), used, "inc-s3").await);
    assert_eq!((status, reason.as_str()), (401, "Unauthenticated"));
    assert_eq!(target_state(vm, &target_dataset).await, before);

    // A forged ticket, while a real one is outstanding.
    let outstanding = c.prepare("inc-s4").await;
    let forged = TransferTicket::from_bytes(rand_bytes());
    let (status, reason) = refused_by_peer(c.send(s4_stream(), forged.clone(), "inc-s4").await);
    assert_eq!((status, reason.as_str()), (401, "Unauthenticated"));
    // And straight from outside, with no agent in between: the route wants the ticket only.
    let direct = ok(peer::connect(&agent_b.endpoint.to_string(), c.target_pin)
        .await
        .map_err(anyhow::Error::from));
    let (status, _) = ok(direct
        .post_stream(
            &forged,
            &c.binding("inc-s4"),
            WireCompression::None,
            http_body_util::Full::new(hyper_bytes(b"not a zfs stream")),
        )
        .await
        .map_err(anyhow::Error::from));
    assert_eq!(status.as_u16(), 401);
    assert_eq!(target_state(vm, &target_dataset).await, before);

    // The wrong fingerprint (node A's own certificate): the source refuses to connect and
    // sends nothing, so the outstanding ticket is still unused.
    match c
        .send_with(
            s4_stream(),
            outstanding.clone(),
            c.binding("inc-s4"),
            fingerprint_of(&zn_a),
        )
        .await
    {
        SendToPeerAnswer::Failed(TransferError::PeerUnreachable { message }) => {
            assert!(message.contains("TLS handshake"), "{message}");
        }
        other => panic!("a source given the wrong fingerprint must refuse, got {other:?}"),
    }
    assert_eq!(target_state(vm, &target_dataset).await, before);
    // The same ticket, now with the right pin, is accepted once.
    let report = sent(
        c.send(s4_stream(), outstanding, "inc-s4").await,
        "the unused ticket after the pin refusal",
    );
    assert_eq!(report.bytes_sent, report.bytes_received);
    assert_eq!(guids(vm, &target_dataset).await, guids(vm, &source).await);

    write("five", 1).await;
    snap("s5").await;
    let s5_stream = || TransferStream::Incremental {
        base: IncrementalBase::Snapshot { name: at("s4") },
        to: at("s5"),
        intermediates: false,
    };
    let before = target_state(vm, &target_dataset).await;

    // A ticket bound to another step: refused, and burnt for its rightful step too.
    let ticket = c.prepare("inc-s5").await;
    let (status, reason) = refused_by_peer(c.send(s5_stream(), ticket.clone(), "other-step").await);
    assert_eq!((status, reason.as_str()), (403, "Forbidden"));
    let (status, _) = refused_by_peer(c.send(s5_stream(), ticket, "inc-s5").await);
    assert_eq!(status, 401);
    assert_eq!(target_state(vm, &target_dataset).await, before);

    // A binding naming another source node: agent A refuses before sending anything.
    let ticket = c.prepare("inc-s5").await;
    let mut elsewhere = c.binding("inc-s5");
    elsewhere.source_node = node_b.clone();
    match c
        .send_with(s5_stream(), ticket, elsewhere, c.target_pin)
        .await
    {
        SendToPeerAnswer::Failed(TransferError::InvalidRequest { .. }) => {}
        other => panic!("a binding for another source node must be refused, got {other:?}"),
    }
    assert_eq!(target_state(vm, &target_dataset).await, before);

    // A receive outside the target's roots: no ticket is minted.
    let outside = PrepareReceive {
        receive: ReceiveOptions::new(name(&format!("{pool_b}/other/db"))),
        binding: c.binding("outside"),
        stall_timeout_seconds: None,
    };
    match c.target.call(&c.token, EPOCH, outside).await {
        Err(CallError::Refused { status, refusal }) => {
            assert_eq!(
                (status.as_u16(), refusal.reason),
                (403, RefusalReason::OutsideRoots)
            );
        }
        other => panic!("a receive outside the roots must be refused, got {other:?}"),
    }
    let other = sh(
        vm,
        &[
            "zfs",
            "list",
            "-H",
            "-o",
            "name",
            "-r",
            &format!("{pool_b}/other"),
        ],
    )
    .await;
    assert_eq!(other.trim(), format!("{pool_b}/other"));

    // Nothing above broke the target: the last ticket still replicates s5.
    let ticket = c.prepare("inc-s5b").await;
    sent(c.send(s5_stream(), ticket, "inc-s5b").await, "s5");
    assert_eq!(guids(vm, &target_dataset).await, guids(vm, &source).await);

    // zstd on the wire and a bandwidth limit: 4 MiB of text (compressible; zeros would be
    // holes, absent from the stream) and 3 MiB of random bytes (not) at 2 MiB/s.
    let text: Vec<u8> = (0..4u32 << 20)
        .map(|i| b"tidepool replicates "[(i % 20) as usize])
        .collect();
    let out = ok(vm
        .command(["dd", &format!("of=/{source}/text"), "bs=1M", "status=none"])
        .output_with_stdin(&text)
        .await);
    assert!(out.status.success(), "{}", out.stderr_lossy());
    write("six", 3).await;
    snap("s6").await;
    let ticket = c.prepare("inc-s6").await;
    let limit = 2 << 20;
    let sending = c.send_op(
        TransferStream::Incremental {
            base: IncrementalBase::Snapshot { name: at("s5") },
            to: at("s6"),
            intermediates: false,
        },
        ticket,
        c.binding("inc-s6"),
        c.target_pin,
        WireCompression::Zstd,
        Some(limit),
    );
    // Progress while it runs, from both ends.
    let watching = async {
        let mut seen: [Option<TransferProgress>; 2] = [None, None];
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            for (i, agent) in [&c.source, &c.target].into_iter().enumerate() {
                let listed = agent
                    .call(&c.token, EPOCH, ListTransfers {})
                    .await
                    .unwrap_or_else(|e| panic!("ListTransfers: {e:?}"));
                if let Some(t) = listed.transfers.into_iter().find(|t| t.bytes > 0) {
                    seen[i] = Some(t);
                }
            }
            if seen.iter().all(Option::is_some) {
                break;
            }
        }
        seen
    };
    let (answer, [on_source, on_target]) = tokio::join!(sending, watching);
    let report = sent(answer, "s6 with zstd and a bandwidth limit");
    let on_source = on_source.unwrap_or_else(|| panic!("no progress seen on the source"));
    let on_target = on_target.unwrap_or_else(|| panic!("no progress seen on the target"));
    assert_eq!(on_source.step.as_str(), "inc-s6");
    assert_eq!(on_source.side, TransferSide::Source);
    assert_eq!(on_source.estimated_bytes, report.estimated_bytes);
    assert!(on_source.bytes <= report.bytes_sent, "{on_source:?}");
    assert_eq!(on_target.side, TransferSide::Target);
    assert!(on_target.bytes <= report.bytes_received, "{on_target:?}");
    eprintln!("progress mid-transfer: source {on_source:?}, target {on_target:?}");
    assert_eq!(report.bytes_sent, report.bytes_received, "{report:?}");
    assert!(
        report.wire_bytes < report.bytes_sent - (3 << 20),
        "the zeros compress: {report:?}"
    );
    // At 2 MiB/s, less the quarter second of burst the bucket starts with.
    let floor_ms = (report.wire_bytes.saturating_sub(limit / 4)) * 1000 / limit;
    assert!(
        report.duration_ms >= floor_ms,
        "{report:?}: faster than the limit allows ({floor_ms} ms)"
    );
    assert_eq!(guids(vm, &target_dataset).await, guids(vm, &source).await);
    eprintln!("s6 with zstd at 2 MiB/s: {report:?}");

    // Counted by the agents' own metrics, with bounded labels.
    assert_eq!(
        counted(&agent_a, &["side=\"source\"", "result=\"ok\""]).await,
        5.0
    );
    assert_eq!(
        counted(&agent_b, &["side=\"target\"", "result=\"ok\""]).await,
        5.0
    );
    assert!(counted(&agent_a, &["result=\"peerRefused\""]).await >= 4.0);
    let bytes =
        |agent: &'static str| format!("tidepool_agent_transfer_bytes_total{{side=\"{agent}\"}}");
    let (_, a) = ok(agent_a.probe("/metrics").await);
    let (_, b) = ok(agent_b.probe("/metrics").await);
    let value = |text: &str, series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in the metrics"))
    };
    // The source also read the beginnings of the streams the target refused.
    let (sent_bytes, received_bytes) = (value(&a, &bytes("source")), value(&b, &bytes("target")));
    assert!(
        received_bytes > 20 << 20 && sent_bytes >= received_bytes,
        "{sent_bytes} {received_bytes}"
    );
}

/// `tidepool_agent_transfers_total` samples whose labels contain every one of `labels`.
async fn counted(agent: &GuestAgent, labels: &[&str]) -> f64 {
    let (code, text) = ok(agent.probe("/metrics").await);
    assert_eq!(code, 200);
    text.lines()
        .filter(|l| l.starts_with("tidepool_agent_transfers_total{"))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// 32 bytes no agent minted (from the host's clock and address-space layout: a test
/// value, not a secret).
fn rand_bytes() -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

fn hyper_bytes(b: &'static [u8]) -> hyper::body::Bytes {
    hyper::body::Bytes::from_static(b)
}
