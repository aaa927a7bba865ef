//! `etl-pipe sample-api`: a demo HTTP API with the shape of the original project's source, the
//! paged league entries `GET /lol/league-exp/v4/entries/{queue}/{tier}/{division}?page=N`
//! (token in `X-Riot-Token` or `?api_key=`, a JSON array per page, `[]` past the last page).
//!
//! The data is deterministic (see [`data`]); the faults are not tied to entries but to
//! requests: 5xx answers, slow answers, truncated bodies and a per-second rate limit answered
//! with 429 + `Retry-After`. Also served: `/lol/status/v4/platform-data` (a cheap probe target,
//! auth and rate limit but no injected faults), `/sample/v1/info` (the layout, no auth) and
//! `/healthz`.
pub mod data;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rand::Rng;
use tokio_util::sync::CancellationToken;

pub use data::{Dataset, Expected, DEFAULT_DIVISIONS, DEFAULT_QUEUES, DEFAULT_TIERS};

use crate::settings::Secret;

/// Everything the sample API can be told.
#[derive(Debug, Clone)]
pub struct SampleApiOptions {
    pub dataset: Dataset,
    /// Required token (`X-Riot-Token` header or `api_key` query); `None` = open.
    pub token: Option<Secret>,
    /// Requests per second before answering 429 (`None` = unlimited).
    pub rate_limit: Option<u32>,
    /// Share of entry-page requests answered 500/503.
    pub fail_rate: f64,
    /// Share of entry-page requests delayed by `slow`.
    pub slow_rate: f64,
    pub slow: Duration,
    /// Share of entry-page answers whose body is cut in half (200, not JSON).
    pub truncate_rate: f64,
}

impl SampleApiOptions {
    pub fn new(dataset: Dataset) -> Self {
        SampleApiOptions {
            dataset,
            token: None,
            rate_limit: None,
            fail_rate: 0.0,
            slow_rate: 0.0,
            slow: Duration::from_millis(500),
            truncate_rate: 0.0,
        }
    }
}

/// What the server has answered so far.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub requests: AtomicU64,
    /// 200 answers of entry pages (including empty ones).
    pub pages: AtomicU64,
    pub entries: AtomicU64,
    pub rate_limited: AtomicU64,
    pub failed: AtomicU64,
    pub truncated: AtomicU64,
    pub slow: AtomicU64,
    pub unauthorized: AtomicU64,
}

impl ServerStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

struct Shared {
    opts: SampleApiOptions,
    stats: Arc<ServerStats>,
    window: Mutex<(Instant, u32)>,
}

/// A running sample API.
pub struct SampleApi {
    pub addr: SocketAddr,
    pub stats: Arc<ServerStats>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SampleApi {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// The entries URL template for `extract.url`.
    pub fn entries_template(&self) -> String {
        format!(
            "{}/lol/league-exp/v4/entries/{{queue}}/{{tier}}/{{division}}",
            self.base_url()
        )
    }
    /// Stops the server and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Starts the server on `addr` (port 0 = any free port) in the background.
pub async fn start(opts: SampleApiOptions, addr: SocketAddr) -> std::io::Result<SampleApi> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(ServerStats::default());
    let shared = Arc::new(Shared {
        opts,
        stats: stats.clone(),
        window: Mutex::new((Instant::now(), 0)),
    });
    let app = Router::new()
        .route(
            "/lol/league-exp/v4/entries/{queue}/{tier}/{division}",
            get(entries),
        )
        .route("/lol/status/v4/platform-data", get(status))
        .route("/sample/v1/info", get(info))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared);
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "sample API stopped");
        }
    });
    Ok(SampleApi {
        addr,
        stats,
        shutdown,
        task,
    })
}

fn riot_error(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "{{\"status\":{{\"message\":\"{message}\",\"status_code\":{}}}}}",
        status.as_u16()
    );
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn query_map(q: Option<&str>) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(decode(k), decode(v));
    }
    m
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes the query string, then auth, then the rate limit: the query's parameters, or the
/// answer when the request stops here (boxed: a `Response` is large, the refusal rare).
fn gate(
    s: &Shared,
    headers: &HeaderMap,
    q: Option<&str>,
) -> Result<HashMap<String, String>, Box<Response>> {
    let query = query_map(q);
    s.stats.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(token) = &s.opts.token {
        let given = headers
            .get("x-riot-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| query.get("api_key").cloned());
        match given {
            None => {
                s.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
                return Err(Box::new(riot_error(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                )));
            }
            Some(g) if g != token.expose() => {
                s.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
                return Err(Box::new(riot_error(StatusCode::FORBIDDEN, "Forbidden")));
            }
            Some(_) => {}
        }
    }
    if let Some(limit) = s.opts.rate_limit {
        let over = match s.window.lock() {
            Ok(mut w) => {
                let now = Instant::now();
                if now.duration_since(w.0) >= Duration::from_secs(1) {
                    *w = (now, 0);
                }
                w.1 += 1;
                (w.1 > limit)
                    .then(|| Duration::from_secs(1).saturating_sub(now.duration_since(w.0)))
            }
            Err(_) => None,
        };
        if let Some(rest) = over {
            s.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            let secs = rest.as_secs_f64().ceil().max(1.0) as u64;
            let mut r = riot_error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r.headers_mut()
                .insert("x-rate-limit-type", HeaderValue::from_static("application"));
            return Err(Box::new(r));
        }
    }
    Ok(query)
}

async fn entries(
    State(s): State<Arc<Shared>>,
    Path((queue, tier, division)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = match gate(&s, &headers, q.as_deref()) {
        Ok(query) => query,
        Err(r) => return *r,
    };
    let Some(c) = s.opts.dataset.stream_index(&queue, &tier, &division) else {
        return riot_error(
            StatusCode::BAD_REQUEST,
            "Bad request - unknown queue, tier or division",
        );
    };
    let page = match query.get("page").map(|p| p.parse::<u64>()) {
        None => 1,
        Some(Ok(p)) if p >= 1 => p,
        Some(_) => return riot_error(StatusCode::BAD_REQUEST, "Bad request - page must be >= 1"),
    };
    let (fail, slow, truncate) = {
        let mut rng = rand::thread_rng();
        (
            rng.gen_bool(s.opts.fail_rate.clamp(0.0, 1.0)),
            rng.gen_bool(s.opts.slow_rate.clamp(0.0, 1.0)),
            rng.gen_bool(s.opts.truncate_rate.clamp(0.0, 1.0)),
        )
    };
    if slow {
        s.stats.slow.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(s.opts.slow).await;
    }
    if fail {
        s.stats.failed.fetch_add(1, Ordering::Relaxed);
        return if rand::random::<bool>() {
            riot_error(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable")
        } else {
            riot_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
        };
    }
    let d = &s.opts.dataset;
    let n = d.page_range(c, page).end - d.page_range(c, page).start;
    let mut body = String::with_capacity(2 + n as usize * 300);
    d.write_page(c, page, &mut body);
    if truncate {
        s.stats.truncated.fetch_add(1, Ordering::Relaxed);
        body.truncate(body.len() / 2);
    } else {
        s.stats.pages.fetch_add(1, Ordering::Relaxed);
        s.stats.entries.fetch_add(n, Ordering::Relaxed);
    }
    tracing::debug!(queue, tier, division, page, entries = n, "page served");
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn status(
    State(s): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&s, &headers, q.as_deref()) {
        return *r;
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        r#"{"id":"SAMPLE","name":"etl-pipe sample API","locales":["en_US"],"maintenances":[],"incidents":[]}"#,
    )
        .into_response()
}

async fn info(State(s): State<Arc<Shared>>) -> Response {
    let d = &s.opts.dataset;
    let v = serde_json::json!({
        "records": d.records,
        "page_size": d.page_size,
        "seed": d.seed,
        "queues": d.queues,
        "tiers": d.tiers,
        "divisions": d.divisions,
        "streams": d.streams(),
        "pages": (0..d.streams()).map(|c| d.pages(c)).sum::<u64>(),
    });
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        v.to_string(),
    )
        .into_response()
}

/// `etl-pipe sample-api` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SampleApiArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port (0 = any free port; the chosen one is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Entries in the dataset (spread over queue × tier × division).
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Entries per page (the original API serves 205).
    #[arg(long, default_value_t = 205)]
    pub page_size: u64,
    /// Required token (header `X-Riot-Token` or query `api_key`); unset = no auth.
    #[arg(long, env = "SAMPLE_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Requests per second before answering 429 with `Retry-After`.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Seed of the deterministic dataset.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share (0..1) of page requests answered 500/503.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Share of page requests answered slowly.
    #[arg(long, default_value_t = 0.0)]
    pub slow_rate: f64,
    /// Delay of a slow answer, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub slow_ms: u64,
    /// Share of page answers whose body is cut in half.
    #[arg(long, default_value_t = 0.0)]
    pub truncate_rate: f64,
    /// Share of entries that are malformed (broken JSON string, no summonerId, not an object).
    #[arg(long, default_value_t = 0.0)]
    pub malformed_rate: f64,
    /// Share of entries missing one to three fields (omitted or null).
    #[arg(long, default_value_t = 0.0)]
    pub missing_rate: f64,
    /// Shift the numeric distributions from page N+1 of every stream on.
    #[arg(long)]
    pub drift_after_pages: Option<u64>,
    /// Queues (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_QUEUES.iter().map(|s| s.to_string()))]
    pub queues: Vec<String>,
    /// Tiers (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_TIERS.iter().map(|s| s.to_string()))]
    pub tiers: Vec<String>,
    /// Divisions (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_DIVISIONS.iter().map(|s| s.to_string()))]
    pub divisions: Vec<String>,
}

impl SampleApiArgs {
    /// The server options these flags describe.
    pub fn options(&self) -> Result<SampleApiOptions, String> {
        for (name, v) in [
            ("--fail-rate", self.fail_rate),
            ("--slow-rate", self.slow_rate),
            ("--truncate-rate", self.truncate_rate),
            ("--malformed-rate", self.malformed_rate),
            ("--missing-rate", self.missing_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        if self.page_size == 0 {
            return Err("--page-size must be at least 1".into());
        }
        if self.queues.is_empty() || self.tiers.is_empty() || self.divisions.is_empty() {
            return Err("--queues, --tiers and --divisions need at least one value each".into());
        }
        let mut d = Dataset::new(self.records, self.page_size, self.seed);
        d.queues = self.queues.clone();
        d.tiers = self.tiers.clone();
        d.divisions = self.divisions.clone();
        d.malformed_rate = self.malformed_rate;
        d.missing_rate = self.missing_rate;
        d.drift_after_pages = self.drift_after_pages;
        let mut o = SampleApiOptions::new(d);
        o.token = self
            .token
            .clone()
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        o.rate_limit = self.rate_limit;
        o.fail_rate = self.fail_rate;
        o.slow_rate = self.slow_rate;
        o.slow = Duration::from_millis(self.slow_ms);
        o.truncate_rate = self.truncate_rate;
        Ok(o)
    }
}

/// Runs the server until `shutdown`.
pub async fn serve(args: &SampleApiArgs, shutdown: CancellationToken) -> Result<(), String> {
    let opts = args.options()?;
    let d = opts.dataset.clone();
    let auth = opts.token.is_some();
    let api = start(opts, SocketAddr::new(args.host, args.port))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let pages: u64 = (0..d.streams()).map(|c| d.pages(c)).sum();
    println!(
        "sample API on {} : {} entries in {} streams, {} pages of {}; token {}; template {}",
        api.base_url(),
        d.records,
        d.streams(),
        pages,
        d.page_size,
        if auth { "required" } else { "not required" },
        api.entries_template()
    );
    tracing::info!(addr = %api.addr, records = d.records, streams = d.streams(), "sample API listening");
    shutdown.cancelled().await;
    api.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let m = query_map(Some("page=3&api_key=a%2Bb%3D&x"));
        assert_eq!(m["page"], "3");
        assert_eq!(m["api_key"], "a+b=");
        assert_eq!(m["x"], "");
        assert_eq!(decode("50%"), "50%");
        assert_eq!(decode("%4"), "%4");
    }
}
