//! zfs on a host reached over SSH: an [`Executor`] that runs each argv through the system
//! OpenSSH client, so the whole [`crate::Zfs`] API (listing, holds, receive, ...) works
//! against a remote pool unchanged.
//!
//! The remote side gets one command string, as SSH always sends one: every argument is
//! single-quoted ([`quote`]), so the remote shell sees words, never syntax, whatever the
//! argument holds. A forced command on the far side (`tidepool ssh-gate`) takes the same
//! string apart again with [`unquote`], which accepts only what [`quote`] makes, and
//! checks it before it runs anything.
//!
//! Host keys are always checked against the given `known_hosts` only (never "accept
//! new", never the user's or the system's files), the key is the given one only, and
//! nothing interactive can happen (`BatchMode`).

pub mod gate;

use std::io;
use std::path::PathBuf;

use crate::exec::{Argv, BoxFuture, COMMAND_ENV, Executor, LocalExecutor, Spawned};

/// Where and as whom to log in. The strings are checked by whoever builds this (the wire
/// type that carries them); [`SshExecutor`] passes them to `ssh` as separate arguments,
/// after `--` for the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshDestination {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The private key file (mode 0600).
    pub identity_file: PathBuf,
    /// The only `known_hosts` consulted.
    pub known_hosts_file: PathBuf,
    /// Seconds to wait for the TCP connection and the server's answers.
    pub connect_timeout_seconds: u16,
    /// A socket path for one shared connection (`ControlMaster`): the commands of one
    /// operation (a listing is four or five) then pay for one handshake, as bzfs does.
    /// Its directory must be private to the caller.
    pub control_path: Option<PathBuf>,
}

/// How long a shared connection stays open after its last command.
pub const CONTROL_PERSIST_SECONDS: u16 = 10;

/// Runs argv on [`SshDestination`] through `ssh`.
#[derive(Debug, Clone)]
pub struct SshExecutor {
    /// The `ssh` program (a path, or a name looked up in `PATH`).
    program: String,
    destination: SshDestination,
}

impl SshExecutor {
    pub fn new(program: impl Into<String>, destination: SshDestination) -> SshExecutor {
        SshExecutor {
            program: program.into(),
            destination,
        }
    }

    pub fn destination(&self) -> &SshDestination {
        &self.destination
    }

    /// The local `ssh` argv that runs `remote` on the destination.
    pub fn ssh_argv(&self, remote: &Argv) -> Argv {
        let d = &self.destination;
        let option = |key: &str, value: &str| ["-o".to_owned(), format!("{key}={value}")];
        let mut a = Argv::new(&self.program);
        // No configuration file: nothing on this machine changes how the host is checked.
        a.args(["-F", "/dev/null"]);
        a.args(option("BatchMode", "yes"));
        a.args(option("StrictHostKeyChecking", "yes"));
        a.args(option(
            "UserKnownHostsFile",
            &d.known_hosts_file.to_string_lossy(),
        ));
        a.args(option("GlobalKnownHostsFile", "/dev/null"));
        a.args(option("UpdateHostKeys", "no"));
        a.args(option("IdentitiesOnly", "yes"));
        a.args(option("IdentityAgent", "none"));
        a.args(option("PasswordAuthentication", "no"));
        a.args(option(
            "ConnectTimeout",
            &d.connect_timeout_seconds.to_string(),
        ));
        // A dead peer is found within a minute, also while a stream waits on it.
        a.args(option("ServerAliveInterval", "15"));
        a.args(option("ServerAliveCountMax", "4"));
        a.args(option("LogLevel", "ERROR"));
        if let Some(path) = &d.control_path {
            a.args(option("ControlMaster", "auto"));
            a.args(option("ControlPath", &path.to_string_lossy()));
            a.args(option(
                "ControlPersist",
                &CONTROL_PERSIST_SECONDS.to_string(),
            ));
        }
        a.arg("-i").arg(d.identity_file.to_string_lossy());
        a.arg("-p").arg(d.port.to_string());
        a.arg("-l").arg(d.user.clone());
        // No escape character: a stream's bytes are never taken for `~.`.
        a.args(["-e", "none", "-T", "--"]);
        a.arg(d.host.clone());
        a.arg(remote_command(remote));
        a
    }
}

/// `PATH` on the far side: zfs lives in `/usr/sbin` or `/sbin`, which a login that is not
/// root often lacks.
pub const REMOTE_PATH: &str = "PATH=/usr/sbin:/sbin:/usr/bin:/bin";

/// What the remote shell runs for `argv`: `env LC_ALL=C PATH=... <argv>`, each word
/// quoted. The environment goes on the command line because sshd passes on only what it
/// accepts.
pub fn remote_command(argv: &Argv) -> String {
    let mut words: Vec<String> = vec!["env".to_owned()];
    words.extend(COMMAND_ENV.iter().map(|(k, v)| format!("{k}={v}")));
    words.push(REMOTE_PATH.to_owned());
    words.extend(argv.as_slice().iter().cloned());
    quote(&words)
}

impl Executor for SshExecutor {
    fn spawn(&self, argv: &Argv) -> BoxFuture<'_, io::Result<Spawned>> {
        let ssh = self.ssh_argv(argv);
        Box::pin(async move { LocalExecutor::new().spawn(&ssh).await })
    }
}

/// Words as one POSIX shell command line: each in single quotes, a `'` inside as `'\''`.
pub fn quote<S: AsRef<str>>(words: &[S]) -> String {
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push('\'');
        out.push_str(&w.as_ref().replace('\'', r"'\''"));
        out.push('\'');
    }
    out
}

/// The words of a command line [`quote`] made; `None` for anything else (unquoted text,
/// other escapes, several spaces, a newline outside quotes), so a forced command never
/// guesses what a shell would have made of it.
pub fn unquote(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut rest = line;
    loop {
        let mut word = String::new();
        // One word: quoted parts, joined by `\'`.
        loop {
            let body = rest.strip_prefix('\'')?;
            let end = body.find('\'')?;
            word.push_str(&body[..end]);
            rest = &body[end + 1..];
            match rest.strip_prefix(r"\'") {
                Some(after) => {
                    word.push('\'');
                    rest = after;
                }
                None => break,
            }
        }
        words.push(word);
        if rest.is_empty() {
            return Some(words);
        }
        rest = rest.strip_prefix(' ')?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quoting_keeps_every_word_whole() {
        let words = ["zfs", "receive", "tank/a b", "it's", "$(reboot)", ";", ""];
        let line = quote(&words);
        assert_eq!(
            line,
            r"'zfs' 'receive' 'tank/a b' 'it'\''s' '$(reboot)' ';' ''"
        );
        assert_eq!(unquote(&line).unwrap(), words);
    }

    #[test]
    fn unquote_refuses_what_quote_never_makes() {
        for bad in [
            "",
            "zfs list",
            "'zfs'  'list'",
            "'zfs' list",
            "'zfs';'reboot'",
            "'zfs' 'list' ",
            "'zfs'\n'list'",
            "'unterminated",
            r"'a'\\'b'",
            "'a'\"b\"",
        ] {
            assert_eq!(unquote(bad), None, "{bad:?}");
        }
        // A newline inside quotes is part of the word (and stays one word).
        assert_eq!(unquote("'a\nb'").unwrap(), ["a\nb"]);
    }

    proptest! {
        #[test]
        fn unquote_inverts_quote(words in prop::collection::vec(".*", 1..6)) {
            prop_assert_eq!(unquote(&quote(&words)), Some(words));
        }
    }

    #[test]
    fn the_ssh_argv_checks_host_keys_and_quotes_the_remote_command() {
        let exec = SshExecutor::new(
            "ssh",
            SshDestination {
                host: "backup.example".into(),
                port: 2222,
                user: "tp".into(),
                identity_file: "/run/k/id".into(),
                known_hosts_file: "/run/k/known_hosts".into(),
                connect_timeout_seconds: 10,
                control_path: Some("/run/k/cm".into()),
            },
        );
        let mut zfs = Argv::new("zfs");
        zfs.args(["list", "-H", "tank/a"]);
        let argv = exec.ssh_argv(&zfs);
        let a = argv.as_slice();
        for expected in [
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/run/k/known_hosts",
            "GlobalKnownHostsFile=/dev/null",
            "BatchMode=yes",
            "IdentitiesOnly=yes",
            "ControlPath=/run/k/cm",
        ] {
            assert!(a.iter().any(|w| w == expected), "{expected} in {argv}");
        }
        let n = a.len();
        assert_eq!(a[n - 3], "--");
        assert_eq!(a[n - 2], "backup.example");
        assert_eq!(
            a[n - 1],
            "'env' 'LC_ALL=C' 'PATH=/usr/sbin:/sbin:/usr/bin:/bin' 'zfs' 'list' '-H' 'tank/a'"
        );
    }
}
