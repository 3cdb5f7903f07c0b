//! `tidepool explain KIND/NAME --controller URL`: the dry run of a SnapshotSchedule or a
//! ReplicationPolicy, from the controller's explain route (only the controller reads
//! inventories from agents). The caller's bearer token goes with it; the controller lets in only identities that may `get` the object.
//! In a cluster, reach the controller with `kubectl port-forward`.

use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tidepool_reconciler::explain::view::{
    DatasetPlan, NodeExplanation, PlannedAction, PlannedStep, ReplicationExplanation, SendBase,
    Side,
};
use tidepool_reconciler::explain::{self, Explanation, Problem};

use super::common::{Common, Output, bearer_token};
use super::target::Target;

const FLAGS: &[&str] = &["--controller", "--token"];

/// The token goes in clear over `http://`: only to this machine (a port-forward) unless
/// the user says otherwise.
fn loopback(uri: &http::Uri) -> bool {
    match uri.host() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

pub fn controller_uri(base: &str, allow_remote: bool) -> anyhow::Result<http::Uri> {
    let uri: http::Uri = base
        .parse()
        .with_context(|| format!("--controller {base:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("--controller {base}: only http:// (a port-forward to the controller) is served");
    }
    if !loopback(&uri) && !allow_remote {
        bail!(
            "--controller {base}: the token would cross the network unencrypted; use `kubectl port-forward` and http://127.0.0.1:PORT, or pass --insecure-plain-http"
        );
    }
    Ok(uri)
}

async fn fetch(uri: http::Uri, token: &str) -> anyhow::Result<(http::StatusCode, Bytes)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = http::Request::get(uri.clone())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())?;
    let response = client
        .request(request)
        .await
        .with_context(|| format!("asking the controller at {uri}"))?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn render_node(out: &mut String, n: &NodeExplanation) -> std::fmt::Result {
    let pool = n
        .pool
        .as_ref()
        .map(|p| format!(" (pool {p})"))
        .unwrap_or_default();
    writeln!(out, "node {}{pool}:", n.node)?;
    if let Some(p) = &n.problem {
        return writeln!(out, "  would fail: {}: {}", p.reason, p.message);
    }
    if n.suspended {
        return writeln!(out, "  suspended: nothing is taken or destroyed");
    }
    match &n.take {
        Some(t) => {
            let on: Vec<String> = t.datasets.iter().map(ToString::to_string).collect();
            writeln!(out, "  TAKE     @{}  ({}: {})", t.name, t.reason, t.message)?;
            writeln!(out, "           on {}", on.join(", "))?;
        }
        None => {
            let next = n.next_due.map(|t| t.to_string()).unwrap_or_default();
            writeln!(out, "  no snapshot due; next slot {next}")?;
        }
    }
    let Some(plans) = &n.retention else {
        return writeln!(out, "  no retention: every snapshot is kept");
    };
    for p in plans {
        render_retention(out, p)?;
    }
    Ok(())
}

fn render_retention(out: &mut String, p: &DatasetPlan) -> std::fmt::Result {
    for d in &p.destroy {
        writeln!(
            out,
            "  DESTROY  {}  ({}, created {})",
            d.snapshot, d.reason, d.created
        )?;
    }
    for k in &p.keep {
        let planned = if k.planned { ", to be taken" } else { "" };
        writeln!(
            out,
            "  KEEP     {}  ({}{planned})",
            k.snapshot,
            k.reasons.join(", ")
        )?;
    }
    if p.not_owned > 0 {
        writeln!(
            out,
            "  {}: {} snapshot(s) not this object's: never considered",
            p.dataset, p.not_owned
        )?;
    }
    Ok(())
}

fn side(s: Side) -> &'static str {
    match s {
        Side::Source => "source",
        Side::Target => "target",
    }
}

/// One step as a line: the verb, what it acts on, and why.
fn render_step(out: &mut String, indent: &str, s: &PlannedStep) -> std::fmt::Result {
    let what = match &s.action {
        PlannedAction::FullSend { snapshot } => format!("SEND     full {snapshot}"),
        PlannedAction::IncrementalSend {
            base,
            to,
            intermediates,
        } => {
            let flag = if *intermediates { "-I" } else { "-i" };
            let base = match base {
                SendBase::Snapshot(s) => s.to_string(),
                SendBase::Bookmark(b) => b.to_string(),
            };
            format!("SEND     {flag} {base} {to}")
        }
        PlannedAction::ResumeSend { to_guid } => format!(
            "SEND     resume -t{}",
            to_guid.map(|g| format!(" (guid {g})")).unwrap_or_default()
        ),
        PlannedAction::AbortReceive { dataset } => format!("ABORT    receive -A {dataset}"),
        PlannedAction::RotateAside { from, to } => format!("ROTATE   {from} -> {to}"),
        PlannedAction::Hold {
            side: s,
            snapshot,
            tag,
        } => format!("HOLD     {} {snapshot} {tag}", side(*s)),
        PlannedAction::Release {
            side: s,
            snapshot,
            tag,
        } => format!("RELEASE  {} {snapshot} {tag}", side(*s)),
        PlannedAction::Bookmark { snapshot, bookmark } => {
            format!("BOOKMARK {snapshot} {bookmark}")
        }
        PlannedAction::DestroyBookmark { bookmark } => format!("UNMARK   {bookmark}"),
        PlannedAction::Claim { snapshots } => {
            let names: Vec<String> = snapshots.iter().map(ToString::to_string).collect();
            format!("CLAIM    {}", names.join(","))
        }
    };
    writeln!(out, "{indent}{what}  ({}: {})", s.reason, s.message)?;
    for t in &s.then {
        render_step(out, &format!("{indent}  then "), t)?;
    }
    Ok(())
}

fn render_replication(out: &mut String, r: &ReplicationExplanation) -> std::fmt::Result {
    let target = r
        .target
        .as_ref()
        .map(|t| format!("{} on node {}", t.dataset, t.node))
        .unwrap_or_else(|| "(a target kind this version does not serve)".into());
    writeln!(
        out,
        "source {} on node {} -> target {target}",
        r.source.dataset, r.source.node
    )?;
    if r.suspended {
        writeln!(
            out,
            "suspended: nothing is sent or destroyed; once resumed it would do the steps below"
        )?;
    }
    match &r.last_common {
        Some(c) => writeln!(
            out,
            "last common snapshot: {} (guid {}, created {}{})",
            c.name,
            c.guid,
            c.created,
            if c.on_source {
                ""
            } else {
                ", only a bookmark on the source"
            }
        )?,
        None => writeln!(out, "last common snapshot: none")?,
    }
    if let Some(d) = &r.divergence {
        writeln!(out, "diverged: {}: {}", d.kind, d.message)?;
    }
    if r.steps.is_empty() {
        writeln!(out, "steps: none")?;
    } else {
        writeln!(out, "steps:")?;
        for s in &r.steps {
            render_step(out, "  ", s)?;
        }
    }
    match &r.target_retention {
        Some(t) => {
            let when = if t.after_steps {
                "once the steps above are done, over what they leave"
            } else {
                "now"
            };
            writeln!(out, "target retention on {} ({when}):", t.plan.dataset)?;
            render_retention(out, &t.plan)
        }
        None => writeln!(
            out,
            "target retention: none (no retention in the spec, or the plan is blocked)"
        ),
    }
}

/// The explanation for people: one block per node.
pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let generation = e
        .generation
        .map(|g| format!(" generation {g}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{} {}/{}{generation}, planned at {}",
        e.kind, e.namespace, e.name, e.now
    );
    if let Some(b) = &e.blocked {
        let _ = writeln!(out, "blocked: {}: {}", b.reason, b.message);
    }
    for n in &e.nodes {
        let _ = render_node(&mut out, n);
    }
    if let Some(r) = &e.replication {
        let _ = render_replication(&mut out, r);
    }
    out
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let (c, rest) = Common::parse(args, FLAGS)?;
    let mut target = None;
    let mut controller = std::env::var("TIDEPOOL_CONTROLLER").ok();
    let mut token = None;
    let mut allow_remote = false;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--controller" => controller = it.next().cloned(),
            "--token" => token = it.next().cloned(),
            "--insecure-plain-http" => allow_remote = true,
            f if f.starts_with('-') => bail!("tidepool explain: unknown flag {f}"),
            t if target.is_none() => target = Some(t.parse::<Target>()?),
            extra => bail!("tidepool explain: unexpected {extra:?}"),
        }
    }
    let target = target.context("usage: tidepool explain KIND/NAME --controller URL")?;
    let controller = controller.context(
        "--controller URL is required (e.g. `kubectl -n tidepool port-forward deploy/tidepool-controller 8080` and --controller http://127.0.0.1:8080)",
    )?;
    // With `--token` and `-n` no kubeconfig is needed: the controller does the talking.
    let (token, ns) = match (token, &c.namespace) {
        (Some(t), Some(ns)) => (t, ns.clone()),
        (token, _) => {
            let config = c.config().await?;
            let token = match token {
                Some(t) => t,
                None => bearer_token(&config)?.context(
                    "the kubeconfig's user has no bearer token (token or tokenFile) to show the controller; pass --token (e.g. $(kubectl create token NAME))",
                )?,
            };
            (token, c.namespace(&config))
        }
    };
    let base = controller_uri(&controller, allow_remote)?;
    let path = explain::path(&ns, target.kind.plural(), &target.name);
    let uri: http::Uri = format!("{}{path}", base.to_string().trim_end_matches('/'))
        .parse()
        .context("building the explain URL")?;
    let (status, body) = fetch(uri, &token).await?;
    if !status.is_success() {
        let why = serde_json::from_slice::<Problem>(&body)
            .map(|p| format!("{}: {}", p.reason, p.message))
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        bail!("the controller refused to explain {target} ({status}): {why}");
    }
    let e: Explanation =
        serde_json::from_slice(&body).context("the controller's answer is not an explanation")?;
    match c.output {
        Output::Table => print!("{}", render(&e)),
        o => o.print(&e)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_token_goes_in_clear_only_to_this_machine() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "http://[::1]:80",
        ] {
            assert!(controller_uri(ok, false).is_ok(), "{ok}");
        }
        let e = controller_uri("http://tidepool.svc:8080", false).unwrap_err();
        assert!(e.to_string().contains("port-forward"), "{e}");
        assert!(controller_uri("http://tidepool.svc:8080", true).is_ok());
        assert!(controller_uri("https://127.0.0.1:8080", false).is_err());
    }

    #[test]
    fn an_explanation_reads_as_takes_destroys_and_keeps() {
        let e: Explanation = serde_json::from_value(serde_json::json!({
            "kind": "SnapshotSchedule", "namespace": "team", "name": "db", "generation": 2,
            "now": "2026-12-03T10:00:00Z",
            "nodes": [{
                "node": "node-a", "pool": "tank", "suspended": false,
                "take": {"name": "tidepool_20261203T100000Z_db", "reason": "ManualTrigger",
                         "message": "manual trigger \"x\"", "datasets": ["tank/db"]},
                "retention": [{"dataset": "tank/db", "notOwned": 1,
                    "destroy": [{"snapshot": "tank/db@tidepool_20261201T000000Z_db", "guid": 7,
                                 "created": "2026-12-01T00:00:00Z", "reason": "RetentionExpired",
                                 "message": "m"}],
                    "keep": [{"snapshot": "tank/db@tidepool_20261203T100000Z_db",
                              "created": "2026-12-03T10:00:00Z",
                              "reasons": ["newest", "keepLast"], "planned": true}]}],
            }],
        }))
        .unwrap();
        let text = render(&e);
        assert!(
            text.starts_with("SnapshotSchedule team/db generation 2"),
            "{text}"
        );
        assert!(text.contains("node node-a (pool tank):"), "{text}");
        assert!(text.contains("TAKE     @tidepool_20261203T100000Z_db  (ManualTrigger"));
        assert!(text.contains(
            "DESTROY  tank/db@tidepool_20261201T000000Z_db  (RetentionExpired, created 2026-12-01T00:00:00Z)"
        ));
        assert!(text.contains(
            "KEEP     tank/db@tidepool_20261203T100000Z_db  (newest, keepLast, to be taken)"
        ));
        assert!(text.contains("1 snapshot(s) not this object's"), "{text}");
    }

    #[test]
    fn a_policy_reads_as_ends_common_snapshot_steps_and_target_retention() {
        let e: Explanation = serde_json::from_value(serde_json::json!({
            "kind": "ReplicationPolicy", "namespace": "team", "name": "offsite",
            "generation": 1, "now": "2026-12-03T10:00:00Z",
            "replication": {
                "source": {"node": "a", "dataset": "tank/db"},
                "target": {"node": "b", "dataset": "backup/db"},
                "lastCommon": {"name": "s3", "guid": 3, "created": "2026-12-03T09:00:00Z",
                               "onSource": true},
                "steps": [{"action": "IncrementalSend", "base": {"snapshot": "tank/db@s3"},
                           "to": "tank/db@s4", "intermediates": true,
                           "reason": "Incremental", "message": "m",
                           "then": [{"action": "Hold", "side": "target",
                                     "snapshot": "backup/db@s4", "tag": "tidepool:team/offsite",
                                     "reason": "ProtectCommon", "message": "h"}]}],
                "targetRetention": {"afterSteps": true, "dataset": "backup/db", "notOwned": 0,
                    "destroy": [{"snapshot": "backup/db@s1", "guid": 1,
                                 "created": "2026-12-03T07:00:00Z",
                                 "reason": "RetentionExpired", "message": "m"}],
                    "keep": [{"snapshot": "backup/db@s3", "created": "2026-12-03T09:00:00Z",
                              "reasons": ["newest", "replication base"]}]},
            },
        }))
        .unwrap();
        let text = render(&e);
        assert!(
            text.contains("source tank/db on node a -> target backup/db on node b"),
            "{text}"
        );
        assert!(text.contains("last common snapshot: s3 (guid 3,"), "{text}");
        assert!(
            text.contains("  SEND     -I tank/db@s3 tank/db@s4  (Incremental: m)"),
            "{text}"
        );
        assert!(
            text.contains("    then HOLD     target backup/db@s4 tidepool:team/offsite"),
            "{text}"
        );
        assert!(
            text.contains("target retention on backup/db (once the steps above are done"),
            "{text}"
        );
        assert!(
            text.contains("  DESTROY  backup/db@s1  (RetentionExpired"),
            "{text}"
        );
        assert!(
            text.contains("  KEEP     backup/db@s3  (newest, replication base)"),
            "{text}"
        );
    }
}
