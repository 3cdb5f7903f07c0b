//! `ReplicationPolicy`: keep a replica of a dataset's snapshots on another node, an SSH
//! host running ZFS, or an object store.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::Rule;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    DeletionPolicy, LastError, Retention, Schedule, SecretReference, Trigger, pattern,
};
use crate::condition::Condition;
use crate::names::DatasetName;
use crate::receive_property;
use crate::values::PropertyName;

/// Replicate a dataset's snapshots to a target, incrementally, never losing the last
/// common snapshot and never overwriting data the target has and the source lacks.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "tidepool.dev",
    version = "v1alpha1",
    kind = "ReplicationPolicy",
    namespaced,
    derive = "PartialEq",
    status = "ReplicationPolicyStatus",
    shortname = "tprp",
    category = "tidepool",
    doc = "Replicates a dataset's snapshots to another node, an SSH host running ZFS, or an object store.",
    printcolumn(name = "Source", type_ = "string", json_path = ".spec.source.dataset"),
    printcolumn(
        name = "Source Node",
        type_ = "string",
        json_path = ".spec.source.nodeName",
        priority = 1
    ),
    printcolumn(name = "Last Sync", type_ = "date", json_path = ".status.lastSyncTime"),
    printcolumn(
        name = "Lag",
        type_ = "date",
        json_path = ".status.lastReplicatedSnapshotTime"
    ),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextSyncTime",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.target.node) || self.target.node.nodeName != self.source.nodeName || (self.target.node.dataset != self.source.dataset && !self.target.node.dataset.startsWith(self.source.dataset + '/') && !self.source.dataset.startsWith(self.target.node.dataset + '/'))").message("on the source's own node, the target dataset must not be the source dataset, below it or above it"))]
#[x_kube(validation = Rule::new("!has(self.restoreDrill) || has(self.target.objectStore)").message("restoreDrill checks object-store chains; node and ssh replicas are checked by GUID on every receive").field_path(".restoreDrill"))]
#[x_kube(validation = Rule::new("!has(self.target.objectStore) || !has(self.retention) || (has(self.retention.keepLast) && !has(self.retention.keepWithin) && !has(self.retention.hourly) && !has(self.retention.daily) && !has(self.retention.weekly) && !has(self.retention.monthly) && !has(self.retention.yearly))").message("an objectStore target's retention counts whole chains: set keepLast (chains) only").field_path(".retention"))]
pub struct ReplicationPolicySpec {
    /// What to replicate.
    pub source: ReplicationSource,
    pub target: ReplicationTarget,
    /// When to sync. Leave out to sync after each new source snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    #[serde(default)]
    pub send: SendOptions,
    /// Retention on the target, independent of the source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// What to do when the target has data the source lacks (snapshots newer than the last
    /// common one, changes since it, or no common snapshot at all).
    #[serde(default)]
    pub on_divergence: OnDivergence,
    #[serde(default)]
    pub suspend: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Prove now and then that what the object store holds restores (objectStore targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_drill: Option<RestoreDrillPolicy>,
}

/// The shortest time between two restore drills: each fetches a whole chain.
pub const MIN_DRILL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Scheduled restore drills: the newest stored chain received into a scratch dataset on
/// the source node, GUIDs and checksums compared, the scratch destroyed; reported as the
/// `Verified` condition, `status.lastDrill` and metrics.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(drill_floor_rule()).message("restoreDrill.every must be at least 10s").field_path(".every"))]
pub struct RestoreDrillPolicy {
    /// Time between drills, e.g. `24h` or `7d`.
    pub every: crate::duration::HumanDuration,
    /// The dataset on the source node below which the scratch dataset
    /// (`tidepool-drill-<id>`) is received and destroyed: the source dataset's parent
    /// when left out. It must exist, lie within the agent's dataset roots, and the
    /// namespace needs a grant to receive there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_parent: Option<DatasetName>,
}

fn drill_floor_rule() -> String {
    format!(
        "{} >= {}",
        crate::duration::HumanDuration::cel_millis("self.every"),
        MIN_DRILL_INTERVAL.as_millis()
    )
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSource {
    /// The node whose pool holds the dataset (may change if the pool moves to another node).
    #[schemars(length(min = 1, max = 253), regex(pattern = pattern::DNS_SUBDOMAIN))]
    pub node_name: String,
    /// Immutable: pointing a policy at another dataset would orphan its replica.
    #[x_kube(validation = Rule::new("self == oldSelf").message("source.dataset is immutable; create a new ReplicationPolicy to replicate another dataset"))]
    pub dataset: DatasetName,
    /// Also replicate every descendant dataset.
    #[serde(default)]
    pub recursive: bool,
    #[serde(default)]
    pub snapshots: SnapshotSelection,
}

/// Which source snapshots to replicate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSelection {
    /// Only snapshots taken by this SnapshotSchedule (same namespace). Leave out for every
    /// snapshot of the dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = pattern::DNS_SUBDOMAIN))]
    pub schedule_name: Option<String>,
    /// Only snapshots whose short name starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 100),
        regex(pattern = "^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")
    )]
    pub name_prefix: Option<String>,
    /// Send the snapshots between the last common one and the newest too (`zfs send -I`);
    /// false sends only the newest (`-i`).
    #[serde(default = "yes")]
    pub intermediates: bool,
}

/// Exactly one of `node`, `ssh`, `objectStore`. The kind and the target dataset are
/// immutable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.node) ? 1 : 0) + (has(self.ssh) ? 1 : 0) + (has(self.objectStore) ? 1 : 0) == 1").message("set exactly one target kind: node, ssh or objectStore"))]
#[x_kube(validation = Rule::new("has(self.node) == has(oldSelf.node) && has(self.ssh) == has(oldSelf.ssh) && has(self.objectStore) == has(oldSelf.objectStore)").message("the target kind is immutable; create a new ReplicationPolicy"))]
pub struct ReplicationTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStoreTarget>,
}

/// Another node of the cluster, reached agent to agent over pinned TLS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTarget {
    #[schemars(length(min = 1, max = 253), regex(pattern = pattern::DNS_SUBDOMAIN))]
    pub node_name: String,
    /// The dataset to receive into (created on first sync; its parent must exist).
    #[x_kube(validation = Rule::new("self == oldSelf").message("target dataset is immutable"))]
    pub dataset: DatasetName,
}

/// A host outside the cluster running OpenZFS, reached over SSH.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshTarget {
    #[schemars(length(min = 1, max = 253), regex(pattern = pattern::HOST))]
    #[x_kube(validation = Rule::new("!self.contains(':') || isIP(self)").message("host must be a DNS name, an IPv4 address or a valid IPv6 address"))]
    pub host: String,
    #[serde(default = "default_ssh_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    #[serde(default = "default_ssh_user")]
    #[schemars(regex(pattern = pattern::USER))]
    pub user: String,
    #[x_kube(validation = Rule::new("self == oldSelf").message("target dataset is immutable"))]
    pub dataset: DatasetName,
    /// Secret with `ssh-privatekey` and `known_hosts` (host keys are always checked).
    pub secret_ref: SecretReference,
}

/// An S3-compatible object store; streams are stored as chunked, checksummed files.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.prefix.split('/').exists(c, c == '..' || c == '.')").message("prefix must not contain '.' or '..' components"))]
pub struct ObjectStoreTarget {
    /// `https://...` (or `http://` for a store on a trusted network).
    #[schemars(
        length(min = 1, max = 512),
        regex(
            pattern = "^https?://[A-Za-z0-9.-]+(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/[A-Za-z0-9._~/-]*)?$"
        )
    )]
    pub endpoint: String,
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("bucket is immutable"))]
    pub bucket: String,
    #[serde(default)]
    #[schemars(
        length(max = 512),
        regex(pattern = "^([A-Za-z0-9_.-]+/)*[A-Za-z0-9_.-]*$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("prefix is immutable"))]
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = "^[a-z0-9-]+$"))]
    pub region: Option<String>,
    /// Secret with `accessKeyId` and `secretAccessKey`.
    pub secret_ref: SecretReference,
    /// When a chain ends and the next stream is a new full: after this many streams
    /// (the full counted), or once its full is this old; 7 streams when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_every: Option<FullEvery>,
    /// What an incremental is sent from: the chain's full (`LastFull`: a restore needs
    /// two streams) or the chain's newest stream (`Previous`: smaller uploads, longer
    /// restores).
    #[serde(default)]
    pub incrementals_against: IncrementalsAgainst,
    /// Encrypt every stream with age before it leaves the node. A source sent raw
    /// (`send.raw`, an encrypted dataset) is already ciphertext and needs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<StreamEncryption>,
}

/// When an object-store chain ends. Exactly one of the two.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.streams) != has(self.age)").message("set exactly one of fullEvery.streams and fullEvery.age"))]
pub struct FullEvery {
    /// A chain holds at most this many streams, the full counted (1: every stream is full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub streams: Option<i32>,
    /// A chain is closed once its full is this old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age: Option<crate::duration::HumanDuration>,
}

/// What an object-store incremental is sent from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum IncrementalsAgainst {
    #[default]
    LastFull,
    Previous,
}

/// Client-side encryption of object-store streams.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamEncryption {
    /// An age X25519 public key (`age1…`). Agents hold only this: they can write backups
    /// but never read them.
    #[schemars(
        length(min = 62, max = 62),
        regex(pattern = "^age1[02-9ac-hj-np-z]{58}$")
    )]
    pub age_recipient: String,
}

/// How streams are made (`zfs send`) and received (`zfs receive`). Replicas are always
/// received unmounted (`-u`), and `tidepool.dev:*` properties in a stream never reach them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.excludeProperties) || !has(self.overrideProperties) || !self.overrideProperties.exists(o, o.name in self.excludeProperties)").message("a property cannot be both set (overrideProperties) and excluded (excludeProperties)").field_path(".excludeProperties"))]
pub struct SendOptions {
    /// Send encrypted datasets raw (`-w`): the target never sees plaintext or keys. With
    /// false, a sync that would leave plaintext of an encrypted source on a target that does
    /// not encrypt it is refused.
    #[serde(default = "yes")]
    pub raw: bool,
    /// Keep on-disk compression in the stream (`-c`).
    #[serde(default = "yes")]
    pub compressed: bool,
    /// Allow blocks over 128 KiB (`-L`); must stay the same for the life of a replica.
    #[serde(default = "yes")]
    pub large_blocks: bool,
    /// Embed small blocks in the stream (`-e`).
    #[serde(default = "yes")]
    pub embedded_data: bool,
    /// Send dataset properties (`-p`).
    #[serde(default)]
    pub properties: bool,
    /// Properties the replica must not take from the stream (`zfs receive -x`): the
    /// native ones the allowlist names, and user properties outside `tidepool.dev:` (never
    /// `mountpoint`, `canmount`, `tidepool.dev:*`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q == p))").message("excludeProperties must not name a property twice"))]
    #[x_kube(validation = Rule::new(receive_property::cel::excludable_names()).message(receive_property::cel::excludable_names_message().as_str()))]
    pub exclude_properties: Vec<PropertyName>,
    /// Properties set on the replica (`zfs receive -o`): the native ones the allowlist
    /// names, with the values it allows, and user properties outside `tidepool.dev:`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub override_properties: Vec<PropertyOverride>,
    /// Bytes per second, e.g. `50Mi`. Leave out for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = pattern::BANDWIDTH))]
    pub bandwidth_limit: Option<String>,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            raw: true,
            compressed: true,
            large_blocks: true,
            embedded_data: true,
            properties: false,
            exclude_properties: vec![],
            override_properties: vec![],
            bandwidth_limit: None,
        }
    }
}

/// One `zfs receive -o name=value` on the replica. Never `mountpoint`, `sharenfs`,
/// `sharesmb`, `setuid`, `exec`, `devices`, `zoned`, `keylocation`, `canmount=on` or
/// `tidepool.dev:*`.
// Decoded as it was admitted; the planner turns it into a `ReceiveProperty`, which refuses
// what the allowlist refuses, so an object admitted before a rule existed is reported,
// never received.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(receive_property::cel::settable_name()).message(receive_property::cel::settable_name_message().as_str()).field_path(".name"))]
#[x_kube(validation = value_rule(0))]
#[x_kube(validation = value_rule(1))]
#[x_kube(validation = value_rule(2))]
#[x_kube(validation = value_rule(3))]
#[x_kube(validation = value_rule(4))]
#[x_kube(validation = value_rule(5))]
#[x_kube(validation = value_rule(6))]
#[x_kube(validation = value_rule(7))]
#[x_kube(validation = value_rule(8))]
pub struct PropertyOverride {
    pub name: PropertyName,
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")
    )]
    pub value: String,
}

/// The CEL rule that checks the value of the `i`th native property of
/// [`receive_property::NATIVE`] (one rule each, so the message names the property).
fn value_rule(i: usize) -> Rule {
    let rules = receive_property::cel::value_rules();
    match rules.into_iter().nth(i) {
        Some((rule, message)) => Rule::new(rule)
            .message(message.as_str())
            .field_path(".value"),
        // Fewer native properties than rules: the spare rule always holds.
        None => Rule::new("true"),
    }
}

/// What to do when the target has diverged from the source.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnDivergence {
    /// Stop syncing and report `Diverged=True`; change nothing on the target.
    #[default]
    Fail,
    /// Rename the diverged target dataset aside (`<dataset>-diverged-<time>`), keeping
    /// everything it holds, and start a new replica from the source.
    Rotate,
}

impl Default for SnapshotSelection {
    fn default() -> Self {
        Self {
            schedule_name: None,
            name_prefix: None,
            intermediates: true,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_ssh_port() -> i32 {
    22
}

fn default_ssh_user() -> String {
    "root".to_owned()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = crate::bounds::MAX_INT64))]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// When the last successful sync finished.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::bounds::lenient_optional_time"
    )]
    #[schemars(schema_with = "crate::bounds::optional_time")]
    pub last_sync_time: Option<Time>,
    /// How long it took, e.g. `12s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_duration: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::bounds::lenient_optional_time"
    )]
    #[schemars(schema_with = "crate::bounds::optional_time")]
    pub next_sync_time: Option<Time>,
    /// Creation time of the newest snapshot the target holds; `now` minus this is the lag
    /// (the `Lag` column shows it as an age).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::bounds::lenient_optional_time"
    )]
    #[schemars(schema_with = "crate::bounds::optional_time")]
    pub last_replicated_snapshot_time: Option<Time>,
    /// The newest snapshot source and target share (by GUID), as its short name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_common_snapshot: Option<String>,
    /// A partial receive left a resume token on the target.
    #[serde(default)]
    pub resume_token_present: bool,
    /// Bytes sent by the last sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = crate::bounds::MAX_INT64))]
    pub last_sync_bytes: Option<i64>,
    /// Progress of the sync under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<SyncProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_manual_trigger: Option<String>,
    /// Bounded in the schema: the API server does not check `format: int32`, and a value
    /// beyond it would fail typed decoding of the whole list.
    #[serde(default)]
    #[schemars(range(min = 0, max = 2147483647))]
    pub consecutive_failures: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    /// The last restore drill (`spec.restoreDrill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<DrillStatus>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::bounds::lenient_optional_time"
    )]
    #[schemars(schema_with = "crate::bounds::optional_time")]
    pub next_drill_time: Option<Time>,
}

/// What the last restore drill found.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillStatus {
    #[serde(deserialize_with = "crate::bounds::lenient_time")]
    #[schemars(schema_with = "crate::bounds::time")]
    pub time: Time,
    pub passed: bool,
    /// `RestoreDrillPassed`, or why it failed (`ObjectMissing`, `ChunkCorrupt`,
    /// `RestoreFailed`, ...), as the `Verified` condition's reason.
    pub reason: String,
    /// The newest snapshot of the chain checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The chain's streams checked, full first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<String>,
    /// Received into a scratch dataset and matched by GUID; false when the chain is
    /// encrypted with age and only its checksums could be checked.
    #[serde(default)]
    pub received: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = crate::bounds::MAX_INT64))]
    pub bytes: Option<i64>,
    /// How long it took, e.g. `12.3s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// The object found missing or corrupt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(default)]
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncProgress {
    #[schemars(range(min = 0, max = crate::bounds::MAX_INT64))]
    pub bytes_done: i64,
    /// From `zfs send -nvP`; absent when the estimate failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = crate::bounds::MAX_INT64))]
    pub bytes_total: Option<i64>,
    #[serde(deserialize_with = "crate::bounds::lenient_time")]
    #[schemars(schema_with = "crate::bounds::time")]
    pub started: Time,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    /// `PropertyOverride` carries one `value_rule(i)` attribute per native property: a
    /// property added to the table without one would go unchecked at admission.
    #[test]
    fn the_crd_checks_the_value_of_every_native_property() {
        let crd = serde_json::to_string(&ReplicationPolicy::crd()).unwrap();
        for (rule, _) in receive_property::cel::value_rules() {
            let quoted = serde_json::to_string(&rule).unwrap();
            assert!(crd.contains(&quoted), "missing rule {rule}");
        }
        let quoted = serde_json::to_string(&receive_property::cel::settable_name()).unwrap();
        assert!(crd.contains(&quoted));
        let quoted = serde_json::to_string(&receive_property::cel::excludable_names()).unwrap();
        assert!(crd.contains(&quoted));
    }
}
