//! The controller's Prometheus metrics. Labels are bounded: error reasons are the fixed
//! `&'static str` set of [`crate::reasons`]; the per-object series (namespace, name) exist
//! only while the object does and are removed with it ([`Metrics::forget`]).

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounter,
    pub errors: IntCounterVec,
    pub snapshots_created: IntCounter,
    pub snapshots_destroyed: IntCounter,
    pub is_leader: IntGauge,
    last_success: IntGaugeVec,
    consecutive_failures: IntGaugeVec,
    expected_interval: IntGaugeVec,
}

/// Building the metrics failed (a name clash: a programming error caught by the tests).
#[derive(Debug, thiserror::Error)]
#[error("registering metrics")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
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
                "A schedule's interval (interval schedules only)",
            ),
            &per_object,
        )?;
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(snapshots_created.clone()),
            Box::new(snapshots_destroyed.clone()),
            Box::new(is_leader.clone()),
            Box::new(last_success.clone()),
            Box::new(consecutive_failures.clone()),
            Box::new(expected_interval.clone()),
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
            last_success,
            consecutive_failures,
            expected_interval,
        })
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
        let mut out: Vec<(String, String)> = self
            .registry
            .gather()
            .iter()
            .filter(|f| f.name() == "tidepool_schedule_consecutive_failures")
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
}
