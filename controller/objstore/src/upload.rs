//! Uploading a stream: chunk, checksum, optionally encrypt, manifest last.
//!
//! Memory stays bounded whatever the stream's size: at most `max_in_flight` chunks are
//! buffered for their uploads (chunks larger than [`PART_SIZE`] go up as multipart
//! uploads, `max_in_flight` parts at a time), plus the one being filled.

mod chunker;

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::Error;
use crate::manifest::{Encryption, FORMAT_VERSION, Manifest, SnapshotRef};
use crate::naming::{StreamKey, StreamKind};
use chunker::Chunker;
pub(crate) use chunker::hex;

/// Chunks above this size are uploaded as multipart uploads of parts this large (S3 wants
/// parts of 5 MiB..5 GiB, at most 10 000 of them: 160 GiB, far above [`MAX_CHUNK_SIZE`]).
pub const PART_SIZE: u64 = 16 << 20;
/// The largest chunk (S3's largest single PUT; beyond it a lost chunk costs too much).
pub const MAX_CHUNK_SIZE: u64 = 5 << 30;
/// The smallest chunk (small chunks only make sense in tests).
pub const MIN_CHUNK_SIZE: u64 = 1 << 10;
const READ_BUFFER: usize = 256 << 10;

/// How to upload.
#[derive(Clone)]
pub struct UploadOptions {
    /// Bytes per chunk object ([`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`]).
    pub chunk_size: u64,
    /// Uploads (chunks, or parts of a large chunk) in flight at once, 1..=64.
    pub max_in_flight: usize,
    /// Encrypt to this age recipient (for sources not already sent raw-encrypted).
    pub encrypt_to: Option<age::x25519::Recipient>,
    /// Recorded in the manifest: whose stream it is (only its owner's deletion removes it).
    pub owner: Option<String>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            chunk_size: 64 << 20,
            max_in_flight: 4,
            encrypt_to: None,
            owner: None,
        }
    }
}

impl std::fmt::Debug for UploadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadOptions")
            .field("chunk_size", &self.chunk_size)
            .field("max_in_flight", &self.max_in_flight)
            .field(
                "encrypt_to",
                &self.encrypt_to.as_ref().map(ToString::to_string),
            )
            .field("owner", &self.owner)
            .finish()
    }
}

/// The GUIDs of the stream's snapshot and, for an incremental, of its parent (as
/// `zfs get -Hp guid` prints them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guids {
    pub snapshot: u64,
    pub parent: Option<u64>,
}

/// Uploads the `zfs send` stream read from `source` as `key`, manifest included; returns
/// the manifest. Only for a source whose end of file proves the stream complete: a
/// `zfs send`'s stdout also ends when `zfs send` fails or is killed, so check its exit
/// status between [`stage`] and [`Staged::commit`] instead.
pub async fn upload<R>(
    store: &Arc<dyn ObjectStore>,
    key: &StreamKey,
    guids: Guids,
    source: R,
    options: &UploadOptions,
) -> Result<Manifest, Error>
where
    R: AsyncRead + Unpin,
{
    stage(store, key, guids, source, options)
        .await?
        .commit()
        .await
}

/// Stores every chunk of the stream read from `source`, but not yet its manifest: until
/// [`Staged::commit`], the stream is incomplete and nothing restores or builds on it.
///
/// On failure the chunks already stored are deleted (best effort: a killed process leaves
/// them, and a listing shows them as an incomplete stream). A stream whose manifest
/// already exists is refused, never replaced.
pub async fn stage<R>(
    store: &Arc<dyn ObjectStore>,
    key: &StreamKey,
    guids: Guids,
    source: R,
    options: &UploadOptions,
) -> Result<Staged, Error>
where
    R: AsyncRead + Unpin,
{
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&options.chunk_size) {
        return Err(Error::InvalidOptions("chunk size out of 1 KiB..=5 GiB"));
    }
    if !(1..=64).contains(&options.max_in_flight) {
        return Err(Error::InvalidOptions("max in flight out of 1..=64"));
    }
    let parent = match (&key.name.kind, guids.parent) {
        (StreamKind::Full, None) => None,
        (StreamKind::Incremental { parent }, Some(guid)) => Some(SnapshotRef {
            name: parent.clone(),
            guid,
        }),
        _ => {
            return Err(Error::InvalidOptions(
                "a parent GUID is given exactly for incremental streams",
            ));
        }
    };
    let manifest_path = key.manifest();
    match store.head(&manifest_path).await {
        Ok(_) => {
            return Err(Error::StreamExists {
                stream: key.to_string(),
            });
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(source) => {
            return Err(Error::Store {
                op: "checking",
                object: manifest_path.to_string(),
                source,
            });
        }
    }

    let mut chunks = Chunker::new(store.clone(), key, options);
    let (stream_bytes, encryption) = match pump(&mut chunks, source, options).await {
        Ok(done) => done,
        Err(e) => {
            chunks.abandon().await;
            return Err(e);
        }
    };
    if let Err(e) = chunks.flush().await {
        chunks.abandon().await;
        return Err(e);
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        dataset: key.dataset.clone(),
        snapshot: SnapshotRef {
            name: key.name.snapshot.clone(),
            guid: guids.snapshot,
        },
        parent,
        chunk_size: options.chunk_size,
        stored_bytes: chunks.done.iter().map(|c| c.size).sum(),
        chunks: chunks.done.clone(),
        stream_bytes,
        encryption,
        owner: options.owner.clone(),
    };
    Ok(Staged { chunks, manifest })
}

/// A stream whose chunks are all stored, waiting for its manifest.
#[must_use = "a staged stream is incomplete until committed"]
pub struct Staged {
    chunks: Chunker,
    manifest: Manifest,
}

impl Staged {
    /// The manifest that [`Staged::commit`] writes.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Writes the manifest: from now on the stream is complete.
    pub async fn commit(self) -> Result<Manifest, Error> {
        let path = self.chunks.key.manifest();
        let json =
            serde_json::to_vec_pretty(&self.manifest).map_err(|source| Error::ManifestInvalid {
                object: path.to_string(),
                source,
            })?;
        self.chunks
            .store
            .put(&path, PutPayload::from(json))
            .await
            .map_err(|source| Error::Store {
                op: "writing",
                object: path.to_string(),
                source,
            })?;
        Ok(self.manifest)
    }

    /// Deletes the stored chunks (the producer failed: the stream is not to be trusted).
    pub async fn abandon(self) {
        self.chunks.abandon().await;
    }
}

/// Reads `source` to its end into `chunks`, through age when asked. Returns the bytes read
/// and how they were stored.
async fn pump<R: AsyncRead + Unpin>(
    chunks: &mut Chunker,
    mut source: R,
    options: &UploadOptions,
) -> Result<(u64, Encryption), Error> {
    let mut encryptor = match &options.encrypt_to {
        Some(recipient) => {
            let out = SharedBuf::default();
            let writer =
                age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
                    .map_err(|e| Error::InvalidRecipient(e.to_string()))?
                    .wrap_output(out.clone())
                    .map_err(Error::Encrypt)?;
            Some((writer, out))
        }
        None => None,
    };
    let mut buf = vec![0u8; READ_BUFFER];
    let mut read = 0u64;
    loop {
        let n = source
            .read(&mut buf)
            .await
            .map_err(|source| Error::Source {
                bytes: read,
                source,
            })?;
        if n == 0 {
            break;
        }
        read += n as u64;
        match &mut encryptor {
            Some((writer, out)) => {
                writer.write_all(&buf[..n]).map_err(Error::Encrypt)?;
                chunks.write(&out.take()).await?;
            }
            None => chunks.write(&buf[..n]).await?,
        }
    }
    let encryption = match encryptor {
        Some((writer, out)) => {
            writer.finish().map_err(Error::Encrypt)?;
            chunks.write(&out.take()).await?;
            Encryption::Age {
                recipient: options
                    .encrypt_to
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            }
        }
        None => Encryption::None,
    };
    Ok((read, encryption))
}

/// The age writer's output, drained into chunks after each write.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Write for SharedBuf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
