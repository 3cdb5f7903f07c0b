//! Small parts both ends of a transfer use: a byte meter readable from anywhere, the
//! watch that notices when it stops moving, and the request body fed from a channel.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame};
use tokio::sync::mpsc;

/// Bytes moved so far at one point of a transfer.
#[derive(Debug, Clone, Default)]
pub struct Meter(Arc<AtomicU64>);

impl Meter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Resolves once `meter` has not moved for `idle` (checked a few times per `idle`, at
/// least once a second), so a transfer that stopped moving is aborted within about
/// `idle`; never resolves while bytes move.
pub async fn stalled(meter: &Meter, idle: Duration) {
    let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut last = meter.bytes();
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let now = meter.bytes();
        if now != last {
            last = now;
            since = tokio::time::Instant::now();
        } else if since.elapsed() >= idle {
            return;
        }
    }
}

/// A request body whose chunks come from a channel; an `Err` sent into it ends the body
/// with that error, so the peer sees a broken stream, never a short one that looks whole.
#[derive(Debug)]
pub struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl ChannelBody {
    /// The body, and the sender that feeds it (`capacity` chunks in flight).
    pub fn channel(capacity: usize) -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, Self(rx))
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn a_meter_that_keeps_moving_never_stalls_and_one_that_stops_does() {
        let meter = Meter::new();
        let mover = meter.clone();
        let moving = tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                mover.add(1);
            }
        });
        let started = tokio::time::Instant::now();
        stalled(&meter, Duration::from_millis(300)).await;
        let took = started.elapsed();
        // About 1 s of movement, then 300 ms of stillness; generous above for a busy host.
        assert!(
            took >= Duration::from_millis(1250) && took <= Duration::from_secs(4),
            "{took:?}"
        );
        assert_eq!(meter.bytes(), 20);
        let _ = moving.await;
    }

    #[tokio::test]
    async fn an_error_ends_the_body_with_an_error() {
        let (tx, mut body) = ChannelBody::channel(4);
        let _ = tx.send(Ok(Bytes::from_static(b"abc"))).await;
        let _ = tx.send(Err(std::io::Error::other("send failed"))).await;
        drop(tx);
        let first = body
            .frame()
            .await
            .and_then(|f| f.ok())
            .and_then(|f| f.into_data().ok());
        assert_eq!(first.as_deref(), Some(&b"abc"[..]));
        assert!(matches!(body.frame().await, Some(Err(_))));
    }
}
