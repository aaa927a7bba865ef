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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Url;
use tokio_util::sync::CancellationToken;

use super::config::{ExtractConfig, RetryConfig};
use super::source::Auth;

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

/// The delay after the `n`-th failure (1-based), by the one retry policy ([`crate::retry`]).
fn backoff(retry: &RetryConfig, n: u32) -> Duration {
    crate::retry::delay(retry.initial_backoff, retry.max_backoff, n)
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
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

enum Attempt {
    Status {
        status: u16,
        body: Vec<u8>,
        link: Option<String>,
        retry_after: Option<Duration>,
    },
    Broken(String),
}

/// The HTTP client of one extractor.
pub struct HttpSource {
    client: reqwest::Client,
    pub auth: Auth,
    limiter: RateLimiter,
    retry: RetryConfig,
    pub stats: HttpStats,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

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
        })
    }

    /// One GET, logged. `url` carries no credential; it is added here, on the wire only.
    async fn attempt(&self, url: &Url, stream: &str, attempt: u32) -> Attempt {
        let shown = self.auth.redact(url.as_str());
        let mut req = self.client.get(self.auth.request_url(url));
        if let Some((name, value)) = self.auth.header() {
            match reqwest::header::HeaderValue::from_str(&value) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    req = req.header(name, v);
                }
                Err(_) => {
                    return Attempt::Broken(
                        "the credential is not a valid header value".to_string(),
                    )
                }
            }
        }
        let start = Utc::now();
        let t0 = Instant::now();
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let result = async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let link = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now()));
            let body: Vec<u8> = resp.bytes().await?.into();
            Ok::<_, reqwest::Error>((status, body, link, retry_after))
        }
        .await;
        let end = Utc::now();
        let elapsed = t0.elapsed();
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        metrics::histogram!("etl_extract_http_request_duration_seconds")
            .record(elapsed.as_secs_f64());
        match result {
            Ok((status, body, link, retry_after)) => {
                let bytes = body.len() as u64;
                self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
                metrics::counter!("etl_extract_http_bytes_total").increment(bytes);
                metrics::counter!("etl_extract_http_requests_total", "status" => status_class(status))
                    .increment(1);
                tracing::info!(
                    target: "etl_pipe::extract::http",
                    method = "GET",
                    url = %shown,
                    status,
                    bytes,
                    start = %ts(start),
                    end = %ts(end),
                    duration_ms,
                    stream,
                    attempt,
                    "http request"
                );
                Attempt::Status {
                    status,
                    body,
                    link,
                    retry_after,
                }
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else if e.is_body() || e.is_decode() {
                    "body"
                } else {
                    "transport"
                };
                let reason = self.auth.redact(&format!("{kind}: {}", error_chain(&e)));
                metrics::counter!("etl_extract_http_requests_total", "status" => kind).increment(1);
                tracing::warn!(
                    target: "etl_pipe::extract::http",
                    method = "GET",
                    url = %shown,
                    status = 0u16,
                    bytes = 0u64,
                    start = %ts(start),
                    end = %ts(end),
                    duration_ms,
                    stream,
                    attempt,
                    error = %reason,
                    "http request failed"
                );
                Attempt::Broken(reason)
            }
        }
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
        let shown = self.auth.redact(url.as_str());
        let mut failures = 0u32;
        let mut limited = 0u32;
        let mut n = 0u32;
        loop {
            tokio::select! {
                _ = self.limiter.acquire() => {}
                _ = shutdown.cancelled() => return Err(FetchError::Cancelled),
            }
            n += 1;
            let reason = match self.attempt(url, stream, n).await {
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
                    status: status @ (401 | 403),
                    ..
                } => return Err(FetchError::Rejected { status, url: shown }),
                Attempt::Status {
                    status: 429,
                    retry_after,
                    ..
                } => {
                    limited += 1;
                    self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("etl_extract_rate_limited_total").increment(1);
                    if limited > self.retry.max_rate_limited {
                        return Err(FetchError::Failed {
                            url: shown,
                            attempts: n,
                            reason: format!(
                                "still rate limited (429) after {} waits (extract.retry.max_rate_limited)",
                                self.retry.max_rate_limited
                            ),
                        });
                    }
                    let wait = match retry_after {
                        Some(w) => w,
                        None => backoff(&self.retry, limited),
                    };
                    if wait > self.retry.max_retry_after {
                        return Err(FetchError::Failed {
                            url: shown,
                            attempts: n,
                            reason: format!(
                                "429 asks to wait {wait:?}, longer than extract.retry.max_retry_after ({:?})",
                                self.retry.max_retry_after
                            ),
                        });
                    }
                    tracing::debug!(url = %shown, wait_ms = wait.as_millis() as u64, "rate limited (429): waiting Retry-After");
                    self.limiter.pause(Instant::now() + wait);
                    sleep_or_cancel(wait, shutdown).await?;
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
                    return Err(FetchError::Failed {
                        url: shown,
                        attempts: n,
                        reason,
                    });
                }
                Attempt::Broken(reason) => reason,
            };
            failures += 1;
            if failures >= self.retry.max_attempts {
                return Err(FetchError::Failed {
                    url: shown,
                    attempts: n,
                    reason: format!("{reason}; gave up after {failures} attempts"),
                });
            }
            let wait = backoff(&self.retry, failures);
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("etl_extract_retries_total").increment(1);
            tracing::info!(url = %shown, attempt = n, wait_ms = wait.as_millis() as u64, reason = %reason, "retrying request");
            sleep_or_cancel(wait, shutdown).await?;
        }
    }

    /// The availability check: `Ok` when the API answers 2xx with the credential.
    pub async fn probe(
        &self,
        url: &Url,
        attempts: u32,
        shutdown: &CancellationToken,
    ) -> Result<(), FetchError> {
        let shown = self.auth.redact(url.as_str());
        let mut failures = 0u32;
        let mut limited = 0u32;
        let mut n = 0u32;
        loop {
            tokio::select! {
                _ = self.limiter.acquire() => {}
                _ = shutdown.cancelled() => return Err(FetchError::Cancelled),
            }
            n += 1;
            let reason = match self.attempt(url, "probe", n).await {
                Attempt::Status {
                    status: 200..=299, ..
                } => {
                    tracing::info!(url = %shown, attempts = n, "source available");
                    return Ok(());
                }
                Attempt::Status {
                    status: status @ (401 | 403),
                    ..
                } => return Err(FetchError::Rejected { status, url: shown }),
                Attempt::Status {
                    status: 429,
                    retry_after,
                    ..
                } if limited < self.retry.max_rate_limited => {
                    // Rate limited means the API is up; wait as told.
                    limited += 1;
                    self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("etl_extract_rate_limited_total").increment(1);
                    let wait = retry_after
                        .unwrap_or_else(|| backoff(&self.retry, limited))
                        .min(self.retry.max_retry_after);
                    self.limiter.pause(Instant::now() + wait);
                    sleep_or_cancel(wait, shutdown).await?;
                    continue;
                }
                Attempt::Status {
                    status: status @ (408 | 429 | 500..=599),
                    ..
                } => format!("HTTP {status}"),
                Attempt::Status { status, .. } => {
                    return Err(FetchError::Failed {
                        url: shown,
                        attempts: n,
                        reason: format!(
                            "probe answered HTTP {status}: check extract.url / extract.probe.url"
                        ),
                    })
                }
                Attempt::Broken(reason) => reason,
            };
            failures += 1;
            if failures >= attempts {
                return Err(FetchError::Failed {
                    url: shown,
                    attempts: n,
                    reason,
                });
            }
            let wait = backoff(&self.retry, failures);
            tracing::warn!(
                url = %shown,
                attempt = n,
                of = attempts,
                wait_ms = wait.as_millis() as u64,
                reason = %reason,
                "source unavailable; probing again"
            );
            sleep_or_cancel(wait, shutdown).await?;
        }
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        401 | 403 => "auth",
        429 => "429",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The error and its causes, without the request URL (the caller logs a redacted one).
fn error_chain(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut s = String::new();
    let mut cur: Option<&dyn Error> = e.source();
    while let Some(c) = cur {
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&c.to_string());
        cur = c.source();
    }
    if s.is_empty() {
        "request failed".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

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
