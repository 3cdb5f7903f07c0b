//! The bench binary's guest side: the same binary, run inside the VM from the host share,
//! so the restore runs where an agent would, next to `zfs receive`. Every zfs process is
//! an argv (no shell); a file as stdin or stdout is an opened file handed to the process.
//!
//! ```text
//! bench-objstore guest send-to-file POOL/DS@SNAP FILE
//! bench-objstore guest receive-file FILE TARGET
//! bench-objstore guest restore ENDPOINT PREFIX DATASET STREAM_DIR TARGET   # identity: $TIDEPOOL_BENCH_AGE_IDENTITY
//! ```
//!
//! `receive-file` and `restore` print the nanoseconds from just before their work began
//! (opening the file; reading the manifest) until `zfs receive` exited 0, measured in the
//! guest, so neither includes starting this binary over 9p.

use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use tidepool_objstore::{Prefix, S3Config, StreamKey, StreamName, restore};
use tidepool_tests::s3_server::ObjectStoreServer;
use tokio::process::Command;

/// The first argument that selects the guest side.
pub const MODE: &str = "guest";
/// The age identity for an encrypted restore (an environment variable, not an argument:
/// it would show in `ps`).
pub const IDENTITY_ENV: &str = "TIDEPOOL_BENCH_AGE_IDENTITY";

pub async fn main(argv: &[String]) -> Result<()> {
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    match argv.as_slice() {
        ["send-to-file", snapshot, file] => send_to_file(snapshot, file).await,
        ["receive-file", file, target] => {
            let started = Instant::now();
            let input = std::fs::File::open(file).with_context(|| format!("opening {file}"))?;
            let status = Command::new("zfs")
                .args(["receive", "-u", target])
                .stdin(Stdio::from(input))
                .status()
                .await
                .context("running zfs receive")?;
            if !status.success() {
                bail!("zfs receive -u {target} < {file}: {status}");
            }
            println!("{}", started.elapsed().as_nanos());
            Ok(())
        }
        ["restore", endpoint, prefix, dataset, stream, target] => {
            let took = restore_into(endpoint, prefix, dataset, stream, target).await?;
            println!("{took}");
            Ok(())
        }
        other => bail!("unknown guest command {other:?}"),
    }
}

async fn send_to_file(snapshot: &str, file: &str) -> Result<()> {
    let out = std::fs::File::create(file).with_context(|| format!("creating {file}"))?;
    let status = Command::new("zfs")
        .args(["send", snapshot])
        .stdout(Stdio::from(out))
        .status()
        .await
        .context("running zfs send")?;
    if !status.success() {
        bail!("zfs send {snapshot} > {file}: {status}");
    }
    Ok(())
}

/// tidepool-objstore's restore into `zfs receive -u TARGET`; the nanoseconds it took.
async fn restore_into(
    endpoint: &str,
    prefix: &str,
    dataset: &str,
    stream: &str,
    target: &str,
) -> Result<u128> {
    let key = StreamKey {
        prefix: Prefix::new(prefix)?,
        dataset: dataset.parse().map_err(|e| anyhow!("{dataset}: {e}"))?,
        name: StreamName::parse(stream).ok_or_else(|| anyhow!("not a stream name: {stream}"))?,
    };
    let identity = match std::env::var(IDENTITY_ENV) {
        Ok(text) => Some(
            text.parse::<age::x25519::Identity>()
                .map_err(|e| anyhow!("{IDENTITY_ENV}: {e}"))?,
        ),
        Err(_) => None,
    };
    let store = S3Config {
        endpoint: endpoint.to_owned(),
        bucket: ObjectStoreServer::BUCKET.to_owned(),
        region: ObjectStoreServer::REGION.to_owned(),
        access_key_id: ObjectStoreServer::ACCESS_KEY.to_owned(),
        secret_access_key: ObjectStoreServer::SECRET_KEY.to_owned(),
        allow_http: true,
    }
    .connect()?;
    let started = Instant::now();
    let mut child = Command::new("zfs")
        .args(["receive", "-u", target])
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running zfs receive")?;
    let mut stdin = child.stdin.take().context("zfs receive's stdin")?;
    // On an error the receive is killed (dropped) before it sees the end of its input.
    restore::restore(&store, &key, identity.as_ref(), &mut stdin).await?;
    drop(stdin);
    let status = child.wait().await?;
    if !status.success() {
        bail!("zfs receive -u {target}: {status}");
    }
    Ok(started.elapsed().as_nanos())
}
