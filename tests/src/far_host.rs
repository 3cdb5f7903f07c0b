//! A host outside the cluster that runs OpenZFS and Debian's OpenSSH server, for the `ssh`
//! target tests, played inside the test VM: a pool of its own that no agent serves, a
//! login that is not root and holds only `zfs allow` delegations on one dataset, and a
//! key whose `authorized_keys` line forces `tidepool ssh-gate --root <that dataset>`.
//! sshd listens on the guest's loopback; the source agent (in the same guest) reaches it
//! there, as it would reach a backup host over the network.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::agents::tidepool_binary_in_guest;
use crate::zfs_vm::{RemoteChild, ZfsVm};

/// The delegations the login holds on its dataset: the minimal set for an `ssh` target
/// (docs/ssh-targets.md).
pub const DELEGATIONS: &str = "create,mount,receive,hold,release,userprop,destroy,rename,send";

pub struct FarHost {
    pub user: String,
    pub port: u16,
    /// The dataset the login may use (the gate's root), `<pool>/backups`.
    pub root: String,
    /// The client's private key (OpenSSH format): what the policy's Secret holds.
    pub private_key: String,
    /// `known_hosts` with the host's real key.
    pub known_hosts: String,
    /// `known_hosts` naming the host with another key (a host key mismatch).
    pub wrong_known_hosts: String,
    /// Where the keys and sshd's files live in the guest.
    pub dir: String,
    sshd: RemoteChild,
}

async fn sh(vm: &ZfsVm, argv: &[&str]) -> Result<String> {
    vm.exec_ok(argv.iter().copied())
        .await
        .with_context(|| format!("{argv:?}"))
}

impl FarHost {
    /// Sets the host up on `pool` (which must exist) and starts sshd on guest port `port`.
    pub async fn start(vm: &ZfsVm, pool: &str, user: &str, port: u16) -> Result<FarHost> {
        let dir = format!("/var/tmp/tidepool/far-{user}");
        let root = format!("{pool}/backups");
        let home = format!("/home/{user}");
        sh(vm, &["mkdir", "-p", &dir, "/run/sshd"]).await?;
        if !vm.exec(["id", user]).await?.status.success() {
            sh(vm, &["useradd", "-m", "-s", "/bin/sh", user]).await?;
        }
        // What OpenZFS's udev rule does on a host that runs udev (this guest does not):
        // zfs delegation is enforced in the kernel, the device is open to all.
        sh(vm, &["chmod", "0666", "/dev/zfs"]).await?;
        // No password, but not locked: sshd (without PAM) refuses a locked account's keys.
        sh(vm, &["usermod", "-p", "*", user]).await?;
        // The user is not root: everything it may do on the pool is this delegation.
        sh(vm, &["zfs", "create", &root]).await?;
        sh(vm, &["zfs", "allow", "-u", user, DELEGATIONS, &root]).await?;
        // The gate where the login can run it (the share's files are root's).
        let tidepool = tidepool_binary_in_guest(vm)?;
        let tidepool = tidepool.to_string_lossy();
        sh(
            vm,
            &[
                "install",
                "-m",
                "0755",
                &tidepool,
                "/usr/local/bin/tidepool",
            ],
        )
        .await?;
        for key in ["host", "client", "other"] {
            let path = format!("{dir}/{key}");
            sh(vm, &["rm", "-f", &path, &format!("{path}.pub")]).await?;
            sh(
                vm,
                &[
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    key,
                    "-f",
                    &path,
                ],
            )
            .await?;
        }
        let public = |key: &str| {
            let path = format!("{dir}/{key}.pub");
            async move { sh(vm, &["cat", &path]).await.map(|s| s.trim().to_owned()) }
        };
        let authorized = format!(
            "command=\"/usr/local/bin/tidepool ssh-gate --root {root}\",restrict {}\n",
            public("client").await?
        );
        let ssh_dir = format!("{home}/.ssh");
        sh(vm, &["mkdir", "-p", &ssh_dir]).await?;
        write_file(vm, &format!("{ssh_dir}/authorized_keys"), &authorized).await?;
        sh(vm, &["chown", "-R", &format!("{user}:{user}"), &ssh_dir]).await?;
        sh(vm, &["chmod", "700", &ssh_dir]).await?;
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile .ssh/authorized_keys\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\nAllowUsers {user}\n\
             LogLevel VERBOSE\n"
        );
        write_file(vm, &format!("{dir}/sshd_config"), &config).await?;
        let sshd = vm
            .spawn([
                "/usr/sbin/sshd",
                "-D",
                "-e",
                "-f",
                &format!("{dir}/sshd_config"),
            ])
            .await?;
        let host_key = public("host").await?;
        let host_key = host_key
            .rsplit_once(' ')
            .map_or(host_key.as_str(), |(k, _)| k);
        let other_key = public("other").await?;
        let other_key = other_key
            .rsplit_once(' ')
            .map_or(other_key.as_str(), |(k, _)| k);
        let far = FarHost {
            user: user.to_owned(),
            port,
            root,
            private_key: sh(vm, &["cat", &format!("{dir}/client")]).await?,
            known_hosts: format!("[127.0.0.1]:{port} {host_key}\n"),
            wrong_known_hosts: format!("[127.0.0.1]:{port} {other_key}\n"),
            dir,
            sshd,
        };
        far.wait_listening(vm).await?;
        let version = far.ssh(vm, "'zfs' 'version'").await?;
        if !version.status.success() {
            bail!(
                "logging in to the far host as {user} failed: {}",
                version.stderr_lossy()
            );
        }
        Ok(far)
    }

    async fn wait_listening(&self, vm: &ZfsVm) -> Result<()> {
        let end = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let out = vm
                .exec(["ss", "-Htln", &format!("sport = :{}", self.port)])
                .await?;
            if !out.stdout_lossy().trim().is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > end {
                bail!("sshd is not listening on {} after 30 s", self.port);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs `ssh` in the guest as the source agent would, with `remote` as the command
    /// line the far side receives; its output.
    pub async fn ssh(&self, vm: &ZfsVm, remote: &str) -> Result<crate::zfs_vm::Output> {
        let known = format!("{}/known_hosts", self.dir);
        write_file(vm, &known, &self.known_hosts).await?;
        vm.exec([
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            &format!("UserKnownHostsFile={known}"),
            "-i",
            &format!("{}/client", self.dir),
            "-p",
            &self.port.to_string(),
            "-l",
            &self.user,
            "127.0.0.1",
            remote,
        ])
        .await
    }

    pub fn sshd(&mut self) -> &mut RemoteChild {
        &mut self.sshd
    }
}

/// Writes `text` to `path` in the guest (through `tee`, no shell).
pub async fn write_file(vm: &ZfsVm, path: &str, text: &str) -> Result<()> {
    let out = vm
        .command(["tee", path])
        .output_with_stdin(text.as_bytes())
        .await?;
    if !out.status.success() {
        bail!("writing {path}: {}", out.stderr_lossy());
    }
    Ok(())
}
