//! The chart's agent DaemonSet as a kubelet would run it, on real OpenZFS: `tidepool agent`
//! in the VM with the environment the DaemonSet renders (dataset roots, audience, the zfs
//! wrappers' directory and the host root), the image's `zfs`/`zpool` wrappers
//! (`scripts/image/host-zfs/`) at the path the image has them, and the guest's root mounted
//! read-only as the DaemonSet mounts the node's at `/host` (elsewhere here: the VM's `/host`
//! is the harness's share). The agent must reach zfs only
//! through `chroot /host`: pointed at an empty host root it cannot start; pointed at the
//! real one it publishes its node's pools from the roots the chart gave it.

use tidepool_api::ZfsNode;
use tidepool_tests::{
    agents::{AgentSpec, GuestAgent},
    chart::{ChartRelease, Component, chart_dir},
    control_plane::{ControlPlane, repo_root},
    zfs_vm::ZfsVm,
};

fn ok<T>(result: anyhow::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e:#}"))
}

/// The literal `env` of the rendered DaemonSet's container (fieldRefs are the kubelet's:
/// the harness passes node name and endpoint as flags).
async fn daemonset_env(cp: &ControlPlane, ns: &str, root: &str) -> Vec<(String, String)> {
    let version = ok(cp
        .admin_client()
        .apiserver_version()
        .await
        .map_err(Into::into));
    let out = cp
        .helm()
        .args(["template", ns])
        .arg(chart_dir())
        .args(["--namespace", ns, "--kube-version", &version.git_version])
        .args(["--set", &format!("agent.datasetRoots[0]={root}")])
        .output()
        .await
        .unwrap_or_else(|e| panic!("helm template: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout))
            .unwrap_or_else(|e| panic!("{e}"));
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    ds["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemonsets_agent_runs_the_hosts_zfs_through_the_wrappers() {
    let cp = ControlPlane::shared().await;
    let vm = ok(ZfsVm::shared().await);
    let ns = ok(cp.create_namespace("chart-agent").await);
    let chart = ok(ChartRelease::install(cp, &ns, &ns).await);
    let pool = vm.unique_pool_name("chartagent");
    ok(vm.create_pool(&pool, 256 << 20).await);
    let root = format!("{pool}/data");
    ok(vm
        .exec_ok(["zfs", "create", "-p", &format!("{root}/app")])
        .await);

    let env = daemonset_env(cp, &ns, &root).await;
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the DaemonSet sets no {k}"))
    };
    assert_eq!(get("TIDEPOOL_DATASET_ROOTS"), root);
    let bin_dir = get("TIDEPOOL_ZFS_BIN_DIR");
    // The DaemonSet mounts the node's root at /host. In the VM /host is the harness's share
    // of the cargo target dir, so the node's root goes elsewhere and the variable follows.
    assert_eq!(get("TIDEPOOL_HOST_ROOT"), "/host");
    let host_root = "/run/tidepool-node-root".to_owned();
    let mut env = env;
    env.retain(|(k, _)| k != "TIDEPOOL_HOST_ROOT");
    env.push(("TIDEPOOL_HOST_ROOT".into(), host_root.clone()));

    // The node's root at /host, read-only at its top as the DaemonSet mounts it (its /dev
    // stays a writable mount of its own), and the image's wrappers where the image has them.
    let mount = format!(
        "mkdir -p {host_root} && (mountpoint -q {host_root} || \
         (mount --rbind / {host_root} && mount -o remount,bind,ro {host_root})) && \
         mkdir -p {bin_dir} /var/tmp/empty-host"
    );
    ok(vm.exec_ok(["sh", "-c", &mount]).await);
    for tool in ["zfs", "zpool"] {
        let script = std::fs::read(repo_root().join("scripts/image/host-zfs").join(tool))
            .unwrap_or_else(|e| panic!("{e}"));
        let path = format!("{bin_dir}/{tool}");
        let out = vm
            .command([
                "sh",
                "-c",
                "cat >\"$1\" && chmod 755 \"$1\"",
                "write",
                &path,
            ])
            .output_with_stdin(&script)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(out.status.success(), "writing {path} in the guest");
    }

    let agent_sa = ok(chart.service_account(Component::Agent)).to_owned();
    let controller_sa = ok(chart.service_account(Component::Controller)).to_owned();
    // No pools and no roots as flags: those come from the chart's environment.
    let spec = |node: &str, slot: usize| AgentSpec {
        node: node.to_owned(),
        namespace: ns.clone(),
        agent_service_account: agent_sa.clone(),
        controller_service_account: format!("{ns}/{controller_sa}"),
        pools: vec![],
        dataset_roots: vec![],
        api_port: ZfsVm::AGENT_PORTS[2 * slot],
        metrics_port: ZfsVm::AGENT_PORTS[2 * slot + 1],
        heartbeat: "2s".to_owned(),
    };

    // Control: a host root without zfs. The agent reaches no zfs, so it cannot start.
    let mut no_zfs = env.clone();
    no_zfs.retain(|(k, _)| k != "TIDEPOOL_HOST_ROOT");
    no_zfs.push(("TIDEPOOL_HOST_ROOT".into(), "/var/tmp/empty-host".into()));
    let refused =
        ok(GuestAgent::start_with_env(vm, cp, &spec(&format!("{ns}-empty"), 0), no_zfs).await);
    let err = refused
        .wait_registered(vm, cp)
        .await
        .expect_err("an agent whose host root has no zfs registered anyway");
    let err = format!("{err:#}");
    assert!(err.contains("exited") && err.contains("chroot"), "{err}");

    // The chart's environment: zfs through `chroot /host`, pools from the chart's roots.
    let node = format!("{ns}-node");
    let agent = ok(GuestAgent::start_with_env(vm, cp, &spec(&node, 1), env).await);
    let zfs_node: ZfsNode = ok(agent.wait_registered(vm, cp).await);
    let status = zfs_node.status.unwrap_or_default();
    assert_eq!(status.allowed_roots, vec![root.clone()]);
    assert!(
        status
            .zfs_version
            .as_deref()
            .is_some_and(|v| v.starts_with("2.")),
        "{:?}",
        status.zfs_version
    );
    let published: Vec<(&str, &str)> = status
        .pools
        .iter()
        .map(|p| (p.name.as_str(), p.health.as_str()))
        .collect();
    assert_eq!(published, [(pool.as_str(), "ONLINE")]);
    assert!(status.pools[0].size_bytes > 0);
    // The pool-size gauge the chart's TidepoolPoolNearlyFull alert divides by.
    let size = ok(agent
        .metric_sum("tidepool_agent_pool_size_bytes", &pool)
        .await);
    assert!(
        size > 0.0,
        "tidepool_agent_pool_size_bytes{{pool={pool}}} is {size}"
    );
}
