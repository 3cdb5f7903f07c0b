//! Where a policy's replicas live, and how the controller reaches them: another node's
//! agent, or a host running OpenZFS outside the cluster, reached over SSH through the
//! source node's agent (which runs the same typed operations there). Everything that
//! touches the target goes through [`TargetEnd`], so the sync, retention, deletion and
//! `explain` do not care which it is.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tidepool_agent::LeaderEpoch;
use tidepool_api::replication_policy::{NodeTarget, ReplicationPolicySpec, SshTarget};
use tidepool_api::{DatasetName, PoolName};
use tidepool_plan::replication::TargetAbilities;
use tidepool_wire::ssh::{RemoteOperation, RemoteRequest, SecretText, SshAccess};
use tidepool_wire::{InventoryAnswer, InventoryRequest, PoolInventory, Request, Response};

use crate::agents::{AgentEndpoint, AgentError};
use crate::node_run::inventory;
use crate::reconcile::{Context, ReconcileError};
use crate::status::Blocker;

/// The keys of an `ssh` target's Secret (`ssh-privatekey` is the key of Kubernetes'
/// `kubernetes.io/ssh-auth` Secrets).
pub const SECRET_KEY: &str = "ssh-privatekey";
pub const SECRET_KNOWN_HOSTS: &str = "known_hosts";

/// A policy's target as its spec names it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TargetRef<'a> {
    Node(&'a NodeTarget),
    Ssh(&'a SshTarget),
}

impl<'a> TargetRef<'a> {
    /// `None` for a kind this version does not serve (`objectStore`).
    pub fn of(spec: &'a ReplicationPolicySpec) -> Option<Self> {
        match (&spec.target.node, &spec.target.ssh) {
            (Some(n), _) => Some(Self::Node(n)),
            (None, Some(s)) => Some(Self::Ssh(s)),
            (None, None) => None,
        }
    }

    /// The dataset the replicas are received into (and below it).
    pub fn dataset(&self) -> &'a DatasetName {
        match self {
            Self::Node(n) => &n.dataset,
            Self::Ssh(s) => &s.dataset,
        }
    }

    /// Resolves the target: the node's published endpoint, or the SSH login from the
    /// policy's Secret, used through `source` (the source node's agent).
    pub async fn resolve(
        &self,
        ctx: &Context,
        ns: &str,
        source: &AgentEndpoint,
    ) -> Result<Result<TargetEnd, Blocker>, ReconcileError> {
        match self {
            Self::Node(n) => Ok(super::endpoint(ctx, &n.node_name).map(TargetEnd::Agent)),
            Self::Ssh(s) => Ok(ssh_access(ctx, ns, s).await?.map(|access| TargetEnd::Ssh {
                via: source.clone(),
                label: format!("ssh:{}@{}:{}", s.user, s.host, s.port),
                access: Box::new(access),
            })),
        }
    }
}

/// The login of an `ssh` target, from its Secret in the policy's namespace.
async fn ssh_access(
    ctx: &Context,
    ns: &str,
    target: &SshTarget,
) -> Result<Result<SshAccess, Blocker>, ReconcileError> {
    let name = &target.secret_ref.name;
    let blocked = |message: String| {
        Ok(Err(Blocker {
            reason: crate::reasons::SECRET_INVALID,
            message,
        }))
    };
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|source| ReconcileError::Kube {
            what: "reading the ssh target's Secret",
            source,
        })?;
    let Some(secret) = secret else {
        return blocked(format!("Secret {ns}/{name} does not exist"));
    };
    let text = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let (Some(key), Some(known_hosts)) = (text(SECRET_KEY), text(SECRET_KNOWN_HOSTS)) else {
        return blocked(format!(
            "Secret {ns}/{name} needs text keys `{SECRET_KEY}` and `{SECRET_KNOWN_HOSTS}` (host keys are always checked)"
        ));
    };
    let port = match u16::try_from(target.port) {
        Ok(p) if p > 0 => p,
        _ => return blocked(format!("port {} is not a TCP port", target.port)),
    };
    let access = SshAccess {
        host: target.host.clone(),
        port,
        user: target.user.clone(),
        private_key: SecretText::new(key),
        known_hosts,
        root: target.dataset.clone(),
    };
    match access.check() {
        Ok(()) => Ok(Ok(access)),
        Err(message) => blocked(format!("Secret {ns}/{name} or the ssh target: {message}")),
    }
}

/// How the controller reaches a policy's target.
#[derive(Debug, Clone)]
pub enum TargetEnd {
    /// The target node's agent.
    Agent(AgentEndpoint),
    /// A far host over SSH, through the source node's agent.
    Ssh {
        via: AgentEndpoint,
        access: Box<SshAccess>,
        /// `ssh:<user>@<host>:<port>`, where status and events say "node".
        label: String,
    },
}

impl TargetEnd {
    /// The name status, events and errors give the target.
    pub fn node(&self) -> &str {
        match self {
            Self::Agent(a) => &a.node,
            Self::Ssh { label, .. } => label,
        }
    }

    /// What the target keeps for the planner. A far host's login must be allowed
    /// `hold` and `userprop` (docs/ssh-targets.md); without them its bookkeeping fails
    /// loudly rather than going unprotected.
    pub fn abilities(&self) -> TargetAbilities {
        TargetAbilities::AGENT_POOL
    }

    /// One typed operation on the target.
    pub async fn call(
        &self,
        ctx: &Context,
        epoch: LeaderEpoch,
        request: Request,
    ) -> Result<Response, AgentError> {
        match self {
            Self::Agent(agent) => ctx.agents.call(agent, epoch, request).await,
            Self::Ssh { via, access, .. } => {
                let operation = match request {
                    Request::Inventory(i) => RemoteOperation::Inventory(i),
                    Request::Bookkeeping(b) => RemoteOperation::Bookkeeping(b),
                    Request::DestroySnapshots(d) => RemoteOperation::DestroySnapshots(d),
                    Request::TakeSnapshots(_) | Request::Remote(_) => {
                        return Err(AgentError::Unexpected {
                            node: self.node().to_owned(),
                            asked: "a remote operation",
                            got: "a request a far host does not serve",
                        });
                    }
                };
                let remote = Request::Remote(RemoteRequest {
                    via: (**access).clone(),
                    operation,
                });
                ctx.agents.call(via, epoch, remote).await
            }
        }
    }

    /// The inventory of the pool `dataset` lives in: an agent's through the shared cache;
    /// a far host's subtree of its root, read afresh (another machine may change it).
    pub async fn read_pool(
        &self,
        ctx: &Context,
        epoch: LeaderEpoch,
        dataset: &DatasetName,
    ) -> Result<Arc<PoolInventory>, (&'static str, String)> {
        match self {
            Self::Agent(agent) => inventory(ctx, agent, epoch, dataset.pool())
                .await
                .map_err(|p| (p.reason(), p.message())),
            Self::Ssh { .. } => {
                let pool: PoolName = dataset.pool();
                let request = Request::Inventory(InventoryRequest { pool, since: None });
                match self.call(ctx, epoch, request).await {
                    Ok(Response::Inventory(InventoryAnswer::Full { inventory, .. })) => {
                        Ok(Arc::new(inventory))
                    }
                    Ok(other) => {
                        let e = AgentError::unexpected(self.node(), "Inventory", &other);
                        Err((e.reason(), e.chain()))
                    }
                    Err(e) => Err((e.reason(), e.chain())),
                }
            }
        }
    }
}
