//! Types shared by the resources: schedules, retention, triggers, references, errors.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cron::CronExpression;
use crate::duration::HumanDuration;
use crate::lenient::Lenient;
use crate::names::DatasetName;

/// Patterns for strings that are not ZFS names.
pub mod pattern {
    /// A Kubernetes object name (DNS subdomain, RFC 1123).
    pub const DNS_SUBDOMAIN: &str =
        "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
    /// An IANA time zone name such as `Europe/Berlin` or `UTC`.
    pub const TIME_ZONE: &str = "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,3}$";
    /// A snapshot name prefix: no `_`, which separates the parts of Tidepool's names.
    pub const SNAPSHOT_PREFIX: &str = "^[A-Za-z][A-Za-z0-9.:-]{0,31}$";
    /// A snapshot name label: no `_` either.
    pub const SNAPSHOT_LABEL: &str = "^[A-Za-z0-9][A-Za-z0-9.:-]{0,62}$";
    /// A ZFS property name, native (`compression`) or user (`tidepool.dev:owner`).
    pub const ZFS_PROPERTY: &str = "^[a-z][a-z0-9_.:-]{0,255}$";
    /// A host name or an IPv4/IPv6 address; never starts with `-` (it would read as an
    /// option to ssh).
    pub const HOST: &str = "^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|[0-9a-fA-F]*:[0-9a-fA-F:.]*)$";
    /// A POSIX user name.
    pub const USER: &str = "^[a-z_][a-z0-9_-]{0,31}$";
    /// A Kubernetes label key: an optional DNS-subdomain prefix and `/`, then a name.
    pub const LABEL_KEY: &str = "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
    /// A Kubernetes label value (may be empty).
    pub const LABEL_VALUE: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$";
    /// Printable ASCII: no newlines or control characters.
    pub const PRINTABLE: &str = "^[ -~]+$";
    /// A bandwidth in bytes per second, with an optional binary suffix.
    pub const BANDWIDTH: &str = "^[1-9][0-9]{0,11}(Ki|Mi|Gi)?$";
}

/// Which datasets a schedule takes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.recursive || !has(self.exclude) || size(self.exclude) == 0").message("exclude needs recursive: true"))]
#[x_kube(validation = Rule::new("!has(self.exclude) || self.exclude.all(e, e.startsWith(self.name + '/'))").message("each exclude entry must be a descendant of name"))]
pub struct DatasetSelector {
    /// The dataset, e.g. `tank/apps/db`.
    pub name: DatasetName,
    /// Also take every descendant dataset (one atomic `zfs snapshot -r`-like call).
    #[serde(default)]
    pub recursive: bool,
    /// Descendants to leave out when `recursive` is set (full names, below `name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub exclude: Vec<DatasetName>,
}

/// When something runs: exactly one of `interval` and `cron`.
// Decoded leniently: `cron` keeps its text when it does not parse and `timeZone` is a
// string, so an admitted object always decodes; `Schedule::validate` (crate::validation)
// is what the acting code trusts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.interval) != has(self.cron)").message("set exactly one of interval and cron"))]
#[x_kube(validation = Rule::new(interval_floor_rule()).message(MIN_INTERVAL_MESSAGE).field_path(".interval"))]
#[x_kube(validation = Rule::new(jitter_within_interval_rule()).message("jitter must not be longer than interval").field_path(".jitter"))]
pub struct Schedule {
    /// A fixed interval (from `500ms` to weeks), counted from the scheduled time, not from
    /// the end of the previous run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,
    /// A five-field cron expression (`minute hour day-of-month month day-of-week`) or a
    /// shorthand such as `@hourly`, evaluated in `timeZone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<Lenient<CronExpression>>,
    /// IANA time zone for `cron` and for the retention buckets (days, weeks...).
    #[serde(default = "default_time_zone")]
    #[schemars(length(max = 64), regex(pattern = pattern::TIME_ZONE))]
    pub time_zone: String,
    /// Spread runs of many objects: each object runs a fixed, deterministic offset in
    /// `[0, jitter)` after each scheduled time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<HumanDuration>,
}

pub fn default_time_zone() -> String {
    "UTC".to_owned()
}

/// The shortest interval the product supports (see docs/DESIGN-NOTES.md, "Schedules").
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
const MIN_INTERVAL_MESSAGE: &str = "interval must be at least 500ms";

fn interval_floor_rule() -> String {
    format!(
        "!has(self.interval) || {} >= {}",
        HumanDuration::cel_millis("self.interval"),
        MIN_INTERVAL.as_millis()
    )
}

fn jitter_within_interval_rule() -> String {
    format!(
        "!has(self.interval) || !has(self.jitter) || {} <= {}",
        HumanDuration::cel_millis("self.jitter"),
        HumanDuration::cel_millis("self.interval")
    )
}

/// Which snapshots to keep. A snapshot is kept if any rule keeps it. Only snapshots Tidepool
/// created for this object are ever considered; the newest snapshot of each dataset, held
/// snapshots and replication bases are always kept.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.keepLast) || has(self.keepWithin) || has(self.hourly) || has(self.daily) || has(self.weekly) || has(self.monthly) || has(self.yearly)").message("set at least one retention rule, or leave retention out to keep every snapshot"))]
pub struct Retention {
    /// Keep the newest N snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub keep_last: Option<i32>,
    /// Keep every snapshot younger than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<HumanDuration>,
    /// Keep the newest snapshot of each of the last N hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub hourly: Option<i32>,
    /// Keep the newest snapshot of each of the last N days (in the schedule's time zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub daily: Option<i32>,
    /// Keep the newest snapshot of each of the last N ISO weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub weekly: Option<i32>,
    /// Keep the newest snapshot of each of the last N months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub monthly: Option<i32>,
    /// Keep the newest snapshot of each of the last N years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub yearly: Option<i32>,
}

/// GitOps-safe "run now": change `manual` to any new value and the controller runs once,
/// then echoes the value to `status.lastManualTrigger`. The spec is never rewritten.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = pattern::PRINTABLE))]
    pub manual: Option<String>,
}

/// What happens to the ZFS data an object made when the object is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep every snapshot and replica (the default: deleting an object never deletes data).
    #[default]
    Retain,
    /// Destroy the snapshots this object created (never the newest common snapshot of a
    /// replication that still exists, never held snapshots, never datasets); for an
    /// object-store target, delete the streams whose manifests name this policy.
    Delete,
}

/// A Secret in the object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    #[schemars(length(min = 1, max = 253), regex(pattern = pattern::DNS_SUBDOMAIN))]
    pub name: String,
}

/// Node labels to match (all must match), as in a Pod's `nodeSelector`. Keys and values
/// follow Kubernetes' label syntax.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct NodeSelector(pub BTreeMap<String, String>);

impl JsonSchema for NodeSelector {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NodeSelector".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "maxProperties": 16,
            "additionalProperties": {
                "type": "string",
                "maxLength": 63,
                "pattern": pattern::LABEL_VALUE,
            },
            "x-kubernetes-validations": [{
                "rule": format!("self.all(k, size(k) <= 316 && k.matches('{}'))", pattern::LABEL_KEY.replace('\\', "\\\\")),
                "message": "label keys must be [prefix/]name as in Kubernetes labels",
            }],
        })
    }
}

/// The most recent failure, kept until a later success clears it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// The node where it happened, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// A CamelCase reason, as in the conditions.
    pub reason: String,
    pub message: String,
    #[serde(deserialize_with = "crate::bounds::lenient_time")]
    #[schemars(schema_with = "crate::bounds::time")]
    pub time: Time,
}
