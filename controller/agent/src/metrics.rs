//! The agent's Prometheus metrics. Every label is bounded: a command label is one of
//! [`COMMANDS`] (or `other`), an error kind is the zfs layer's `ErrorKind::as_str`, a pool
//! is one of the pools the agent was configured with, a refresh mode one of three words.
//! Nothing carries a dataset or snapshot name.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::Collector;
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// A Prometheus registry that also remembers the series names of everything registered in
/// it. `gather` leaves out a family without samples (a label set never used yet), so the
/// names alert rules may refer to cannot be read from the exposition; they are read here,
/// from the one place every metric goes through (the chart's test checks its
/// PrometheusRule against them).
#[derive(Clone, Debug, Default)]
pub struct ListedRegistry {
    registry: Registry,
    names: Arc<Mutex<Vec<String>>>,
}

impl ListedRegistry {
    pub fn register(&self, collector: Box<dyn Collector>) -> prometheus::Result<()> {
        let names: Vec<String> = collector.collect().iter().flat_map(series_names).collect();
        self.registry.register(collector)?;
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(names);
        Ok(())
    }

    pub fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }

    /// Every series name registered, sorted: histograms and summaries as the `_bucket`,
    /// `_sum` and `_count` series a query sees.
    pub fn metric_names(&self) -> Vec<String> {
        let mut names = self
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        names.sort();
        names
    }
}

fn series_names(family: &MetricFamily) -> Vec<String> {
    let name = family.name();
    match family.get_field_type() {
        MetricType::HISTOGRAM => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|s| format!("{name}{s}"))
            .collect(),
        MetricType::SUMMARY => vec![
            name.to_owned(),
            format!("{name}_sum"),
            format!("{name}_count"),
        ],
        _ => vec![name.to_owned()],
    }
}

/// Lateness buckets in seconds: fine below 100 ms (the goal for a 1 s schedule), so a p99
/// read from them is honest to a few ms, then coarse up to minutes (a catch-up run).
pub const LATENESS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075, 0.09, 0.1, 0.125, 0.15, 0.2,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The zfs/zpool subcommands the agent runs, as metric labels. Anything else counts as
/// `other`, so a new code path cannot grow the label set.
pub const COMMANDS: &[&str] = &[
    "zfs list",
    "zfs get",
    "zfs snapshot",
    "zfs destroy",
    "zfs holds",
    "zfs send",
    "zfs receive",
    "zfs version",
    "zpool list",
    "zpool get",
    // Not a process: the agent's own `lzc_snapshot` (`zfs_ops::IOCTL_SNAPSHOT`).
    "lzc snapshot",
];

/// The bounded label of an argv: its program and first argument when known.
pub fn command_label(argv: &[String]) -> &'static str {
    let (Some(program), Some(sub)) = (argv.first(), argv.get(1)) else {
        return "other";
    };
    COMMANDS
        .iter()
        .find(|c| {
            c.split_once(' ')
                .is_some_and(|(p, s)| p == program && s == sub)
        })
        .copied()
        .unwrap_or("other")
}

/// How an inventory request was answered (the `mode` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshMode {
    /// Every dataset listed with its snapshots.
    Full,
    /// Datasets listed, snapshots read only where `snapshots_changed` moved.
    Incremental,
}

impl RefreshMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Incremental => "incremental",
        }
    }
}

/// The agent's metrics, registered in their own registry (served at `/metrics`).
#[derive(Clone, Debug)]
pub struct AgentMetrics {
    registry: ListedRegistry,
    pub zfs_command_seconds: HistogramVec,
    pub zfs_output_lines: IntCounterVec,
    pub zfs_output_bytes: IntCounterVec,
    pub zfs_errors: IntCounterVec,
    pub pool_free_bytes: IntGaugeVec,
    /// Size of each pool (with `pool_free_bytes`: how full it is).
    pub pool_size_bytes: IntGaugeVec,
    pub inventory_refreshes: IntCounterVec,
    pub inventory_refresh_seconds: HistogramVec,
    pub inventory_datasets_reread: IntCounter,
    /// From the slot a `TakeSnapshots` stands for to the return of its `zfs snapshot`.
    pub snapshot_lateness: Histogram,
    /// From the slot to the start of its `zfs snapshot`: Tidepool's own part of the
    /// lateness, without the transaction-group commit the command waits for.
    pub snapshot_start_lateness: Histogram,
    /// Replication stream bytes by side (`source`: read from `zfs send`; `target`:
    /// written into `zfs receive`).
    pub transfer_bytes: IntCounterVec,
    /// Finished transfers by side and result (`ok` or the bounded error tag).
    pub transfers: IntCounterVec,
}

/// A metric could not be registered (a name clash: a programming error, reported rather
/// than panicking).
#[derive(Debug, thiserror::Error)]
#[error("registering the agent's metrics")]
pub struct MetricsError(#[from] prometheus::Error);

impl AgentMetrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = ListedRegistry::default();
        let zfs_command_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tidepool_agent_zfs_command_duration_seconds",
                "Wall time of zfs/zpool commands, from start to exit, by subcommand.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
            ]),
            &["command"],
        )?;
        let zfs_output_lines = IntCounterVec::new(
            Opts::new(
                "tidepool_agent_zfs_output_lines_total",
                "Lines zfs/zpool printed on stdout, by subcommand: the work a listing cost.",
            ),
            &["command"],
        )?;
        let zfs_output_bytes = IntCounterVec::new(
            Opts::new(
                "tidepool_agent_zfs_output_bytes_total",
                "Bytes zfs/zpool printed on stdout, by subcommand.",
            ),
            &["command"],
        )?;
        let zfs_errors = IntCounterVec::new(
            Opts::new(
                "tidepool_agent_zfs_errors_total",
                "Failed zfs operations by the zfs layer's error kind.",
            ),
            &["kind"],
        )?;
        let pool_free_bytes = IntGaugeVec::new(
            Opts::new(
                "tidepool_agent_pool_free_bytes",
                "Free bytes of each pool the agent publishes.",
            ),
            &["pool"],
        )?;
        let pool_size_bytes = IntGaugeVec::new(
            Opts::new(
                "tidepool_agent_pool_size_bytes",
                "Size of each pool the agent publishes.",
            ),
            &["pool"],
        )?;
        let inventory_refreshes = IntCounterVec::new(
            Opts::new(
                "tidepool_agent_inventory_refreshes_total",
                "Inventory refreshes by mode (full relist or incremental).",
            ),
            &["mode"],
        )?;
        let inventory_refresh_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tidepool_agent_inventory_refresh_duration_seconds",
                "Wall time of inventory refreshes (all their zfs calls), by mode.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0,
            ]),
            &["mode"],
        )?;
        let inventory_datasets_reread = IntCounter::new(
            "tidepool_agent_inventory_datasets_reread_total",
            "Datasets whose snapshots incremental refreshes read again (their \
             snapshots_changed moved, or the agent changed them itself).",
        )?;
        let snapshot_lateness = Histogram::with_opts(
            HistogramOpts::new(
                "tidepool_agent_snapshot_lateness_seconds",
                "From the schedule slot a snapshot stands for (sent by the controller) to the \
                 return of its zfs snapshot, by this node's clock; early is counted as 0.",
            )
            .buckets(LATENESS_BUCKETS.to_vec()),
        )?;
        let transfer_bytes = IntCounterVec::new(
            Opts::new(
                "tidepool_agent_transfer_bytes_total",
                "Replication stream bytes moved by this agent, by side (source: read from \
                 zfs send; target: written into zfs receive).",
            ),
            &["side"],
        )?;
        let transfers = IntCounterVec::new(
            Opts::new(
                "tidepool_agent_transfers_total",
                "Finished replication transfers by side and result (ok, or the error tag).",
            ),
            &["side", "result"],
        )?;
        registry.register(Box::new(transfer_bytes.clone()))?;
        registry.register(Box::new(transfers.clone()))?;
        registry.register(Box::new(snapshot_lateness.clone()))?;
        let snapshot_start_lateness = Histogram::with_opts(
            HistogramOpts::new(
                "tidepool_agent_snapshot_start_lateness_seconds",
                "From the schedule slot a snapshot stands for to the start of its zfs snapshot, \
                 by this node's clock; early is counted as 0.",
            )
            .buckets(LATENESS_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(snapshot_start_lateness.clone()))?;
        registry.register(Box::new(zfs_command_seconds.clone()))?;
        registry.register(Box::new(zfs_output_bytes.clone()))?;
        registry.register(Box::new(inventory_refresh_seconds.clone()))?;
        registry.register(Box::new(inventory_datasets_reread.clone()))?;
        registry.register(Box::new(zfs_output_lines.clone()))?;
        registry.register(Box::new(zfs_errors.clone()))?;
        registry.register(Box::new(pool_free_bytes.clone()))?;
        registry.register(Box::new(pool_size_bytes.clone()))?;
        registry.register(Box::new(inventory_refreshes.clone()))?;
        Ok(Self {
            registry,
            zfs_command_seconds,
            zfs_output_lines,
            zfs_output_bytes,
            zfs_errors,
            pool_free_bytes,
            pool_size_bytes,
            inventory_refreshes,
            inventory_refresh_seconds,
            inventory_datasets_reread,
            snapshot_lateness,
            snapshot_start_lateness,
            transfer_bytes,
            transfers,
        })
    }

    /// Every series name the agent can export, with or without samples yet.
    pub fn metric_names(&self) -> Vec<String> {
        self.registry.metric_names()
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Records a snapshot of `slot` whose `zfs snapshot` started at `started` and finished
    /// at `done`. A slot after either (the clocks of controller and node disagree) counts
    /// as on time.
    pub fn snapshot_done(
        &self,
        slot: jiff::Timestamp,
        started: jiff::Timestamp,
        done: jiff::Timestamp,
    ) {
        let late = |t: jiff::Timestamp| t.duration_since(slot).as_secs_f64().max(0.0);
        self.snapshot_start_lateness.observe(late(started));
        self.snapshot_lateness.observe(late(done));
    }

    /// How many zfs/zpool commands have run so far (all subcommands).
    pub fn commands_run(&self) -> u64 {
        COMMANDS
            .iter()
            .chain(std::iter::once(&"other"))
            .map(|c| {
                self.zfs_command_seconds
                    .with_label_values(&[c])
                    .get_sample_count()
            })
            .sum()
    }

    /// How many stdout bytes zfs/zpool have printed so far (all subcommands).
    pub fn output_bytes(&self) -> u64 {
        COMMANDS
            .iter()
            .chain(std::iter::once(&"other"))
            .map(|c| self.zfs_output_bytes.with_label_values(&[c]).get())
            .sum()
    }

    /// How many stdout lines zfs/zpool have printed so far (all subcommands).
    pub fn output_lines(&self) -> u64 {
        COMMANDS
            .iter()
            .chain(std::iter::once(&"other"))
            .map(|c| self.zfs_output_lines.with_label_values(&[c]).get())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn command_labels_are_bounded() {
        assert_eq!(command_label(&argv(&["zfs", "list", "-H"])), "zfs list");
        assert_eq!(command_label(&argv(&["zpool", "get", "x"])), "zpool get");
        assert_eq!(command_label(&argv(&["zfs", "send", "a@b"])), "zfs send");
        assert_eq!(command_label(&argv(&["zfs", "rename", "a", "b"])), "other");
        assert_eq!(command_label(&argv(&["zfs"])), "other");
        assert_eq!(command_label(&argv(&["rm", "list"])), "other");
    }

    #[test]
    fn metrics_render_with_their_names() {
        let m = AgentMetrics::new().unwrap_or_else(|e| panic!("{e}"));
        m.zfs_errors.with_label_values(&["NotFound"]).inc();
        m.zfs_command_seconds
            .with_label_values(&["zfs list"])
            .observe(0.1);
        let text = m.render().unwrap_or_default();
        assert!(text.contains("tidepool_agent_zfs_errors_total{kind=\"NotFound\"} 1"));
        assert!(text.contains("tidepool_agent_zfs_command_duration_seconds_count"));
        assert_eq!(m.commands_run(), 1);
    }

    #[test]
    fn every_registered_series_is_listed_before_it_has_samples() {
        let m = AgentMetrics::new().unwrap_or_else(|e| panic!("{e}"));
        let names = m.metric_names();
        assert!(names.contains(&"tidepool_agent_pool_free_bytes".to_owned()));
        assert!(names.contains(&"tidepool_agent_snapshot_lateness_seconds_bucket".to_owned()));
        assert!(!names.contains(&"tidepool_agent_snapshot_lateness_seconds".to_owned()));
        // 9 counters and gauges, 4 histograms of 3 series each.
        assert_eq!(names.len(), 9 + 4 * 3, "{names:?}");
    }

    #[test]
    fn lateness_is_measured_from_the_slot_and_early_counts_as_zero() {
        let m = AgentMetrics::new().unwrap_or_else(|e| panic!("{e}"));
        let slot = jiff::Timestamp::from_millisecond(1_000_000).unwrap_or_default();
        let at = |ms: i64| jiff::Timestamp::from_millisecond(ms).unwrap_or_default();
        m.snapshot_done(slot, at(1_000_012), at(1_000_042));
        m.snapshot_done(slot, at(999_980), at(999_990));
        assert_eq!(m.snapshot_lateness.get_sample_count(), 2);
        assert!((m.snapshot_lateness.get_sample_sum() - 0.042).abs() < 1e-9);
        assert_eq!(m.snapshot_start_lateness.get_sample_count(), 2);
        assert!((m.snapshot_start_lateness.get_sample_sum() - 0.012).abs() < 1e-9);
        let text = m.render().unwrap_or_default();
        assert!(text.contains("tidepool_agent_snapshot_lateness_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("tidepool_agent_snapshot_lateness_seconds_bucket{le=\"0.04\"} 1"));
    }
}
