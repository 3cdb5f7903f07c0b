//! `tidepool status`: every SnapshotSchedule and ReplicationPolicy at a glance: ready or
//! not and why, last and next run, lag, the last error and where, per node.

use anyhow::Context as _;
use jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt as _};
use serde::Serialize;
use tidepool_api::condition::{find, kind};
use tidepool_api::replication_policy::SyncProgress;
use tidepool_api::snapshot_schedule::NodeSnapshotStatus;
use tidepool_api::{Condition, LastError, ReplicationPolicy, SnapshotSchedule};

use super::common::{Common, Output};
use super::format::{or_none, since, table, until};

/// One object's state, as `-o json|yaml` prints it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub suspended: bool,
    pub ready: Option<Condition>,
    pub degraded: Option<Condition>,
    /// The newest snapshot (schedules) or sync (policies).
    pub last_run: Option<Timestamp>,
    pub next_run: Option<Timestamp>,
    /// Policies: how far the replica is behind (now minus the newest replicated snapshot).
    pub lag_seconds: Option<i64>,
    pub last_error: Option<LastError>,
    /// Schedules: each node's count, prune total and error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeSnapshotStatus>,
    /// Policies: the send under way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<SyncProgress>,
}

/// `{"items": [...]}`, as kubectl's lists.
#[derive(Debug, Serialize)]
pub struct Overview {
    pub items: Vec<ObjectStatus>,
}

fn api<K>(client: &kube::Client, c: &Common, ns: &str) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    if c.all_namespaces {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), ns)
    }
}

fn conditions(list: &[Condition]) -> (Option<Condition>, Option<Condition>) {
    (
        find(list, kind::READY).cloned(),
        find(list, kind::DEGRADED).cloned(),
    )
}

pub fn of_schedule(s: &SnapshotSchedule) -> ObjectStatus {
    let st = s.status.clone().unwrap_or_default();
    let (ready, degraded) = conditions(&st.conditions);
    ObjectStatus {
        kind: "SnapshotSchedule",
        namespace: s.namespace().unwrap_or_default(),
        name: s.name_any(),
        suspended: s.spec.suspend,
        ready,
        degraded,
        last_run: st.last_snapshot_time.map(|t| t.0),
        next_run: st.next_snapshot_time.map(|t| t.0),
        lag_seconds: None,
        last_error: st.last_error,
        nodes: st.nodes,
        progress: None,
    }
}

pub fn of_policy(p: &ReplicationPolicy, now: Timestamp) -> ObjectStatus {
    let st = p.status.clone().unwrap_or_default();
    let (ready, degraded) = conditions(&st.conditions);
    ObjectStatus {
        kind: "ReplicationPolicy",
        namespace: p.namespace().unwrap_or_default(),
        name: p.name_any(),
        suspended: p.spec.suspend,
        ready,
        degraded,
        last_run: st.last_sync_time.map(|t| t.0),
        next_run: st.next_sync_time.map(|t| t.0),
        lag_seconds: st
            .last_replicated_snapshot_time
            .map(|t| now.duration_since(t.0).as_secs()),
        last_error: st.last_error,
        nodes: Vec::new(),
        progress: st.progress,
    }
}

/// `Reason on node: message`; the node is said once even when the message starts with it.
pub fn error_text(e: &LastError) -> String {
    match &e.node {
        Some(n) => {
            let message = e
                .message
                .strip_prefix(&format!("node {n}: "))
                .unwrap_or(&e.message);
            format!("{} on {n}: {message}", e.reason)
        }
        None => format!("{}: {}", e.reason, e.message),
    }
}

fn error_cell(e: Option<&LastError>) -> String {
    e.map_or_else(|| "<none>".into(), error_text)
}

/// `sending:45%` (of the `zfs send -nP` estimate), or `sending` without one.
fn sending(p: &SyncProgress) -> String {
    match p.bytes_total.filter(|t| *t > 0) {
        Some(total) => format!("sending:{}%", (p.bytes_done.min(total) * 100) / total),
        None => "sending".into(),
    }
}

/// The overview table, then one row per schedule and node.
pub fn render(items: &[ObjectStatus], now: Timestamp) -> String {
    let cond = |c: &Option<Condition>| {
        (
            or_none(c.as_ref().map(|c| c.status.as_str())),
            or_none(c.as_ref().map(|c| c.reason.as_str())),
        )
    };
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|o| {
            let (ready, reason) = cond(&o.ready);
            let degraded = or_none(o.degraded.as_ref().map(|c| c.status.as_str()));
            vec![
                o.namespace.clone(),
                format!("{}/{}", o.kind.to_ascii_lowercase(), o.name),
                ready,
                reason,
                degraded,
                since(o.last_run, now),
                // While a send runs, how far it is matters more than when the next is.
                o.progress
                    .as_ref()
                    .map_or_else(|| until(o.next_run, now), sending),
                o.lag_seconds.map_or_else(
                    || "-".into(),
                    |s| super::format::age(jiff::SignedDuration::from_secs(s)),
                ),
                error_cell(o.last_error.as_ref()),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "No SnapshotSchedules or ReplicationPolicies found.\n".into();
    }
    let mut out = table(
        &[
            "namespace",
            "name",
            "ready",
            "reason",
            "degraded",
            "last",
            "next",
            "lag",
            "last error",
        ],
        &rows,
    );
    let node_rows: Vec<Vec<String>> = items
        .iter()
        .flat_map(|o| {
            o.nodes.iter().map(|n| {
                vec![
                    o.namespace.clone(),
                    format!("{}/{}", o.kind.to_ascii_lowercase(), o.name),
                    n.node.clone(),
                    since(n.last_snapshot_time.as_ref().map(|t| t.0), now),
                    n.snapshot_count.to_string(),
                    n.pruned_total.to_string(),
                    error_cell(n.last_error.as_ref()),
                ]
            })
        })
        .collect();
    if !node_rows.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &[
                "namespace",
                "name",
                "node",
                "last",
                "snapshots",
                "pruned",
                "error",
            ],
            &node_rows,
        ));
    }
    out
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let (c, rest) = Common::parse(args, &[])?;
    if let Some(extra) = rest.first() {
        anyhow::bail!("tidepool status: unexpected {extra:?}");
    }
    let (client, config) = c.client().await?;
    let ns = c.namespace(&config);
    let now = Timestamp::now();
    let schedules = api::<SnapshotSchedule>(&client, &c, &ns)
        .list(&ListParams::default())
        .await
        .context("listing SnapshotSchedules")?;
    let policies = api::<ReplicationPolicy>(&client, &c, &ns)
        .list(&ListParams::default())
        .await
        .context("listing ReplicationPolicies")?;
    let mut items: Vec<ObjectStatus> = schedules.items.iter().map(of_schedule).collect();
    items.extend(policies.items.iter().map(|p| of_policy(p, now)));
    items.sort_by(|a, b| (&a.namespace, a.kind, &a.name).cmp(&(&b.namespace, b.kind, &b.name)));
    match c.output {
        Output::Table => print!("{}", render(&items, now)),
        o => o.print(&Overview { items })?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn schedule() -> SnapshotSchedule {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tidepool.dev/v1alpha1", "kind": "SnapshotSchedule",
            "metadata": {"name": "db", "namespace": "team"},
            "spec": {"datasets": [{"name": "tank/db"}], "schedule": {"interval": "1h"}},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "DatasetNotFound",
                     "message": "", "lastTransitionTime": "2026-12-03T10:00:00Z"},
                    {"type": "Degraded", "status": "True", "reason": "DatasetNotFound",
                     "message": "", "lastTransitionTime": "2026-12-03T10:00:00Z"}],
                "lastSnapshotTime": "2026-12-03T09:00:00Z",
                "nextSnapshotTime": "2026-12-03T11:00:00Z",
                "lastError": {"node": "node-a", "reason": "DatasetNotFound",
                              "message": "gone", "time": "2026-12-03T10:00:00Z"},
                "nodes": [{"node": "node-a", "snapshotCount": 4, "prunedTotal": 2}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn the_table_shows_readiness_times_errors_and_nodes() {
        let now: Timestamp = "2026-12-03T10:30:00Z".parse().unwrap();
        let text = render(&[of_schedule(&schedule())], now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE   NAME"), "{text}");
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            &row[..8],
            &[
                "team",
                "snapshotschedule/db",
                "False",
                "DatasetNotFound",
                "True",
                "90m",
                "30m",
                "-"
            ]
        );
        assert!(
            lines[1].ends_with("DatasetNotFound on node-a: gone"),
            "{text}"
        );
        assert!(lines[3].starts_with("NAMESPACE"), "{text}");
        let node: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(node[2..], ["node-a", "<none>", "4", "2", "<none>"]);
    }

    #[test]
    fn a_policy_shows_its_lag_and_an_error_names_its_node_once() {
        let p: ReplicationPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "tidepool.dev/v1alpha1", "kind": "ReplicationPolicy",
            "metadata": {"name": "db-to-b", "namespace": "team"},
            "spec": {"source": {"nodeName": "a", "dataset": "tank/db"},
                     "target": {"node": {"nodeName": "b", "dataset": "backup/db"}}},
            "status": {"lastSyncTime": "2026-12-03T10:20:00Z",
                       "lastReplicatedSnapshotTime": "2026-12-03T10:15:00Z",
                       "lastError": {"node": "b", "reason": "TargetModified",
                                     "message": "node b: changed", "time": "2026-12-03T10:20:00Z"}},
        }))
        .unwrap();
        let now: Timestamp = "2026-12-03T10:30:00Z".parse().unwrap();
        let o = of_policy(&p, now);
        assert_eq!(o.lag_seconds, Some(900));
        let text = render(&[o], now);
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "team",
                "replicationpolicy/db-to-b",
                "<none>",
                "<none>",
                "<none>",
                "10m",
                "<none>",
                "15m",
                "TargetModified",
                "on",
                "b:",
                "changed"
            ]
        );
    }

    #[test]
    fn a_policy_sending_shows_how_far_instead_of_the_next_sync() {
        let p: ReplicationPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "tidepool.dev/v1alpha1", "kind": "ReplicationPolicy",
            "metadata": {"name": "db-to-b", "namespace": "team"},
            "spec": {"source": {"nodeName": "a", "dataset": "tank/db"},
                     "target": {"node": {"nodeName": "b", "dataset": "backup/db"}}},
            "status": {"nextSyncTime": "2026-12-03T11:00:00Z",
                       "progress": {"bytesDone": 450, "bytesTotal": 1000,
                                    "started": "2026-12-03T10:29:00Z"}},
        }))
        .unwrap();
        let now: Timestamp = "2026-12-03T10:30:00Z".parse().unwrap();
        let o = of_policy(&p, now);
        let text = render(std::slice::from_ref(&o), now);
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[6], "sending:45%", "{text}");
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["progress"]["bytesDone"], 450);
        // Past the estimate (it is not an upper bound), never above 100 %.
        let mut over = o;
        over.progress.as_mut().unwrap().bytes_done = 1010;
        assert!(render(&[over], now).contains("sending:100%"));
    }

    #[test]
    fn structured_output_keeps_the_api_fields() {
        let s = of_schedule(&schedule());
        let v = serde_json::to_value(Overview { items: vec![s] }).unwrap();
        let item = &v["items"][0];
        assert_eq!(item["kind"], "SnapshotSchedule");
        assert_eq!(item["ready"]["reason"], "DatasetNotFound");
        assert_eq!(item["lastError"]["node"], "node-a");
        assert_eq!(item["nodes"][0]["snapshotCount"], 4);
        assert_eq!(item["lastRun"], "2026-12-03T09:00:00Z");
    }
}
