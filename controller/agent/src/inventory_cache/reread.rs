//! The zfs reads of an incremental refresh: the dataset listing with `snapshots_changed`,
//! and the snapshots of the datasets that changed.

use std::collections::HashMap;

use tidepool_api::names::{DatasetName, PoolName};
use tidepool_wire::inventory::DatasetInventory;
use tidepool_zfs::inventory::listing_request;
use tidepool_zfs::{
    Depth, ErrorKind, Executor, InventoryBuilder, InventoryError, ObjectTypes, PropertyName, Zfs,
};

use super::SnapshotsChanged;

fn snapshots_changed_property() -> Result<PropertyName, InventoryError> {
    "snapshots_changed".parse().map_err(|e| {
        InventoryError::Zfs(tidepool_zfs::ZfsError::InvalidRequest(
            tidepool_zfs::RequestError::Value(e),
        ))
    })
}
/// `zfs list` of the pool's filesystems and volumes only, with `snapshots_changed`.
pub(super) async fn list_datasets<E: Executor>(
    zfs: &Zfs<E>,
    pool: &PoolName,
) -> Result<
    (
        Vec<DatasetInventory>,
        HashMap<DatasetName, SnapshotsChanged>,
    ),
    InventoryError,
> {
    let root = DatasetName::from(pool.clone());
    let mut request = listing_request(&root, Depth::Recursive);
    request.types = ObjectTypes::DATASETS;
    let column = request.user_props.len();
    request.user_props.push(snapshots_changed_property()?);
    let mut builder = InventoryBuilder::new();
    let mut listed = Vec::new();
    let mut first_error = None;
    zfs.list_each(&request, |e| {
        if first_error.is_none()
            && let Err(err) = builder.add_entry(&e)
        {
            first_error = Some(err);
        }
        listed.push((
            e.name.as_str().to_owned(),
            SnapshotsChanged::from_column(e.user_prop(column)),
        ));
    })
    .await?;
    if let Some(err) = first_error {
        return Err(err);
    }
    let observed = listed
        .into_iter()
        .filter_map(|(name, changed)| Some((name.parse::<DatasetName>().ok()?, changed)))
        .collect();
    Ok((builder.finish().0, observed))
}

/// How many datasets one re-read names: keeps argv far below `ARG_MAX`.
const REREAD_BATCH: usize = 1000;

/// The snapshots and bookmarks of `datasets`, read together: one `zfs list -d 1` and one
/// `zfs get -s local -d 1` of the owner property naming all of them (only a `local` source
/// is a claim, as in the full inventory; the snapshots themselves are never named, so the
/// owner read prints only owned snapshots and its argv does not grow with them), and
/// `zfs holds` for held ones. So a schedule that snapshots fifty datasets at once costs
/// the same few calls as one that snapshots one. Should a dataset vanish between the
/// listing and this read, the datasets are read one by one instead.
pub(super) async fn read_snapshots<E: Executor>(
    zfs: &Zfs<E>,
    datasets: &[DatasetName],
) -> Result<HashMap<DatasetName, DatasetInventory>, InventoryError> {
    const SNAPSHOTS_AND_BOOKMARKS: ObjectTypes = ObjectTypes {
        filesystem: false,
        volume: false,
        snapshot: true,
        bookmark: true,
    };
    let mut out = HashMap::new();
    for batch in datasets.chunks(REREAD_BATCH) {
        match zfs
            .inventories_of(batch, SNAPSHOTS_AND_BOOKMARKS, Depth::RootsOnly)
            .await
        {
            Ok(read) => out.extend(read.datasets.into_iter().map(|d| (d.dataset.clone(), d))),
            Err(InventoryError::Zfs(e)) if e.kind() == ErrorKind::NotFound => {
                for d in batch {
                    match zfs
                        .inventories_of(
                            std::slice::from_ref(d),
                            SNAPSHOTS_AND_BOOKMARKS,
                            Depth::RootsOnly,
                        )
                        .await
                    {
                        Ok(read) => out.extend(
                            read.datasets
                                .into_iter()
                                .filter(|r| &r.dataset == d)
                                .map(|r| (r.dataset.clone(), r)),
                        ),
                        // Destroyed since the listing: it is not part of the pool any more.
                        Err(InventoryError::Zfs(e)) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
