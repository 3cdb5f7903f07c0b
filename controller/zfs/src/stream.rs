//! Send and receive as byte streams. A [`SendStream`] is an `AsyncRead` of `zfs send`'s
//! stdout; a [`ReceiveSink`] is an `AsyncWrite` into `zfs receive`'s stdin. The agent moves
//! the bytes wherever they must go (another local process, a TLS socket, a file) and then
//! calls `finish` on each side, which waits for the process and turns a failed exit into a
//! classified error. Both count the bytes that pass ([`Progress`]), readable from another
//! task at any time.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::task::JoinHandle;

use crate::error::{ErrorKind, ZfsError};
use crate::exec::{Argv, BoxRead, BoxWrite, Process, collect_stderr, join_stderr};

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

/// A running `zfs send`: read the stream from it, then call [`SendStream::finish`].
/// Dropping it without finishing kills the process (with the local executor).
pub struct SendStream {
    argv: Argv,
    stdout: CountingReader<BoxRead>,
    stderr: JoinHandle<String>,
    process: Box<dyn Process>,
}

impl SendStream {
    pub(crate) fn new(
        argv: Argv,
        stdin: BoxWrite,
        stdout: BoxRead,
        stderr: BoxRead,
        process: Box<dyn Process>,
    ) -> SendStream {
        drop(stdin);
        SendStream {
            argv,
            stdout: CountingReader::new(stdout, Progress::new()),
            stderr: collect_stderr(stderr),
            process,
        }
    }

    pub fn argv(&self) -> &Argv {
        &self.argv
    }

    /// Bytes read from the stream so far.
    pub fn progress(&self) -> Progress {
        self.stdout.progress.clone()
    }

    /// Waits for `zfs send` to exit; returns the bytes read. Call it after reading to the
    /// end; if the reader stopped early, the process may be blocked on a full pipe, so
    /// [`SendStream::abort`] instead.
    pub async fn finish(mut self) -> Result<u64, ZfsError> {
        let status = self.process.wait().await;
        let stderr = join_stderr(self.stderr).await;
        let status = status.map_err(|source| ZfsError::Io {
            argv: self.argv.clone(),
            source,
        })?;
        if !status.success() {
            return Err(ZfsError::command(self.argv, status, stderr));
        }
        Ok(self.stdout.progress.bytes())
    }

    /// Kills `zfs send` and waits for it; the stream is incomplete.
    pub async fn abort(mut self) {
        let _ = self.process.kill().await;
        let _ = self.process.wait().await;
        self.stderr.abort();
    }
}

impl AsyncRead for SendStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

/// A running `zfs receive`: write the stream into it, then call [`ReceiveSink::finish`]
/// (which closes stdin, so zfs sees the end of the stream, and waits for it).
pub struct ReceiveSink {
    argv: Argv,
    stdin: CountingWriter<BoxWrite>,
    stdout: JoinHandle<()>,
    stderr: JoinHandle<String>,
    process: Box<dyn Process>,
}

impl ReceiveSink {
    pub(crate) fn new(
        argv: Argv,
        stdin: BoxWrite,
        mut stdout: BoxRead,
        stderr: BoxRead,
        process: Box<dyn Process>,
    ) -> ReceiveSink {
        // receive prints nothing on stdout without -v; drain it anyway so it never blocks.
        let stdout = tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut stdout, &mut sink).await;
        });
        ReceiveSink {
            argv,
            stdin: CountingWriter::new(stdin, Progress::new()),
            stdout,
            stderr: collect_stderr(stderr),
            process,
        }
    }

    pub fn argv(&self) -> &Argv {
        &self.argv
    }

    /// Bytes written into the receive so far.
    pub fn progress(&self) -> Progress {
        self.stdin.progress.clone()
    }

    /// Closes stdin and waits for `zfs receive` to exit; returns the bytes written.
    pub async fn finish(mut self) -> Result<u64, ZfsError> {
        // A receive that already failed has closed its end: shutting down may report a
        // broken pipe, which the exit status explains better.
        let _ = self.stdin.shutdown().await;
        drop(self.stdin.inner);
        let status = self.process.wait().await;
        let stderr = join_stderr(self.stderr).await;
        let _ = self.stdout.await;
        let status = status.map_err(|source| ZfsError::Io {
            argv: self.argv.clone(),
            source,
        })?;
        if !status.success() {
            return Err(ZfsError::command(self.argv, status, stderr));
        }
        Ok(self.stdin.progress.bytes())
    }

    /// Kills `zfs receive` and waits for it. Whatever OpenZFS already committed stays:
    /// with `-s`, the partial state and its resume token (to end a receive cleanly at a
    /// stream's end, [`ReceiveSink::finish`] instead).
    pub async fn abort(mut self) {
        let _ = self.process.kill().await;
        drop(self.stdin);
        let _ = self.process.wait().await;
        self.stderr.abort();
        self.stdout.abort();
    }
}

impl AsyncWrite for ReceiveSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

/// Buffer size for moving a stream: large enough that a local pipe is not syscall-bound.
pub const PIPE_BUFFER: usize = 1 << 20;

/// Moves a send into a receive and waits for both. Watch progress with
/// [`SendStream::progress`] before calling. On failure the more telling error is
/// returned: the receive's (a mismatch, out of space...), else the send's, else the I/O
/// error.
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
            // The receive side (usually) died: the send may be blocked writing to a pipe
            // nobody reads any more. Kill it, then ask the receive why.
            let send_argv = send.argv().clone();
            send.abort().await;
            receive.finish().await?;
            Err(ZfsError::Io {
                argv: send_argv,
                source: e,
            })
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
