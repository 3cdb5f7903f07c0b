//! What `schedule_failures` and `schedule_lifecycle` both read beside the harness's
//! snapshot readings (`tidepool_tests::snapshots`): events seen after a moment.

#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use tidepool_tests::control_plane::ControlPlane;
use tidepool_tests::release::events_about;

/// When an event was last observed (a repeated event is one object with a series).
pub fn last_seen(e: &Event) -> Option<jiff::Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
}

/// Waits for an event about `name` with this type and reason observed at or after `since`.
pub async fn wait_event_since(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    (type_, reason): (&str, &str),
    since: jiff::Timestamp,
    within: Duration,
) -> Event {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let events = events_about(cp, ns, name).await;
        if let Some(e) = events.iter().find(|e| {
            e.type_.as_deref() == Some(type_)
                && e.reason.as_deref() == Some(reason)
                && last_seen(e).is_some_and(|t| t >= since)
        }) {
            return e.clone();
        }
        if tokio::time::Instant::now() > deadline {
            let seen: Vec<_> = events
                .iter()
                .map(|e| (e.type_.clone(), e.reason.clone(), last_seen(e)))
                .collect();
            panic!(
                "no {type_} {reason} event about {ns}/{name} since {since} within {within:?}; seen {seen:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
