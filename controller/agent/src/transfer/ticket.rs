//! The target agent's one-time tickets. `PrepareReceive` (from the controller, after
//! TokenReview and the epoch fence) registers the exact receive a stream may feed and gets
//! a fresh 256-bit ticket; the stream route redeems it once. The ticket is the only
//! credential on that route, so the registry is where its rules live:
//!
//! - the ticket is drawn from the system's CSPRNG and kept in memory only (a restart
//!   forgets every ticket: the controller prepares again);
//! - it is looked up by its SHA-256, then compared in constant time, so neither the map nor
//!   the comparison tells a guesser how close it came;
//! - the first presentation burns it, whatever follows (expired, wrong binding, or
//!   accepted), so a ticket seen by anyone else is worth nothing after its first use;
//! - it is refused after its time to live, and its receive is the one registered with it:
//!   the presenter chooses neither the dataset nor the options.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use tidepool_wire::ReceiveOptions;
use tidepool_wire::transfer::{TransferBinding, TransferTicket};

use crate::fence::LeaderEpoch;

/// How long a ticket stays valid unless configured: long enough for the controller to
/// call the source agent and for it to connect, short enough that a leaked ticket is
/// stale soon.
pub const DEFAULT_TICKET_TTL: Duration = Duration::from_secs(60);

/// Outstanding tickets at most: a controller bug cannot grow the agent's memory without
/// bound.
pub const DEFAULT_TICKET_CAPACITY: usize = 64;

/// What a redeemed ticket authorises: exactly one receive, as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveGrant {
    pub receive: ReceiveOptions,
    pub binding: TransferBinding,
    /// The leader epoch of the `PrepareReceive`: a stream brokered by a leader that has
    /// since been superseded is refused.
    pub epoch: LeaderEpoch,
    /// No byte for this long aborts the receive.
    pub stall: Duration,
}

/// The binding a presenter claims, as it arrived (header text).
#[derive(Debug, Clone, Copy)]
pub struct PresentedBinding<'a> {
    pub owner: &'a str,
    pub step: &'a str,
    pub source_node: &'a str,
}

/// Why a ticket was not redeemed. Nothing runs after any of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketRefused {
    #[error("no transfer ticket was presented")]
    Missing,
    #[error("the transfer ticket is not 64 lowercase hex digits")]
    Malformed,
    /// Never minted here, or forgotten (expired long ago, agent restarted).
    #[error("the transfer ticket is not known to this agent")]
    Unknown,
    #[error("the transfer ticket has already been used")]
    Used,
    #[error("the transfer ticket expired")]
    Expired,
    /// The ticket is burnt: the presenter is not who it was minted for.
    #[error("the transfer ticket is bound to another {field}")]
    BindingMismatch { field: &'static str },
}

impl TicketRefused {
    /// Bounded label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Missing => "Missing",
            Self::Malformed => "Malformed",
            Self::Unknown => "Unknown",
            Self::Used => "Used",
            Self::Expired => "Expired",
            Self::BindingMismatch { .. } => "BindingMismatch",
        }
    }
}

/// Why no ticket was minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    #[error(
        "{0} transfer tickets are outstanding; the agent mints no more until some are used or expire"
    )]
    Full(usize),
    #[error("the system's random generator failed")]
    Random,
}

struct Entry {
    secret: [u8; 32],
    grant: ReceiveGrant,
    expires_at: Timestamp,
    used: bool,
}

/// The outstanding tickets of one agent process.
pub struct TicketRegistry {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    ttl: SignedDuration,
    capacity: usize,
    random: SystemRandom,
}

impl std::fmt::Debug for TicketRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tickets.
        f.debug_struct("TicketRegistry")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Default for TicketRegistry {
    fn default() -> Self {
        Self::new(DEFAULT_TICKET_TTL, DEFAULT_TICKET_CAPACITY)
    }
}

fn key(secret: &[u8; 32]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k.copy_from_slice(digest(&SHA256, secret).as_ref());
    k
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(difference) == 0
}

impl TicketRegistry {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl: SignedDuration::try_from(ttl).unwrap_or(SignedDuration::from_secs(60)),
            capacity,
            random: SystemRandom::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // Every change is one insert or one field write: a panic elsewhere leaves it whole.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets tickets a full time-to-live past their expiry; until then a late
    /// presentation is told "expired" or "used" rather than "unknown".
    fn sweep(entries: &mut HashMap<[u8; 32], Entry>, ttl: SignedDuration, now: Timestamp) {
        entries.retain(|_, e| e.expires_at.checked_add(ttl).is_ok_and(|t| t > now));
    }

    /// Mints a ticket for `grant` from the system's CSPRNG.
    pub fn issue(
        &self,
        grant: ReceiveGrant,
        now: Timestamp,
    ) -> Result<(TransferTicket, Timestamp), IssueError> {
        let mut secret = [0u8; 32];
        self.random
            .fill(&mut secret)
            .map_err(|_| IssueError::Random)?;
        self.issue_with(grant, secret, now)
    }

    /// Registers `grant` under `secret` (tests choose it; [`Self::issue`] draws it). An
    /// unused ticket for the same target dataset is revoked: the controller prepared again
    /// (a retry), and two streams into one dataset cannot both succeed.
    pub fn issue_with(
        &self,
        grant: ReceiveGrant,
        secret: [u8; 32],
        now: Timestamp,
    ) -> Result<(TransferTicket, Timestamp), IssueError> {
        let expires_at = now.checked_add(self.ttl).unwrap_or(now);
        let mut entries = self.lock();
        Self::sweep(&mut entries, self.ttl, now);
        entries.retain(|_, e| e.used || e.grant.receive.target() != grant.receive.target());
        if entries.len() >= self.capacity {
            return Err(IssueError::Full(self.capacity));
        }
        entries.insert(
            key(&secret),
            Entry {
                secret,
                grant,
                expires_at,
                used: false,
            },
        );
        Ok((TransferTicket::from_bytes(secret), expires_at))
    }

    /// Redeems the ticket presented as `presented` (its header text) by someone claiming
    /// `binding`. The first presentation of a known ticket burns it, accepted or not.
    pub fn redeem(
        &self,
        presented: Option<&str>,
        binding: PresentedBinding<'_>,
        now: Timestamp,
    ) -> Result<ReceiveGrant, TicketRefused> {
        let ticket: TransferTicket = presented
            .ok_or(TicketRefused::Missing)?
            .parse()
            .map_err(|_| TicketRefused::Malformed)?;
        let secret = ticket.as_bytes();
        let mut entries = self.lock();
        Self::sweep(&mut entries, self.ttl, now);
        let entry = entries
            .get_mut(&key(secret))
            .ok_or(TicketRefused::Unknown)?;
        // The lookup by digest already found it; the comparison of the secrets themselves
        // is the rule, and it takes the same time wherever they differ.
        if !constant_time_eq(&entry.secret, secret) {
            return Err(TicketRefused::Unknown);
        }
        if entry.used {
            return Err(TicketRefused::Used);
        }
        entry.used = true;
        if now >= entry.expires_at {
            return Err(TicketRefused::Expired);
        }
        let bound = &entry.grant.binding;
        let field = if bound.owner.as_str() != binding.owner {
            Some("policy")
        } else if bound.step.as_str() != binding.step {
            Some("step")
        } else if bound.source_node != binding.source_node {
            Some("source node")
        } else {
            None
        };
        if let Some(field) = field {
            return Err(TicketRefused::BindingMismatch { field });
        }
        Ok(entry.grant.clone())
    }

    /// Tickets minted and not yet forgotten (used ones included until swept).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
