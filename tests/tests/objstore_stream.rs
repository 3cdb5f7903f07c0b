//! Object-store streams on real parts: `zfs send` in the OpenZFS VM, through
//! tidepool-objstore on the host, into a real S3-compatible server (versitygw), and back
//! through `zfs receive -u` into a new dataset. One VM for the binary, a pool and a server
//! per scenario.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tidepool_api::{DatasetName, SnapshotShortName};
use tidepool_objstore::chain::{self, ChainPolicy, FullEvery, IncrementalBase, NextStream};
use tidepool_objstore::{
    Error, Guids, Manifest, Prefix, StreamKey, StreamKind, StreamName, UploadOptions, list,
    restore, upload,
};
use tidepool_tests::s3_server::ObjectStoreServer;
use tidepool_tests::zfs_vm::ZfsVm;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Small chunks, so every stream here has several.
const CHUNK: u64 = 256 << 10;
/// Repeated in a file so a test can look for plaintext in the stored objects.
const MARKER: &str = "tidepool-plaintext-marker;";

struct Scenario {
    vm: &'static ZfsVm,
    server: ObjectStoreServer,
    store: Arc<dyn ObjectStore>,
    prefix: Prefix,
    pool: String,
    started: Instant,
}

impl Scenario {
    async fn new(name: &str) -> Result<Self> {
        let started = Instant::now();
        let vm = ZfsVm::shared().await?;
        let server = ObjectStoreServer::start().await?;
        let store = server.s3().connect()?;
        let pool = vm.unique_pool_name("os");
        vm.create_pool(&pool, 256 << 20).await?;
        vm.exec_ok(["zfs", "create", &format!("{pool}/src")])
            .await?;
        eprintln!(
            "{name}: VM, versitygw and pool {pool} ready in {:.1?}",
            started.elapsed()
        );
        Ok(Scenario {
            vm,
            server,
            store,
            prefix: Prefix::new(&format!("tidepool/{name}"))?,
            pool,
            started,
        })
    }

    fn src(&self) -> DatasetName {
        ds(&format!("{}/src", self.pool))
    }

    fn restored(&self) -> DatasetName {
        ds(&format!("{}/restored", self.pool))
    }

    /// Writes `kib` KiB of random data to `/<pool>/src/<file>`.
    async fn fill(&self, file: &str, kib: u32) -> Result<()> {
        let of = format!("of=/{}/src/{file}", self.pool);
        let count = format!("count={kib}");
        self.vm
            .exec_ok(["dd", "if=/dev/urandom", &of, "bs=1k", &count, "status=none"])
            .await?;
        Ok(())
    }

    /// Writes a file of [`MARKER`]s (about 256 KiB).
    async fn fill_marker(&self, file: &str) -> Result<()> {
        let text = MARKER.repeat(10_000);
        self.vm
            .command(["tee", &format!("/{}/src/{file}", self.pool)])
            .output_with_stdin(text.as_bytes())
            .await?
            .check(&["tee".to_owned()])?;
        Ok(())
    }

    async fn snapshot(&self, short: &str) -> Result<()> {
        self.vm
            .exec_ok(["zfs", "snapshot", &format!("{}@{short}", self.src())])
            .await?;
        Ok(())
    }

    async fn get(&self, dataset: &DatasetName, short: &str, prop: &str) -> Result<String> {
        let snap = format!("{dataset}@{short}");
        Ok(self
            .vm
            .exec_ok(["zfs", "get", "-Hp", "-o", "value", prop, &snap])
            .await?
            .trim()
            .to_owned())
    }

    async fn guid(&self, dataset: &DatasetName, short: &str) -> Result<u64> {
        Ok(self.get(dataset, short, "guid").await?.parse()?)
    }

    /// The key of `short`'s stream (full, or incremental from `parent`).
    async fn key(&self, short: &str, parent: Option<&str>) -> Result<StreamKey> {
        let created: i64 = self.get(&self.src(), short, "creation").await?.parse()?;
        let kind = match parent {
            None => StreamKind::Full,
            Some(p) => StreamKind::Incremental { parent: snap(p) },
        };
        Ok(StreamKey {
            prefix: self.prefix.clone(),
            dataset: self.src(),
            name: StreamName::new(jiff::Timestamp::from_second(created)?, snap(short), kind)?,
        })
    }

    /// `zfs send [-i parent] src@short` into the store; the manifest is written only
    /// once `zfs send` exited 0.
    async fn send(&self, key: &StreamKey, options: &UploadOptions) -> Result<Manifest> {
        let mut argv = vec!["zfs".to_owned(), "send".to_owned()];
        let parent_guid = match key.name.parent() {
            Some(parent) => {
                argv.extend(["-i".to_owned(), format!("@{parent}")]);
                Some(self.guid(&self.src(), parent.as_str()).await?)
            }
            None => None,
        };
        argv.push(format!("{}@{}", self.src(), key.name.snapshot));
        let guids = Guids {
            snapshot: self.guid(&self.src(), key.name.snapshot.as_str()).await?,
            parent: parent_guid,
        };
        let mut child = self.vm.spawn(argv.clone()).await?;
        let stdout = child.stdout.take().context("stdout")?;
        let staged = upload::stage(&self.store, key, guids, stdout, options).await;
        let status = child.wait().await?;
        let staged = staged?;
        if !status.success() {
            staged.abandon().await;
            bail!("{argv:?} failed: {status:?}");
        }
        Ok(staged.commit().await?)
    }

    /// Restores `key` into `target` with `zfs receive -u`; on a restore error the receive
    /// is killed (it never sees the end of the stream).
    async fn receive(
        &self,
        key: &StreamKey,
        target: &DatasetName,
        identity: Option<&age::x25519::Identity>,
    ) -> Result<std::result::Result<Manifest, Error>> {
        let mut child = self
            .vm
            .spawn(["zfs", "receive", "-u", target.as_str()])
            .await?;
        let mut stdin = child.stdin.take().context("stdin")?;
        match restore::restore(&self.store, key, identity, &mut stdin).await {
            Ok(manifest) => {
                drop(stdin);
                let out = child.wait_with_output().await?;
                out.check(&["zfs".to_owned(), "receive".to_owned()])?;
                Ok(Ok(manifest))
            }
            Err(e) => {
                child.kill().await?;
                Ok(Err(e))
            }
        }
    }

    async fn exists(&self, dataset: &DatasetName) -> Result<bool> {
        Ok(self
            .vm
            .exec(["zfs", "list", "-H", "-o", "name", dataset.as_str()])
            .await?
            .status
            .success())
    }

    /// `sha256sum` of `files` in the mounted `dataset`.
    async fn checksums(&self, dataset: &DatasetName, files: &[&str]) -> Result<String> {
        let mounted = self
            .vm
            .exec_ok([
                "zfs",
                "get",
                "-H",
                "-o",
                "value",
                "mounted",
                dataset.as_str(),
            ])
            .await?;
        if mounted.trim() != "yes" {
            self.vm.exec_ok(["zfs", "mount", dataset.as_str()]).await?;
        }
        let mut argv = vec!["sha256sum".to_owned()];
        argv.extend(files.iter().map(|f| (*f).to_owned()));
        self.vm
            .command(argv)
            .current_dir(format!("/{dataset}"))
            .output_ok()
            .await
    }

    /// The bytes of every stored chunk of `key`, concatenated in order.
    fn stored_chunks(&self, key: &StreamKey, manifest: &Manifest) -> Result<Vec<u8>> {
        let mut all = Vec::new();
        for i in 1..=manifest.chunks.len() {
            let file = self.server.bucket_dir().join(key.chunk(i).as_ref());
            all.extend(std::fs::read(&file).with_context(|| format!("{}", file.display()))?);
        }
        Ok(all)
    }

    async fn finish(self, name: &str) -> Result<()> {
        self.vm.destroy_pool(&self.pool).await?;
        eprintln!("{name}: done in {:.1?}", self.started.elapsed());
        Ok(())
    }
}

fn ds(s: &str) -> DatasetName {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn snap(s: &str) -> SnapshotShortName {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn options() -> UploadOptions {
    UploadOptions {
        chunk_size: CHUNK,
        max_in_flight: 3,
        encrypt_to: None,
        owner: None,
    }
}

fn ok<T>(result: Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e:#}"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_incremental_restore_into_a_new_dataset() {
    ok(full_and_incremental().await);
}

async fn full_and_incremental() -> Result<()> {
    let s = Scenario::new("chain").await?;
    s.fill("a", 1536).await?;
    s.fill_marker("marker").await?;
    s.snapshot("s1").await?;
    s.fill("b", 512).await?;
    s.snapshot("s2").await?;

    let full = s.key("s1", None).await?;
    let inc = s.key("s2", Some("s1")).await?;
    let t = Instant::now();
    let m1 = s.send(&full, &options()).await?;
    let m2 = s.send(&inc, &options()).await?;
    eprintln!(
        "chain: uploaded {} + {} bytes in {} + {} chunks in {:.1?}",
        m1.stored_bytes,
        m2.stored_bytes,
        m1.chunks.len(),
        m2.chunks.len(),
        t.elapsed()
    );
    assert!(m1.chunks.len() >= 6, "{m1:?}");
    assert!(m2.chunks.len() >= 2, "{m2:?}");
    assert_eq!(m2.parent.as_ref().map(|p| p.guid), Some(m1.snapshot.guid));
    // Unencrypted, the stored bytes are the stream itself.
    assert!(contains(&s.stored_chunks(&full, &m1)?, MARKER.as_bytes()));
    // A complete stream is never replaced.
    let again = upload::stage(
        &s.store,
        &full,
        Guids {
            snapshot: 1,
            parent: None,
        },
        &b"x"[..],
        &options(),
    )
    .await;
    assert!(
        matches!(again, Err(Error::StreamExists { .. })),
        "{:?}",
        again.err()
    );

    // The listing alone says what to restore, and what comes next.
    let listing = list::list_streams(&s.store, &s.prefix, &s.src()).await?;
    let chains = chain::chains(&listing);
    assert_eq!(chains.chains.len(), 1, "{chains:?}");
    let path = chain::restore_path(&chains, &snap("s2")).context("no restore path to s2")?;
    assert_eq!(path, vec![full.name.clone(), inc.name.clone()]);
    let policy = ChainPolicy {
        full_every: FullEvery::Streams(std::num::NonZeroUsize::new(3).context("3")?),
        incremental_from: IncrementalBase::LastFull,
    };
    assert_eq!(
        chain::next_stream(&chains, &policy, jiff::Timestamp::now()),
        NextStream::Incremental { parent: snap("s1") }
    );

    let t = Instant::now();
    for name in path {
        let key = StreamKey {
            name,
            ..full.clone()
        };
        s.receive(&key, &s.restored(), None).await??;
    }
    eprintln!("chain: restored both streams in {:.1?}", t.elapsed());
    for short in ["s1", "s2"] {
        assert_eq!(
            s.guid(&s.restored(), short).await?,
            s.guid(&s.src(), short).await?,
            "{short}"
        );
    }
    let files = ["a", "b", "marker"];
    assert_eq!(
        s.checksums(&s.restored(), &files).await?,
        s.checksums(&s.src(), &files).await?
    );
    s.finish("chain").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_chain_restores_only_with_its_identity() {
    ok(encrypted().await);
}

async fn encrypted() -> Result<()> {
    let s = Scenario::new("age").await?;
    s.fill("a", 768).await?;
    s.fill_marker("marker").await?;
    s.snapshot("s1").await?;
    s.fill("b", 256).await?;
    s.snapshot("s2").await?;
    let identity = age::x25519::Identity::generate();
    let options = UploadOptions {
        encrypt_to: Some(identity.to_public()),
        ..options()
    };
    let full = s.key("s1", None).await?;
    let inc = s.key("s2", Some("s1")).await?;
    let m1 = s.send(&full, &options).await?;
    s.send(&inc, &options).await?;
    assert!(m1.chunks.len() >= 4, "{m1:?}");

    // Stored: one age file in chunks, no plaintext; `cat chunk-* | age -d` gives the stream.
    let stored = s.stored_chunks(&full, &m1)?;
    assert!(!contains(&stored, MARKER.as_bytes()));
    let mut plain = Vec::new();
    {
        use std::io::Read;
        age::Decryptor::new(&stored[..])?
            .decrypt(std::iter::once(&identity as &dyn age::Identity))?
            .read_to_end(&mut plain)?;
    }
    assert_eq!(plain.len() as u64, m1.stream_bytes);
    assert!(contains(&plain, MARKER.as_bytes()));
    // By hand, as a person would: Debian's age CLI, then zfs receive.
    let by_hand = age_cli_decrypt(&identity, stored).await?;
    assert!(by_hand == plain, "age -d gave other bytes");
    let manual = ds(&format!("{}/by-hand", s.pool));
    s.vm.command(["zfs", "receive", "-u", manual.as_str()])
        .output_with_stdin(&by_hand)
        .await?
        .check(&["zfs".to_owned(), "receive".to_owned()])?;
    assert_eq!(s.guid(&manual, "s1").await?, m1.snapshot.guid);

    // Without the identity, or with another one: refused, nothing received.
    match s.receive(&full, &s.restored(), None).await? {
        Err(Error::IdentityRequired { recipient, .. }) => {
            assert_eq!(recipient, identity.to_public().to_string());
        }
        other => bail!("expected IdentityRequired, got {other:?}"),
    }
    let stranger = age::x25519::Identity::generate();
    match s.receive(&full, &s.restored(), Some(&stranger)).await? {
        Err(e @ Error::Decrypt { .. }) => eprintln!("age: a stranger's identity: {e}"),
        other => bail!("expected a decryption failure, got {other:?}"),
    }
    assert!(!s.exists(&s.restored()).await?);

    for key in [&full, &inc] {
        s.receive(key, &s.restored(), Some(&identity)).await??;
    }
    for short in ["s1", "s2"] {
        assert_eq!(
            s.guid(&s.restored(), short).await?,
            s.guid(&s.src(), short).await?
        );
    }
    let files = ["a", "b", "marker"];
    assert_eq!(
        s.checksums(&s.restored(), &files).await?,
        s.checksums(&s.src(), &files).await?
    );
    s.finish("age").await
}

/// `age -d -i <identity file>` on `ciphertext` (Debian's age, installed by
/// tests/object-store/build.sh).
async fn age_cli_decrypt(identity: &age::x25519::Identity, ciphertext: Vec<u8>) -> Result<Vec<u8>> {
    use age::secrecy::ExposeSecret;
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("key.txt");
    std::fs::write(&key, format!("{}\n", identity.to_string().expose_secret()))?;
    let mut child = tokio::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running the age CLI (tests/object-store/build.sh installs it)")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let writer = tokio::spawn(async move { stdin.write_all(&ciphertext).await });
    let out = child.wait_with_output().await?;
    writer.await??;
    if !out.status.success() {
        bail!(
            "age -d failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_chunk_is_named_and_nothing_is_received() {
    ok(corrupt().await);
}

async fn corrupt() -> Result<()> {
    let s = Scenario::new("corrupt").await?;
    s.fill("a", 1536).await?;
    s.snapshot("s1").await?;
    let full = s.key("s1", None).await?;
    let manifest = s.send(&full, &options()).await?;
    assert!(manifest.chunks.len() >= 5);

    // Overwrite chunk 3 through the store with same-sized, different bytes.
    let victim = full.chunk(3);
    let mut bytes = s.store.get(&victim).await?.bytes().await?.to_vec();
    bytes[1000] ^= 0x5a;
    s.store.put(&victim, PutPayload::from(bytes)).await?;

    match s.receive(&full, &s.restored(), None).await? {
        Err(e @ Error::ChunkChecksum { .. }) => {
            let message = e.to_string();
            assert!(message.contains(victim.as_ref()), "{message}");
            eprintln!("corrupt: {message}");
        }
        other => bail!("expected a checksum error, got {other:?}"),
    }
    assert!(
        !s.exists(&s.restored()).await?,
        "a partial receive was kept"
    );
    s.finish("corrupt").await
}

/// Yields `limit` bytes of `inner`, then fails.
struct FailAfter<R> {
    inner: R,
    limit: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for FailAfter<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.limit == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("source failed half way")));
        }
        let room = usize::try_from(self.limit)
            .unwrap_or(usize::MAX)
            .min(buf.remaining());
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(room));
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        if polled.is_ready() {
            buf.advance(n);
            self.limit -= n as u64;
        }
        polled
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_upload_leaves_no_manifest() {
    ok(cut().await);
}

async fn cut() -> Result<()> {
    let s = Scenario::new("cut").await?;
    s.fill("a", 1536).await?;
    s.snapshot("s1").await?;
    let full = s.key("s1", None).await?;
    let guids = Guids {
        snapshot: s.guid(&s.src(), "s1").await?,
        parent: None,
    };
    let send = [
        "zfs".to_owned(),
        "send".to_owned(),
        format!("{}@s1", s.src()),
    ];

    // The source fails half way: an error, and the chunks stored so far are gone.
    let mut child = s.vm.spawn(send.clone()).await?;
    let stdout = child.stdout.take().context("stdout")?;
    let source = FailAfter {
        inner: stdout,
        limit: 3 * CHUNK,
    };
    match upload::upload(&s.store, &full, guids, source, &options()).await {
        Err(Error::Source { bytes, .. }) => assert_eq!(bytes, 3 * CHUNK),
        other => bail!("expected a source error, got {other:?}"),
    }
    child.kill().await?;
    assert!(
        list::list_streams(&s.store, &s.prefix, &s.src())
            .await?
            .is_empty()
    );
    assert!(matches!(
        restore::read_manifest(&s.store, &full).await,
        Err(Error::ManifestMissing { .. })
    ));

    // `zfs send` killed half way: its stdout just ends. The chunks are staged, the listing
    // shows an incomplete stream, and the failed exit status means no manifest.
    let mut child = s.vm.spawn(send.clone()).await?;
    let stdout = child.stdout.take().context("stdout")?;
    let staged = upload::stage(
        &s.store,
        &full,
        guids,
        stdout.take(3 * CHUNK + 7),
        &options(),
    )
    .await?;
    let status = child.kill().await?;
    assert!(!status.success());
    let listing = list::list_streams(&s.store, &s.prefix, &s.src()).await?;
    assert_eq!(listing.len(), 1);
    assert!(!listing[0].complete);
    assert_eq!(chain::chains(&listing).chains.len(), 0);
    assert!(matches!(
        restore::read_manifest(&s.store, &full).await,
        Err(Error::ManifestMissing { .. })
    ));
    staged.abandon().await;
    assert!(
        list::list_streams(&s.store, &s.prefix, &s.src())
            .await?
            .is_empty()
    );

    // The same stream uploads whole afterwards and restores.
    s.send(&full, &options()).await?;
    s.receive(&full, &s.restored(), None).await??;
    assert_eq!(s.guid(&s.restored(), "s1").await?, guids.snapshot);
    s.finish("cut").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_only_chains_nothing_needs() {
    ok(retention().await);
}

async fn retention() -> Result<()> {
    let s = Scenario::new("retention").await?;
    let policy = ChainPolicy {
        full_every: FullEvery::Streams(std::num::NonZeroUsize::new(2).context("2")?),
        incremental_from: IncrementalBase::LastFull,
    };
    for i in 1..=5 {
        s.fill(&format!("f{i}"), 64).await?;
        let short = format!("s{i}");
        s.snapshot(&short).await?;
        let listing = list::list_streams(&s.store, &s.prefix, &s.src()).await?;
        let next = chain::next_stream(&chain::chains(&listing), &policy, jiff::Timestamp::now());
        let key = match &next {
            NextStream::Full(_) => s.key(&short, None).await?,
            NextStream::Incremental { parent } => s.key(&short, Some(parent.as_str())).await?,
        };
        s.send(&key, &options()).await?;
    }
    let chains_of = |listing: &[chain::ListedStream]| -> Vec<Vec<String>> {
        chain::chains(listing)
            .chains
            .iter()
            .map(|c| c.streams.iter().map(|n| n.snapshot.to_string()).collect())
            .collect()
    };
    let listing = list::list_streams(&s.store, &s.prefix, &s.src()).await?;
    assert_eq!(
        chains_of(&listing),
        [vec!["s1", "s2"], vec!["s3", "s4"], vec!["s5"]]
    );

    let keep = std::num::NonZeroUsize::new(2).context("2")?;
    let expired = chain::expired(&chain::chains(&listing), keep);
    let expired_names: Vec<String> = expired.iter().map(|n| n.snapshot.to_string()).collect();
    assert_eq!(expired_names, ["s1", "s2"]);
    for name in expired {
        let key = StreamKey {
            prefix: s.prefix.clone(),
            dataset: s.src(),
            name,
        };
        list::delete_stream(&s.store, &key).await?;
    }
    let listing = list::list_streams(&s.store, &s.prefix, &s.src()).await?;
    assert_eq!(chains_of(&listing), [vec!["s3", "s4"], vec!["s5"]]);
    // No object of the deleted chain is left behind.
    let left: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(s.store.list(None)).await?;
    assert!(
        left.iter().all(|o| !o.location.as_ref().contains("-s1-") && !o.location.as_ref().contains("-s2-")),
        "{left:?}"
    );

    // What is kept still restores: s4 needs s3's full.
    let chains = chain::chains(&listing);
    for name in chain::restore_path(&chains, &snap("s4")).context("no path to s4")? {
        let key = StreamKey {
            prefix: s.prefix.clone(),
            dataset: s.src(),
            name,
        };
        s.receive(&key, &s.restored(), None).await??;
    }
    assert_eq!(
        s.guid(&s.restored(), "s4").await?,
        s.guid(&s.src(), "s4").await?
    );
    s.finish("retention").await
}

/// Chunks above the part size go up as multipart uploads (no VM: host bytes into the real
/// server and back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_chunks_go_up_as_multipart_uploads() {
    ok(multipart().await);
}

async fn multipart() -> Result<()> {
    let started = Instant::now();
    let server = ObjectStoreServer::start().await?;
    let store = server.s3().connect()?;
    let key = StreamKey {
        prefix: Prefix::new("tidepool/multipart")?,
        dataset: ds("tank/big"),
        name: StreamName::new(jiff::Timestamp::now(), snap("s1"), StreamKind::Full)?,
    };
    let chunk = upload::PART_SIZE + (4 << 20);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let bytes: Vec<u8> = (0..(2 * chunk + (5 << 20)))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let options = UploadOptions {
        chunk_size: chunk,
        max_in_flight: 2,
        encrypt_to: None,
        owner: None,
    };
    let guids = Guids {
        snapshot: 7,
        parent: None,
    };
    let manifest = upload::upload(&store, &key, guids, &bytes[..], &options).await?;
    let sizes: Vec<u64> = manifest.chunks.iter().map(|c| c.size).collect();
    assert_eq!(sizes, [chunk, chunk, 5 << 20]);
    for (i, size) in sizes.iter().enumerate() {
        let head = store.head(&key.chunk(i + 1)).await?;
        assert_eq!(head.size, *size);
        // A multipart object's ETag ends in -<parts>: two parts (16 MiB + 4 MiB) for the
        // chunks above the part size, one for the small last chunk.
        let parts = if *size > upload::PART_SIZE {
            "-2"
        } else {
            "-1"
        };
        let etag = head.e_tag.unwrap_or_default();
        assert!(
            etag.trim_matches('"').ends_with(parts),
            "chunk {}: {etag}",
            i + 1
        );
    }
    let mut back = Vec::new();
    restore::restore(&store, &key, None, &mut back).await?;
    assert!(back == bytes, "the restored bytes differ");
    eprintln!(
        "multipart: {} MiB up and back in {:.1?}",
        bytes.len() >> 20,
        started.elapsed()
    );
    Ok(())
}
