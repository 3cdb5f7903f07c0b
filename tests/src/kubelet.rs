//! Plays the parts of Kubernetes that need a kubelet, which these machines do not run.
//!
//! A DaemonSet or Deployment would create a Pod per node or replica, the scheduler would
//! bind it to a Node, and the kubelet would project a ServiceAccount token bound to that Pod
//! into it. [`Kubelet`] does the same against the real API server: it registers Node
//! objects, creates Pods already bound to a node (`spec.nodeName`) and running as a given
//! ServiceAccount, and mints Pod-bound tokens with TokenRequest. Such a token carries the
//! Pod's and the node's names as claims (`authentication.kubernetes.io/pod-name`,
//! `authentication.kubernetes.io/node-name`), which is what the chart's admission policy
//! matches, and it stops authenticating once its Pod is deleted.
//!
//! The agents and controllers under test run as plain processes; a [`PodIdentity`] gives
//! them what a Pod would have: the raw token, a token file, and a kubeconfig whose user
//! reads that file (`tokenFile`), so RBAC sees exactly the chart's ServiceAccount.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{Container, Node, Pod, PodSpec, ServiceAccount},
};
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::control_plane::ControlPlane;

/// The shortest lifetime TokenRequest accepts (the API server refuses less than 10 minutes).
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// Who a minted token is for.
#[derive(Clone, Copy, Debug)]
pub enum Audience<'a> {
    /// The API server itself (its `--api-audiences`, which default to the issuer): a token
    /// for a kube client.
    ApiServer,
    /// Another service, such as the agent's API (which checks it with TokenReview).
    Named(&'a str),
}

/// Creates the objects a DaemonSet, a Deployment and the scheduler would have made.
#[derive(Clone, Copy, Debug)]
pub struct Kubelet<'a> {
    cp: &'a ControlPlane,
}

impl<'a> Kubelet<'a> {
    pub fn new(cp: &'a ControlPlane) -> Self {
        Self { cp }
    }

    /// Registers a Node object (no status: nothing here reads it, and no kubelet would
    /// keep it current).
    pub async fn register_node(&self, name: &str) -> Result<Node> {
        let nodes: Api<Node> = Api::all(self.cp.admin_client());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        nodes
            .create(&PostParams::default(), &node)
            .await
            .with_context(|| format!("registering Node {name}"))
    }

    /// Creates Pod `namespace/name`, bound to `node` and running as ServiceAccount
    /// `service_account` (which must exist: tokens are minted for it). It never runs.
    pub async fn schedule_pod(
        &self,
        namespace: &str,
        name: &str,
        service_account: &str,
        node: &str,
    ) -> Result<ScheduledPod> {
        let pods: Api<Pod> = Api::namespaced(self.cp.admin_client(), namespace);
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.to_owned()),
                service_account_name: Some(service_account.to_owned()),
                // The token is minted by the harness, not mounted by a kubelet.
                automount_service_account_token: Some(false),
                containers: vec![Container {
                    name: "tidepool".to_owned(),
                    image: Some("tidepool:harness".to_owned()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let created = pods
            .create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("creating Pod {namespace}/{name} on {node}"))?;
        let uid = created
            .metadata
            .uid
            .ok_or_else(|| anyhow!("the created Pod {namespace}/{name} has no uid"))?;
        Ok(ScheduledPod {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid,
            node: node.to_owned(),
            service_account: service_account.to_owned(),
        })
    }
}

/// A Pod as the API server knows it: bound to a node, running as a ServiceAccount.
#[derive(Clone, Debug)]
pub struct ScheduledPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub service_account: String,
}

impl ScheduledPod {
    /// Mints a token of the Pod's ServiceAccount bound to the Pod, as the kubelet does
    /// for a projected token volume. `lifetime` is at least [`MIN_TOKEN_LIFETIME`].
    pub async fn mint_token(
        &self,
        cp: &ControlPlane,
        audience: Audience<'_>,
        lifetime: Duration,
    ) -> Result<String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(cp.admin_client(), &self.namespace);
        let audiences = match audience {
            // Empty means the API server's own audiences.
            Audience::ApiServer => Vec::new(),
            Audience::Named(name) => vec![name.to_owned()],
        };
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences,
                expiration_seconds: Some(i64::try_from(lifetime.as_secs())?),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".to_owned()),
                    kind: Some("Pod".to_owned()),
                    name: Some(self.name.clone()),
                    uid: Some(self.uid.clone()),
                }),
            },
            ..TokenRequest::default()
        };
        let token = accounts
            .create_token_request(&self.service_account, &PostParams::default(), &request)
            .await
            .with_context(|| {
                format!(
                    "TokenRequest for ServiceAccount {}/{} bound to Pod {}",
                    self.namespace, self.service_account, self.name
                )
            })?
            .status
            .ok_or_else(|| anyhow!("TokenRequest for Pod {} returned no status", self.name))?
            .token;
        Ok(token)
    }

    /// A Pod-bound token for the API server, written where a process can use it.
    pub async fn api_identity(&self, cp: &ControlPlane) -> Result<PodIdentity> {
        let token = self
            .mint_token(cp, Audience::ApiServer, Duration::from_secs(3600))
            .await?;
        PodIdentity::write(cp, &self.namespace, &self.name, token)
    }
}

/// What a Pod's process would have to reach the API server as its ServiceAccount: the raw
/// token, a file holding it, and a kubeconfig whose user reads that file. The files live in
/// a temporary directory removed on drop.
#[derive(Debug)]
pub struct PodIdentity {
    token: String,
    dir: tempfile::TempDir,
}

const TOKEN_FILE: &str = "token";
const KUBECONFIG_FILE: &str = "kubeconfig";

impl PodIdentity {
    /// Writes `token` and a kubeconfig for it (same cluster and CA as the admin's, default
    /// namespace `namespace`).
    pub fn write(cp: &ControlPlane, namespace: &str, pod: &str, token: String) -> Result<Self> {
        let admin = Kubeconfig::read_from(cp.kubeconfig_path())
            .context("reading the control plane's admin kubeconfig")?;
        let cluster = admin
            .clusters
            .first()
            .and_then(|c| c.cluster.clone())
            .ok_or_else(|| anyhow!("the admin kubeconfig names no cluster"))?;
        let dir = tempfile::Builder::new()
            .prefix("tidepool-pod-identity-")
            .tempdir()
            .context("creating a directory for a Pod's token")?;
        let token_file = dir.path().join(TOKEN_FILE);
        fs::write(&token_file, &token).context("writing the token file")?;
        let user = format!("{namespace}/{pod}");
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "tidepool-test",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority": cluster.certificate_authority,
                },
            }],
            "users": [{ "name": user, "user": { "tokenFile": token_file } }],
            "contexts": [{
                "name": user,
                "context": { "cluster": "tidepool-test", "user": user, "namespace": namespace },
            }],
            "current-context": user,
        });
        fs::write(
            dir.path().join(KUBECONFIG_FILE),
            serde_json::to_string_pretty(&kubeconfig)?,
        )
        .context("writing the Pod's kubeconfig")?;
        Ok(Self { token, dir })
    }

    /// The raw token (for an `Authorization: Bearer` header, or a TokenReview).
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join(TOKEN_FILE)
    }

    /// A kubeconfig for `--kubeconfig`/`KUBECONFIG` of a process run as this Pod.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join(KUBECONFIG_FILE)
    }

    /// A client built from [`Self::kubeconfig_path`], exactly as a process given that
    /// kubeconfig would build it. Make one per tokio runtime.
    pub async fn client(&self) -> Result<Client> {
        client_from_kubeconfig(&self.kubeconfig_path()).await
    }
}

async fn client_from_kubeconfig(path: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", path.display()))?;
    Client::try_from(config).context("building a client from a Pod's kubeconfig")
}
