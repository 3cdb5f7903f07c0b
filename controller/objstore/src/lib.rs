//! ZFS send streams in an object store (an `objectStore` replication target).
//!
//! - [`naming`]: keys that sort by time and name the parent, so a listing is the index.
//! - [`manifest`]: what a stream is (GUIDs, parent, chunk sizes and SHA-256s, encryption),
//!   written after the last chunk.
//! - [`upload`]: any `AsyncRead` (a `zfs send`'s stdout) into chunk objects, in parallel,
//!   with bounded memory; age-encrypted (the whole stream, then chunked) when asked.
//! - [`restore`]: chunks verified in order into any `AsyncWrite` (a `zfs receive`'s
//!   stdin), decrypted with an age identity when encrypted.
//! - [`chain`]: chains, the next stream's kind, retention: pure functions over a listing.
//! - [`list`]: the listing itself, and deleting whole streams.
//! - [`store`]: an S3-compatible bucket as an [`object_store::ObjectStore`].
//!
//! An encrypted stream is one age file cut into chunks: `cat chunk-* | age -d -i KEY |
//! zfs receive` restores it by hand.

#![forbid(unsafe_code)]

pub mod chain;
pub mod error;
pub mod list;
pub mod manifest;
pub mod naming;
pub mod restore;
pub mod store;
pub mod upload;

pub use chain::{ChainPolicy, Chains, FullEvery, IncrementalBase, ListedStream, NextStream};
pub use error::{Damage, Error};
pub use manifest::{Encryption, Manifest};
pub use naming::{Prefix, StreamKey, StreamKind, StreamName};
pub use store::S3Config;
pub use upload::{Guids, Staged, UploadOptions};

#[cfg(test)]
mod tests;
