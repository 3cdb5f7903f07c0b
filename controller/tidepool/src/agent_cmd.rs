//! `tidepool agent`: the node agent (one per node, a DaemonSet). It serves the typed
//! operations over pinned TLS, registers and heartbeats its node's `ZfsNode`, and exposes
//! metrics and probes on a separate plain-HTTP port.

pub mod config;
pub mod http;
pub mod zfsnode;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tidepool_agent::inventory_cache::DEFAULT_FULL_EVERY;
use tidepool_agent::{AgentConfig, AgentMetrics, AuthConfig, NodeZfs, RunningAgent};
use tidepool_api::ZfsNode;
use tidepool_zfs::{Executor, LocalExecutor, Version};

use config::AgentSettings;
use zfsnode::NodeFacts;

/// OpenZFS 2.2 added `snapshots_changed`, which incremental inventories need.
const SNAPSHOTS_CHANGED_SINCE: Version = Version::new(2, 2, 0);

async fn kube_client(settings: &AgentSettings) -> anyhow::Result<kube::Client> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::incluster().context("in-cluster configuration")?,
    };
    kube::Client::try_from(config).context("building the kube client")
}

/// `tidepool agent ARGS`: logs to stderr (`RUST_LOG`, default `info`), runs until SIGTERM.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{}", config::USAGE);
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second initialisation (tests calling this twice) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(args))
}

/// Runs the agent until SIGTERM or Ctrl-C.
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let settings = AgentSettings::parse(args, |k| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!("{e}\n{}", config::USAGE))?;
    let client = kube_client(&settings).await?;
    let metrics = AgentMetrics::new()?;
    let exec: Arc<dyn Executor> = Arc::new(match &settings.zfs_bin_dir {
        Some(dir) => LocalExecutor::with_bin_dir(dir),
        None => LocalExecutor::new(),
    });
    // Measured like every other command: the node is built first, then asked.
    let probe = NodeZfs::new(
        exec.clone(),
        metrics.clone(),
        settings.pools.clone(),
        false,
        DEFAULT_FULL_EVERY,
    );
    let version = probe.zfs().version().await.context("zfs version")?;
    let incremental = version.effective() >= SNAPSHOTS_CHANGED_SINCE;
    let mut node = NodeZfs::new(
        exec,
        metrics.clone(),
        settings.pools.clone(),
        incremental,
        DEFAULT_FULL_EVERY,
    );
    let snapshots_by = if settings.snapshots_by_ioctl {
        match tidepool_lzc::Lzc::open() {
            Ok(lzc) => {
                node = node.with_ioctl_snapshots(Arc::new(lzc));
                "ioctl"
            }
            Err(e) => {
                tracing::warn!(error = %e, "snapshots fall back to the zfs command");
                "command"
            }
        }
    } else {
        "command"
    };
    let node = Arc::new(node);
    let mut auth = AuthConfig::for_controller(settings.controller.clone());
    auth.audience = settings.audience.clone();
    let agent = RunningAgent::start_with_zfs(
        AgentConfig {
            node_name: settings.node_name.clone(),
            listen: settings.listen,
            dataset_roots: settings.roots.clone(),
            auth,
        },
        client.clone(),
        Some(node.clone()),
    )
    .await
    .context("starting the agent's API")?;
    tracing::info!(
        node = %settings.node_name,
        listen = %agent.local_addr(),
        endpoint = %settings.endpoint,
        fingerprint = %agent.fingerprint(),
        zfs = %version.userland,
        incremental,
        snapshots_by,
        "agent serving"
    );

    let ready = Arc::new(AtomicBool::new(false));
    let probes = http::Probes {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let metrics_listen = settings.metrics_listen;
    let probe_task = tokio::spawn(async move { http::serve(metrics_listen, probes).await });

    let facts = NodeFacts {
        node_name: settings.node_name.clone(),
        endpoint: settings.endpoint.clone(),
        fingerprint: agent.fingerprint(),
        roots: settings.roots.clone(),
        version,
    };
    let api: Api<ZfsNode> = Api::all(client);
    let heartbeat = heartbeat_loop(api, facts, node, metrics, ready, settings.heartbeat);

    tokio::select! {
        () = heartbeat => Ok(()),
        served = probe_task => match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("serving {metrics_listen}"))),
            Err(e) => Err(anyhow::Error::new(e).context("the probe server")),
        },
        () = shutdown() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}

/// Publishes the ZfsNode at start and then at every heartbeat. A failed publish is logged
/// and tried again at the next beat (the API server may be briefly away); the agent keeps
/// serving meanwhile.
async fn heartbeat_loop(
    api: Api<ZfsNode>,
    facts: NodeFacts,
    node: Arc<NodeZfs>,
    metrics: AgentMetrics,
    ready: Arc<AtomicBool>,
    every: std::time::Duration,
) {
    let ready_since = jiff::Timestamp::now();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let published = async {
            let pools = zfsnode::pool_statuses(node.zfs(), &node, &metrics).await?;
            // The clock is read here, at the edge.
            let status = zfsnode::status(&facts, pools, jiff::Timestamp::now(), ready_since);
            zfsnode::publish(&api, &facts.node_name, &status).await
        };
        match published.await {
            Ok(()) => {
                ready.store(true, Ordering::Relaxed);
                tracing::debug!(node = %facts.node_name, "ZfsNode published");
            }
            Err(e) => {
                tracing::warn!(error = %anyhow::Error::new(e), "publishing the ZfsNode failed")
            }
        }
    }
}

async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
