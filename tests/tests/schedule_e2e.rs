//! Snapshot schedules end to end: the real kube-apiserver with the chart's RBAC, two
//! `tidepool agent` processes in the OpenZFS VM (one per simulated node, each its own pool
//! and dataset roots, Pod-bound tokens), and one `tidepool controller` replica on the host
//! with the chart's controller ServiceAccount and the real pinned-TLS transport. No admin
//! credentials for controller or agents; the admin only plays the user and reads.
//!
//! One VM and one scenario: the two agents take all of the VM's forwarded ports. A schedule
//! names datasets of one pool (a CEL rule), and pool names are unique within the one guest
//! kernel, so each node gets its own schedule (`apps-a` on node a over pool `pa…`, `apps-b`
//! on node b over `pb…`), both reconciled by the one controller at the same time.
//!
//! Asserted from fresh `zfs list`/`zfs get` in the guest and from the API: atomic takes
//! (one createtxg across a node's datasets, recursive and exclude honoured), names
//! `<prefix>_<UTC>_<label>`, the owner set locally; retention keeps exactly keepLast per
//! dataset; a manual snapshot and another schedule's snapshot are untouched; Ready=True
//! with last/next times and per-node counts, `kubectl wait --for=condition=Ready`; a
//! manual trigger runs once and is echoed; suspend stops snapshots and pruning.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tidepool_api::{DatasetGrant, SnapshotSchedule};
use tidepool_tests::agents::{AgentSpec, GuestAgent};
use tidepool_tests::chart::Component;
use tidepool_tests::release::*;
use tidepool_tests::snapshots::{Snap, owned_whole, snapshots_under};
use tidepool_tests::zfs_vm::ZfsVm;
use tokio::time::Instant;

const INTERVAL_SECS: u64 = 3;
const KEEP: usize = 2;
const WITHIN: Duration = Duration::from_secs(120);

/// One node's part of the scenario.
struct NodeCase {
    node: String,
    pool: String,
    schedule: String,
    owner: String,
}

impl NodeCase {
    fn root(&self) -> String {
        format!("{}/data", self.pool)
    }
    /// The datasets the schedule covers: `app1` recursively without `app1/scratch`, `app2`.
    fn covered(&self) -> BTreeSet<String> {
        ["app1", "app1/db", "app2"]
            .iter()
            .map(|d| format!("{}/{d}", self.root()))
            .collect()
    }
    fn spec(&self, interval: &str) -> serde_json::Value {
        let root = self.root();
        json!({
            "nodeName": self.node,
            "datasets": [
                {"name": format!("{root}/app1"), "recursive": true,
                 "exclude": [format!("{root}/app1/scratch")]},
                {"name": format!("{root}/app2")},
            ],
            "schedule": {"interval": interval},
            "retention": {"keepLast": KEEP},
        })
    }
    /// The schedule's snapshots on this node by short name, read outside a prune or a take.
    async fn owned(&self, vm: &ZfsVm) -> BTreeMap<String, Vec<Snap>> {
        owned_whole(
            vm,
            &self.node,
            &self.root(),
            &self.owner,
            self.covered().len(),
        )
        .await
    }
}

/// `tidepool_<YYYYMMDD>T<HHMMSS>[.mmm]Z_<label>`, the time a valid UTC instant (the
/// milliseconds only for sub-second schedules).
fn assert_named(short: &str, label: &str) {
    let time = short
        .strip_prefix("tidepool_")
        .and_then(|r| r.strip_suffix(&format!("_{label}")))
        .unwrap_or_else(|| panic!("{short} is not tidepool_<UTC>_{label}"));
    let whole = time.strip_suffix('Z').unwrap_or("");
    let (whole, millis) = whole.split_once('.').unwrap_or((whole, "000"));
    assert!(
        whole.len() == 15
            && whole.as_bytes()[8] == b'T'
            && whole[..8].bytes().all(|b| b.is_ascii_digit())
            && whole[9..].bytes().all(|b| b.is_ascii_digit())
            && millis.len() == 3
            && millis.bytes().all(|b| b.is_ascii_digit()),
        "{short}: the time is not basic ISO 8601 UTC"
    );
    let parsed = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", whole)
        .unwrap_or_else(|e| panic!("{short}: {e}"));
    let age = jiff::Timestamp::now().duration_since(
        parsed
            .to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap_or_else(|e| panic!("{e}"))
            .timestamp(),
    );
    assert!(
        age.as_secs() >= -5 && age.as_secs() < 600,
        "{short} is not a recent UTC time"
    );
}

/// Every owned snapshot: on exactly the covered datasets, in one transaction, well named,
/// owned locally. Returns the short names, oldest first.
fn assert_atomic_named_owned(case: &NodeCase, owned: &BTreeMap<String, Vec<Snap>>) -> Vec<String> {
    let mut order: Vec<(u64, String)> = Vec::new();
    for (short, snaps) in owned {
        let datasets: BTreeSet<String> = snaps.iter().map(|s| s.dataset.clone()).collect();
        assert_eq!(datasets, case.covered(), "{short}: recursive and exclude");
        let txgs: BTreeSet<u64> = snaps.iter().map(|s| s.createtxg).collect();
        assert_eq!(txgs.len(), 1, "{short}: not one transaction: {snaps:?}");
        assert_named(short, &case.schedule);
        for s in snaps {
            assert_eq!(
                s.owner,
                Some((case.owner.clone(), "local".to_owned())),
                "{}@{short}",
                s.dataset
            );
        }
        order.push((snaps[0].createtxg, short.clone()));
    }
    order.sort();
    order.into_iter().map(|(_, s)| s).collect()
}

async fn schedule_status(
    api: &Api<SnapshotSchedule>,
    name: &str,
) -> tidepool_api::snapshot_schedule::SnapshotScheduleStatus {
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .status
        .unwrap_or_default()
}

async fn patch_spec(api: &Api<SnapshotSchedule>, name: &str, spec: serde_json::Value) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": spec })),
    )
    .await
    .unwrap_or_else(|e| panic!("patching {name}: {e}"));
}

/// How many times `name` changes (status writes: the spec is left alone) during `span`.
async fn count_modifications(api: &Api<SnapshotSchedule>, name: &str, span: Duration) -> usize {
    use futures::StreamExt;
    let config = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = kube::runtime::watcher(api.clone(), config).boxed();
    let mut versions = BTreeSet::new();
    let mut first = None;
    let end = Instant::now() + span;
    while let Ok(Some(event)) = tokio::time::timeout_at(end, events.next()).await {
        if let Ok(
            kube::runtime::watcher::Event::Apply(o) | kube::runtime::watcher::Event::InitApply(o),
        ) = event
        {
            let rv = o.metadata.resource_version.unwrap_or_default();
            // The initial listing's version is where counting starts, not a write.
            if first.is_none() {
                first = Some(rv);
            } else if first.as_ref() != Some(&rv) {
                versions.insert(rv);
            }
        }
    }
    versions.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_snapshot_prune_report_trigger_and_suspend_on_real_agents() {
    let started = Instant::now();
    let release = Release::install("sched").await;
    let cp = release.cp;
    let vm = ok(ZfsVm::shared().await);
    let ns = release.ns.clone();
    let users = ok(cp.create_namespace("sched-users").await);
    let agent_sa = ok(release.chart.service_account(Component::Agent)).to_owned();
    let controller_sa = ok(release.chart.service_account(Component::Controller)).to_owned();

    let cases = [
        ("a", vm.unique_pool_name("pa")),
        ("b", vm.unique_pool_name("pb")),
    ]
    .map(|(n, pool)| NodeCase {
        node: format!("{ns}-{n}"),
        pool,
        schedule: format!("apps-{n}"),
        owner: format!("SnapshotSchedule/{users}/apps-{n}"),
    });
    for c in &cases {
        ok(vm.create_pool(&c.pool, 512 << 20).await);
        let root = c.root();
        for d in ["app1/db", "app1/scratch", "app2"] {
            ok(vm
                .exec_ok(["zfs", "create", "-p", &format!("{root}/{d}")])
                .await);
        }
        // A snapshot someone took by hand: no owner.
        ok(vm
            .exec_ok(["zfs", "snapshot", &format!("{root}/app1@manual")])
            .await);
    }
    // Another schedule's snapshot, with a name this schedule's retention could mistake.
    let foreign_owner = format!("SnapshotSchedule/{users}/other");
    let foreign = format!("{}/app1@tidepool_20231114T221320Z_apps-a", cases[0].root());
    ok(vm
        .exec_ok([
            "zfs",
            "snapshot",
            "-o",
            &format!("tidepool.dev:owner={foreign_owner}"),
            &foreign,
        ])
        .await);
    let untouchable: Vec<Snap> = {
        let mut v = Vec::new();
        for c in &cases {
            v.extend(
                snapshots_under(vm, &c.root())
                    .await
                    .into_iter()
                    .filter(|s| s.owner.as_ref().map(|o| o.0.as_str()) != Some(c.owner.as_str())),
            );
        }
        v
    };
    assert_eq!(untouchable.len(), 3, "{untouchable:?}");

    let [p1, p2, p3, p4] = ZfsVm::AGENT_PORTS;
    let mut agents = Vec::new();
    for (c, (api_port, metrics_port)) in cases.iter().zip([(p1, p2), (p3, p4)]) {
        let spec = AgentSpec {
            node: c.node.clone(),
            namespace: ns.clone(),
            agent_service_account: agent_sa.clone(),
            controller_service_account: format!("{ns}/{controller_sa}"),
            pools: vec![c.pool.clone()],
            dataset_roots: vec![c.root()],
            api_port,
            metrics_port,
            heartbeat: "5s".to_owned(),
        };
        agents.push(ok(GuestAgent::start(vm, cp, &spec).await));
    }
    for a in &agents {
        ok(a.wait_registered(vm, cp).await);
    }
    eprintln!("agents registered after {:?}", started.elapsed());

    Api::<DatasetGrant>::all(cp.admin_client())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "tidepool.dev/v1alpha1", "kind": "DatasetGrant",
                "metadata": {"name": format!("{ns}-grant")},
                "spec": {"namespaces": [users],
                         "datasets": cases.iter().map(NodeCase::root).collect::<Vec<_>>()},
            }))
            .unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let interval = format!("{INTERVAL_SECS}s");
    for c in &cases {
        create_schedule(cp, &users, &c.schedule, c.spec(&interval)).await;
    }
    let replica = release.replica("controller-0").await;
    let controller = release.start(&replica, Some(users.clone())).await;

    // `kubectl wait` as a user would.
    let applied = Instant::now();
    for c in &cases {
        let out = cp
            .kubectl()
            .args([
                "wait",
                "-n",
                &users,
                "--for=condition=Ready",
                "--timeout=120s",
                &format!("snapshotschedules.tidepool.dev/{}", c.schedule),
            ])
            .output()
            .await
            .unwrap_or_else(|e| panic!("kubectl: {e}"));
        assert!(
            out.status.success(),
            "kubectl wait {}: {}{}",
            c.schedule,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("kubectl wait Ready after {:?}", applied.elapsed());

    // A few intervals: keepLast owned per dataset once more than keepLast runs happened,
    // pruning seen in status; each reading is fresh from zfs.
    let schedules: Api<SnapshotSchedule> = Api::namespaced(cp.admin_client(), &users);
    let mut first_seen: BTreeMap<String, String> = BTreeMap::new();
    for c in &cases {
        let deadline = Instant::now() + WITHIN;
        loop {
            let owned = c.owned(vm).await;
            let order = assert_atomic_named_owned(c, &owned);
            assert!(
                order.len() <= KEEP + 1,
                "{}: {} owned snapshots, keepLast {KEEP}: {order:?}",
                c.node,
                order.len()
            );
            if let Some(oldest) = order.first() {
                first_seen.entry(c.node.clone()).or_insert(oldest.clone());
            }
            let status = schedule_status(&schedules, &c.schedule).await;
            let pruned = status.nodes.first().map_or(0, |n| n.pruned_total);
            let gone = first_seen
                .get(&c.node)
                .is_some_and(|f| !owned.contains_key(f));
            if order.len() == KEEP && pruned >= 2 * 3 && gone {
                eprintln!(
                    "{}: {order:?} kept after {:?}, status pruned {pruned}",
                    c.node,
                    applied.elapsed()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: retention did not settle at {KEEP}: {order:?}, pruned {pruned}\n{}",
                c.node,
                agents[0].log_tail(vm).await
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // The manual and the other schedule's snapshots, untouched (same GUIDs).
    let mut still: Vec<Snap> = Vec::new();
    for c in &cases {
        still.extend(snapshots_under(vm, &c.root()).await);
    }
    for u in &untouchable {
        assert!(
            still.contains(u),
            "{}@{} was touched or destroyed",
            u.dataset,
            u.short
        );
    }
    // Nothing under the excluded dataset but what was there.
    for c in &cases {
        let scratch = format!("{}/app1/scratch", c.root());
        assert!(
            still.iter().all(|s| s.dataset != scratch),
            "{scratch} was snapshotted"
        );
    }

    // Status: Ready=True, last before next, one node with its counts.
    for c in &cases {
        let status = schedule_status(&schedules, &c.schedule).await;
        let ready = status
            .conditions
            .iter()
            .find(|x| x.type_ == "Ready")
            .unwrap_or_else(|| panic!("{}: no Ready: {status:?}", c.schedule));
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Reconciled")
        );
        let last = status.last_snapshot_time.clone().map(|t| t.0);
        let next = status.next_snapshot_time.clone().map(|t| t.0);
        assert!(
            matches!((last, next), (Some(l), Some(n)) if n > l),
            "{status:?}"
        );
        let last_name = status.last_snapshot_name.clone().unwrap_or_default();
        assert_named(&last_name, &c.schedule);
        assert_eq!(status.nodes.len(), 1, "{status:?}");
        let n = &status.nodes[0];
        assert_eq!(n.node, c.node);
        let per_dataset = i64::try_from(KEEP).unwrap_or(0);
        let datasets = i64::try_from(c.covered().len()).unwrap_or(0);
        // The status is written after the run's prune, so it reads keepLast per dataset.
        assert_eq!(n.snapshot_count, per_dataset * datasets, "{n:?}");
        assert!(n.pruned_total >= datasets * 2, "{n:?}");
        assert!(
            n.last_snapshot_time.is_some() && n.last_error.is_none(),
            "{n:?}"
        );
        assert!(status.last_error.is_none(), "{status:?}");
        let cond = |t: &str| {
            status
                .conditions
                .iter()
                .find(|x| x.type_ == t)
                .map(|x| (x.status.clone(), x.reason.clone()))
        };
        assert_eq!(
            cond("Progressing"),
            Some(("False".into(), "WaitingForSchedule".into()))
        );
        assert_eq!(
            cond("Degraded"),
            Some(("False".into(), "AsExpected".into()))
        );
    }

    // A sub-second schedule does not write its status at every run: routine changes wait
    // for the controller's status_min_interval (5 s by default). Counted from a watch, so
    // no write goes unseen; runs are counted from the new snapshot names in zfs.
    let fast = &cases[0];
    patch_spec(
        &schedules,
        &fast.schedule,
        json!({"schedule": {"interval": "500ms"}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen_before: BTreeSet<String> = fast.owned(vm).await.into_keys().collect();
    let writes = count_modifications(&schedules, &fast.schedule, Duration::from_secs(15)).await;
    let mut runs = fast.owned(vm).await;
    runs.retain(|k, _| !seen_before.contains(k));
    eprintln!(
        "500ms schedule: {writes} status writes in 15 s, {}+ runs",
        runs.len()
    );
    // 15 s / 5 s = 3 windows, plus one for where the count starts in a window.
    assert!(writes <= 4, "{writes} status writes in 15 s at 500 ms");
    assert!(!runs.is_empty(), "the 500 ms schedule did not run");
    patch_spec(
        &schedules,
        &fast.schedule,
        json!({"schedule": {"interval": interval}}),
    )
    .await;

    // Manual trigger: with a long interval nothing is due, so exactly one run follows the
    // token, echoed to status, and no second one.
    for c in &cases {
        patch_spec(
            &schedules,
            &c.schedule,
            json!({"schedule": {"interval": "1h"}}),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(INTERVAL_SECS + 2)).await;
    let mut before_trigger = BTreeMap::new();
    for c in &cases {
        before_trigger.insert(c.node.clone(), c.owned(vm).await);
    }
    for c in &cases {
        patch_spec(
            &schedules,
            &c.schedule,
            json!({"trigger": {"manual": "run-1"}}),
        )
        .await;
    }
    for c in &cases {
        let deadline = Instant::now() + WITHIN;
        loop {
            let s = schedule_status(&schedules, &c.schedule).await;
            if s.last_manual_trigger.as_deref() == Some("run-1") {
                break;
            }
            assert!(Instant::now() < deadline, "trigger not echoed: {s:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2 * INTERVAL_SECS)).await;
    for c in &cases {
        let owned = c.owned(vm).await;
        let order = assert_atomic_named_owned(c, &owned);
        let before: BTreeSet<&String> = before_trigger[&c.node].keys().collect();
        let new: Vec<&String> = order.iter().filter(|s| !before.contains(s)).collect();
        assert_eq!(new.len(), 1, "{}: the trigger ran {new:?}", c.node);
        assert_eq!(order.len(), KEEP, "{}: retention after the trigger", c.node);
        assert_eq!(
            order.last(),
            new.first().copied(),
            "the newest is the manual run"
        );
    }

    // Suspend (with the short interval back): no snapshot taken, none pruned.
    for c in &cases {
        patch_spec(
            &schedules,
            &c.schedule,
            json!({"suspend": true, "schedule": {"interval": interval}}),
        )
        .await;
        wait_ready(cp, &users, &c.schedule, "True", "Suspended", WITHIN).await;
    }
    let mut at_suspend = BTreeMap::new();
    for c in &cases {
        at_suspend.insert(c.node.clone(), snapshots_under(vm, &c.root()).await);
    }
    tokio::time::sleep(Duration::from_secs(3 * INTERVAL_SECS)).await;
    for c in &cases {
        assert_eq!(
            snapshots_under(vm, &c.root()).await,
            at_suspend[&c.node],
            "{}: suspended, yet it acted",
            c.node
        );
    }
    eprintln!("scenario done after {:?}", started.elapsed());

    controller.abort();
    drop(agents);
    for c in &cases {
        ok(vm.destroy_pool(&c.pool).await);
    }
}
