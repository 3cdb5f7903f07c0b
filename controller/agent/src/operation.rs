//! What travels between controller and agent at this layer: a command envelope carrying the
//! leader epoch around one typed operation, and the typed refusal the agent answers with.
//! The operations themselves (snapshot, destroy, inventory, …) live in `tidepool-wire`;
//! [`Ping`] is here only so the transport can be exercised end to end on its own.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::fence::LeaderEpoch;

/// One typed operation of the agent's API, served at `POST {PATH}`.
pub trait Operation: Serialize + DeserializeOwned + Send + 'static {
    /// The route, e.g. `/v1/ping`.
    const PATH: &'static str;
    /// What the agent answers on success.
    type Output: Serialize + DeserializeOwned + Send + 'static;
}

/// The body of every request: the sender's leader epoch and the operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Command<O> {
    pub epoch: LeaderEpoch,
    pub operation: O,
}

/// Asks the agent which node it serves: proves reachability, TLS pinning, authentication
/// and fencing without touching ZFS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ping {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pong {
    pub node_name: String,
}

impl Operation for Ping {
    const PATH: &'static str = "/v1/ping";
    type Output = Pong;
}

/// Why the agent refused a command, as it travels in the response body. `reason` is one
/// of a fixed set (see [`RefusalReason`]); `message` is for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    pub reason: RefusalReason,
    pub message: String,
}

/// The fixed set of refusal reasons. Unknown values from a newer agent decode as
/// [`RefusalReason::Other`] instead of failing the whole response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalReason {
    /// No usable bearer token (401); on the stream route, no usable ticket (missing,
    /// malformed, unknown, used or expired).
    Unauthenticated,
    /// Authenticated, but not the controller (403); on the stream route, a ticket bound to
    /// another policy, step or source node (it is burnt).
    Forbidden,
    /// The agent could not check the token with the API server (503).
    AuthUnavailable,
    /// The sender's leader epoch is older than one already seen (409).
    StaleEpoch,
    /// A dataset outside the agent's roots (403).
    OutsideRoots,
    /// The request body is not a command of this operation (400).
    BadRequest,

    #[serde(other)]
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_has_a_stable_json_form() {
        let command = Command {
            epoch: LeaderEpoch(3),
            operation: Ping {},
        };
        let json = serde_json::to_string(&command).unwrap_or_default();
        assert_eq!(json, r#"{"epoch":3,"operation":{}}"#);
        assert_eq!(
            serde_json::from_str::<Command<Ping>>(&json).ok(),
            Some(command)
        );
    }

    #[test]
    fn a_command_without_an_epoch_does_not_decode() {
        assert!(serde_json::from_str::<Command<Ping>>(r#"{"operation":{}}"#).is_err());
        assert!(serde_json::from_str::<Command<Ping>>(r#"{"epoch":-1,"operation":{}}"#).is_err());
    }

    #[test]
    fn an_unknown_refusal_reason_still_decodes() {
        let refusal: Refusal = serde_json::from_str(r#"{"reason":"SomethingNew","message":"m"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(refusal.reason, RefusalReason::Other);
    }
}
