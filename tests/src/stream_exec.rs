//! A zfs [`Executor`] without zfs, for measuring and testing the transport alone on the
//! host: `zfs send` yields a fixed number of pseudo-random bytes from memory (and its `-nP`
//! estimate says so), `zfs receive` counts what it is given and discards it, and every
//! other command succeeds silently. Nothing runs a process: the bytes measured are the
//! agents' TLS stream path, not a pipe or a disk.
//!
//! A send can be told to stop producing after some bytes and never end, to provoke a stall.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tidepool_zfs::exec::{BoxFuture, BoxRead};
use tidepool_zfs::{Argv, Executor, ExitStatus, Process, Spawned};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the fake `zfs send` produces.
#[derive(Debug, Clone, Copy)]
pub struct SendShape {
    pub bytes: u64,
    /// Stop producing after this many bytes and wait for ever (a stalled send).
    pub stall_after: Option<u64>,
}

/// The in-memory executor; `received` counts what every `zfs receive` was given.
#[derive(Debug, Clone)]
pub struct StreamExecutor {
    shape: SendShape,
    pattern: Arc<Vec<u8>>,
    received: Arc<AtomicU64>,
}

impl StreamExecutor {
    pub fn new(shape: SendShape) -> Self {
        // Pseudo-random (xorshift), so that neither zstd nor anything else can shrink it.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let pattern = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Self {
            shape,
            pattern: Arc::new(pattern),
            received: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bytes every `zfs receive` was given so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

struct Exited;

impl Process for Exited {
    fn wait(&mut self) -> BoxFuture<'_, io::Result<ExitStatus>> {
        Box::pin(async { Ok(ExitStatus::from_code(0)) })
    }
    fn kill(&mut self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// The fake send's stdout.
struct Pattern {
    pattern: Arc<Vec<u8>>,
    offset: u64,
    end: u64,
    stall_at: Option<u64>,
}

impl AsyncRead for Pattern {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.stall_at.is_some_and(|s| self.offset >= s) {
            // Never woken: a process that stopped writing and never exits.
            return Poll::Pending;
        }
        let limit = self.stall_at.unwrap_or(self.end).min(self.end);
        let left = limit.saturating_sub(self.offset);
        let at = (self.offset % self.pattern.len() as u64) as usize;
        let n = (left.min(buf.remaining() as u64) as usize).min(self.pattern.len() - at);
        buf.put_slice(&self.pattern[at..at + n]);
        self.offset += n as u64;
        Poll::Ready(Ok(()))
    }
}

/// The fake receive's stdin.
struct Counter(Arc<AtomicU64>);

impl AsyncWrite for Counter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn text(s: String) -> BoxRead {
    Box::pin(io::Cursor::new(s.into_bytes()))
}

impl Executor for StreamExecutor {
    fn spawn(&self, argv: &Argv) -> BoxFuture<'_, io::Result<Spawned>> {
        let args = argv.as_slice().to_vec();
        Box::pin(async move {
            let sub = args.get(1).map(String::as_str);
            let estimate = args.iter().any(|a| a == "-n");
            let last = args.last().cloned().unwrap_or_default();
            let stdout: BoxRead = match sub {
                Some("send") if estimate => {
                    text(format!("full\t{last}\t{0}\nsize\t{0}\n", self.shape.bytes))
                }
                Some("send") => Box::pin(Pattern {
                    pattern: self.pattern.clone(),
                    offset: 0,
                    end: self.shape.bytes,
                    stall_at: self.shape.stall_after,
                }),
                _ => text(String::new()),
            };
            Ok(Spawned {
                stdin: Box::pin(Counter(if sub == Some("receive") {
                    self.received.clone()
                } else {
                    Arc::new(AtomicU64::new(0))
                })),
                stdout,
                stderr: text(String::new()),
                process: Box::new(Exited),
            })
        })
    }
}
