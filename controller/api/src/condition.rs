//! Status conditions: the types and reasons Tidepool uses, and the one helper that sets them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bounds;

// Tidepool's own type, with the JSON shape and field names of `metav1.Condition`, for its
// schema: `metav1.Condition` says `format: date-time` for `lastTransitionTime`, which the
// API server checks more loosely than `Time` decodes, so one condition written with a
// 10-digit fraction would break every typed list of the kind. Here the time carries
// `bounds::TIME_PATTERN`, and the other fields the limits `metav1.Condition` documents
// (Kubernetes checks those in Go code, not in its published schema).
/// One aspect of the object's current state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of condition in CamelCase or in `foo.example.com/CamelCase`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(schema_with = "status_schema")]
    pub status: String,
    /// The `.metadata.generation` the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = bounds::MAX_INT64))]
    pub observed_generation: Option<i64>,
    /// When the status last changed.
    #[serde(deserialize_with = "crate::bounds::lenient_time")]
    #[schemars(schema_with = "bounds::time")]
    pub last_transition_time: Time,
    /// Why, in CamelCase.
    #[schemars(length(min = 1, max = 1024), regex(pattern = REASON_PATTERN))]
    pub reason: String,
    /// For people; may be empty.
    #[schemars(length(max = MAX_MESSAGE_CHARS))]
    pub message: String,
}

/// The longest message the schema admits, in characters (`metav1.Condition`'s limit).
pub const MAX_MESSAGE_CHARS: usize = 32768;

/// `metav1.Condition`'s reason syntax.
const REASON_PATTERN: &str = "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$";

fn status_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["True", "False", "Unknown"],
    })
}

/// Condition types.
pub mod kind {
    /// The object is doing what it asks for (the summary condition).
    pub const READY: &str = "Ready";
    /// A run (snapshot, send, prune) is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// The last run failed or part of the object cannot be served.
    pub const DEGRADED: &str = "Degraded";
    /// The target has data the source lacks (replication only).
    pub const DIVERGED: &str = "Diverged";
    /// The last restore drill restored the newest stored chain (replication to an object
    /// store with `restoreDrill` only).
    pub const VERIFIED: &str = "Verified";
}

/// Condition reasons (CamelCase, one word, stable: alerts and scripts match on them).
pub mod reason {
    pub const RECONCILED: &str = "Reconciled";
    pub const SUSPENDED: &str = "Suspended";
    pub const WAITING_FOR_SCHEDULE: &str = "WaitingForSchedule";
    pub const SNAPSHOTTING: &str = "Snapshotting";
    pub const SENDING: &str = "Sending";
    pub const PRUNING: &str = "Pruning";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const INVALID_SCHEDULE: &str = "InvalidSchedule";
    /// The namespace has no DatasetGrant for a dataset on a node.
    pub const NOT_PERMITTED: &str = "NotPermitted";
    pub const AGENT_UNAVAILABLE: &str = "AgentUnavailable";
    pub const NO_MATCHING_NODE: &str = "NoMatchingNode";
    pub const DATASET_NOT_FOUND: &str = "DatasetNotFound";
    pub const NO_COMMON_SNAPSHOT: &str = "NoCommonSnapshot";
    pub const TARGET_MODIFIED: &str = "TargetModified";
    pub const PLAINTEXT_REFUSED: &str = "PlaintextRefused";
    pub const ZFS_ERROR: &str = "ZfsError";
    pub const AS_EXPECTED: &str = "AsExpected";
}

/// Sets `new` in `conditions` (a list map keyed by `type`).
///
/// `lastTransitionTime` moves only when the status flips; a change of reason, message or
/// generation alone keeps it. Returns whether anything changed, so callers can skip a
/// status write that would change nothing.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            conditions.push(new);
            true
        }
        Some(old) => {
            let transition = if old.status == new.status {
                old.last_transition_time.clone()
            } else {
                new.last_transition_time
            };
            let updated = Condition {
                last_transition_time: transition,
                ..new
            };
            if *old == updated {
                false
            } else {
                *old = updated;
                true
            }
        }
    }
}

/// A condition with status `"True"`/`"False"`, stamped with `now` and `generation`.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: within_limit(message.into()),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// `message` cut to [`MAX_MESSAGE_CHARS`]: a long zfs error must not make the whole status
/// write fail at admission.
fn within_limit(mut message: String) -> String {
    if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(cut);
    }
    message
}

/// The condition of `type_`, if set.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn messages_are_cut_to_what_the_schema_admits() {
        let long = "é".repeat(MAX_MESSAGE_CHARS + 5);
        let c = condition(kind::READY, false, reason::ZFS_ERROR, long, None, at(1));
        assert_eq!(c.message.chars().count(), MAX_MESSAGE_CHARS);
        let exact = "x".repeat(MAX_MESSAGE_CHARS);
        let c = condition(
            kind::READY,
            false,
            reason::ZFS_ERROR,
            exact.clone(),
            None,
            at(1),
        );
        assert_eq!(c.message, exact);
    }

    #[test]
    fn adds_a_new_condition() {
        let mut cs = vec![];
        assert!(set_condition(
            &mut cs,
            condition(kind::READY, true, reason::RECONCILED, "ok", Some(1), at(10))
        ));
        assert_eq!(cs.len(), 1);
    }

    #[test]
    fn keeps_transition_time_when_status_is_unchanged() {
        let mut cs = vec![condition(
            kind::READY,
            true,
            reason::RECONCILED,
            "ok",
            Some(1),
            at(10),
        )];
        // Same status, new message and generation: time stays, content changes.
        assert!(set_condition(
            &mut cs,
            condition(
                kind::READY,
                true,
                reason::RECONCILED,
                "still ok",
                Some(2),
                at(20)
            )
        ));
        assert_eq!(cs[0].last_transition_time, Time(at(10)));
        assert_eq!(cs[0].message, "still ok");
        assert_eq!(cs[0].observed_generation, Some(2));
        // Nothing but the time differs: no change at all.
        assert!(!set_condition(
            &mut cs,
            condition(
                kind::READY,
                true,
                reason::RECONCILED,
                "still ok",
                Some(2),
                at(30)
            )
        ));
        assert_eq!(cs[0].last_transition_time, Time(at(10)));
    }

    #[test]
    fn moves_transition_time_when_status_flips() {
        let mut cs = vec![condition(
            kind::READY,
            true,
            reason::RECONCILED,
            "ok",
            Some(1),
            at(10),
        )];
        assert!(set_condition(
            &mut cs,
            condition(
                kind::READY,
                false,
                reason::ZFS_ERROR,
                "boom",
                Some(1),
                at(40)
            )
        ));
        assert_eq!(cs[0].last_transition_time, Time(at(40)));
        assert_eq!(cs[0].status, "False");
    }

    #[test]
    fn conditions_are_keyed_by_type() {
        let mut cs = vec![];
        set_condition(
            &mut cs,
            condition(kind::READY, true, reason::RECONCILED, "", None, at(1)),
        );
        set_condition(
            &mut cs,
            condition(kind::DEGRADED, false, reason::AS_EXPECTED, "", None, at(1)),
        );
        set_condition(
            &mut cs,
            condition(kind::READY, false, reason::ZFS_ERROR, "", None, at(2)),
        );
        assert_eq!(cs.len(), 2);
        assert_eq!(find(&cs, kind::READY).unwrap().status, "False");
        assert_eq!(find(&cs, kind::DEGRADED).unwrap().status, "False");
    }
}
