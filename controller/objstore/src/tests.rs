//! Upload and restore against the in-memory store: the byte-level behaviour (chunk
//! boundaries, the multipart path, encryption, corruption, cuts). The proof on real parts
//! (versitygw, OpenZFS) is `tests/tests/objstore_stream.rs`.

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::chain::chains;
use crate::error::Error;
use crate::list::list_streams;
use crate::manifest::Encryption;
use crate::naming::{Prefix, StreamKey, StreamKind, StreamName};
use crate::restore::{read_manifest, restore};
use crate::upload::{Guids, MIN_CHUNK_SIZE, PART_SIZE, UploadOptions, stage, upload};

fn key(snapshot: &str) -> StreamKey {
    StreamKey {
        prefix: Prefix::new("t").expect("valid"),
        dataset: "tank/a".parse().expect("valid"),
        name: StreamName::new(
            "2026-01-01T00:00:00Z".parse().expect("valid"),
            snapshot.parse().expect("valid"),
            StreamKind::Full,
        )
        .expect("valid"),
    }
}

const GUIDS: Guids = Guids {
    snapshot: 42,
    parent: None,
};

/// Deterministic, incompressible-looking bytes.
fn data(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn store() -> Arc<dyn ObjectStore> {
    Arc::new(InMemory::new())
}

fn options(chunk_size: u64) -> UploadOptions {
    UploadOptions {
        chunk_size,
        max_in_flight: 2,
        encrypt_to: None,
        owner: None,
    }
}

async fn restored(
    store: &Arc<dyn ObjectStore>,
    key: &StreamKey,
    identity: Option<&age::x25519::Identity>,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    restore(store, key, identity, &mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn round_trips_at_every_chunk_boundary() {
    let chunk = MIN_CHUNK_SIZE as usize;
    for len in [0, 1, chunk - 1, chunk, chunk + 1, 5 * chunk, 5 * chunk + 3] {
        let store = store();
        let k = key("s");
        let bytes = data(len);
        let manifest = upload(&store, &k, GUIDS, &bytes[..], &options(chunk as u64))
            .await
            .expect("uploads");
        assert_eq!(manifest.chunks.len(), len.div_ceil(chunk), "{len}");
        assert_eq!(manifest.stream_bytes, len as u64);
        assert_eq!(manifest.encryption, Encryption::None);
        assert_eq!(
            restored(&store, &k, None).await.expect("restores"),
            bytes,
            "{len}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_above_the_part_size_go_up_as_multipart() {
    let store = store();
    let k = key("big");
    let chunk = PART_SIZE + (1 << 20);
    let bytes = data(2 * chunk as usize + 5);
    let manifest = upload(&store, &k, GUIDS, &bytes[..], &options(chunk))
        .await
        .expect("uploads");
    assert_eq!(manifest.chunks.len(), 3);
    let head = store.head(&k.chunk(1)).await.expect("chunk 1 exists");
    assert_eq!(head.size, chunk);
    assert_eq!(restored(&store, &k, None).await.expect("restores"), bytes);
}

#[tokio::test]
async fn encrypted_streams_need_their_identity() {
    let store = store();
    let k = key("enc");
    let identity = age::x25519::Identity::generate();
    let bytes = data(10_000);
    let opts = UploadOptions {
        encrypt_to: Some(identity.to_public()),
        ..options(MIN_CHUNK_SIZE)
    };
    let manifest = upload(&store, &k, GUIDS, &bytes[..], &opts)
        .await
        .expect("uploads");
    assert!(manifest.stored_bytes > manifest.stream_bytes);
    assert_eq!(
        manifest.encryption,
        Encryption::Age {
            recipient: identity.to_public().to_string()
        }
    );
    assert_eq!(
        restored(&store, &k, Some(&identity))
            .await
            .expect("restores"),
        bytes
    );
    assert!(matches!(
        restored(&store, &k, None).await,
        Err(Error::IdentityRequired { .. })
    ));
    let other = age::x25519::Identity::generate();
    assert!(matches!(
        restored(&store, &k, Some(&other)).await,
        Err(Error::Decrypt { .. })
    ));
}

#[tokio::test]
async fn a_corrupt_or_missing_chunk_is_named() {
    for encrypted in [false, true] {
        let store = store();
        let k = key("c");
        let identity = age::x25519::Identity::generate();
        let opts = UploadOptions {
            encrypt_to: encrypted.then(|| identity.to_public()),
            ..options(MIN_CHUNK_SIZE)
        };
        upload(&store, &k, GUIDS, &data(8_000)[..], &opts)
            .await
            .expect("uploads");
        let victim = k.chunk(4);
        let mut bytes = store
            .get(&victim)
            .await
            .expect("chunk 4")
            .bytes()
            .await
            .expect("reads")
            .to_vec();
        bytes[7] ^= 1;
        store
            .put(&victim, PutPayload::from(bytes))
            .await
            .expect("overwrites");
        match restored(&store, &k, Some(&identity)).await {
            Err(Error::ChunkChecksum { object, .. }) => assert_eq!(object, victim.to_string()),
            other => panic!("encrypted={encrypted}: {other:?}"),
        }
        store.delete(&victim).await.expect("deletes");
        match restored(&store, &k, Some(&identity)).await {
            Err(e @ Error::Store { .. }) => assert!(e.to_string().contains(victim.as_ref())),
            other => panic!("encrypted={encrypted}: {other:?}"),
        }
    }
}

/// Fails after `limit` bytes.
struct Failing {
    data: Vec<u8>,
    at: usize,
    limit: usize,
}

impl tokio::io::AsyncRead for Failing {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at >= self.limit {
            return std::task::Poll::Ready(Err(std::io::Error::other("cut")));
        }
        let n = (self.limit - self.at).min(buf.remaining()).min(3000);
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_cut_upload_leaves_nothing_and_staging_writes_no_manifest() {
    let store = store();
    let k = key("cut");
    let source = Failing {
        data: data(20_000),
        at: 0,
        limit: 9_000,
    };
    match upload(&store, &k, GUIDS, source, &options(MIN_CHUNK_SIZE)).await {
        Err(Error::Source { bytes: 9_000, .. }) => {}
        other => panic!("{other:?}"),
    }
    let prefix = Prefix::new("t").expect("valid");
    let dataset = "tank/a".parse().expect("valid");
    assert!(
        list_streams(&store, &prefix, &dataset)
            .await
            .expect("lists")
            .is_empty()
    );

    let staged = stage(
        &store,
        &k,
        GUIDS,
        &data(5_000)[..],
        &options(MIN_CHUNK_SIZE),
    )
    .await
    .expect("stages");
    assert!(matches!(
        read_manifest(&store, &k).await,
        Err(Error::ManifestMissing { .. })
    ));
    let listing = list_streams(&store, &prefix, &dataset)
        .await
        .expect("lists");
    assert_eq!(listing.len(), 1);
    assert!(!listing[0].complete);
    assert!(chains(&listing).chains.is_empty());
    staged.commit().await.expect("commits");
    let listing = list_streams(&store, &prefix, &dataset)
        .await
        .expect("lists");
    assert!(listing[0].complete);
    assert!(matches!(
        upload(&store, &k, GUIDS, &b"again"[..], &options(MIN_CHUNK_SIZE)).await,
        Err(Error::StreamExists { .. })
    ));
}

#[tokio::test]
async fn bad_options_and_guids_are_refused() {
    let store = store();
    let k = key("o");
    for (opts, guids) in [
        (options(MIN_CHUNK_SIZE - 1), GUIDS),
        (
            UploadOptions {
                max_in_flight: 0,
                ..options(MIN_CHUNK_SIZE)
            },
            GUIDS,
        ),
        (
            options(MIN_CHUNK_SIZE),
            Guids {
                snapshot: 1,
                parent: Some(2),
            },
        ),
    ] {
        assert!(matches!(
            upload(&store, &k, guids, &b"x"[..], &opts).await,
            Err(Error::InvalidOptions(_))
        ));
    }
}

#[test]
fn an_https_client_builds_with_ring() {
    let config = crate::S3Config {
        endpoint: "https://s3.example.invalid".to_owned(),
        bucket: "b".to_owned(),
        region: "us-east-1".to_owned(),
        access_key_id: "a".to_owned(),
        secret_access_key: "s".to_owned(),
        allow_http: false,
    };
    assert!(config.connect().is_ok());
    assert!(rustls::crypto::CryptoProvider::get_default().is_some());
}
