//! `tidepool ssh-gate --root DATASET [--root DATASET]...`: the forced command of the SSH
//! key a Tidepool `ssh` target logs in with (authorized_keys:
//! `command="tidepool ssh-gate --root tank/backups",restrict ssh-ed25519 ...`). It runs
//! the one zfs command the client asked for (`SSH_ORIGINAL_COMMAND`) when
//! [`tidepool_zfs::ssh::gate::admit`] admits it, and nothing otherwise.

use std::os::unix::process::CommandExt as _;

use anyhow::{Context, bail};
use tidepool_api::names::DatasetName;
use tidepool_zfs::COMMAND_ENV;

const USAGE: &str = "usage: tidepool ssh-gate --root DATASET [--root DATASET]...
  The forced command of a Tidepool replication key on a far host: runs the zfs command in
  SSH_ORIGINAL_COMMAND if it is one a replication target needs, at or below a root.";

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let mut roots: Vec<DatasetName> = Vec::new();
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => {
                let value = args.next().context("--root needs a dataset")?;
                roots.push(value.parse().with_context(|| format!("--root {value}"))?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if roots.is_empty() {
        bail!("at least one --root is needed\n{USAGE}");
    }
    let line = std::env::var("SSH_ORIGINAL_COMMAND")
        .context("no SSH_ORIGINAL_COMMAND: run me as an authorized_keys forced command")?;
    let argv = tidepool_zfs::ssh::gate::admit(&line, &roots)?;
    let (program, rest) = argv
        .as_slice()
        .split_first()
        .context("an empty command was admitted")?;
    // Replaces this process: zfs's exit status and output are the client's answer.
    let e = std::process::Command::new(program)
        .args(rest)
        .envs(COMMAND_ENV.iter().copied())
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .exec();
    Err(e).with_context(|| format!("running {program}"))
}
