//! The chart on the real API server: the rendered objects accepted (dry run, then for
//! real) and re-applied without drift; helm's own install, upgrade and uninstall; the
//! Deployment's command line run as the controller's identity.

use super::{
    ControlPlane, RELEASE, chart_dir, groups_values, of_kind, ok, parse, run, strings, template,
    text, tidepool_binary,
};

/// Stand-ins for prometheus-operator's CRDs (not part of this repository), so that the API
/// server accepts the chart's ServiceMonitor, PodMonitor and PrometheusRule kinds. Their
/// content is checked above, not by a schema here.
async fn install_monitoring_kinds(cp: &ControlPlane) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut yaml = String::new();
    for (kind, plural) in [
        ("ServiceMonitor", "servicemonitors"),
        ("PodMonitor", "podmonitors"),
        ("PrometheusRule", "prometheusrules"),
    ] {
        yaml.push_str(&format!(
            "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
             metadata: {{name: {plural}.monitoring.coreos.com}}\n\
             spec:\n  group: monitoring.coreos.com\n  scope: Namespaced\n  \
             names: {{kind: {kind}, plural: {plural}, singular: {}}}\n  \
             versions:\n  - name: v1\n    served: true\n    storage: true\n    \
             schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n",
            plural.trim_end_matches('s')
        ));
    }
    std::fs::write(dir.path().join("monitoring.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
    cp.install_crds(dir.path())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test]
async fn the_rendered_chart_is_accepted_by_the_api_server_and_reapplies_without_drift() {
    let cp = ControlPlane::shared().await;
    install_monitoring_kinds(cp).await;
    for (label, values) in [("default", None), ("groups", Some(groups_values()))] {
        let ns = cp
            .create_namespace(&format!("chart-{label}"))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let mut args = vec![];
        let values_arg = values.map(|v| v.to_string_lossy().into_owned());
        if let Some(v) = &values_arg {
            args.extend(["-f", v.as_str()]);
        }
        let rendered = ok(template(cp, &ns, &ns, &args).await, "helm template");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("chart.yaml");
        std::fs::write(&file, &rendered).unwrap_or_else(|e| panic!("{e}"));
        let kubectl = |args: &[&str]| {
            let mut cmd = cp.kubectl();
            cmd.args(args)
                .args(["--server-side", "--field-manager", "chart-install-test"])
                .arg("-f")
                .arg(&file);
            cmd
        };
        let dry = ok(
            run(
                kubectl(&["apply", "--dry-run=server"]),
                "kubectl apply --dry-run=server",
            )
            .await,
            &format!("kubectl apply --dry-run=server ({label})"),
        );
        assert!(dry.contains("deployment.apps/"), "{dry}");
        ok(
            run(kubectl(&["apply"]), "kubectl apply").await,
            &format!("kubectl apply ({label})"),
        );
        let diff = run(kubectl(&["diff"]), "kubectl diff").await;
        assert!(
            diff.status.success() && diff.stdout.is_empty(),
            "{label}: re-applying the chart would change what is stored ({}):\n{}{}",
            diff.status,
            text(&diff.stdout),
            text(&diff.stderr)
        );
        // What a kubelet-less cluster can show: the workloads are stored as rendered.
        let stored = ok(
            run(
                {
                    let mut cmd = cp.kubectl();
                    cmd.args([
                        "get",
                        "deployments,daemonsets,services",
                        "-n",
                        &ns,
                        "-o",
                        "name",
                    ]);
                    cmd
                },
                "kubectl get",
            )
            .await,
            "kubectl get",
        );
        let expected = if label == "default" { 1 } else { 2 };
        assert_eq!(
            stored
                .lines()
                .filter(|l| l.starts_with("daemonset"))
                .count(),
            expected,
            "{stored}"
        );
    }
}

/// Helm's own lifecycle on a control plane of its own (no CRDs installed beforehand, as on
/// a fresh cluster): `helm install` creates the CRDs, `helm upgrade` with a changed CRD
/// updates it (Helm's crds/ folder would not), `helm uninstall` keeps them.
#[tokio::test]
async fn helm_install_upgrade_updates_crds_and_uninstall_keeps_them() {
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let copy = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let chart = copy.path().join("tidepool");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(chart_dir())
        .arg(&chart)
        .status()
        .unwrap_or_else(|e| panic!("cp: {e}"));
    assert!(status.success());
    let helm = |args: &[&str]| {
        let mut cmd = cp.helm();
        cmd.args(args).args(["--namespace", "tidepool-system"]);
        cmd
    };
    let mut install = helm(&["install", RELEASE, "--create-namespace"]);
    install.arg(&chart);
    ok(run(install, "helm install").await, "helm install");
    let short_names = || async {
        let mut cmd = cp.kubectl();
        cmd.args([
            "get",
            "crd",
            "snapshotschedules.tidepool.dev",
            "-o",
            "jsonpath={.spec.names.shortNames}",
        ]);
        ok(run(cmd, "kubectl get crd").await, "kubectl get crd")
    };
    assert_eq!(short_names().await, r#"["tpss"]"#);

    // A new chart version whose CRD changed.
    let crd = chart.join("files/crds/snapshotschedules.yaml");
    let yaml = std::fs::read_to_string(&crd).unwrap_or_else(|e| panic!("{e}"));
    assert!(yaml.contains("    - tpss\n"));
    std::fs::write(
        &crd,
        yaml.replace("    - tpss\n", "    - tpss\n    - tpsched\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut upgrade = helm(&["upgrade", RELEASE]);
    upgrade.arg(&chart);
    ok(run(upgrade, "helm upgrade").await, "helm upgrade");
    assert_eq!(short_names().await, r#"["tpss","tpsched"]"#);

    ok(
        run(helm(&["uninstall", RELEASE]), "helm uninstall").await,
        "helm uninstall",
    );
    let mut left = cp.kubectl();
    left.args(["get", "crd,deployments,daemonsets", "-A", "-o", "name"]);
    let left = ok(run(left, "kubectl get").await, "kubectl get");
    let mut left: Vec<&str> = left.lines().collect();
    left.sort_unstable();
    assert_eq!(
        left,
        [
            "customresourcedefinition.apiextensions.k8s.io/datasetgrants.tidepool.dev",
            "customresourcedefinition.apiextensions.k8s.io/replicationpolicies.tidepool.dev",
            "customresourcedefinition.apiextensions.k8s.io/snapshotschedules.tidepool.dev",
            "customresourcedefinition.apiextensions.k8s.io/zfsnodes.tidepool.dev",
        ],
        "uninstall should keep the CRDs and remove the workloads"
    );
}

/// The Deployment's command line run as a kubelet would run its Pod: the binary with the
/// rendered args and environment, as the chart's controller ServiceAccount (a Pod-bound
/// token) on the chart's RBAC. It must take the Lease and say so on its metrics port. Two
/// values differ from a cluster's, because this runs on a shared host: the metrics address
/// (a free loopback port instead of 0.0.0.0:8080) and the agent-token path.
#[tokio::test]
async fn the_deployments_command_line_runs_the_controller_and_it_leads() {
    use tidepool_tests::chart::{ChartRelease, Component};
    use tidepool_tests::kubelet::Kubelet;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let cp = ControlPlane::shared().await;
    let ns = cp
        .create_namespace("chart-run")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let chart = ChartRelease::install(cp, &ns, &ns)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let rendered = parse(&ok(template(cp, &ns, &ns, &[]).await, "helm template"));
    let deployment = of_kind(&rendered, "Deployment")
        .next()
        .expect("a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];

    let kubelet = Kubelet::new(cp);
    let node = format!("{ns}-node");
    kubelet
        .register_node(&node)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let pod_name = "controller-0";
    let pod = kubelet
        .schedule_pod(
            &ns,
            pod_name,
            chart
                .service_account(Component::Controller)
                .unwrap_or_else(|e| panic!("{e:#}")),
            &node,
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let identity = pod
        .api_identity(cp)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let agent_token = scratch.path().join("agent-token");
    std::fs::write(&agent_token, "unused: no agent is called").unwrap_or_else(|e| panic!("{e}"));
    let mut args: Vec<String> = strings(&container["args"])
        .into_iter()
        .map(str::to_owned)
        .collect();
    for (flag, value) in [
        ("--http", format!("127.0.0.1:{port}")),
        (
            "--agent-token-file",
            agent_token.to_string_lossy().into_owned(),
        ),
    ] {
        let at = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("the Deployment passes no {flag}"));
        args[at + 1] = value;
    }
    let binary = tokio::task::spawn_blocking(tidepool_binary)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(&args)
        .env("KUBECONFIG", identity.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    // The Deployment's environment, with the values its fieldRefs would give.
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default();
        let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => pod_name.to_owned(),
            Some("metadata.namespace") => ns.clone(),
            Some(other) => panic!("{name}: a fieldRef the test does not play: {other}"),
            None => var["value"].as_str().unwrap_or_default().to_owned(),
        };
        cmd.env(name, value);
    }
    let mut controller = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting tidepool: {e}"));

    let lease = chart
        .controller_lease_name()
        .unwrap_or_else(|e| panic!("{e:#}"))
        .to_owned();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = controller.try_wait() {
            panic!("tidepool controller exited with {status} (args {args:?})");
        }
        let mut get = cp.kubectl();
        get.args([
            "get",
            "lease",
            "-n",
            &ns,
            &lease,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        let holder = text(&run(get, "kubectl get lease").await.stdout);
        let metrics = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .await?;
            let mut body = String::new();
            s.read_to_string(&mut body).await?;
            std::io::Result::Ok(body)
        }
        .await
        .unwrap_or_default();
        if holder.starts_with(pod_name) && metrics.contains("tidepool_controller_is_leader 1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the controller did not lead within 60 s: Lease holder {holder:?}, metrics:\n{metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    controller.kill().await.unwrap_or_else(|e| panic!("{e}"));
}
