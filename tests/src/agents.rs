//! Runs `tidepool agent` processes inside the OpenZFS VM, one per simulated node, each
//! owning its own pool, as the chart's agent DaemonSet would on real nodes.
//!
//! - The binary is the host-built `tidepool` (built here with the host's cargo if needed),
//!   run from the VM's read-only 9p share of the cargo target dir (same glibc).
//! - Identity: the harness plays the kubelet ([`crate::kubelet`]): a Node, a Pod of the
//!   chart's agent ServiceAccount bound to it, and a Pod-bound token written into the guest
//!   with a kubeconfig whose user reads it (`tokenFile`) and whose server is the host's
//!   apiserver as the guest sees it (`https://10.0.2.2:<port>`, a SAN of its certificate).
//! - Network: the agent listens on a guest port that qemu forwards to 127.0.0.1 on the
//!   host ([`ZfsVm::AGENT_PORTS`]) and advertises that host address, so the tests (playing
//!   the controller) reach it exactly as published in its `ZfsNode`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use kube::Api;
use kube::config::Kubeconfig;
use tidepool_api::ZfsNode;

use crate::control_plane::{ControlPlane, repo_root};
use crate::kubelet::{Audience, Kubelet, ScheduledPod};
use crate::zfs_vm::{RemoteChild, ZfsVm, host_target_dir};

/// How long an agent may take from start to a published `ZfsNode` (TCG is slow).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(90);

/// The agent in the guest is built as the harness is: a benchmark run with `--release`
/// measures the agent users run, not a debug build under emulation.
const PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

/// Builds the `tidepool` binary into the host target dir (a no-op when current) and
/// returns its path in the guest.
pub fn tidepool_binary_in_guest(vm: &ZfsVm) -> Result<PathBuf> {
    let host = tidepool_binary()?;
    vm.guest_path(&host)
        .ok_or_else(|| anyhow!("{} is not under the VM's host share", host.display()))
}

/// Builds the `tidepool` binary into the host target dir (a no-op when current; once per
/// test process) and returns its path on the host.
pub fn tidepool_binary() -> Result<PathBuf> {
    static BUILT: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        // Cargo sets these for the test process. Build scripts watch some of them
        // (`rerun-if-env-changed=CARGO_PKG_NAME` in ring), so passing them on would make
        // this build and the next ordinary one rebuild each other's dependencies.
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            let set_for_tests = ["CARGO_PKG_", "CARGO_BIN_EXE_"]
                .iter()
                .any(|p| key_text.starts_with(p))
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_MANIFEST_LINKS",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&key_text.as_ref());
            if set_for_tests {
                build.env_remove(&key);
            }
        }
        let mut args = vec!["build", "-p", "tidepool", "--bin", "tidepool"];
        if PROFILE == "release" {
            args.push("--release");
        }
        let status = build
            .args(args)
            .env("CARGO_TARGET_DIR", host_target_dir())
            .current_dir(repo_root())
            .status()
            .map_err(|e| format!("running cargo build: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("cargo build -p tidepool failed: {status}"))
        }
    });
    built.clone().map_err(|e| anyhow!(e))?;
    Ok(host_target_dir().join(PROFILE).join("tidepool"))
}

/// One agent to start.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Node name (and ZfsNode name).
    pub node: String,
    /// The namespace of the chart release (its ServiceAccounts live there).
    pub namespace: String,
    /// The chart's agent ServiceAccount.
    pub agent_service_account: String,
    /// `namespace/name` of the only caller the agent admits.
    pub controller_service_account: String,
    pub pools: Vec<String>,
    pub dataset_roots: Vec<String>,
    /// Guest ports (forwarded by the VM) for the API and for metrics.
    pub api_port: u16,
    pub metrics_port: u16,
    /// `--heartbeat`, e.g. `5s`.
    pub heartbeat: String,
}

/// A running agent in the guest; dropping it kills the process.
pub struct GuestAgent {
    pub node: String,
    /// The endpoint it advertises (host side of the forward).
    pub endpoint: SocketAddr,
    /// Its plain-HTTP metrics/probe address, host side.
    pub metrics: SocketAddr,
    pub pod: ScheduledPod,
    /// The Pod-bound token the agent uses (tests reuse it to act as this agent).
    pub api_token: String,
    child: RemoteChild,
    guest_dir: String,
    env: Vec<(String, String)>,
}

impl std::fmt::Debug for GuestAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestAgent")
            .field("node", &self.node)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

async fn write_guest_file(vm: &ZfsVm, path: &str, contents: &[u8]) -> Result<()> {
    let out = vm
        .command(["dd", &format!("of={path}"), "status=none"])
        .output_with_stdin(contents)
        .await?;
    out.check(&["dd".to_owned(), path.to_owned()])
        .with_context(|| format!("writing {path} in the guest"))
}

impl GuestAgent {
    /// Registers the node, schedules the agent's Pod, writes its identity into the guest
    /// and starts `tidepool agent` there. Returns once the process runs; see
    /// [`Self::wait_registered`].
    pub async fn start(vm: &ZfsVm, cp: &ControlPlane, spec: &AgentSpec) -> Result<Self> {
        Self::start_with_env(vm, cp, spec, Vec::new()).await
    }

    /// [`Self::start`] with environment variables for the process, as a DaemonSet's `env`
    /// sets them (the flags `spec` makes still win; a restart keeps them).
    pub async fn start_with_env(
        vm: &ZfsVm,
        cp: &ControlPlane,
        spec: &AgentSpec,
        env: Vec<(String, String)>,
    ) -> Result<Self> {
        let binary = tidepool_binary_in_guest(vm)?;
        let kubelet = Kubelet::new(cp);
        kubelet.register_node(&spec.node).await?;
        let pod = kubelet
            .schedule_pod(
                &spec.namespace,
                &format!("agent-{}", spec.node),
                &spec.agent_service_account,
                &spec.node,
            )
            .await?;
        let api_token = pod
            .mint_token(cp, Audience::ApiServer, Duration::from_secs(3600))
            .await?;

        let admin = Kubeconfig::read_from(cp.kubeconfig_path())?;
        let cluster = admin
            .clusters
            .first()
            .and_then(|c| c.cluster.clone())
            .ok_or_else(|| anyhow!("the admin kubeconfig names no cluster"))?;
        let ca_path = cluster
            .certificate_authority
            .ok_or_else(|| anyhow!("the admin kubeconfig has no CA file"))?;
        let ca = std::fs::read(&ca_path).with_context(|| format!("reading {ca_path}"))?;
        let server = cluster
            .server
            .ok_or_else(|| anyhow!("the admin kubeconfig has no server"))?;
        let port = server
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| anyhow!("no port in {server}"))?;
        let guest_server = format!("https://{}:{port}", ZfsVm::HOST_FROM_GUEST);

        let guest_dir = format!("/run/tidepool-agents/{}", spec.node);
        vm.exec_ok(["mkdir", "-p", &guest_dir]).await?;
        let token_file = format!("{guest_dir}/token");
        let ca_file = format!("{guest_dir}/ca.crt");
        let kubeconfig_file = format!("{guest_dir}/kubeconfig");
        write_guest_file(vm, &token_file, api_token.as_bytes()).await?;
        write_guest_file(vm, &ca_file, &ca).await?;
        let user = format!("{}/{}", spec.namespace, pod.name);
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "tidepool-test",
                           "cluster": { "server": guest_server, "certificate-authority": ca_file } }],
            "users": [{ "name": user, "user": { "tokenFile": token_file } }],
            "contexts": [{ "name": user, "context": { "cluster": "tidepool-test", "user": user } }],
            "current-context": user,
        });
        write_guest_file(
            vm,
            &kubeconfig_file,
            serde_json::to_string_pretty(&kubeconfig)?.as_bytes(),
        )
        .await?;

        let endpoint = vm
            .forwarded_addr(spec.api_port)
            .ok_or_else(|| anyhow!("guest port {} is not forwarded", spec.api_port))?;
        let metrics = vm
            .forwarded_addr(spec.metrics_port)
            .ok_or_else(|| anyhow!("guest port {} is not forwarded", spec.metrics_port))?;
        let child = launch(vm, &binary, spec, &guest_dir, endpoint, &env).await?;
        Ok(Self {
            node: spec.node.clone(),
            endpoint,
            metrics,
            pod,
            api_token,
            child,
            guest_dir,
            env,
        })
    }

    /// Kills the agent's process (SIGKILL, as a node crash would), leaving its Node, Pod,
    /// token and `ZfsNode` as they are. [`Self::restart`] starts it again.
    pub async fn stop(&mut self) -> Result<()> {
        self.child.kill().await.map(drop)
    }

    /// Kills the agent if it runs and starts it again with `spec` (same node, Pod and
    /// token; the flags, e.g. `dataset_roots`, may differ), then waits until its
    /// `ZfsNode` is published again. An admin changing an agent's flags restarts it so.
    pub async fn restart(&mut self, vm: &ZfsVm, cp: &ControlPlane, spec: &AgentSpec) -> Result<()> {
        if spec.node != self.node {
            bail!("restarting {}'s agent as {}", self.node, spec.node);
        }
        let fingerprint = |n: &ZfsNode| {
            n.status
                .as_ref()
                .and_then(|s| s.tls_certificate_sha256.clone())
        };
        let before = Api::<ZfsNode>::all(cp.admin_client())
            .get_opt(&self.node)
            .await?
            .and_then(|n| fingerprint(&n));
        self.stop().await?;
        let binary = tidepool_binary_in_guest(vm)?;
        self.child = launch(vm, &binary, spec, &self.guest_dir, self.endpoint, &self.env).await?;
        // Each start makes a new certificate: published once the fingerprint moved.
        let deadline = Instant::now() + REGISTER_TIMEOUT;
        loop {
            let node = self.wait_registered(vm, cp).await?;
            if fingerprint(&node) != before {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the restarted agent of {} did not publish its new certificate within {REGISTER_TIMEOUT:?}:\n{}",
                    self.node,
                    self.log_tail(vm).await
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until the agent's ZfsNode carries its endpoint and a fingerprint; returns it.
    pub async fn wait_registered(&self, vm: &ZfsVm, cp: &ControlPlane) -> Result<ZfsNode> {
        let nodes: Api<ZfsNode> = Api::all(cp.admin_client());
        let deadline = Instant::now() + REGISTER_TIMEOUT;
        loop {
            if let Some(n) = nodes.get_opt(&self.node).await?
                && n.status.as_ref().is_some_and(|s| {
                    s.endpoint.as_deref() == Some(self.endpoint.to_string().as_str())
                        && s.tls_certificate_sha256.is_some()
                })
            {
                return Ok(n);
            }
            if !self.is_running(vm).await {
                bail!(
                    "the agent of {} exited:\n{}",
                    self.node,
                    self.log_tail(vm).await
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent of {} did not register within {REGISTER_TIMEOUT:?}:\n{}",
                    self.node,
                    self.log_tail(vm).await
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Whether the agent's process is still alive in the guest.
    pub async fn is_running(&self, vm: &ZfsVm) -> bool {
        vm.exec(["kill", "-0", &self.child.id().to_string()])
            .await
            .is_ok_and(|o| o.status.success())
    }

    /// The last lines of the agent's log in the guest.
    pub async fn log_tail(&self, vm: &ZfsVm) -> String {
        vm.exec(["tail", "-n", "60", &format!("{}/agent.log", self.guest_dir)])
            .await
            .map(|o| o.stdout_lossy())
            .unwrap_or_else(|e| format!("(no log: {e:#})"))
    }

    /// GET `path` on the agent's plain-HTTP port: (status code, body).
    pub async fn probe(&self, path: &str) -> Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(self.metrics).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("not an HTTP response: {text:.200}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((code, body))
    }

    /// The sum of the samples of metric `name` on `/metrics` whose labels contain
    /// `label_text` (`""`: all of them).
    pub async fn metric_sum(&self, name: &str, label_text: &str) -> Result<f64> {
        let (code, body) = self.probe("/metrics").await?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(sum_samples_where(&body, name, label_text))
    }
}

/// Starts `tidepool agent` for `spec` in the guest with the identity already written to
/// `guest_dir`, advertising `endpoint`.
async fn launch(
    vm: &ZfsVm,
    binary: &std::path::Path,
    spec: &AgentSpec,
    guest_dir: &str,
    endpoint: SocketAddr,
    env: &[(String, String)],
) -> Result<RemoteChild> {
    let mut argv: Vec<String> = vec![
        binary.display().to_string(),
        "agent".into(),
        "--node-name".into(),
        spec.node.clone(),
        "--kubeconfig".into(),
        format!("{guest_dir}/kubeconfig"),
        "--listen".into(),
        format!("0.0.0.0:{}", spec.api_port),
        "--advertise".into(),
        endpoint.to_string(),
        "--metrics-listen".into(),
        format!("0.0.0.0:{}", spec.metrics_port),
        "--controller-service-account".into(),
        spec.controller_service_account.clone(),
        "--heartbeat".into(),
        spec.heartbeat.clone(),
    ];
    for p in &spec.pools {
        argv.extend(["--pool".into(), p.clone()]);
    }
    for r in &spec.dataset_roots {
        argv.extend(["--dataset-root".into(), r.clone()]);
    }
    let log = format!("{guest_dir}/agent.log");
    // The log goes to a file in the guest (read by `log_tail`), so a chatty agent can
    // never block on a pipe nobody reads.
    let mut command = vm.command(["sh", "-c", "exec \"$@\" >>\"$LOG\" 2>&1", "agent"]);
    command
        .args(argv)
        .env("LOG", &log)
        .env("RUST_LOG", "info,tidepool_agent=debug");
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .spawn()
        .await
        .context("starting the agent in the guest")
}

/// `GET path` at `addr` (plain HTTP on loopback) with an optional bearer token: the
/// status code and the body.
pub async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: c\r\n{auth}Connection: close\r\n\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut raw = String::new();
    tcp.read_to_string(&mut raw)
        .await
        .unwrap_or_else(|e| panic!("reading {addr}{path}: {e}"));
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (code, body)
}

/// The text of `GET /metrics` at `addr`.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    http_get(addr, "/metrics", None).await.1
}

/// Sums the samples of `name` in a Prometheus text exposition (any labels).
pub fn sum_samples(text: &str, name: &str) -> f64 {
    sum_samples_where(text, name, "")
}

/// Sums the samples of `name` whose labels contain `label_text` (e.g. `command="zfs `).
pub fn sum_samples_where(text: &str, name: &str, label_text: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(label_text))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
