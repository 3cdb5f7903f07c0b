//! Talking to agents: where a node's agent is (its `ZfsNode`), and the one seam through
//! which the reconciler sends it typed operations.
//!
//! [`Agents`] is a trait so the reconciler's flow can be exercised without a network in
//! unit tests; the product and the integration tests use [`PinnedAgents`], the transport
//! crate's client over TLS pinned to the published fingerprint.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tidepool_agent::{AgentClient, CallError, CertificateFingerprint, LeaderEpoch};
use tidepool_api::ZfsNode;
use tidepool_wire::objstore::{
    DrillReport, ObjectStoreAnswer, ObjectStoreRequest, RestoreDrill, SendToObjectStore,
};
use tidepool_wire::ssh::SendToSsh;
use tidepool_wire::transfer::{
    ListTransfers, PrepareReceive, PrepareReceiveAnswer, SendToPeer, SendToPeerAnswer,
    TransfersInFlight,
};
use tidepool_wire::{OperationError, Request, Response};

use crate::reasons;

/// Where one node's agent listens and which certificate it must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEndpoint {
    pub node: String,
    pub endpoint: String,
    pub pin: CertificateFingerprint,
}

impl AgentEndpoint {
    /// From the node's `ZfsNode` status (the agent is the trust root for both values).
    pub fn of(node: &str, zfs_node: Option<&ZfsNode>) -> Result<Self, AgentError> {
        let not_published = |what: &'static str| AgentError::NotPublished {
            node: node.to_owned(),
            what,
        };
        let zfs_node = zfs_node.ok_or_else(|| not_published("a ZfsNode"))?;
        let status = zfs_node
            .status
            .as_ref()
            .ok_or_else(|| not_published("a status"))?;
        let endpoint = status
            .endpoint
            .clone()
            .ok_or_else(|| not_published("an endpoint"))?;
        let pin = status
            .tls_certificate_sha256
            .as_deref()
            .ok_or_else(|| not_published("a certificate fingerprint"))?
            .parse()
            .map_err(|_| not_published("a well-formed certificate fingerprint"))?;
        Ok(Self {
            node: node.to_owned(),
            endpoint,
            pin,
        })
    }
}

/// Why an agent did not answer an operation with its result.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("node {node}'s agent has not published {what}")]
    NotPublished { node: String, what: &'static str },
    #[error("cannot set up a client for node {node}'s agent")]
    Setup {
        node: String,
        #[source]
        source: tidepool_agent::ClientSetupError,
    },
    #[error("reading the controller's agent token from {path}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("calling node {node}'s agent: {source}")]
    Call {
        node: String,
        #[source]
        source: CallError,
    },
    #[error("node {node}'s agent failed: {source}")]
    Failed {
        node: String,
        #[source]
        source: OperationError,
    },
    #[error("node {node}'s agent answered {got} to {asked}")]
    Unexpected {
        node: String,
        asked: &'static str,
        got: &'static str,
    },
    /// One call's failure, shared by every reconcile that waited for that call.
    #[error(transparent)]
    Shared(Arc<AgentError>),
}

impl AgentError {
    /// The status reason: bounded, CamelCase.
    pub fn reason(&self) -> &'static str {
        use tidepool_agent::RefusalReason as R;
        match self {
            AgentError::NotPublished { .. } | AgentError::Setup { .. } => {
                reasons::AGENT_UNAVAILABLE
            }
            AgentError::Token { .. } => reasons::AGENT_UNAVAILABLE,
            AgentError::Call { source, .. } => match source {
                CallError::Refused { refusal, .. } => match refusal.reason {
                    R::StaleEpoch => reasons::NOT_LEADER,
                    R::OutsideRoots => reasons::OUTSIDE_AGENT_ROOTS,
                    R::Unauthenticated | R::Forbidden | R::AuthUnavailable => {
                        reasons::AGENT_REFUSED
                    }
                    R::BadRequest | R::Other => reasons::AGENT_REFUSED,
                },
                _ => reasons::AGENT_UNAVAILABLE,
            },
            AgentError::Failed { source, .. } => match source {
                OperationError::InvalidRequest(
                    tidepool_wire::RequestError::OutsideAllowedRoots { .. },
                ) => reasons::OUTSIDE_AGENT_ROOTS,
                OperationError::InvalidRequest(_) => reasons::AGENT_REFUSED,
                // The zfs layer's bounded kind, as the agent sends it.
                OperationError::Zfs { kind, .. } => reasons::of_zfs_kind(kind),
                OperationError::Unknown { .. } => tidepool_api::condition::reason::ZFS_ERROR,
            },
            AgentError::Unexpected { .. } => reasons::AGENT_REFUSED,
            AgentError::Shared(e) => e.reason(),
        }
    }

    /// An answer that is not the one `asked` for (a `Failed` is the agent's own error).
    pub fn unexpected(node: &str, asked: &'static str, got: &Response) -> Self {
        let got = match got {
            Response::Failed(source) => {
                return AgentError::Failed {
                    node: node.to_owned(),
                    source: source.clone(),
                };
            }
            Response::SnapshotsTaken(_) => "SnapshotsTaken",
            Response::SnapshotsDestroyed(_) => "SnapshotsDestroyed",
            Response::Inventory(_) => "Inventory",
            Response::Bookkept(_) => "Bookkept",
        };
        AgentError::Unexpected {
            node: node.to_owned(),
            asked,
            got,
        }
    }

    pub fn node(&self) -> &str {
        match self {
            AgentError::NotPublished { node, .. }
            | AgentError::Setup { node, .. }
            | AgentError::Call { node, .. }
            | AgentError::Failed { node, .. }
            | AgentError::Unexpected { node, .. } => node,
            AgentError::Token { .. } => "",
            AgentError::Shared(e) => e.node(),
        }
    }

    /// The whole chain in one line, for status messages and events.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let s_text = s.to_string();
            if !text.contains(&s_text) {
                text.push_str(": ");
                text.push_str(&s_text);
            }
            source = s.source();
        }
        text
    }
}

/// Sends one operation to one agent as the leader of `epoch`.
pub trait Agents: Send + Sync {
    fn call<'a>(
        &'a self,
        agent: &'a AgentEndpoint,
        epoch: LeaderEpoch,
        request: Request,
    ) -> BoxFuture<'a, Result<Response, AgentError>>;

    /// One half of a brokered transfer: the ticket from the target, or the send from the
    /// source (which answers only when the stream has ended).
    fn transfer<'a>(
        &'a self,
        agent: &'a AgentEndpoint,
        epoch: LeaderEpoch,
        call: TransferCall,
    ) -> BoxFuture<'a, Result<TransferAnswer, AgentError>>;
}

/// The transfer operations ([`tidepool_wire::transfer`]) the controller calls.
#[derive(Debug, Clone)]
pub enum TransferCall {
    Prepare(PrepareReceive),
    Send(Box<SendToPeer>),
    /// `zfs send` into `zfs receive` on a far host over SSH (answered like `Send`).
    SendSsh(Box<SendToSsh>),
    /// `zfs send` uploaded into an object store (answered like `Send`).
    SendObjectStore(Box<SendToObjectStore>),
    /// A listing or a retention on an object store, through the source agent.
    ObjectStore(Box<ObjectStoreRequest>),
    /// A restore drill of an object-store chain on the source node.
    Drill(Box<RestoreDrill>),
    /// The agent's transfers in flight, with their progress.
    List,
}

#[derive(Debug, Clone)]
pub enum TransferAnswer {
    Prepared(PrepareReceiveAnswer),
    Sent(SendToPeerAnswer),
    Listed(TransfersInFlight),
    Store(ObjectStoreAnswer),
    Drilled(DrillReport),
}

/// The real transport: TLS pinned to the `ZfsNode`'s fingerprint, the controller's
/// projected token (read from its file on every call: the kubelet rotates it).
pub struct PinnedAgents {
    token_file: PathBuf,
    timeout: Duration,
    /// How long a send may take as a whole; the agents' stall timeout ends a stuck one
    /// long before.
    send_timeout: Duration,
    /// One client per (endpoint, pin), so calls reuse its kept-alive TLS connections: a
    /// handshake per call costs more than the call on a small node. A new pin (the agent
    /// restarted with a new certificate) is a new key, never a connection to the old one.
    clients: Mutex<HashMap<(String, CertificateFingerprint), AgentClient>>,
}

/// Beyond this many endpoints the clients are dropped and built again as needed (agents
/// that moved or restarted leave entries behind).
const MAX_CLIENTS: usize = 4096;

impl PinnedAgents {
    pub fn new(token_file: PathBuf, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            token_file,
            timeout,
            send_timeout: Duration::from_secs(24 * 3600),
            clients: Mutex::new(HashMap::new()),
        })
    }

    fn client(&self, agent: &AgentEndpoint) -> Result<AgentClient, AgentError> {
        let key = (agent.endpoint.clone(), agent.pin);
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = AgentClient::new(&agent.endpoint, agent.pin)
            .map_err(|source| AgentError::Setup {
                node: agent.node.clone(),
                source,
            })?
            .with_timeout(self.timeout);
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }
}

impl PinnedAgents {
    async fn token(&self) -> Result<String, AgentError> {
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|source| AgentError::Token {
                path: self.token_file.clone(),
                source,
            })?;
        Ok(token.trim().to_owned())
    }
}

impl Agents for PinnedAgents {
    fn transfer<'a>(
        &'a self,
        agent: &'a AgentEndpoint,
        epoch: LeaderEpoch,
        call: TransferCall,
    ) -> BoxFuture<'a, Result<TransferAnswer, AgentError>> {
        Box::pin(async move {
            let token = self.token().await?;
            let client = self.client(agent)?;
            let answer = match call {
                TransferCall::Prepare(p) => client
                    .call(&token, epoch, p)
                    .await
                    .map(TransferAnswer::Prepared),
                TransferCall::Send(s) => client
                    .with_timeout(self.send_timeout)
                    .call(&token, epoch, *s)
                    .await
                    .map(TransferAnswer::Sent),
                TransferCall::SendSsh(s) => client
                    .with_timeout(self.send_timeout)
                    .call(&token, epoch, *s)
                    .await
                    .map(TransferAnswer::Sent),
                TransferCall::SendObjectStore(s) => client
                    .with_timeout(self.send_timeout)
                    .call(&token, epoch, *s)
                    .await
                    .map(TransferAnswer::Sent),
                TransferCall::ObjectStore(r) => client
                    .call(&token, epoch, *r)
                    .await
                    .map(TransferAnswer::Store),
                TransferCall::Drill(d) => client
                    .with_timeout(self.send_timeout)
                    .call(&token, epoch, *d)
                    .await
                    .map(TransferAnswer::Drilled),
                TransferCall::List => client
                    .call(&token, epoch, ListTransfers {})
                    .await
                    .map(TransferAnswer::Listed),
            };
            answer.map_err(|source| AgentError::Call {
                node: agent.node.clone(),
                source,
            })
        })
    }

    fn call<'a>(
        &'a self,
        agent: &'a AgentEndpoint,
        epoch: LeaderEpoch,
        request: Request,
    ) -> BoxFuture<'a, Result<Response, AgentError>> {
        Box::pin(async move {
            let token = self.token().await?;
            let client = self.client(agent)?;
            let token = token.as_str();
            let answer = match request {
                Request::TakeSnapshots(t) => client.call(token, epoch, t).await,
                Request::DestroySnapshots(d) => client.call(token, epoch, d).await,
                Request::Inventory(i) => client.call(token, epoch, i).await,
                Request::Bookkeeping(b) => client.call(token, epoch, b).await,
                Request::Remote(r) => client.call(token, epoch, r).await,
            };
            answer.map_err(|source| AgentError::Call {
                node: agent.node.clone(),
                source,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn out_of_space_is_pool_full_and_other_zfs_failures_stay_zfs_errors() {
        let failed = |kind: &str| AgentError::Failed {
            node: "n1".into(),
            source: OperationError::Zfs {
                kind: kind.into(),
                message: "cannot create snapshots : out of space".into(),
            },
        };
        assert_eq!(failed("OutOfSpace").reason(), reasons::POOL_FULL);
        assert_eq!(
            failed("Busy").reason(),
            tidepool_api::condition::reason::ZFS_ERROR
        );
    }

    #[test]
    fn an_unpublished_endpoint_is_agent_unavailable() {
        let e = AgentEndpoint::of("n1", None).unwrap_err();
        assert_eq!(e.reason(), reasons::AGENT_UNAVAILABLE);
        assert_eq!(e.node(), "n1");
    }
}
