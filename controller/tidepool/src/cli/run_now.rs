//! `tidepool run-now KIND/NAME [--wait] [--timeout 2m]`: sets `spec.trigger.manual` to a
//! fresh token (a merge patch under the field manager `tidepool-cli`), and with `--wait`
//! waits until the controller echoes it to `status.lastManualTrigger`, or reports the
//! failure the status names.

use std::time::Duration;

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tidepool_api::condition::{find, kind};
use tidepool_api::{Condition, HumanDuration, LastError, ReplicationPolicy, SnapshotSchedule};

use super::common::Common;
use super::target::{Kind, Target};

/// The field manager of the CLI's writes.
pub const FIELD_MANAGER: &str = "tidepool-cli";

/// A token no earlier run used: the time to the nanosecond and the process id.
pub fn fresh_token(now: Timestamp) -> String {
    format!(
        "cli-{}-{}",
        now.strftime("%Y%m%dT%H%M%S%.fZ"),
        std::process::id()
    )
}

/// What `--wait` reads from either kind's status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub observed_generation: Option<i64>,
    pub last_manual_trigger: Option<String>,
    pub ready: Option<Condition>,
    pub last_error: Option<LastError>,
    /// What the run left: the newest snapshot's name (schedules), the last common snapshot
    /// (policies).
    pub result: Option<String>,
}

/// Where a wait stands.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Done,
    Failed(String),
    Waiting,
}

/// Done once the token is echoed; failed once the controller has seen the trigger's
/// generation and reports Ready=False with an error (a failed run is not echoed).
pub fn verdict(o: &Observed, token: &str, generation: Option<i64>) -> Verdict {
    if o.last_manual_trigger.as_deref() == Some(token) {
        return Verdict::Done;
    }
    let seen = matches!((o.observed_generation, generation), (Some(seen), Some(g)) if seen >= g);
    let not_ready = o.ready.as_ref().is_some_and(|c| c.status == "False");
    match (&o.last_error, seen && not_ready) {
        (Some(e), true) => Verdict::Failed(super::status::error_text(e)),
        _ => Verdict::Waiting,
    }
}

async fn observe(client: &kube::Client, ns: &str, t: &Target) -> anyhow::Result<Observed> {
    Ok(match t.kind {
        Kind::SnapshotSchedule => {
            let s = Api::<SnapshotSchedule>::namespaced(client.clone(), ns)
                .get(&t.name)
                .await?
                .status
                .unwrap_or_default();
            Observed {
                observed_generation: s.observed_generation,
                last_manual_trigger: s.last_manual_trigger,
                ready: find(&s.conditions, kind::READY).cloned(),
                last_error: s.last_error,
                result: s.last_snapshot_name,
            }
        }
        Kind::ReplicationPolicy => {
            let s = Api::<ReplicationPolicy>::namespaced(client.clone(), ns)
                .get(&t.name)
                .await?
                .status
                .unwrap_or_default();
            Observed {
                observed_generation: s.observed_generation,
                last_manual_trigger: s.last_manual_trigger,
                ready: find(&s.conditions, kind::READY).cloned(),
                last_error: s.last_error,
                result: s.last_common_snapshot,
            }
        }
    })
}

/// Sets the token; returns the object's generation after the change.
async fn trigger(
    client: &kube::Client,
    ns: &str,
    t: &Target,
    token: &str,
) -> anyhow::Result<Option<i64>> {
    let patch = Patch::Merge(json!({"spec": {"trigger": {"manual": token}}}));
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let generation = match t.kind {
        Kind::SnapshotSchedule => {
            Api::<SnapshotSchedule>::namespaced(client.clone(), ns)
                .patch(&t.name, &params, &patch)
                .await?
                .metadata
                .generation
        }
        Kind::ReplicationPolicy => {
            Api::<ReplicationPolicy>::namespaced(client.clone(), ns)
                .patch(&t.name, &params, &patch)
                .await?
                .metadata
                .generation
        }
    };
    Ok(generation)
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let (c, rest) = Common::parse(args, &["--timeout"])?;
    let mut target = None;
    let mut wait = false;
    let mut timeout = Duration::from_secs(120);
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--wait" => wait = true,
            "--timeout" => {
                let v = it.next().context("--timeout needs a value")?;
                timeout = v
                    .parse::<HumanDuration>()
                    .with_context(|| format!("--timeout {v}"))?
                    .as_std();
            }
            f if f.starts_with('-') => bail!("tidepool run-now: unknown flag {f}"),
            t if target.is_none() => target = Some(t.parse::<Target>()?),
            extra => bail!("tidepool run-now: unexpected {extra:?}"),
        }
    }
    let target = target.context("usage: tidepool run-now KIND/NAME [--wait] [--timeout 2m]")?;
    let (client, config) = c.client().await?;
    let ns = c.namespace(&config);
    let token = fresh_token(Timestamp::now());
    let generation = trigger(&client, &ns, &target, &token)
        .await
        .with_context(|| format!("setting the trigger of {target} in {ns}"))?;
    println!("{target} triggered (spec.trigger.manual={token})");
    if !wait {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let o = observe(&client, &ns, &target)
            .await
            .with_context(|| format!("reading {target}"))?;
        match verdict(&o, &token, generation) {
            Verdict::Done => {
                let result = o.result.map(|r| format!(": {r}")).unwrap_or_default();
                println!("{target} ran{result}");
                return Ok(());
            }
            Verdict::Failed(why) => bail!("{target} failed: {why}"),
            Verdict::Waiting => {}
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{target}: the controller did not answer trigger {token} within {timeout:?} (status.lastManualTrigger is {:?})",
                o.last_manual_trigger
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ready(status: &str) -> Option<Condition> {
        Some(Condition {
            type_: "Ready".into(),
            status: status.into(),
            observed_generation: None,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::UNIX_EPOCH,
            ),
            reason: "X".into(),
            message: String::new(),
        })
    }

    #[test]
    fn a_wait_ends_on_the_echo_or_on_an_error_at_the_triggers_generation() {
        let error = Some(LastError {
            node: Some("node-a".into()),
            reason: "DatasetNotFound".into(),
            message: "gone".into(),
            time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        });
        let mut o = Observed {
            observed_generation: Some(3),
            ready: ready("False"),
            last_error: error,
            ..Observed::default()
        };
        // An error from before the trigger's generation is not this run's.
        assert_eq!(verdict(&o, "t", Some(4)), Verdict::Waiting);
        o.observed_generation = Some(4);
        assert_eq!(
            verdict(&o, "t", Some(4)),
            Verdict::Failed("DatasetNotFound on node-a: gone".into())
        );
        o.last_manual_trigger = Some("t".into());
        assert_eq!(verdict(&o, "t", Some(4)), Verdict::Done);
        let fine = Observed {
            observed_generation: Some(4),
            ready: ready("True"),
            ..Observed::default()
        };
        assert_eq!(verdict(&fine, "t", Some(4)), Verdict::Waiting);
    }

    #[test]
    fn tokens_are_fresh_and_fit_the_schema() {
        let a = fresh_token("2026-12-03T10:00:00.000000001Z".parse().unwrap());
        let b = fresh_token("2026-12-03T10:00:00.000000002Z".parse().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("cli-20261203T100000.000000001Z-"), "{a}");
        assert!(a.len() <= 128 && a.bytes().all(|c| (b' '..=b'~').contains(&c)));
    }
}
