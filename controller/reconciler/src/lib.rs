//! Tidepool's controller (layer 5 of DESIGN.md): one leader, elected on a Lease
//! ([`leader`]), reconciles `SnapshotSchedule`s ([`reconcile`]): it validates them,
//! resolves their nodes and checks the namespace's `DatasetGrant`s ([`resolve`]), asks
//! each node's agent ([`agents`]) for its inventory, takes the snapshots the planner says
//! are due and prunes what retention says ([`work`]), and reports status ([`status`]),
//! events and metrics ([`metrics`], served by [`http`]). It never runs zfs itself.

#![forbid(unsafe_code)]

pub mod agents;
pub mod checks;
pub mod deletion;
pub mod explain;
pub mod http;
pub mod inventories;
pub mod leader;
pub mod metrics;
pub mod node_run;
pub mod owner;
pub mod reasons;
pub mod reconcile;
pub mod replication;
pub mod resolve;
pub mod status;
pub mod triggers;
pub mod watches;
pub mod work;
pub mod writes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use kube::runtime::controller::{Config as ControllerSettings, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};
use tidepool_api::{DatasetGrant, ReplicationPolicy, SnapshotSchedule, ZfsNode};
use tokio::sync::watch;

use replication::triggers::{NewSnapshots, PolicyTrigger, PolicyTriggers, policy_refs};

pub use agents::{AgentEndpoint, AgentError, Agents, PinnedAgents};
pub use leader::LeaseConfig;
pub use reconcile::ReconcilerConfig;

/// Everything `tidepool controller` is configured with.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub lease: LeaseConfig,
    /// Reconcile the objects of this namespace only (all namespaces when `None`).
    pub watch_namespace: Option<String>,
    pub reconciler: ReconcilerConfig,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (not at all when `None`).
    pub http: Option<SocketAddr>,
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Election(#[from] leader::ElectionError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error("leadership ended")]
    LeadershipEnded,
    #[error("serving /metrics")]
    Http(#[source] std::io::Error),
}

/// Runs until `shutdown` completes (then gives the Lease up) or leadership is lost (an
/// error: the process should exit and start again as a candidate). Dropping the returned
/// future stops everything at once, as a crash would (the Lease then expires).
pub async fn run(
    client: Client,
    config: ControllerConfig,
    agents: Arc<dyn Agents>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let metrics = metrics::Metrics::new()?;
    let health = Arc::new(http::Health::default());
    let (leader_tx, leader_rx) = watch::channel(None);
    let shutdown = shutdown.shared();
    let explainer = explain::Explainer::new(client.clone(), config.lease.clone());

    let election = leader::run(client.clone(), config.lease.clone(), leader_tx, &health);
    let serve = {
        let metrics = metrics.clone();
        let health = health.clone();
        let addr = config.http;
        let explainer = explainer.clone();
        async move {
            match addr {
                Some(addr) => http::serve(addr, metrics, health, explainer).await,
                None => futures::future::pending().await,
            }
        }
    };
    let work = lead(
        client.clone(),
        &config,
        agents,
        metrics.clone(),
        leader_rx,
        &explainer,
    );
    tokio::select! {
        r = election => { metrics.is_leader.set(0); r?; Ok(()) }
        r = serve => r.map_err(RunError::Http),
        // `lead` returns only when leadership is lost.
        () = work => Err(RunError::LeadershipEnded),
        () = shutdown.clone() => {
            leader::release(client, &config.lease).await;
            Ok(())
        }
    }
}

/// Waits for leadership, then runs the controller while it lasts.
async fn lead(
    client: Client,
    config: &ControllerConfig,
    agents: Arc<dyn Agents>,
    metrics: metrics::Metrics,
    mut leader: watch::Receiver<Option<tidepool_agent::LeaderEpoch>>,
    explainer: &explain::Explainer,
) {
    if leader.wait_for(Option::is_some).await.is_err() {
        return;
    }
    metrics.is_leader.set(1);
    let schedules: Api<SnapshotSchedule> = match &config.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (zfs_nodes, zfs_writer) = reflector::store::<ZfsNode>();
    let (grants, grant_writer) = reflector::store::<DatasetGrant>();
    let zfs_stream = reflector::reflector(
        zfs_writer,
        watcher(
            Api::<ZfsNode>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff();
    let grant_stream = reflector::reflector(
        grant_writer,
        watcher(
            Api::<DatasetGrant>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff();
    // The store keeps every schedule for the controller's lifetime: without their
    // `managedFields` (the bulk of a small object, and never read here) 10,000 schedules
    // fit the memory goal.
    let (all3, schedule_writer) = reflector::store::<SnapshotSchedule>();
    let (policy_triggers, policy_trigger_rx) = PolicyTriggers::channel();
    let mut new_snapshots = NewSnapshots::default();
    let snapshot_triggers = policy_triggers.clone();
    let schedule_stream = reflector::reflector(
        schedule_writer,
        watcher(schedules, watcher::Config::default())
            .default_backoff()
            .modify(|o| o.managed_fields_mut().clear()),
    )
    .applied_objects()
    .inspect(move |applied| {
        if let Some(t) = applied
            .as_ref()
            .ok()
            .and_then(|s| new_snapshots.on_applied(s))
        {
            snapshot_triggers.send(t);
        }
    });
    let controller = Controller::for_stream(schedule_stream, all3.clone())
        // One object is never reconciled twice at once; many objects are.
        .with_config(ControllerSettings::default().concurrency(config.reconciler.concurrency));
    let ctx = Arc::new(reconcile::Context {
        client: client.clone(),
        agents,
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "tidepool-controller".into(),
                instance: Some(config.lease.identity.clone()),
            },
        ),
        metrics: metrics.clone(),
        epoch: leader.clone(),
        zfs_nodes: zfs_nodes.clone(),
        grants: grants.clone(),
        config: config.reconciler.clone(),
        inventories: inventories::Inventories::new(),
        status_memory: Default::default(),
        replication_memory: Default::default(),
    });
    // `explain` answers from this context while this replica leads.
    let _explaining = explainer.lead(ctx.clone());
    let ready_stores = {
        let (z, g) = (zfs_nodes.clone(), grants.clone());
        async move {
            // A reconcile before the stores are filled would see no ZfsNodes and no grants
            // and report false failures.
            let _ = z.wait_until_ready().await;
            let _ = g.wait_until_ready().await;
        }
        .shared()
    };
    // A ZfsNode or grant change re-queues only the schedules it can affect, and only when
    // it changed what they read (not a heartbeat); polling these streams also keeps the
    // two stores current.
    let node_triggers = watches::node_triggers(
        zfs_stream,
        all3.clone(),
        client.clone(),
        policy_triggers.clone(),
    );
    let grant_triggers = watches::grant_triggers(grant_stream, all3.clone(), policy_triggers);
    let ctx_for_policies = ctx.clone();
    let ready_policies = ready_stores.clone();
    let run = controller
        .reconcile_on(node_triggers)
        .reconcile_on(grant_triggers)
        .run(
            move |obj, ctx: Arc<reconcile::Context>| {
                let ready = ready_stores.clone();
                async move {
                    ready.await;
                    reconcile::reconcile(obj, ctx).await
                }
            },
            reconcile::error_policy,
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
        });
    let policies = replication_controller(
        client.clone(),
        config,
        ctx_for_policies,
        ready_policies,
        policy_trigger_rx,
    );
    let forget = forget_deleted(metrics, all3);
    let lost = leader.wait_for(Option::is_none).map(|_| ());
    tokio::select! {
        () = run => {}
        () = policies => {}
        () = lost => {}
        () = forget => {}
    }
}

/// The ReplicationPolicy controller: its own watch and queue, the same context (agents,
/// inventories, stores) as the schedules'.
async fn replication_controller(
    client: Client,
    config: &ControllerConfig,
    ctx: Arc<reconcile::Context>,
    ready: futures::future::Shared<impl Future<Output = ()> + Send + 'static>,
    triggers: tokio::sync::mpsc::UnboundedReceiver<PolicyTrigger>,
) {
    let policies: Api<ReplicationPolicy> = match &config.watch_namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    // Only spec changes (a new generation) wake a policy, not its own status writes: a
    // failing sync writes its failure count, and that write must not start the next
    // attempt at once (the retry interval does). Requeues still come as asked.
    let (store, writer) = reflector::store::<ReplicationPolicy>();
    let stream = reflector::reflector(
        writer,
        watcher(policies, watcher::Config::default()).default_backoff(),
    )
    .applied_objects()
    .predicate_filter(
        kube::runtime::predicates::generation,
        kube::runtime::PredicateConfig::default(),
    );
    let controller = Controller::for_stream(stream, store.clone())
        .with_config(ControllerSettings::default().concurrency(config.reconciler.concurrency));
    let metrics = ctx.metrics.clone();
    let run = controller
        .reconcile_on(policy_refs(triggers, store.clone()))
        .run(
            move |obj, ctx: Arc<reconcile::Context>| {
                let ready = ready.clone();
                async move {
                    ready.await;
                    replication::reconcile(obj, ctx).await
                }
            },
            replication::error_policy,
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "replication controller event");
            }
        });
    // A deleted policy is not reconciled again: its series go here.
    let forget = async move {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            for (ns, name) in metrics.replication_objects() {
                if store.get(&ObjectRef::new(&name).within(&ns)).is_none() {
                    metrics.forget_replication(&ns, &name);
                }
            }
        }
    };
    tokio::select! {
        () = run => {}
        () = forget => {}
    }
}

/// Removes the per-object series of objects that are gone (an object with `Retain` has no
/// finalizer, so no reconcile sees its deletion).
async fn forget_deleted(metrics: metrics::Metrics, store: reflector::Store<SnapshotSchedule>) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        for (ns, name) in metrics.objects() {
            if store.get(&ObjectRef::new(&name).within(&ns)).is_none() {
                metrics.forget(&ns, &name);
            }
        }
    }
}
