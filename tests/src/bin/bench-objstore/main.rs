//! Issue 12's object-store benchmark, on real parts: versitygw (built by
//! `tests/object-store/build.sh`) on the host's loopback, OpenZFS 2.3 in the TCG VM.
//!
//! The stream: one full `zfs send` of a dataset filled from `/dev/urandom` (compression
//! off), written to a file in the guest (`/var/tmp`, the guest's own disk) and copied to a
//! host file through the exec channel. Every row moves exactly those bytes.
//!
//! 1. Upload, on the host, from the host file (in the page cache after the copy), to the
//!    same versitygw: tidepool-objstore's `upload` (stage + commit, default options:
//!    64 MiB chunks, 4 in flight, each chunk a multipart upload of 16 MiB parts, SHA-256 per
//!    chunk, manifest last), plain and age-encrypted; against `curl --aws-sigv4 -T` (one
//!    PUT of the whole file) and object_store's own `put_multipart` of the whole file
//!    (16 MiB parts, 4 in flight, no chunking, no manifest). Timed from opening the file
//!    to the last response.
//! 2. Restore into `zfs receive -u` of a new dataset, the received copy destroyed (and its
//!    space freed) before each run, its GUID checked after each:
//!    - in the guest, where an agent would run it (this binary's guest side, started from
//!      the host share): `zfs receive -u < local file` against tidepool-objstore's restore
//!      from versitygw, reached at 10.0.2.2 through qemu's user networking, plain and age;
//!      timed in the guest (see `guest.rs`);
//!    - on the host, into the guest's `zfs receive -u` through the harness's exec channel
//!      (as `tests/tests/objstore_stream.rs` restores): the host file piped through the
//!      channel against tidepool-objstore's restore through it; timed on the host from
//!      spawning the receive to its exit.
//!
//! Rows alternate within each run.
//!
//! ```text
//! cargo run --release -p tidepool-tests --bin bench-objstore -- [--mib 256] [--runs 3]
//! ```

mod guest;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tidepool_api::DatasetName;
use tidepool_objstore::upload::PART_SIZE;
use tidepool_objstore::{
    Guids, Prefix, StreamKey, StreamKind, StreamName, UploadOptions, restore, upload,
};
use tidepool_tests::s3_server::ObjectStoreServer;
use tidepool_tests::zfs_vm::ZfsVm;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Args {
    mib: u64,
    runs: usize,
}

fn args(argv: &[String]) -> Result<Args> {
    let mut a = Args { mib: 256, runs: 3 };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let value: u64 = it
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} takes a whole number"))?;
        match flag.as_str() {
            "--mib" => a.mib = value.max(1),
            "--runs" => a.runs = usize::try_from(value)?.max(1),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn mib_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / took.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// One row of the table: a label and its MiB/s per run.
struct Row {
    label: &'static str,
    runs: Vec<f64>,
}

impl Row {
    fn new(label: &'static str) -> Self {
        Row {
            label,
            runs: Vec::new(),
        }
    }

    fn best(&self) -> f64 {
        best(&self.runs)
    }

    fn median(&self) -> f64 {
        median(self.runs.clone())
    }

    fn print(&self) {
        println!(
            "{:<66} {:>6.1} MiB/s {:>6.1} MiB/s",
            self.label,
            self.best(),
            self.median()
        );
    }
}

fn print_ratio(label: &str, num: &Row, den: &Row) {
    println!(
        "{:<66} {:>10.3}x {:>10.3}x",
        label,
        num.best() / den.best(),
        num.median() / den.median()
    );
}

/// What the bench needs of the guest.
struct Guest<'a> {
    vm: &'a ZfsVm,
    /// This binary as the guest sees it (through the host share).
    helper: String,
}

impl Guest<'_> {
    async fn sh(&self, argv: &[&str]) -> Result<String> {
        self.vm.exec_ok(argv.iter().copied()).await
    }

    async fn get(&self, property: &str, dataset: &str) -> Result<String> {
        Ok(self
            .sh(&["zfs", "get", "-H", "-p", "-o", "value", property, dataset])
            .await?
            .trim()
            .to_owned())
    }

    /// Runs this binary's guest side; returns what it printed.
    async fn helper(&self, args: &[&str], env: Option<(&str, &str)>) -> Result<String> {
        let mut command = self.vm.command([self.helper.as_str(), guest::MODE]);
        command.args(args.iter().copied());
        if let Some((k, v)) = env {
            command.env(k, v);
        }
        command.output_ok().await
    }

    /// The guest side's own timing of a receive.
    async fn timed_helper(&self, args: &[&str], env: Option<(&str, &str)>) -> Result<Duration> {
        let nanos: u64 = self.helper(args, env).await?.trim().parse()?;
        Ok(Duration::from_nanos(nanos))
    }

    /// Destroys `dataset` if present, then waits until its pool has freed the space, so
    /// every run receives into a pool in the same state.
    async fn destroy_and_settle(&self, pool: &str, dataset: &str) -> Result<()> {
        let listed = self
            .vm
            .exec(["zfs", "list", "-H", "-o", "name", dataset])
            .await?;
        if listed.status.success() {
            self.sh(&["zfs", "destroy", "-r", dataset]).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            self.sh(&["zpool", "sync", pool]).await?;
            let freeing = self
                .sh(&["zpool", "get", "-H", "-p", "-o", "value", "freeing", pool])
                .await?;
            if freeing.trim() == "0" {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "{pool} still freeing");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Deletes every object under `prefix` (between runs, untimed).
async fn delete_all(store: &Arc<dyn ObjectStore>, prefix: &str) -> Result<()> {
    let prefix = ObjectPath::from(prefix);
    let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    for object in objects {
        store.delete(&object.location).await?;
    }
    Ok(())
}

/// object_store's own multipart upload of the whole file: 16 MiB parts, `in_flight` at once.
async fn put_multipart(
    store: &Arc<dyn ObjectStore>,
    path: &ObjectPath,
    file: &Path,
    in_flight: usize,
) -> Result<()> {
    let upload = store.put_multipart(path).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, usize::try_from(PART_SIZE)?);
    let mut input = tokio::fs::File::open(file).await?;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = input.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        writer.wait_for_capacity(in_flight).await?;
        writer.write(&buf[..n]);
    }
    writer.finish().await?;
    Ok(())
}

/// `curl --aws-sigv4 -T FILE`: one signed PUT of the whole file. curl 7.88 does not send
/// the `x-amz-content-sha256` header S3 requires, so it is given: `UNSIGNED-PAYLOAD`
/// (nothing hashed), or with `signed` the file's SHA-256 from `sha256sum` first (what
/// object_store sends: a signed payload), its time included.
async fn curl_put(server: &ObjectStoreServer, key: &str, file: &Path, signed: bool) -> Result<()> {
    let payload = if signed {
        let out = tokio::process::Command::new("sha256sum")
            .arg(file)
            .output()
            .await
            .context("running sha256sum")?;
        ensure!(out.status.success(), "sha256sum: {}", out.status);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .context("sha256sum printed nothing")?
            .to_owned()
    } else {
        "UNSIGNED-PAYLOAD".to_owned()
    };
    let url = format!("{}/{}/{key}", server.endpoint(), ObjectStoreServer::BUCKET);
    let user = format!(
        "{}:{}",
        ObjectStoreServer::ACCESS_KEY,
        ObjectStoreServer::SECRET_KEY
    );
    let sigv4 = format!("aws:amz:{}:s3", ObjectStoreServer::REGION);
    let out = tokio::process::Command::new("curl")
        .args(["--fail", "--silent", "--show-error", "--aws-sigv4", &sigv4])
        .args(["--user", &user])
        .args(["-H", &format!("x-amz-content-sha256: {payload}"), "-T"])
        .arg(file)
        .arg(&url)
        .output()
        .await
        .context("running curl")?;
    ensure!(
        out.status.success(),
        "curl -T {url}: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The host's CPU model, for the table's header.
fn host_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name").map(str::to_owned))
        })
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some(guest::MODE) {
        return guest::main(&argv[1..]).await;
    }
    let a = args(&argv)?;
    let started_at = jiff::Timestamp::now();
    let vm = ZfsVm::boot().await?;
    let server = ObjectStoreServer::start().await?;
    let store = server.s3().connect()?;
    let exe = std::env::current_exe()?;
    let helper = vm
        .guest_path(&exe)
        .and_then(|p| p.to_str().map(str::to_owned))
        .with_context(|| {
            format!(
                "{} is not under the VM's host share (the cargo target dir): run it with cargo run",
                exe.display()
            )
        })?;
    let g = Guest { vm: &vm, helper };
    let port = server
        .endpoint()
        .rsplit(':')
        .next()
        .context("versitygw's endpoint has no port")?
        .to_owned();
    let guest_endpoint = format!("http://{}:{port}", ZfsVm::HOST_FROM_GUEST);

    // The source data, one received copy at a time, and metadata.
    let pool = vm.unique_pool_name("benchos");
    vm.create_pool(&pool, ((2 * a.mib + a.mib / 4 + 256) << 20).max(512 << 20))
        .await?;
    let dataset = format!("{pool}/src");
    g.sh(&["zfs", "create", "-o", "compression=off", &dataset])
        .await?;
    let filled = Instant::now();
    g.sh(&[
        "dd",
        "if=/dev/urandom",
        &format!("of=/{dataset}/random"),
        "bs=1M",
        &format!("count={}", a.mib),
        "status=none",
    ])
    .await?;
    let snapshot = format!("{dataset}@s");
    g.sh(&["zfs", "snapshot", &snapshot]).await?;
    let guid: u64 = g.get("guid", &snapshot).await?.parse()?;
    let created: i64 = g.get("creation", &snapshot).await?.parse()?;
    eprintln!(
        "filled {dataset} with {} MiB from /dev/urandom in {:.1} s",
        a.mib,
        filled.elapsed().as_secs_f64()
    );

    // The stream, once: a local file in the guest, then the same bytes on the host.
    let guest_file = format!("{}/bench-objstore.stream", ZfsVm::VDEV_DIR);
    let t = Instant::now();
    g.helper(&["send-to-file", &snapshot, &guest_file], None)
        .await?;
    let host_dir = tempfile::Builder::new()
        .prefix("tidepool-bench-objstore-")
        .tempdir()?;
    let host_file = host_dir.path().join("stream");
    {
        let mut cat = vm.spawn(["cat", guest_file.as_str()]).await?;
        let mut from = cat.stdout.take().context("cat's stdout")?;
        let mut to = tokio::fs::File::create(&host_file).await?;
        tokio::io::copy(&mut from, &mut to).await?;
        to.flush().await?;
        ensure!(cat.wait().await?.success(), "cat {guest_file} failed");
    }
    let stream_bytes = std::fs::metadata(&host_file)?.len();
    let guest_bytes: u64 = g
        .sh(&["stat", "-c", "%s", &guest_file])
        .await?
        .trim()
        .parse()?;
    ensure!(
        guest_bytes == stream_bytes,
        "the host copy has {stream_bytes} bytes, the guest file {guest_bytes}"
    );
    eprintln!(
        "zfs send of {snapshot}: {stream_bytes} bytes, in a guest file and a host file in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let src: DatasetName = dataset.parse().map_err(|e| anyhow!("{dataset}: {e}"))?;
    let key = |prefix: &str| -> Result<StreamKey> {
        Ok(StreamKey {
            prefix: Prefix::new(prefix)?,
            dataset: src.clone(),
            name: StreamName::new(
                jiff::Timestamp::from_second(created)?,
                "s".parse().map_err(|e| anyhow!("s: {e}"))?,
                StreamKind::Full,
            )?,
        })
    };
    let guids = Guids {
        snapshot: guid,
        parent: None,
    };
    let identity = age::x25519::Identity::generate();
    let plain = UploadOptions::default();
    let aged = UploadOptions {
        encrypt_to: Some(identity.to_public()),
        ..UploadOptions::default()
    };

    // --- 1. Upload.
    let mut up_tp = Row::new("tidepool-objstore upload (64 MiB chunks, 4 in flight)");
    let mut up_age = Row::new("tidepool-objstore upload, age-encrypted");
    let mut up_curl = Row::new("curl --aws-sigv4 -T, one PUT, UNSIGNED-PAYLOAD");
    let mut up_curl_signed =
        Row::new("sha256sum, then curl --aws-sigv4 -T, one PUT, signed payload");
    let mut up_mp = Row::new("object_store put_multipart (16 MiB parts, 4 in flight)");
    let last = a.runs - 1;
    for run in 0..a.runs {
        for (row, options, name) in [(&mut up_tp, &plain, "plain"), (&mut up_age, &aged, "age")] {
            let k = key(&format!("bench/{name}-{run}"))?;
            let t = Instant::now();
            let input = tokio::fs::File::open(&host_file).await?;
            let manifest = upload::upload(&store, &k, guids, input, options).await?;
            let took = t.elapsed();
            ensure!(
                manifest.stream_bytes == stream_bytes,
                "{name}: {manifest:?}"
            );
            row.runs.push(mib_per_s(stream_bytes, took));
            if run != last {
                delete_all(&store, &format!("bench/{name}-{run}")).await?;
            }
        }

        for (row, signed) in [(&mut up_curl, false), (&mut up_curl_signed, true)] {
            let object = format!("bench/curl-{run}");
            let t = Instant::now();
            curl_put(&server, &object, &host_file, signed).await?;
            let took = t.elapsed();
            let object = ObjectPath::from(object);
            let size = store.head(&object).await?.size;
            ensure!(size == stream_bytes, "curl stored {size} bytes");
            row.runs.push(mib_per_s(stream_bytes, took));
            store.delete(&object).await?;
        }

        let object = ObjectPath::from(format!("bench/multipart-{run}"));
        let t = Instant::now();
        put_multipart(&store, &object, &host_file, plain.max_in_flight).await?;
        let took = t.elapsed();
        let size = store.head(&object).await?.size;
        ensure!(size == stream_bytes, "put_multipart stored {size} bytes");
        up_mp.runs.push(mib_per_s(stream_bytes, took));
        store.delete(&object).await?;

        println!(
            "upload run {run}: tidepool {:.1} | age {:.1} | curl {:.1} | signed curl {:.1} | put_multipart {:.1} MiB/s",
            up_tp.runs[run],
            up_age.runs[run],
            up_curl.runs[run],
            up_curl_signed.runs[run],
            up_mp.runs[run]
        );
    }
    let plain_key = key(&format!("bench/plain-{last}"))?;
    let age_key = key(&format!("bench/age-{last}"))?;

    // --- 2. Restore.
    let target = format!("{pool}/restored");
    let check_guid = |what: &'static str| {
        let target = target.clone();
        let g = &g;
        async move {
            let got: u64 = g.get("guid", &format!("{target}@s")).await?.parse()?;
            ensure!(got == guid, "{what}: received GUID {got}, sent {guid}");
            Ok::<(), anyhow::Error>(())
        }
    };
    let mut re_file = Row::new("guest: zfs receive -u < local file");
    let mut re_tp = Row::new("guest: tidepool-objstore restore | zfs receive -u");
    let mut re_age = Row::new("guest: tidepool-objstore restore, age | zfs receive -u");
    let mut re_chan_file = Row::new("host: file -> exec channel -> zfs receive -u");
    let mut re_chan_tp =
        Row::new("host: tidepool-objstore restore -> exec channel -> zfs receive -u");
    let secret = {
        use age::secrecy::ExposeSecret;
        identity.to_string().expose_secret().to_owned()
    };
    let prefix_of = |k: &StreamKey| k.prefix.as_str().to_owned();
    let stream_of = |k: &StreamKey| k.name.dir_name();
    for run in 0..a.runs {
        g.destroy_and_settle(&pool, &target).await?;
        let took = g
            .timed_helper(&["receive-file", &guest_file, &target], None)
            .await?;
        check_guid("receive < file").await?;
        re_file.runs.push(mib_per_s(stream_bytes, took));

        for (row, k, env) in [
            (&mut re_tp, &plain_key, None),
            (
                &mut re_age,
                &age_key,
                Some((guest::IDENTITY_ENV, secret.as_str())),
            ),
        ] {
            g.destroy_and_settle(&pool, &target).await?;
            let took = g
                .timed_helper(
                    &[
                        "restore",
                        &guest_endpoint,
                        &prefix_of(k),
                        src.as_str(),
                        &stream_of(k),
                        &target,
                    ],
                    env,
                )
                .await?;
            check_guid("guest restore").await?;
            row.runs.push(mib_per_s(stream_bytes, took));
        }

        g.destroy_and_settle(&pool, &target).await?;
        let t = Instant::now();
        let mut child = vm.spawn(["zfs", "receive", "-u", target.as_str()]).await?;
        let mut stdin = child.stdin.take().context("stdin")?;
        let mut input = tokio::fs::File::open(&host_file).await?;
        tokio::io::copy(&mut input, &mut stdin).await?;
        drop(stdin);
        child
            .wait_with_output()
            .await?
            .check(&["zfs".to_owned(), "receive".to_owned()])?;
        re_chan_file.runs.push(mib_per_s(stream_bytes, t.elapsed()));
        check_guid("file through the channel").await?;

        g.destroy_and_settle(&pool, &target).await?;
        let t = Instant::now();
        let mut child = vm.spawn(["zfs", "receive", "-u", target.as_str()]).await?;
        let mut stdin = child.stdin.take().context("stdin")?;
        if let Err(e) = restore::restore(&store, &plain_key, None, &mut stdin).await {
            child.kill().await?;
            return Err(e.into());
        }
        drop(stdin);
        child
            .wait_with_output()
            .await?
            .check(&["zfs".to_owned(), "receive".to_owned()])?;
        re_chan_tp.runs.push(mib_per_s(stream_bytes, t.elapsed()));
        check_guid("host restore through the channel").await?;

        println!(
            "restore run {run}: guest file {:.1} | guest tidepool {:.1} | guest age {:.1} | channel file {:.1} | channel tidepool {:.1} MiB/s",
            re_file.runs[run],
            re_tp.runs[run],
            re_age.runs[run],
            re_chan_file.runs[run],
            re_chan_tp.runs[run]
        );
    }
    g.destroy_and_settle(&pool, &target).await?;
    g.sh(&["rm", "-f", &guest_file]).await?;
    vm.destroy_pool(&pool).await?;

    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!();
    println!(
        "object-store streams, {}: one full zfs send of {} MiB of /dev/urandom ({stream_bytes} bytes), {} runs each",
        started_at.strftime("%Y-%m-%d %H:%M UTC"),
        a.mib,
        a.runs
    );
    println!(
        "host: {cores} cores ({}), versitygw v1.8.0 (posix backend) on its loopback; guest: OpenZFS 2.3, 2 vCPUs emulated (TCG, no KVM)",
        host_cpu()
    );
    println!(
        "{:<66} {:>11} {:>11}",
        "upload (host, from a host file)", "best", "median"
    );
    for row in [&up_tp, &up_age, &up_curl, &up_curl_signed, &up_mp] {
        row.print();
    }
    print_ratio("ratio tidepool / curl, unsigned", &up_tp, &up_curl);
    print_ratio(
        "ratio tidepool / sha256sum + curl, signed",
        &up_tp,
        &up_curl_signed,
    );
    print_ratio("ratio tidepool / put_multipart", &up_tp, &up_mp);
    print_ratio("ratio tidepool age / tidepool", &up_age, &up_tp);
    println!();
    println!(
        "{:<66} {:>11} {:>11}",
        "restore into zfs receive -u (in the VM)", "best", "median"
    );
    for row in [&re_file, &re_tp, &re_age, &re_chan_file, &re_chan_tp] {
        row.print();
    }
    print_ratio("ratio guest restore / guest file", &re_tp, &re_file);
    print_ratio("ratio guest restore age / guest file", &re_age, &re_file);
    print_ratio(
        "ratio host restore / file, both through the channel",
        &re_chan_tp,
        &re_chan_file,
    );
    Ok(())
}
