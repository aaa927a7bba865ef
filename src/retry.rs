//! The one retry policy of the pipeline: jittered exponential backoff, and the async loop that
//! applies it until an attempt succeeds, fails for good, or the stage stops.
//!
//! Every place that waits out a broker, a database, a schema registry or an HTTP API uses
//! [`Backoff`] (blocking loops and the HTTP client step it themselves) or [`retry`] (async
//! attempts with a retriable/permanent verdict). Half of each delay is fixed and half random,
//! so that many instances and streams retrying the same outage spread out instead of
//! retrying in step.
use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Exponential backoff: `initial`, doubling per failure, capped at `max`, each delay jittered
/// to between half and all of its value.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// The delay before the next attempt; counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        delay(self.initial, self.max, self.failures)
    }

    /// Failures since the last [`reset`](Self::reset).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The jittered delay before retrying after the `n`-th failure (1-based): half of the capped
/// exponential delay is fixed, half random.
pub fn delay(initial: Duration, max: Duration, n: u32) -> Duration {
    let exp = initial.saturating_mul(1u32 << n.saturating_sub(1).min(20));
    let half = exp.min(max) / 2;
    let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

/// Why [`retry`] gave up.
#[derive(Debug)]
pub enum Stopped<E> {
    /// `stop` was cancelled while waiting to retry.
    Cancelled,
    /// The attempt failed with an error that retrying cannot fix.
    Permanent(E),
}

/// Runs `attempt` until it succeeds or fails with an error `is_retriable` rejects; retriable
/// failures are logged (naming `what`) and backed off until `stop` is cancelled.
pub async fn retry<T, E, F, Fut>(
    what: &str,
    mut backoff: Backoff,
    stop: &CancellationToken,
    is_retriable: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, Stopped<E>>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match attempt().await {
            Ok(v) => {
                if backoff.failures() > 0 {
                    tracing::info!(
                        what,
                        failures = backoff.failures(),
                        "recovered after retries"
                    );
                }
                return Ok(v);
            }
            Err(e) if is_retriable(&e) => {
                let wait = backoff.next_delay();
                tracing::warn!(what, error = %e, failures = backoff.failures(), retry_in_ms = wait.as_millis() as u64, "retriable failure; backing off");
                tokio::select! {
                    _ = stop.cancelled() => return Err(Stopped::Cancelled),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => return Err(Stopped::Permanent(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_jittered_and_capped() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..100 {
            let b1 = delay(i, m, 1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= i, "{b1:?}");
            let b3 = delay(i, m, 3);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400));
            let b30 = delay(i, m, 30);
            assert!(b30 >= m / 2 && b30 <= m, "{b30:?}");
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(10));
        for _ in 0..8 {
            b.next_delay();
        }
        assert_eq!(b.failures(), 8);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(10));
    }

    #[tokio::test]
    async fn retries_retriable_errors_and_stops_on_permanent_or_cancel() {
        let quick = || Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        let stop = CancellationToken::new();
        let mut n = 0;
        let r: Result<u32, Stopped<&str>> = retry(
            "t",
            quick(),
            &stop,
            |e| *e == "again",
            || {
                n += 1;
                let v = n;
                async move {
                    if v < 3 {
                        Err("again")
                    } else {
                        Ok(v)
                    }
                }
            },
        )
        .await;
        assert_eq!(r.unwrap(), 3);

        let r: Result<(), _> = retry(
            "t",
            quick(),
            &stop,
            |e| *e == "again",
            || async { Err("broken") },
        )
        .await;
        assert!(matches!(r, Err(Stopped::Permanent("broken"))));

        stop.cancel();
        let r: Result<(), _> = retry(
            "t",
            quick(),
            &stop,
            |_: &&str| true,
            || async { Err("again") },
        )
        .await;
        assert!(matches!(r, Err(Stopped::Cancelled)));
    }
}
