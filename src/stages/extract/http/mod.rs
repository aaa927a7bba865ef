//! The HTTP side of the extractor: one shared rate limiter, the availability probe, and page
//! requests with the retry policy. Every attempt is logged (method, redacted URL, status,
//! bytes, start, end, duration) and counted.
//!
//! Sorting of answers:
//! - 2xx: read the body; a body that is cut short or is not the expected JSON is retried.
//! - 401/403: the credential is rejected. Fatal, never retried: retrying a bad key only
//!   burns the API's patience (and with some APIs gets the key blacklisted).
//! - 429: wait `Retry-After` (all requests pause, the limit is per key), up to
//!   `retry.max_rate_limited` times per request.
//! - 408, 5xx, timeouts, connection errors, broken bodies: jittered exponential backoff, up to
//!   `retry.max_attempts` attempts; then the request is reported as failed.
//! - Any other status (404, 400, a redirect to another host): not retried, reported.
//!
//! `attempt.rs` makes one GET and logs it; `limiter.rs` spaces the requests.
mod attempt;
mod limiter;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::Url;
use tokio_util::sync::CancellationToken;

use super::config::{ExtractConfig, RetryConfig};
use super::source::Auth;
use attempt::Attempt;

pub use attempt::parse_retry_after;
pub use limiter::RateLimiter;

/// The delay after the `n`-th failure (1-based), by the one retry policy ([`crate::retry`]).
fn backoff(retry: &RetryConfig, n: u32) -> Duration {
    crate::retry::delay(retry.initial_backoff, retry.max_backoff, n)
}

/// Counters of one run.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
    pub bytes: AtomicU64,
}

/// A successful (2xx) answer.
pub struct Answer {
    pub body: Vec<u8>,
    pub link: Option<String>,
    pub fetched_at: DateTime<Utc>,
}

/// Why a request was given up.
#[derive(Debug, Clone)]
pub enum FetchError {
    /// 401/403: the credential is rejected.
    Rejected { status: u16, url: String },
    /// Retries exhausted or a non-retriable answer.
    Failed {
        url: String,
        attempts: u32,
        reason: String,
    },
    /// Shutdown was requested while waiting.
    Cancelled,
}

/// The HTTP client of one extractor.
pub struct HttpSource {
    client: reqwest::Client,
    pub auth: Auth,
    limiter: RateLimiter,
    retry: RetryConfig,
    pub stats: HttpStats,
    /// The probe's answer when the probe asked for the pass's first page: the pass's first
    /// fetch of that URL takes it instead of asking again (within [`KEPT_FOR`]).
    kept: std::sync::Mutex<Option<(Url, Answer, std::time::Instant)>>,
}

/// How long a probe's answer stands in for the first page's fetch.
const KEPT_FOR: Duration = Duration::from_secs(60);

async fn sleep_or_cancel(d: Duration, shutdown: &CancellationToken) -> Result<(), FetchError> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = shutdown.cancelled() => Err(FetchError::Cancelled),
    }
}

impl HttpSource {
    pub fn new(cfg: &ExtractConfig, auth: Auth) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(cfg.concurrency.max(1))
            .user_agent(concat!("etl-pipe/", env!("CARGO_PKG_VERSION")))
            // Follow redirects only within the same origin: reqwest would carry a custom
            // credential header (not `Authorization`) to another host.
            .redirect(reqwest::redirect::Policy::custom(|a| {
                let same = a.previous().last().is_some_and(|p| {
                    p.scheme() == a.url().scheme()
                        && p.host_str() == a.url().host_str()
                        && p.port_or_known_default() == a.url().port_or_known_default()
                });
                if same && a.previous().len() < 5 {
                    a.follow()
                } else {
                    a.stop()
                }
            }))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", e.without_url()))?;
        Ok(HttpSource {
            client,
            auth,
            limiter: RateLimiter::new(cfg.rate_limit),
            retry: cfg.retry.clone(),
            stats: HttpStats::default(),
            kept: std::sync::Mutex::new(None),
        })
    }

    /// Fetches `url` and hands the 2xx answer to `parse`; a parse error counts as a broken
    /// answer and is retried like a 5xx.
    pub async fn fetch<T>(
        &self,
        url: &Url,
        stream: &str,
        shutdown: &CancellationToken,
        mut parse: impl FnMut(Answer) -> Result<T, String>,
    ) -> Result<T, FetchError> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((u, answer, at)) = kept {
            if &u == url && at.elapsed() < KEPT_FOR {
                if let Ok(v) = parse(answer) {
                    return Ok(v);
                }
            }
        }
        let mut tries = Tries::new(self, url, stream);
        loop {
            let reason = match tries.next(shutdown).await? {
                Attempt::Status {
                    status: 200..=299,
                    body,
                    link,
                    ..
                } => match parse(Answer {
                    body,
                    link,
                    fetched_at: Utc::now(),
                }) {
                    Ok(v) => return Ok(v),
                    Err(e) => format!("unreadable page: {e}"),
                },
                Attempt::Status {
                    status: 429,
                    retry_after,
                    ..
                } => {
                    let wait = self.rate_limit_wait(&mut tries, retry_after)?;
                    tracing::debug!(url = %tries.shown, wait_ms = wait.as_millis() as u64, "rate limited (429): waiting Retry-After");
                    tries.pause(wait, shutdown).await?;
                    continue;
                }
                Attempt::Status {
                    status: status @ (408 | 500..=599),
                    ..
                } => format!("HTTP {status}"),
                Attempt::Status { status, .. } => {
                    let reason = if (300..400).contains(&status) {
                        format!("HTTP {status}: redirect to another origin not followed")
                    } else {
                        format!("HTTP {status} (not retried)")
                    };
                    return Err(tries.failed(reason));
                }
                Attempt::Broken(reason) => reason,
            };
            let Some(wait) = tries.failure(self.retry.max_attempts) else {
                let gave_up = format!("{reason}; gave up after {} attempts", tries.failures);
                return Err(tries.failed(gave_up));
            };
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("etl_extract_retries_total").increment(1);
            tracing::info!(url = %tries.shown, attempt = tries.n, wait_ms = wait.as_millis() as u64, reason = %reason, "retrying request");
            sleep_or_cancel(wait, shutdown).await?;
        }
    }

    /// A 429 to a page request: counted; how long to wait, or the request fails when it was
    /// rate limited too often or is asked to wait longer than `max_retry_after`.
    fn rate_limit_wait(
        &self,
        tries: &mut Tries<'_>,
        retry_after: Option<Duration>,
    ) -> Result<Duration, FetchError> {
        tries.rate_limited();
        if tries.limited > self.retry.max_rate_limited {
            return Err(tries.failed(format!(
                "still rate limited (429) after {} waits (extract.retry.max_rate_limited)",
                self.retry.max_rate_limited
            )));
        }
        let wait = match retry_after {
            Some(w) => w,
            None => backoff(&self.retry, tries.limited),
        };
        if wait > self.retry.max_retry_after {
            return Err(tries.failed(format!(
                "429 asks to wait {wait:?}, longer than extract.retry.max_retry_after ({:?})",
                self.retry.max_retry_after
            )));
        }
        Ok(wait)
    }

    /// The availability check: `Ok` when the API answers 2xx with the credential.
    /// `keep`: the URL is the pass's first page, whose answer the pass then takes from here.
    pub async fn probe(
        &self,
        url: &Url,
        attempts: u32,
        keep: bool,
        shutdown: &CancellationToken,
    ) -> Result<(), FetchError> {
        *self.kept.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut tries = Tries::new(self, url, "probe");
        loop {
            let reason = match tries.next(shutdown).await? {
                Attempt::Status {
                    status: 200..=299,
                    body,
                    link,
                    ..
                } => {
                    tracing::info!(url = %tries.shown, attempts = tries.n, "source available");
                    if keep {
                        let answer = Answer {
                            body,
                            link,
                            fetched_at: Utc::now(),
                        };
                        *self.kept.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((url.clone(), answer, std::time::Instant::now()));
                    }
                    return Ok(());
                }
                Attempt::Status {
                    status: 429,
                    retry_after,
                    ..
                } if tries.limited < self.retry.max_rate_limited => {
                    // Rate limited means the API is up; wait as told.
                    tries.rate_limited();
                    let wait = retry_after
                        .unwrap_or_else(|| backoff(&self.retry, tries.limited))
                        .min(self.retry.max_retry_after);
                    tries.pause(wait, shutdown).await?;
                    continue;
                }
                Attempt::Status {
                    status: status @ (408 | 429 | 500..=599),
                    ..
                } => format!("HTTP {status}"),
                Attempt::Status { status, .. } => {
                    return Err(tries.failed(format!(
                        "probe answered HTTP {status}: check extract.url / extract.probe.url"
                    )))
                }
                Attempt::Broken(reason) => reason,
            };
            let Some(wait) = tries.failure(attempts) else {
                return Err(tries.failed(reason));
            };
            tracing::warn!(
                url = %tries.shown,
                attempt = tries.n,
                of = attempts,
                wait_ms = wait.as_millis() as u64,
                reason = %reason,
                "source unavailable; probing again"
            );
            sleep_or_cancel(wait, shutdown).await?;
        }
    }
}

/// One request's attempts so far: the loop `fetch` and `probe` share (wait for the rate
/// limiter, attempt, count 429s and failures, back off).
struct Tries<'a> {
    http: &'a HttpSource,
    url: &'a Url,
    stream: &'a str,
    /// The URL as logged and reported (credential redacted).
    shown: String,
    /// Attempts made.
    n: u32,
    /// Failed attempts (429s are counted apart).
    failures: u32,
    /// 429 answers.
    limited: u32,
}

impl<'a> Tries<'a> {
    fn new(http: &'a HttpSource, url: &'a Url, stream: &'a str) -> Self {
        Tries {
            http,
            url,
            stream,
            shown: http.auth.redact(url.as_str()),
            n: 0,
            failures: 0,
            limited: 0,
        }
    }

    /// Waits for this request's turn at the rate limiter, then makes the next attempt. A
    /// rejected credential (401/403) ends the request: it is never retried.
    async fn next(&mut self, shutdown: &CancellationToken) -> Result<Attempt, FetchError> {
        tokio::select! {
            _ = self.http.limiter.acquire() => {}
            _ = shutdown.cancelled() => return Err(FetchError::Cancelled),
        }
        self.n += 1;
        match self.http.attempt(self.url, self.stream, self.n).await {
            Attempt::Status {
                status: status @ (401 | 403),
                ..
            } => Err(FetchError::Rejected {
                status,
                url: self.shown.clone(),
            }),
            attempt => Ok(attempt),
        }
    }

    /// Counts a 429.
    fn rate_limited(&mut self) {
        self.limited += 1;
        self.http.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("etl_extract_rate_limited_total").increment(1);
    }

    /// Pauses every request for `wait` (the limit is per key) and waits it out.
    async fn pause(&self, wait: Duration, shutdown: &CancellationToken) -> Result<(), FetchError> {
        self.http.limiter.pause(Instant::now() + wait);
        sleep_or_cancel(wait, shutdown).await
    }

    /// Counts a failed attempt: the backoff before the next one, or `None` when this was the
    /// last of `max` attempts.
    fn failure(&mut self, max: u32) -> Option<Duration> {
        self.failures += 1;
        (self.failures < max).then(|| backoff(&self.http.retry, self.failures))
    }

    fn failed(&self, reason: String) -> FetchError {
        FetchError::Failed {
            url: self.shown.clone(),
            attempts: self.n,
            reason,
        }
    }
}
