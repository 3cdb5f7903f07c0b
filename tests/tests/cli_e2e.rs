//! The `tidepool` CLI end to end: the real built binary run as a process against the real
//! kube-apiserver (chart RBAC), one `tidepool agent` in the OpenZFS VM and one controller
//! replica on the host with the chart's ServiceAccount, serving its HTTP port (the explain
//! route). One VM and one scenario for the binary.
//!
//! Asserted from the CLI's output (tables and `-o json|yaml`), from fresh zfs listings in
//! the guest and from the API:
//! - `status` shows each schedule's readiness, reason, last error with its node, per node;
//! - `nodes` shows the agent, its OpenZFS version and its pool with health and size;
//! - `run-now --wait` returns once the controller echoed the token, and the snapshot is in
//!   zfs, owned; on a failing schedule it exits non-zero with the status's last error;
//! - `explain` on a schedule with retention due lists exactly the destroys (with their
//!   reason) and keeps (with their rules) that the controller then makes, leaving foreign
//!   snapshots out; a ServiceAccount without `get` on the object is refused (403), a
//!   kubeconfig without a bearer token gets a clear error, and a standby names the leader.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tidepool_api::SnapshotSchedule;
use tidepool_tests::agents::tidepool_binary_in_guest;
use tidepool_tests::control_plane::ControlPlane;
use tidepool_tests::kubelet::{Kubelet, PodIdentity};
use tidepool_tests::release::*;
use tidepool_tests::snapshots::{Snap, snapshots_under};
use tidepool_tests::zfs_vm::{ZfsVm, host_target_dir};
use tokio::time::Instant;

const WITHIN: Duration = Duration::from_secs(120);
/// Long enough that no slot comes due during the test: only triggers and pokes run.
const INTERVAL: &str = "1w";
const KEEP: usize = 2;

/// The host-built `tidepool` binary (the one the agents in the guest run).
fn tidepool_binary(vm: &ZfsVm) -> PathBuf {
    ok(tidepool_binary_in_guest(vm));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    host_target_dir().join(profile).join("tidepool")
}

struct Cli {
    binary: PathBuf,
    kubeconfig: PathBuf,
}

/// What one run of the CLI printed.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn expect_ok(self, what: &str) -> String {
        assert!(self.ok, "{what} failed:\n{}\n{}", self.stdout, self.stderr);
        self.stdout
    }
    fn json(self, what: &str) -> Value {
        let out = self.expect_ok(what);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: not JSON ({e}):\n{out}"))
    }
}

impl Cli {
    /// `tidepool ARGS --kubeconfig <kubeconfig>`.
    async fn run(&self, args: &[&str]) -> Ran {
        self.run_as(&self.kubeconfig, args).await
    }

    async fn run_as(&self, kubeconfig: &Path, args: &[&str]) -> Ran {
        let out = tokio::time::timeout(
            Duration::from_secs(180),
            tokio::process::Command::new(&self.binary)
                .args(args)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .env_remove("KUBECONFIG")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("tidepool {args:?} did not end within 180 s"))
        .unwrap_or_else(|e| panic!("running {}: {e}", self.binary.display()));
        Ran {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A ServiceAccount in `ns` with a Pod on `node` and an API token; with `get` on
/// snapshotschedules there when `may_get`.
async fn user(cp: &ControlPlane, ns: &str, name: &str, node: &str, may_get: bool) -> PodIdentity {
    let admin = cp.admin_client();
    let meta = |n: &str| ObjectMeta {
        name: Some(n.to_owned()),
        namespace: Some(ns.to_owned()),
        ..ObjectMeta::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta(name),
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("ServiceAccount {name}: {e}"));
    if may_get {
        Api::<Role>::namespaced(admin.clone(), ns)
            .create(
                &PostParams::default(),
                &Role {
                    metadata: meta(name),
                    rules: Some(vec![PolicyRule {
                        api_groups: Some(vec!["tidepool.dev".into()]),
                        resources: Some(vec!["snapshotschedules".into()]),
                        verbs: vec!["get".into()],
                        ..PolicyRule::default()
                    }]),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("Role {name}: {e}"));
        Api::<RoleBinding>::namespaced(admin.clone(), ns)
            .create(
                &PostParams::default(),
                &RoleBinding {
                    metadata: meta(name),
                    role_ref: RoleRef {
                        api_group: "rbac.authorization.k8s.io".into(),
                        kind: "Role".into(),
                        name: name.into(),
                    },
                    subjects: Some(vec![Subject {
                        kind: "ServiceAccount".into(),
                        name: name.into(),
                        namespace: Some(ns.into()),
                        ..Subject::default()
                    }]),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("RoleBinding {name}: {e}"));
    }
    let pod = ok(Kubelet::new(cp)
        .schedule_pod(ns, &format!("{name}-pod"), name, node)
        .await);
    ok(pod.api_identity(cp).await)
}

fn owned_by(snaps: &[Snap], dataset: &str, owner: &str) -> BTreeSet<String> {
    snaps
        .iter()
        .filter(|s| s.dataset == dataset && s.owner == Some((owner.to_owned(), "local".into())))
        .map(Snap::full)
        .collect()
}

fn strings(v: &Value, path: &str) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{path} is not a list: {v}"))
        .iter()
        .map(|x| x["snapshot"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reports_triggers_and_explains_against_real_parts() {
    let started = Instant::now();
    let release = Release::install("cli").await;
    let cp = release.cp;
    let vm = ok(ZfsVm::shared().await);
    let users = ok(cp.create_namespace("cli-users").await);
    let cli = Cli {
        binary: tidepool_binary(vm),
        kubeconfig: cp.kubeconfig_path().to_owned(),
    };

    let pool = vm.unique_pool_name("pc");
    ok(vm.create_pool(&pool, 512 << 20).await);
    let root = format!("{pool}/data");
    for d in ["app", "aged"] {
        ok(vm
            .exec_ok(["zfs", "create", "-p", &format!("{root}/{d}")])
            .await);
    }
    let spec = release.agent_spec("a", &[&pool], &[&root], 0);
    let node = spec.node.clone();
    let agent = release.start_agent(vm, &spec).await;
    release
        .grant(&format!("{}-grant", release.ns), &[&users], &[&root])
        .await;

    let schedule = |dataset: &str| {
        json!({
            "nodeName": node,
            "datasets": [{"name": format!("{root}/{dataset}")}],
            "schedule": {"interval": INTERVAL},
            "retention": {"keepLast": KEEP},
        })
    };
    create_schedule(cp, &users, "nightly", schedule("app")).await;
    create_schedule(cp, &users, "aged", schedule("aged")).await;
    create_schedule(cp, &users, "broken", schedule("missing")).await;

    let http = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        l.local_addr().unwrap_or_else(|e| panic!("{e}"))
    };
    let replica = release.replica("controller-0").await;
    let controller = release
        .start_serving(&replica, Some(users.clone()), http)
        .await;
    for name in ["nightly", "aged"] {
        wait_ready(cp, &users, name, "True", "Reconciled", WITHIN).await;
    }
    wait_ready(cp, &users, "broken", "False", "DatasetNotFound", WITHIN).await;
    eprintln!("schedules reconciled after {:?}", started.elapsed());

    // status: the table, then -o json and -o yaml.
    let table = cli.run(&["status", "-n", &users]).await.expect_ok("status");
    eprintln!("tidepool status:\n{table}");
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "REASON",
            "DEGRADED",
            "LAST",
            "NEXT",
            "LAG",
            "LAST",
            "ERROR"
        ],
        "{table}"
    );
    let row = |name: &str| -> Vec<&str> {
        lines
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row {name}:\n{table}"))
            .split_whitespace()
            .collect()
    };
    assert_eq!(
        row("snapshotschedule/nightly")[..5],
        [
            users.as_str(),
            "snapshotschedule/nightly",
            "True",
            "Reconciled",
            "False"
        ]
    );
    let broken = row("snapshotschedule/broken");
    assert_eq!(broken[2..5], ["False", "DatasetNotFound", "True"]);
    assert_eq!(
        broken[8..11],
        ["DatasetNotFound", "on", &format!("{node}:")]
    );
    assert!(
        lines.iter().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"snapshotschedule/broken") && f.get(2) == Some(&node.as_str())
        }),
        "no per-node row for broken:\n{table}"
    );
    let json_status = cli
        .run(&["status", "-A", "-o", "json"])
        .await
        .json("status -o json");
    let item = |v: &Value, name: &str| -> Value {
        v["items"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|i| i["namespace"] == users.as_str() && i["name"] == name)
            })
            .cloned()
            .unwrap_or_else(|| panic!("no item {name}: {v}"))
    };
    let b = item(&json_status, "broken");
    assert_eq!(b["kind"], "SnapshotSchedule");
    assert_eq!(b["ready"]["status"], "False");
    assert_eq!(b["lastError"]["reason"], "DatasetNotFound");
    assert_eq!(b["lastError"]["node"], node.as_str());
    assert_eq!(b["nodes"][0]["node"], node.as_str());
    assert_eq!(
        item(&json_status, "nightly")["ready"]["reason"],
        "Reconciled"
    );
    let yaml = cli
        .run(&["status", "-n", &users, "-o", "yaml"])
        .await
        .expect_ok("status -o yaml");
    let yaml: Value =
        serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("status -o yaml: {e}\n{yaml}"));
    assert_eq!(
        item(&yaml, "broken")["lastError"]["reason"],
        "DatasetNotFound"
    );

    // nodes: the agent and its pool.
    let nodes = cli.run(&["nodes"]).await.expect_ok("nodes");
    eprintln!("tidepool nodes:\n{nodes}");
    let node_row: Vec<&str> = nodes
        .lines()
        .find(|l| l.split_whitespace().next() == Some(node.as_str()))
        .unwrap_or_else(|| panic!("no row for {node}:\n{nodes}"))
        .split_whitespace()
        .collect();
    assert_eq!(node_row[1], "True", "{nodes}");
    assert_eq!(node_row[3], agent.endpoint.to_string(), "{nodes}");
    assert!(node_row[4].starts_with("2.3"), "OpenZFS version: {nodes}");
    assert!(node_row[6].contains("bookmarks") && node_row[6].contains("raw-send"));
    let pool_row: Vec<&str> = nodes
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(pool.as_str()))
        .unwrap_or_else(|| panic!("no pool row for {pool}:\n{nodes}"))
        .split_whitespace()
        .collect();
    assert_eq!(pool_row[..3], [node.as_str(), pool.as_str(), "ONLINE"]);
    assert!(pool_row[3].ends_with("MiB"), "size: {nodes}");
    let nodes_json = cli
        .run(&["nodes", "-o", "json"])
        .await
        .json("nodes -o json");
    let ours = nodes_json["items"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["metadata"]["name"] == node.as_str()))
        .unwrap_or_else(|| panic!("{node} not in {nodes_json}"));
    assert_eq!(ours["status"]["pools"][0]["name"], pool.as_str());
    assert_eq!(ours["status"]["pools"][0]["health"], "ONLINE");

    // run-now --wait: returns once the snapshot is taken (it is in zfs when it returns).
    let owner = format!("SnapshotSchedule/{users}/nightly");
    let app = format!("{root}/app");
    assert!(owned_by(&snapshots_under(vm, &root).await, &app, &owner).is_empty());
    let t0 = Instant::now();
    let out = cli
        .run(&[
            "run-now",
            "snapshotschedule/nightly",
            "-n",
            &users,
            "--wait",
            "--timeout",
            "2m",
        ])
        .await
        .expect_ok("run-now --wait");
    eprintln!("tidepool run-now --wait ({:?}):\n{out}", t0.elapsed());
    let token = out
        .split("spec.trigger.manual=")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("no token in {out:?}"))
        .to_owned();
    let taken = out
        .lines()
        .find_map(|l| l.strip_prefix("snapshotschedule/nightly ran: "))
        .unwrap_or_else(|| panic!("no result line in {out:?}"))
        .to_owned();
    assert!(
        taken.starts_with("tidepool_") && taken.ends_with("_nightly"),
        "{taken}"
    );
    assert_eq!(
        owned_by(&snapshots_under(vm, &root).await, &app, &owner),
        BTreeSet::from([format!("{app}@{taken}")]),
        "run-now returned before the snapshot was in zfs, or took another"
    );
    let api = Api::<SnapshotSchedule>::namespaced(cp.admin_client(), &users);
    let status = api
        .get("nightly")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .status
        .unwrap_or_default();
    assert_eq!(status.last_manual_trigger.as_deref(), Some(token.as_str()));
    let managers: Vec<String> = api
        .get("nightly")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.iter().any(|m| m == "tidepool-cli"), "{managers:?}");

    // run-now --wait on a failing schedule: non-zero, with the status's last error.
    let failed = cli
        .run(&[
            "run-now",
            "tpss/broken",
            "-n",
            &users,
            "--wait",
            "--timeout",
            "2m",
        ])
        .await;
    assert!(
        !failed.ok,
        "run-now on a broken schedule succeeded: {}",
        failed.stdout
    );
    assert!(
        failed
            .stderr
            .contains(&format!("failed: DatasetNotFound on {node}: dataset")),
        "{}",
        failed.stderr
    );

    // explain: retention due on `aged`. Snapshots made behind the controller's back (it
    // reads zfs only when it reconciles, and `aged` has nothing due): five of its own, one
    // by hand, one of another schedule under the same naming.
    let aged = format!("{root}/aged");
    let aged_owner = format!("SnapshotSchedule/{users}/aged");
    let mut mine = Vec::new();
    for day in 1..=5 {
        let full = format!("{aged}@tidepool_2026010{day}T000000Z_aged");
        ok(vm
            .exec_ok([
                "zfs",
                "snapshot",
                "-o",
                &format!("tidepool.dev:owner={aged_owner}"),
                &full,
            ])
            .await);
        mine.push(full);
    }
    ok(vm
        .exec_ok(["zfs", "snapshot", &format!("{aged}@by-hand")])
        .await);
    ok(vm
        .exec_ok([
            "zfs",
            "snapshot",
            "-o",
            &format!("tidepool.dev:owner=SnapshotSchedule/{users}/other"),
            &format!("{aged}@tidepool_20260106T000000Z_aged"),
        ])
        .await);
    let expect_destroy: BTreeSet<String> = mine[..mine.len() - KEEP].iter().cloned().collect();
    let expect_keep: BTreeSet<String> = mine[mine.len() - KEEP..].iter().cloned().collect();

    let viewer = user(cp, &users, "viewer", &release.node, true).await;
    let outsider = user(cp, &users, "outsider", &release.node, false).await;
    let controller_url = format!("http://{http}");
    let explain_args = [
        "explain",
        "tpss/aged",
        "-n",
        &users,
        "--controller",
        &controller_url,
    ];
    // The viewer's kubeconfig holds its token (tokenFile): the CLI sends it.
    let deadline = Instant::now() + WITHIN;
    let explanation = loop {
        let ran = cli
            .run_as(
                &viewer.kubeconfig_path(),
                &[&explain_args[..], &["-o", "json"]].concat(),
            )
            .await;
        if ran.ok {
            let v: Value = serde_json::from_str(&ran.stdout)
                .unwrap_or_else(|e| panic!("explain -o json: {e}\n{}", ran.stdout));
            let plans = &v["nodes"][0]["retention"][0];
            let seen = plans["destroy"].as_array().map_or(0, Vec::len)
                + plans["keep"].as_array().map_or(0, Vec::len);
            if seen == mine.len() {
                break v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "explain never saw the five snapshots: {}\n{}",
            ran.stdout,
            ran.stderr
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("explain -o json:\n{explanation:#}");
    let n = &explanation["nodes"][0];
    assert_eq!(n["node"], node.as_str());
    assert!(n.get("problem").is_none() && n.get("take").is_none(), "{n}");
    assert!(n["nextDue"].is_string(), "{n}");
    let plan = &n["retention"][0];
    assert_eq!(plan["dataset"], aged.as_str());
    assert_eq!(strings(&plan["destroy"], "destroy"), expect_destroy);
    assert_eq!(strings(&plan["keep"], "keep"), expect_keep);
    assert_eq!(
        plan["notOwned"], 2,
        "the hand-made and the other schedule's"
    );
    for d in plan["destroy"].as_array().into_iter().flatten() {
        assert_eq!(d["reason"], "RetentionExpired", "{d}");
    }
    let keep = plan["keep"].as_array().cloned().unwrap_or_default();
    assert_eq!(keep[0]["snapshot"], mine[4].as_str(), "newest first");
    assert_eq!(keep[0]["reasons"], json!(["newest", "keepLast"]));
    assert_eq!(keep[1]["reasons"], json!(["keepLast"]));
    let text = cli
        .run_as(&viewer.kubeconfig_path(), &explain_args)
        .await
        .expect_ok("explain");
    eprintln!("tidepool explain:\n{text}");
    for d in &expect_destroy {
        assert!(
            text.contains(&format!("DESTROY  {d}  (RetentionExpired")),
            "{d}:\n{text}"
        );
    }
    assert!(
        text.contains(&format!("KEEP     {}  (newest, keepLast)", mine[4])),
        "{text}"
    );
    assert!(text.contains("no snapshot due; next slot"), "{text}");

    // A schedule that cannot run: explain says why, per node, as the condition does.
    let why = cli
        .run_as(
            &viewer.kubeconfig_path(),
            &[
                "explain",
                "snapshotschedule/broken",
                "-n",
                &users,
                "--controller",
                &controller_url,
            ],
        )
        .await
        .expect_ok("explain broken");
    assert!(
        why.contains(&format!(
            "node {node} (pool {pool}):\n  would fail: DatasetNotFound:"
        )),
        "{why}"
    );

    // Refused: a ServiceAccount without `get` on the object, and no token at all.
    let refused = cli
        .run(&[&explain_args[..], &["--token", outsider.token()]].concat())
        .await;
    assert!(!refused.ok, "the outsider was answered: {}", refused.stdout);
    assert!(
        refused.stderr.contains("403")
            && refused.stderr.contains(&format!(
                "system:serviceaccount:{users}:outsider may not get snapshotschedules {users}/aged"
            )),
        "{}",
        refused.stderr
    );
    let bad = cli
        .run(&[&explain_args[..], &["--token", "not-a-token"]].concat())
        .await;
    assert!(!bad.ok && bad.stderr.contains("401"), "{}", bad.stderr);
    // The admin kubeconfig authenticates with a client certificate: no token to send.
    let none = cli.run(&explain_args).await;
    assert!(
        !none.ok && none.stderr.contains("no bearer token"),
        "{}",
        none.stderr
    );

    // A standby has no inventories to explain from: it names the leader.
    let standby_http = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        l.local_addr().unwrap_or_else(|e| panic!("{e}"))
    };
    let standby_replica = release.replica("controller-1").await;
    let standby = release
        .start_serving(&standby_replica, Some(users.clone()), standby_http)
        .await;
    let standby_url = format!("http://{standby_http}");
    let deadline = Instant::now() + WITHIN;
    let answer = loop {
        let ran = cli
            .run_as(
                &viewer.kubeconfig_path(),
                &[
                    "explain",
                    "tpss/aged",
                    "-n",
                    &users,
                    "--controller",
                    &standby_url,
                ],
            )
            .await;
        // Until its port is up the CLI cannot connect; then it must answer 503.
        if ran.stderr.contains("503") || ran.ok || Instant::now() > deadline {
            break ran;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        !answer.ok
            && answer.stderr.contains("503")
            && answer.stderr.contains("only the leader (controller-0)"),
        "standby: {}\n{}",
        answer.stdout,
        answer.stderr
    );
    standby.abort();

    // Then the controller makes exactly those destroys: poke `aged` so it reconciles.
    api.patch(
        "aged",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"test.tidepool.dev/poke": "1"}}})),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + WITHIN;
    loop {
        let snaps = snapshots_under(vm, &aged).await;
        let owned = owned_by(&snaps, &aged, &aged_owner);
        if owned == expect_keep {
            let all: BTreeSet<String> = snaps.iter().map(Snap::full).collect();
            assert!(all.contains(&format!("{aged}@by-hand")), "{all:?}");
            assert!(
                all.contains(&format!("{aged}@tidepool_20260106T000000Z_aged")),
                "{all:?}"
            );
            break;
        }
        assert!(
            owned.is_superset(&expect_keep) && Instant::now() < deadline,
            "the controller's prune differs from explain's: owned {owned:?}, explain kept {expect_keep:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("scenario done after {:?}", started.elapsed());

    controller.abort();
    drop(agent);
    ok(vm.destroy_pool(&pool).await);
}
