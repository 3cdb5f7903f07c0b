//! The controller's Prometheus metrics. Labels are bounded: error reasons are the fixed
//! `&'static str` set of [`crate::reasons`]; the per-object series (namespace, name) exist
//! only while the object does and are removed with it ([`Metrics::forget`]).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    TextEncoder,
};
use tidepool_agent::metrics::ListedRegistry;

/// Lateness buckets in seconds: fine below 100 ms so a p99 against that goal is honest,
/// coarse beyond (a catch-up after downtime lands in the minutes).
pub const LATENESS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075, 0.09, 0.1, 0.125, 0.15, 0.2,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Clone)]
pub struct Metrics {
    registry: ListedRegistry,
    pub reconciles: IntCounter,
    pub errors: IntCounterVec,
    pub snapshots_created: IntCounter,
    pub snapshots_destroyed: IntCounter,
    pub is_leader: IntGauge,
    /// Status writes sent to the API server.
    pub status_writes: IntCounter,
    /// Routine status changes held back by the per-object rate limit (written later).
    pub status_writes_deferred: IntCounter,
    /// From a slot's due time to the agent's answer that its snapshot was taken.
    pub snapshot_lateness: Histogram,
    last_success: IntGaugeVec,
    consecutive_failures: IntGaugeVec,
    expected_interval: IntGaugeVec,
    /// Per ReplicationPolicy: now minus the creation time of the newest snapshot the
    /// target holds. Registered for the chart's alert; set once the reconciler drives
    /// replication (see [`Metrics::replication_lag`]).
    replication_lag: IntGaugeVec,
    replication_bytes: IntCounterVec,
    replication_failures: IntGaugeVec,
    replication_duration: IntGaugeVec,
    /// Per ReplicationPolicy with `restoreDrill`: 1 when its last drill passed, else 0.
    drill_passed: IntGaugeVec,
    drill_failures: IntCounterVec,
    drill_last_success: IntGaugeVec,
}

/// Building the metrics failed (a name clash: a programming error caught by the tests).
#[derive(Debug, thiserror::Error)]
#[error("registering metrics")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = ListedRegistry::default();
        let reconciles = IntCounter::new(
            "tidepool_controller_reconciles_total",
            "Reconciles of SnapshotSchedules",
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "tidepool_controller_reconcile_errors_total",
                "Reconciles that ended in an error, by reason",
            ),
            &["reason"],
        )?;
        let snapshots_created = IntCounter::new(
            "tidepool_snapshots_created_total",
            "Snapshots the agents reported taken",
        )?;
        let snapshots_destroyed = IntCounter::new(
            "tidepool_snapshots_destroyed_total",
            "Snapshots the agents reported destroyed",
        )?;
        let is_leader = IntGauge::new(
            "tidepool_controller_is_leader",
            "1 while this replica leads",
        )?;
        let status_writes = IntCounter::new(
            "tidepool_controller_status_writes_total",
            "SnapshotSchedule status writes sent to the API server",
        )?;
        let status_writes_deferred = IntCounter::new(
            "tidepool_controller_status_writes_deferred_total",
            "Routine status changes held back by the per-object minimum interval",
        )?;
        let snapshot_lateness = Histogram::with_opts(
            HistogramOpts::new(
                "tidepool_controller_snapshot_lateness_seconds",
                "From a schedule slot's due time to the agent's answer that the snapshot \
                 was taken, as the controller sees it",
            )
            .buckets(LATENESS_BUCKETS.to_vec()),
        )?;
        let per_object = ["namespace", "name"];
        let last_success = IntGaugeVec::new(
            Opts::new(
                "tidepool_schedule_last_success_timestamp_seconds",
                "When a schedule's last snapshot run succeeded",
            ),
            &per_object,
        )?;
        let consecutive_failures = IntGaugeVec::new(
            Opts::new(
                "tidepool_schedule_consecutive_failures",
                "Failed runs since the last success",
            ),
            &per_object,
        )?;
        let expected_interval = IntGaugeVec::new(
            Opts::new(
                "tidepool_schedule_expected_interval_milliseconds",
                "The gap between a schedule's current slot and its next (cron: varies)",
            ),
            &per_object,
        )?;
        let replication_lag = IntGaugeVec::new(
            Opts::new(
                "tidepool_replication_lag_seconds",
                "How far a ReplicationPolicy's target is behind: now minus the creation time \
                 of the newest snapshot it holds",
            ),
            &per_object,
        )?;
        let replication_bytes = IntCounterVec::new(
            Opts::new(
                "tidepool_replication_sent_bytes_total",
                "Stream bytes a ReplicationPolicy's sends moved",
            ),
            &per_object,
        )?;
        let replication_failures = IntGaugeVec::new(
            Opts::new(
                "tidepool_replication_consecutive_failures",
                "Failed runs of a ReplicationPolicy since its last success",
            ),
            &per_object,
        )?;
        let replication_duration = IntGaugeVec::new(
            Opts::new(
                "tidepool_replication_last_sync_duration_milliseconds",
                "How long a ReplicationPolicy's last sync that sent data took",
            ),
            &per_object,
        )?;
        let drill_passed = IntGaugeVec::new(
            Opts::new(
                "tidepool_replication_restore_drill_passed",
                "1 when a ReplicationPolicy's last restore drill restored its newest stored \
                 chain, 0 when it failed",
            ),
            &per_object,
        )?;
        let drill_failures = IntCounterVec::new(
            Opts::new(
                "tidepool_replication_restore_drill_failures_total",
                "Restore drills of a ReplicationPolicy that failed",
            ),
            &per_object,
        )?;
        let drill_last_success = IntGaugeVec::new(
            Opts::new(
                "tidepool_replication_restore_drill_last_success_timestamp_seconds",
                "When a ReplicationPolicy's last passing restore drill ended (Unix time)",
            ),
            &per_object,
        )?;
        for c in [
            Box::new(replication_bytes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(drill_passed.clone()),
            Box::new(drill_failures.clone()),
            Box::new(drill_last_success.clone()),
            Box::new(replication_failures.clone()),
            Box::new(replication_duration.clone()),
            Box::new(reconciles.clone()),
            Box::new(errors.clone()),
            Box::new(snapshots_created.clone()),
            Box::new(snapshots_destroyed.clone()),
            Box::new(is_leader.clone()),
            Box::new(status_writes.clone()),
            Box::new(status_writes_deferred.clone()),
            Box::new(snapshot_lateness.clone()),
            Box::new(last_success.clone()),
            Box::new(consecutive_failures.clone()),
            Box::new(expected_interval.clone()),
            Box::new(replication_lag.clone()),
        ] {
            registry.register(c)?;
        }
        Ok(Self {
            registry,
            reconciles,
            errors,
            snapshots_created,
            snapshots_destroyed,
            is_leader,
            status_writes,
            status_writes_deferred,
            snapshot_lateness,
            last_success,
            consecutive_failures,
            expected_interval,
            replication_lag,
            replication_bytes,
            replication_failures,
            replication_duration,
            drill_passed,
            drill_failures,
            drill_last_success,
        })
    }

    /// Every series name the controller can export, with or without samples yet (what
    /// the chart's PrometheusRule may refer to; its test checks).
    pub fn metric_names(&self) -> Vec<String> {
        self.registry.metric_names()
    }

    /// A ReplicationPolicy's lag in seconds; [`Metrics::forget_replication`] drops it.
    pub fn replication_lag(&self, namespace: &str, name: &str, seconds: i64) {
        self.replication_lag
            .with_label_values(&[namespace, name])
            .set(seconds);
    }

    /// A ReplicationPolicy's run: bytes it sent, failures in a row, and (when it sent
    /// data) how long the sync took.
    pub fn replication_run(
        &self,
        namespace: &str,
        name: &str,
        bytes: u64,
        failures: i32,
        duration_ms: Option<i64>,
    ) {
        let l = [namespace, name];
        self.replication_bytes.with_label_values(&l).inc_by(bytes);
        self.replication_failures
            .with_label_values(&l)
            .set(i64::from(failures));
        if let Some(ms) = duration_ms {
            self.replication_duration.with_label_values(&l).set(ms);
        }
    }

    /// A ReplicationPolicy's restore drill that ended at `at`.
    pub fn restore_drill(&self, namespace: &str, name: &str, passed: bool, at: jiff::Timestamp) {
        let l = [namespace, name];
        self.drill_passed
            .with_label_values(&l)
            .set(i64::from(passed));
        if passed {
            self.drill_last_success
                .with_label_values(&l)
                .set(at.as_second());
        } else {
            self.drill_failures.with_label_values(&l).inc();
        }
    }

    /// Drops the series of a ReplicationPolicy that no longer exists.
    pub fn forget_replication(&self, namespace: &str, name: &str) {
        let l = [namespace, name];
        // Absent series are not an error worth reporting.
        let _ = self.replication_lag.remove_label_values(&l);
        let _ = self.replication_bytes.remove_label_values(&l);
        let _ = self.replication_failures.remove_label_values(&l);
        let _ = self.replication_duration.remove_label_values(&l);
        let _ = self.drill_passed.remove_label_values(&l);
        let _ = self.drill_failures.remove_label_values(&l);
        let _ = self.drill_last_success.remove_label_values(&l);
    }

    /// The (namespace, name) pairs of ReplicationPolicies that have series.
    pub fn replication_objects(&self) -> Vec<(String, String)> {
        self.objects_of("tidepool_replication_consecutive_failures")
    }

    /// A snapshot of `slot` the agent reported taken at `done`.
    pub fn snapshot_done(&self, slot: jiff::Timestamp, done: jiff::Timestamp) {
        self.snapshot_lateness
            .observe(done.duration_since(slot).as_secs_f64().max(0.0));
    }

    pub fn error(&self, reason: &'static str) {
        self.errors.with_label_values(&[reason]).inc();
    }

    pub fn object(
        &self,
        namespace: &str,
        name: &str,
        last_success: Option<i64>,
        failures: i32,
        interval_ms: Option<u64>,
    ) {
        let l = [namespace, name];
        if let Some(t) = last_success {
            self.last_success.with_label_values(&l).set(t);
        }
        self.consecutive_failures
            .with_label_values(&l)
            .set(i64::from(failures));
        if let Some(ms) = interval_ms {
            self.expected_interval
                .with_label_values(&l)
                .set(i64::try_from(ms).unwrap_or(i64::MAX));
        }
    }

    /// Drops every series of an object that no longer exists.
    pub fn forget(&self, namespace: &str, name: &str) {
        let l = [namespace, name];
        // Absent series are not an error worth reporting.
        let _ = self.last_success.remove_label_values(&l);
        let _ = self.consecutive_failures.remove_label_values(&l);
        let _ = self.expected_interval.remove_label_values(&l);
    }

    /// The (namespace, name) pairs that have per-object series.
    pub fn objects(&self) -> Vec<(String, String)> {
        self.objects_of("tidepool_schedule_consecutive_failures")
    }

    fn objects_of(&self, family: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .registry
            .gather()
            .iter()
            .filter(|f| f.name() == family)
            .flat_map(|f| f.get_metric().iter())
            .map(|m| {
                let get = |k: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == k)
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default()
                };
                (get("namespace"), get("name"))
            })
            .collect();
        out.sort();
        out
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The gap between the slot at or before `now` and the one after it.
pub fn expected_interval(
    schedule: &tidepool_api::ValidSchedule,
    jitter_seed: &str,
    now: jiff::Timestamp,
) -> Option<std::time::Duration> {
    let slots = tidepool_plan::schedule::Slots::new(schedule, jitter_seed).ok()?;
    let latest = slots.latest_at_or_before(now).ok()?;
    let next = slots.next_after(latest).ok()?;
    std::time::Duration::try_from(next.duration_since(latest)).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn per_object_series_go_away_with_the_object() {
        let m = Metrics::new().unwrap();
        m.object("ns", "a", Some(5), 0, Some(1000));
        m.object("ns", "b", None, 2, None);
        assert_eq!(
            m.objects(),
            vec![("ns".into(), "a".into()), ("ns".into(), "b".into())]
        );
        assert!(m.render().contains(
            "tidepool_schedule_last_success_timestamp_seconds{name=\"a\",namespace=\"ns\"} 5"
        ));
        m.forget("ns", "a");
        assert_eq!(m.objects(), vec![("ns".into(), "b".into())]);
        assert!(!m.render().contains("name=\"a\""));
    }

    #[test]
    fn the_expected_interval_of_cron_is_the_gap_to_the_next_slot() {
        let spec: tidepool_api::SnapshotScheduleSpec = serde_json::from_value(serde_json::json!({
            "nodeName": "n",
            "datasets": [{"name": "tank/a"}],
            "schedule": {"cron": "0 9,17 * * *", "timeZone": "Europe/Paris"},
        }))
        .unwrap();
        let valid = spec.validate().unwrap();
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        // 09:00 and 17:00 Paris (UTC+1 in December): 8 h after the morning slot, 16 h after
        // the evening one.
        let hours =
            |t| expected_interval(&valid.schedule, "uid", at(t)).map(|d| d.as_secs() / 3600);
        assert_eq!(hours("2026-12-01T10:00:00Z"), Some(8));
        assert_eq!(hours("2026-12-01T20:00:00Z"), Some(16));
        let spec: tidepool_api::SnapshotScheduleSpec = serde_json::from_value(serde_json::json!({
            "nodeName": "n",
            "datasets": [{"name": "tank/a"}],
            "schedule": {"interval": "500ms"},
        }))
        .unwrap();
        let valid = spec.validate().unwrap();
        assert_eq!(
            expected_interval(&valid.schedule, "uid", at("2026-12-01T10:00:00.2Z")),
            Some(std::time::Duration::from_millis(500))
        );
    }
}
