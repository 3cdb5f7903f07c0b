//! The owner a schedule's snapshots carry in `tidepool.dev:owner`: the one place the
//! controller builds it.

use tidepool_api::owner::{OwnerError, OwnerKind};
use tidepool_wire::Owner;

/// `SnapshotSchedule/<namespace>/<name>`: kind-qualified, so a ReplicationPolicy of the
/// same name never claims a schedule's snapshots.
pub fn schedule_owner(namespace: &str, name: &str) -> Result<Owner, OwnerError> {
    Owner::new(OwnerKind::SnapshotSchedule, namespace, name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn owners_name_kind_namespace_and_name() {
        let owner = schedule_owner("apps", "db").unwrap();
        assert_eq!(owner.as_str(), "SnapshotSchedule/apps/db");
        assert_eq!(owner.kind(), OwnerKind::SnapshotSchedule);
        assert_ne!(
            schedule_owner("a", "b-c").unwrap(),
            schedule_owner("a-b", "c").unwrap()
        );
    }
}
