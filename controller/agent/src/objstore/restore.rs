//! Rebuilding a dataset from an object-store chain: the streams from the chain's full to
//! the snapshot asked for, each fetched with every chunk checked against its manifest
//! (`tidepool_objstore::restore`) and written into `zfs receive`, each received
//! snapshot's GUID compared with its manifest. Shared by `tidepool restore --from-store`
//! (into a new dataset) and the agent's restore drill (into a marked scratch dataset).
//! Never into an existing dataset: a full stream would need `receive -F`.

use std::sync::Arc;

use object_store::ObjectStore;
use tidepool_api::{DatasetName, SnapshotShortName};
use tidepool_objstore::naming::{Prefix, StreamKey, StreamName};
use tidepool_objstore::{chain, list, restore};
use tidepool_zfs::{ErrorKind, Executor, PropertyName, ReceiveOptions, Scratch, Zfs, ZfsError};

/// Which stored chain to restore.
pub struct StoredChain<'a> {
    pub store: &'a Arc<dyn ObjectStore>,
    pub prefix: &'a Prefix,
    /// The source dataset the streams were sent from.
    pub dataset: &'a DatasetName,
    /// Restore up to this snapshot; the newest stored one when `None`.
    pub snapshot: Option<&'a SnapshotShortName>,
}

/// Where the chain lands.
pub enum Destination<'a> {
    /// A dataset that must not exist yet.
    New(&'a DatasetName),
    /// A drill's scratch dataset, marked as it is received.
    Scratch(&'a Scratch),
}

impl Destination<'_> {
    fn dataset(&self) -> &DatasetName {
        match self {
            Destination::New(d) => d,
            Destination::Scratch(s) => s.dataset(),
        }
    }
}

/// What was restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The streams received, full first.
    pub streams: Vec<String>,
    pub snapshot: SnapshotShortName,
    pub guid: u64,
    /// Stream bytes received.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the store holds no complete stream of {dataset}")]
    NothingStored { dataset: DatasetName },
    #[error("the store holds no restorable chain of {dataset} ending at {snapshot}")]
    NoChain {
        dataset: DatasetName,
        snapshot: SnapshotShortName,
    },
    #[error("{dataset} exists; a restore goes into a new dataset only")]
    Exists { dataset: DatasetName },
    #[error(transparent)]
    Store(#[from] tidepool_objstore::Error),
    #[error("receiving {stream}: {source}")]
    Receive {
        stream: String,
        #[source]
        source: ZfsError,
    },
    #[error("{snapshot} was received with guid {received}, its manifest says {stored}")]
    GuidMismatch {
        snapshot: String,
        received: String,
        stored: u64,
    },
    #[error(transparent)]
    Zfs(#[from] ZfsError),
    #[error(transparent)]
    Name(#[from] tidepool_api::NameError),
}

/// The streams to restore, full first, and the snapshot they end at.
pub async fn restore_path(
    chain: &StoredChain<'_>,
) -> Result<(Vec<StreamName>, SnapshotShortName), RestoreError> {
    let listing = list::list_streams(chain.store, chain.prefix, chain.dataset).await?;
    let chains = chain::chains(&listing);
    let snapshot = match chain.snapshot {
        Some(s) => s.clone(),
        None => chains
            .chains
            .last()
            .map(|c| c.newest().snapshot.clone())
            .ok_or_else(|| RestoreError::NothingStored {
                dataset: chain.dataset.clone(),
            })?,
    };
    let path = chain::restore_path(&chains, &snapshot).ok_or_else(|| RestoreError::NoChain {
        dataset: chain.dataset.clone(),
        snapshot: snapshot.clone(),
    })?;
    Ok((path, snapshot))
}

impl StoredChain<'_> {
    pub fn key(&self, name: &StreamName) -> StreamKey {
        StreamKey {
            prefix: self.prefix.clone(),
            dataset: self.dataset.clone(),
            name: name.clone(),
        }
    }
}

/// Receives `path` (from [`restore_path`]) into `into`, which must not exist. A failed
/// stream's receive is killed, so it keeps nothing of that stream; streams received
/// before it stay (the caller decides: a drill destroys its scratch).
pub async fn restore_chain<E: Executor>(
    zfs: &Zfs<E>,
    chain: &StoredChain<'_>,
    path: &[StreamName],
    identity: Option<&age::x25519::Identity>,
    into: &Destination<'_>,
) -> Result<Restored, RestoreError> {
    let guid: PropertyName = "guid"
        .parse()
        .unwrap_or_else(|_| unreachable!("guid is a property name"));
    let target = into.dataset();
    match zfs.get_one(&guid, target).await {
        Ok(_) => {
            return Err(RestoreError::Exists {
                dataset: target.clone(),
            });
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let mut restored = Restored {
        streams: Vec::new(),
        snapshot: path.last().map(|s| s.snapshot.clone()).ok_or_else(|| {
            RestoreError::NothingStored {
                dataset: chain.dataset.clone(),
            }
        })?,
        guid: 0,
        bytes: 0,
    };
    for name in path {
        let key = chain.key(name);
        let stream = key.to_string();
        let mut sink = match into {
            Destination::New(d) => {
                zfs.receive(&ReceiveOptions::new((*d).clone()).not_resumable())
                    .await
            }
            Destination::Scratch(s) => zfs.receive_scratch(s).await,
        }
        .map_err(|source| RestoreError::Receive {
            stream: stream.clone(),
            source,
        })?;
        let manifest = match restore::restore(chain.store, &key, identity, &mut sink).await {
            Ok(m) => m,
            Err(e) => {
                // Killed before its end: a receive without -s keeps nothing of it.
                sink.abort().await;
                return Err(e.into());
            }
        };
        restored.bytes += sink
            .finish()
            .await
            .map_err(|source| RestoreError::Receive {
                stream: stream.clone(),
                source,
            })?;
        let snapshot = target.snapshot(&name.snapshot)?;
        let received = zfs.get_one(&guid, &snapshot).await?.unwrap_or_default();
        if received != manifest.snapshot.guid.to_string() {
            return Err(RestoreError::GuidMismatch {
                snapshot: snapshot.to_string(),
                received,
                stored: manifest.snapshot.guid,
            });
        }
        restored.guid = manifest.snapshot.guid;
        restored.streams.push(name.dir_name());
    }
    Ok(restored)
}
