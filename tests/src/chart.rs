//! The Helm chart (`charts/tidepool/`) as the tests install it: rendered by the real
//! `helm template` for the running API server's version, applied by the admin with
//! server-side apply, and waited on until its RBAC and admission policies are in force, so
//! the agents and controllers under test run with exactly the chart's permissions.
//!
//! The harness plays the kubelet and runs agents and controllers itself, so it installs the
//! chart with [`IDENTITIES_ONLY`]: ServiceAccounts, RBAC and admission policies, without
//! the workloads and without the CRDs (the tests install those from `crds/`,
//! [`ControlPlane::shared`] does it, once for every release). `tests/tests/chart_install.rs`
//! renders and applies the whole chart.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Node, Pod},
};
use kube::{
    Api, Client,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
    },
    discovery::{Scope, pinned_kind},
};
use serde_json::{Value, json};

use crate::{
    control_plane::{ControlPlane, FIELD_MANAGER, repo_root},
    kubelet::Kubelet,
};

/// `charts/tidepool/`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts").join("tidepool")
}

/// The part of Tidepool an object of the chart belongs to (its
/// `app.kubernetes.io/component` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Controller,
    Agent,
}

impl Component {
    pub fn label(self) -> &'static str {
        match self {
            Self::Controller => "controller",
            Self::Agent => "agent",
        }
    }
}

/// The values with which the harness installs the chart: the identities (ServiceAccounts,
/// RBAC, admission policies) without the Deployment, DaemonSet and CRDs.
pub const IDENTITIES_ONLY: &[&str] = &[
    "--set",
    "crds.install=false",
    "--set",
    "controller.enabled=false",
    "--set",
    "agent.enabled=false",
];

/// How long RBAC and admission policies may take to reach the API server's caches.
const ENFORCEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The API resource of a Tidepool kind, without discovery (the CRDs are the tests' own).
pub fn tidepool_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tidepool.dev", "v1alpha1", kind),
        plural,
    )
}

/// One release of the chart, applied to a control plane.
#[derive(Debug)]
pub struct ChartRelease {
    pub release: String,
    pub namespace: String,
    /// The rendered manifests, one JSON value per object.
    pub objects: Vec<Value>,
}

impl ChartRelease {
    /// `helm template <release> charts/tidepool --namespace <namespace>` for the API
    /// server's Kubernetes version with [`IDENTITIES_ONLY`], parsed.
    pub async fn render(cp: &ControlPlane, release: &str, namespace: &str) -> Result<Vec<Value>> {
        Self::render_with(cp, release, namespace, IDENTITIES_ONLY).await
    }

    /// The same with other `helm template` arguments (`--set`, `-f`) instead.
    pub async fn render_with(
        cp: &ControlPlane,
        release: &str,
        namespace: &str,
        values: &[&str],
    ) -> Result<Vec<Value>> {
        let version = cp
            .admin_client()
            .apiserver_version()
            .await
            .context("asking the API server for its version")?;
        let output = cp
            .helm()
            .args(["template", release])
            .arg(chart_dir())
            .args(["--namespace", namespace, "--kube-version"])
            .arg(&version.git_version)
            .args(values)
            .output()
            .await
            .context("running helm template")?;
        if !output.status.success() {
            bail!(
                "helm template failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let text = String::from_utf8(output.stdout).context("helm template printed non-UTF-8")?;
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).context("parsing helm template's output")?;
        Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
    }

    /// Renders the chart, applies every object as the admin (server-side apply), and waits
    /// until the chart's RBAC and admission policies are enforced (see
    /// [`Self::wait_until_enforced`]).
    pub async fn install(cp: &ControlPlane, release: &str, namespace: &str) -> Result<Self> {
        let objects = Self::render(cp, release, namespace).await?;
        let admin = cp.admin_client();
        for object in &objects {
            apply(&admin, namespace, object).await?;
        }
        let installed = Self {
            release: release.to_owned(),
            namespace: namespace.to_owned(),
            objects,
        };
        installed.wait_until_enforced(cp).await?;
        Ok(installed)
    }

    /// The rendered objects of one kind.
    pub fn objects_of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> {
        self.objects
            .iter()
            .filter(move |o| o["kind"].as_str() == Some(kind))
    }

    /// The name of the chart's ServiceAccount for `component`.
    pub fn service_account(&self, component: Component) -> Result<&str> {
        self.objects_of_kind("ServiceAccount")
            .find(|o| o["metadata"]["labels"]["app.kubernetes.io/component"] == component.label())
            .and_then(|o| o["metadata"]["name"].as_str())
            .ok_or_else(|| anyhow!("the chart renders no {} ServiceAccount", component.label()))
    }

    /// The Lease the controller may renew: the one name its leader-election Role allows.
    pub fn controller_lease_name(&self) -> Result<&str> {
        self.objects_of_kind("Role")
            .flat_map(|role| role["rules"].as_array().into_iter().flatten())
            .filter(|rule| {
                rule["resources"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r == "leases"))
            })
            .find_map(|rule| rule["resourceNames"][0].as_str())
            .ok_or_else(|| anyhow!("the chart's Roles name no Lease"))
    }

    /// RBAC and ValidatingAdmissionPolicies reach the API server's caches a moment after
    /// they are stored; a test that asserted a refusal before then would pass or fail by
    /// chance. This probes until each is in force, with dry-run requests (admission runs,
    /// nothing is stored) made with the chart's own ServiceAccounts: the agent may create
    /// its node's ZfsNode and is refused another's by the policy; the controller may write
    /// a schedule's status and is refused its spec by the policy, and may read its Lease.
    pub async fn wait_until_enforced(&self, cp: &ControlPlane) -> Result<()> {
        let probe = Probe::start(cp, self).await?;
        let deadline = Instant::now() + ENFORCEMENT_TIMEOUT;
        let result = loop {
            match probe.enforced(self).await {
                Ok(()) => break Ok(()),
                Err(e) if Instant::now() > deadline => {
                    break Err(e.context(format!(
                        "the chart's RBAC and admission policies were not in force within \
                         {ENFORCEMENT_TIMEOUT:?}"
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        probe.remove(cp, &self.namespace).await?;
        result
    }
}

/// Server-side applies one rendered object as the admin.
async fn apply(admin: &Client, default_namespace: &str, object: &Value) -> Result<()> {
    let (api_version, kind, name) = match (
        object["apiVersion"].as_str(),
        object["kind"].as_str(),
        object["metadata"]["name"].as_str(),
    ) {
        (Some(a), Some(k), Some(n)) => (a, k, n),
        _ => bail!("a rendered object lacks apiVersion, kind or name: {object}"),
    };
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let (resource, capabilities) = pinned_kind(admin, &GroupVersionKind::gvk(group, version, kind))
        .await
        .with_context(|| format!("discovering {api_version} {kind}"))?;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Cluster => Api::all_with(admin.clone(), &resource),
        Scope::Namespaced => Api::namespaced_with(
            admin.clone(),
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or(default_namespace),
            &resource,
        ),
    };
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .with_context(|| format!("applying {kind} {name}"))?;
    Ok(())
}

/// The objects and identities [`ChartRelease::wait_until_enforced`] probes with.
struct Probe {
    node: String,
    agent_pod: String,
    agent: Client,
    controller: Client,
    schedule: String,
    lease: String,
}

impl Probe {
    async fn start(cp: &ControlPlane, chart: &ChartRelease) -> Result<Self> {
        let kubelet = Kubelet::new(cp);
        let node = format!("{}-probe", chart.release);
        kubelet.register_node(&node).await?;
        let agent_pod = format!("{}-probe-agent", chart.release);
        let agent = kubelet
            .schedule_pod(
                &chart.namespace,
                &agent_pod,
                chart.service_account(Component::Agent)?,
                &node,
            )
            .await?
            .api_identity(cp)
            .await?
            .client()
            .await?;
        // The controller's permissions do not depend on its Pod, so an unbound token will do.
        let controller = cp
            .client_for_service_account(
                &chart.namespace,
                chart.service_account(Component::Controller)?,
            )
            .await?;
        let schedule = format!("{}-probe", chart.release);
        schedules(cp.admin_client(), &chart.namespace)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "tidepool.dev/v1alpha1",
                    "kind": "SnapshotSchedule",
                    "metadata": { "name": schedule },
                    "spec": {
                        "nodeName": node,
                        "datasets": [{ "name": "tank/probe" }],
                        "schedule": { "interval": "1h" },
                    },
                }))?,
            )
            .await
            .context("creating the probe SnapshotSchedule")?;
        Ok(Self {
            node,
            agent_pod,
            agent,
            controller,
            schedule,
            lease: chart.controller_lease_name()?.to_owned(),
        })
    }

    async fn enforced(&self, chart: &ChartRelease) -> Result<()> {
        let dry_create = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let zfs_nodes: Api<DynamicObject> = Api::all_with(
            self.agent.clone(),
            &tidepool_resource("ZfsNode", "zfsnodes"),
        );
        let own = zfs_node(&self.node, &self.node)?;
        zfs_nodes
            .create(&dry_create, &own)
            .await
            .context("the agent may not yet create its own ZfsNode")?;
        let elsewhere = format!("{}-elsewhere", self.node);
        refused_by_policy(
            zfs_nodes
                .create(&dry_create, &zfs_node(&elsewhere, &elsewhere)?)
                .await,
            "the agent creating another node's ZfsNode",
        )?;

        let ours = schedules(self.controller.clone(), &chart.namespace);
        ours.patch_status(
            &self.schedule,
            &PatchParams::apply("tidepool-probe").dry_run(),
            &Patch::Apply(json!({
                "apiVersion": "tidepool.dev/v1alpha1",
                "kind": "SnapshotSchedule",
                "status": { "observedGeneration": 1 },
            })),
        )
        .await
        .context("the controller may not yet write a schedule's status")?;
        refused_by_policy(
            ours.patch(
                &self.schedule,
                &PatchParams::default().dry_run(),
                &Patch::Merge(json!({ "spec": { "suspend": true } })),
            )
            .await,
            "the controller writing a schedule's spec",
        )?;

        let leases: Api<Lease> = Api::namespaced(self.controller.clone(), &chart.namespace);
        match leases.get(&self.lease).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e).context("the controller may not yet read its Lease"),
        }
    }

    /// Deletes the probe's objects; the agent's Pod-bound token stops working with its Pod.
    async fn remove(self, cp: &ControlPlane, namespace: &str) -> Result<()> {
        let admin = cp.admin_client();
        schedules(admin.clone(), namespace)
            .delete(&self.schedule, &DeleteParams::default())
            .await
            .context("deleting the probe SnapshotSchedule")?;
        // No kubelet confirms a graceful deletion, so the Pod goes at once.
        Api::<Pod>::namespaced(admin.clone(), namespace)
            .delete(&self.agent_pod, &DeleteParams::default().grace_period(0))
            .await
            .context("deleting the probe Pod")?;
        Api::<Node>::all(admin)
            .delete(&self.node, &DeleteParams::default())
            .await
            .context("deleting the probe Node")?;
        Ok(())
    }
}

fn schedules(client: Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client,
        namespace,
        &tidepool_resource("SnapshotSchedule", "snapshotschedules"),
    )
}

fn zfs_node(name: &str, node_name: &str) -> Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "tidepool.dev/v1alpha1",
        "kind": "ZfsNode",
        "metadata": { "name": name },
        "spec": { "nodeName": node_name },
    }))?)
}

/// Ok when `result` is a 403 from a ValidatingAdmissionPolicy (not from RBAC).
fn refused_by_policy<T>(result: kube::Result<T>, what: &str) -> Result<()> {
    match result {
        Err(kube::Error::Api(s))
            if s.code == 403 && s.message.contains("ValidatingAdmissionPolicy") =>
        {
            Ok(())
        }
        Err(e) => Err(anyhow!(
            "{what}: expected a refusal by the admission policy, got {e}"
        )),
        Ok(_) => Err(anyhow!(
            "{what}: expected a refusal by the admission policy, it was allowed"
        )),
    }
}
