//! Send and receive as byte streams. A [`SendStream`] is an `AsyncRead` of `zfs send`'s
//! stdout; a [`ReceiveSink`] is an `AsyncWrite` into `zfs receive`'s stdin. The agent moves
//! the bytes wherever they must go (another local process, a TLS socket, a file) and then
//! calls `finish` on each side, which waits for the process and turns a failed exit into a
//! classified error. Both count the bytes that pass ([`Progress`]), readable from another
//! task at any time.
//!
//! Neither can wedge its caller: a read or write that waits with no byte moving for the
//! stall limit fails ([`StreamStalled`], then [`ZfsError::Stalled`]) and the process is
//! killed, and `finish` is bounded even when the stream was not read to its end.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

use crate::error::{ErrorKind, ZfsError};
use crate::exec::{Argv, BoxRead, BoxWrite, ExitStatus, Process, collect_stderr, join_stderr};

/// Bytes moved so far; cheap to clone and read from anywhere.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    pub fn new() -> Progress {
        Progress::default()
    }

    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Wraps a reader and counts what it yields.
pub struct CountingReader<R> {
    inner: R,
    progress: Progress,
}

impl<R> CountingReader<R> {
    pub fn new(inner: R, progress: Progress) -> CountingReader<R> {
        CountingReader { inner, progress }
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for CountingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.progress.add(buf.filled().len() - before);
        }
        r
    }
}

/// Wraps a writer and counts what it accepts.
pub struct CountingWriter<W> {
    inner: W,
    progress: Progress,
}

impl<W> CountingWriter<W> {
    pub fn new(inner: W, progress: Progress) -> CountingWriter<W> {
        CountingWriter { inner, progress }
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for CountingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.progress.add(n);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Limits of a running send or receive (set from [`crate::Timeouts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// A read from a send (or a write into a receive) that waits this long with no byte
    /// moving fails with [`StreamStalled`], and the process is killed.
    pub stall: Duration,
    /// How long `finish` waits for the process to exit, and `abort` for it to die.
    pub exit: Duration,
}

/// The error inside the `io::Error` (kind `TimedOut`) that a stalled stream's read or
/// write returns; `finish` then reports [`ZfsError::Stalled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no byte moved for {idle:?}; the stream stalled")]
pub struct StreamStalled {
    pub idle: Duration,
}

fn stalled_io(idle: Duration) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, StreamStalled { idle })
}

/// Fires when a pipe has stayed pending, with no byte moved, for `idle`. Measured only
/// while someone waits on the pipe: a consumer that stops asking is not the process
/// stalling (`finish` deals with that).
struct Watchdog {
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    fired: bool,
}

impl Watchdog {
    fn new(idle: Duration) -> Watchdog {
        Watchdog {
            idle,
            timer: None,
            armed: false,
            fired: false,
        }
    }

    /// Bytes moved: the next wait starts a fresh interval.
    fn moved(&mut self) {
        self.armed = false;
    }

    /// The pipe is pending; true once it has been for `idle`.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.idle;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        if timer.as_mut().poll(cx).is_ready() {
            self.fired = true;
        }
        self.fired
    }

    fn stalled(&self) -> Option<Duration> {
        self.fired.then_some(self.idle)
    }
}

/// The process behind a stream. A poll cannot await, so a stall found in a poll kills the
/// process from a task; `finish` and `abort` take it back from there.
enum Child {
    Running(Box<dyn Process>),
    Killing(JoinHandle<Box<dyn Process>>),
    /// The kill task failed; the process went with it.
    Lost,
}

impl Child {
    fn kill_soon(&mut self) {
        // Without a runtime there is nowhere to run the kill; finish, abort or drop kill.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Child::Running(mut p) = std::mem::replace(self, Child::Lost) {
            *self = Child::Killing(runtime.spawn(async move {
                let _ = p.kill().await;
                p
            }));
        }
    }

    async fn process(&mut self) -> Option<&mut Box<dyn Process>> {
        if let Child::Killing(h) = self {
            *self = match h.await {
                Ok(p) => Child::Running(p),
                Err(_) => Child::Lost,
            };
        }
        match self {
            Child::Running(p) => Some(p),
            Child::Killing(_) | Child::Lost => None,
        }
    }

    async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self.process().await {
            Some(p) => p.wait().await,
            None => Err(io::Error::other("the process was lost while being killed")),
        }
    }

    /// Kills the process and reaps it, giving up after `bound`; its status if known.
    async fn stop(&mut self, bound: Duration) -> Option<ExitStatus> {
        let stopped = async {
            let p = self.process().await?;
            // Killing a process that already exited fails; its status still tells.
            let _ = p.kill().await;
            p.wait().await.ok()
        };
        tokio::time::timeout(bound, stopped).await.ok().flatten()
    }
}

/// The stderr collected so far, waiting at most `bound` for the pipe to close (a
/// grandchild may hold it open after the process died).
async fn stderr_within(h: JoinHandle<String>, bound: Duration) -> String {
    let abort = h.abort_handle();
    match tokio::time::timeout(bound, join_stderr(h)).await {
        Ok(s) => s,
        Err(_) => {
            abort.abort();
            String::new()
        }
    }
}

/// A running `zfs send`: read the stream from it, then call [`SendStream::finish`].
/// Dropping it without finishing kills the process (with the local executor).
pub struct SendStream {
    argv: Argv,
    stdout: CountingReader<BoxRead>,
    /// The read side returned its end (0 bytes into a non-empty buffer).
    ended: bool,
    watchdog: Watchdog,
    stderr: JoinHandle<String>,
    child: Child,
    limits: StreamLimits,
}

impl SendStream {
    pub(crate) fn new(
        argv: Argv,
        stdin: BoxWrite,
        stdout: BoxRead,
        stderr: BoxRead,
        process: Box<dyn Process>,
        limits: StreamLimits,
    ) -> SendStream {
        drop(stdin);
        SendStream {
            argv,
            stdout: CountingReader::new(stdout, Progress::new()),
            ended: false,
            watchdog: Watchdog::new(limits.stall),
            stderr: collect_stderr(stderr),
            child: Child::Running(process),
            limits,
        }
    }

    pub fn argv(&self) -> &Argv {
        &self.argv
    }

    /// Bytes read from the stream so far.
    pub fn progress(&self) -> Progress {
        self.stdout.progress.clone()
    }

    /// How long the stream had been idle when its watchdog fired, if it did.
    pub fn stalled(&self) -> Option<Duration> {
        self.watchdog.stalled()
    }

    /// Waits for `zfs send` to exit; returns the bytes read. Never hangs: a stream that
    /// stalled fails with [`ZfsError::Stalled`]; one not read to its end (the consumer
    /// stopped, and zfs may be blocked on a full pipe) is killed and fails with
    /// [`ZfsError::Unfinished`], or with the command's own failure if it had already
    /// failed; a process that does not exit within the exit limit after the end is
    /// killed ([`ZfsError::Timeout`]).
    pub async fn finish(mut self) -> Result<u64, ZfsError> {
        let read = self.stdout.progress.bytes();
        let bound = self.limits.exit;
        if let Some(idle) = self.watchdog.stalled() {
            self.child.stop(bound).await;
            self.stderr.abort();
            return Err(ZfsError::Stalled {
                argv: self.argv,
                idle,
            });
        }
        if !self.ended {
            let status = self.child.stop(bound).await;
            let stderr = stderr_within(self.stderr, bound).await;
            return match status {
                // It exited by itself, unsuccessfully: its reason is the real one.
                Some(s) if s.code.is_some_and(|c| c != 0) => {
                    Err(ZfsError::command(self.argv, s, stderr))
                }
                _ => Err(ZfsError::Unfinished {
                    argv: self.argv,
                    read,
                }),
            };
        }
        let status = match tokio::time::timeout(bound, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                self.child.stop(bound).await;
                self.stderr.abort();
                return Err(ZfsError::Timeout {
                    argv: self.argv,
                    timeout: bound,
                });
            }
        };
        let stderr = stderr_within(self.stderr, bound).await;
        let status = status.map_err(|source| ZfsError::Io {
            argv: self.argv.clone(),
            source,
        })?;
        if !status.success() {
            return Err(ZfsError::command(self.argv, status, stderr));
        }
        Ok(read)
    }

    /// Kills `zfs send` and waits for it (at most the exit limit); the stream is
    /// incomplete.
    pub async fn abort(mut self) {
        self.child.stop(self.limits.exit).await;
        self.stderr.abort();
    }
}

impl AsyncRead for SendStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(idle) = this.watchdog.stalled() {
            return Poll::Ready(Err(stalled_io(idle)));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stdout).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() == before && buf.remaining() > 0 {
                    this.ended = true;
                }
                this.watchdog.moved();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.watchdog.poll_expired(cx) {
                    this.child.kill_soon();
                    Poll::Ready(Err(stalled_io(this.limits.stall)))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

/// A running `zfs receive`: write the stream into it, then call [`ReceiveSink::finish`]
/// (which closes stdin, so zfs sees the end of the stream, and waits for it).
pub struct ReceiveSink {
    argv: Argv,
    stdin: CountingWriter<BoxWrite>,
    watchdog: Watchdog,
    stdout: JoinHandle<()>,
    stderr: JoinHandle<String>,
    child: Child,
    limits: StreamLimits,
}

impl ReceiveSink {
    pub(crate) fn new(
        argv: Argv,
        stdin: BoxWrite,
        mut stdout: BoxRead,
        stderr: BoxRead,
        process: Box<dyn Process>,
        limits: StreamLimits,
    ) -> ReceiveSink {
        // receive prints nothing on stdout without -v; drain it anyway so it never blocks.
        let stdout = tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut stdout, &mut sink).await;
        });
        ReceiveSink {
            argv,
            stdin: CountingWriter::new(stdin, Progress::new()),
            watchdog: Watchdog::new(limits.stall),
            stdout,
            stderr: collect_stderr(stderr),
            child: Child::Running(process),
            limits,
        }
    }

    pub fn argv(&self) -> &Argv {
        &self.argv
    }

    /// Bytes written into the receive so far.
    pub fn progress(&self) -> Progress {
        self.stdin.progress.clone()
    }

    /// How long the receive had refused bytes when its watchdog fired, if it did.
    pub fn stalled(&self) -> Option<Duration> {
        self.watchdog.stalled()
    }

    /// Closes stdin and waits for `zfs receive` to exit; returns the bytes written. Never
    /// hangs: a stalled receive fails with [`ZfsError::Stalled`], one that does not exit
    /// within the exit limit is killed ([`ZfsError::Timeout`]).
    pub async fn finish(mut self) -> Result<u64, ZfsError> {
        let bound = self.limits.exit;
        let written = self.stdin.progress.bytes();
        if let Some(idle) = self.watchdog.stalled() {
            self.child.stop(bound).await;
            self.stderr.abort();
            self.stdout.abort();
            return Err(ZfsError::Stalled {
                argv: self.argv,
                idle,
            });
        }
        let mut stdin = self.stdin;
        let child = &mut self.child;
        let exited = tokio::time::timeout(bound, async move {
            // A receive that already failed has closed its end: shutting down may report
            // a broken pipe, which the exit status explains better.
            let _ = stdin.shutdown().await;
            drop(stdin);
            child.wait().await
        })
        .await;
        let status = match exited {
            Ok(status) => status,
            Err(_) => {
                self.child.stop(bound).await;
                self.stderr.abort();
                self.stdout.abort();
                return Err(ZfsError::Timeout {
                    argv: self.argv,
                    timeout: bound,
                });
            }
        };
        let stderr = stderr_within(self.stderr, bound).await;
        self.stdout.abort();
        let status = status.map_err(|source| ZfsError::Io {
            argv: self.argv.clone(),
            source,
        })?;
        if !status.success() {
            return Err(ZfsError::command(self.argv, status, stderr));
        }
        Ok(written)
    }

    /// Kills `zfs receive` and waits for it (at most the exit limit). Whatever OpenZFS
    /// already committed stays: with `-s`, the partial state and its resume token (to end
    /// a receive cleanly at a stream's end, [`ReceiveSink::finish`] instead).
    pub async fn abort(mut self) {
        self.child.stop(self.limits.exit).await;
        drop(self.stdin);
        self.stderr.abort();
        self.stdout.abort();
    }
}

impl ReceiveSink {
    /// Runs one poll of stdin under the watchdog.
    fn watched<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut CountingWriter<BoxWrite>>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if let Some(idle) = self.watchdog.stalled() {
            return Poll::Ready(Err(stalled_io(idle)));
        }
        match poll(Pin::new(&mut self.stdin), cx) {
            Poll::Ready(r) => {
                self.watchdog.moved();
                Poll::Ready(r)
            }
            Poll::Pending => {
                if self.watchdog.poll_expired(cx) {
                    self.child.kill_soon();
                    Poll::Ready(Err(stalled_io(self.limits.stall)))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl AsyncWrite for ReceiveSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.watched(cx, |w, cx| w.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watched(cx, |w, cx| w.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

/// Buffer size for moving a stream: large enough that a local pipe is not syscall-bound.
pub const PIPE_BUFFER: usize = 1 << 20;

/// Moves a send into a receive and waits for both. Watch progress with
/// [`SendStream::progress`] before calling. On failure the more telling error is
/// returned: a stall (it names the side that stopped), then the receive's (a mismatch,
/// out of space...), then the send's, then the I/O error.
pub async fn pipe(mut send: SendStream, mut receive: ReceiveSink) -> Result<u64, ZfsError> {
    let copied = copy(&mut send, &mut receive).await;
    match copied {
        Ok(_) => {
            let (s, r) = tokio::join!(send.finish(), receive.finish());
            match (s, r) {
                (Ok(n), Ok(_)) => Ok(n),
                // The sender failed (a stale resume token, a missing snapshot): the
                // receiver only saw a short stream, so the sender's reason is the real one.
                (Err(se), Err(re)) if re.kind() == ErrorKind::StreamInterrupted => Err(se),
                (_, Err(re)) => Err(re),
                (Err(se), Ok(_)) => Err(se),
            }
        }
        Err(e) => {
            // One side failed mid-stream. Finishing the send kills it (it was not read to
            // its end, and may be blocked on a pipe nobody reads any more); finishing the
            // receive tells why it stopped taking bytes, if it did.
            let send_argv = send.argv().clone();
            let (s, r) = tokio::join!(send.finish(), receive.finish());
            match (s, r) {
                (Err(se), _) if se.kind() == ErrorKind::Stalled => Err(se),
                (_, Err(re)) if re.kind() == ErrorKind::Stalled => Err(re),
                (_, Err(re)) => Err(re),
                (Err(se @ ZfsError::Command(_)), Ok(_)) => Err(se),
                _ => Err(ZfsError::Io {
                    argv: send_argv,
                    source: e,
                }),
            }
        }
    }
}

/// Copies everything from `r` into `w` through a [`PIPE_BUFFER`] buffer; does not shut
/// `w` down.
pub async fn copy<R, W>(r: &mut R, w: &mut W) -> io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = vec![0u8; PIPE_BUFFER];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            w.flush().await?;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Instant as StdInstant;

    use super::*;
    use crate::exec::{BoxFuture, Executor, LocalExecutor, Spawned};

    const LIMITS: StreamLimits = StreamLimits {
        stall: Duration::from_millis(300),
        exit: Duration::from_secs(3),
    };

    /// A real process, with a note of whether the layer asked to kill it.
    struct Observed {
        inner: Box<dyn Process>,
        killed: Arc<AtomicBool>,
    }

    impl Process for Observed {
        fn wait(&mut self) -> BoxFuture<'_, io::Result<ExitStatus>> {
            self.inner.wait()
        }
        fn kill(&mut self) -> BoxFuture<'_, io::Result<()>> {
            self.killed.store(true, Ordering::SeqCst);
            self.inner.kill()
        }
    }

    async fn start(script: &str) -> (Spawned, Arc<AtomicBool>) {
        let argv = Argv::from(vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]);
        let mut s = LocalExecutor::new().spawn(&argv).await.unwrap();
        let killed = Arc::new(AtomicBool::new(false));
        s.process = Box::new(Observed {
            inner: s.process,
            killed: killed.clone(),
        });
        (s, killed)
    }

    async fn send_of(script: &str) -> (SendStream, Arc<AtomicBool>) {
        let (s, killed) = start(script).await;
        let argv = Argv::from(vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]);
        let stream = SendStream::new(argv, s.stdin, s.stdout, s.stderr, s.process, LIMITS);
        (stream, killed)
    }

    async fn receive_of(script: &str) -> (ReceiveSink, Arc<AtomicBool>) {
        let (s, killed) = start(script).await;
        let argv = Argv::from(vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]);
        let sink = ReceiveSink::new(argv, s.stdin, s.stdout, s.stderr, s.process, LIMITS);
        (sink, killed)
    }

    /// Fails the test instead of hanging it.
    async fn within<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(15), f)
            .await
            .expect("did not return within 15 s")
    }

    #[tokio::test]
    async fn finish_after_the_reader_stopped_early_is_bounded_and_says_so() {
        // 8 MB is far more than a pipe buffers: the writer blocks once the reader stops.
        let (mut send, killed) = send_of("exec head -c 8000000 /dev/zero").await;
        let mut buf = vec![0u8; 4096];
        let n = send.read(&mut buf).await.unwrap();
        assert!(n > 0);
        let started = StdInstant::now();
        let err = within(send.finish()).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(err, ZfsError::Unfinished { read, .. } if read == n as u64),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::Unfinished);
        assert!(killed.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_send_that_failed_before_its_end_reports_its_own_failure() {
        let (mut send, _) = send_of(
            "head -c 100 /dev/zero; echo 'cannot open p/d@x: dataset does not exist' >&2; exit 1",
        )
        .await;
        let mut buf = [0u8; 10];
        send.read_exact(&mut buf).await.unwrap();
        // Let it exit by itself before the layer kills it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let err = within(send.finish()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }

    #[tokio::test]
    async fn a_send_read_to_its_end_finishes_with_its_byte_count() {
        let (mut send, killed) = send_of("head -c 300000 /dev/zero").await;
        let n = within(tokio::io::copy(&mut send, &mut tokio::io::sink()))
            .await
            .unwrap();
        assert_eq!(within(send.finish()).await.unwrap(), n);
        assert_eq!(n, 300_000);
        assert!(!killed.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_silent_send_stalls_and_is_killed() {
        let (mut send, killed) = send_of("printf abc; exec sleep 30").await;
        let mut buf = [0u8; 3];
        send.read_exact(&mut buf).await.unwrap();
        let started = StdInstant::now();
        let err = within(send.read(&mut [0u8; 16])).await.unwrap_err();
        let waited = started.elapsed();
        assert!(
            waited >= LIMITS.stall && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            err.get_ref().is_some_and(|e| e.is::<StreamStalled>()),
            "{err}"
        );
        // Killed from the poll already, before anyone calls finish.
        within(async {
            while !killed.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert_eq!(send.stalled(), Some(LIMITS.stall));
        let err = within(send.finish()).await.unwrap_err();
        assert!(
            matches!(err, ZfsError::Stalled { idle, .. } if idle == LIMITS.stall),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_receive_that_takes_nothing_stalls_and_is_killed() {
        let (mut sink, killed) = receive_of("exec sleep 30").await;
        let chunk = vec![0u8; 64 * 1024];
        let started = StdInstant::now();
        let err = within(async {
            loop {
                if let Err(e) = sink.write_all(&chunk).await {
                    return e;
                }
            }
        })
        .await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            err.get_ref().is_some_and(|e| e.is::<StreamStalled>()),
            "{err}"
        );
        let err = within(sink.finish()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Stalled, "{err}");
        assert!(killed.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn pipe_names_the_side_that_stalled() {
        let (send, _) = send_of("head -c 1000 /dev/zero; exec sleep 30").await;
        let (sink, _) = receive_of("exec cat >/dev/null").await;
        let err = within(pipe(send, sink)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Stalled, "{err}");
        assert_eq!(
            err.argv().unwrap().as_slice()[2],
            "head -c 1000 /dev/zero; exec sleep 30"
        );
    }
}
