//! A release of the chart as the end-to-end tests, benches and the demo use it: the
//! controller's Pod-bound identities (one per replica), agents in the VM with the chart's
//! agent ServiceAccount, a DatasetGrant, and helpers to wait for status and events.
//! Controllers run in the calling process through the library's `run`, each with a kube
//! client built from its Pod's kubeconfig: the chart's controller ServiceAccount, never the
//! admin. The admin only plays the user (schedules, grants) and reads.
//!
//! The helpers panic with the whole error chain: they are for tests and the demo, where a
//! failed step ends the run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::agents::{AgentSpec, GuestAgent};
use crate::chart::{ChartRelease, Component};
use crate::control_plane::ControlPlane;
use crate::kubelet::{Audience, Kubelet, MIN_TOKEN_LIFETIME, PodIdentity};
use crate::zfs_vm::ZfsVm;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use tidepool_api::condition::{find, kind};
use tidepool_api::{DatasetGrant, SnapshotSchedule};
use tidepool_reconciler::{ControllerConfig, LeaseConfig, PinnedAgents, ReconcilerConfig};

/// The product's agent-call timeout (`tidepool controller`): a prune of many snapshots on
/// an emulated node takes seconds, and a shorter one would cut it off.
pub const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the test controllers' deletion waits for an unreachable node.
pub const DELETE_GIVE_UP: Duration = Duration::from_secs(8);

pub fn ok<T>(result: anyhow::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e:#}"))
}

/// One controller replica as the harness plays it: a Pod of the chart's controller
/// ServiceAccount, its API identity and its token for the agents' audience.
pub struct Replica {
    pub name: String,
    pub identity: PodIdentity,
    pub agent_token: PathBuf,
    _dir: tempfile::TempDir,
}

pub struct Release {
    pub cp: &'static ControlPlane,
    pub chart: ChartRelease,
    pub ns: String,
    pub node: String,
}

impl Release {
    pub async fn install(prefix: &str) -> Self {
        let cp = ControlPlane::shared().await;
        let ns = ok(cp.create_namespace(prefix).await);
        let chart = ok(ChartRelease::install(cp, &ns, &ns).await);
        let node = format!("{ns}-node-a");
        ok(Kubelet::new(cp).register_node(&node).await);
        Self {
            cp,
            chart,
            ns,
            node,
        }
    }

    pub async fn replica(&self, name: &str) -> Replica {
        let sa = ok(self.chart.service_account(Component::Controller)).to_owned();
        let pod = ok(Kubelet::new(self.cp)
            .schedule_pod(&self.ns, name, &sa, &self.node)
            .await);
        let identity = ok(pod.api_identity(self.cp).await);
        let token = ok(pod
            .mint_token(
                self.cp,
                Audience::Named("tidepool-agent"),
                MIN_TOKEN_LIFETIME,
            )
            .await);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let agent_token = dir.path().join("agent-token");
        std::fs::write(&agent_token, token).unwrap_or_else(|e| panic!("{e}"));
        Replica {
            name: name.to_owned(),
            identity,
            agent_token,
            _dir: dir,
        }
    }

    /// The spec of an agent for node `{ns}-{suffix}` serving `pools` under `roots`, on the
    /// `slot`th pair of the VM's forwarded agent ports (two agents per default VM).
    pub fn agent_spec(
        &self,
        suffix: &str,
        pools: &[&str],
        roots: &[&str],
        slot: usize,
    ) -> AgentSpec {
        let ports = ZfsVm::AGENT_PORTS;
        let (api_port, metrics_port) = (ports[2 * slot], ports[2 * slot + 1]);
        let controller_sa = ok(self.chart.service_account(Component::Controller));
        AgentSpec {
            node: format!("{}-{suffix}", self.ns),
            namespace: self.ns.clone(),
            agent_service_account: ok(self.chart.service_account(Component::Agent)).to_owned(),
            controller_service_account: format!("{}/{controller_sa}", self.ns),
            pools: pools.iter().map(|p| (*p).to_owned()).collect(),
            dataset_roots: roots.iter().map(|r| (*r).to_owned()).collect(),
            api_port,
            metrics_port,
            heartbeat: "5s".to_owned(),
        }
    }

    /// Starts an agent in the VM and waits until its ZfsNode is published.
    pub async fn start_agent(&self, vm: &ZfsVm, spec: &AgentSpec) -> GuestAgent {
        let agent = ok(GuestAgent::start(vm, self.cp, spec).await);
        ok(agent.wait_registered(vm, self.cp).await);
        agent
    }

    /// Grants `namespaces` the `datasets` (a cluster-scoped DatasetGrant, as an admin would).
    pub async fn grant(&self, name: &str, namespaces: &[&str], datasets: &[&str]) {
        let grant: DatasetGrant = serde_json::from_value(json!({
            "apiVersion": "tidepool.dev/v1alpha1", "kind": "DatasetGrant",
            "metadata": {"name": name},
            "spec": {"namespaces": namespaces, "datasets": datasets},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        Api::<DatasetGrant>::all(self.cp.admin_client())
            .create(&PostParams::default(), &grant)
            .await
            .unwrap_or_else(|e| panic!("creating grant {name}: {e}"));
    }

    pub fn lease_name(&self) -> String {
        ok(self.chart.controller_lease_name()).to_owned()
    }

    /// Starts a replica as a task; aborting the handle is a crash (no Lease release). Agent
    /// calls time out after [`AGENT_CALL_TIMEOUT`], as `tidepool controller`'s do.
    pub async fn start(
        &self,
        replica: &Replica,
        watch_namespace: Option<String>,
    ) -> tokio::task::JoinHandle<()> {
        let agents = PinnedAgents::new(replica.agent_token.clone(), AGENT_CALL_TIMEOUT);
        self.start_with(replica, watch_namespace, agents).await
    }

    /// Starts a replica that reaches agents through `agents`.
    pub async fn start_with(
        &self,
        replica: &Replica,
        watch_namespace: Option<String>,
        agents: Arc<dyn tidepool_reconciler::Agents>,
    ) -> tokio::task::JoinHandle<()> {
        self.start_configured(replica, watch_namespace, agents, test_reconciler_config())
            .await
    }

    /// Starts a replica with its own reconciler settings.
    pub async fn start_configured(
        &self,
        replica: &Replica,
        watch_namespace: Option<String>,
        agents: Arc<dyn tidepool_reconciler::Agents>,
        reconciler: ReconcilerConfig,
    ) -> tokio::task::JoinHandle<()> {
        self.spawn_replica(replica, watch_namespace, agents, reconciler, None)
            .await
    }

    /// Starts a replica that also serves its HTTP port (`/metrics`, the explain route) on
    /// `http`, as `tidepool controller --http` does.
    pub async fn start_serving(
        &self,
        replica: &Replica,
        watch_namespace: Option<String>,
        http: std::net::SocketAddr,
    ) -> tokio::task::JoinHandle<()> {
        let agents = PinnedAgents::new(replica.agent_token.clone(), AGENT_CALL_TIMEOUT);
        self.start_serving_with(
            replica,
            watch_namespace,
            agents,
            test_reconciler_config(),
            http,
        )
        .await
    }

    /// [`Release::start_serving`] with agents reached through `agents`.
    pub async fn start_serving_with(
        &self,
        replica: &Replica,
        watch_namespace: Option<String>,
        agents: Arc<dyn tidepool_reconciler::Agents>,
        reconciler: ReconcilerConfig,
        http: std::net::SocketAddr,
    ) -> tokio::task::JoinHandle<()> {
        self.spawn_replica(replica, watch_namespace, agents, reconciler, Some(http))
            .await
    }

    async fn spawn_replica(
        &self,
        replica: &Replica,
        watch_namespace: Option<String>,
        agents: Arc<dyn tidepool_reconciler::Agents>,
        reconciler: ReconcilerConfig,
        http: Option<std::net::SocketAddr>,
    ) -> tokio::task::JoinHandle<()> {
        let client = ok(replica.identity.client().await);
        let mut lease = LeaseConfig::new(self.ns.clone(), self.lease_name(), replica.name.clone());
        lease.retry_period = Duration::from_secs(1);
        let config = ControllerConfig {
            lease,
            watch_namespace,
            reconciler,
            http,
        };
        let name = replica.name.clone();
        tokio::spawn(async move {
            let r =
                tidepool_reconciler::run(client, config, agents, futures::future::pending()).await;
            eprintln!("controller {name} stopped: {r:?}");
        })
    }
}

/// The reconciler settings tests use: quick retries, a short give-up on deletion.
pub fn test_reconciler_config() -> ReconcilerConfig {
    ReconcilerConfig {
        retry: Duration::from_secs(2),
        // Short, so the test sees a deletion give up on an unreachable node.
        delete_give_up: DELETE_GIVE_UP,
        replication_poll: Duration::from_secs(2),
        ..ReconcilerConfig::default()
    }
}

/// Creates a SnapshotSchedule from JSON as the admin (a user would).
pub async fn create_schedule(cp: &ControlPlane, ns: &str, name: &str, spec: serde_json::Value) {
    let obj: SnapshotSchedule = serde_json::from_value(json!({
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "SnapshotSchedule",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    Api::<SnapshotSchedule>::namespaced(cp.admin_client(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {ns}/{name}: {e}"));
}

/// Waits until the schedule's Ready condition has `status` and `reason`; returns it.
pub async fn wait_ready(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    status: &str,
    reason: &str,
    within: Duration,
) -> SnapshotSchedule {
    let api = Api::<SnapshotSchedule>::namespaced(cp.admin_client(), ns);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let obj = api.get(name).await.unwrap_or_else(|e| panic!("{e}"));
        let ready = obj
            .status
            .as_ref()
            .and_then(|s| find(&s.conditions, kind::READY))
            .map(|c| (c.status.clone(), c.reason.clone()));
        if ready.as_ref().map(|(s, r)| (s.as_str(), r.as_str())) == Some((status, reason)) {
            return obj;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{ns}/{name}: Ready is {ready:?}, not ({status}, {reason}) after {within:?}; status {:?}",
                obj.status
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The events about `name` in `ns` (events.k8s.io/v1, as kube's recorder writes them).
pub async fn events_about(cp: &ControlPlane, ns: &str, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(cp.admin_client(), ns)
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// Waits for an event about `name` with this type and reason.
pub async fn wait_event(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    type_: &str,
    reason: &str,
    within: Duration,
) -> Event {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let events = events_about(cp, ns, name).await;
        if let Some(e) = events
            .iter()
            .find(|e| e.type_.as_deref() == Some(type_) && e.reason.as_deref() == Some(reason))
        {
            return e.clone();
        }
        if tokio::time::Instant::now() > deadline {
            let seen: Vec<_> = events
                .iter()
                .map(|e| (e.type_.clone(), e.reason.clone()))
                .collect();
            panic!("no {type_} {reason} event about {ns}/{name} within {within:?}; seen {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
