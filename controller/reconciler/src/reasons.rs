//! Condition and event reasons the reconciler adds to the api crate's
//! (`tidepool_api::condition::reason`). Stable CamelCase words: alerts match on them.

pub use tidepool_api::condition::reason::{
    AGENT_UNAVAILABLE, DATASET_NOT_FOUND, INVALID_SCHEDULE, NO_MATCHING_NODE, NOT_PERMITTED,
    RECONCILED, SUSPENDED,
};
/// An agent refused the command because a newer leader has spoken to it.
pub const NOT_LEADER: &str = "NotLeader";
/// The agent's admin allowlist does not contain the dataset, whatever the grant says.
pub const OUTSIDE_AGENT_ROOTS: &str = "OutsideAgentRoots";
/// The agent refused the command (authentication, a malformed request).
pub const AGENT_REFUSED: &str = "AgentRefused";
/// A pool is not writable (faulted, suspended) or not imported on the node.
pub const POOL_UNAVAILABLE: &str = "PoolUnavailable";
/// Retention destroyed snapshots (Normal event).
pub const PRUNED: &str = "Pruned";
/// Deleting with `deletionPolicy: Delete` is waiting for a node.
pub const DELETE_BLOCKED: &str = "DeleteBlocked";
/// Deleting gave up on a node after the bounded wait; its snapshots were left.
pub const DELETE_ABANDONED: &str = "DeleteAbandoned";
/// The pool has no space left for a snapshot (`zfs snapshot` answers "out of space": on
/// OpenZFS a snapshot needs a little free space beyond the pool's slop reserve).
pub const POOL_FULL: &str = "PoolFull";
