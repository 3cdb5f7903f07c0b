//! The agent's real operations ([`tidepool_wire::operation`]) on its node's pools. Each
//! handler runs after authentication and the epoch fence, checks every dataset it names
//! against the dataset roots (a refusal: nothing runs), re-validates what the request
//! carries before any argv is built, and answers with the wire [`Response`].

use std::collections::HashSet;
use std::sync::Arc;

use axum::{Json, extract::State};
use jiff::Timestamp;
use tidepool_api::OWNER_PROPERTY;
use tidepool_api::names::{DatasetName, PoolName, SnapshotName};
use tidepool_lzc::{Lzc, LzcError};
use tidepool_wire::operation::{
    DestroySnapshots, InventoryAnswer, InventoryRequest, OperationError, RequestError, Response,
    SetCreated, SnapshotRef, SnapshotsTaken, TakeSnapshots,
};
use tidepool_zfs::{
    ErrorKind, Executor, InventoryError, PropertyName, PropertyValue, Zfs, ZfsError,
};
use tokio::sync::Mutex;

use crate::inventory_cache::InventoryCache;
use crate::metered::MeteredExecutor;
use crate::metrics::AgentMetrics;
use crate::operation::Operation;
use crate::roots::DatasetRoots;
use crate::server::{AgentState, CommandRefused, Fenced};

impl Operation for TakeSnapshots {
    const PATH: &'static str = "/v1/snapshots/take";
    type Output = Response;
}

impl Operation for DestroySnapshots {
    const PATH: &'static str = "/v1/snapshots/destroy";
    type Output = Response;
}

impl Operation for InventoryRequest {
    const PATH: &'static str = "/v1/inventory";
    type Output = Response;
}

/// The node's zfs side: the measured zfs layer, the pools the agent serves, and the last
/// inventory of each.
#[derive(Debug)]
pub struct NodeZfs {
    zfs: Zfs<MeteredExecutor>,
    metrics: AgentMetrics,
    pools: Vec<PoolName>,
    cache: Mutex<InventoryCache>,
    /// Datasets whose snapshots the agent changed itself, for the next inventory. Apart
    /// from the cache so that a snapshot never waits for a long listing to mark them.
    dirty: std::sync::Mutex<HashSet<DatasetName>>,
    /// Snapshots by libzfs_core's ioctl from this process, when loaded (see
    /// [`NodeZfs::with_ioctl_snapshots`]); `zfs snapshot` otherwise.
    lzc: Option<Arc<Lzc>>,
}

impl NodeZfs {
    /// `exec` runs zfs/zpool (measured into `metrics`); `incremental` when OpenZFS has
    /// `snapshots_changed` (≥ 2.2).
    pub fn new(
        exec: Arc<dyn Executor>,
        metrics: AgentMetrics,
        pools: Vec<PoolName>,
        incremental: bool,
        full_every: std::time::Duration,
    ) -> Self {
        Self {
            zfs: Zfs::new(MeteredExecutor::new(exec, metrics.clone())),
            metrics,
            pools,
            cache: Mutex::new(InventoryCache::new(incremental, full_every)),
            dirty: std::sync::Mutex::new(HashSet::new()),
            lzc: None,
        }
    }

    /// Takes snapshots through `lzc` (the same atomic `lzc_snapshot` that `zfs snapshot`
    /// makes, without starting a process), measured as the `lzc snapshot` command.
    pub fn with_ioctl_snapshots(mut self, lzc: Arc<Lzc>) -> Self {
        self.lzc = Some(lzc);
        self
    }

    pub fn zfs(&self) -> &Zfs<MeteredExecutor> {
        &self.zfs
    }

    pub fn metrics(&self) -> &AgentMetrics {
        &self.metrics
    }

    pub fn pools(&self) -> &[PoolName] {
        &self.pools
    }

    fn dirty(&self) -> std::sync::MutexGuard<'_, HashSet<DatasetName>> {
        // The set stays valid whatever a panicking holder did: it only ever grows or drains.
        self.dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn mark_dirty(&self, datasets: impl IntoIterator<Item = DatasetName>) {
        self.dirty().extend(datasets);
    }

    pub(crate) fn zfs_failed(&self, e: &ZfsError) -> Response {
        let kind = e.kind().as_str();
        self.metrics.zfs_errors.with_label_values(&[kind]).inc();
        Response::Failed(OperationError::Zfs {
            kind: kind.to_owned(),
            message: e.to_string(),
        })
    }

    fn inventory_failed(&self, e: InventoryError) -> Response {
        let kind = match &e {
            InventoryError::Zfs(z) => return self.zfs_failed(z),
            InventoryError::Request(r) => {
                return Response::Failed(OperationError::InvalidRequest(r.clone()));
            }
            InventoryError::NoSuchPool { .. } => ErrorKind::NotFound,
            InventoryError::Entry { .. } | InventoryError::Feature { .. } => ErrorKind::Parse,
        };
        self.metrics
            .zfs_errors
            .with_label_values(&[kind.as_str()])
            .inc();
        Response::Failed(OperationError::Zfs {
            kind: kind.as_str().to_owned(),
            message: e.to_string(),
        })
    }

    /// One atomic `zfs snapshot -o tidepool.dev:owner=<owner> a@s b@s ...`, then the GUIDs
    /// read back.
    pub async fn take(&self, op: &TakeSnapshots) -> Response {
        if let Err(e) = op.check() {
            return Response::Failed(OperationError::InvalidRequest(e));
        }
        let invalid = |message: String| {
            Response::Failed(OperationError::Zfs {
                kind: ErrorKind::InvalidRequest.as_str().to_owned(),
                message,
            })
        };
        // Again here, whatever the decoder checked: the owner becomes an argv value.
        let owner = match op.owner.as_str().parse::<PropertyValue>() {
            Ok(v) if !v.as_str().is_empty() => v,
            Ok(_) => return invalid("the owner is empty".to_owned()),
            Err(e) => return invalid(format!("owner: {e}")),
        };
        let snapshots = match op.snapshots() {
            Ok(s) => s,
            Err(e) => return invalid(e.to_string()),
        };
        let owner_property: PropertyName = match OWNER_PROPERTY.parse() {
            Ok(p) => p,
            Err(e) => return invalid(e.to_string()),
        };
        let properties = [(owner_property, owner)];
        let started = Timestamp::now();
        let taken = match &self.lzc {
            Some(lzc) => self.snapshot_by_ioctl(lzc, &snapshots, &properties).await,
            None => {
                (self.zfs.snapshot(&snapshots, &properties).await).map_err(|e| self.zfs_failed(&e))
            }
        };
        // Lateness ends when the snapshot exists, before the GUID read-back: the clock is
        // read at this edge, the moment the snapshot call returned.
        let done = Timestamp::now();
        self.mark_dirty(op.datasets.iter().cloned());
        if let Err(failed) = taken {
            return failed;
        }
        if let Some(slot) = op.slot {
            self.metrics.snapshot_done(slot, started, done);
        }
        match self.read_back(&snapshots).await {
            Ok((refs, created)) => Response::SnapshotsTaken(SnapshotsTaken {
                snapshots: refs,
                created: Some(created),
            }),
            Err(message) => Response::Failed(OperationError::Unknown { message }),
        }
    }

    /// One `lzc_snapshot` off the async runtime (it blocks until its txg syncs), measured
    /// and its failure classified like a `zfs snapshot`'s.
    async fn snapshot_by_ioctl(
        &self,
        lzc: &Arc<Lzc>,
        snapshots: &[SnapshotName],
        properties: &[(PropertyName, PropertyValue)],
    ) -> Result<(), Response> {
        let timer = self
            .metrics
            .zfs_command_seconds
            .with_label_values(&[IOCTL_SNAPSHOT])
            .start_timer();
        let (lzc, snaps, props) = (lzc.clone(), snapshots.to_vec(), properties.to_vec());
        let result = tokio::task::spawn_blocking(move || lzc.snapshot(&snaps, &props)).await;
        timer.observe_duration();
        let error = match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(join) => LzcError::Unavailable(format!("the snapshot task failed: {join}")),
        };
        let kind = ioctl_error_kind(&error).as_str();
        self.metrics.zfs_errors.with_label_values(&[kind]).inc();
        Err(Response::Failed(OperationError::Zfs {
            kind: kind.to_owned(),
            message: error.to_string(),
        }))
    }

    /// The new snapshots' GUIDs, and the set's `createtxg` and `creation`, in one `zfs get`.
    async fn read_back(
        &self,
        snapshots: &[SnapshotName],
    ) -> Result<(Vec<SnapshotRef>, SetCreated), String> {
        let props: Vec<PropertyName> = ["guid", "createtxg", "creation"]
            .iter()
            .map(|p| p.parse().map_err(|e| format!("{e}")))
            .collect::<Result<_, _>>()?;
        let entries = self
            .zfs
            .get(&props, snapshots)
            .await
            .map_err(|e| format!("reading the new snapshots back: {e}"))?;
        let number = |s: &SnapshotName, property: &str| {
            entries
                .iter()
                .find(|e| e.name == s.as_str() && e.property == property)
                .and_then(|e| e.value_opt()?.parse::<u64>().ok())
                .ok_or_else(|| format!("no {property} read back for {s}"))
        };
        let refs = snapshots
            .iter()
            .map(|s| {
                Ok(SnapshotRef {
                    snapshot: s.clone(),
                    guid: number(s, "guid")?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let first = snapshots.first().ok_or("no snapshot was asked for")?;
        let creation = i64::try_from(number(first, "creation")?)
            .ok()
            .and_then(|secs| Timestamp::from_second(secs).ok())
            .ok_or_else(|| format!("creation of {first} is out of range"))?;
        let created = SetCreated {
            createtxg: number(first, "createtxg")?,
            creation,
        };
        Ok((refs, created))
    }

    /// Destroys only what is still the owner's (see `Zfs::destroy_owned`).
    pub async fn destroy(&self, op: &DestroySnapshots) -> Response {
        let destroyed = self.zfs.destroy_owned(op).await;
        self.mark_dirty(op.snapshots.iter().map(|s| s.snapshot.dataset()));
        match destroyed {
            Ok(d) => Response::SnapshotsDestroyed(d),
            Err(e) => self.inventory_failed(e),
        }
    }

    /// The pool's inventory as of `now`, limited to the datasets inside `roots`.
    pub async fn inventory(
        &self,
        req: &InventoryRequest,
        roots: &DatasetRoots,
        now: Timestamp,
    ) -> Response {
        if !self.pools.contains(&req.pool) {
            return Response::Failed(OperationError::InvalidRequest(RequestError::UnknownPool {
                pool: req.pool.clone(),
            }));
        }
        let mut cache = self.cache.lock().await;
        // Taken once the cache is ours: marks made during this refresh wait for the next.
        let dirty: HashSet<DatasetName> = {
            let mut all = self.dirty();
            let (mine, rest) = all.drain().partition(|d| d.pool() == req.pool);
            *all = rest;
            mine
        };
        let answered = cache
            .answer(&self.zfs, &self.metrics, &req.pool, req.since, &dirty, now)
            .await;
        drop(cache);
        if answered.is_err() {
            self.mark_dirty(dirty);
        }
        match answered {
            Ok((
                InventoryAnswer::Full {
                    generation,
                    mut inventory,
                },
                _,
            )) => {
                inventory
                    .datasets
                    .retain(|d| roots.check(&d.dataset).is_ok());
                Response::Inventory(InventoryAnswer::Full {
                    generation,
                    inventory,
                })
            }
            Ok((unchanged, _)) => Response::Inventory(unchanged),
            Err(e) => self.inventory_failed(e),
        }
    }
}

/// The metric label of a snapshot taken by ioctl.
pub const IOCTL_SNAPSHOT: &str = "lzc snapshot";

/// A failed `lzc_snapshot` in the kinds a failed `zfs snapshot` is classified into.
fn ioctl_error_kind(e: &LzcError) -> ErrorKind {
    // Linux errno values (asm-generic/errno-base.h, errno.h).
    match e.errno() {
        Some(17) => ErrorKind::AlreadyExists,
        Some(2) => ErrorKind::NotFound,
        Some(28 | 122) => ErrorKind::OutOfSpace,
        Some(1 | 13) => ErrorKind::PermissionDenied,
        Some(16) => ErrorKind::Busy,
        Some(95) => ErrorKind::Unsupported,
        Some(_) => ErrorKind::Other,
        None if matches!(e, LzcError::Empty) => ErrorKind::InvalidRequest,
        None => ErrorKind::Io,
    }
}

pub(crate) fn node(state: &AgentState) -> Result<&Arc<NodeZfs>, CommandRefused> {
    state.zfs().ok_or(CommandRefused::NoZfs)
}

/// Runs a change to ZFS in a task of its own, so it finishes even when the caller hangs up
/// (a timeout, a crash): cancelled half way, a prune would leave part of its snapshots and
/// every retry would have more to do.
pub(crate) async fn to_completion<Fut>(work: Fut) -> Response
where
    Fut: Future<Output = Response> + Send + 'static,
{
    tokio::spawn(work).await.unwrap_or_else(|e| {
        Response::Failed(OperationError::Unknown {
            message: format!("the operation's task ended: {e}"),
        })
    })
}

pub(crate) async fn take_snapshots(
    State(state): State<Arc<AgentState>>,
    Fenced(op): Fenced<TakeSnapshots>,
) -> Result<Json<Response>, CommandRefused> {
    for d in &op.datasets {
        state.check_dataset(d)?;
    }
    let zfs = node(&state)?.clone();
    Ok(Json(
        to_completion(async move { zfs.take(&op).await }).await,
    ))
}

pub(crate) async fn destroy_snapshots(
    State(state): State<Arc<AgentState>>,
    Fenced(op): Fenced<DestroySnapshots>,
) -> Result<Json<Response>, CommandRefused> {
    for s in &op.snapshots {
        state.check_dataset(&s.snapshot.dataset())?;
    }
    let zfs = node(&state)?.clone();
    Ok(Json(
        to_completion(async move { zfs.destroy(&op).await }).await,
    ))
}

pub(crate) async fn inventory(
    State(state): State<Arc<AgentState>>,
    Fenced(req): Fenced<InventoryRequest>,
) -> Result<Json<Response>, CommandRefused> {
    // The clock is read here, at the edge.
    let now = Timestamp::now();
    Ok(Json(
        node(&state)?.inventory(&req, state.roots(), now).await,
    ))
}
