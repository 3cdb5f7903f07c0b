//! `scripts/demo.sh`: Tidepool doing its work on real parts, as a user sees it.
//!
//! 1. A real kube-apiserver + etcd with Tidepool's CRDs, and the chart's ServiceAccounts,
//!    RBAC and admission policies installed with real `helm`.
//! 2. OpenZFS 2.3 in a VM standing for node `node-a`: pool `tank` with `tank/apps/...`.
//! 3. `tidepool agent` in the VM with the chart's agent identity (a Pod-bound token, as the
//!    DaemonSet's Pod would have); its `ZfsNode` appears.
//! 4. `tidepool controller` with the chart's controller identity (leader-elected).
//! 5. The user applies the examples (the grant, the hourly GFS schedule as it is, and the
//!    interval schedule with a 5 s interval and `keepLast: 3` so something happens within a
//!    minute), runs the hourly one now with a manual trigger, and watches: snapshots
//!    appearing in zfs, retention pruning, status filling in, events.
//!    The replication example (`examples/replication-node.yaml`) is applied too: a second
//!    agent in the VM stands for node `node-b` with pool `backup`, and the hourly
//!    schedule's snapshots are replicated there, agent to agent.
//! 6. What the user sees (`kubectl get`, `tidepool status`), then a summary of what was
//!    created, pruned, replicated and reported; the demo fails if the product did not do it.
//!
//! `--keep` leaves control plane, agent and controller running until Ctrl-C.

mod show;
mod watch;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use show::{done, kubectl_show, node_show, step, tidepool_show};
use tidepool_api::{ReplicationPolicy, SnapshotSchedule};
use tidepool_reconciler::PinnedAgents;
use tidepool_tests::agents::AgentSpec;
use tidepool_tests::chart::Component;
use tidepool_tests::control_plane::repo_root;
use tidepool_tests::guest_peers::GuestPeers;
use tidepool_tests::release::{AGENT_CALL_TIMEOUT, Release, events_about};
use tidepool_tests::zfs_vm::ZfsVm;
use watch::Tracked;

/// The node the examples name (`nodeName: node-a`).
const NODE: &str = "node-a";
/// The replication example's target node (`nodeName: node-b`).
const NODE_B: &str = "node-b";
/// Where the examples' users live (the grant names it).
const USERS: &str = "default";
const WATCH: Duration = Duration::from_secs(45);
const TICK: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<()> {
    let keep = std::env::args().any(|a| a == "--keep");
    let root = repo_root();
    let examples = root.join("examples");
    let began = std::time::Instant::now();

    let t = step(
        "Kubernetes: a real kube-apiserver + etcd, Tidepool's CRDs, the Helm chart",
        "cached binaries start in seconds; the first run builds them from Go modules, 10-20 min",
    );
    let release = Release::install("tidepool").await;
    let cp = release.cp;
    done("control plane and chart release up", t);
    println!(
        "   chart release in namespace {}: ServiceAccounts {} (controller) and {} (agent), their RBAC, the ZfsNode admission policy",
        release.ns,
        release.chart.service_account(Component::Controller)?,
        release.chart.service_account(Component::Agent)?
    );
    kubectl_show(cp, &["get", "crds"]).await?;

    let t = step(
        "OpenZFS 2.3 in a VM: node-a with pool tank",
        "qemu without KVM: usually 20-60 s to boot; the first run builds the image, about 10 min",
    );
    let vm = ZfsVm::boot().await?;
    done(&format!("VM up (kernel {})", vm.kernel_release()), t);
    vm.create_pool("tank", 512 << 20).await?;
    vm.create_pool("backup", 512 << 20).await?;
    vm.exec_ok(["zfs", "create", "backup/replicas"]).await?;
    for d in ["db", "db-wal", "web", "scratch"] {
        vm.exec_ok(["zfs", "create", "-p", &format!("tank/apps/{d}")])
            .await?;
    }
    vm.exec_ok([
        "dd",
        "if=/dev/urandom",
        "of=/tank/apps/db/data",
        "bs=1M",
        "count=4",
        "status=none",
    ])
    .await?;
    // Someone's own snapshot: Tidepool never destroys what it did not take.
    vm.exec_ok(["zfs", "snapshot", "tank/apps/web@before-upgrade"])
        .await?;
    node_show(&vm, &["zfs", "list", "-o", "name,used", "-r", "tank"]).await?;

    let t = step(
        "The node agent in the VM, as the chart's agent DaemonSet Pod",
        "builds the tidepool binary first if needed: seconds when current, minutes cold",
    );
    let agent_spec = AgentSpec {
        node: NODE.to_owned(),
        ..release.agent_spec("a", &["tank"], &["tank/apps"], 0)
    };
    let agent = release.start_agent(&vm, &agent_spec).await;
    done(
        &format!(
            "agent of {NODE} serving at {} and registered",
            agent.endpoint
        ),
        t,
    );
    let agent_b_spec = AgentSpec {
        node: NODE_B.to_owned(),
        ..release.agent_spec("b", &["backup"], &["backup/replicas"], 1)
    };
    let agent_b = release.start_agent(&vm, &agent_b_spec).await;
    done(
        &format!(
            "and the agent of {NODE_B} (pool backup) at {}",
            agent_b.endpoint
        ),
        t,
    );
    kubectl_show(cp, &["get", "zfsnodes"]).await?;
    // The interval example selects nodes by this label, as an admin would set it.
    kubectl_show(cp, &["label", "node", NODE, "tidepool.dev/zfs=true"]).await?;

    let t = step(
        "The controller, as the chart's controller Deployment Pod (leader-elected)",
        "",
    );
    let replica = release.replica("tidepool-controller-0").await;
    // The product's call timeout (`tidepool controller` uses 60 s): a prune of several
    // snapshots on this emulated node takes longer than the harness's quick 5 s.
    let agents = PinnedAgents::new(replica.agent_token.clone(), AGENT_CALL_TIMEOUT);
    // Both "nodes" are one VM: the source agent reaches node-b's agent at its guest port.
    let agents = GuestPeers::new(&vm, agents);
    let controller = release.start_with(&replica, None, agents as _).await;
    let leases: Api<Lease> = Api::namespaced(cp.admin_client(), &release.ns);
    let lease = release.lease_name();
    loop {
        let holder = leases
            .get_opt(&lease)
            .await?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        if holder.as_deref() == Some(replica.name.as_str()) {
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("the controller did not take the Lease {lease} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    done(&format!("{} holds Lease {lease}", replica.name), t);

    step("The user applies the examples", "");
    let interval = short_interval_copy(&std::fs::read_to_string(
        examples.join("snapshot-schedule-interval.yaml"),
    )?)?;
    let interval_file = std::env::temp_dir().join(format!(
        "tidepool-demo-interval-{}.yaml",
        std::process::id()
    ));
    std::fs::write(&interval_file, &interval)?;
    println!(
        "   examples/snapshot-schedule-interval.yaml is applied with `interval: 5s` and `keepLast: 3` (no keepWithin) instead of 15m / 8 / 1d, so it acts within a minute"
    );
    for file in [
        examples.join("dataset-grant.yaml"),
        examples.join("snapshot-schedule-gfs.yaml"),
        interval_file.clone(),
        examples.join("replication-node.yaml"),
    ] {
        let path = file.to_str().context("non-UTF-8 path")?;
        kubectl_show(cp, &["apply", "--server-side", "-n", USERS, "-f", path]).await?;
    }
    let _ = std::fs::remove_file(&interval_file);
    let t = step(
        "kubectl wait --for=condition=Ready",
        "the controller checks grant, node and datasets",
    );
    kubectl_show(
        cp,
        &[
            "wait",
            "-n",
            USERS,
            "--for=condition=Ready",
            "--timeout=90s",
            "snapshotschedules/db-hourly",
            "snapshotschedules/apps-frequent",
        ],
    )
    .await?;
    done("both Ready", t);
    kubectl_show(cp, &["get", "snapshotschedules", "-n", USERS, "-o", "wide"]).await?;

    step(
        "Run now: a manual trigger on the hourly schedule (GitOps-safe, echoed to status)",
        "",
    );
    kubectl_show(
        cp,
        &[
            "patch",
            "snapshotschedule",
            "db-hourly",
            "-n",
            USERS,
            "--type=merge",
            "-p",
            r#"{"spec":{"trigger":{"manual":"demo-1"}}}"#,
        ],
    )
    .await?;

    step(
        &format!(
            "Watching for {}s: snapshots in zfs on node-a, retention, status",
            WATCH.as_secs()
        ),
        "",
    );
    let mut tracked = [
        Tracked::new(USERS, "apps-frequent", "tank/apps"),
        Tracked::new(USERS, "db-hourly", "tank/apps"),
    ];
    let watch_start = std::time::Instant::now();
    while watch_start.elapsed() < WATCH {
        tokio::time::sleep(TICK).await;
        for t in &mut tracked {
            t.read(&vm).await;
        }
        let lines: Vec<String> = tracked.iter().map(Tracked::line).collect();
        println!(
            "   +{:>2}s  {}",
            watch_start.elapsed().as_secs(),
            lines.join("  |  ")
        );
    }

    let t = step(
        "Replication: the hourly schedule's snapshot, node-a to node-b, agent to agent",
        "the policy looks for new source snapshots every few seconds here (30 s by default)",
    );
    kubectl_show(
        cp,
        &[
            "wait",
            "-n",
            USERS,
            "--for=condition=Ready",
            "--timeout=120s",
            "replicationpolicies/db-to-node-b",
        ],
    )
    .await?;
    done("db-to-node-b Ready", t);

    step("What the user sees", "");
    kubectl_show(cp, &["get", "snapshotschedules", "-n", USERS, "-o", "wide"]).await?;
    kubectl_show(
        cp,
        &["get", "replicationpolicies", "-n", USERS, "-o", "wide"],
    )
    .await?;
    tidepool_show(cp, &["status", "-n", USERS]).await?;
    kubectl_show(
        cp,
        &[
            "get",
            "snapshotschedule",
            "apps-frequent",
            "-n",
            USERS,
            "-o",
            "jsonpath={.status.nodes}",
        ],
    )
    .await?;
    println!();
    kubectl_show(cp, &["get", "events", "-n", USERS]).await?;
    node_show(
        &vm,
        &[
            "zfs",
            "list",
            "-t",
            "snapshot",
            "-o",
            "name,tidepool.dev:owner",
            "-r",
            "tank",
            "backup",
        ],
    )
    .await?;

    summary(&release, &vm, &tracked).await?;
    println!("\ndemo done in {:.0}s", began.elapsed().as_secs_f64());

    if keep {
        println!(
            "\nstill up: export KUBECONFIG={}  (kubectl: {}; Ctrl-C stops everything)",
            cp.kubeconfig_path().display(),
            cp.binaries().kubectl().display()
        );
        tokio::signal::ctrl_c().await?;
    }
    controller.abort();
    drop(agent);
    drop(agent_b);
    Ok(())
}

/// The interval example with a 5 s interval and a retention that prunes within a minute.
/// Fails if the example no longer reads as expected, so the demo notices when it drifts.
fn short_interval_copy(example: &str) -> Result<String> {
    let mut out = String::new();
    let mut replaced = 0;
    for line in example.lines() {
        let trimmed = line.trim();
        match trimmed {
            "interval: 15m" => {
                out.push_str(&line.replace("15m", "5s"));
                replaced += 1;
            }
            "keepLast: 8" => {
                out.push_str(&line.replace('8', "3"));
                replaced += 1;
            }
            "keepWithin: 1d" => {
                replaced += 1;
                continue;
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    if replaced != 3 {
        bail!(
            "examples/snapshot-schedule-interval.yaml changed: the demo's edit found {replaced} of 3 lines"
        );
    }
    Ok(out)
}

/// What Tidepool did, checked: the demo fails if the product did not do it.
async fn summary(release: &Release, vm: &ZfsVm, tracked: &[Tracked]) -> Result<()> {
    step("Summary", "");
    let api: Api<SnapshotSchedule> = Api::namespaced(release.cp.admin_client(), USERS);
    for t in tracked {
        let status = api.get(&t.schedule).await?.status.unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| format!("{} ({})", c.status, c.reason))
            .unwrap_or_else(|| "unknown".to_owned());
        println!("   {}: Ready {ready}", t.schedule);
        println!(
            "     snapshot sets taken: {}, pruned by retention: {}, in zfs now: {}",
            t.seen.len(),
            t.pruned(),
            t.present.len()
        );
        for n in &status.nodes {
            println!(
                "     node {}: {} snapshots, {} pruned in all",
                n.node, n.snapshot_count, n.pruned_total
            );
        }
        println!(
            "     last {} ({}), next {}",
            status
                .last_snapshot_time
                .as_ref()
                .map_or("-".to_owned(), |x| x.0.to_string()),
            status.last_snapshot_name.as_deref().unwrap_or("-"),
            status
                .next_snapshot_time
                .as_ref()
                .map_or("-".to_owned(), |x| x.0.to_string()),
        );
        if let Some(token) = &status.last_manual_trigger {
            println!("     manual trigger {token:?} done");
        }
        let reasons: Vec<String> = events_about(release.cp, USERS, &t.schedule)
            .await
            .iter()
            .filter_map(|e| e.reason.clone())
            .collect();
        println!("     events: {}", reasons.join(", "));
    }
    let manual = vm
        .exec_ok([
            "zfs",
            "list",
            "-H",
            "-o",
            "name",
            "tank/apps/web@before-upgrade",
        ])
        .await;
    println!(
        "   tank/apps/web@before-upgrade (taken by hand): {}",
        if manual.is_ok() { "untouched" } else { "GONE" }
    );
    let scratch = vm
        .exec_ok([
            "zfs",
            "list",
            "-H",
            "-t",
            "snapshot",
            "-o",
            "name",
            "tank/apps/scratch",
        ])
        .await?;
    println!(
        "   tank/apps/scratch (excluded): {} snapshots",
        scratch.lines().count()
    );

    // The replica: the hourly schedule's snapshot on node-b with the source's GUID.
    let policies: Api<ReplicationPolicy> = Api::namespaced(release.cp.admin_client(), USERS);
    let policy = policies
        .get("db-to-node-b")
        .await?
        .status
        .unwrap_or_default();
    let common = policy.last_common_snapshot.clone().unwrap_or_default();
    let guid = |dataset: &str| {
        let name = format!("{dataset}@{common}");
        async move {
            vm.exec_ok(["zfs", "get", "-H", "-o", "value", "guid", &name])
                .await
                .map(|g| g.trim().to_owned())
                .unwrap_or_default()
        }
    };
    let (source_guid, replica_guid) =
        (guid("tank/apps/db").await, guid("backup/replicas/db").await);
    println!(
        "   db-to-node-b: {common} on node-b, GUID {} the source's; {} bytes sent, last sync {}",
        if !common.is_empty() && source_guid == replica_guid {
            "equal to"
        } else {
            "DIFFERENT from"
        },
        policy.last_sync_bytes.unwrap_or(0),
        policy
            .last_sync_time
            .as_ref()
            .map_or("-".to_owned(), |t| t.0.to_string()),
    );

    let frequent = &tracked[0];
    let hourly = &tracked[1];
    if common.is_empty() || source_guid.is_empty() || source_guid != replica_guid {
        bail!("db-to-node-b did not replicate the hourly snapshot to node-b: {policy:?}");
    }
    if frequent.seen.len() < 4 || frequent.pruned() == 0 {
        bail!(
            "apps-frequent took {} sets and pruned {} in {WATCH:?}",
            frequent.seen.len(),
            frequent.pruned()
        );
    }
    if frequent.present.len() > 4 {
        bail!(
            "apps-frequent keeps {} sets, keepLast is 3",
            frequent.present.len()
        );
    }
    if hourly.seen.len() != 1 {
        bail!(
            "the manual trigger of db-hourly took {} sets, not one",
            hourly.seen.len()
        );
    }
    if manual.is_err() || scratch.lines().count() != 0 {
        bail!(
            "a snapshot Tidepool must not touch was touched, or the excluded dataset was snapshotted"
        );
    }
    Ok(())
}
