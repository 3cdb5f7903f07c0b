//! Pool inventories whose cost follows change, not size (bzfs's `--cache-snapshots` idea).
//!
//! The first request for a pool lists it whole. A later one lists only the pool's
//! filesystems and volumes, with their `snapshots_changed` property (OpenZFS ≥ 2.2: the
//! time of the dataset's last snapshot create, destroy or rename), and re-reads the
//! snapshots of just the datasets whose value moved, all of them together: on a pool of
//! 1,000 datasets with one new snapshot (or one atomic snapshot over fifty datasets) that
//! is a dataset listing plus two small calls, not a listing of every snapshot.
//!
//! `snapshots_changed` has whole-second resolution, so a change in the very second a read
//! ran may not move it. A dataset's snapshots are therefore reused only when the value is
//! unchanged **and** earlier than the second its last read started; otherwise they are read
//! again. Changes the property does not track (a hold placed or released, an owner property
//! set by an admin, a bookmark) are caught by a full relist at least every `full_every`
//! (10 minutes by default); the agent's own snapshots and destroys mark their datasets dirty
//! at once. Acting on a stale hold or owner is still safe: `DestroySnapshots` re-reads the
//! dataset before it destroys anything.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use tidepool_api::names::{DatasetName, PoolName};
use tidepool_wire::inventory::DatasetInventory;
use tidepool_wire::operation::{InventoryAnswer, InventoryGeneration};
use tidepool_wire::pool::PoolInventory;
use tidepool_zfs::inventory::listing_request;
use tidepool_zfs::{
    Depth, ErrorKind, Executor, InventoryBuilder, InventoryError, ObjectTypes, PropertyName, Zfs,
};

use crate::metrics::{AgentMetrics, RefreshMode};

/// How often a pool is relisted whole even when nothing seems to have changed.
pub const DEFAULT_FULL_EVERY: Duration = Duration::from_secs(600);

/// A dataset's `snapshots_changed` as listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotsChanged {
    /// `-`: no snapshot was ever created or destroyed on it.
    Never,
    /// Seconds since the Unix epoch.
    At(i64),
    /// Not a number: never trusted.
    Unreadable,
}

impl SnapshotsChanged {
    fn from_column(value: Option<&str>) -> Self {
        match value {
            None => Self::Never,
            Some(v) => v.parse().map_or(Self::Unreadable, Self::At),
        }
    }
}

/// What was known of a dataset when its snapshots were last read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub snapshots_changed: SnapshotsChanged,
    /// Whole seconds since the epoch at which that read started.
    pub read_at: i64,
}

/// Whether the snapshots read under `stamp` are still all of them, given the value listed
/// now. The second of the read itself is not trusted (see the module docs).
pub fn can_reuse(stamp: Stamp, now_listed: SnapshotsChanged) -> bool {
    if stamp.snapshots_changed != now_listed {
        return false;
    }
    match now_listed {
        SnapshotsChanged::Never => true,
        SnapshotsChanged::At(t) => t < stamp.read_at,
        SnapshotsChanged::Unreadable => false,
    }
}

/// The next generation: larger than the previous one and than the clock's microseconds,
/// so a restarted agent never repeats a generation a controller still holds.
pub fn next_generation(
    previous: Option<InventoryGeneration>,
    now: Timestamp,
) -> InventoryGeneration {
    let clock = u64::try_from(now.as_microsecond()).unwrap_or(0);
    let after = previous.map_or(0, |g| g.0.saturating_add(1));
    InventoryGeneration(after.max(clock))
}

#[derive(Debug)]
struct PoolState {
    generation: InventoryGeneration,
    inventory: PoolInventory,
    stamps: HashMap<DatasetName, Stamp>,
    full_at: Timestamp,
}

/// The last inventory of each pool, refreshed by change.
#[derive(Debug)]
pub struct InventoryCache {
    pools: HashMap<PoolName, PoolState>,
    /// False on OpenZFS before 2.2 (no `snapshots_changed`): every refresh is full.
    incremental: bool,
    full_every: Duration,
}

fn snapshots_changed_property() -> Result<PropertyName, InventoryError> {
    "snapshots_changed".parse().map_err(|e| {
        InventoryError::Zfs(tidepool_zfs::ZfsError::InvalidRequest(
            tidepool_zfs::RequestError::Value(e),
        ))
    })
}

impl InventoryCache {
    pub fn new(incremental: bool, full_every: Duration) -> Self {
        Self {
            pools: HashMap::new(),
            incremental,
            full_every,
        }
    }

    /// The inventory of `pool` as of now; `Unchanged` when it equals generation `since`.
    /// `dirty`: datasets whose snapshots the agent changed itself since the last answer,
    /// read again whatever their stamps say.
    pub async fn answer<E: Executor>(
        &mut self,
        zfs: &Zfs<E>,
        metrics: &AgentMetrics,
        pool: &PoolName,
        since: Option<InventoryGeneration>,
        dirty: &HashSet<DatasetName>,
        now: Timestamp,
    ) -> Result<(InventoryAnswer, RefreshMode), InventoryError> {
        let previous = self.pools.get(pool);
        let full = !self.incremental
            || previous
                .is_none_or(|p| now.duration_since(p.full_at).unsigned_abs() >= self.full_every);
        let mode = if full {
            RefreshMode::Full
        } else {
            RefreshMode::Incremental
        };
        let started = std::time::Instant::now();
        let (inventory, stamps) = match (full, previous) {
            (false, Some(state)) => {
                let (inventory, stamps, reread) = refresh(zfs, pool, state, dirty, now).await?;
                metrics.inventory_datasets_reread.inc_by(reread as u64);
                (inventory, stamps)
            }
            _ => relist(zfs, pool, self.incremental, now).await?,
        };
        metrics
            .inventory_refresh_seconds
            .with_label_values(&[mode.as_str()])
            .observe(started.elapsed().as_secs_f64());
        metrics
            .inventory_refreshes
            .with_label_values(&[mode.as_str()])
            .inc();
        metrics
            .pool_free_bytes
            .with_label_values(&[pool.as_str()])
            .set(i64::try_from(inventory.free_bytes).unwrap_or(i64::MAX));
        let previous = self.pools.remove(pool);
        let generation = match &previous {
            Some(p) if p.inventory == inventory => p.generation,
            p => next_generation(p.as_ref().map(|p| p.generation), now),
        };
        let full_at = match (&previous, full) {
            (Some(p), false) => p.full_at,
            _ => now,
        };
        let answer = if since == Some(generation) {
            InventoryAnswer::Unchanged { generation }
        } else {
            InventoryAnswer::Full {
                generation,
                inventory: inventory.clone(),
            }
        };
        self.pools.insert(
            pool.clone(),
            PoolState {
                generation,
                inventory,
                stamps,
                full_at,
            },
        );
        Ok((answer, mode))
    }
}

type Stamps = HashMap<DatasetName, Stamp>;

/// `zfs list` of the pool's filesystems and volumes only, with `snapshots_changed`.
async fn list_datasets<E: Executor>(
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

/// The whole pool, read from scratch (and, when incremental refreshes are possible, the
/// stamps for the next one, listed first so that anything changing in between is read
/// again next time rather than missed).
async fn relist<E: Executor>(
    zfs: &Zfs<E>,
    pool: &PoolName,
    incremental: bool,
    now: Timestamp,
) -> Result<(PoolInventory, Stamps), InventoryError> {
    let observed = if incremental {
        list_datasets(zfs, pool).await?.1
    } else {
        HashMap::new()
    };
    let inventory = zfs.pool_inventory(pool).await?;
    let read_at = now.as_second();
    let stamps = observed
        .into_iter()
        .map(|(d, snapshots_changed)| {
            (
                d,
                Stamp {
                    snapshots_changed,
                    read_at,
                },
            )
        })
        .collect();
    Ok((inventory, stamps))
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
async fn read_snapshots<E: Executor>(
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

/// The pool as of now from the last inventory: pool facts and the dataset listing are
/// fresh, snapshots are re-read only for datasets that changed (how many: the third
/// value). Nothing changed: `zpool list` and the dataset listing, no other call.
async fn refresh<E: Executor>(
    zfs: &Zfs<E>,
    pool: &PoolName,
    state: &PoolState,
    dirty: &HashSet<DatasetName>,
    now: Timestamp,
) -> Result<(PoolInventory, Stamps, usize), InventoryError> {
    let entry = zfs
        .pools(std::slice::from_ref(pool))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| InventoryError::NoSuchPool { pool: pool.clone() })?;
    let (listed, observed) = list_datasets(zfs, pool).await?;
    let read_at = now.as_second();
    let listed_changed = |d: &DatasetName| {
        observed
            .get(d)
            .copied()
            .unwrap_or(SnapshotsChanged::Unreadable)
    };
    let reusable = |d: &DatasetName| -> Option<(Stamp, &DatasetInventory)> {
        let stamp = *state.stamps.get(d)?;
        if dirty.contains(d) || !can_reuse(stamp, listed_changed(d)) {
            return None;
        }
        Some((stamp, state.inventory.dataset(d)?))
    };
    let stale: Vec<DatasetName> = listed
        .iter()
        .map(|d| &d.dataset)
        .filter(|d| reusable(d).is_none())
        .cloned()
        .collect();
    let reread_count = stale.len();
    let mut reread = read_snapshots(zfs, &stale).await?;
    let mut stamps = Stamps::new();
    let mut datasets = Vec::with_capacity(listed.len());
    for mut fresh in listed {
        let source = match reusable(&fresh.dataset) {
            Some((stamp, old)) => {
                stamps.insert(fresh.dataset.clone(), stamp);
                old.clone()
            }
            None => {
                stamps.insert(
                    fresh.dataset.clone(),
                    Stamp {
                        snapshots_changed: listed_changed(&fresh.dataset),
                        read_at,
                    },
                );
                // A dataset with no snapshot and no bookmark prints nothing in the re-read.
                reread.remove(&fresh.dataset).unwrap_or_else(|| {
                    DatasetInventory::with_snapshots(fresh.dataset.clone(), Vec::new())
                })
            }
        };
        fresh.snapshots = source.snapshots;
        fresh.bookmarks = source.bookmarks;
        fresh.holds = source.holds;
        fresh.unnamed_snapshots = source.unnamed_snapshots;
        datasets.push(fresh);
    }
    let unnamed_datasets = state.inventory.unnamed_datasets;
    Ok((
        PoolInventory {
            pool: pool.clone(),
            health: entry.health,
            size_bytes: entry.size,
            allocated_bytes: entry.allocated,
            free_bytes: entry.free,
            capabilities: state.inventory.capabilities,
            datasets,
            unnamed_datasets,
        },
        stamps,
        reread_count,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(changed: SnapshotsChanged, read_at: i64) -> Stamp {
        Stamp {
            snapshots_changed: changed,
            read_at,
        }
    }

    #[test]
    fn reuse_only_what_cannot_have_moved() {
        use SnapshotsChanged::*;
        // Changed before the second of the read, and not since: reuse.
        assert!(can_reuse(stamp(At(99), 100), At(99)));
        // Changed in the very second of the read: it may have changed after the read.
        assert!(!can_reuse(stamp(At(100), 100), At(100)));
        // Moved.
        assert!(!can_reuse(stamp(At(99), 100), At(101)));
        assert!(!can_reuse(stamp(Never, 100), At(50)));
        assert!(can_reuse(stamp(Never, 100), Never));
        // A value that is not a number is never trusted.
        assert!(!can_reuse(stamp(Unreadable, 100), Unreadable));
    }

    #[test]
    fn columns_read_as_stamps() {
        assert_eq!(SnapshotsChanged::from_column(None), SnapshotsChanged::Never);
        assert_eq!(
            SnapshotsChanged::from_column(Some("1764600000")),
            SnapshotsChanged::At(1_764_600_000)
        );
        assert_eq!(
            SnapshotsChanged::from_column(Some("Tue Dec 1")),
            SnapshotsChanged::Unreadable
        );
    }

    #[test]
    fn generations_grow_across_restarts() {
        let t0 = Timestamp::from_second(1_764_600_000).unwrap_or_else(|e| panic!("{e}"));
        let first = next_generation(None, t0);
        assert!(next_generation(Some(first), t0) > first);
        // A restarted agent (no previous generation) at a later time starts above.
        let later = t0 + jiff::SignedDuration::from_secs(1);
        assert!(next_generation(None, later) > next_generation(Some(first), t0));
    }
}
