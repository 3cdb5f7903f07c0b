//! Issue 10's transport benchmark, host only: the same bytes (default 1 GiB) through
//! Tidepool's agent-to-agent path and through `ssh -c aes128-gcm@openssh.com` on loopback
//! (the path syncoid and bzfs use), printed side by side. Goal: Tidepool ≥ 1.5× ssh.
//!
//! Tidepool's path is the product's: `PrepareReceive` and `SendToPeer` (TokenReview with
//! the real API server), the source's reader and pacing, HTTP/1.1 chunked over TLS 1.3
//! pinned to the target's fingerprint, the target's ticket check and writer into
//! `zfs receive`. Only zfs is replaced, on both ends, by an in-memory stand-in
//! (`tidepool_tests::stream_exec`): a send yielding pseudo-random bytes, a receive
//! counting them. ssh gets the same bytes on stdin and a remote `cat >/dev/null`.
//!
//! ```text
//! scripts/bench-transport.sh [--mib 1024] [--runs 3]   # installs openssh-server if needed
//! ```
//!
//! Build in release; on a shared 2-core machine the figures move with the neighbours' load,
//! so several runs are made and the best of each printed beside the median.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use tidepool_tests::control_plane::ControlPlane;
use tidepool_tests::host_agents::{HostPair, TransferOptions};
use tidepool_tests::stream_exec::SendShape;
use tidepool_wire::transfer::SendToPeerAnswer;
use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, Command};

const SSH_CIPHER: &str = "aes128-gcm@openssh.com";

struct Args {
    mib: u64,
    runs: usize,
}

fn args() -> Result<Args> {
    let mut a = Args { mib: 1024, runs: 3 };
    let mut it = std::env::args().skip(1);
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

/// A throwaway sshd on 127.0.0.1 that accepts one generated key, and the client's argv.
struct Sshd {
    child: Child,
    client: Vec<String>,
}

async fn run_ok(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .await
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("{program} {args:?}: {status}");
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Sshd {
    async fn start(dir: &Path) -> Result<Self> {
        let sshd = "/usr/sbin/sshd";
        if !Path::new(sshd).exists() {
            bail!("{sshd} is missing: run scripts/bench-transport.sh (it installs openssh-server)");
        }
        let path = |name: &str| dir.join(name).display().to_string();
        for key in ["host_key", "client_key"] {
            run_ok(
                "ssh-keygen",
                &["-q", "-t", "ed25519", "-N", "", "-f", &path(key)],
            )
            .await?;
        }
        std::fs::copy(path("client_key.pub"), path("authorized_keys"))?;
        // sshd's privilege separation directory; the Debian service creates it at start.
        std::fs::create_dir_all("/run/sshd")?;
        let port = free_port()?;
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
             PidFile {}\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nCiphers {SSH_CIPHER}\n",
            path("host_key"),
            path("authorized_keys"),
            path("sshd.pid"),
        );
        std::fs::write(path("sshd_config"), config)?;
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f", &path("sshd_config")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting sshd")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("sshd did not listen on 127.0.0.1:{port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let user = std::env::var("USER").unwrap_or_else(|_| "root".to_owned());
        let client = [
            "-c",
            SSH_CIPHER,
            "-i",
            &path("client_key"),
            "-p",
            &port.to_string(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            &format!("{user}@127.0.0.1"),
            "cat >/dev/null",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        Ok(Self { child, client })
    }

    /// Pushes `bytes` of `pattern` through ssh; the wall time from spawn to exit.
    async fn push(&self, pattern: &[u8], bytes: u64) -> Result<Duration> {
        let started = Instant::now();
        let mut ssh = Command::new("ssh")
            .args(&self.client)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting ssh")?;
        let mut stdin = ssh
            .stdin
            .take()
            .ok_or_else(|| anyhow!("ssh has no stdin"))?;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(pattern.len() as u64) as usize;
            stdin.write_all(&pattern[..n]).await?;
            left -= n as u64;
        }
        drop(stdin);
        let status = ssh.wait().await?;
        if !status.success() {
            bail!("ssh: {status}");
        }
        Ok(started.elapsed())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let a = args()?;
    let bytes = a.mib << 20;
    let cp = ControlPlane::shared().await;
    let pair = HostPair::start(
        cp,
        SendShape {
            bytes,
            stall_after: None,
        },
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let sshd = Sshd::start(dir.path()).await?;
    let pattern: Vec<u8> = {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };

    let mut tidepool = Vec::new();
    let mut ssh = Vec::new();
    for run in 0..a.runs {
        // Alternated, so a neighbour's burst of load hits both alike.
        let started = Instant::now();
        let answer = pair
            .replicate(&format!("bench-{run}"), TransferOptions::default())
            .await?;
        let wall = started.elapsed();
        let report = match answer {
            SendToPeerAnswer::Sent(r) => r,
            SendToPeerAnswer::Failed(e) => bail!("Tidepool's transfer failed: {e}"),
        };
        if report.bytes_received != bytes {
            bail!(
                "the target received {} of {bytes} bytes",
                report.bytes_received
            );
        }
        let tp = mib_per_s(bytes, wall);
        let took = sshd.push(&pattern, bytes).await?;
        let s = mib_per_s(bytes, took);
        println!(
            "run {run}: tidepool {tp:7.1} MiB/s ({:.2} s wall, {} ms in the transfer) | ssh {s:7.1} MiB/s ({:.2} s)",
            wall.as_secs_f64(),
            report.duration_ms,
            took.as_secs_f64()
        );
        tidepool.push(tp);
        ssh.push(s);
    }
    let (tb, sb) = (best(&tidepool), best(&ssh));
    let (tm, sm) = (median(tidepool), median(ssh));
    println!();
    println!(
        "{} MiB over loopback, {} runs, wall time of the whole call (prepare + send)",
        a.mib, a.runs
    );
    println!("{:<44} {:>10} {:>10}", "", "best", "median");
    println!(
        "{:<44} {tb:>7.1} MiB/s {tm:>7.1} MiB/s",
        "tidepool agent-to-agent (TLS 1.3, pinned)"
    );
    println!(
        "{:<44} {sb:>7.1} MiB/s {sm:>7.1} MiB/s",
        format!("ssh -c {SSH_CIPHER}")
    );
    println!(
        "{:<44} {:>9.2}x {:>9.2}x   (goal >= 1.5x)",
        "ratio",
        tb / sb,
        tm / sm
    );
    drop(sshd.child);
    Ok(())
}
