//! Restoring a stream: manifest, chunks in order, each verified before any of its bytes
//! are written, decrypted when it was encrypted.
//!
//! Bytes reach the writer chunk by chunk, so a corrupt chunk is found after the earlier
//! ones were written: the caller must abort its `zfs receive` when this returns an error
//! (a receive that sees its input end early keeps nothing, unless it was started with `-s`).

use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::Error;
use crate::manifest::{ChunkInfo, Encryption, Manifest};
use crate::naming::StreamKey;
use crate::upload::hex;

/// Chunks fetched ahead of the one being written.
const PREFETCH: usize = 2;

/// Reads and checks `key`'s manifest. [`Error::ManifestMissing`] when there is none: the
/// stream was never uploaded or its upload did not finish.
pub async fn read_manifest(
    store: &Arc<dyn ObjectStore>,
    key: &StreamKey,
) -> Result<Manifest, Error> {
    let path = key.manifest();
    let bytes = match store.get(&path).await {
        Ok(got) => got.bytes().await,
        Err(e) => Err(e),
    };
    let bytes = match bytes {
        Ok(bytes) => bytes,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Error::ManifestMissing {
                stream: key.to_string(),
            });
        }
        Err(source) => {
            return Err(Error::Store {
                op: "reading",
                object: path.to_string(),
                source,
            });
        }
    };
    Manifest::parse(path.as_ref(), &bytes, key)
}

/// Writes stream `key` into `sink` (for example `zfs receive`'s stdin); returns its
/// manifest. An encrypted stream needs `identity` ([`Error::IdentityRequired`] otherwise;
/// nothing is fetched then). `sink` is flushed, not shut down.
pub async fn restore<W>(
    store: &Arc<dyn ObjectStore>,
    key: &StreamKey,
    identity: Option<&age::x25519::Identity>,
    sink: &mut W,
) -> Result<Manifest, Error>
where
    W: AsyncWrite + Unpin,
{
    let manifest = read_manifest(store, key).await?;
    let written = match &manifest.encryption {
        Encryption::None => {
            let mut chunks = verified_chunks(store, key, &manifest);
            let mut written = 0u64;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                sink.write_all(&chunk).await.map_err(Error::Sink)?;
                written += chunk.len() as u64;
            }
            written
        }
        Encryption::Age { recipient } => {
            let Some(identity) = identity else {
                return Err(Error::IdentityRequired {
                    stream: key.to_string(),
                    recipient: recipient.clone(),
                });
            };
            decrypt_into(store, key, &manifest, identity, sink).await?
        }
    };
    sink.flush().await.map_err(Error::Sink)?;
    if written != manifest.stream_bytes {
        return Err(Error::StreamSize {
            stream: key.to_string(),
            expected: manifest.stream_bytes,
            actual: written,
        });
    }
    Ok(manifest)
}

/// Reads stream `key` as [`restore`] does, checking every chunk's size and SHA-256, but
/// writes nothing: how a stream encrypted for an identity the caller lacks is checked.
pub async fn verify(store: &Arc<dyn ObjectStore>, key: &StreamKey) -> Result<Manifest, Error> {
    let manifest = read_manifest(store, key).await?;
    // Each chunk's size is checked, and the manifest's sizes add up to the stored bytes.
    let mut chunks = verified_chunks(store, key, &manifest);
    while let Some(chunk) = chunks.next().await {
        chunk?;
    }
    Ok(manifest)
}

async fn decrypt_into<W: AsyncWrite + Unpin>(
    store: &Arc<dyn ObjectStore>,
    key: &StreamKey,
    manifest: &Manifest,
    identity: &age::x25519::Identity,
    sink: &mut W,
) -> Result<u64, Error> {
    use futures::io::AsyncReadExt;

    // age reads through an io::Error channel; the chunk error itself (naming the object)
    // is kept aside and wins over whatever age makes of the failed read.
    let failed: Arc<Mutex<Option<Error>>> = Arc::default();
    let slot = failed.clone();
    let ciphertext = verified_chunks(store, key, manifest)
        .map_err(move |e| {
            let message = e.to_string();
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            io::Error::other(message)
        })
        .into_async_read();
    let chunk_error =
        |failed: &Mutex<Option<Error>>| failed.lock().unwrap_or_else(|p| p.into_inner()).take();
    let stream = key.to_string();
    let decryptor = match age::Decryptor::new_async(ciphertext).await {
        Ok(d) => d,
        Err(source) => {
            return Err(chunk_error(&failed).unwrap_or(Error::Decrypt { stream, source }));
        }
    };
    let mut plaintext =
        match decryptor.decrypt_async(std::iter::once(identity as &dyn age::Identity)) {
            Ok(reader) => reader,
            Err(source) => {
                return Err(chunk_error(&failed).unwrap_or(Error::Decrypt { stream, source }));
            }
        };
    let mut buf = vec![0u8; 256 << 10];
    let mut written = 0u64;
    loop {
        let n = match plaintext.read(&mut buf).await {
            Ok(n) => n,
            Err(source) => {
                return Err(chunk_error(&failed).unwrap_or(Error::DecryptStream { stream, source }));
            }
        };
        if n == 0 {
            return Ok(written);
        }
        sink.write_all(&buf[..n]).await.map_err(Error::Sink)?;
        written += n as u64;
    }
}

/// The chunks in order, each checked against the manifest, a few fetched ahead.
fn verified_chunks(
    store: &Arc<dyn ObjectStore>,
    key: &StreamKey,
    manifest: &Manifest,
) -> BoxStream<'static, Result<Bytes, Error>> {
    let fetches: Vec<_> = manifest
        .chunks
        .iter()
        .enumerate()
        .map(|(i, info)| fetch_chunk(store.clone(), key.chunk(i + 1), info.clone()))
        .collect();
    stream::iter(fetches).buffered(PREFETCH).boxed()
}

async fn fetch_chunk(
    store: Arc<dyn ObjectStore>,
    path: Path,
    info: ChunkInfo,
) -> Result<Bytes, Error> {
    let store_error = |source| Error::Store {
        op: "reading",
        object: path.to_string(),
        source,
    };
    let bytes = store
        .get(&path)
        .await
        .map_err(store_error)?
        .bytes()
        .await
        .map_err(store_error)?;
    if bytes.len() as u64 != info.size {
        return Err(Error::ChunkSize {
            object: path.to_string(),
            expected: info.size,
            actual: bytes.len() as u64,
        });
    }
    let actual = hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
    if actual != info.sha256 {
        return Err(Error::ChunkChecksum {
            object: path.to_string(),
            expected: info.sha256,
            actual,
        });
    }
    Ok(bytes)
}
