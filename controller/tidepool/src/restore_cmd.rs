//! `tidepool restore --from-ssh USER@HOST[:PORT] ...`: pulls a snapshot back from an
//! `ssh` target's host into a new dataset on this machine (run as root where the pool
//! is). The same quoted command lines and host-key checks as replication, so the far
//! side's forced command (`tidepool ssh-gate`) admits it; never into an existing dataset.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tidepool_api::names::{DatasetName, SnapshotName};
use tidepool_wire::ssh::{check_host, check_user};
use tidepool_zfs::{
    ErrorKind, LocalExecutor, PropertyName, ReceiveOptions, SendFlags, SendRequest, SshDestination,
    SshExecutor, Zfs,
};

const USAGE: &str =
    "usage: tidepool restore --from-ssh USER@HOST[:PORT] --key FILE --known-hosts FILE
                        --snapshot DATASET@SNAPSHOT --to NEW_DATASET
  Pulls DATASET@SNAPSHOT from the far host (an ssh target's replica) into NEW_DATASET here,
  received unmounted; checks the GUIDs match. NEW_DATASET must not exist.";

struct Args {
    user: String,
    host: String,
    port: u16,
    key: PathBuf,
    known_hosts: PathBuf,
    snapshot: SnapshotName,
    to: DatasetName,
}

fn parse(args: &[String]) -> anyhow::Result<Option<Args>> {
    let (mut from, mut key, mut known_hosts, mut snapshot, mut to) = (None, None, None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--from-ssh" => from = Some(value()?.clone()),
            "--key" => key = Some(PathBuf::from(value()?)),
            "--known-hosts" => known_hosts = Some(PathBuf::from(value()?)),
            "--snapshot" => snapshot = Some(value()?.parse::<SnapshotName>()?),
            "--to" => to = Some(value()?.parse::<DatasetName>()?),
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let missing = |what: &str| format!("{what} is required\n{USAGE}");
    let from = from.with_context(|| missing("--from-ssh"))?;
    let (user, host_port) = from
        .split_once('@')
        .with_context(|| format!("--from-ssh {from:?} is not USER@HOST[:PORT]"))?;
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().context("--from-ssh port")?),
        _ => (host_port, 22),
    };
    check_user(user).map_err(anyhow::Error::msg)?;
    check_host(host).map_err(anyhow::Error::msg)?;
    Ok(Some(Args {
        user: user.to_owned(),
        host: host.to_owned(),
        port,
        key: key.with_context(|| missing("--key"))?,
        known_hosts: known_hosts.with_context(|| missing("--known-hosts"))?,
        snapshot: snapshot.with_context(|| missing("--snapshot"))?,
        to: to.with_context(|| missing("--to"))?,
    }))
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let Some(args) = parse(args)? else {
        println!("{USAGE}");
        return Ok(());
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(restore(args))
}

async fn restore(a: Args) -> anyhow::Result<()> {
    let far = Zfs::new(SshExecutor::new(
        std::env::var("TIDEPOOL_SSH_PROGRAM").unwrap_or_else(|_| "ssh".to_owned()),
        SshDestination {
            host: a.host.clone(),
            port: a.port,
            user: a.user.clone(),
            identity_file: a.key.clone(),
            known_hosts_file: a.known_hosts.clone(),
            connect_timeout_seconds: 15,
            control_path: None,
        },
    ));
    let here = Zfs::new(LocalExecutor::new());
    let guid: PropertyName = "guid".parse()?;
    // Never over an existing dataset: a full stream would need `receive -F`, which
    // Tidepool never runs.
    match here.get_one(&guid, &a.to).await {
        Ok(_) => bail!("{} exists; a restore goes into a new dataset only", a.to),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).context(format!("checking that {} does not exist", a.to)),
    }
    let far_guid = far
        .get_one(&guid, &a.snapshot)
        .await
        .with_context(|| format!("reading {} on {}", a.snapshot, a.host))?
        .with_context(|| format!("{} has no guid on {}", a.snapshot, a.host))?;
    // Raw and compressed: an encrypted replica comes back encrypted, as it was stored.
    let request = SendRequest {
        snapshot: a.snapshot.clone(),
        base: tidepool_zfs::SendBase::Full,
        flags: SendFlags {
            raw: true,
            compressed: true,
            large_blocks: true,
            embedded_data: true,
            properties: false,
        },
    };
    let estimate = far
        .send_estimate(&request)
        .await
        .ok()
        .map(|e| e.total_bytes);
    let started = Instant::now();
    let sink = here.receive(&ReceiveOptions::new(a.to.clone())).await?;
    let send = far.send(&request).await?;
    let progress = send.progress();
    let report = async {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            match estimate {
                Some(total) if total > 0 => eprintln!(
                    "restore: {} of {total} bytes ({}%)",
                    progress.bytes(),
                    progress.bytes() * 100 / total
                ),
                _ => eprintln!("restore: {} bytes", progress.bytes()),
            }
        }
    };
    let bytes = tokio::select! {
        moved = tidepool_zfs::pipe(send, sink) => moved?,
        () = report => unreachable!("the report never ends"),
    };
    let received =
        a.to.snapshot(&a.snapshot.short())
            .context("naming the restored snapshot")?;
    let here_guid = here
        .get_one(&guid, &received)
        .await?
        .with_context(|| format!("{received} is missing after the receive"))?;
    if here_guid.as_str() != far_guid.as_str() {
        bail!(
            "{received} has guid {here_guid}, {} has {far_guid}",
            a.snapshot
        );
    }
    println!(
        "restored {} from {}@{} into {received} (guid {far_guid}): {bytes} bytes in {:.1} s; \
         received unmounted (zfs mount {} to read it)",
        a.snapshot,
        a.user,
        a.host,
        started.elapsed().as_secs_f64(),
        a.to
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn the_far_host_and_names_are_checked_before_anything_runs() {
        let ok = parse(&args(
            "--from-ssh tp@backup.example:2222 --key k --known-hosts h --snapshot b/a@s --to t/r",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            (ok.user.as_str(), ok.host.as_str(), ok.port),
            ("tp", "backup.example", 2222)
        );
        for bad in [
            "--from-ssh -oProxyCommand=x@h --key k --known-hosts h --snapshot b/a@s --to t/r",
            "--from-ssh tp@h;reboot --key k --known-hosts h --snapshot b/a@s --to t/r",
            "--from-ssh tp@h --key k --known-hosts h --snapshot b/a --to t/r",
            "--from-ssh tp@h --key k --known-hosts h --snapshot b/a@s --to 't/r;x'",
            "--from-ssh tp@h --key k --snapshot b/a@s --to t/r",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }
}
