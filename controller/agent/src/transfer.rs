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
mod send;
pub mod ticket;

use std::time::Duration;

use tidepool_wire::transfer::{PrepareReceive, PrepareReceiveAnswer, SendToPeer, SendToPeerAnswer};

use crate::operation::Operation;

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

/// What an agent keeps for transfers: the tickets it minted as a target.
#[derive(Debug, Default)]
pub struct Transfers {
    pub tickets: ticket::TicketRegistry,
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
