//! Two agents in this process on the host's loopback, their zfs replaced by
//! [`StreamExecutor`]: the transfer transport (tickets, pinned TLS, the stream route, the
//! pump, limits and watches) with nothing else in the way. Authentication is real: the
//! agents review the controller ServiceAccount's Pod-bound token with the real API server
//! (their own client is the admin's here; the VM tests prove the chart's RBAC suffices).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tidepool_agent::inventory_cache::DEFAULT_FULL_EVERY;
use tidepool_agent::{
    AgentClient, AgentConfig, AgentMetrics, AuthConfig, DEFAULT_AUDIENCE, DatasetRoots, NodeZfs,
    RunningAgent, ServiceAccountRef,
};
use tidepool_zfs::Executor;

use crate::chart::{ChartRelease, Component};
use crate::control_plane::ControlPlane;
use crate::kubelet::{Audience, Kubelet};
use crate::stream_exec::{SendShape, StreamExecutor};

/// Dataset roots of both agents (the fake zfs accepts any name).
pub const POOL: &str = "tank";

/// The pair, and a controller's way to call them.
pub struct HostPair {
    pub source: RunningAgent,
    pub target: RunningAgent,
    /// Node names (`<namespace>-a`, `-b`): several pairs may run at once.
    pub source_node: String,
    pub source_client: AgentClient,
    pub target_client: AgentClient,
    /// The controller ServiceAccount's Pod-bound token for the agents' audience.
    pub token: String,
    /// The target's executor: counts what its receives were given.
    pub target_exec: StreamExecutor,
}

async fn agent(
    cp: &ControlPlane,
    node: &str,
    controller: &ServiceAccountRef,
    exec: StreamExecutor,
) -> Result<RunningAgent> {
    let metrics = AgentMetrics::new()?;
    let exec: Arc<dyn Executor> = Arc::new(exec);
    let zfs = NodeZfs::new(
        exec,
        metrics,
        vec![POOL.parse()?],
        false,
        DEFAULT_FULL_EVERY,
    );
    let config = AgentConfig {
        node_name: node.to_owned(),
        listen: "127.0.0.1:0".parse()?,
        dataset_roots: DatasetRoots::new([POOL.parse()?]),
        auth: AuthConfig::for_controller(controller.clone()),
    };
    RunningAgent::start_with_zfs(config, cp.admin_client(), Some(Arc::new(zfs)))
        .await
        .with_context(|| format!("starting agent {node}"))
}

impl HostPair {
    /// Installs the chart's identities in a fresh namespace, mints the controller's token
    /// and starts both agents; the source's sends have `shape`.
    pub async fn start(cp: &ControlPlane, shape: SendShape) -> Result<Self> {
        let ns = cp.create_namespace("transport").await?;
        let chart = ChartRelease::install(cp, &ns, &ns).await?;
        let controller_sa = chart.service_account(Component::Controller)?.to_owned();
        let kubelet = Kubelet::new(cp);
        let source_node = format!("{ns}-a");
        let target_node = format!("{ns}-b");
        kubelet.register_node(&source_node).await?;
        let pod = kubelet
            .schedule_pod(&ns, "controller-0", &controller_sa, &source_node)
            .await?;
        let token = pod
            .mint_token(
                cp,
                Audience::Named(DEFAULT_AUDIENCE),
                Duration::from_secs(3600),
            )
            .await?;
        let controller = ServiceAccountRef {
            namespace: ns.clone(),
            name: controller_sa,
        };
        let target_exec = StreamExecutor::new(SendShape {
            bytes: 0,
            stall_after: None,
        });
        let source = agent(cp, &source_node, &controller, StreamExecutor::new(shape)).await?;
        let target = agent(cp, &target_node, &controller, target_exec.clone()).await?;
        let client = |a: &RunningAgent| {
            AgentClient::new(&a.local_addr().to_string(), a.fingerprint())
                .map(|c| c.with_timeout(Duration::from_secs(600)))
        };
        Ok(Self {
            source_client: client(&source)?,
            target_client: client(&target)?,
            source,
            target,
            source_node,
            token,
            target_exec,
        })
    }
}

/// How a [`HostPair::replicate`] runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransferOptions {
    pub compression: tidepool_wire::transfer::WireCompression,
    pub bandwidth_limit: Option<u64>,
    pub stall_timeout_seconds: Option<u32>,
}

impl HostPair {
    /// Plays the controller for one full stream of `tank/db@<step>` into `tank/replica`:
    /// `PrepareReceive` on the target, then `SendToPeer` on the source.
    pub async fn replicate(
        &self,
        step: &str,
        options: TransferOptions,
    ) -> Result<tidepool_wire::transfer::SendToPeerAnswer> {
        use tidepool_agent::LeaderEpoch;
        use tidepool_wire::transfer::{
            PeerTarget, PrepareReceive, PrepareReceiveAnswer, SendToPeer, TransferBinding,
            TransferStream,
        };
        let epoch = LeaderEpoch(1);
        let binding = TransferBinding {
            owner: "ReplicationPolicy/bench/db".parse()?,
            step: step.parse()?,
            source_node: self.source_node.clone(),
        };
        let prepared = self
            .target_client
            .call(
                &self.token,
                epoch,
                PrepareReceive {
                    receive: tidepool_wire::ReceiveOptions::new(format!("{POOL}/replica").parse()?),
                    binding: binding.clone(),
                    stall_timeout_seconds: options.stall_timeout_seconds,
                },
            )
            .await?;
        let PrepareReceiveAnswer::Prepared(prepared) = prepared else {
            anyhow::bail!("PrepareReceive: {prepared:?}");
        };
        let send = SendToPeer {
            stream: TransferStream::Full {
                snapshot: format!("{POOL}/db@{step}").parse()?,
            },
            flags: tidepool_wire::SendFlags::default(),
            peer: PeerTarget {
                endpoint: self.target.local_addr().to_string(),
                fingerprint: self.target.fingerprint(),
            },
            ticket: prepared.ticket,
            binding,
            compression: options.compression,
            bandwidth_limit: options.bandwidth_limit,
            stall_timeout_seconds: options.stall_timeout_seconds,
        };
        Ok(self.source_client.call(&self.token, epoch, send).await?)
    }
}
