//! Where a policy's replicas live, and how the controller reaches them: another node's
//! agent, a host running OpenZFS outside the cluster, reached over SSH through the
//! source node's agent (which runs the same typed operations there), or an object store,
//! written and listed by the source node's agent (`object_store.rs`). Everything that
//! touches the target goes through [`TargetEnd`], so the sync, retention, deletion and
//! `explain` do not care which it is.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tidepool_agent::LeaderEpoch;
use tidepool_api::replication_policy::{
    NodeTarget, ObjectStoreTarget, ReplicationPolicySpec, SshTarget,
};
use tidepool_api::{DatasetName, PoolName};
use tidepool_plan::replication::TargetAbilities;
use tidepool_wire::objstore::StoreAccess;
use tidepool_wire::ssh::{RemoteOperation, RemoteRequest, SecretText, SshAccess};
use tidepool_wire::{InventoryAnswer, InventoryRequest, PoolInventory, Request, Response};

use crate::agents::{AgentEndpoint, AgentError};
use crate::inventories::Freshness;
use crate::node_run::inventory;
use crate::reconcile::{Context, ReconcileError};
use crate::status::Blocker;

/// The keys of an `ssh` target's Secret (`ssh-privatekey` is the key of Kubernetes'
/// `kubernetes.io/ssh-auth` Secrets).
pub const SECRET_KEY: &str = "ssh-privatekey";
pub const SECRET_KNOWN_HOSTS: &str = "known_hosts";
/// The keys of an `objectStore` target's Secret.
pub const SECRET_ACCESS_KEY_ID: &str = "accessKeyId";
pub const SECRET_SECRET_ACCESS_KEY: &str = "secretAccessKey";
/// The region when the spec names none (what S3-compatible servers accept).
pub const DEFAULT_REGION: &str = "us-east-1";

/// A policy's target as its spec names it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TargetRef<'a> {
    Node(&'a NodeTarget),
    Ssh(&'a SshTarget),
    /// Streams are keyed by the source dataset's own name.
    ObjectStore {
        target: &'a ObjectStoreTarget,
        source: &'a DatasetName,
    },
}

impl<'a> TargetRef<'a> {
    /// `None` when the spec names no target (admission refuses that).
    pub fn of(spec: &'a ReplicationPolicySpec) -> Option<Self> {
        let t = &spec.target;
        match (&t.node, &t.ssh, &t.object_store) {
            (Some(n), _, _) => Some(Self::Node(n)),
            (None, Some(s), _) => Some(Self::Ssh(s)),
            (None, None, Some(o)) => Some(Self::ObjectStore {
                target: o,
                source: &spec.source.dataset,
            }),
            (None, None, None) => None,
        }
    }

    /// The dataset the replicas are received into (and below it); for an object store,
    /// the source dataset, whose name keys its streams.
    pub fn dataset(&self) -> &'a DatasetName {
        match self {
            Self::Node(n) => &n.dataset,
            Self::Ssh(s) => &s.dataset,
            Self::ObjectStore { source, .. } => source,
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
            Self::ObjectStore { target, .. } => {
                Ok(store_access(ctx, ns, target)
                    .await?
                    .map(|access| TargetEnd::ObjectStore {
                        via: source.clone(),
                        label: format!("s3:{}/{}", target.bucket, target.prefix),
                        access: Box::new(access),
                    }))
            }
        }
    }
}

/// The bucket's keys, from the `objectStore` target's Secret in the policy's namespace.
async fn store_access(
    ctx: &Context,
    ns: &str,
    target: &ObjectStoreTarget,
) -> Result<Result<StoreAccess, Blocker>, ReconcileError> {
    let name = &target.secret_ref.name;
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|source| ReconcileError::Kube {
            what: "reading the object store's Secret",
            source,
        })?;
    let text = |key: &str| {
        secret
            .as_ref()?
            .data
            .as_ref()?
            .get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|v| !v.is_empty())
    };
    let (Some(id), Some(key)) = (text(SECRET_ACCESS_KEY_ID), text(SECRET_SECRET_ACCESS_KEY)) else {
        return Ok(Err(Blocker {
            reason: crate::reasons::SECRET_INVALID,
            message: format!(
                "Secret {ns}/{name} must exist with text keys `{SECRET_ACCESS_KEY_ID}` and `{SECRET_SECRET_ACCESS_KEY}`"
            ),
        }));
    };
    Ok(Ok(StoreAccess {
        endpoint: target.endpoint.clone(),
        bucket: target.bucket.clone(),
        prefix: target.prefix.clone(),
        region: target
            .region
            .clone()
            .unwrap_or_else(|| DEFAULT_REGION.to_owned()),
        access_key_id: id,
        secret_access_key: SecretText::new(key),
    }))
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
    /// An S3-compatible bucket, written and listed by the source node's agent.
    ObjectStore {
        via: AgentEndpoint,
        access: Box<StoreAccess>,
        /// `s3:<bucket>/<prefix>`.
        label: String,
    },
}

impl TargetEnd {
    /// The name status, events and errors give the target.
    pub fn node(&self) -> &str {
        match self {
            Self::Agent(a) => &a.node,
            Self::Ssh { label, .. } | Self::ObjectStore { label, .. } => label,
        }
    }

    /// What the target keeps for the planner. A far host's login must be allowed
    /// `hold` and `userprop` (docs/ssh-targets.md); without them its bookkeeping fails
    /// loudly rather than going unprotected.
    /// An object store keeps neither holds nor claims: its base is protected on the
    /// source only.
    pub fn abilities(&self) -> TargetAbilities {
        match self {
            Self::Agent(_) | Self::Ssh { .. } => TargetAbilities::AGENT_POOL,
            Self::ObjectStore { .. } => TargetAbilities {
                holds: false,
                claims: false,
            },
        }
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
            // Its operations are `TransferCall::ObjectStore` (object_store.rs).
            Self::ObjectStore { .. } => Err(AgentError::Unexpected {
                node: self.node().to_owned(),
                asked: "a pool operation",
                got: "an object store, which runs no zfs",
            }),
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
            Self::Agent(agent) => {
                inventory(ctx, agent, epoch, dataset.pool(), Freshness::AfterAsking)
                    .await
                    .map_err(|p| (p.reason(), p.message()))
            }
            Self::ObjectStore { .. } => Err((
                crate::reasons::TARGET_KIND_UNSUPPORTED,
                "an object store has no pool inventory; its listing is read instead".to_owned(),
            )),
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
