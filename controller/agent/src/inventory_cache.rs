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

mod reread;
mod stamps;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use tidepool_api::names::{DatasetName, PoolName};
use tidepool_wire::inventory::DatasetInventory;
use tidepool_wire::operation::{InventoryAnswer, InventoryGeneration};
use tidepool_wire::pool::PoolInventory;
use tidepool_zfs::{Executor, InventoryError, Zfs};

use crate::metrics::{AgentMetrics, RefreshMode};
use reread::{list_datasets, read_snapshots};
pub use stamps::{SnapshotsChanged, Stamp, can_reuse, next_generation, to_reread};

/// How often a pool is relisted whole even when nothing seems to have changed.
pub const DEFAULT_FULL_EVERY: Duration = Duration::from_secs(600);

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
    let stale = to_reread(
        listed.iter().map(|d| &d.dataset),
        &observed,
        &state.stamps,
        dirty,
        |d| state.inventory.dataset(d).is_some(),
    );
    let reread_count = stale.len();
    let mut reread = read_snapshots(zfs, &stale).await?;
    let stale: HashSet<&DatasetName> = stale.iter().collect();
    let mut stamps = Stamps::new();
    let mut datasets = Vec::with_capacity(listed.len());
    for mut fresh in listed {
        let cached = state
            .inventory
            .dataset(&fresh.dataset)
            .filter(|_| !stale.contains(&fresh.dataset));
        let source = match (cached, state.stamps.get(&fresh.dataset)) {
            (Some(old), Some(&stamp)) => {
                stamps.insert(fresh.dataset.clone(), stamp);
                old.clone()
            }
            _ => {
                let snapshots_changed = observed
                    .get(&fresh.dataset)
                    .copied()
                    .unwrap_or(SnapshotsChanged::Unreadable);
                stamps.insert(
                    fresh.dataset.clone(),
                    Stamp {
                        snapshots_changed,
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
