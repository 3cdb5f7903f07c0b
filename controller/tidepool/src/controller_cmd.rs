//! `tidepool controller`: parses flags, builds the clients and runs the reconciler library
//! until SIGTERM/SIGINT (then the Lease is given up so a standby takes over at once).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tidepool_reconciler::{ControllerConfig, LeaseConfig, PinnedAgents, ReconcilerConfig};

pub const USAGE: &str = "usage: tidepool controller [flags]

  --lease-namespace NS     namespace of the leader-election Lease (env POD_NAMESPACE)
  --lease-name NAME        the Lease (default tidepool-controller)
  --identity ID            this replica's identity (default: env POD_NAME, then the host
                           name, plus the process id)
  --namespace NS           reconcile objects of this namespace only (default: all)
  --agent-token-file PATH  projected ServiceAccount token for the agents' audience
                           (default /var/run/secrets/tidepool/agent-token)
  --http ADDR              serve /metrics, /healthz, /readyz and the explain route of
                           `tidepool explain` here (default 0.0.0.0:8080; `none` to disable)
  --delete-give-up SECS    how long deletion waits for an unreachable node (default 3600)
  --replication-poll SECS  how often a ReplicationPolicy without a schedule looks for new
                           source snapshots (default 30)

The API server is reached through KUBECONFIG or the in-cluster configuration.";

struct Flags {
    lease_namespace: Option<String>,
    lease_name: String,
    identity: Option<String>,
    namespace: Option<String>,
    agent_token_file: PathBuf,
    http: Option<std::net::SocketAddr>,
    delete_give_up: Duration,
    replication_poll: Duration,
}

fn parse(args: &[String]) -> anyhow::Result<Flags> {
    let mut f = Flags {
        lease_namespace: std::env::var("POD_NAMESPACE").ok(),
        lease_name: "tidepool-controller".into(),
        identity: None,
        namespace: None,
        agent_token_file: "/var/run/secrets/tidepool/agent-token".into(),
        http: Some(([0, 0, 0, 0], 8080).into()),
        delete_give_up: Duration::from_secs(3600),
        replication_poll: ReconcilerConfig::default().replication_poll,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--lease-namespace" => f.lease_namespace = Some(value()?),
            "--lease-name" => f.lease_name = value()?,
            "--identity" => f.identity = Some(value()?),
            "--namespace" => f.namespace = Some(value()?),
            "--agent-token-file" => f.agent_token_file = value()?.into(),
            "--http" => {
                let v = value()?;
                f.http = if v == "none" {
                    None
                } else {
                    Some(v.parse().with_context(|| format!("--http {v}"))?)
                };
            }
            "--delete-give-up" => {
                let v = value()?;
                f.delete_give_up = Duration::from_secs(
                    v.parse().with_context(|| format!("--delete-give-up {v}"))?,
                );
            }
            "--replication-poll" => {
                let v = value()?;
                f.replication_poll = Duration::from_secs(
                    v.parse()
                        .with_context(|| format!("--replication-poll {v}"))?,
                );
            }
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    Ok(f)
}

/// Runs the controller (blocking: it owns its tokio runtime).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let flags = parse(args)?;
    let lease_namespace = flags
        .lease_namespace
        .context("--lease-namespace (or POD_NAMESPACE) is required")?;
    let identity = match flags.identity {
        Some(i) => i,
        None => {
            let base = std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| "tidepool-controller".into());
            format!("{base}-{}", std::process::id())
        }
    };
    let config = ControllerConfig {
        lease: LeaseConfig::new(lease_namespace, flags.lease_name, identity),
        watch_namespace: flags.namespace,
        reconciler: ReconcilerConfig {
            delete_give_up: flags.delete_give_up,
            replication_poll: flags.replication_poll,
            ..ReconcilerConfig::default()
        },
        http: flags.http,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .try_init()
            .ok();
        let client = kube::Client::try_default()
            .await
            .context("connecting to the API server")?;
        let agents = PinnedAgents::new(flags.agent_token_file, Duration::from_secs(60));
        tidepool_reconciler::run(client, config, agents, shutdown_signal())
            .await
            .context("the controller stopped")
    })
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
