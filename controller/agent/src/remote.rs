//! Operations on a far host over SSH (`tidepool_wire::ssh`): the source agent runs the
//! typed operations it runs on its own pools against the far host's pool, through a
//! [`tidepool_zfs::SshExecutor`], with the far host's root ([`SshAccess::root`]) in place
//! of its own dataset roots. The same checks run (request shape, GUIDs, ownership), and
//! the same code: a [`NodeZfs`] whose executor is SSH.
//!
//! The login arrives with each call and lives in a private directory ([`LoginFiles`]) for
//! that call only.

pub(crate) mod send;

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::{Json, extract::State};
use ring::rand::{SecureRandom, SystemRandom};
use tidepool_api::names::DatasetName;
use tidepool_wire::operation::{InventoryAnswer, InventoryGeneration, OperationError, Response};
use tidepool_wire::ssh::{RemoteOperation, RemoteRequest, SshAccess};
use tidepool_zfs::{ErrorKind, SshDestination, SshExecutor};

use crate::operation::Operation;
use crate::roots::DatasetRoots;
use crate::server::{AgentState, CommandRefused, Fenced};
use crate::zfs_ops::{NodeZfs, to_completion};

impl Operation for RemoteRequest {
    const PATH: &'static str = "/v1/remote";
    type Output = Response;
}

/// The `ssh` client: `TIDEPOOL_SSH_PROGRAM`, else `ssh` from `PATH`.
fn ssh_program() -> String {
    std::env::var("TIDEPOOL_SSH_PROGRAM").unwrap_or_else(|_| "ssh".to_owned())
}

/// Seconds to wait for the far host to answer a connection.
const CONNECT_TIMEOUT_SECONDS: u16 = 15;

/// The far host's side of one call: its zfs through SSH, and its root.
pub(crate) struct Remote {
    pub zfs: NodeZfs,
    pub roots: DatasetRoots,
    /// Kept until the call ends: the login's files go with it.
    _files: LoginFiles,
}

impl Remote {
    /// Checks the login and writes its files; no connection is made yet.
    pub(crate) fn open(state: &AgentState, via: &SshAccess) -> Result<Remote, String> {
        via.check()?;
        let files = LoginFiles::write(via).map_err(|e| format!("writing the SSH login: {e}"))?;
        let exec = SshExecutor::new(
            ssh_program(),
            SshDestination {
                host: via.host.clone(),
                port: via.port,
                user: via.user.clone(),
                identity_file: files.key(),
                known_hosts_file: files.known_hosts(),
                connect_timeout_seconds: CONNECT_TIMEOUT_SECONDS,
                control_path: Some(files.control_socket()),
            },
        );
        let metrics = state
            .zfs()
            .map(|z| z.metrics().clone())
            .ok_or("this agent serves no pools")?;
        Ok(Remote {
            zfs: NodeZfs::new(
                Arc::new(exec),
                metrics,
                vec![via.root.pool()],
                false,
                std::time::Duration::ZERO,
            ),
            roots: DatasetRoots::new([via.root.clone()]),
            _files: files,
        })
    }

    pub(crate) fn check(&self, dataset: &DatasetName) -> Result<(), CommandRefused> {
        Ok(self.roots.check(dataset)?)
    }
}

pub(crate) async fn remote(
    State(state): State<Arc<AgentState>>,
    Fenced(op): Fenced<RemoteRequest>,
) -> Result<Json<Response>, CommandRefused> {
    let remote = match Remote::open(&state, &op.via) {
        Ok(r) => r,
        Err(message) => return Ok(Json(invalid(message))),
    };
    match &op.operation {
        RemoteOperation::Inventory(req) => {
            if req.pool != op.via.root.pool() {
                return Ok(Json(invalid(format!(
                    "the inventory of pool {} was asked through a login for {}",
                    req.pool, op.via.root
                ))));
            }
        }
        RemoteOperation::Bookkeeping(b) => {
            for d in b.actions.iter().flat_map(|a| a.datasets()) {
                remote.check(&d)?;
            }
        }
        RemoteOperation::DestroySnapshots(d) => {
            for s in &d.snapshots {
                remote.check(&s.snapshot.dataset())?;
            }
        }
    }
    let root = op.via.root.clone();
    Ok(Json(
        to_completion(async move {
            match &op.operation {
                RemoteOperation::Inventory(_) => remote.inventory(&root).await,
                RemoteOperation::Bookkeeping(b) => remote.zfs.bookkeep(b).await,
                RemoteOperation::DestroySnapshots(d) => remote.zfs.destroy(d).await,
            }
        })
        .await,
    ))
}

impl Remote {
    /// The subtree of the root, read afresh on every call (nothing is cached for a far
    /// host: another machine may change it at any time).
    async fn inventory(&self, root: &DatasetName) -> Response {
        match self.zfs.zfs().subtree_inventory(root).await {
            Ok(inventory) => Response::Inventory(InventoryAnswer::Full {
                generation: InventoryGeneration(0),
                inventory,
            }),
            Err(tidepool_zfs::InventoryError::Zfs(e)) => self.zfs.zfs_failed(&e),
            Err(e) => Response::Failed(OperationError::Zfs {
                kind: ErrorKind::Parse.as_str().to_owned(),
                message: e.to_string(),
            }),
        }
    }
}

fn invalid(message: String) -> Response {
    Response::Failed(OperationError::Zfs {
        kind: ErrorKind::InvalidRequest.as_str().to_owned(),
        message,
    })
}

/// A private directory (0700) with the key and `known_hosts` (0600), removed on drop.
pub(crate) struct LoginFiles {
    dir: PathBuf,
}

impl LoginFiles {
    fn write(via: &SshAccess) -> std::io::Result<LoginFiles> {
        let mut random = [0u8; 12];
        SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| std::io::Error::other("the system's random generator failed"))?;
        let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("tidepool-ssh-{name}"));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let files = LoginFiles { dir };
        let mut key = via.private_key.reveal().to_owned();
        // OpenSSH refuses a key file whose last line has no newline.
        if !key.ends_with('\n') {
            key.push('\n');
        }
        write_private(&files.key(), key.as_bytes())?;
        write_private(&files.known_hosts(), via.known_hosts.as_bytes())?;
        Ok(files)
    }

    fn key(&self) -> PathBuf {
        self.dir.join("id")
    }

    fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// The shared connection of this call's commands.
    fn control_socket(&self) -> PathBuf {
        self.dir.join("cm")
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

impl Drop for LoginFiles {
    fn drop(&mut self) {
        // The shared connection's socket goes with the directory; its process, idle,
        // exits within `CONTROL_PERSIST_SECONDS`.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
