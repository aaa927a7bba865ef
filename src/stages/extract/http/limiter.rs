//! The rate limiter every stream of an extractor shares: requests spaced evenly at
//! `extract.rate_limit` per second, and a 429's `Retry-After` pausing them all (the API's limit
//! is per key, not per stream).
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Spaces requests evenly at `rate` per second across every stream; a 429 pauses everyone.
pub struct RateLimiter {
    interval: Option<Duration>,
    next: Mutex<Instant>,
    paused_until: Mutex<Option<Instant>>,
}

impl RateLimiter {
    pub fn new(rate_per_sec: f64) -> Self {
        RateLimiter {
            interval: (rate_per_sec > 0.0).then(|| Duration::from_secs_f64(1.0 / rate_per_sec)),
            next: Mutex::new(Instant::now()),
            paused_until: Mutex::new(None),
        }
    }

    fn paused_until(&self) -> Option<Instant> {
        let p = self.paused_until.lock().map(|g| *g).unwrap_or(None);
        p.filter(|t| *t > Instant::now())
    }

    /// Stops all requests until `until` (a `Retry-After`).
    pub fn pause(&self, until: Instant) {
        if let Ok(mut g) = self.paused_until.lock() {
            if g.is_none_or(|t| t < until) {
                *g = Some(until);
            }
        }
    }

    /// Waits for this request's turn.
    pub async fn acquire(&self) {
        loop {
            if let Some(t) = self.paused_until() {
                tokio::time::sleep_until(t.into()).await;
                continue;
            }
            let Some(interval) = self.interval else {
                return;
            };
            let slot = match self.next.lock() {
                Ok(mut next) => {
                    let slot = (*next).max(Instant::now());
                    *next = slot + interval;
                    slot
                }
                Err(_) => Instant::now(),
            };
            tokio::time::sleep_until(slot.into()).await;
            if self.paused_until().is_none() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rate_limiter_spaces_requests() {
        let l = RateLimiter::new(50.0);
        let t = Instant::now();
        for _ in 0..11 {
            l.acquire().await;
        }
        assert!(
            t.elapsed() >= Duration::from_millis(190),
            "{:?}",
            t.elapsed()
        );
        l.pause(Instant::now() + Duration::from_millis(100));
        let t = Instant::now();
        l.acquire().await;
        assert!(t.elapsed() >= Duration::from_millis(90));
    }
}
