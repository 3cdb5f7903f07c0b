//! Fencing: a controller that lost its Lease may still be running (paused, partitioned)
//! and still send commands. Every command carries the sender's leader epoch; the agent
//! remembers the highest epoch it has accepted and refuses anything older, so once a new
//! leader has spoken to an agent, the old one can never act on it again.

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};

/// The leader epoch: the `leaseTransitions` of the controller's Lease at the moment it
/// acquired leadership. The API server increments it on every change of holder (with the
/// Lease's resourceVersion guarding the write), so a later leader always holds a larger
/// value than any earlier one. The controller must never delete its Lease: a recreated
/// Lease starts again at 0 and agents would refuse the new leader until they restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaderEpoch(pub u64);

impl fmt::Display for LeaderEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A command from an older leader than one already heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "command from leader epoch {command}, but epoch {highest} has already been seen: the sender is no longer the leader"
)]
pub struct StaleEpoch {
    pub command: LeaderEpoch,
    pub highest: LeaderEpoch,
}

/// The highest epoch seen by this agent process. Kept in memory only: after a restart the
/// agent accepts the first epoch it hears again, so a stale leader could act again only
/// until the current leader's next command reaches this agent (see DESIGN-NOTES).
#[derive(Debug, Default)]
pub struct EpochFence {
    highest: AtomicU64,
}

impl EpochFence {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `epoch` if no higher one has been seen, raising the mark to it; equal epochs
    /// are the same leader and pass. One atomic step, so two concurrent commands cannot
    /// both pass on a stale read.
    pub fn admit(&self, epoch: LeaderEpoch) -> Result<(), StaleEpoch> {
        let before = self.highest.fetch_max(epoch.0, Ordering::AcqRel);
        if epoch.0 < before {
            Err(StaleEpoch {
                command: epoch,
                highest: LeaderEpoch(before),
            })
        } else {
            Ok(())
        }
    }

    /// Whether `epoch` is still the newest seen, without raising the mark: for work a
    /// leader brokered earlier and another party (a peer agent) now carries out.
    pub fn check_current(&self, epoch: LeaderEpoch) -> Result<(), StaleEpoch> {
        let highest = self.highest();
        if epoch < highest {
            Err(StaleEpoch {
                command: epoch,
                highest,
            })
        } else {
            Ok(())
        }
    }

    pub fn highest(&self) -> LeaderEpoch {
        LeaderEpoch(self.highest.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_or_a_newer_leader_passes() {
        let fence = EpochFence::new();
        assert_eq!(fence.admit(LeaderEpoch(0)), Ok(()));
        assert_eq!(fence.admit(LeaderEpoch(3)), Ok(()));
        assert_eq!(fence.admit(LeaderEpoch(3)), Ok(()));
        assert_eq!(fence.admit(LeaderEpoch(7)), Ok(()));
        assert_eq!(fence.highest(), LeaderEpoch(7));
    }

    #[test]
    fn an_older_leader_is_refused_and_does_not_lower_the_mark() {
        let fence = EpochFence::new();
        assert_eq!(fence.admit(LeaderEpoch(5)), Ok(()));
        assert_eq!(
            fence.admit(LeaderEpoch(4)),
            Err(StaleEpoch {
                command: LeaderEpoch(4),
                highest: LeaderEpoch(5)
            })
        );
        assert_eq!(fence.highest(), LeaderEpoch(5));
        // Still refused on a second try: the refusal changed nothing.
        assert!(fence.admit(LeaderEpoch(4)).is_err());
        assert!(fence.admit(LeaderEpoch(0)).is_err());
    }

    #[test]
    fn concurrent_leaders_end_with_the_highest_and_refuse_the_rest_afterwards() {
        let fence = std::sync::Arc::new(EpochFence::new());
        let threads: Vec<_> = (0..8u64)
            .map(|i| {
                let fence = fence.clone();
                std::thread::spawn(move || {
                    for e in 0..1000u64 {
                        let _ = fence.admit(LeaderEpoch(e * 8 + i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no thread panics");
        }
        assert_eq!(fence.highest(), LeaderEpoch(999 * 8 + 7));
        assert!(fence.admit(LeaderEpoch(999 * 8 + 6)).is_err());
    }

    #[test]
    fn the_epoch_is_a_plain_number_on_the_wire() {
        assert_eq!(
            serde_json::to_string(&LeaderEpoch(42)).ok().as_deref(),
            Some("42")
        );
    }
}
