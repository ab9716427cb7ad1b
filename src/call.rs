//! One API call as every caller makes it: the account's rate limit taken, the request sent,
//! counted and timed, retryable errors retried with jittered exponential backoff, all of it
//! stopped by a cancellation or a deadline. The poller and discovery both call through here.

use crate::domain::TargetId;
use crate::metrics::Metrics;
use crate::tencent::Error;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Attempts of one request within a poll (the first try included).
pub const MAX_ATTEMPTS: u32 = 5;
/// First backoff ceiling; doubles each retry.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Largest backoff ceiling.
pub const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// A token bucket shared by the targets of one account. It reads tokio's clock, so tests with
/// paused time see its refill.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: tokio::sync::Mutex<Bucket>,
}

/// Tokens left, and when they were counted.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: tokio::time::Instant,
}

impl RateLimiter {
    /// `rate` requests a second, bursts up to one second's worth (at least one).
    pub fn new(rate: f64) -> Self {
        let burst = rate.max(1.0);
        RateLimiter {
            rate,
            burst,
            state: tokio::sync::Mutex::new(Bucket {
                tokens: burst,
                at: tokio::time::Instant::now(),
            }),
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        let mut s = self.state.lock().await;
        let now = tokio::time::Instant::now();
        s.tokens = (s.tokens + now.duration_since(s.at).as_secs_f64() * self.rate).min(self.burst);
        s.at = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            return;
        }
        let wait = Duration::from_secs_f64((1.0 - s.tokens) / self.rate);
        // Holding the lock while sleeping queues the other targets behind this one: fair, FIFO.
        tokio::time::sleep(wait).await;
        s.tokens = 0.0;
        s.at = tokio::time::Instant::now();
    }
}

/// The backoff before retry number `attempt` (0-based): full jitter under an exponential ceiling.
pub fn backoff(attempt: u32, rng: &mut fastrand::Rng) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    ceiling.mul_f64(rng.f64().max(0.05))
}

/// What one API call needs besides the request: whose it is, for the metrics; the account's
/// rate limit; when to give up.
#[derive(Debug)]
pub struct CallContext<'a> {
    /// The target, for metric labels and logs.
    pub id: &'a TargetId,
    /// The action, for metric labels.
    pub action: &'static str,
    /// The account's rate limit, taken before every attempt.
    pub limiter: &'a RateLimiter,
    /// Where requests and errors are counted.
    pub metrics: &'a Metrics,
    /// Stops waiting and retrying.
    pub cancel: &'a CancellationToken,
    /// No attempt starts after it.
    pub deadline: Option<tokio::time::Instant>,
}

/// Sends one request, retrying retryable errors with jittered backoff up to [`MAX_ATTEMPTS`]
/// times; every attempt takes a rate-limit token and is counted (with its error, if any).
/// Returns the outcome and the number of attempts.
pub async fn call_with_retry<T, Fut>(
    cx: &CallContext<'_>,
    rng: &mut fastrand::Rng,
    mut send: impl FnMut() -> Fut,
) -> (Result<T, Error>, u64)
where
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut attempts = 0u64;
    loop {
        tokio::select! {
            () = cx.cancel.cancelled() => return (Err(Error::Cancelled), attempts),
            () = cx.limiter.acquire() => {}
        }
        if cx
            .deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d)
        {
            cx.metrics
                .api_errors(cx.id, cx.action, Error::Deadline.as_label(), 1);
            return (Err(Error::Deadline), attempts);
        }
        let t0 = tokio::time::Instant::now();
        let result = tokio::select! {
            () = cx.cancel.cancelled() => return (Err(Error::Cancelled), attempts),
            r = send() => r,
        };
        attempts += 1;
        cx.metrics
            .api_request(cx.id, cx.action, t0.elapsed().as_secs_f64());
        let e = match result {
            Ok(v) => return (Ok(v), attempts),
            Err(e) => e,
        };
        cx.metrics.api_errors(cx.id, cx.action, e.as_label(), 1);
        if !e.is_retryable() || attempts >= u64::from(MAX_ATTEMPTS) {
            return (Err(e), attempts);
        }
        let wait = backoff((attempts - 1) as u32, rng);
        tracing::debug!(target_id = %cx.id, action = cx.action, error = %e, ?wait, "retrying");
        tokio::select! {
            () = cx.cancel.cancelled() => return (Err(e), attempts),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut rng = fastrand::Rng::with_seed(1);
        // The largest of many draws approaches each attempt's ceiling: 250 ms, 500 ms, 1 s, ...
        // doubling up to 8 s, then flat.
        let largest = |attempt: u32, rng: &mut fastrand::Rng| {
            (0..2000).map(|_| backoff(attempt, rng)).max().unwrap()
        };
        let mut previous = Duration::ZERO;
        for attempt in 0..8 {
            let ceiling = BACKOFF_BASE.saturating_mul(1 << attempt).min(BACKOFF_MAX);
            let top = largest(attempt, &mut rng);
            assert!(top <= ceiling, "{attempt}: {top:?} over {ceiling:?}");
            assert!(
                top >= ceiling.mul_f64(0.95),
                "{attempt}: {top:?} far below {ceiling:?}"
            );
            if ceiling < BACKOFF_MAX {
                assert!(
                    top > previous.mul_f64(1.8),
                    "{attempt}: {top:?} did not grow from {previous:?}"
                );
            }
            previous = top;
        }
        assert_eq!(
            largest(30, &mut rng).max(BACKOFF_MAX),
            BACKOFF_MAX,
            "capped"
        );
        assert!(
            backoff(0, &mut rng) >= BACKOFF_BASE.mul_f64(0.05),
            "never zero"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_spaces_requests() {
        let l = RateLimiter::new(2.0);
        let t0 = tokio::time::Instant::now();
        for _ in 0..6 {
            l.acquire().await;
        }
        // Two from the burst, then one every half second (paused time: exact).
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_refills_while_idle() {
        let l = RateLimiter::new(4.0);
        for _ in 0..4 {
            l.acquire().await; // the burst
        }
        // Idle for a second: the bucket is full again, so four more go at once.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t0 = tokio::time::Instant::now();
        for _ in 0..4 {
            l.acquire().await;
        }
        assert_eq!(t0.elapsed(), Duration::ZERO, "refilled while idle");
        // A fifth waits a quarter second.
        l.acquire().await;
        assert_eq!(t0.elapsed(), Duration::from_millis(250));
    }
}
