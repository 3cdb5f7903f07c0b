//! The owner a schedule's snapshots carry in `tidepool.dev:owner`.
//!
//! The one place the owner of an object is built: when the api crate's typed owner
//! (`tidepool_api::owner::Owner`, `<Kind>/<namespace>/<name>`) lands, only this function
//! and its callers' type annotations change.

use tidepool_wire::Owner;

/// The kind part of the owners this controller writes.
pub const SCHEDULE_KIND: &str = "SnapshotSchedule";

/// `SnapshotSchedule/<namespace>/<name>`: kind-qualified, so a ReplicationPolicy of the
/// same name never claims a schedule's snapshots.
pub fn schedule_owner(namespace: &str, name: &str) -> Owner {
    Owner::from(format!("{SCHEDULE_KIND}/{namespace}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_name_kind_namespace_and_name() {
        assert_eq!(&*schedule_owner("apps", "db"), "SnapshotSchedule/apps/db");
        assert_ne!(schedule_owner("a", "b-c"), schedule_owner("a-b", "c"));
    }
}
