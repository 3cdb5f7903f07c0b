#![allow(clippy::unwrap_used)]

use serde_json::json;
use tidepool_plan::replication as planner;
use tidepool_wire::{BookkeepingAction, DatasetInventory};

use super::letting_go;

fn inventory() -> DatasetInventory {
    serde_json::from_value(json!({
        "dataset": "tank/db", "exists": true,
        "snapshots": [
            {"name": "a", "guid": 1, "createtxg": 10, "creation": "2026-12-01T00:00:00Z", "held": true},
            {"name": "b", "guid": 2, "createtxg": 11, "creation": "2026-12-01T01:00:00Z", "held": true},
        ],
        "bookmarks": [
            {"name": format!("a{}", planner::bookmark_suffix("team/p")), "guid": 1, "createtxg": 10, "creation": "2026-12-01T00:00:00Z"},
            {"name": format!("a{}", planner::bookmark_suffix("team/other")), "guid": 1, "createtxg": 10, "creation": "2026-12-01T00:00:00Z"},
            {"name": "users-own", "guid": 2, "createtxg": 11, "creation": "2026-12-01T01:00:00Z"},
        ],
        "holds": [
            {"guid": 1, "tag": planner::hold_tag("team/p").as_str()},
            {"guid": 2, "tag": planner::hold_tag("team/other").as_str()},
            {"guid": 2, "tag": "backup-in-progress"},
        ],
        "writtenSinceNewest": 0, "encrypted": false,
    }))
    .unwrap()
}

fn described(actions: &[BookkeepingAction]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            BookkeepingAction::Release { snapshot, tag } => {
                format!("release {} {}", snapshot.snapshot, tag.as_str())
            }
            BookkeepingAction::DestroyBookmark { bookmark, guid } => {
                format!("destroy {bookmark} {guid}")
            }
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_deleted_policy_lets_go_of_its_own_holds_and_bookmarks_only() {
    let d = inventory();
    let tag = planner::hold_tag("team/p");
    let suffix = planner::bookmark_suffix("team/p");
    assert_eq!(
        described(&letting_go(&d, &tag, Some(&suffix))),
        [
            "release tank/db@a tidepool:team/p".to_owned(),
            format!("destroy tank/db#a{suffix} 1"),
        ]
    );
    // On the target: holds only (a policy makes no bookmarks there).
    assert_eq!(
        described(&letting_go(&d, &tag, None)),
        ["release tank/db@a tidepool:team/p"]
    );
    // Another policy's hold and bookmark, and the user's, are never touched.
    let stranger = planner::hold_tag("team/nobody");
    assert!(
        letting_go(
            &d,
            &stranger,
            Some(&planner::bookmark_suffix("team/nobody"))
        )
        .is_empty()
    );
}
