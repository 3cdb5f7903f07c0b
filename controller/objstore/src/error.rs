//! One error type for the crate. Every variant that concerns an object names it.

use std::io;

/// What went wrong with a stream in an object store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("invalid upload options: {0}")]
    InvalidOptions(&'static str),
    #[error("invalid age recipient: {0}")]
    InvalidRecipient(String),
    #[error("object-store client for {endpoint}: {source}")]
    Client {
        endpoint: String,
        #[source]
        source: object_store::Error,
    },
    #[error("stream {stream} is already complete in the store; it is never replaced")]
    StreamExists { stream: String },
    #[error("reading the stream to upload failed after {bytes} bytes: {source}")]
    Source {
        bytes: u64,
        #[source]
        source: io::Error,
    },
    #[error("encrypting the stream: {0}")]
    Encrypt(#[source] io::Error),
    #[error("{op} {object}: {source}")]
    Store {
        op: &'static str,
        object: String,
        #[source]
        source: object_store::Error,
    },
    #[error("stream {stream} has no manifest (never uploaded, or the upload did not finish)")]
    ManifestMissing { stream: String },
    #[error("manifest {object} is not valid: {source}")]
    ManifestInvalid {
        object: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("manifest {object} has format version {found}; this version reads {supported}")]
    UnsupportedFormat {
        object: String,
        found: u32,
        supported: u32,
    },
    #[error("manifest {object} does not match its key: {reason}")]
    ManifestMismatch { object: String, reason: String },
    #[error("chunk {object} is {actual} bytes, the manifest says {expected}")]
    ChunkSize {
        object: String,
        expected: u64,
        actual: u64,
    },
    #[error("chunk {object} is corrupt: sha256 {actual}, the manifest says {expected}")]
    ChunkChecksum {
        object: String,
        expected: String,
        actual: String,
    },
    #[error(
        "stream {stream} is encrypted for {recipient}: an age identity is needed to restore it"
    )]
    IdentityRequired { stream: String, recipient: String },
    #[error("decrypting stream {stream}: {source}")]
    Decrypt {
        stream: String,
        #[source]
        source: age::DecryptError,
    },
    #[error("decrypting stream {stream}: {source}")]
    DecryptStream {
        stream: String,
        #[source]
        source: io::Error,
    },
    #[error("stream {stream} restored to {actual} bytes, its manifest says {expected}")]
    StreamSize {
        stream: String,
        expected: u64,
        actual: u64,
    },
    #[error("writing the restored stream failed: {0}")]
    Sink(#[source] io::Error),
}

/// What an error says about the stored stream itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// An object the stream needs is not in the store.
    Missing,
    /// An object is there but not what its manifest says.
    Corrupt,
    /// Nothing is known to be wrong with the stream (the store could not be reached, the
    /// writer failed, the request was invalid).
    None,
}

impl Error {
    /// Whether the stream in the store is damaged, and how.
    pub fn damage(&self) -> Damage {
        match self {
            Error::ManifestMissing { .. } => Damage::Missing,
            Error::Store {
                source: object_store::Error::NotFound { .. },
                ..
            } => Damage::Missing,
            Error::ManifestInvalid { .. }
            | Error::ManifestMismatch { .. }
            | Error::ChunkSize { .. }
            | Error::ChunkChecksum { .. }
            | Error::Decrypt { .. }
            | Error::DecryptStream { .. }
            | Error::StreamSize { .. } => Damage::Corrupt,
            _ => Damage::None,
        }
    }

    /// The object the error concerns, when it names one.
    pub fn object(&self) -> Option<&str> {
        match self {
            Error::Store { object, .. }
            | Error::ManifestInvalid { object, .. }
            | Error::UnsupportedFormat { object, .. }
            | Error::ManifestMismatch { object, .. }
            | Error::ChunkSize { object, .. }
            | Error::ChunkChecksum { object, .. } => Some(object),
            _ => None,
        }
    }
}
