//! The bandwidth limit of a send (`send.bandwidthLimit`): a token bucket over the bytes put
//! on the wire. Pure: the caller passes the time and sleeps for the delay it gets back.

use std::time::{Duration, Instant};

/// Tokens are bytes; they accrue at `rate` per second up to `burst`. Taking more than is
/// there puts the bucket in debt, and the delay returned is how long until the debt is
/// paid: the average never exceeds the rate, whatever the chunk size.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `rate` bytes per second. The burst is a quarter of a second of the
    /// rate (at least 64 KiB): small enough that a limit holds over a few seconds, large
    /// enough that a fast link is not cut into tiny writes.
    pub fn new(rate: u64, now: Instant) -> Self {
        let rate = rate.max(1) as f64;
        let burst = (rate / 4.0).max(64.0 * 1024.0);
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `bytes` at `now`; returns how long to wait before sending them.
    pub fn take(&mut self, bytes: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Largest chunk a paced copy moves at once.
pub const PACED_CHUNK: usize = 256 * 1024;

/// Copies `from` into `to` until the end, paced to `limit` bytes per second, counting what
/// moved on `wire`; flushes `to` at the end. With a limit, chunks of at most a quarter
/// second of it, so pacing never looks like a stall. An error ends it (the processes'
/// exits then say why).
pub async fn paced_copy<R, W>(
    from: &mut R,
    to: &mut W,
    limit: Option<u64>,
    wire: &super::pipe::Meter,
) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin + ?Sized,
    W: tokio::io::AsyncWrite + Unpin + ?Sized,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let chunk = match limit {
        Some(rate) => usize::try_from(rate / 4)
            .unwrap_or(PACED_CHUNK)
            .clamp(1024, PACED_CHUNK),
        None => PACED_CHUNK,
    };
    let mut bucket = limit.map(|rate| TokenBucket::new(rate, Instant::now()));
    let mut buf = vec![0u8; chunk];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.flush().await;
        }
        if let Some(bucket) = bucket.as_mut() {
            let wait = bucket.take(n, Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        to.write_all(&buf[..n]).await?;
        wire.add(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `total` bytes in `chunk`s, sleeping as told; the simulated time it took.
    fn simulate(rate: u64, chunk: usize, total: usize) -> Duration {
        let start = Instant::now();
        let mut now = start;
        let mut bucket = TokenBucket::new(rate, now);
        let mut sent = 0;
        while sent < total {
            now += bucket.take(chunk, now);
            sent += chunk;
        }
        now - start
    }

    #[test]
    fn the_average_rate_holds_for_any_chunk_size() {
        let rate = 10 << 20;
        for chunk in [1 << 10, 64 << 10, 256 << 10, 4 << 20] {
            let took = simulate(rate, chunk, 100 << 20).as_secs_f64();
            // 100 MiB at 10 MiB/s: 10 s, less what the initial burst covers.
            assert!((9.5..=10.5).contains(&took), "chunk {chunk}: {took} s");
        }
    }

    #[test]
    fn an_idle_bucket_refills_only_up_to_its_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1 << 20, start);
        let later = start + Duration::from_secs(3600);
        assert_eq!(bucket.take(256 << 10, later), Duration::ZERO);
        // The hour of idleness bought a quarter second of burst, not an hour of bytes.
        let wait = bucket.take(1 << 20, later);
        assert!(
            wait >= Duration::from_millis(990) && wait <= Duration::from_millis(1010),
            "{wait:?}"
        );
    }

    #[test]
    fn a_clock_that_goes_back_changes_nothing() {
        let start = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(1 << 20, start);
        let before = start - Duration::from_secs(5);
        assert_eq!(bucket.take(1024, before), Duration::ZERO);
    }
}
