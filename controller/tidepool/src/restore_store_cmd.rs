//! `tidepool restore --from-store URL ...`: rebuilds a dataset on this machine (run as root
//! where the pool is) from the chain an `objectStore` target holds, every chunk checked
//! against its SHA-256 before it reaches `zfs receive`, every snapshot against its
//! manifest's GUID. The same code as the agents' restore drill
//! (`tidepool_agent::objstore::restore`); never into an existing dataset.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use tidepool_agent::objstore::restore::{
    Destination, RestoreError, StoredChain, restore_chain, restore_path,
};
use tidepool_api::names::{DatasetName, SnapshotShortName};
use tidepool_objstore::{Prefix, S3Config};
use tidepool_zfs::{LocalExecutor, Zfs};

pub const USAGE: &str =
    "usage: tidepool restore --from-store ENDPOINT --bucket BUCKET [--prefix PREFIX]
                        [--region REGION] --dataset SOURCE_DATASET [--snapshot NAME]
                        [--identity AGE_KEY_FILE] --to NEW_DATASET
  Receives the stored chain of SOURCE_DATASET (the policy's source, as the store keys it)
  up to NAME (default: the newest stored snapshot) into NEW_DATASET here, unmounted,
  checking every chunk's SHA-256 and every snapshot's GUID. NEW_DATASET must not exist.
  The bucket's keys come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; an age-encrypted
  chain needs --identity (a file as written by age-keygen).";

struct Args {
    config: S3Config,
    prefix: String,
    dataset: DatasetName,
    snapshot: Option<SnapshotShortName>,
    identity: Option<PathBuf>,
    to: DatasetName,
}

fn parse(args: &[String], env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Args>> {
    let mut flags = std::collections::HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--from-store" | "--bucket" | "--prefix" | "--region" | "--dataset" | "--snapshot"
            | "--identity" | "--to" => {
                let v = it
                    .next()
                    .with_context(|| format!("{a} needs a value\n{USAGE}"))?;
                if flags.insert(a.as_str(), v.clone()).is_some() {
                    bail!("{a} is given twice\n{USAGE}");
                }
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let mut take = |f: &str| flags.remove(f);
    let missing = |f: &str| format!("{f} is required\n{USAGE}");
    let endpoint = take("--from-store").with_context(|| missing("--from-store"))?;
    let allow_http = match endpoint.split_once("://") {
        Some(("https", _)) => false,
        Some(("http", _)) => true,
        _ => bail!("--from-store {endpoint:?} is not an http:// or https:// URL"),
    };
    let key = |name: &str| env(name).with_context(|| format!("{name} is not set\n{USAGE}"));
    let config = S3Config {
        endpoint,
        bucket: take("--bucket").with_context(|| missing("--bucket"))?,
        region: take("--region").unwrap_or_else(|| "us-east-1".to_owned()),
        access_key_id: key("AWS_ACCESS_KEY_ID")?,
        secret_access_key: key("AWS_SECRET_ACCESS_KEY")?,
        allow_http,
    };
    Ok(Some(Args {
        config,
        prefix: take("--prefix").unwrap_or_default(),
        dataset: take("--dataset")
            .with_context(|| missing("--dataset"))?
            .parse()?,
        snapshot: take("--snapshot").map(|s| s.parse()).transpose()?,
        identity: take("--identity").map(PathBuf::from),
        to: take("--to").with_context(|| missing("--to"))?.parse()?,
    }))
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let Some(args) = parse(args, |k| std::env::var(k).ok())? else {
        println!("{USAGE}");
        return Ok(());
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(restore(args))
}

async fn restore(a: Args) -> anyhow::Result<()> {
    let identity = match &a.identity {
        Some(path) => Some(read_identity(path)?),
        None => None,
    };
    let store = a.config.connect()?;
    let prefix = Prefix::new(&a.prefix)?;
    let chain = StoredChain {
        store: &store,
        prefix: &prefix,
        dataset: &a.dataset,
        snapshot: a.snapshot.as_ref(),
    };
    let (path, snapshot) = restore_path(&chain).await?;
    let names: Vec<String> = path.iter().map(|s| s.dir_name()).collect();
    eprintln!(
        "restore: {} stream(s) of {} up to {snapshot}: {}",
        path.len(),
        a.dataset,
        names.join(", ")
    );
    let started = Instant::now();
    let zfs = Zfs::new(LocalExecutor::new());
    let restored = match restore_chain(
        &zfs,
        &chain,
        &path,
        identity.as_ref(),
        &Destination::New(&a.to),
    )
    .await
    {
        Ok(r) => r,
        Err(e @ RestoreError::Exists { .. }) => return Err(e.into()),
        Err(e) => {
            // Streams received before the one that failed stay: say so.
            let guid: tidepool_zfs::PropertyName = "guid".parse()?;
            let left = zfs.get_one(&guid, &a.to).await.is_ok();
            let hint = if left {
                format!(
                    "; {} holds the streams received before the failure (destroy it before trying again)",
                    a.to
                )
            } else {
                String::new()
            };
            bail!(
                "restoring into {}: {:#}{hint}",
                a.to,
                anyhow::Error::from(e)
            );
        }
    };
    println!(
        "restored {}@{} into {}@{} (guid {}): {} stream(s), {} bytes in {:.1} s, every chunk's \
         SHA-256 and every GUID checked; received unmounted (zfs mount {} to read it)",
        a.dataset,
        restored.snapshot,
        a.to,
        restored.snapshot,
        restored.guid,
        restored.streams.len(),
        restored.bytes,
        started.elapsed().as_secs_f64(),
        a.to
    );
    Ok(())
}

/// The first `AGE-SECRET-KEY-1…` line of an age-keygen file.
fn read_identity(path: &std::path::Path) -> anyhow::Result<age::x25519::Identity> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the age identity {}", path.display()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .with_context(|| format!("{} holds no AGE-SECRET-KEY- line", path.display()))?;
    line.parse()
        .map_err(|e: &str| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn keys(k: &str) -> Option<String> {
        matches!(k, "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY").then(|| "k".to_owned())
    }

    #[test]
    fn flags_names_and_keys_are_checked_before_anything_runs() {
        let ok = parse(
            &args("--from-store http://10.0.2.2:9000 --bucket b --dataset tank/a --to tank/r"),
            keys,
        )
        .unwrap()
        .unwrap();
        assert!(ok.config.allow_http);
        assert_eq!(ok.config.region, "us-east-1");
        assert!(ok.snapshot.is_none());
        for bad in [
            "--from-store s3://b --bucket b --dataset tank/a --to tank/r",
            "--from-store http://h --bucket b --dataset tank/a",
            "--from-store http://h --bucket b --dataset 'tank/a;x' --to tank/r",
            "--from-store http://h --bucket b --dataset tank/a --to tank/r --snapshot a@b",
            "--from-store http://h --bucket b --bucket c --dataset tank/a --to tank/r",
            "--from-store http://h --bucket b --dataset tank/a --to tank/r --force",
        ] {
            assert!(parse(&args(bad), keys).is_err(), "{bad}");
        }
        let no_keys = parse(
            &args("--from-store http://h --bucket b --dataset tank/a --to tank/r"),
            |_| None,
        );
        assert!(no_keys.is_err());
    }
}
