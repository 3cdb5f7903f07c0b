//! Agent-to-agent replication, as the controller brokers it (DESIGN.md: the controller never
//! carries the bytes). Two operations and one stream:
//!
//! 1. [`PrepareReceive`] to the **target** agent: the exact `zfs receive` it will run and
//!    the [`TransferBinding`] (policy, step, source node). The target checks it and answers
//!    a one-time, short-lived [`TransferTicket`] ([`ReceivePrepared`]).
//! 2. [`SendToPeer`] to the **source** agent: what to send, the target's endpoint and
//!    certificate fingerprint, the ticket. The source runs `zfs send` and streams it to the
//!    target over TLS pinned to that fingerprint, presenting the ticket.
//! 3. The target redeems the ticket once and pipes the stream into the receive it
//!    registered ([`StreamOutcome`] back to the source); the source reports to the
//!    controller ([`SendToPeerAnswer`]).
//!
//! The source never names the target dataset or the receive options: they were fixed when
//! the ticket was minted.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tidepool_api::{BookmarkName, DatasetName, ResumeToken, SnapshotName};

use crate::fingerprint::{CertificateFingerprint, hex32};
use crate::operation::{OperationError, Owner};
use crate::send::{ReceiveOptions, SendFlags};

/// Which step of a policy a transfer is: chosen by the controller (for example the
/// policy's generation and the GUID sent), echoed by the source and compared by the target.
/// 1 to 128 characters of `[A-Za-z0-9._:-]`, so it travels in an HTTP header as it is.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepId(String);

/// A step id that is not 1 to 128 characters of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a step id is 1 to 128 characters of [A-Za-z0-9._:-], got {shown:?}")]
pub struct StepIdError {
    shown: String,
}

impl StepId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for StepId {
    type Err = StepIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._:-".contains(c);
        if (1..=128).contains(&s.len()) && s.chars().all(allowed) {
            Ok(Self(s.to_owned()))
        } else {
            Err(StepIdError {
                shown: s.chars().take(80).collect(),
            })
        }
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StepId({})", self.0)
    }
}

impl Serialize for StepId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StepId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A one-time ticket: 256 random bits the target agent minted, as 64 lowercase hex digits.
/// It authorises exactly one stream into exactly the receive registered with it. Its
/// `Debug` never shows it (it is a credential until used or expired).
#[derive(Clone, PartialEq, Eq)]
pub struct TransferTicket([u8; 32]);

/// A ticket that is not 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a transfer ticket is 64 lowercase hex digits")]
pub struct TicketFormatError;

impl TransferTicket {
    /// The ticket of 32 random bytes (the agent draws them).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hex form, as it travels in the `tidepool-ticket` header.
    pub fn reveal(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::str::FromStr for TransferTicket {
    type Err = TicketFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        hex32(s).map(Self).ok_or(TicketFormatError)
    }
}

impl fmt::Debug for TransferTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransferTicket(<redacted>)")
    }
}

impl Serialize for TransferTicket {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.reveal())
    }
}

impl<'de> Deserialize<'de> for TransferTicket {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What a ticket is bound to besides the receive: the policy that owns the step, the step,
/// and the node whose agent may present it. The source presents all three with the ticket;
/// any difference burns the ticket and nothing runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferBinding {
    /// The `ReplicationPolicy` (`ReplicationPolicy/<namespace>/<name>`).
    pub owner: Owner,
    pub step: StepId,
    /// The source node's name (its `ZfsNode`): the only agent that may present the ticket.
    pub source_node: String,
}

/// Asks the target agent to get ready for one stream: checks the receive and mints a
/// ticket for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepareReceive {
    /// The receive exactly as the planner emitted it (target, `-s`, `-o`/`-x`; always
    /// `-u`, never `-F`).
    pub receive: ReceiveOptions,
    pub binding: TransferBinding,
    /// No byte for this long aborts the receive (default and bounds: the agent's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_timeout_seconds: Option<u32>,
}

/// The target's answer to [`PrepareReceive`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum PrepareReceiveAnswer {
    Prepared(ReceivePrepared),
    Failed(OperationError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivePrepared {
    pub ticket: TransferTicket,
    /// After this the target refuses the ticket (by the target's clock).
    pub expires_at: jiff::Timestamp,
}

/// The stream to send, as the planner's step names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum TransferStream {
    /// `zfs send <snapshot>`.
    Full { snapshot: SnapshotName },
    /// `zfs send -I <base> <to>` with `intermediates`, else `-i`.
    Incremental {
        base: IncrementalBase,
        to: SnapshotName,
        intermediates: bool,
    },
    /// `zfs send -t <token>`: the rest of an interrupted stream.
    Resume { token: ResumeToken },
}

/// The base of an incremental: a snapshot both sides have, or the source's bookmark of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum IncrementalBase {
    Snapshot { name: SnapshotName },
    Bookmark { name: BookmarkName },
}

impl TransferStream {
    /// The datasets the stream reads on the source (for the dataset roots). A resumed
    /// stream names its dataset only inside the token; the agent reads it from there.
    pub fn datasets(&self) -> Vec<DatasetName> {
        match self {
            TransferStream::Full { snapshot } => vec![snapshot.dataset()],
            TransferStream::Incremental { base, to, .. } => {
                let base = match base {
                    IncrementalBase::Snapshot { name } => name.dataset(),
                    IncrementalBase::Bookmark { name } => name.dataset(),
                };
                vec![base, to.dataset()]
            }
            TransferStream::Resume { .. } => Vec::new(),
        }
    }
}

/// Where the source streams to: the target agent's endpoint and the fingerprint its
/// `ZfsNode` publishes (the only certificate the source accepts there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerTarget {
    /// `host:port`.
    pub endpoint: String,
    pub fingerprint: CertificateFingerprint,
}

/// Compression of the stream on the wire (on top of whatever `-c` kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WireCompression {
    #[default]
    None,
    Zstd,
}

/// Asks the source agent to send one stream to a target agent that holds a ticket for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendToPeer {
    pub stream: TransferStream,
    pub flags: SendFlags,
    pub peer: PeerTarget,
    pub ticket: TransferTicket,
    /// The binding the ticket was minted for; `sourceNode` must be this agent's node.
    pub binding: TransferBinding,
    #[serde(default)]
    pub compression: WireCompression,
    /// Bytes per second on the wire (after compression); none: as fast as it goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_limit: Option<u64>,
    /// No byte for this long aborts the send (default and bounds: the agent's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_timeout_seconds: Option<u32>,
}

/// The source's answer to [`SendToPeer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum SendToPeerAnswer {
    Sent(TransferReport),
    Failed(TransferError),
}

/// What a finished transfer moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferReport {
    /// Bytes read from `zfs send` (the stream itself).
    pub bytes_sent: u64,
    /// Bytes the target wrote into `zfs receive`, as it reported them.
    pub bytes_received: u64,
    /// Bytes on the wire (after compression, before TLS).
    pub wire_bytes: u64,
    /// The `zfs send -nP` estimate, when it could be made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_bytes: Option<u64>,
    pub duration_ms: u64,
}

/// Which end of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TransferSide {
    Source,
    Target,
}

/// Why a transfer failed, classified so the controller can act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(
    tag = "error",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum TransferError {
    /// The request cannot be run (a binding for another node, a bad endpoint...); nothing
    /// ran.
    #[error("invalid request: {message}")]
    InvalidRequest { message: String },
    /// Connecting, or the TLS handshake, failed: a certificate other than the pinned one
    /// ends here. Nothing was sent and the ticket is still unused.
    #[error("the target agent could not be reached: {message}")]
    PeerUnreachable { message: String },
    /// The target refused the ticket (unknown, expired, used, bound to something else) or
    /// the request; it ran nothing.
    #[error("the target agent refused the stream ({status}, {reason}): {message}")]
    PeerRefused {
        status: u16,
        reason: String,
        message: String,
    },
    /// A zfs command failed; `kind` is the zfs layer's bounded code.
    #[error("zfs failed on the {side:?} ({kind}): {message}")]
    Zfs {
        side: TransferSide,
        kind: String,
        message: String,
    },
    /// No byte moved for the stall timeout; both ends were aborted.
    #[error("the transfer stalled on the {side:?}: no byte moved for {idle_seconds} s")]
    Stalled {
        side: TransferSide,
        idle_seconds: u64,
    },
    /// The connection or the stream broke mid-way (a resumable receive keeps its token).
    #[error("the transfer was interrupted: {message}")]
    Interrupted { message: String },
}

impl TransferError {
    /// A bounded label (metrics, logs): the variant's wire tag.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "invalidRequest",
            Self::PeerUnreachable { .. } => "peerUnreachable",
            Self::PeerRefused { .. } => "peerRefused",
            Self::Zfs { .. } => "zfs",
            Self::Stalled { .. } => "stalled",
            Self::Interrupted { .. } => "interrupted",
        }
    }
}

impl TransferSide {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Target => "target",
        }
    }
}

/// Asks an agent which transfers it is running now, and how far each has come.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTransfers {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransfersInFlight {
    pub transfers: Vec<TransferProgress>,
}

/// One running transfer, as one of its ends sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferProgress {
    pub owner: Owner,
    pub step: StepId,
    pub side: TransferSide,
    /// Stream bytes so far (source: read from `zfs send`; target: written into receive).
    pub bytes: u64,
    /// Bytes on the wire so far.
    pub wire_bytes: u64,
    /// The source's `zfs send -nP` estimate of the whole stream (absent on the target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_bytes: Option<u64>,
    pub started_at: jiff::Timestamp,
}

/// The target's answer on the stream route, to the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "result",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum StreamOutcome {
    Received {
        /// Bytes written into `zfs receive` (after decompression).
        bytes_received: u64,
        /// Bytes read from the wire.
        wire_bytes: u64,
    },
    Failed(TransferError),
}

#[cfg(test)]
mod tests;
