//! Operations on an object store (`tidepool_wire::objstore`), run by the source agent for
//! an `objectStore` target: listing a dataset's streams (the store's index: its keys and
//! manifests), deleting expired chains, and ([`send`]) uploading `zfs send`. The keys
//! arrive with each call and live only in that call's client.

pub(crate) mod drill;
pub mod restore;
pub(crate) mod send;

use std::sync::Arc;

use axum::{Json, extract::State};
use object_store::ObjectStore;
use tidepool_objstore::naming::{Prefix, StreamKey, StreamKind};
use tidepool_objstore::{S3Config, chain, list};
use tidepool_wire::objstore::{
    ObjectStoreAnswer, ObjectStoreOperation, ObjectStoreRequest, StoreAccess, StoredStream,
};

use crate::operation::Operation;
use crate::server::{AgentState, CommandRefused, Fenced};

impl Operation for ObjectStoreRequest {
    const PATH: &'static str = "/v1/object-store";
    type Output = ObjectStoreAnswer;
}

/// A client for the bucket and the key prefix; no request is made yet.
pub(crate) fn open(access: &StoreAccess) -> Result<(Arc<dyn ObjectStore>, Prefix), String> {
    let prefix = Prefix::new(&access.prefix).map_err(|e| e.to_string())?;
    let config = S3Config {
        endpoint: access.endpoint.clone(),
        bucket: access.bucket.clone(),
        region: access.region.clone(),
        access_key_id: access.access_key_id.clone(),
        secret_access_key: access.secret_access_key.reveal().to_owned(),
        allow_http: access.endpoint.starts_with("http://"),
    };
    let store = config.connect().map_err(|e| e.to_string())?;
    Ok((store, prefix))
}

pub(crate) async fn object_store(
    State(state): State<Arc<AgentState>>,
    Fenced(op): Fenced<ObjectStoreRequest>,
) -> Result<Json<ObjectStoreAnswer>, CommandRefused> {
    // Only streams of datasets this agent may send.
    state.check_dataset(&op.dataset)?;
    let failed = |message: String| Json(ObjectStoreAnswer::Failed { message });
    let (store, prefix) = match open(&op.store) {
        Ok(s) => s,
        Err(message) => return Ok(failed(message)),
    };
    let answer = match op.operation {
        ObjectStoreOperation::List => listed(&store, &prefix, &op.dataset).await,
        ObjectStoreOperation::Expire { keep_chains } => {
            expire(&store, &prefix, &op.dataset, keep_chains).await
        }
        ObjectStoreOperation::DeleteOwned { owner } => {
            delete_owned(&store, &prefix, &op.dataset, owner.as_str()).await
        }
    };
    Ok(Json(answer.unwrap_or_else(|e| ObjectStoreAnswer::Failed {
        message: e.to_string(),
    })))
}

/// The dataset's streams oldest first, each complete one with its manifest's GUIDs.
async fn listed(
    store: &Arc<dyn ObjectStore>,
    prefix: &Prefix,
    dataset: &tidepool_api::DatasetName,
) -> Result<ObjectStoreAnswer, tidepool_objstore::Error> {
    let mut listing = list::list_streams(store, prefix, dataset).await?;
    listing.sort_by(|a, b| {
        a.name
            .time
            .cmp(&b.name.time)
            .then_with(|| a.name.dir_name().cmp(&b.name.dir_name()))
    });
    let mut streams = Vec::with_capacity(listing.len());
    for l in listing {
        let key = StreamKey {
            prefix: prefix.clone(),
            dataset: dataset.clone(),
            name: l.name.clone(),
        };
        let manifest = if l.complete {
            Some(tidepool_objstore::restore::read_manifest(store, &key).await?)
        } else {
            None
        };
        streams.push(StoredStream {
            key: l.name.dir_name(),
            time: l.name.time,
            snapshot: l.name.snapshot.clone(),
            parent: match &l.name.kind {
                StreamKind::Full => None,
                StreamKind::Incremental { parent } => Some(parent.clone()),
            },
            guid: manifest.as_ref().map(|m| m.snapshot.guid),
            parent_guid: manifest
                .as_ref()
                .and_then(|m| m.parent.as_ref().map(|p| p.guid)),
            stored_bytes: manifest.as_ref().map_or(0, |m| m.stored_bytes),
        });
    }
    Ok(ObjectStoreAnswer::Listed { streams })
}

/// Deletes whole chains beyond the newest `keep`, decided here on a fresh listing.
async fn expire(
    store: &Arc<dyn ObjectStore>,
    prefix: &Prefix,
    dataset: &tidepool_api::DatasetName,
    keep: u32,
) -> Result<ObjectStoreAnswer, tidepool_objstore::Error> {
    let keep = usize::try_from(keep)
        .ok()
        .and_then(std::num::NonZeroUsize::new)
        .unwrap_or(std::num::NonZeroUsize::MIN);
    let listing = list::list_streams(store, prefix, dataset).await?;
    let chains = chain::chains(&listing);
    let mut deleted = Vec::new();
    for name in chain::expired(&chains, keep) {
        let key = StreamKey {
            prefix: prefix.clone(),
            dataset: dataset.clone(),
            name,
        };
        list::delete_stream(store, &key).await?;
        deleted.push(key.name.dir_name());
    }
    Ok(ObjectStoreAnswer::Expired { deleted })
}

/// Deletes the complete streams whose manifest names `owner`, newest first (so a deletion
/// cut half way never leaves a stream whose parent is gone while it stays), each manifest
/// first.
async fn delete_owned(
    store: &Arc<dyn ObjectStore>,
    prefix: &Prefix,
    dataset: &tidepool_api::DatasetName,
    owner: &str,
) -> Result<ObjectStoreAnswer, tidepool_objstore::Error> {
    let mut listing = list::list_streams(store, prefix, dataset).await?;
    listing.sort_by_key(|l| std::cmp::Reverse((l.name.time, l.name.dir_name())));
    let mut deleted = Vec::new();
    for l in listing.into_iter().filter(|l| l.complete) {
        let key = StreamKey {
            prefix: prefix.clone(),
            dataset: dataset.clone(),
            name: l.name,
        };
        let manifest = tidepool_objstore::restore::read_manifest(store, &key).await?;
        if manifest.owner.as_deref() == Some(owner) {
            list::delete_stream(store, &key).await?;
            deleted.push(key.name.dir_name());
        }
    }
    Ok(ObjectStoreAnswer::Expired { deleted })
}
