//! The reconciler's writes to the API server: the finalizer, the status (server-side
//! apply, own field manager) and events.

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tidepool_api::{DeletionPolicy, SnapshotSchedule};

use crate::reconcile::{Context, FINALIZER, ReconcileError, kube_err};
use crate::status;

/// Adds the finalizer for `deletionPolicy: Delete`, removes it for `Retain`.
pub async fn ensure_finalizer(obj: &SnapshotSchedule, ctx: &Context) -> Result<(), ReconcileError> {
    let has = obj.finalizers().iter().any(|f| f == FINALIZER);
    let want = obj.spec.deletion_policy == DeletionPolicy::Delete;
    if has == want {
        return Ok(());
    }
    let mut finalizers: Vec<String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if want {
        finalizers.push(FINALIZER.to_owned());
    }
    patch_finalizers(obj, ctx, finalizers).await
}

/// `obj`'s finalizers without `finalizer`, or `None` when it does not carry it (then a
/// deletion has nothing left to do for it).
pub fn finalizers_without<K: Resource>(obj: &K, finalizer: &str) -> Option<Vec<String>> {
    let all = obj.finalizers();
    all.iter()
        .any(|f| f == finalizer)
        .then(|| all.iter().filter(|f| *f != finalizer).cloned().collect())
}

/// Replaces `metadata.finalizers`, guarded by the resourceVersion read (the chart's
/// admission policy lets the controller change nothing else on the object).
pub async fn patch_finalizers<K>(
    obj: &K,
    ctx: &Context,
    finalizers: Vec<String>,
) -> Result<(), ReconcileError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let ns = obj
        .namespace()
        .ok_or(ReconcileError::Incomplete("namespace"))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(kube_err("patching the finalizers"))?;
    Ok(())
}

pub async fn write_status(
    ctx: &Context,
    ns: &str,
    name: &str,
    status: &tidepool_api::snapshot_schedule::SnapshotScheduleStatus,
) -> Result<(), ReconcileError> {
    apply_status::<SnapshotSchedule>(ctx, ns, name, status).await
}

/// Applies `status` to object `name` of kind `K` (server-side apply, the controller's
/// field manager, the status subresource).
pub async fn apply_status<K>(
    ctx: &Context,
    ns: &str,
    name: &str,
    status: &impl serde::Serialize,
) -> Result<(), ReconcileError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(&ctx.config.field_manager).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(kube_err("applying the status"))?;
    Ok(())
}

/// One event per transition of Ready (not per routine run), reason as in the status.
pub async fn publish_transition(
    ctx: &Context,
    obj: &SnapshotSchedule,
    old: &tidepool_api::snapshot_schedule::SnapshotScheduleStatus,
    new: &tidepool_api::snapshot_schedule::SnapshotScheduleStatus,
) {
    let (Some(after), before) = (status::ready(new), status::ready(old)) else {
        return;
    };
    if before.as_ref().map(|(s, r, _)| (s, r)) == Some((&after.0, &after.1)) {
        return;
    }
    let type_ = if after.0 {
        EventType::Normal
    } else {
        EventType::Warning
    };
    publish(ctx, obj, type_, &after.1, after.2, "Reconcile").await;
}

pub async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: String,
    action: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(note, 1000)),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "publishing an event failed");
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
