//! Replication into an S3-compatible object store (a `ReplicationPolicy` with an
//! `objectStore` target). The source node's agent does everything there for the
//! controller: it uploads `zfs send` as a chunked stream with a manifest
//! (`tidepool_objstore`), lists a dataset's streams (the store's only index: it has no
//! holds, bookmarks or GUID listing) and deletes whole expired chains. The controller
//! brings the bucket's keys (the policy's Secret) with each call; the agent keeps them
//! only while the call runs.

use serde::{Deserialize, Serialize};
use tidepool_api::{DatasetName, SnapshotShortName};

use crate::operation::Owner;
use crate::send::SendFlags;
use crate::ssh::SecretText;
use crate::transfer::{TransferBinding, TransferStream};

/// Where the streams go, and the keys to get there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreAccess {
    /// `https://host[:port][/path]`, or `http://` for a store on a trusted network.
    pub endpoint: String,
    pub bucket: String,
    /// Every key starts with it (may be empty).
    #[serde(default)]
    pub prefix: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: SecretText,
}

/// A snapshot named by its short name and GUID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedGuid {
    pub name: SnapshotShortName,
    pub guid: u64,
}

/// `zfs send` on this node, uploaded as one stream: a full, or an incremental whose
/// `parent` names the snapshot its base was made from (the base itself may be a
/// bookmark). Answered with [`crate::transfer::SendToPeerAnswer`], as a send to an agent is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendToObjectStore {
    /// A full, or an incremental without intermediates (`-i`): a stream is one snapshot.
    pub stream: TransferStream,
    #[serde(default)]
    pub flags: SendFlags,
    pub store: StoreAccess,
    /// The snapshot the stream brings and its creation time (the key's time).
    pub snapshot: NamedGuid,
    pub created: jiff::Timestamp,
    /// The incremental's parent; `None` for a full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<NamedGuid>,
    /// Encrypt the stream with age to this recipient (`age1…`) before it is cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_recipient: Option<String>,
    /// The policy and step, for the agent's transfer list and logs.
    pub binding: TransferBinding,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_timeout_seconds: Option<u32>,
}

/// A read or a retention on one dataset's streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreRequest {
    pub store: StoreAccess,
    /// The source dataset whose streams these are.
    pub dataset: DatasetName,
    pub operation: ObjectStoreOperation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum ObjectStoreOperation {
    /// The dataset's streams, with their manifests' GUIDs.
    List,
    /// Deletes whole chains: all but the newest `keep_chains`, decided by the agent on a
    /// fresh listing (orphans older than the oldest kept full and unfinished uploads older
    /// than the newest complete stream go too). Never a stream something kept needs.
    Expire { keep_chains: u32 },
    /// Deletes every complete stream whose manifest names `owner` as its uploader (a
    /// policy deleted with `deletionPolicy: Delete`); streams of other owners, of none
    /// (format 1) and unfinished uploads stay. Answered with `Expired`.
    DeleteOwned { owner: Owner },
}

/// One stream directory in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredStream {
    /// `<UTC time>-<snapshot>-full` or `…-inc-from-<parent>`.
    pub key: String,
    pub time: jiff::Timestamp,
    pub snapshot: SnapshotShortName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotShortName>,
    /// From the manifest; `None` for an upload that did not finish (no manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_guid: Option<u64>,
    #[serde(default)]
    pub stored_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum ObjectStoreAnswer {
    /// Oldest first.
    Listed {
        streams: Vec<StoredStream>,
    },
    /// The stream keys deleted.
    Expired {
        deleted: Vec<String>,
    },
    Failed {
        message: String,
    },
}

/// A restore drill, run by the source agent: the newest complete chain of `dataset`
/// fetched with every chunk's SHA-256 checked and received into `scratch`, each
/// snapshot's GUID compared with its manifest, then the scratch destroyed. `scratch` must
/// not exist, or carry this drill's mark (an earlier drill that did not finish). A chain
/// encrypted with age is checked chunk by chunk only: agents hold no identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreDrill {
    pub store: StoreAccess,
    /// The source dataset whose streams these are.
    pub dataset: DatasetName,
    /// Where the chain is received; its last component starts with `tidepool-drill-`.
    pub scratch: DatasetName,
    /// Whose drill: set locally on the scratch as it is received, its only license to be
    /// destroyed.
    pub owner: Owner,
}

/// What a drill found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DrillVerdict {
    /// Every chunk matched its SHA-256 and every received snapshot its manifest's GUID.
    Passed,
    /// The store holds no complete chain of the dataset yet.
    NothingStored,
    /// An object the chain needs is gone (a chunk or a manifest).
    ObjectMissing,
    /// A chunk's size or SHA-256 differs from its manifest, or a manifest is unreadable.
    ChunkCorrupt,
    /// `zfs receive` refused the stream, or a received snapshot's GUID differs.
    RestoreFailed,
    /// The store could not be read (network, credentials).
    StoreUnreachable,
    /// The scratch dataset exists and is not this drill's, or is outside the agent's roots.
    ScratchRefused,
}

impl DrillVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillVerdict::Passed => "RestoreDrillPassed",
            DrillVerdict::NothingStored => "NothingStored",
            DrillVerdict::ObjectMissing => "ObjectMissing",
            DrillVerdict::ChunkCorrupt => "ChunkCorrupt",
            DrillVerdict::RestoreFailed => "RestoreFailed",
            DrillVerdict::StoreUnreachable => "TargetUnreachable",
            DrillVerdict::ScratchRefused => "ScratchRefused",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillReport {
    pub verdict: DrillVerdict,
    /// The chain's streams checked, full first.
    #[serde(default)]
    pub streams: Vec<String>,
    /// The chain's newest snapshot and its GUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotShortName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<u64>,
    /// Stream bytes fetched.
    #[serde(default)]
    pub bytes: u64,
    /// Received into the scratch; false for an age-encrypted chain (checksums only).
    #[serde(default)]
    pub received: bool,
    /// The object that is missing or corrupt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_key_never_shows_in_debug() {
        let a = StoreAccess {
            endpoint: "https://s3.example.org".into(),
            bucket: "backups".into(),
            prefix: String::new(),
            region: "us-east-1".into(),
            access_key_id: "AKIA".into(),
            secret_access_key: SecretText::new("very-secret"),
        };
        let shown = format!("{a:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<StoreAccess>(&json).unwrap(), a);
    }
}
