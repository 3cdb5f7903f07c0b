//! Cutting the stored bytes into chunk objects: hashed as they are cut, small chunks put
//! in parallel, large ones streamed as multipart uploads.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutOptions, PutPayload, WriteMultipart};

use super::{PART_SIZE, UploadOptions};
use crate::error::Error;
use crate::manifest::ChunkInfo;
use crate::naming::StreamKey;

type PutFuture = futures::future::BoxFuture<'static, Result<(), Error>>;

/// Cuts the stored bytes into chunk objects and uploads them.
pub(super) struct Chunker {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) key: StreamKey,
    chunk_size: u64,
    max_in_flight: usize,
    /// Finished chunks, in order (their uploads may still be in flight).
    pub(super) done: Vec<ChunkInfo>,
    current: Option<Chunk>,
    in_flight: FuturesUnordered<PutFuture>,
}

struct Chunk {
    path: Path,
    sha256: ring::digest::Context,
    size: u64,
    body: Body,
}

enum Body {
    Buffer(BytesMut),
    Multipart(WriteMultipart),
}

impl Chunker {
    pub(super) fn new(
        store: Arc<dyn ObjectStore>,
        key: &StreamKey,
        options: &UploadOptions,
    ) -> Self {
        Chunker {
            store,
            key: key.clone(),
            chunk_size: options.chunk_size,
            max_in_flight: options.max_in_flight,
            done: Vec::new(),
            current: None,
            in_flight: FuturesUnordered::new(),
        }
    }

    pub(super) async fn write(&mut self, mut data: &[u8]) -> Result<(), Error> {
        while !data.is_empty() {
            let chunk = match &mut self.current {
                Some(chunk) => chunk,
                None => {
                    let chunk = self.start_chunk().await?;
                    self.current.insert(chunk)
                }
            };
            let room = usize::try_from(self.chunk_size - chunk.size).unwrap_or(usize::MAX);
            let (now, rest) = data.split_at(room.min(data.len()));
            chunk.sha256.update(now);
            chunk.size += now.len() as u64;
            match &mut chunk.body {
                Body::Buffer(buf) => buf.extend_from_slice(now),
                Body::Multipart(upload) => {
                    upload
                        .wait_for_capacity(self.max_in_flight)
                        .await
                        .map_err(|source| Error::Store {
                            op: "uploading",
                            object: chunk.path.to_string(),
                            source,
                        })?;
                    upload.write(now);
                }
            }
            data = rest;
            if chunk.size == self.chunk_size {
                self.end_chunk().await?;
            }
        }
        Ok(())
    }

    async fn start_chunk(&mut self) -> Result<Chunk, Error> {
        let path = self.key.chunk(self.done.len() + 1);
        let body = if self.chunk_size <= PART_SIZE {
            Body::Buffer(BytesMut::with_capacity(
                usize::try_from(self.chunk_size).unwrap_or(0),
            ))
        } else {
            let upload = self
                .store
                .put_multipart(&path)
                .await
                .map_err(|source| Error::Store {
                    op: "starting a multipart upload of",
                    object: path.to_string(),
                    source,
                })?;
            Body::Multipart(WriteMultipart::new_with_chunk_size(
                upload,
                PART_SIZE as usize,
            ))
        };
        Ok(Chunk {
            path,
            sha256: ring::digest::Context::new(&ring::digest::SHA256),
            size: 0,
            body,
        })
    }

    async fn end_chunk(&mut self) -> Result<(), Error> {
        let Some(chunk) = self.current.take() else {
            return Ok(());
        };
        self.done.push(ChunkInfo {
            size: chunk.size,
            sha256: hex(chunk.sha256.finish().as_ref()),
        });
        match chunk.body {
            Body::Buffer(buf) => {
                while self.in_flight.len() >= self.max_in_flight {
                    self.wait_one().await?;
                }
                let store = self.store.clone();
                let path = chunk.path;
                let bytes: Bytes = buf.freeze();
                self.in_flight.push(Box::pin(async move {
                    store
                        .put_opts(&path, PutPayload::from(bytes), PutOptions::default())
                        .await
                        .map(drop)
                        .map_err(|source| Error::Store {
                            op: "uploading",
                            object: path.to_string(),
                            source,
                        })
                }));
            }
            Body::Multipart(upload) => {
                upload.finish().await.map_err(|source| Error::Store {
                    op: "completing the multipart upload of",
                    object: chunk.path.to_string(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    async fn wait_one(&mut self) -> Result<(), Error> {
        match self.in_flight.next().await {
            Some(result) => result,
            None => Ok(()),
        }
    }

    /// Ends the last chunk and waits for every upload.
    pub(super) async fn flush(&mut self) -> Result<(), Error> {
        self.end_chunk().await?;
        while !self.in_flight.is_empty() {
            self.wait_one().await?;
        }
        Ok(())
    }

    /// After a failure: stops what is in flight and deletes the chunks stored so far, so
    /// a failed upload leaves as little as it can (never a manifest: none was written).
    pub(super) async fn abandon(mut self) {
        if let Some(Chunk {
            body: Body::Multipart(upload),
            ..
        }) = self.current.take()
        {
            let _ = upload.abort().await;
        }
        // Let the puts in flight end, so none lands after the deletes below.
        while self.in_flight.next().await.is_some() {}
        let started = self.done.len() + 1;
        for index in 1..=started {
            let _ = self.store.delete(&self.key.chunk(index)).await;
        }
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}
