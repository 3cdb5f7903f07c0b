//! Agent-to-agent replication streams (DESIGN.md: the controller brokers, agents carry the
//! bytes). The protocol is in `tidepool_wire::transfer` and docs/DESIGN-NOTES.md; here:
//!
//! - [`ticket`]: the target's one-time tickets;
//! - `receive`: `PrepareReceive` and the stream route on the target;
//! - `send`: `SendToPeer` on the source;
//! - [`peer`]: the source's pinned connection to the target's stream route;
//! - [`bucket`], [`pipe`], [`codec`]: the bandwidth limit, byte meters and the stall
//!   watch, wire compression.

pub mod bucket;
pub mod codec;
pub mod peer;
pub mod pipe;
mod receive;
pub(crate) mod send;
pub mod ticket;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{Json, extract::State};
use jiff::Timestamp;
use tidepool_wire::operation::Owner;
use tidepool_wire::transfer::{
    ListTransfers, PrepareReceive, PrepareReceiveAnswer, SendToPeer, SendToPeerAnswer, StepId,
    TransferProgress, TransferSide, TransfersInFlight,
};

use crate::operation::Operation;
use crate::server::{AgentState, Fenced};
use pipe::Meter;

pub(crate) use receive::{prepare_receive, stream};
pub(crate) use send::send_to_peer;

/// No byte moving for this long aborts a transfer, unless the controller says otherwise.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest stall timeout a controller may ask for.
pub const MAX_STALL_TIMEOUT: Duration = Duration::from_secs(3600);

/// The stall timeout for a request's `stallTimeoutSeconds`, within 1 s to an hour.
pub fn stall_timeout(seconds: Option<u32>) -> Duration {
    seconds
        .map(|s| Duration::from_secs(u64::from(s)))
        .unwrap_or(DEFAULT_STALL_TIMEOUT)
        .clamp(Duration::from_secs(1), MAX_STALL_TIMEOUT)
}

impl Operation for PrepareReceive {
    const PATH: &'static str = "/v1/transfers/prepare-receive";
    type Output = PrepareReceiveAnswer;
}

impl Operation for SendToPeer {
    const PATH: &'static str = "/v1/transfers/send";
    type Output = SendToPeerAnswer;
}

impl Operation for ListTransfers {
    const PATH: &'static str = "/v1/transfers";
    type Output = TransfersInFlight;
}

/// What an agent keeps for transfers: the tickets it minted as a target, and the
/// transfers running now (for progress while a `SendToPeer` call is still open).
#[derive(Debug, Default)]
pub struct Transfers {
    pub tickets: ticket::TicketRegistry,
    in_flight: Mutex<HashMap<u64, InFlight>>,
    next_id: AtomicU64,
}

/// One running end of a transfer.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub owner: Owner,
    pub step: StepId,
    pub side: TransferSide,
    /// The zfs process's own count (send: read; receive: written).
    pub bytes: tidepool_zfs::Progress,
    pub wire: Meter,
    pub estimated: Option<u64>,
    pub started_at: Timestamp,
}

impl Transfers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, InFlight>> {
        // One insert or one remove per change: nothing a panic could leave half done.
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The transfers running now, oldest first.
    pub fn in_flight(&self) -> Vec<TransferProgress> {
        let mut all: Vec<TransferProgress> = self
            .lock()
            .values()
            .map(|t| TransferProgress {
                owner: t.owner.clone(),
                step: t.step.clone(),
                side: t.side,
                bytes: t.bytes.bytes(),
                wire_bytes: t.wire.bytes(),
                estimated_bytes: t.estimated,
                started_at: t.started_at,
            })
            .collect();
        all.sort_by_key(|t| t.started_at);
        all
    }
}

/// Lists `transfer` among those in flight until the guard is dropped; then counts its
/// bytes in the agent's metrics.
pub(crate) fn track(state: &Arc<AgentState>, transfer: InFlight) -> InFlightGuard {
    let id = state.transfers().next_id.fetch_add(1, Ordering::Relaxed);
    state.transfers().lock().insert(id, transfer);
    InFlightGuard {
        state: state.clone(),
        id,
    }
}

/// [`track`] for a source's `zfs send` of a step (to an agent, a far host or a store).
pub(crate) fn track_send(
    state: &Arc<AgentState>,
    binding: &tidepool_wire::transfer::TransferBinding,
    send: &tidepool_zfs::SendStream,
    wire: &Meter,
    estimated: Option<u64>,
) -> InFlightGuard {
    track(
        state,
        InFlight {
            owner: binding.owner.clone(),
            step: binding.step.clone(),
            side: TransferSide::Source,
            bytes: send.progress(),
            wire: wire.clone(),
            estimated,
            started_at: Timestamp::now(),
        },
    )
}

pub(crate) struct InFlightGuard {
    state: Arc<AgentState>,
    id: u64,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let Some(done) = self.state.transfers().lock().remove(&self.id) else {
            return;
        };
        if let Some(zfs) = self.state.zfs() {
            zfs.metrics()
                .transfer_bytes
                .with_label_values(&[done.side.as_str()])
                .inc_by(done.bytes.bytes());
        }
    }
}

/// Counts a finished transfer by side and result.
pub(crate) fn count(state: &AgentState, side: TransferSide, result: &'static str) {
    if let Some(zfs) = state.zfs() {
        zfs.metrics()
            .transfers
            .with_label_values(&[side.as_str(), result])
            .inc();
    }
}

pub(crate) async fn list_transfers(
    State(state): State<Arc<AgentState>>,
    Fenced(ListTransfers {}): Fenced<ListTransfers>,
) -> Json<TransfersInFlight> {
    Json(TransfersInFlight {
        transfers: state.transfers().in_flight(),
    })
}

/// Runs a transfer end in a task of its own, so that it ends with an explicit finish or
/// abort of its zfs process even when the caller hangs up.
pub(crate) async fn spawn_to_completion<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    tokio::spawn(work)
        .await
        .map_err(|e| format!("the transfer's task ended: {e}"))
}

/// An error and its causes on one line.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_timeout_has_a_default_and_bounds() {
        assert_eq!(stall_timeout(None), DEFAULT_STALL_TIMEOUT);
        assert_eq!(stall_timeout(Some(0)), Duration::from_secs(1));
        assert_eq!(stall_timeout(Some(5)), Duration::from_secs(5));
        assert_eq!(stall_timeout(Some(u32::MAX)), MAX_STALL_TIMEOUT);
    }
}
