//! Shared fixtures for the schema-registry tests: the real local registry (Apicurio, through
//! its Confluent-compatible API) and a switchable proxy in front of it that can play an outage
//! (503), a registry that does not know an id (404), and records what it was sent.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// The registry's Confluent-compatible base URL (`ETL_TEST_REGISTRY`, default the local stack's).
pub fn registry_url() -> String {
    std::env::var("ETL_TEST_REGISTRY")
        .unwrap_or_else(|_| "http://127.0.0.1:8081/apis/ccompat/v7".into())
}

/// Fails the test with a clear message when the registry does not answer — never skips.
pub async fn require_registry() {
    let url = format!("{}/config", registry_url());
    match reqwest::get(&url).await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => panic!(
            "schema registry at {url} answered {}; start the local stack with `deploy/local/stack.sh up`",
            r.status()
        ),
        Err(e) => panic!(
            "schema registry at {url} unreachable ({e}); start the local stack with `deploy/local/stack.sh up`"
        ),
    }
}

/// `(id, schema text)` of `subject`'s latest version, `None` on 404.
pub async fn latest(subject: &str) -> Option<(u32, String)> {
    let r = reqwest::get(format!(
        "{}/subjects/{subject}/versions/latest",
        registry_url()
    ))
    .await
    .unwrap();
    if r.status() == StatusCode::NOT_FOUND {
        return None;
    }
    assert!(r.status().is_success(), "{}", r.status());
    let j: serde_json::Value = r.json().await.unwrap();
    Some((
        j["id"].as_u64().unwrap() as u32,
        j["schema"].as_str().unwrap().to_string(),
    ))
}

/// Registers `schema` under `subject` directly (not through etl-pipe); returns the id.
pub async fn register(subject: &str, schema: &str) -> u32 {
    let r = reqwest::Client::new()
        .post(format!("{}/subjects/{subject}/versions", registry_url()))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&serde_json::json!({ "schema": schema }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_u64()
        .unwrap() as u32
}

/// The compatibility level set on `subject` itself (`None` when it has none of its own).
pub async fn subject_level(subject: &str) -> Option<String> {
    let r = reqwest::get(format!("{}/config/{subject}", registry_url()))
        .await
        .unwrap();
    if r.status() == StatusCode::NOT_FOUND {
        return None;
    }
    let j: serde_json::Value = r.json().await.unwrap();
    j["compatibilityLevel"].as_str().map(str::to_string)
}

pub async fn set_level(subject: &str, level: &str) {
    let r = reqwest::Client::new()
        .put(format!("{}/config/{subject}", registry_url()))
        .json(&serde_json::json!({ "compatibility": level }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// What the proxy does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Pass it to the real registry.
    Forward = 0,
    /// Answer 503 to everything (the registry is down).
    Unavailable = 1,
    /// Answer 404 `{"error_code":40403}` to `GET /schemas/ids/{id}`, forward the rest.
    IdsNotFound = 2,
}

struct ProxyState {
    mode: AtomicU8,
    upstream: String,
    client: reqwest::Client,
    /// `Authorization` headers seen.
    auth: Mutex<Vec<String>>,
    /// `GET /schemas/ids/...` requests seen (whatever the mode).
    id_lookups: AtomicUsize,
    /// Every request's `METHOD path`.
    requests: Mutex<Vec<String>>,
}

/// A proxy in front of the real registry on a free loopback port.
pub struct Proxy {
    state: Arc<ProxyState>,
    addr: SocketAddr,
}

impl Proxy {
    pub async fn start() -> Proxy {
        let upstream = registry_url();
        let origin = {
            let u = reqwest::Url::parse(&upstream).unwrap();
            format!("{}://{}", u.scheme(), u.host_str().unwrap())
                + &u.port().map(|p| format!(":{p}")).unwrap_or_default()
        };
        let state = Arc::new(ProxyState {
            mode: AtomicU8::new(Mode::Forward as u8),
            upstream: origin,
            client: reqwest::Client::new(),
            auth: Mutex::new(Vec::new()),
            id_lookups: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy { state, addr }
    }

    /// The proxied registry's base URL (same path as the real one).
    pub fn url(&self) -> String {
        let path = reqwest::Url::parse(&registry_url())
            .unwrap()
            .path()
            .trim_end_matches('/')
            .to_string();
        format!("http://{}{path}", self.addr)
    }

    pub fn set_mode(&self, m: Mode) {
        self.state.mode.store(m as u8, Ordering::SeqCst);
    }

    pub fn id_lookups(&self) -> usize {
        self.state.id_lookups.load(Ordering::SeqCst)
    }

    pub fn auth_headers(&self) -> Vec<String> {
        self.state.auth.lock().unwrap().clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }
}

async fn handle(
    State(s): State<Arc<ProxyState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    s.requests.lock().unwrap().push(format!("{method} {path}"));
    if let Some(a) = headers.get("authorization") {
        s.auth
            .lock()
            .unwrap()
            .push(a.to_str().unwrap_or_default().to_string());
    }
    let is_id_lookup = method == Method::GET && uri.path().contains("/schemas/ids/");
    if is_id_lookup {
        s.id_lookups.fetch_add(1, Ordering::SeqCst);
    }
    match s.mode.load(Ordering::SeqCst) {
        1 => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error_code":50300,"message":"down for the test"}"#,
            )
                .into_response()
        }
        2 if is_id_lookup => {
            return (
                StatusCode::NOT_FOUND,
                r#"{"error_code":40403,"message":"Schema not found"}"#,
            )
                .into_response()
        }
        _ => {}
    }
    let mut rb = s
        .client
        .request(method, format!("{}{path}", s.upstream))
        .timeout(Duration::from_secs(15))
        .body(body);
    for k in ["content-type", "accept"] {
        if let Some(v) = headers.get(k) {
            rb = rb.header(k, v.clone());
        }
    }
    match rb.send().await {
        Ok(r) => {
            let status = r.status();
            let ct = r.headers().get("content-type").cloned();
            let bytes = r.bytes().await.unwrap_or_default();
            let mut resp = (status, bytes).into_response();
            if let Some(ct) = ct {
                resp.headers_mut().insert("content-type", ct);
            }
            resp
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// Reads `topics` from the beginning (read_committed) until `done(messages)` or `timeout`.
pub fn read_until(
    topics: &[String],
    timeout: Duration,
    done: impl Fn(&[rdkafka::message::OwnedMessage]) -> bool,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", crate::common::kafka_brokers())
        .set("group.id", crate::common::unique("registry-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&refs).unwrap();
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while std::time::Instant::now() < deadline && !done(&out) {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            out.push(m.detach());
        }
    }
    out
}
