//! The node agent's authenticated transport (layer 4 of DESIGN.md), the layer under its
//! typed operations:
//!
//! - [`tls`]: the agent's self-signed certificate, generated at start, and the client
//!   configuration that trusts exactly its published [`CertificateFingerprint`];
//! - [`auth`]: callers present a projected ServiceAccount token for the agent's audience,
//!   checked by a TokenReview (authenticated, audience, exactly the controller's
//!   ServiceAccount), successful reviews cached briefly;
//! - [`fence`]: every command carries the sender's [`LeaderEpoch`]; older epochs than one
//!   already seen are refused, so a stale leader never acts;
//! - [`roots`]: the admin's dataset roots, checked for every dataset an operation names;
//! - [`server`] and [`client`]: both ends over HTTPS, with [`operation::Ping`] to exercise
//!   the transport alone;
//! - [`transfer`]: replication streams agent to agent, brokered by the controller with
//!   one-time tickets the target mints;
//! - [`remote`]: the same operations, and sends, on a far host over SSH (`ssh` targets);
//! - [`zfs_ops`]: the real operations (`tidepool-wire`'s `TakeSnapshots`,
//!   `DestroySnapshots`, `InventoryRequest`) on the node's pools, with inventories refreshed
//!   by change ([`inventory_cache`]) and every zfs command measured ([`metered`],
//!   [`metrics`]).
#![forbid(unsafe_code)]

pub mod auth;
pub mod bookkeeping;
pub mod client;
pub mod fence;
pub mod fingerprint;
pub mod inventory_cache;
pub mod metered;
pub mod metrics;
pub mod objstore;
pub mod operation;
pub mod remote;
pub mod roots;
pub mod server;
pub mod tls;
mod token_cache;
pub mod transfer;
pub mod zfs_ops;

pub use auth::{AuthConfig, AuthError, Authenticator, DEFAULT_AUDIENCE, ServiceAccountRef};
pub use client::{AgentClient, CallError, ClientSetupError};
pub use fence::{EpochFence, LeaderEpoch, StaleEpoch};
pub use fingerprint::CertificateFingerprint;
pub use metrics::AgentMetrics;
pub use operation::{Command, Operation, Ping, Pong, Refusal, RefusalReason};
pub use roots::{DatasetRoots, OutsideRoots};
pub use server::{AgentConfig, AgentState, CommandRefused, RunningAgent, StartError};
pub use tls::{ServingIdentity, TlsSetupError};
pub use zfs_ops::NodeZfs;
