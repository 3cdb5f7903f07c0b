//! Replication to a host outside the cluster that runs OpenZFS, reached over SSH (a
//! `ReplicationPolicy` with an `ssh` target). The source node's agent does everything on
//! that host for the controller: it runs `zfs send` into `zfs receive` there, and the same
//! typed operations it runs on its own pools (inventory, bookkeeping, destroying owned
//! snapshots), through the system `ssh` client. The controller brings the login (the
//! policy's Secret) with each call; the agent keeps it only while the call runs.
//!
//! The far side's own dataset root is [`SshAccess::root`] (the policy's target dataset):
//! the agent refuses anything outside it, as it refuses what is outside its own roots, and
//! a forced command on the far side (`tidepool ssh-gate`) can enforce it there too.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tidepool_api::DatasetName;

use crate::bookkeeping::Bookkeeping;
use crate::operation::{DestroySnapshots, InventoryRequest};
use crate::send::{ReceiveOptions, SendFlags};
use crate::transfer::{TransferBinding, TransferStream};

/// How to log in to the far host, and the part of it the policy may touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshAccess {
    /// A DNS name or an IP address; never starts with `-`.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The private key (OpenSSH or PEM format), from the policy's Secret.
    pub private_key: SecretText,
    /// `known_hosts` lines for the host, from the policy's Secret: the only keys accepted.
    pub known_hosts: String,
    /// Everything on the far host happens at or below this dataset.
    pub root: DatasetName,
}

/// Largest private key and `known_hosts` accepted (both are a few hundred bytes to a few
/// KiB in practice).
pub const MAX_KEY_BYTES: usize = 16 * 1024;
pub const MAX_KNOWN_HOSTS_BYTES: usize = 64 * 1024;

impl SshAccess {
    /// Checks what becomes `ssh` arguments and files, again at the agent whatever the
    /// admission and the controller checked.
    pub fn check(&self) -> Result<(), String> {
        check_host(&self.host)?;
        if self.port == 0 {
            return Err("the SSH port is 0".into());
        }
        check_user(&self.user)?;
        let key = self.private_key.reveal();
        if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.contains("PRIVATE KEY") {
            return Err(format!(
                "the private key is not a private key of at most {MAX_KEY_BYTES} bytes"
            ));
        }
        let hosts = &self.known_hosts;
        if hosts.trim().is_empty() || hosts.len() > MAX_KNOWN_HOSTS_BYTES || hosts.contains('\0') {
            return Err(format!(
                "known_hosts must be 1 to {MAX_KNOWN_HOSTS_BYTES} bytes of text; host keys are always checked"
            ));
        }
        Ok(())
    }
}

/// A DNS name (labels of letters, digits and `-`, not at either end) or an IP address.
pub fn check_host(host: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && (host.parse::<std::net::IpAddr>().is_ok() || host.split('.').all(label_ok));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "SSH host {:?} is neither a DNS name nor an IP address",
            host.chars().take(80).collect::<String>()
        ))
    }
}

/// A POSIX login name: `[a-z_][a-z0-9_-]{0,31}`.
pub fn check_user(user: &str) -> Result<(), String> {
    let mut bytes = user.bytes();
    let ok = matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && user.len() <= 32
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "SSH user {:?} is not a login name ([a-z_][a-z0-9_-]{{0,31}})",
            user.chars().take(40).collect::<String>()
        ))
    }
}

/// Text that is a credential: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

impl Serialize for SecretText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// One typed operation run on the far host by the source agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteRequest {
    pub via: SshAccess,
    pub operation: RemoteOperation,
}

/// What may run on a far host: reading it, and the replication's bookkeeping and target
/// retention. Never a snapshot of the far host's own data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum RemoteOperation {
    /// The subtree of [`SshAccess::root`] (the request's pool must be the root's).
    Inventory(InventoryRequest),
    Bookkeeping(Bookkeeping),
    DestroySnapshots(DestroySnapshots),
}

/// `zfs send` on this node into `zfs receive` on the far host. Answered with
/// [`crate::transfer::SendToPeerAnswer`], as a send to an agent is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendToSsh {
    pub stream: TransferStream,
    #[serde(default)]
    pub flags: SendFlags,
    pub via: SshAccess,
    /// The receive exactly as the planner emitted it (always `-u`, never `-F`).
    pub receive: ReceiveOptions,
    /// The policy and step, for the agent's transfer list and logs.
    pub binding: TransferBinding,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_timeout_seconds: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> SshAccess {
        SshAccess {
            host: "backup.example.org".into(),
            port: 22,
            user: "tidepool".into(),
            private_key: SecretText::new(
                "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
            ),
            known_hosts: "backup.example.org ssh-ed25519 AAAA\n".into(),
            root: "tank/backups".parse().unwrap(),
        }
    }

    #[test]
    fn a_good_login_passes() {
        access().check().unwrap();
        for host in ["10.0.2.15", "::1", "fe80::1", "a", "a-b.c9"] {
            check_host(host).unwrap();
        }
    }

    #[test]
    fn what_could_become_an_ssh_option_or_shell_text_is_refused() {
        for host in [
            "-oProxyCommand=x",
            "a b",
            "a;b",
            "",
            "a..b",
            "-a.b",
            "a_b",
            "a/b",
        ] {
            assert!(check_host(host).is_err(), "{host}");
        }
        for user in ["-l", "Root", "a b", "", "a;b", &"u".repeat(33)] {
            assert!(check_user(user).is_err(), "{user}");
        }
        let mut a = access();
        a.known_hosts = " \n".into();
        assert!(a.check().unwrap_err().contains("always checked"));
        let mut a = access();
        a.private_key = SecretText::new("not a key");
        assert!(a.check().is_err());
        let mut a = access();
        a.port = 0;
        assert!(a.check().is_err());
    }

    #[test]
    fn the_key_never_shows_in_debug() {
        let shown = format!("{:?}", access());
        assert!(!shown.contains("BEGIN"), "{shown}");
        assert!(shown.contains("redacted"));
        let json = serde_json::to_string(&access()).unwrap();
        assert!(json.contains("BEGIN OPENSSH PRIVATE KEY"));
        assert_eq!(serde_json::from_str::<SshAccess>(&json).unwrap(), access());
    }
}
