//! A replica read back for the replication tests: snapshots with GUIDs, owners, holds and
//! bookmarks from fresh `zfs` reads in the guest, and a ReplicationPolicy's status and
//! conditions from the API. The readers tolerate a snapshot or dataset that is gone: the
//! controller's retention runs beside the tests.

use std::time::Duration;

use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tidepool_api::ReplicationPolicy;
use tidepool_api::condition::find;
use tidepool_api::replication_policy::ReplicationPolicyStatus;
use tokio::time::Instant;

use tidepool_reconciler::PinnedAgents;

use crate::agents::{AgentSpec, GuestAgent};
use crate::guest_peers::GuestPeers;
use crate::release::{AGENT_CALL_TIMEOUT, Release, Replica, ok, test_reconciler_config};
use crate::zfs_vm::ZfsVm;

/// How long [`wait_for`] waits.
/// How long a wait for the controller may take: a sync on TCG VMs runs at a few MiB/s,
/// and every zfs command costs 100–300 ms.
pub const WITHIN: Duration = Duration::from_secs(180);

pub async fn sh(vm: &ZfsVm, argv: &[&str]) -> String {
    ok(vm.exec_ok(argv.iter().copied()).await)
}

/// Snapshots of `dataset` (not below it) by short name → GUID, oldest first by createtxg;
/// none when the dataset does not exist (yet).
pub async fn guids(vm: &ZfsVm, dataset: &str) -> Vec<(String, String)> {
    let out = ok(vm
        .exec([
            "zfs",
            "list",
            "-H",
            "-p",
            "-o",
            "name,guid",
            "-t",
            "snapshot",
            "-s",
            "createtxg",
            "-d",
            "1",
            dataset,
        ])
        .await);
    if !out.status.success() {
        assert!(
            out.stderr_lossy().contains("does not exist"),
            "listing {dataset}: {}",
            out.stderr_lossy()
        );
        return Vec::new();
    }
    out.stdout_lossy()
        .lines()
        .filter_map(|l| {
            let (name, guid) = l.split_once('\t')?;
            let short = name.split_once('@')?.1;
            Some((short.to_owned(), guid.to_owned()))
        })
        .collect()
}

pub async fn exists(vm: &ZfsVm, dataset: &str) -> bool {
    ok(vm.exec(["zfs", "list", "-H", "-o", "name", dataset]).await)
        .status
        .success()
}

pub async fn prop(vm: &ZfsVm, target: &str, property: &str) -> String {
    sh(vm, &["zfs", "get", "-H", "-o", "value", property, target])
        .await
        .trim()
        .to_owned()
}

pub async fn prop_source(vm: &ZfsVm, target: &str, property: &str) -> String {
    sh(vm, &["zfs", "get", "-H", "-o", "source", property, target])
        .await
        .trim()
        .to_owned()
}

/// The hold tags on `snapshot`; none when it is gone (retention runs beside the test).
/// Every snapshot of `dataset` with its `tidepool.dev:owner` value and source, in one
/// `zfs get` (retention runs beside the test; one read sees one state).
pub async fn owners(vm: &ZfsVm, dataset: &str) -> Vec<(String, String, String)> {
    let out = ok(vm
        .exec([
            "zfs",
            "get",
            "-H",
            "-o",
            "name,value,source",
            "-t",
            "snapshot",
            "-d",
            "1",
            "tidepool.dev:owner",
            dataset,
        ])
        .await);
    out.stdout_lossy()
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let short = f.next()?.split_once('@')?.1.to_owned();
            Some((short, f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect()
}

pub async fn hold_tags(vm: &ZfsVm, snapshot: &str) -> Vec<String> {
    let out = ok(vm.exec(["zfs", "holds", "-H", snapshot]).await);
    out.stdout_lossy()
        .lines()
        .filter_map(|l| l.split('\t').nth(1).map(str::to_owned))
        .collect()
}

pub async fn bookmarks(vm: &ZfsVm, dataset: &str) -> Vec<String> {
    sh(
        vm,
        &[
            "zfs", "list", "-H", "-o", "name", "-t", "bookmark", "-d", "1", dataset,
        ],
    )
    .await
    .lines()
    .map(str::to_owned)
    .collect()
}

pub async fn status(api: &Api<ReplicationPolicy>, name: &str) -> ReplicationPolicyStatus {
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .status
        .unwrap_or_default()
}

pub fn condition(s: &ReplicationPolicyStatus, type_: &str) -> Option<(String, String)> {
    find(&s.conditions, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

/// Polls `check` every second until it returns `Some`, or panics with `what` and the last
/// status after [`WITHIN`].
pub async fn wait_for<T, F, Fut>(
    api: &Api<ReplicationPolicy>,
    name: &str,
    what: &str,
    check: F,
) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + WITHIN;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > end {
            panic!(
                "{what}: not within {WITHIN:?}; status {:#?}",
                status(api, name).await
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Writes `mib` MiB of random data to `path` in the guest.
pub async fn write_random(vm: &ZfsVm, path: &str, mib: u32) {
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

/// Sets the policy's manual trigger to `token` (as the user): it syncs at once.
pub async fn trigger(api: &Api<ReplicationPolicy>, name: &str, token: &str) {
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"trigger": {"manual": token}}})),
    )
    .await
    .unwrap_or_else(|e| panic!("triggering {name}: {e}"));
}

/// `zfs snapshot dataset@short` after 1.1 s: object-store stream keys carry the creation
/// time to the second, one snapshot per second keeps them apart.
pub async fn snapshot_next_second(vm: &ZfsVm, dataset: &str, short: &str) {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sh(vm, &["zfs", "snapshot", &format!("{dataset}@{short}")]).await;
}

/// The SHA-256s of `files` in `dataset` (mounted first if it is not), in order.
pub async fn checksums(vm: &ZfsVm, dataset: &str, files: &[&str]) -> Vec<String> {
    if prop(vm, dataset, "mounted").await != "yes" {
        sh(vm, &["zfs", "mount", dataset]).await;
    }
    let mut argv = vec!["sha256sum".to_owned()];
    argv.extend(files.iter().map(|f| format!("/{dataset}/{f}")));
    let out = sh(vm, &argv.iter().map(String::as_str).collect::<Vec<_>>()).await;
    out.lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
        .collect()
}

/// Creates `dataset` encrypted with `passphrase`, kept in the guest at
/// `/run/tidepool-keys/<key>.key` (0700 directory); returns its `keylocation` (`file://…`).
pub async fn create_encrypted(vm: &ZfsVm, dataset: &str, key: &str, passphrase: &[u8]) -> String {
    let key_dir = "/run/tidepool-keys";
    let key_file = format!("{key_dir}/{key}.key");
    sh(vm, &["mkdir", "-p", "-m", "0700", key_dir]).await;
    let written = ok(vm
        .command(["dd", &format!("of={key_file}"), "status=none"])
        .output_with_stdin(passphrase)
        .await);
    assert!(written.status.success(), "{}", written.stderr_lossy());
    let keylocation = format!("file://{key_file}");
    sh(
        vm,
        &[
            "zfs",
            "create",
            "-o",
            "encryption=on",
            "-o",
            "keyformat=passphrase",
            "-o",
            &format!("keylocation={keylocation}"),
            dataset,
        ],
    )
    .await;
    keylocation
}

/// Creates a ReplicationPolicy (as the user) from its name and spec.
pub async fn create_policy(api: &Api<ReplicationPolicy>, name: &str, spec: serde_json::Value) {
    let ns = api.namespace().unwrap_or_default();
    let obj: ReplicationPolicy = serde_json::from_value(json!({
        "apiVersion": "tidepool.dev/v1alpha1", "kind": "ReplicationPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating the policy {name}: {e}"));
}

/// The short names of `dataset`'s snapshots whose owner (`tidepool.dev:owner`, set
/// locally) is `owner`, oldest first; one listing, so retention pruning beside the reading
/// cannot fail it.
pub async fn owned(vm: &ZfsVm, dataset: &str, owner: &str) -> Vec<String> {
    let out = ok(vm
        .exec([
            "zfs",
            "get",
            "-H",
            "-p",
            "-o",
            "name,value,source",
            "-t",
            "snapshot",
            "-d",
            "1",
            "tidepool.dev:owner",
            dataset,
        ])
        .await);
    let mut found: Vec<String> = out
        .stdout_lossy()
        .lines()
        .filter_map(|l| {
            let mut cols = l.split('\t');
            let (name, value, source) = (cols.next()?, cols.next()?, cols.next()?);
            (value == owner && source == "local")
                .then(|| name.split_once('@').map(|(_, s)| s.to_owned()))?
        })
        .collect();
    // Tidepool's names sort by time.
    found.sort();
    found
}

/// Waits until `dataset` on `vm` has a snapshot owned by `owner` (a schedule's); returns
/// the newest one's short name.
pub async fn wait_owned_snapshot(vm: &ZfsVm, dataset: &str, owner: &str) -> String {
    let end = Instant::now() + WITHIN;
    loop {
        if let Some(newest) = owned(vm, dataset, owner).await.pop() {
            return newest;
        }
        assert!(
            Instant::now() < end,
            "no snapshot of {dataset} owned by {owner} within {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Prints the events about policy `name` (a record of the run for the log: which syncs
/// sent how much, which failed and why).
pub async fn print_events(cp: &crate::control_plane::ControlPlane, ns: &str, name: &str) {
    let mut events = crate::release::events_about(cp, ns, name).await;
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    for e in events {
        let count = e.series.as_ref().map_or(1, |s| s.count);
        eprintln!(
            "event {name}: {} {} x{count}: {}",
            e.type_.unwrap_or_default(),
            e.reason.unwrap_or_default(),
            e.note.unwrap_or_default()
        );
    }
}

/// A loopback address with a port free right now (for a controller's HTTP port).
pub fn free_local_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    l.local_addr().unwrap_or_else(|e| panic!("{e}"))
}

/// Two simulated nodes in one VM for a replication scenario: node `<ns>-src` serves
/// `<pool_a>/data`, node `<ns>-dst` serves `<pool_b>/replicas` (both datasets made, both
/// granted to the release's namespace), and one controller replica with the chart's
/// identity whose transfers reach the target at its guest port ([`GuestPeers`]), serving
/// its HTTP port (the explain route) on [`Pair::http`].
pub struct Pair {
    pub pool_a: String,
    pub pool_b: String,
    pub spec_a: AgentSpec,
    pub spec_b: AgentSpec,
    pub agent_a: GuestAgent,
    pub agent_b: GuestAgent,
    pub controller: tokio::task::JoinHandle<()>,
    /// The controller's Pod identity and agent token.
    pub replica: Replica,
    /// Where the controller serves `/metrics` and the explain route (loopback).
    pub http: std::net::SocketAddr,
}

impl Pair {
    /// Pools `<prefix>a…` and `<prefix>b…` of 512 MiB; the test makes its datasets below
    /// the roots afterwards (an inventory lists the pool's datasets at every request).
    pub async fn start(release: &Release, vm: &ZfsVm, prefix: &str) -> Pair {
        Self::start_configured(release, vm, prefix, test_reconciler_config()).await
    }

    /// [`Self::start`] with the controller's own reconciler settings.
    pub async fn start_configured(
        release: &Release,
        vm: &ZfsVm,
        prefix: &str,
        config: tidepool_reconciler::ReconcilerConfig,
    ) -> Pair {
        let ns = &release.ns;
        let pool_a = vm.unique_pool_name(&format!("{prefix}a"));
        let pool_b = vm.unique_pool_name(&format!("{prefix}b"));
        ok(vm.create_pool(&pool_a, 512 << 20).await);
        ok(vm.create_pool(&pool_b, 512 << 20).await);
        let (root_a, root_b) = (format!("{pool_a}/data"), format!("{pool_b}/replicas"));
        sh(vm, &["zfs", "create", &root_a]).await;
        sh(vm, &["zfs", "create", &root_b]).await;
        let spec_a = release.agent_spec("src", &[&pool_a], &[&root_a], 0);
        let spec_b = release.agent_spec("dst", &[&pool_b], &[&root_b], 1);
        let agent_a = release.start_agent(vm, &spec_a).await;
        let agent_b = release.start_agent(vm, &spec_b).await;
        release
            .grant(&format!("{ns}-grant"), &[ns], &[&root_a, &root_b])
            .await;
        let replica = release.replica("controller-0").await;
        let agents = GuestPeers::new(
            vm,
            PinnedAgents::new(replica.agent_token.clone(), AGENT_CALL_TIMEOUT),
        );
        let http = free_local_addr();
        let controller = release
            .start_serving_with(&replica, Some(ns.clone()), agents as _, config, http)
            .await;
        Pair {
            pool_a,
            pool_b,
            spec_a,
            spec_b,
            agent_a,
            agent_b,
            controller,
            replica,
            http,
        }
    }
}
