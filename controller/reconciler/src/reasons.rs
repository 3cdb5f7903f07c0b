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
/// The source agent could not reach the target agent's stream port (or the target
/// presented a certificate other than the one its `ZfsNode` publishes).
pub const TARGET_UNREACHABLE: &str = "TargetUnreachable";
/// A transfer broke off or stalled; a resumable receive keeps its token for the next run.
pub const TRANSFER_INTERRUPTED: &str = "TransferInterrupted";
/// What was asked of the policy's target kind is not served by this version (`explain` of
/// an `objectStore` target).
pub const TARGET_KIND_UNSUPPORTED: &str = "TargetKindUnsupported";
/// An `ssh` or `objectStore` target's Secret is missing, lacks a key, or holds something
/// unusable.
pub const SECRET_INVALID: &str = "SecretInvalid";
/// The far host presented a host key its `known_hosts` does not list (never accepted).
pub const HOST_KEY_MISMATCH: &str = "HostKeyMismatch";
/// The far host refused the login (key or user).
pub const TARGET_AUTHENTICATION_FAILED: &str = "TargetAuthenticationFailed";
/// zfs refused an operation for want of permission (a far host's forced command, or its
/// login's `zfs allow` delegation).
pub const PERMISSION_DENIED: &str = "PermissionDenied";

/// The status reason of a zfs layer error kind, as agents send it.
pub fn of_zfs_kind(kind: &str) -> &'static str {
    match kind {
        "OutOfSpace" => POOL_FULL,
        "HostKeyMismatch" => HOST_KEY_MISMATCH,
        "AuthenticationFailed" => TARGET_AUTHENTICATION_FAILED,
        "HostUnreachable" => TARGET_UNREACHABLE,
        "PermissionDenied" => PERMISSION_DENIED,
        _ => tidepool_api::condition::reason::ZFS_ERROR,
    }
}
/// A replica is up to date with its source (Normal event after a sync that sent data).
pub const SYNCED: &str = "Synced";
/// The target diverged from the source (`Diverged=True`).
pub const DIVERGED: &str = "Diverged";
/// A deleted policy let go of its holds and bookmarks (and, with `Delete`, destroyed its
/// snapshots on the replicas) (Normal event).
pub const RELEASED: &str = "Released";
/// A diverged target was renamed aside and a new replica seeded (`onDivergence: Rotate`).
pub const ROTATED: &str = "Rotated";
