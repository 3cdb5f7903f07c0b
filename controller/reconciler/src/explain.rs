//! `GET /explain/v1/namespaces/{namespace}/{resource}/{name}` on the controller's HTTP
//! port: the dry run of one object. What a reconcile now would take and destroy on each
//! node, or send, hold, claim and destroy between a policy's two ends, and why, from the same decision functions a reconcile uses and a fresh inventory
//! read (the only agent call it makes; only the controller may call agents, and only the
//! leader is heard by them). Read-only, and refused unless the caller's token may `get`
//! the object ([`auth`]).

pub mod auth;
mod policy;
mod schedule;
pub mod view;

use std::sync::{Arc, PoisonError, RwLock};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get};
use http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tidepool_api::{ReplicationPolicy, SnapshotSchedule};

use crate::leader::LeaseConfig;
use crate::reconcile::Context;
pub use view::{Explanation, Problem};

/// The route, with `{namespace}`, `{resource}` (plural) and `{name}`.
pub const ROUTE: &str = "/explain/v1/namespaces/{namespace}/{resource}/{name}";

/// The path of `ROUTE` for one object.
pub fn path(namespace: &str, resource: &str, name: &str) -> String {
    format!("/explain/v1/namespaces/{namespace}/{resource}/{name}")
}

/// What the route needs: the controller's client (for the reviews) and, while this
/// replica leads, the reconciler's context.
pub struct Explainer {
    client: kube::Client,
    lease: LeaseConfig,
    leading: RwLock<Option<Arc<Context>>>,
}

/// Clears the context when leadership (the `lead` future) ends, however it ends.
pub struct Leading<'a>(&'a Explainer);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        *self.0.write() = None;
    }
}

impl Explainer {
    pub fn new(client: kube::Client, lease: LeaseConfig) -> Arc<Self> {
        Arc::new(Self {
            client,
            lease,
            leading: RwLock::new(None),
        })
    }

    /// Serves explanations from `ctx` until the guard is dropped.
    pub fn lead(&self, ctx: Arc<Context>) -> Leading<'_> {
        *self.write() = Some(ctx);
        Leading(self)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<Context>>> {
        self.leading.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn current(&self) -> Option<Arc<Context>> {
        self.leading
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Who holds the Lease, for a standby's answer.
    async fn leader_identity(&self) -> Option<String> {
        Api::<Lease>::namespaced(self.client.clone(), &self.lease.namespace)
            .get_opt(&self.lease.name)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    }
}

pub fn router(explainer: Arc<Explainer>) -> Router {
    Router::new()
        .route(ROUTE, get(explain))
        .with_state(explainer)
}

fn answer(status: StatusCode, reason: &str, message: String) -> Response {
    (
        status,
        Json(Problem {
            reason: reason.to_owned(),
            message,
        }),
    )
        .into_response()
}

async fn explain(
    State(s): State<Arc<Explainer>>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let target = auth::Target {
        resource: &resource,
        namespace: &namespace,
        name: &name,
    };
    // Authorised before anything else, so a refused caller learns nothing of the object.
    let user = match auth::authorize(&s.client, headers.get(AUTHORIZATION), &target).await {
        Ok(u) => u,
        Err(r) => return answer(r.status(), r.reason(), r.to_string()),
    };
    tracing::info!(%user, %namespace, %resource, %name, "explain");
    let Some(ctx) = s.current() else {
        let holder = s
            .leader_identity()
            .await
            .unwrap_or_else(|| "unknown".into());
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "NotLeader",
            format!(
                "this replica is a standby; only the leader ({holder}) reads inventories: port-forward to its Pod"
            ),
        );
    };
    let Some(epoch) = *ctx.epoch.borrow() else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "NotLeader",
            "this replica is no longer the leader".into(),
        );
    };
    let now = Timestamp::now();
    let answered = match resource.as_str() {
        "snapshotschedules" => match fetch::<SnapshotSchedule>(&ctx, &namespace, &name).await {
            Ok(obj) => schedule::explain(&ctx, epoch, &obj, now).await,
            Err(r) => return r,
        },
        "replicationpolicies" => match fetch::<ReplicationPolicy>(&ctx, &namespace, &name).await {
            Ok(obj) => policy::explain(&ctx, epoch, &obj, now).await,
            Err(r) => return r,
        },
        other => {
            return answer(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("no resource {other:?} here: snapshotschedules or replicationpolicies"),
            );
        }
    };
    match answered {
        Ok(e) => Json(e).into_response(),
        Err(e) => answer(StatusCode::BAD_GATEWAY, e.reason(), e.to_string()),
    }
}

/// The object from the API server, or the answer that it is not there.
async fn fetch<K>(ctx: &Context, namespace: &str, name: &str) -> Result<K, Response>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match Api::<K>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
    {
        Ok(Some(o)) => Ok(o),
        Ok(None) => Err(answer(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "{} {namespace}/{name} not found",
                K::kind(&K::DynamicType::default()).to_lowercase()
            ),
        )),
        Err(e) => Err(answer(StatusCode::BAD_GATEWAY, "ApiError", e.to_string())),
    }
}
