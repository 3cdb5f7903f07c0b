//! `tidepool nodes`: each node's agent (heartbeat, readiness, endpoint, OpenZFS version,
//! capabilities) and its pools (health, size, free).

use anyhow::Context as _;
use jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt as _};
use tidepool_api::condition::{find, kind};
use tidepool_api::zfs_node::ZfsNodeStatus;
use tidepool_api::{Capabilities, ZfsNode};

use super::common::{Common, Output};
use super::format::{bytes, or_none, since, table};

/// The capabilities a node's OpenZFS has, by short name.
pub fn capabilities(c: &Capabilities) -> String {
    let names = [
        (c.bookmarks, "bookmarks"),
        (c.resumable_receive, "resume"),
        (c.raw_send, "raw-send"),
        (c.bookmark_copy, "bookmark-copy"),
        (c.json_output, "json"),
    ];
    let on: Vec<&str> = names.iter().filter(|(b, _)| *b).map(|(_, n)| *n).collect();
    if on.is_empty() {
        "<none>".into()
    } else {
        on.join(",")
    }
}

/// The agents table, then one row per pool.
pub fn render(nodes: &[ZfsNode], now: Timestamp) -> String {
    if nodes.is_empty() {
        return "No ZfsNodes found: no agent has registered.\n".into();
    }
    let status = |n: &ZfsNode| n.status.clone().unwrap_or_default();
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let s: ZfsNodeStatus = status(n);
            let ready = find(&s.conditions, kind::READY);
            vec![
                n.name_any(),
                or_none(ready.map(|c| c.status.as_str())),
                since(s.heartbeat_time.as_ref().map(|t| t.0), now),
                or_none(s.endpoint.as_deref()),
                or_none(s.zfs_version.as_deref()),
                or_none(s.agent_version.as_deref()),
                capabilities(&s.capabilities),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "node",
            "ready",
            "heartbeat",
            "endpoint",
            "openzfs",
            "agent",
            "capabilities",
        ],
        &rows,
    );
    let pools: Vec<Vec<String>> = nodes
        .iter()
        .flat_map(|n| {
            let name = n.name_any();
            status(n).pools.into_iter().map(move |p| {
                let used = if p.size_bytes > 0 {
                    format!("{}%", p.allocated_bytes.saturating_mul(100) / p.size_bytes)
                } else {
                    "-".into()
                };
                vec![
                    name.clone(),
                    p.name,
                    p.health,
                    bytes(p.size_bytes),
                    bytes(p.free_bytes),
                    used,
                ]
            })
        })
        .collect();
    if !pools.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["node", "pool", "health", "size", "free", "used"],
            &pools,
        ));
    }
    out
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let (c, rest) = Common::parse(args, &[])?;
    if let Some(extra) = rest.first() {
        anyhow::bail!("tidepool nodes: unexpected {extra:?}");
    }
    let (client, _) = c.client().await?;
    let mut nodes = Api::<ZfsNode>::all(client)
        .list(&ListParams::default())
        .await
        .context("listing ZfsNodes")?
        .items;
    nodes.sort_by_key(|n| n.name_any());
    match c.output {
        Output::Table => print!("{}", render(&nodes, Timestamp::now())),
        o => o.print(&serde_json::json!({ "items": nodes }))?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn agents_and_their_pools() {
        let node: ZfsNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "tidepool.dev/v1alpha1", "kind": "ZfsNode",
            "metadata": {"name": "node-a"},
            "spec": {"nodeName": "node-a"},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady",
                                "message": "", "lastTransitionTime": "2026-12-03T10:00:00Z"}],
                "zfsVersion": "2.3.2", "endpoint": "10.0.0.5:7443",
                "capabilities": {"bookmarks": true, "rawSend": true, "resumableReceive": true},
                "heartbeatTime": "2026-12-03T10:29:50Z",
                "pools": [{"name": "tank", "health": "ONLINE", "sizeBytes": 1073741824,
                           "allocatedBytes": 268435456, "freeBytes": 805306368}],
            },
        }))
        .unwrap();
        let now: Timestamp = "2026-12-03T10:30:00Z".parse().unwrap();
        let text = render(&[node], now);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[1],
            [
                "node-a",
                "True",
                "10s",
                "10.0.0.5:7443",
                "2.3.2",
                "<none>",
                "bookmarks,resume,raw-send"
            ]
        );
        assert_eq!(lines[3], ["NODE", "POOL", "HEALTH", "SIZE", "FREE", "USED"]);
        assert_eq!(
            lines[4],
            ["node-a", "tank", "ONLINE", "1.0GiB", "768.0MiB", "25%"]
        );
    }
}
