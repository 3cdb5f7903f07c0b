//! From pool listings to the planner's inventories ([`tidepool_wire`] types).
//!
//! A pool's inventory costs two zfs calls however many snapshots it has, both parsed as
//! they stream (nothing of the raw output is kept beyond the result):
//! 1. `zfs list -r` of every filesystem, volume, snapshot and bookmark with `guid`,
//!    `createtxg`, `creation`, `written`, `receive_resume_token`, `userrefs` and
//!    `encryption`;
//! 2. `zfs get -s local -t snapshot -r tidepool.dev:owner`: the snapshots on which the
//!    owner property is set **locally**. A value inherited from the dataset (an admin or a
//!    tenant set it there) or received in a stream is never printed by it, so it can never
//!    become a claim (DESIGN.md, ownership).
//!
//! A third call, `zfs holds`, runs only when snapshots are held (`userrefs > 0`), for those
//! snapshots, to learn the tags. Plus `zpool list` and `zpool get feature@...` for the
//! pool itself.
//!
//! Snapshots whose names Tidepool would never make are listed like any other (their owner
//! is `None` unless set locally, so retention never considers them). Names the strict
//! name types refuse (OpenZFS allows spaces) cannot be named in a plan at all: their
//! snapshots are kept by GUID in [`DatasetInventory::unnamed_snapshots`], and such
//! datasets are counted in [`PoolInventory::unnamed_datasets`].

use std::collections::HashMap;

use jiff::Timestamp;
use tidepool_api::names::{DatasetName, PoolName, SnapshotName, SnapshotShortName};
use tidepool_api::values::PropertyName;
use tidepool_api::{OWNER_PROPERTY, PoolCapabilities};
use tidepool_wire::inventory::{
    BookmarkInfo, DatasetInventory, HoldInfo, PartialReceive, SnapshotInfo, UnnamedSnapshot,
};
use tidepool_wire::operation::{
    DestroySnapshots, Owner, RefusalReason, RefusedDestroy, RequestError, SnapshotRef,
    SnapshotsDestroyed,
};
use tidepool_wire::pool::PoolInventory;

use crate::client::{CommandKind, Zfs};
use crate::cmd::{self, Depth, ListRequest, ObjectTypes};
use crate::error::{ErrorKind, ZfsError};
use crate::exec::Executor;
use crate::features::{FeatureError, POOL_FEATURES, apply_feature_line};
use crate::parse::{self, ListEntry, ObjectType, PropertyEntry, PropertySource, parse_u64};

/// How many snapshot names one `zfs holds` call takes (keeps argv far below `ARG_MAX`).
const HOLDS_BATCH: usize = 1000;

/// Why an inventory could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Zfs(#[from] ZfsError),
    #[error("listing entry {name}: {reason}")]
    Entry { name: String, reason: EntryError },
    #[error("pool {pool}: {reason}")]
    Feature {
        pool: PoolName,
        reason: FeatureError,
    },
    #[error("pool {pool} is not imported")]
    NoSuchPool { pool: PoolName },
    #[error("invalid destroy request: {0}")]
    Request(#[from] RequestError),
}

/// What was wrong with one listing entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("column {column}: {value:?} is not an unsigned integer")]
    NotANumber { column: &'static str, value: String },
    #[error("column {column} is missing")]
    MissingColumn { column: &'static str },
    #[error("creation {seconds} is not a representable time")]
    Creation { seconds: i64 },
    /// zfs prints tokens as `1-<hex>-...`; anything else is refused rather than guessed at.
    #[error("receive_resume_token: {0}")]
    ResumeToken(tidepool_api::ValueError),
}

/// The columns the listing adds to [`crate::parse::LIST_COLUMNS`], in this order. They
/// ride in the listing's extra-column slots (any property name works there; these two are
/// native and never contain a tab, so they can never be ambiguous).
const EXTRA_COLUMNS: [&str; 2] = ["userrefs", "encryption"];
const USERREFS: usize = 0;
const ENCRYPTION: usize = 1;

fn property(name: &'static str) -> PropertyName {
    // The names here are constants that the property-name rules accept; the test
    // `constant_property_names_parse` proves it.
    name.parse()
        .unwrap_or_else(|_| unreachable!("{name} is a valid property name"))
}

fn owner_property() -> PropertyName {
    property(OWNER_PROPERTY)
}

/// The listing request of everything under `root`.
pub fn listing_request(root: &DatasetName, depth: Depth) -> ListRequest {
    ListRequest {
        roots: vec![root.clone()],
        types: ObjectTypes::ALL,
        depth,
        user_props: EXTRA_COLUMNS.iter().map(|c| property(c)).collect(),
    }
}

/// Turns a locally set `tidepool.dev:owner` value into an owner: the one place that
/// decides what a value means, so the owner type changes here alone. One owner usually
/// owns thousands of snapshots; they share one allocation.
#[derive(Debug, Default)]
pub struct OwnerInterner {
    /// Each distinct value once, with what it means: an owner, or no claim at all.
    seen: HashMap<Box<str>, Option<Owner>>,
}

impl OwnerInterner {
    /// `None` when the value is no claim at all: empty, or not in the owner format
    /// (`<Kind>/<namespace>/<name>`), so never Tidepool's to destroy.
    pub fn owner_from_local_value(&mut self, value: &str) -> Option<Owner> {
        if let Some(o) = self.seen.get(value) {
            return o.clone();
        }
        let owner = value.parse::<Owner>().ok();
        self.seen.insert(value.into(), owner.clone());
        owner
    }
}

/// Builds dataset inventories from a listing, then adds local owners and hold tags.
#[derive(Debug, Default)]
pub struct InventoryBuilder {
    datasets: Vec<DatasetInventory>,
    by_name: HashMap<Box<str>, usize>,
    /// Per dataset, snapshot positions ordered by name: the owner and hold lines name
    /// snapshots, and a sorted index of `u32`s costs far less than a map of names.
    name_order: Vec<Vec<u32>>,
    indexed: bool,
    unnamed_datasets: u64,
    owners: OwnerInterner,
}

fn number(entry: &ListEntry, i: usize, column: &'static str) -> Result<u64, EntryError> {
    let raw = entry
        .user_prop(i)
        .ok_or(EntryError::MissingColumn { column })?;
    parse_u64(raw, column).map_err(|_| EntryError::NotANumber {
        column,
        value: raw.to_owned(),
    })
}

fn timestamp(seconds: i64) -> Result<Timestamp, EntryError> {
    Timestamp::from_second(seconds).map_err(|_| EntryError::Creation { seconds })
}

impl InventoryBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn dataset_index(&mut self, name: &str) -> Option<usize> {
        if let Some(&i) = self.by_name.get(name) {
            return Some(i);
        }
        let dataset: DatasetName = name.parse().ok()?;
        let i = self.datasets.len();
        // Exists: a listed snapshot proves it even before (or without) its own line.
        self.datasets
            .push(DatasetInventory::with_snapshots(dataset, Vec::new()));
        self.by_name.insert(name.into(), i);
        Some(i)
    }

    /// Adds one listing entry (from [`listing_request`]'s output).
    pub fn add_entry(&mut self, e: &ListEntry) -> Result<(), InventoryError> {
        self.indexed = false;
        let fail = |reason| InventoryError::Entry {
            name: e.name.as_str().to_owned(),
            reason,
        };
        match e.kind {
            ObjectType::Filesystem | ObjectType::Volume => {
                let Some(i) = self.dataset_index(e.name.as_str()) else {
                    self.unnamed_datasets += 1;
                    return Ok(());
                };
                let d = &mut self.datasets[i];
                d.written_since_newest = e.written.unwrap_or(0);
                d.receive_resume_token = match e.receive_resume_token.as_deref() {
                    Some(raw) => Some(PartialReceive::opaque(
                        raw.parse()
                            .map_err(|source| fail(EntryError::ResumeToken(source)))?,
                    )),
                    None => None,
                };
                d.encrypted = !matches!(e.user_prop(ENCRYPTION), None | Some("off"));
            }
            ObjectType::Snapshot => {
                // The snapshots of a dataset whose name Tidepool cannot spell go with it.
                let Some(i) = self.dataset_index(e.name.dataset_part()) else {
                    return Ok(());
                };
                let userrefs = number(e, USERREFS, "userrefs").map_err(fail)?;
                let creation = timestamp(e.creation).map_err(fail)?;
                let d = &mut self.datasets[i];
                match e.name.to_short_name() {
                    Some(Ok(name)) => d.snapshots.push(SnapshotInfo {
                        name,
                        guid: e.guid,
                        createtxg: e.createtxg,
                        creation,
                        owner: None,
                        held: userrefs > 0,
                    }),
                    _ => d.unnamed_snapshots.push(UnnamedSnapshot {
                        printed_name: e.name.short_part().unwrap_or_default().to_owned(),
                        guid: e.guid,
                        createtxg: e.createtxg,
                    }),
                }
            }
            ObjectType::Bookmark => {
                let Some(i) = self.dataset_index(e.name.dataset_part()) else {
                    return Ok(());
                };
                let creation = timestamp(e.creation).map_err(fail)?;
                // A bookmark Tidepool cannot name is one it never made and never destroys.
                if let Some(Ok(name)) = e.name.to_short_name() {
                    self.datasets[i].bookmarks.push(BookmarkInfo {
                        name,
                        guid: e.guid,
                        createtxg: e.createtxg,
                        creation,
                    });
                }
            }
        }
        Ok(())
    }

    /// Orders snapshots and bookmarks by `createtxg` (the order the planner wants, and
    /// stable under clock steps) and indexes names for the owner and hold lines.
    fn index(&mut self) {
        if self.indexed {
            return;
        }
        self.name_order.clear();
        for d in &mut self.datasets {
            d.snapshots.sort_unstable_by_key(|s| s.createtxg);
            d.bookmarks.sort_unstable_by_key(|b| b.createtxg);
            d.unnamed_snapshots.sort_unstable_by_key(|s| s.createtxg);
            let mut order: Vec<u32> = (0..d.snapshots.len())
                .filter_map(|i| u32::try_from(i).ok())
                .collect();
            order.sort_unstable_by(|&a, &b| {
                d.snapshots[a as usize]
                    .name
                    .as_str()
                    .cmp(d.snapshots[b as usize].name.as_str())
            });
            self.name_order.push(order);
        }
        self.indexed = true;
    }

    fn snapshot_mut(&mut self, dataset: &str, short: &str) -> Option<&mut SnapshotInfo> {
        self.index();
        let &i = self.by_name.get(dataset)?;
        let order = &self.name_order[i];
        let snapshots = &mut self.datasets[i].snapshots;
        let pos = order
            .binary_search_by(|&p| snapshots[p as usize].name.as_str().cmp(short))
            .ok()?;
        snapshots.get_mut(order[pos] as usize)
    }

    /// Adds one line of the local-owner read ([`cmd::get_local`] of the owner property).
    /// Only a `local` source counts, whatever the command was asked: a line with any other
    /// source is ignored, never a claim.
    pub fn add_local_owner(&mut self, line: &PropertyEntry) {
        if line.source != PropertySource::Local || line.property != OWNER_PROPERTY {
            return;
        }
        let Some(short) = line.name.short_part().filter(|_| line.name.is_snapshot()) else {
            return;
        };
        let Some(owner) = self.owners.owner_from_local_value(&line.value) else {
            return;
        };
        if let Some(s) = self.snapshot_mut(line.name.dataset_part(), short) {
            s.owner = Some(owner);
        }
    }

    /// The snapshots with holds, whose tags [`InventoryBuilder::add_hold`] takes.
    pub fn held_snapshots(&self) -> Vec<SnapshotName> {
        self.datasets
            .iter()
            .flat_map(|d| {
                d.snapshots
                    .iter()
                    .filter(|s| s.held)
                    .filter_map(|s| d.dataset.snapshot(&s.name).ok())
            })
            .collect()
    }

    /// Adds one `zfs holds` line.
    pub fn add_hold(&mut self, hold: &parse::Hold) {
        let Some(short) = hold.snapshot.short_part() else {
            return;
        };
        let dataset = hold.snapshot.dataset_part().to_owned();
        let Some(guid) = self.snapshot_mut(&dataset, short).map(|s| s.guid) else {
            return;
        };
        if let Some(&i) = self.by_name.get(dataset.as_str()) {
            self.datasets[i].holds.push(HoldInfo {
                guid,
                tag: hold.tag.clone(),
            });
        }
    }

    /// The inventories, in listing order (parents before children), and the number of
    /// datasets left out for their names.
    pub fn finish(mut self) -> (Vec<DatasetInventory>, u64) {
        self.index();
        (self.datasets, self.unnamed_datasets)
    }
}

/// The inventories below one root, and how many datasets were left out for their names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventories {
    pub datasets: Vec<DatasetInventory>,
    pub unnamed_datasets: u64,
}

impl<E: Executor> Zfs<E> {
    /// The inventories of `root` and (with [`Depth::Recursive`]) everything below it:
    /// two zfs calls, plus `zfs holds` for held snapshots.
    pub async fn dataset_inventories(
        &self,
        root: &DatasetName,
        depth: Depth,
    ) -> Result<Inventories, InventoryError> {
        self.inventories_of(std::slice::from_ref(root), ObjectTypes::ALL, depth)
            .await
    }

    /// The inventories of several roots read together, with the same two calls (plus
    /// holds) however many roots there are: `zfs list` and `zfs get -s local` each take
    /// all of them. With `types` of snapshots and bookmarks only, a root's own facts
    /// (written, resume token, encryption) are left at their defaults and a root without
    /// any snapshot or bookmark is absent from the answer: what an incremental refresh
    /// wants when it already has the dataset listing.
    pub async fn inventories_of(
        &self,
        roots: &[DatasetName],
        types: ObjectTypes,
        depth: Depth,
    ) -> Result<Inventories, InventoryError> {
        let mut builder = InventoryBuilder::new();
        if roots.is_empty() {
            return Ok(Inventories {
                datasets: Vec::new(),
                unnamed_datasets: 0,
            });
        }
        let mut request = listing_request(&roots[0], depth);
        request.roots = roots.to_vec();
        request.types = types;
        let mut first_error = None;
        self.list_each(&request, |e| {
            if first_error.is_none()
                && let Err(err) = builder.add_entry(&e)
            {
                first_error = Some(err);
            }
        })
        .await?;
        if let Some(err) = first_error {
            return Err(err);
        }
        let owner = owner_property();
        self.run_lines(
            CommandKind::Listing,
            cmd::get_local(&owner, roots, ObjectTypes::SNAPSHOTS, depth),
            parse::parse_get_line,
            |line| builder.add_local_owner(&line),
        )
        .await?;
        for batch in builder.held_snapshots().chunks(HOLDS_BATCH) {
            let holds = match self.holds(batch).await {
                Ok(h) => h,
                // Released and destroyed since the listing: its holds do not matter now.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            for h in &holds {
                builder.add_hold(h);
            }
        }
        let (datasets, unnamed_datasets) = builder.finish();
        Ok(Inventories {
            datasets,
            unnamed_datasets,
        })
    }

    /// `zpool get feature@...`: what the pool can do.
    pub async fn pool_capabilities(
        &self,
        pool: &PoolName,
    ) -> Result<PoolCapabilities, InventoryError> {
        let mut caps = PoolCapabilities::default();
        let mut lines = Vec::with_capacity(POOL_FEATURES.len());
        self.run_lines(
            CommandKind::Query,
            cmd::pool_features(pool, POOL_FEATURES),
            parse::parse_get_line,
            |l| lines.push(l),
        )
        .await?;
        for line in &lines {
            apply_feature_line(&mut caps, line).map_err(|reason| InventoryError::Feature {
                pool: pool.clone(),
                reason,
            })?;
        }
        Ok(caps)
    }

    /// One pool's health, space, capabilities and every dataset in it.
    pub async fn pool_inventory(&self, pool: &PoolName) -> Result<PoolInventory, InventoryError> {
        let entry = self
            .pools(std::slice::from_ref(pool))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| InventoryError::NoSuchPool { pool: pool.clone() })?;
        let capabilities = self.pool_capabilities(pool).await?;
        let root = DatasetName::from(pool.clone());
        let Inventories {
            datasets,
            unnamed_datasets,
        } = self.dataset_inventories(&root, Depth::Recursive).await?;
        Ok(PoolInventory {
            pool: pool.clone(),
            health: entry.health,
            size_bytes: entry.size,
            allocated_bytes: entry.allocated,
            free_bytes: entry.free,
            capabilities,
            datasets,
            unnamed_datasets,
        })
    }

    /// Like [`Self::pool_inventory`], but of `root` and what lies below it only: what a
    /// replication target on a host Tidepool does not manage needs (a pool there may be
    /// large, and the login may see nothing else). An absent `root` has no datasets.
    pub async fn subtree_inventory(
        &self,
        root: &DatasetName,
    ) -> Result<PoolInventory, InventoryError> {
        let pool = root.pool();
        let entry = self
            .pools(std::slice::from_ref(&pool))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| InventoryError::NoSuchPool { pool: pool.clone() })?;
        let capabilities = self.pool_capabilities(&pool).await?;
        let Inventories {
            datasets,
            unnamed_datasets,
        } = match self.dataset_inventories(root, Depth::Recursive).await {
            Err(InventoryError::Zfs(e)) if e.kind() == crate::ErrorKind::NotFound => Inventories {
                datasets: Vec::new(),
                unnamed_datasets: 0,
            },
            other => other?,
        };
        Ok(PoolInventory {
            pool,
            health: entry.health,
            size_bytes: entry.size,
            allocated_bytes: entry.allocated,
            free_bytes: entry.free,
            capabilities,
            datasets,
            unnamed_datasets,
        })
    }

    /// Destroys the snapshots of `req` that, in a fresh read, still have the GUID the
    /// request names and carry the requesting owner **locally**; reports every other one
    /// as refused. What the agent runs for [`DestroySnapshots`].
    pub async fn destroy_owned(
        &self,
        req: &DestroySnapshots,
    ) -> Result<SnapshotsDestroyed, InventoryError> {
        req.check()?;
        let mut by_dataset: Vec<(DatasetName, Vec<&SnapshotRef>)> = Vec::new();
        for s in &req.snapshots {
            let d = s.snapshot.dataset();
            match by_dataset.iter_mut().find(|(ds, _)| *ds == d) {
                Some((_, v)) => v.push(s),
                None => by_dataset.push((d, vec![s])),
            }
        }
        let mut out = SnapshotsDestroyed::default();
        for (dataset, wanted) in by_dataset {
            let fresh = self
                .dataset_inventories(&dataset, Depth::RootsOnly)
                .await?
                .datasets
                .into_iter()
                .find(|d| d.dataset == dataset);
            let mut go: Vec<SnapshotShortName> = Vec::new();
            let mut going: Vec<SnapshotRef> = Vec::new();
            let kept_gone = kept_gone(fresh.as_ref(), &dataset, &req.keeping, &req.owner);
            for s in wanted {
                let short = s.snapshot.short();
                let found = fresh
                    .as_ref()
                    .and_then(|d| d.snapshots.iter().find(|x| x.name == short));
                let refusal = match found {
                    // Checked first: the plan itself no longer holds.
                    _ if let Some(kept) = &kept_gone => {
                        Some(RefusalReason::KeptGone { kept: kept.clone() })
                    }
                    None => Some(RefusalReason::Gone),
                    Some(f) if f.guid != s.guid => {
                        Some(RefusalReason::GuidChanged { found: f.guid })
                    }
                    Some(f) if f.owner.as_ref() != Some(&req.owner) => {
                        Some(RefusalReason::NotOwned {
                            found: f.owner.clone(),
                        })
                    }
                    Some(f) if f.held => Some(RefusalReason::Held),
                    Some(_) => None,
                };
                match refusal {
                    Some(reason) => out.refused.push(RefusedDestroy {
                        snapshot: s.clone(),
                        reason,
                    }),
                    None => {
                        go.push(short);
                        going.push(s.clone());
                    }
                }
            }
            if !go.is_empty() {
                self.destroy_snapshots(&dataset, &go).await?;
                out.destroyed.extend(going);
            }
        }
        Ok(out)
    }
}

/// The first snapshot the caller's plan keeps on `dataset` that a fresh read no longer
/// shows as the owner's with the same GUID: the destroys that plan chose on `dataset` rest
/// on a view that no longer holds (see [`DestroySnapshots::keeping`]).
pub fn kept_gone(
    fresh: Option<&DatasetInventory>,
    dataset: &DatasetName,
    keeping: &[SnapshotRef],
    owner: &Owner,
) -> Option<SnapshotRef> {
    keeping
        .iter()
        .filter(|k| &k.snapshot.dataset() == dataset)
        .find(|k| {
            let short = k.snapshot.short();
            !fresh.is_some_and(|d| {
                d.snapshots
                    .iter()
                    .any(|x| x.name == short && x.guid == k.guid && x.owner.as_ref() == Some(owner))
            })
        })
        .cloned()
}

#[cfg(test)]
mod tests;
