//! The whole chart, as a user installs it, on the real tools: `helm lint` and `helm
//! template` with the default values and with `charts/tidepool/ci/groups-values.yaml`;
//! values that break `values.schema.json` refused; the rendered chart applied to the real
//! kube-apiserver (`--dry-run=server`, then for real) and applied again without drift
//! (`kubectl diff --server-side` empty); `helm install`, `upgrade` (which updates the CRDs)
//! and `uninstall` (which keeps them). The PrometheusRule's and the dashboard's metric names
//! are checked against what the binaries register, and the workloads' flags and variables
//! against `tidepool controller --help` and `tidepool agent --help`.
//!
//! No kubelet runs here: Pods are never started, the objects are only accepted.

#[path = "chart_install/on_server.rs"]
mod on_server;
#[path = "chart_install/promql.rs"]
mod promql;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use tidepool_tests::{
    agents::tidepool_binary,
    chart::chart_dir,
    control_plane::{ControlPlane, repo_root},
};

const KUBE_VERSION: &str = "1.34.0";
/// A release named after the chart: object names are `tidepool-<part>`.
const RELEASE: &str = "tidepool";

fn groups_values() -> PathBuf {
    chart_dir().join("ci").join("groups-values.yaml")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn run(mut cmd: tokio::process::Command, what: &str) -> Output {
    cmd.output()
        .await
        .unwrap_or_else(|e| panic!("running {what}: {e}"))
}

fn ok(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// `helm template` of the chart for `release` in `namespace`, with `args` (values).
async fn template(cp: &ControlPlane, release: &str, namespace: &str, args: &[&str]) -> Output {
    let mut cmd = cp.helm();
    cmd.args(["template", release])
        .arg(chart_dir())
        .args(["--namespace", namespace, "--kube-version", KUBE_VERSION])
        .args(args);
    run(cmd, "helm template").await
}

fn parse(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(yaml).unwrap_or_else(|e| panic!("parsing the chart: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    objects.iter().filter(move |o| o["kind"] == kind)
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

async fn help(mode: &str) -> String {
    let binary = tokio::task::spawn_blocking(tidepool_binary)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args([mode, "--help"]);
    ok(run(cmd, "tidepool --help").await, "tidepool --help")
}

// --- lint, template, schema -----------------------------------------------------------

#[tokio::test]
async fn the_chart_lints_and_renders_with_default_and_other_values() {
    let cp = ControlPlane::shared().await;
    for values in [None, Some(groups_values())] {
        let mut cmd = cp.helm();
        cmd.args(["lint", "--strict", "--kube-version", KUBE_VERSION])
            .arg(chart_dir());
        if let Some(v) = &values {
            cmd.arg("-f").arg(v);
        }
        ok(
            run(cmd, "helm lint").await,
            &format!("helm lint ({values:?})"),
        );
    }

    // Defaults: two controller replicas electing a leader, one agent DaemonSet for every
    // node, privileged, CRDs kept on uninstall, no prometheus-operator objects.
    let defaults = parse(&ok(
        template(cp, RELEASE, "tidepool-system", &[]).await,
        "helm template",
    ));
    let deployment = of_kind(&defaults, "Deployment")
        .next()
        .expect("a Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let controller = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&controller["args"]);
    assert_eq!(args[0], "controller");
    assert!(
        args.windows(2)
            .any(|w| w == ["--lease-name", "tidepool-controller"])
    );
    assert_eq!(
        controller["securityContext"]["readOnlyRootFilesystem"], true,
        "{controller}"
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    let controller_help = help("controller").await;
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            controller_help.contains(flag),
            "the Deployment passes {flag}, which `tidepool controller --help` does not list"
        );
    }
    // The controller's token for the agents carries the audience the agents check.
    let projected = &deployment["spec"]["template"]["spec"]["volumes"][0]["projected"];
    assert_eq!(
        projected["sources"][0]["serviceAccountToken"]["audience"],
        "tidepool-agent"
    );
    let daemonsets: Vec<&Value> = of_kind(&defaults, "DaemonSet").collect();
    assert_eq!(daemonsets.len(), 1);
    let pod = &daemonsets[0]["spec"]["template"]["spec"];
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    let agent = &pod["containers"][0];
    assert_eq!(agent["securityContext"]["privileged"], true);
    assert_eq!(
        env(agent, "TIDEPOOL_AGENT_AUDIENCE"),
        Some("tidepool-agent")
    );
    assert_eq!(
        env(agent, "TIDEPOOL_ZFS_BIN_DIR"),
        Some("/usr/local/lib/tidepool/host-zfs"),
        "the wrappers' directory in the image (Dockerfile, scripts/image/host-zfs)"
    );
    let agent_help = help("agent").await;
    for var in agent["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default();
        // POD_IP is read for the endpoint's default; TIDEPOOL_HOST_ROOT by the zfs wrappers.
        if !["POD_IP", "RUST_LOG", "TIDEPOOL_HOST_ROOT"].contains(&name) {
            assert!(
                agent_help.contains(name),
                "the DaemonSet sets {name}, which `tidepool agent --help` does not mention"
            );
        }
    }
    let crds: Vec<&Value> = of_kind(&defaults, "CustomResourceDefinition").collect();
    assert_eq!(crds.len(), 4);
    for crd in &crds {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }
    for kind in [
        "PrometheusRule",
        "ServiceMonitor",
        "PodMonitor",
        "ConfigMap",
    ] {
        assert_eq!(
            of_kind(&defaults, kind).count(),
            0,
            "{kind} is off by default"
        );
    }

    // Other values: one DaemonSet per group with its roots and selector, not privileged.
    let custom = parse(&ok(
        template(
            cp,
            RELEASE,
            "tidepool-system",
            &["-f", &groups_values().to_string_lossy()],
        )
        .await,
        "helm template -f ci/groups-values.yaml",
    ));
    let daemonsets: Vec<&Value> = of_kind(&custom, "DaemonSet").collect();
    assert_eq!(daemonsets.len(), 2);
    let fast = daemonsets
        .iter()
        .find(|d| d["metadata"]["name"] == "tidepool-agent-fast")
        .expect("tidepool-agent-fast");
    let fast_pod = &fast["spec"]["template"]["spec"];
    assert_eq!(fast_pod["nodeSelector"]["tidepool.dev/pool"], "fast");
    assert_eq!(fast_pod["nodeSelector"]["tidepool.dev/zfs"], "true");
    let fast_agent = &fast_pod["containers"][0];
    assert_eq!(
        env(fast_agent, "TIDEPOOL_DATASET_ROOTS"),
        Some("fast/db,fast/wal")
    );
    assert_eq!(
        env(fast_agent, "TIDEPOOL_CONTROLLER_SA"),
        Some("tidepool-system/tidepool-controller")
    );
    assert_eq!(fast_agent["securityContext"].get("privileged"), None);
    assert_eq!(
        strings(&fast_agent["securityContext"]["capabilities"]["add"]),
        ["SYS_ADMIN", "SYS_CHROOT"]
    );
    assert_eq!(fast_agent["resources"]["limits"]["squat.ai/zfs"], 1);
    let bulk = daemonsets
        .iter()
        .find(|d| d["metadata"]["name"] == "tidepool-agent-bulk")
        .expect("tidepool-agent-bulk");
    assert_eq!(
        env(
            &bulk["spec"]["template"]["spec"]["containers"][0],
            "TIDEPOOL_DATASET_ROOTS"
        ),
        Some("bulk/backups")
    );
    // One PodMonitor per component; one rule and one dashboard.
    for (kind, count) in [("PrometheusRule", 1), ("PodMonitor", 2), ("ConfigMap", 1)] {
        assert_eq!(of_kind(&custom, kind).count(), count, "{kind}");
    }
    let dashboard = of_kind(&custom, "ConfigMap").next().expect("the dashboard");
    let json: Value = serde_json::from_str(
        dashboard["data"]["tidepool.json"]
            .as_str()
            .unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("the dashboard is not JSON: {e}"));
    assert_eq!(json["uid"], "tidepool");
}

#[tokio::test]
async fn values_that_break_the_schema_are_refused() {
    let cp = ControlPlane::shared().await;
    let bad: &[(&str, &[&str])] = &[
        ("an unknown key", &["--set", "controler.replicas=2"]),
        ("a port out of range", &["--set", "agent.port=70000"]),
        (
            "a string for a number",
            &["--set-string", "controller.replicas=two"],
        ),
        ("zero replicas", &["--set", "controller.replicas=0"]),
        ("a relative host root", &["--set", "agent.hostRoot=host"]),
        (
            "a bad dataset root",
            &["--set", "agent.datasetRoots[0]=/tank"],
        ),
        (
            "a group without roots",
            &[
                "--set",
                "agent.groups[0].name=a",
                "--set",
                "agent.groups[0].nodeSelector.a=b",
            ],
        ),
        ("a bad duration", &["--set", "agent.heartbeat=soon"]),
        ("a ratio of 1", &["--set", "prometheusRule.poolFreeRatio=1"]),
        (
            "ServiceMonitor and PodMonitor together",
            &[
                "--set",
                "metrics.serviceMonitor.enabled=true",
                "--set",
                "metrics.podMonitor.enabled=true",
            ],
        ),
    ];
    for (what, args) in bad {
        let out = template(cp, RELEASE, "tidepool-system", args).await;
        assert!(
            !out.status.success(),
            "{what}: helm template accepted {args:?}"
        );
        let err = text(&out.stderr);
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "{what}: refused, but not by the schema:\n{err}"
        );
    }
    // The template's own check: two groups of one name.
    let out = template(
        cp,
        "tp",
        "tidepool-system",
        &[
            "--set",
            "agent.groups[0].name=a",
            "--set",
            "agent.groups[0].nodeSelector.x=one",
            "--set",
            "agent.groups[0].datasetRoots[0]=tank/a",
            "--set",
            "agent.groups[1].name=a",
            "--set",
            "agent.groups[1].nodeSelector.x=two",
            "--set",
            "agent.groups[1].datasetRoots[0]=tank/b",
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("used twice"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let generated = repo_root().join("crds");
    let copy = chart_dir().join("files").join("crds");
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    };
    assert_eq!(names(&generated), names(&copy));
    for name in names(&generated) {
        let read = |dir: &Path| std::fs::read(dir.join(&name)).unwrap_or_default();
        assert!(
            read(&generated) == read(&copy),
            "charts/tidepool/files/crds/{name} differs from crds/{name}: \
             cp crds/*.yaml charts/tidepool/files/crds/"
        );
    }
}

// --- the metrics alerts and dashboard use --------------------------------------------

/// Every series name the controller and the agent register, and Prometheus's own `up`.
fn exported_metric_names() -> BTreeSet<String> {
    let agent = tidepool_agent::AgentMetrics::new().unwrap_or_else(|e| panic!("{e}"));
    let controller = tidepool_reconciler::metrics::Metrics::new().unwrap_or_else(|e| panic!("{e}"));
    let mut names: BTreeSet<String> = agent.metric_names().into_iter().collect();
    names.extend(controller.metric_names());
    names.insert("up".to_owned());
    names
}

#[tokio::test]
async fn alerts_and_dashboard_use_only_metrics_the_binaries_export() {
    let cp = ControlPlane::shared().await;
    let objects = parse(&ok(
        template(
            cp,
            RELEASE,
            "tidepool-system",
            &["-f", &groups_values().to_string_lossy()],
        )
        .await,
        "helm template",
    ));
    let exported = exported_metric_names();
    let rule = of_kind(&objects, "PrometheusRule")
        .next()
        .expect("a PrometheusRule");
    let runbooks = std::fs::read_to_string(repo_root().join("docs/runbooks.md"))
        .unwrap_or_else(|e| panic!("docs/runbooks.md: {e}"));
    let mut alerts = Vec::new();
    let mut used = BTreeSet::new();
    for rule in rule["spec"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
    {
        let alert = rule["alert"].as_str().unwrap_or_default();
        let expr = rule["expr"].as_str().unwrap_or_default();
        let names = promql::metric_names(expr);
        assert!(!names.is_empty(), "{alert}: no metric in {expr}");
        for name in names {
            assert!(
                exported.contains(&name),
                "alert {alert} uses {name}, which neither binary exports (renamed?); \
                 exported: {exported:?}"
            );
            used.insert(name);
        }
        assert!(
            runbooks.contains(&format!("\n## {alert}\n")),
            "docs/runbooks.md has no section `## {alert}`"
        );
        let anchor = alert.to_lowercase();
        assert_eq!(
            rule["annotations"]["runbook_url"],
            format!("https://docs.example/tidepool/runbooks#{anchor}")
        );
        alerts.push(alert.to_owned());
    }
    alerts.sort();
    assert_eq!(
        alerts,
        [
            "TidepoolAgentDown",
            "TidepoolControllerNoLeader",
            "TidepoolPoolNearlyFull",
            "TidepoolReplicationFailing",
            "TidepoolReplicationLagging",
            "TidepoolRestoreDrillFailed",
            "TidepoolScheduleFailing",
            "TidepoolSnapshotsStale",
        ]
    );
    eprintln!("alerts use {used:?}");

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("files/dashboards/tidepool.json"))
            .unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("the dashboard is not JSON: {e}"));
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            for name in promql::metric_names(expr) {
                assert!(
                    exported.contains(&name),
                    "dashboard panel {} uses {name}, which neither binary exports",
                    panel["title"]
                );
            }
        }
    }

    // The check has teeth: a renamed metric is caught.
    let renamed = promql::metric_names("tidepool_schedule_last_success_seconds > 0");
    assert!(!exported.contains(&renamed[0]));
}
