//! One GET: the request with the credential (on the wire only), the answer read whole, and
//! the log line and metrics of every attempt (method, redacted URL, status, bytes, start, end,
//! duration).
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Url;

use super::HttpSource;

/// What one attempt got: an answer (any status), or none / a broken one (the reason).
pub(super) enum Attempt {
    Status {
        status: u16,
        body: Vec<u8>,
        link: Option<String>,
        retry_after: Option<Duration>,
    },
    Broken(String),
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

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl HttpSource {
    /// One GET, logged. `url` carries no credential; it is added here, on the wire only.
    pub(super) async fn attempt(&self, url: &Url, stream: &str, attempt: u32) -> Attempt {
        let shown = self.auth.redact(url.as_str());
        let req = match self.request(url) {
            Ok(req) => req,
            Err(broken) => return broken,
        };
        let start = Utc::now();
        let t0 = Instant::now();
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let result = send(req).await;
        let end = Utc::now();
        let elapsed = t0.elapsed();
        let log = RequestLog {
            url: &shown,
            stream,
            attempt,
            start,
            end,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
        };
        metrics::histogram!("etl_extract_http_request_duration_seconds")
            .record(elapsed.as_secs_f64());
        match result {
            Ok((status, body, link, retry_after)) => {
                self.answered(&log, status, body.len() as u64);
                Attempt::Status {
                    status,
                    body,
                    link,
                    retry_after,
                }
            }
            Err(e) => Attempt::Broken(self.broken(&log, &e)),
        }
    }

    /// The GET of `url` with the credential (a header, or the query parameter).
    fn request(&self, url: &Url) -> Result<reqwest::RequestBuilder, Attempt> {
        let mut req = self.client.get(self.auth.request_url(url));
        if let Some((name, value)) = self.auth.header() {
            match reqwest::header::HeaderValue::from_str(&value) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    req = req.header(name, v);
                }
                Err(_) => {
                    return Err(Attempt::Broken(
                        "the credential is not a valid header value".to_string(),
                    ))
                }
            }
        }
        Ok(req)
    }

    /// An answer came: count its bytes and status, log it.
    fn answered(&self, log: &RequestLog<'_>, status: u16, bytes: u64) {
        self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        metrics::counter!("etl_extract_http_bytes_total").increment(bytes);
        metrics::counter!("etl_extract_http_requests_total", "status" => status_class(status))
            .increment(1);
        tracing::info!(
            target: "etl_pipe::extract::http",
            method = "GET",
            url = %log.url,
            status,
            bytes,
            start = %ts(log.start),
            end = %ts(log.end),
            duration_ms = log.duration_ms,
            stream = log.stream,
            attempt = log.attempt,
            "http request"
        );
    }

    /// No answer (or a broken one): count and log it; the reason, redacted.
    fn broken(&self, log: &RequestLog<'_>, e: &reqwest::Error) -> String {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else if e.is_body() || e.is_decode() {
            "body"
        } else {
            "transport"
        };
        let reason = self.auth.redact(&format!("{kind}: {}", error_chain(e)));
        metrics::counter!("etl_extract_http_requests_total", "status" => kind).increment(1);
        tracing::warn!(
            target: "etl_pipe::extract::http",
            method = "GET",
            url = %log.url,
            status = 0u16,
            bytes = 0u64,
            start = %ts(log.start),
            end = %ts(log.end),
            duration_ms = log.duration_ms,
            stream = log.stream,
            attempt = log.attempt,
            error = %reason,
            "http request failed"
        );
        reason
    }
}

/// Sends the request and reads the whole answer: status, body, `Link` and `Retry-After`.
async fn send(
    req: reqwest::RequestBuilder,
) -> Result<(u16, Vec<u8>, Option<String>, Option<Duration>), reqwest::Error> {
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
    Ok((status, body, link, retry_after))
}

/// What every request log line carries besides the outcome.
struct RequestLog<'a> {
    /// Redacted.
    url: &'a str,
    stream: &'a str,
    attempt: u32,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    duration_ms: f64,
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
}
