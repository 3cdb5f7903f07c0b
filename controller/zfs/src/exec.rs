//! The process seam: an [`Executor`] starts an argv with piped stdin, stdout and stderr and
//! hands back the pipes and a [`Process`] to wait on or kill. Production uses
//! [`LocalExecutor`] (tokio::process, killed on drop); the conformance tests run the same
//! layer against a real OpenZFS inside a VM through another implementation.
//!
//! Nothing here builds a shell string: an argv is a list of arguments, passed as is.
//!
//! Every [`Argv`] carries the environment its process must run with ([`COMMAND_ENV`]:
//! `LC_ALL=C`), and every [`Executor`] applies [`Argv::env`] on top of its own. It lives
//! on the argv, not in the [`crate::Zfs`] client, so that an executor wrapping another
//! (running as another user, in a VM, over ssh) passes it on without knowing about it,
//! and no code path that starts a command can leave it out.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::task::JoinHandle;

use crate::error::ZfsError;

/// How many bytes of a command's stderr are kept for errors; the rest is drained and
/// dropped so a chatty command can never block on a full pipe or grow memory.
pub const STDERR_CAP: usize = 64 * 1024;

/// How many bytes of stdout [`run`] collects before it kills the command and fails with
/// [`ZfsError::OutputTooLarge`]. Only small outputs are collected (`zfs version`, dry-run
/// reports: one line per snapshot); listings stream line by line instead, each line
/// bounded by [`crate::parse::LINE_CAP`].
pub const STDOUT_CAP: usize = 16 << 20;

/// The environment every zfs/zpool command runs with, over whatever the executor's own
/// environment is. `LC_ALL=C`: libzfs translates its messages through gettext, and
/// [`crate::classify`] matches the English ones (under the C locale gettext also ignores
/// `LANGUAGE`). It also keeps `-p` numbers and dates free of locale formatting.
pub const COMMAND_ENV: &[(&str, &str)] = &[("LC_ALL", "C")];

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
pub type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

/// A command line: program first, then its arguments, each passed as one argument.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Argv(Vec<String>);

impl Argv {
    pub fn new(program: &str) -> Argv {
        Argv(vec![program.to_owned()])
    }

    pub fn arg(&mut self, arg: impl Into<String>) -> &mut Argv {
        self.0.push(arg.into());
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Argv
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.0.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn program(&self) -> &str {
        // `Argv::new` and `From<Vec<String>>` are the only constructors; the latter may be
        // given an empty vector, which then names no program.
        self.0.first().map_or("", String::as_str)
    }

    /// Variables every executor sets for this command, over its own environment.
    pub fn env(&self) -> &'static [(&'static str, &'static str)] {
        COMMAND_ENV
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

impl From<Vec<String>> for Argv {
    fn from(v: Vec<String>) -> Argv {
        Argv(v)
    }
}

/// Shown for people (logs, errors); quoted so arguments with spaces stay readable. It is
/// never handed to a shell.
impl fmt::Display for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:@#=,%+".contains(&b));
            if plain {
                f.write_str(a)?;
            } else {
                write!(f, "'{}'", a.replace('\'', r"'\''"))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Argv({self})")
    }
}

/// How a process ended: an exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn from_code(code: i32) -> ExitStatus {
        ExitStatus {
            code: Some(code),
            signal: None,
        }
    }
}

impl From<std::process::ExitStatus> for ExitStatus {
    fn from(s: std::process::ExitStatus) -> ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        ExitStatus {
            code: s.code(),
            signal: s.signal(),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit status {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}"),
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

/// A started process: wait for it or kill it. Dropping it must not leave the process
/// running (the local implementation kills on drop).
pub trait Process: Send {
    fn wait(&mut self) -> BoxFuture<'_, io::Result<ExitStatus>>;
    fn kill(&mut self) -> BoxFuture<'_, io::Result<()>>;
}

/// A started process and its three pipes.
pub struct Spawned {
    pub stdin: BoxWrite,
    pub stdout: BoxRead,
    pub stderr: BoxRead,
    pub process: Box<dyn Process>,
}

/// Starts an argv. The one seam between Tidepool and the `zfs`/`zpool` binaries.
pub trait Executor: Send + Sync {
    fn spawn(&self, argv: &Argv) -> BoxFuture<'_, io::Result<Spawned>>;
}

impl<E: Executor + ?Sized> Executor for std::sync::Arc<E> {
    fn spawn(&self, argv: &Argv) -> BoxFuture<'_, io::Result<Spawned>> {
        (**self).spawn(argv)
    }
}

/// Runs commands on this machine with tokio::process. Children are killed when their
/// [`Process`] is dropped.
#[derive(Debug, Clone, Default)]
pub struct LocalExecutor {
    /// Directory holding `zfs` and `zpool`; `None` searches `PATH`.
    pub bin_dir: Option<PathBuf>,
}

impl LocalExecutor {
    pub fn new() -> LocalExecutor {
        LocalExecutor::default()
    }

    pub fn with_bin_dir(dir: impl Into<PathBuf>) -> LocalExecutor {
        LocalExecutor {
            bin_dir: Some(dir.into()),
        }
    }
}

struct LocalProcess(tokio::process::Child);

impl Process for LocalProcess {
    fn wait(&mut self) -> BoxFuture<'_, io::Result<ExitStatus>> {
        Box::pin(async move { self.0.wait().await.map(ExitStatus::from) })
    }

    fn kill(&mut self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move { self.0.kill().await })
    }
}

impl Executor for LocalExecutor {
    fn spawn(&self, argv: &Argv) -> BoxFuture<'_, io::Result<Spawned>> {
        let program = match &self.bin_dir {
            Some(dir) => dir.join(argv.program()).into_os_string(),
            None => argv.program().into(),
        };
        let args = argv.as_slice().get(1..).unwrap_or_default().to_vec();
        let env = argv.env();
        Box::pin(async move {
            let mut child = tokio::process::Command::new(program)
                .args(args)
                .envs(env.iter().copied())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let missing = || io::Error::other("child pipe missing");
            let stdin = child.stdin.take().ok_or_else(missing)?;
            let stdout = child.stdout.take().ok_or_else(missing)?;
            let stderr = child.stderr.take().ok_or_else(missing)?;
            Ok(Spawned {
                stdin: Box::pin(stdin),
                stdout: Box::pin(stdout),
                stderr: Box::pin(stderr),
                process: Box::new(LocalProcess(child)),
            })
        })
    }
}

/// Reads a stderr pipe to its end in the background, keeping the first [`STDERR_CAP`]
/// bytes.
pub(crate) fn collect_stderr(mut stderr: BoxRead) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = STDERR_CAP.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

pub(crate) async fn join_stderr(h: JoinHandle<String>) -> String {
    h.await.unwrap_or_default()
}

/// A finished command's output.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Runs an argv to completion with stdin closed, collecting stdout (up to [`STDOUT_CAP`])
/// and stderr; fails with a classified [`ZfsError::Command`] when the exit status is not
/// success, and kills the process when `timeout` passes first.
pub async fn run<E: Executor + ?Sized>(
    exec: &E,
    argv: &Argv,
    timeout: Option<Duration>,
) -> Result<Output, ZfsError> {
    run_within(exec, argv, timeout, STDOUT_CAP).await
}

/// [`run`] keeping at most `stdout_cap` bytes of stdout: one byte more kills the process
/// and fails with [`ZfsError::OutputTooLarge`].
pub async fn run_within<E: Executor + ?Sized>(
    exec: &E,
    argv: &Argv,
    timeout: Option<Duration>,
    stdout_cap: usize,
) -> Result<Output, ZfsError> {
    tracing::debug!(%argv, "zfs: run");
    let fut = async {
        let Spawned {
            stdin,
            mut stdout,
            stderr,
            mut process,
        } = exec.spawn(argv).await.map_err(|source| ZfsError::Spawn {
            argv: argv.clone(),
            source,
        })?;
        drop(stdin);
        let err_task = collect_stderr(stderr);
        let mut out = Vec::new();
        // One byte past the cap is how an oversized output shows itself.
        let limit = u64::try_from(stdout_cap)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let read = (&mut stdout).take(limit).read_to_end(&mut out).await;
        if out.len() > stdout_cap {
            // Killed, not drained: the rest could be endless.
            let _ = process.kill().await;
            err_task.abort();
            return Err(ZfsError::OutputTooLarge {
                argv: argv.clone(),
                limit: stdout_cap,
            });
        }
        let status = process.wait().await;
        let stderr = join_stderr(err_task).await;
        let status = status.map_err(|source| ZfsError::Io {
            argv: argv.clone(),
            source,
        })?;
        if !status.success() {
            return Err(ZfsError::command(argv.clone(), status, stderr));
        }
        read.map_err(|source| ZfsError::Io {
            argv: argv.clone(),
            source,
        })?;
        Ok(Output {
            status,
            stdout: out,
            stderr,
        })
    };
    match timeout {
        None => fut.await,
        // Dropping the future drops the Process, which kills it.
        Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
            Err(ZfsError::Timeout {
                argv: argv.clone(),
                timeout: t,
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn argv(v: &[&str]) -> Argv {
        Argv::from(v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn local_executor_status_stdout_stderr_and_timeout() {
        let ex = LocalExecutor::new();
        let out = run(&ex, &argv(&["sh", "-c", "printf 'a\\tb\\n'"]), None)
            .await
            .unwrap();
        assert_eq!(out.stdout, b"a\tb\n");

        let err = run(
            &ex,
            &argv(&[
                "sh",
                "-c",
                "echo \"cannot open 'x': dataset does not exist\" >&2; exit 1",
            ]),
            None,
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("exit status 1"), "{err}");
        assert_eq!(err.argv().unwrap().program(), "sh");

        let started = std::time::Instant::now();
        let err = run(
            &ex,
            &argv(&["sleep", "30"]),
            Some(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(started.elapsed() < Duration::from_secs(5));

        let err = run(&ex, &argv(&["/nonexistent/zfs"]), None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
    }

    /// Run by `commands_run_in_the_c_locale_whatever_the_callers_locale` in a copy of
    /// this test binary whose own environment names another locale; on its own it checks
    /// the same against whatever locale the test runner has.
    #[tokio::test]
    async fn child_environment_probe() {
        let out = run(
            &LocalExecutor::new(),
            &argv(&["sh", "-c", "printf '%s|%s' \"$LC_ALL\" \"$PROBE_PARENT\""]),
            None,
        )
        .await
        .unwrap();
        let parent = std::env::var("PROBE_PARENT").unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("C|{parent}"),
            "LC_ALL=C over the caller's environment, the rest inherited"
        );
    }

    #[test]
    fn commands_run_in_the_c_locale_whatever_the_callers_locale() {
        let me = std::env::current_exe().unwrap();
        let out = std::process::Command::new(me)
            .args(["--exact", "exec::tests::child_environment_probe"])
            .env("LC_ALL", "de_DE.UTF-8")
            .env("LANG", "de_DE.UTF-8")
            .env("LANGUAGE", "de")
            .env("PROBE_PARENT", "inherited")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "probe under LC_ALL=de_DE.UTF-8 failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[tokio::test]
    async fn stdout_is_bounded_and_an_endless_output_is_killed() {
        let ex = LocalExecutor::new();
        let started = std::time::Instant::now();
        // `yes` never ends: only a kill stops it.
        let err = run_within(&ex, &argv(&["yes"]), Some(Duration::from_secs(20)), 1 << 20)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ZfsError::OutputTooLarge { limit, .. } if limit == 1 << 20),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::OutputTooLarge);
        assert!(started.elapsed() < Duration::from_secs(10));
        // Exactly the cap is still accepted.
        let out = run_within(
            &ex,
            &argv(&["head", "-c", "1048576", "/dev/zero"]),
            None,
            1 << 20,
        )
        .await
        .unwrap();
        assert_eq!(out.stdout.len(), 1 << 20);
    }

    #[tokio::test]
    async fn an_empty_argv_is_an_error_not_a_panic() {
        let err = run(&LocalExecutor::new(), &Argv::from(Vec::new()), None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
    }

    #[test]
    fn argv_display_quotes_for_people() {
        assert_eq!(
            argv(&["zfs", "list", "my pool/a", "it's"]).to_string(),
            r"zfs list 'my pool/a' 'it'\''s'"
        );
    }
}
