//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Only the leader reconciles. The epoch it sends to agents ([`LeaderEpoch`]) is the
//! Lease's `leaseTransitions` once it holds it: every change of holder increments it in
//! the same write that changes the holder, and that write carries the Lease's
//! `resourceVersion`, so two candidates cannot both win one transition and a later
//! leader always has a larger epoch. The Lease is never deleted (a recreated one would
//! start at 0 again, below what agents have seen).
//!
//! Expiry is judged as client-go does, by the local clock: a Lease held by another is
//! taken over once its record (holder, renew time, transitions) has not changed for a
//! whole `leaseDurationSeconds` since this candidate first saw it, so clock skew between
//! replicas does not matter. The decision is a pure function ([`decide`]); the loop around
//! it is the only place that reads the clock.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tidepool_agent::LeaderEpoch;
use tokio::sync::watch;

/// How the election runs.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per process (pod name plus something random): two replicas with one identity
    /// would both think they lead.
    pub identity: String,
    /// How long a holder's silence makes the Lease free.
    pub lease_duration: Duration,
    /// How often to renew, and how often a candidate looks again.
    pub retry_period: Duration,
    /// A leader that has not renewed for this long stops acting (shorter than
    /// `lease_duration`, so it stops before anyone else may start).
    pub renew_deadline: Duration,
}

impl LeaseConfig {
    /// Takeover after a crash within `lease_duration + retry_period` (12 s).
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        Self {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(7),
        }
    }
}

/// Why the election stopped.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("lost the lease {name}: not renewed for {deadline:?}")]
    Lost { name: String, deadline: Duration },
    #[error("lease {name} was taken over by {holder}")]
    TakenOver { name: String, holder: String },
}

/// What a candidate saw of the Lease, and since when (by its own clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    record: Record,
    since: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew: Option<Timestamp>,
    transitions: i32,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Self {
        Self {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew: spec.renew_time.as_ref().map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0).max(0),
        }
    }
}

/// Remembers `spec` as seen at `now`, keeping the first time an unchanged record was seen.
pub fn observe(previous: Option<Observation>, spec: &LeaseSpec, now: Timestamp) -> Observation {
    let record = Record::of(spec);
    match previous {
        Some(p) if p.record == record => p,
        _ => Observation { record, since: now },
    }
}

/// What to write next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// We hold it: renew, keeping the transitions.
    Renew { transitions: i32 },
    /// Free or expired: take it, with one more transition.
    Acquire { transitions: i32 },
    /// Someone else holds it and has renewed within the lease duration.
    Wait { holder: String },
}

/// The pure decision of one round.
pub fn decide(
    observed: &Observation,
    identity: &str,
    lease_duration: Duration,
    now: Timestamp,
) -> Step {
    let r = &observed.record;
    match &r.holder {
        Some(h) if h == identity => Step::Renew {
            transitions: r.transitions,
        },
        Some(h) => {
            let silent = now.duration_since(observed.since);
            let limit =
                jiff::SignedDuration::try_from(lease_duration).unwrap_or(jiff::SignedDuration::MAX);
            if silent >= limit {
                Step::Acquire {
                    transitions: r.transitions.saturating_add(1),
                }
            } else {
                Step::Wait { holder: h.clone() }
            }
        }
        None => Step::Acquire {
            transitions: r.transitions.saturating_add(1),
        },
    }
}

fn epoch(transitions: i32) -> LeaderEpoch {
    LeaderEpoch(u64::try_from(transitions).unwrap_or(0))
}

fn micro(t: Timestamp) -> MicroTime {
    MicroTime(t)
}

/// Runs the election for ever: publishes `Some(epoch)` on `leader` while this process
/// leads, `None` otherwise. Returns an error once leadership is lost (the caller stops
/// acting and exits, so the process restarts as a fresh candidate).
pub async fn run(
    client: Client,
    config: LeaseConfig,
    leader: watch::Sender<Option<LeaderEpoch>>,
    health: &crate::http::Health,
) -> Result<(), ElectionError> {
    use std::sync::atomic::Ordering;
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut observed: Option<Observation> = None;
    let mut last_renew: Option<tokio::time::Instant> = None;
    loop {
        let now = Timestamp::now();
        let result = round(&api, &config, &mut observed, now).await;
        health.ready.store(result.is_ok(), Ordering::Release);
        match result {
            Ok(Some(transitions)) => {
                last_renew = Some(tokio::time::Instant::now());
                if *leader.borrow() != Some(epoch(transitions)) {
                    tracing::info!(lease = %config.name, epoch = transitions, "became leader");
                    leader.send_replace(Some(epoch(transitions)));
                }
            }
            Ok(None) => {
                if leader.borrow().is_some() {
                    leader.send_replace(None);
                    let holder = observed
                        .as_ref()
                        .and_then(|o| o.record.holder.clone())
                        .unwrap_or_default();
                    return Err(ElectionError::TakenOver {
                        name: config.name.clone(),
                        holder,
                    });
                }
            }
            Err(e) => {
                tracing::warn!(lease = %config.name, error = %e, "lease round failed");
                if leader.borrow().is_some()
                    && last_renew.is_none_or(|t| t.elapsed() >= config.renew_deadline)
                {
                    leader.send_replace(None);
                    return Err(ElectionError::Lost {
                        name: config.name.clone(),
                        deadline: config.renew_deadline,
                    });
                }
            }
        }
        tokio::time::sleep(config.retry_period).await;
    }
}

/// One round: `Some(transitions)` when we hold the Lease after it.
async fn round(
    api: &Api<Lease>,
    config: &LeaseConfig,
    observed: &mut Option<Observation>,
    now: Timestamp,
) -> Result<Option<i32>, kube::Error> {
    let duration_secs = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(micro(now)),
                renew_time: Some(micro(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        api.create(&PostParams::default(), &lease).await?;
        return Ok(Some(0));
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let seen = observe(observed.take(), &spec, now);
    let step = decide(&seen, &config.identity, config.lease_duration, now);
    *observed = Some(seen);
    let transitions = match step {
        Step::Wait { .. } => return Ok(None),
        Step::Renew { transitions } => transitions,
        Step::Acquire { transitions } => transitions,
    };
    let acquire_time = match step {
        Step::Acquire { .. } => Some(micro(now)),
        _ => spec.acquire_time.clone(),
    };
    lease.spec = Some(LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(duration_secs),
        acquire_time,
        renew_time: Some(micro(now)),
        lease_transitions: Some(transitions),
        ..spec
    });
    // `replace` carries the resourceVersion read above: a concurrent writer makes this a
    // 409 and nobody wins twice.
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(Some(transitions)),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            *observed = None;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Gives the Lease up (holder cleared, transitions kept), so a standby takes over at once
/// instead of after the lease duration. Best effort: on failure the Lease simply expires.
pub async fn release(client: Client, config: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&config.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = Some(micro(Timestamp::now()));
    if let Err(e) = api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        tracing::warn!(lease = %config.name, error = %e, "releasing the lease failed");
    }
}

#[cfg(test)]
mod tests;
