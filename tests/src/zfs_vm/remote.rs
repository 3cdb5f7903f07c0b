//! Client of the guest exec server (`tests/zfs-vm/guest/exec-server.py`): runs an argv inside
//! the VM exactly as given (no shell), with stdin/stdout/stderr streamed over one TCP
//! connection per process and the exit status returned.
//!
//! Framing, both ways: 1 byte type, 4 bytes big-endian length, payload. The server's module
//! doc lists the frame types. Dropping the connection kills the remote process group, which
//! is how [`RemoteChild`]'s kill-on-drop works.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const PROTO: u32 = 1;
/// Bytes buffered per stream between the connection and the caller; a caller that does not
/// read stdout eventually stalls the process, as a full pipe would.
const PIPE_BUFFER: usize = 1 << 20;
const STDIN_CHUNK: usize = 256 * 1024;
/// Control frames (hello, started, exit) are small; a larger one means a broken stream.
const MAX_CONTROL_FRAME: u32 = 1 << 20;
const MAX_DATA_FRAME: u32 = 16 << 20;
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a guest exec server listens (a host-side forwarded address). Cheap to clone, `'static`,
/// so it can live inside an executor that outlives a borrow of the VM.
#[derive(Debug, Clone)]
pub struct Remote {
    addr: SocketAddr,
}

impl Remote {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A command for `argv` (program first). Nothing runs until `spawn`/`output`.
    pub fn command<I, S>(&self, argv: I) -> RemoteCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RemoteCommand {
            remote: self.clone(),
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            clear_env: false,
            cwd: None,
        }
    }

    /// Connects and waits for the server's hello: proof that the guest is up and serving.
    pub async fn ping(&self, timeout: Duration) -> Result<Hello> {
        let (_, hello) = tokio::time::timeout(timeout, connect(self.addr))
            .await
            .map_err(|_| anyhow!("no hello from {} within {timeout:?}", self.addr))??;
        Ok(hello)
    }
}

/// Greeting the exec server sends on accept.
#[derive(Debug, Clone, Deserialize)]
pub struct Hello {
    pub proto: u32,
    /// The guest kernel release.
    pub uname: String,
}

/// A process to run in the guest, like [`tokio::process::Command`].
#[derive(Debug, Clone)]
pub struct RemoteCommand {
    remote: Remote,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    clear_env: bool,
    cwd: Option<String>,
}

#[derive(Serialize)]
struct Request<'a> {
    argv: &'a [String],
    env: std::collections::BTreeMap<&'a str, &'a str>,
    clear_env: bool,
    cwd: Option<&'a str>,
}

impl RemoteCommand {
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut Self {
        self.argv.push(arg.into());
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds to (or overrides in) the exec server's environment.
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts from an empty environment instead of the exec server's.
    pub fn env_clear(&mut self) -> &mut Self {
        self.clear_env = true;
        self.env.clear();
        self
    }

    /// Working directory in the guest (default `/`).
    pub fn current_dir(&mut self, dir: impl Into<String>) -> &mut Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// Starts the process. Fails if the connection fails or the guest cannot start the
    /// program (for example, it does not exist); a started process's failure is its
    /// [`ExitStatus`].
    pub async fn spawn(&self) -> Result<RemoteChild> {
        if self.argv.is_empty() {
            bail!("empty argv");
        }
        let request = Request {
            argv: &self.argv,
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            clear_env: self.clear_env,
            cwd: self.cwd.as_deref(),
        };
        let payload = serde_json::to_vec(&request)?;
        let (stream, _) = tokio::time::timeout(HELLO_TIMEOUT, connect(self.remote.addr))
            .await
            .map_err(|_| anyhow!("exec server at {} did not greet", self.remote.addr))??;
        let (mut rd, mut wr) = stream.into_split();
        write_frame(&mut wr, b'R', &payload).await?;
        let (kind, payload) = read_frame(&mut rd, MAX_CONTROL_FRAME)
            .await
            .with_context(|| format!("starting {:?}", self.argv))?
            .ok_or_else(|| anyhow!("connection closed while starting {:?}", self.argv))?;
        let pid = match kind {
            b'S' => serde_json::from_slice::<Started>(&payload)?.pid,
            b'F' => {
                let failed: Failed = serde_json::from_slice(&payload)?;
                bail!("cannot start {:?} in the VM: {}", self.argv, failed.error);
            }
            other => bail!("unexpected frame {:?} while starting", other as char),
        };
        Ok(RemoteChild::start(self.argv.clone(), pid, rd, wr))
    }

    /// Runs to completion with empty stdin, collecting stdout and stderr.
    pub async fn output(&self) -> Result<Output> {
        self.spawn().await?.wait_with_output().await
    }

    /// Runs to completion with `input` as stdin.
    pub async fn output_with_stdin(&self, input: &[u8]) -> Result<Output> {
        let mut child = self.spawn().await?;
        let mut stdin = child.stdin.take().context("stdin already taken")?;
        let input = input.to_vec();
        let feed = async move {
            // A process that exits without reading all of it is not our error.
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        };
        let (_, output) = tokio::join!(feed, child.wait_with_output());
        output
    }

    /// Like [`output`](Self::output), but a non-zero exit is an error carrying argv, status
    /// and stderr. Returns stdout as text.
    pub async fn output_ok(&self) -> Result<String> {
        let output = self.output().await?;
        output.check(&self.argv)?;
        Ok(output.stdout_lossy())
    }
}

#[derive(Deserialize)]
struct Started {
    pid: u32,
}

#[derive(Deserialize)]
struct Failed {
    error: String,
}

/// How a remote process ended: an exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit status {code}"),
            (None, Some(sig)) => write!(f, "killed by signal {sig}"),
            (None, None) => write!(f, "unknown exit"),
        }
    }
}

/// Everything a finished remote process produced.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// An error (with argv, status and stderr) unless the process exited 0.
    pub fn check(&self, argv: &[String]) -> Result<()> {
        if self.status.success() {
            return Ok(());
        }
        bail!(
            "{argv:?} in the VM failed ({}): {}",
            self.status,
            self.stderr_lossy().trim_end()
        )
    }
}

/// A running process in the guest. Its process group is killed when this is dropped
/// (the connection closes), unless it has already exited.
pub struct RemoteChild {
    /// Write to the process's stdin; drop it (or `shutdown`) to send EOF.
    pub stdin: Option<RemoteStdin>,
    pub stdout: Option<RemoteOutput>,
    pub stderr: Option<RemoteOutput>,
    argv: Vec<String>,
    pid: u32,
    control: mpsc::UnboundedSender<i32>,
    status_rx: Option<oneshot::Receiver<Result<ExitStatus, String>>>,
    status: Option<ExitStatus>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl fmt::Debug for RemoteChild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteChild")
            .field("argv", &self.argv)
            .field("pid", &self.pid)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl RemoteChild {
    fn start(argv: Vec<String>, pid: u32, rd: OwnedReadHalf, wr: OwnedWriteHalf) -> Self {
        let (stdin_user, stdin_pipe) = tokio::io::duplex(PIPE_BUFFER);
        let (stdout_user, stdout_pipe) = tokio::io::duplex(PIPE_BUFFER);
        let (stderr_user, stderr_pipe) = tokio::io::duplex(PIPE_BUFFER);
        let (control, control_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = oneshot::channel();
        let writer = tokio::spawn(pump_to_remote(wr, stdin_pipe, control_rx));
        let reader = tokio::spawn(pump_from_remote(
            rd,
            stdout_pipe,
            stderr_pipe,
            status_tx,
            writer.abort_handle(),
        ));
        Self {
            stdin: Some(RemoteStdin(stdin_user)),
            stdout: Some(RemoteOutput(stdout_user)),
            stderr: Some(RemoteOutput(stderr_user)),
            argv,
            pid,
            control,
            status_rx: Some(status_rx),
            status: None,
            reader,
            writer,
        }
    }

    /// The argv this process was started with.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The process id inside the guest (also its process group id).
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` to the remote process group. A no-op once it has exited.
    pub fn signal(&self, signal: i32) {
        let _ = self.control.send(signal);
    }

    /// SIGKILLs the remote process group and waits for it.
    pub async fn kill(&mut self) -> Result<ExitStatus> {
        self.signal(9);
        self.wait().await
    }

    /// Waits for the exit. Closes stdin first (like `tokio::process::Child::wait`), so a
    /// process reading stdin to EOF cannot deadlock with the caller.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        drop(self.stdin.take());
        if let Some(status) = self.status {
            return Ok(status);
        }
        let rx = self
            .status_rx
            .take()
            .context("an earlier wait() was cancelled")?;
        let status = rx
            .await
            .map_err(|_| anyhow!("connection task for {:?} vanished", self.argv))?
            .map_err(|e| anyhow!("{:?}: {e}", self.argv))?;
        self.status = Some(status);
        Ok(status)
    }

    /// Waits for the exit while collecting whatever stdout and stderr were not taken.
    pub async fn wait_with_output(mut self) -> Result<Output> {
        async fn collect(stream: Option<RemoteOutput>) -> std::io::Result<Vec<u8>> {
            let mut buf = Vec::new();
            if let Some(mut stream) = stream {
                stream.read_to_end(&mut buf).await?;
            }
            Ok(buf)
        }
        drop(self.stdin.take());
        let (stdout, stderr) = (self.stdout.take(), self.stderr.take());
        let (stdout, stderr, status) = tokio::join!(collect(stdout), collect(stderr), self.wait());
        Ok(Output {
            status: status?,
            stdout: stdout?,
            stderr: stderr?,
        })
    }
}

impl Drop for RemoteChild {
    fn drop(&mut self) {
        // Closing the socket makes the server SIGKILL the process group.
        self.reader.abort();
        self.writer.abort();
    }
}

/// The write end of a remote process's stdin.
#[derive(Debug)]
pub struct RemoteStdin(DuplexStream);

/// The read end of a remote process's stdout or stderr.
#[derive(Debug)]
pub struct RemoteOutput(DuplexStream);

impl AsyncWrite for RemoteStdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncRead for RemoteOutput {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

async fn connect(addr: SocketAddr) -> Result<(TcpStream, Hello)> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the exec server at {addr}"))?;
    stream.set_nodelay(true)?;
    let (kind, payload) = read_frame(&mut stream, MAX_CONTROL_FRAME)
        .await?
        .ok_or_else(|| anyhow!("exec server at {addr} closed before its hello"))?;
    if kind != b'H' {
        bail!("exec server sent {:?} instead of hello", kind as char);
    }
    let hello: Hello = serde_json::from_slice(&payload)?;
    if hello.proto != PROTO {
        bail!("exec server speaks protocol {}, want {PROTO}", hello.proto);
    }
    Ok((stream, hello))
}

/// `None` on a clean EOF before a frame starts.
async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R, max: u32) -> Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; 5];
    let mut got = 0;
    while got < header.len() {
        let n = rd.read(&mut header[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            bail!("connection closed inside a frame header");
        }
        got += n;
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len > max {
        bail!("frame of {len} bytes exceeds {max}");
    }
    let mut payload = vec![0; len as usize];
    rd.read_exact(&mut payload).await?;
    Ok(Some((header[0], payload)))
}

async fn write_frame<W: AsyncWrite + Unpin>(wr: &mut W, kind: u8, payload: &[u8]) -> Result<()> {
    let len = u32::try_from(payload.len()).context("frame too large")?;
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.push(kind);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    wr.write_all(&frame).await?;
    Ok(())
}

/// Socket -> caller: demultiplexes stdout/stderr and delivers the exit status.
async fn pump_from_remote(
    mut rd: OwnedReadHalf,
    stdout: DuplexStream,
    stderr: DuplexStream,
    status_tx: oneshot::Sender<Result<ExitStatus, String>>,
    writer: tokio::task::AbortHandle,
) {
    let mut stdout = Some(stdout);
    let mut stderr = Some(stderr);
    let result = loop {
        let frame = match read_frame(&mut rd, MAX_DATA_FRAME).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break Err("connection to the VM closed before the process exited".into()),
            Err(e) => break Err(format!("connection to the VM failed: {e:#}")),
        };
        match frame {
            (b'O', data) => forward(&mut stdout, &data).await,
            (b'E', data) => forward(&mut stderr, &data).await,
            (b'X', payload) => {
                break serde_json::from_slice::<ExitStatus>(&payload)
                    .map_err(|e| format!("bad exit frame: {e}"));
            }
            (kind, _) => break Err(format!("unexpected frame {:?}", kind as char)),
        }
    };
    // EOF for the readers before the status, as with a local process's pipes.
    drop(stdout);
    drop(stderr);
    // Stop feeding stdin; the socket closes once both halves are gone.
    writer.abort();
    let _ = status_tx.send(result);
}

async fn forward(pipe: &mut Option<DuplexStream>, data: &[u8]) {
    if let Some(p) = pipe
        && p.write_all(data).await.is_err()
    {
        // The caller dropped its reader: discard the rest, keep the process running.
        *pipe = None;
    }
}

/// Caller -> socket: stdin bytes (then EOF) and signals.
async fn pump_to_remote(
    mut wr: OwnedWriteHalf,
    mut stdin: DuplexStream,
    mut control: mpsc::UnboundedReceiver<i32>,
) {
    let mut buf = vec![0u8; STDIN_CHUNK];
    let mut stdin_open = true;
    let mut control_open = true;
    while stdin_open || control_open {
        tokio::select! {
            read = stdin.read(&mut buf), if stdin_open => {
                let n = read.unwrap_or(0);
                if write_frame(&mut wr, b'I', &buf[..n]).await.is_err() {
                    return;
                }
                stdin_open = n != 0;
            }
            signal = control.recv(), if control_open => match signal {
                Some(sig) => {
                    if write_frame(&mut wr, b'K', sig.to_string().as_bytes()).await.is_err() {
                        return;
                    }
                }
                None => control_open = false,
            },
        }
    }
    // Keep the write half (and so the connection) open until the reader aborts us.
    std::future::pending::<()>().await;
}

/// The protocol against the real exec server, run on the host (loopback only): fast, no VM.
#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    struct LocalServer {
        child: tokio::process::Child,
        remote: Remote,
    }

    async fn local_server() -> LocalServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("zfs-vm/guest/exec-server.py");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = tokio::process::Command::new("python3")
            .arg(script)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs the exec server");
        let remote = Remote::new(SocketAddr::from(([127, 0, 0, 1], port)));
        for _ in 0..100 {
            if remote.ping(Duration::from_secs(1)).await.is_ok() {
                return LocalServer { child, remote };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("local exec server did not start");
    }

    #[tokio::test]
    async fn exit_codes_signals_and_output() {
        let s = local_server().await;
        let out = s
            .remote
            .command(["sh", "-c", "printf 'a b'; printf err >&2; exit 3"])
            .output()
            .await
            .expect("runs");
        assert_eq!(
            out.status,
            ExitStatus {
                code: Some(3),
                signal: None
            }
        );
        assert_eq!(out.stdout, b"a b");
        assert_eq!(out.stderr, b"err");
        assert!(out.check(&["x".into()]).is_err());

        // argv is passed as is: no shell sees the metacharacters.
        let text = s
            .remote
            .command(["echo", "$HOME; rm -rf /", "*"])
            .output_ok()
            .await
            .expect("echo");
        assert_eq!(text, "$HOME; rm -rf / *\n");

        let out = s
            .remote
            .command(["sh", "-c", "kill -TERM $$"])
            .output()
            .await
            .expect("runs");
        assert_eq!(
            out.status,
            ExitStatus {
                code: None,
                signal: Some(15)
            }
        );

        let err = s
            .remote
            .command(["/nonexistent/program"])
            .spawn()
            .await
            .expect_err("no such program");
        assert!(format!("{err:#}").contains("No such file"), "{err:#}");

        let text = s
            .remote
            .command(["sh", "-c", "echo $FOO; pwd"])
            .env("FOO", "bar")
            .current_dir("/tmp")
            .output_ok()
            .await
            .expect("env");
        assert_eq!(text, "bar\n/tmp\n");
        drop(s.child);
    }

    #[tokio::test]
    async fn binary_stdin_to_stdout_roundtrip() {
        let s = local_server().await;
        let input: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let out = s
            .remote
            .command(["cat"])
            .output_with_stdin(&input)
            .await
            .expect("cat");
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), input.len());
        assert!(out.stdout == input);
    }

    #[tokio::test]
    async fn dropping_the_child_kills_its_process_group() {
        let s = local_server().await;
        let mut child = s
            .remote
            .command(["sh", "-c", "sleep 300 & sleep 300"])
            .spawn()
            .await
            .expect("spawn");
        let pid = child.id();
        let mut stdout = child.stdout.take().expect("stdout");
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(child);
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).await.expect("EOF after drop");
        // The background sleep is in the same group and must go too.
        let group_alive = || {
            let pgrep = std::process::Command::new("pgrep")
                .args(["-g", &pid.to_string()])
                .output()
                .expect("pgrep");
            !pgrep.stdout.is_empty()
        };
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists() && !group_alive() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("process {pid} survived the drop of its RemoteChild");
    }

    #[tokio::test]
    async fn kill_and_signal() {
        let s = local_server().await;
        let mut child = s
            .remote
            .command(["sleep", "300"])
            .spawn()
            .await
            .expect("spawn");
        let status = child.kill().await.expect("killed");
        assert_eq!(status.signal, Some(9));
        let mut child = s
            .remote
            .command(["sleep", "300"])
            .spawn()
            .await
            .expect("spawn");
        child.signal(15);
        assert_eq!(child.wait().await.expect("wait").signal, Some(15));
    }
}
