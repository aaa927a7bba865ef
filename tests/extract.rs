//! The extract stage against the real broker and an in-process sample API on a random port:
//! what lands in `raw` and `dead-letter` (keys, payloads, headers), faults survived, fail-fast
//! on a bad token, checkpoint resume after a graceful stop and after `kill -9`.
mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use etl_pipe::config::{Config, SecretRef, TopicRole};
use etl_pipe::stages::extract::{self, ExtractError, RunOptions};
use etl_pipe::tooling::sample_api::{self, Dataset, Expected, SampleApi, SampleApiOptions};

const TOKEN: &str = "RGAPI-test-7f3e9c-token";

/// A message read back from a topic.
#[derive(Debug, Clone)]
struct Msg {
    key: String,
    payload: Vec<u8>,
    headers: BTreeMap<String, String>,
}

/// Everything committed in `topic` (read_committed, from the beginning to the end).
fn read_all(topic: &str) -> Vec<Msg> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", common::kafka_brokers())
        .set("group.id", common::unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut pending: std::collections::HashSet<i32> = parts.into_iter().collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "reading {topic} did not reach its end"
        );
        match c.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                let mut headers = BTreeMap::new();
                if let Some(h) = m.headers() {
                    for x in h.iter() {
                        headers.insert(
                            x.key.to_string(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(Msg {
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
        }
    }
    out
}

struct Setup {
    cfg: Config,
    api: SampleApi,
    dataset: Dataset,
    _token_dir: tempfile::TempDir,
    token_file: PathBuf,
}

/// Starts a sample API with `opts`, creates this test's topics, and builds a config whose
/// extractor points at the API with the right token (from a secret file).
async fn setup(name: &str, opts: SampleApiOptions) -> Setup {
    common::require_kafka();
    let dataset = opts.dataset.clone();
    let api = sample_api::start(opts, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let mut cfg = common::test_config(name);
    for role in [TopicRole::Raw, TopicRole::DeadLetter] {
        common::create_topic(&cfg.topics.name(role), 3).await;
    }
    common::create_topic(&cfg.topics.name(TopicRole::ExtractState), 1).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let x = &mut cfg.extract;
    x.url = api.entries_template();
    // The status endpoint has no injected faults, so a fault rate never fails the probe.
    x.probe.url = Some(format!("{}/lol/status/v4/platform-data", api.base_url()));
    x.auth.token = SecretRef {
        env: None,
        file: Some(token_file.clone()),
    };
    x.rate_limit = 0.0;
    x.commit_interval = Duration::from_millis(100);
    x.retry.initial_backoff = Duration::from_millis(20);
    x.retry.max_backoff = Duration::from_millis(200);
    x.vars.insert("tier".into(), dataset.tiers.clone());
    x.vars.insert("division".into(), dataset.divisions.clone());
    x.vars.insert("queue".into(), dataset.queues.clone());
    Setup {
        cfg,
        api,
        dataset,
        _token_dir: dir,
        token_file,
    }
}

/// One pass (`extract --once`, `--fresh` when `fresh`), not stopped from outside.
async fn run_once(cfg: &Config, fresh: bool) -> Result<extract::RunReport, ExtractError> {
    let opts = RunOptions { once: true, fresh };
    extract::run(&cfg.common(), &cfg.extract, opts, CancellationToken::new()).await
}

/// A small dataset: 1 queue × 2 tiers × 2 divisions = 4 streams.
fn small(records: u64, page_size: u64, seed: u64) -> Dataset {
    let mut d = Dataset::new(records, page_size, seed);
    d.tiers = vec!["GOLD".into(), "IRON".into()];
    d.divisions = vec!["I".into(), "II".into()];
    d
}

fn with_token(d: Dataset) -> SampleApiOptions {
    let mut o = SampleApiOptions::new(d);
    o.token = Some(etl_pipe::config::Secret::new(TOKEN));
    o
}

/// Asserts `raw` holds every expected record exactly once, with its exact bytes and headers.
fn assert_raw_exactly_once(cfg: &Config, d: &Dataset) {
    let raw = read_all(&cfg.topics.name(TopicRole::Raw));
    let mut expected: HashMap<String, u64> = HashMap::new();
    for i in 0..d.records {
        if let Expected::Record { key } = d.expected(i) {
            expected.insert(key, i);
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for m in &raw {
        *seen.entry(m.key.as_str()).or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dups.is_empty(), "duplicates in raw: {dups:?}");
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !seen.contains_key(k.as_str()))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "missing from raw ({} of {}): {missing:?}",
        expected.len() - seen.len().min(expected.len()),
        expected.len()
    );
    assert_eq!(raw.len(), expected.len());
    for m in &raw {
        let i = expected[&m.key];
        assert_eq!(
            String::from_utf8_lossy(&m.payload),
            d.entry_json(i),
            "payload of {}",
            m.key
        );
        let tp = &m.headers["traceparent"];
        assert!(
            etl_pipe::observability::trace::trace_id(tp).is_some(),
            "traceparent {tp}"
        );
        assert_eq!(m.headers["etl.source"], cfg.extract.source);
        assert!(
            chrono::DateTime::parse_from_rfc3339(&m.headers["etl.fetched_at"]).is_ok(),
            "{:?}",
            m.headers
        );
    }
}

#[tokio::test]
async fn full_pass_lands_exactly_the_expected_records_with_keys_and_headers() {
    let s = setup("x_full", with_token(small(2_000, 50, 11))).await;
    let report = run_once(&s.cfg, false).await.unwrap();
    assert_eq!(report.records, 2_000, "{report}");
    assert_eq!(report.dead_letters, 0);
    assert_eq!(report.completed, 1);
    assert!(report.failed.is_empty());
    // 40 full pages + one empty page per stream (the end marker) + the probe.
    assert_eq!(report.requests, 40 + 4 + 1, "{report}");
    assert_raw_exactly_once(&s.cfg, &s.dataset);
    // The traces are per record.
    let raw = read_all(&s.cfg.topics.name(TopicRole::Raw));
    let traces: std::collections::HashSet<_> =
        raw.iter().map(|m| &m.headers["traceparent"]).collect();
    assert_eq!(traces.len(), raw.len());
    assert!(read_all(&s.cfg.topics.name(TopicRole::DeadLetter)).is_empty());
    s.api.stop().await;
}

#[tokio::test]
async fn rate_limits_5xx_and_truncated_bodies_are_survived_without_loss_or_duplicates() {
    let mut o = with_token(small(3_000, 50, 12));
    o.rate_limit = Some(40);
    o.fail_rate = 0.2;
    o.truncate_rate = 0.1;
    let mut s = setup("x_faults", o).await;
    s.cfg.extract.concurrency = 4;
    s.cfg.extract.retry.max_attempts = 20;
    s.cfg.extract.retry.max_rate_limited = 1000;
    let report = run_once(&s.cfg, false).await.unwrap();
    assert!(report.failed.is_empty(), "{report}");
    assert_eq!(report.records, 3_000, "{report}");
    let st = &s.api.stats;
    let get = sample_api::ServerStats::get;
    assert!(get(&st.rate_limited) > 0, "no 429 was provoked");
    assert!(get(&st.failed) > 0 && get(&st.truncated) > 0);
    assert_eq!(report.rate_limited, get(&st.rate_limited));
    assert!(
        report.retries >= get(&st.failed) + get(&st.truncated),
        "{report}"
    );
    assert_raw_exactly_once(&s.cfg, &s.dataset);
    s.api.stop().await;
}

#[tokio::test]
async fn a_rejected_token_fails_fast_with_a_clear_message_and_is_not_retried() {
    let mut s = setup("x_badtoken", with_token(small(500, 50, 13))).await;
    std::fs::write(&s.token_file, "wrong-secret-value-4242").unwrap();
    s.cfg.extract.probe.attempts = 5;
    let t = Instant::now();
    let err = run_once(&s.cfg, false).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ExtractError::Rejected { status: 403, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("rejected") && msg.contains("extract.auth.token"),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong-secret-value-4242") && !format!("{err:?}").contains("wrong-secret")
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    // One probe, no retry.
    assert_eq!(sample_api::ServerStats::get(&s.api.stats.requests), 1);
    assert!(read_all(&s.cfg.topics.name(TopicRole::Raw)).is_empty());
    s.api.stop().await;
}

#[tokio::test]
async fn malformed_records_reach_dead_letter_with_reasons_and_the_rest_reach_raw() {
    let mut d = small(3_000, 100, 14);
    d.malformed_rate = 0.05;
    d.missing_rate = 0.2;
    let s = setup("x_malformed", with_token(d)).await;
    let report = run_once(&s.cfg, false).await.unwrap();
    let mut want: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 0..s.dataset.records {
        if let Expected::Poison { kind } = s.dataset.expected(i) {
            *want.entry(kind).or_default() += 1;
        }
    }
    assert_eq!(want.len(), 3, "all three kinds occur: {want:?}");
    let poison: usize = want.values().sum();
    assert_eq!(report.dead_letters as usize, poison, "{report}");
    assert_eq!(report.records as usize, 3_000 - poison);
    assert_raw_exactly_once(&s.cfg, &s.dataset);

    let dl = read_all(&s.cfg.topics.name(TopicRole::DeadLetter));
    let mut got: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &dl {
        let kind = m.headers["etl.error.kind"].as_str();
        *got.entry(match kind {
            "invalid_json" => "invalid_json",
            "missing_key" => "missing_key",
            "not_an_object" => "not_an_object",
            other => panic!("unexpected kind {other}"),
        })
        .or_default() += 1;
        assert_eq!(m.headers["etl.error.stage"], "extract");
        assert!(!m.headers["etl.error.message"].is_empty());
        assert!(m.headers["etl.source.url"].contains("/lol/league-exp/v4/entries/"));
        assert!(m.headers["etl.source.url"].contains("page="));
        assert!(m.headers.contains_key("traceparent") && m.headers.contains_key("etl.fetched_at"));
        assert!(
            !m.headers.contains_key("etl.source.topic"),
            "never was in Kafka"
        );
        match kind {
            "invalid_json" => assert!(m.payload.starts_with(b"\"{"), "{:?}", m.payload),
            "missing_key" => {
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                assert!(v.get("summonerId").is_none() && v.get("tier").is_some());
                assert!(m.headers["etl.error.message"].contains("summonerId"));
            }
            _ => {}
        }
    }
    assert_eq!(got, want);
    s.api.stop().await;
}

#[tokio::test]
async fn a_down_api_is_retried_with_backoff_then_reported() {
    let mut s = setup("x_down", with_token(small(100, 50, 15))).await;
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    s.cfg.extract.url = format!(
        "http://127.0.0.1:{port}/lol/league-exp/v4/entries/{{queue}}/{{tier}}/{{division}}"
    );
    s.cfg.extract.probe.url = None;
    s.cfg.extract.probe.attempts = 4;
    s.cfg.extract.retry.initial_backoff = Duration::from_millis(100);
    let t = Instant::now();
    let err = run_once(&s.cfg, false).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ExtractError::Unavailable { attempts: 4, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("unavailable") && msg.contains(&port.to_string()),
        "{msg}"
    );
    // Three backoffs of at least 50, 100 and 100 ms (jittered, capped at 200 ms).
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    s.api.stop().await;
}

#[tokio::test]
async fn failed_requests_are_reported_and_their_streams_resume_on_the_next_run() {
    let mut o = with_token(small(2_000, 50, 16));
    o.fail_rate = 0.3;
    let mut s = setup("x_resume_failed", o).await;
    s.cfg.extract.retry.max_attempts = 1;
    let first = run_once(&s.cfg, false).await.unwrap();
    assert!(!first.failed.is_empty(), "{first}");
    assert_eq!(first.completed, 0);
    for f in &first.failed {
        assert!(f.reason.contains("HTTP 50"), "{f}");
        assert!(f.url.contains("page="), "{f}");
    }
    // The same source behind a healthy server (another port: stream ids do not depend on it).
    let healthy = sample_api::start(
        with_token(s.dataset.clone()),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    s.cfg.extract.url = healthy.entries_template();
    let second = run_once(&s.cfg, false).await.unwrap();
    assert!(second.resumed, "{second}");
    assert!(
        second.failed.is_empty() && second.completed == 1,
        "{second}"
    );
    assert_eq!(first.records + second.records, 2_000);
    assert_raw_exactly_once(&s.cfg, &s.dataset);
    s.api.stop().await;
    healthy.stop().await;
}

#[tokio::test]
async fn a_graceful_stop_mid_pass_resumes_without_refetching_or_duplicates() {
    let mut o = with_token(small(4_000, 50, 17));
    o.slow_rate = 1.0;
    o.slow = Duration::from_millis(30);
    let mut s = setup("x_graceful", o).await;
    s.cfg.extract.concurrency = 2;
    let stop = CancellationToken::new();
    let (cfg, token) = (s.cfg.clone(), stop.clone());
    let run = tokio::spawn(async move {
        extract::run(
            &cfg.common(),
            &cfg.extract,
            RunOptions {
                once: true,
                fresh: false,
            },
            token,
        )
        .await
    });
    while sample_api::ServerStats::get(&s.api.stats.pages) < 30 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    let first = run.await.unwrap().unwrap();
    assert!(first.interrupted && first.completed == 0, "{first}");
    assert!(first.records > 0 && first.records < 4_000, "{first}");
    // Let the server finish answers the stopped extractor no longer waits for.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served_before = sample_api::ServerStats::get(&s.api.stats.pages);
    let second = run_once(&s.cfg, false).await.unwrap();
    assert!(second.resumed && second.completed == 1, "{second}");
    assert_eq!(first.records + second.records, 4_000);
    // Resumed at the checkpoints: no page committed by the first run was fetched again.
    let served_after = sample_api::ServerStats::get(&s.api.stats.pages) - served_before;
    assert_eq!(second.pages, served_after, "{second}");
    assert_eq!(first.pages + second.pages, 80 + 4);
    assert_raw_exactly_once(&s.cfg, &s.dataset);

    // A further --once run after a completed pass is a new pass (the daily run), and
    // --fresh ignores checkpoints; both fetch everything again.
    let third = run_once(&s.cfg, true).await.unwrap();
    assert!(!third.resumed && third.records == 4_000, "{third}");
    s.api.stop().await;
}

#[tokio::test]
async fn continuous_mode_runs_a_pass_every_interval() {
    let mut s = setup("x_continuous", with_token(small(400, 50, 18))).await;
    s.cfg.extract.interval = Duration::from_secs(1);
    let stop = CancellationToken::new();
    let (cfg, token) = (s.cfg.clone(), stop.clone());
    let t = Instant::now();
    let run = tokio::spawn(async move {
        extract::run(&cfg.common(), &cfg.extract, RunOptions::default(), token).await
    });
    // Two full passes: 2 × (8 pages + 4 end markers).
    while sample_api::ServerStats::get(&s.api.stats.pages) < 24 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "second pass never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "passes must be an interval apart"
    );
    // Let the second pass commit (commit_interval is 100 ms); the third is due a second later.
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.cancel();
    let r = run.await.unwrap().unwrap();
    assert!(r.completed >= 2, "{r}");
    assert_eq!(r.records, 400 * r.completed as u64, "{r}");
    s.api.stop().await;
}

// ---- next-link pagination, records under a field path, the token in the query ----

mod cursor_api {
    use axum::extract::{Query, State};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use std::collections::HashMap;
    use std::sync::Arc;

    /// Serves `n` items, 7 per page, `{"data":{"items":[…]},"links":{"next":…}}`; the next link
    /// repeats the api_key the way some APIs do.
    pub async fn start(n: usize, token: &'static str) -> std::net::SocketAddr {
        async fn items(
            State((n, token)): State<(Arc<usize>, &'static str)>,
            Query(q): Query<HashMap<String, String>>,
        ) -> axum::response::Response {
            if q.get("api_key").map(String::as_str) != Some(token) {
                return (StatusCode::UNAUTHORIZED, "{}").into_response();
            }
            let cursor: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
            let end = (cursor + 7).min(*n);
            let items: Vec<String> = (cursor..end)
                .map(|i| format!(r#"{{"meta":{{"id":"item-{i}"}},"value":{i}}}"#))
                .collect();
            let next = if end < *n {
                format!(r#""/v1/items?cursor={end}&api_key={token}""#)
            } else {
                "null".into()
            };
            format!(
                r#"{{"data":{{"items":[{}]}},"links":{{"next":{next}}}}}"#,
                items.join(",")
            )
            .into_response()
        }
        let app = axum::Router::new()
            .route("/v1/items", axum::routing::get(items))
            .with_state((Arc::new(n), token));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        addr
    }
}

#[tokio::test]
async fn next_link_pagination_with_a_records_path_and_a_query_token_never_stores_the_token() {
    const QTOKEN: &str = "q-secret-9911";
    common::require_kafka();
    let addr = cursor_api::start(50, QTOKEN).await;
    let mut cfg = common::test_config("x_cursor");
    for role in [
        TopicRole::Raw,
        TopicRole::DeadLetter,
        TopicRole::ExtractState,
    ] {
        common::create_topic(&cfg.topics.name(role), 1).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t");
    std::fs::write(&f, QTOKEN).unwrap();
    let x = &mut cfg.extract;
    x.source = "items".into();
    x.url = format!("http://{addr}/v1/items");
    x.vars.clear();
    x.pagination.mode = etl_pipe::stages::extract::config::PaginationMode::NextLink;
    x.pagination.next_field = Some("links.next".into());
    x.records_path = "data.items".into();
    x.key_field = "meta.id".into();
    x.auth.kind = etl_pipe::stages::extract::config::AuthKind::Query;
    x.auth.name = "api_key".into();
    x.auth.token = SecretRef {
        env: None,
        file: Some(f),
    };
    x.rate_limit = 0.0;
    // A transaction per page, so checkpoints holding next links are written.
    x.commit_records = 1;
    let r = run_once(&cfg, false).await.unwrap();
    assert_eq!((r.records, r.pages, r.completed), (50, 8, 1), "{r}");
    assert!(r.transactions >= 8, "{r}");
    let raw = read_all(&cfg.topics.name(TopicRole::Raw));
    let mut keys: Vec<_> = raw.iter().map(|m| m.key.clone()).collect();
    keys.sort();
    let mut want: Vec<_> = (0..50).map(|i| format!("item-{i}")).collect();
    want.sort();
    assert_eq!(keys, want);
    let state = read_all(&cfg.topics.name(TopicRole::ExtractState));
    assert!(!state.is_empty());
    for m in &state {
        let text = String::from_utf8_lossy(&m.payload);
        assert!(
            !text.contains(QTOKEN),
            "token stored in a checkpoint: {text}"
        );
    }
    assert!(state
        .iter()
        .any(|m| String::from_utf8_lossy(&m.payload).contains("cursor=")));
}

// ---- the real binary: kill -9 mid-pass, and what its output shows ----

fn write_config(cfg: &Config, dir: &std::path::Path) -> PathBuf {
    let p = dir.join("etl.toml");
    std::fs::write(&p, cfg.to_toml()).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_pass_then_restart_ends_with_every_record_exactly_once() {
    let mut o = with_token(small(6_000, 50, 19));
    o.slow_rate = 1.0;
    o.slow = Duration::from_millis(40);
    let mut s = setup("x_kill9", o).await;
    s.cfg.extract.concurrency = 2;
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(&s.cfg, dir.path());
    let spawn = move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_etl-pipe"))
            .args(["extract", "--once", "--config"])
            .arg(&conf)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let total_pages = 120 + 4;
    let mut child = spawn();
    let t = Instant::now();
    while sample_api::ServerStats::get(&s.api.stats.pages) < 50 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "extractor made no progress"
        );
        if let Ok(Some(st)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "extractor exited early ({st}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL
    let killed = child.wait_with_output().unwrap();
    assert!(!killed.status.success());
    let served_first = sample_api::ServerStats::get(&s.api.stats.pages);
    assert!(served_first < total_pages, "killed too late");

    let out = tokio::task::spawn_blocking(move || spawn().wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("resumed from checkpoints"), "{stdout}");
    // Resumed, not refetched: the second run fetched fewer pages than a full pass.
    let served_second = sample_api::ServerStats::get(&s.api.stats.pages) - served_first;
    assert!(
        served_second < total_pages,
        "{served_second} pages refetched"
    );
    assert_raw_exactly_once(&s.cfg, &s.dataset);
    for text in [&stdout, &stderr, &String::from_utf8_lossy(&killed.stderr)] {
        assert!(!text.contains(TOKEN), "the token appears in the output");
    }
    s.api.stop().await;
}

#[tokio::test]
async fn the_binary_logs_every_request_and_never_the_token_even_when_failing() {
    let mut o = with_token(small(300, 50, 20));
    o.fail_rate = 0.5;
    let mut s = setup("x_logs", o).await;
    // The token in the query this time: the logged URLs must still not show it.
    s.cfg.extract.auth.kind = etl_pipe::stages::extract::config::AuthKind::Query;
    s.cfg.extract.auth.name = "api_key".into();
    s.cfg.extract.retry.max_attempts = 1;
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(&s.cfg, dir.path());
    let run = |conf: &PathBuf| {
        std::process::Command::new(env!("CARGO_BIN_EXE_etl-pipe"))
            .args(["extract", "--once", "--config"])
            .arg(conf)
            .env("RUST_LOG", "debug")
            .output()
            .unwrap()
    };
    let out = tokio::task::spawn_blocking({
        let conf = conf.clone();
        move || run(&conf)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "failed requests exit 2: {stdout}\n{stderr}"
    );
    assert!(stdout.contains("FAILED requests"), "{stdout}");
    let requests: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("http request"))
        })
        .collect();
    assert_eq!(
        requests.len() as u64,
        sample_api::ServerStats::get(&s.api.stats.requests),
        "one log event per request"
    );
    for r in &requests {
        let f = &r["fields"];
        for k in [
            "method",
            "url",
            "status",
            "bytes",
            "start",
            "end",
            "duration_ms",
        ] {
            assert!(!f[k].is_null(), "{k} missing in {r}");
        }
    }
    assert!(
        !stdout.contains(TOKEN) && !stderr.contains(TOKEN),
        "token leaked"
    );

    // A rejected token: clear message, exit 1, the token nowhere.
    std::fs::write(&s.token_file, "bad-token-5150").unwrap();
    let out = tokio::task::spawn_blocking(move || run(&conf))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("rejected the credential: HTTP 403"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("bad-token-5150")
            && !String::from_utf8_lossy(&out.stdout).contains("bad-token-5150")
    );
    s.api.stop().await;
}

#[tokio::test]
async fn missing_topics_fail_fast_naming_the_command_that_creates_them() {
    common::require_kafka();
    let mut cfg = common::test_config("x_notopics");
    cfg.extract.auth.kind = etl_pipe::stages::extract::config::AuthKind::None;
    let t = Instant::now();
    let err = extract::run(
        &cfg.common(),
        &cfg.extract,
        RunOptions::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains(&cfg.topics.name(TopicRole::Raw)), "{err}");
    assert!(err.contains("etl-pipe topics apply"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20));
}

/// An API page holding a record larger than the broker accepts (> 1 MiB): that record is a
/// dead letter by reference (page URL and index, the sizes in the message, no payload: it
/// would not fit the dead-letter topic either), the page's other records reach raw, and the
/// pass completes instead of failing on every rerun.
#[tokio::test]
async fn a_record_larger_than_the_broker_accepts_is_dead_lettered_and_the_pass_completes() {
    common::require_kafka();
    let big: String = (0..1_200_000u32)
        .map(|i| char::from(b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26))
        .collect();
    let body = Arc::new(format!(
        r#"{{"data":{{"items":[{},{},{{"meta":{{"id":"item-2"}},"blob":"{big}"}},{},{}]}},"links":{{"next":null}}}}"#,
        r#"{"meta":{"id":"item-0"},"value":0}"#,
        r#"{"meta":{"id":"item-1"},"value":1}"#,
        r#"{"meta":{"id":"item-3"},"value":3}"#,
        r#"{"meta":{"id":"item-4"},"value":4}"#,
    ));
    let app = axum::Router::new().route(
        "/v1/items",
        axum::routing::get(move || {
            let body = body.clone();
            async move { body.as_str().to_string() }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });

    let mut cfg = common::test_config("x_too_large");
    for role in [
        TopicRole::Raw,
        TopicRole::DeadLetter,
        TopicRole::ExtractState,
    ] {
        common::create_topic(&cfg.topics.name(role), 1).await;
    }
    let x = &mut cfg.extract;
    x.source = "items".into();
    x.url = format!("http://{addr}/v1/items");
    x.vars.clear();
    x.pagination.mode = etl_pipe::stages::extract::config::PaginationMode::NextLink;
    x.pagination.next_field = Some("links.next".into());
    x.records_path = "data.items".into();
    x.key_field = "meta.id".into();
    x.auth.kind = etl_pipe::stages::extract::config::AuthKind::None;
    x.rate_limit = 0.0;
    let started = Instant::now();
    let r = run_once(&cfg, false)
        .await
        .unwrap_or_else(|e| panic!("the pass failed after {:?}: {e}", started.elapsed()));
    assert_eq!((r.records, r.dead_letters, r.completed), (4, 1, 1), "{r}");
    let raw = read_all(&cfg.topics.name(TopicRole::Raw));
    let mut keys: Vec<_> = raw.iter().map(|m| m.key.clone()).collect();
    keys.sort();
    assert_eq!(keys, ["item-0", "item-1", "item-3", "item-4"]);
    let dl = read_all(&cfg.topics.name(TopicRole::DeadLetter));
    assert_eq!(dl.len(), 1);
    let d = &dl[0];
    assert_eq!(d.headers["etl.error.stage"], "extract");
    assert_eq!(d.headers["etl.error.kind"], "record_too_large");
    assert_eq!(d.headers["etl.source.index"], "2");
    assert!(d.headers["etl.source.url"].contains("/v1/items"));
    let msg = &d.headers["etl.error.message"];
    assert!(
        msg.contains("max.message.bytes") && msg.contains("left out"),
        "{msg}"
    );
    assert!(
        d.payload.is_empty(),
        "a reference only: {} bytes",
        d.payload.len()
    );
}

/// Issue #19 item 4: a probe of the first page is that page's fetch (the page is not
/// downloaded twice), and the probe can be turned off.
#[tokio::test]
async fn probing_the_first_page_does_not_fetch_it_twice_and_the_probe_can_be_off() {
    let mut s = setup("x_probe1", with_token(small(2_000, 50, 16))).await;
    s.cfg.extract.probe.url = None;
    let report = run_once(&s.cfg, false).await.unwrap();
    assert_eq!(report.records, 2_000, "{report}");
    // 40 full pages + one empty page per stream; the probe was the first page's request.
    assert_eq!(report.requests, 40 + 4, "{report}");
    assert_eq!(sample_api::ServerStats::get(&s.api.stats.requests), 40 + 4);
    assert_raw_exactly_once(&s.cfg, &s.dataset);
    s.api.stop().await;

    let mut s = setup("x_probe0", with_token(small(2_000, 50, 17))).await;
    s.cfg.extract.probe.enabled = false;
    let report = run_once(&s.cfg, false).await.unwrap();
    assert_eq!(report.records, 2_000, "{report}");
    assert_eq!(sample_api::ServerStats::get(&s.api.stats.requests), 40 + 4);
    assert_raw_exactly_once(&s.cfg, &s.dataset);
    s.api.stop().await;
}
