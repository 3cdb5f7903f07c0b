//! Reading a dataset's streams from the store, and deleting whole streams.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tidepool_api::DatasetName;

use crate::chain::ListedStream;
use crate::error::Error;
use crate::naming::{MANIFEST_FILE, Prefix, StreamKey, StreamName};

/// The streams of `dataset` under `prefix`: every `<dir>/<file>` directly in the dataset's
/// directory whose `<dir>` parses as a stream name. Child datasets' streams (deeper) and
/// foreign objects are not listed.
pub async fn list_streams(
    store: &Arc<dyn ObjectStore>,
    prefix: &Prefix,
    dataset: &DatasetName,
) -> Result<Vec<ListedStream>, Error> {
    let dir = prefix.dataset_dir(dataset);
    let depth = dir.parts().count();
    let objects: Vec<_> = store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|source| Error::Store {
            op: "listing",
            object: format!("{dir}/"),
            source,
        })?;
    let mut streams: BTreeMap<String, ListedStream> = BTreeMap::new();
    for object in objects {
        let parts: Vec<_> = object.location.parts().skip(depth).collect();
        let [stream_dir, file] = parts.as_slice() else {
            continue;
        };
        let Some(name) = StreamName::parse(stream_dir.as_ref()) else {
            continue;
        };
        let entry = streams
            .entry(stream_dir.as_ref().to_owned())
            .or_insert(ListedStream {
                name,
                complete: false,
            });
        if file.as_ref() == MANIFEST_FILE {
            entry.complete = true;
        }
    }
    Ok(streams.into_values().collect())
}

/// Deletes every object of stream `key`, the manifest first: a deletion cut half way
/// leaves an incomplete stream, never one that claims chunks it lost.
pub async fn delete_stream(store: &Arc<dyn ObjectStore>, key: &StreamKey) -> Result<(), Error> {
    let manifest = key.manifest();
    delete(store, &manifest).await?;
    let dir = key.dir();
    let objects: Vec<_> = store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|source| Error::Store {
            op: "listing",
            object: format!("{dir}/"),
            source,
        })?;
    for object in objects {
        delete(store, &object.location).await?;
    }
    Ok(())
}

async fn delete(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<(), Error> {
    match store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(source) => Err(Error::Store {
            op: "deleting",
            object: path.to_string(),
            source,
        }),
    }
}
