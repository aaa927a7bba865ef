//! Fixtures shared by the sink tests: a league-entry schema, records, producing them to a
//! scored topic, running a sink in-process, reading dead letters.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use etl_pipe::codec::{Codec, Framing};
use etl_pipe::config::{Config, TopicRole};
use etl_pipe::record::{FieldSchema, FieldType, Record, RecordSchema, Value};
use etl_pipe::stages::sinks::{Decode, DecodeFailure, SinkError};

use super::common;

fn field(name: &str, ty: FieldType, nullable: bool) -> FieldSchema {
    FieldSchema {
        name: name.into(),
        ty,
        nullable,
        doc: Some(format!("the {name}")),
        default: if nullable { Some(Value::Null) } else { None },
        aliases: Vec::new(),
    }
}

/// The scored league-entry schema, `schemas/league_entry.scored.avsc`.
pub fn schema() -> RecordSchema {
    etl_pipe::codec::load_schema(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/league_entry.scored.avsc"
    ))
    .expect("schemas/league_entry.scored.avsc")
}

/// The schema plus one nullable field (schema evolution).
pub fn schema_with(extra: &str) -> RecordSchema {
    let mut s = schema();
    s.fields.push(field(extra, FieldType::String, true));
    let mut v: serde_json::Value = serde_json::from_str(&s.source).unwrap();
    v["fields"].as_array_mut().unwrap().push(serde_json::json!(
        {"name": extra, "type": ["null", "string"], "default": null}
    ));
    s.source = v.to_string();
    s
}

pub const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A scored record for summoner `key`; `version` goes into `league_points`.
pub fn record(key: &str, version: i32) -> Record {
    let mut r = Record::new();
    r.set("summoner_id", Value::String(key.into()));
    r.set("summoner_name", Value::String(format!("Näme {key} 🙂")));
    r.set("queue_type", Value::String("RANKED_SOLO_5x5".into()));
    r.set("tier", Value::String("DIAMOND".into()));
    r.set("rank", Value::String("II".into()));
    r.set("league_points", Value::Int(version));
    r.set("wins", Value::Int(30));
    r.set("losses", Value::Int(20));
    r.set("veteran", Value::Boolean(true));
    r.set("inactive", Value::Boolean(false));
    r.set("fresh_blood", Value::Null);
    r.set("hot_streak", Value::Boolean(false));
    r.set("games", Value::Int(50));
    r.set("win_rate", Value::Double(0.6));
    r.set("source", Value::String("riot".into()));
    r.set("trace_id", Value::Null);
    r.set("source_topic", Value::String("etl.raw".into()));
    r.set("source_partition", Value::Int(0));
    r.set("source_offset", Value::Long(1_234_567_890_123));
    r.set("fetched_at", Value::TimestampMillis(1_700_000_000_123));
    r.set("quality_window", Value::String("etl.cleaned/0/0-99".into()));
    r.set("quality_decision", Value::String("PASS".into()));
    r
}

/// The decoder the sink runs with in production: the Avro codec (single-object framing).
pub fn codec(schema: &RecordSchema) -> Arc<Codec> {
    Arc::new(Codec::new(schema.clone(), Framing::SingleObject))
}

/// A decoder that counts what it decodes (to see which instance got which records).
pub struct Counting {
    pub inner: Arc<Codec>,
    pub n: AtomicUsize,
}

impl Decode for Counting {
    fn decode(&self, bytes: &[u8]) -> Result<Record, DecodeFailure> {
        self.n.fetch_add(1, Ordering::SeqCst);
        Decode::decode(&*self.inner, bytes)
    }
}

pub fn config(test: &str, db: &str, batch_size: usize) -> Config {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
    // The default secret reference of mysql.password.
    std::env::set_var("ETL_MYSQL_PASSWORD", "etl");
    let mut cfg = common::test_config(test);
    cfg.mysql.database = db.to_string();
    cfg.mongo.uri = common::mongo_uri();
    cfg.mongo.database = db.to_string();
    cfg.sink.batch_size = batch_size;
    cfg.sink.batch_max_age = Duration::from_millis(100);
    cfg.sink.retry_max_backoff = Duration::from_secs(1);
    cfg.sink.shutdown_timeout = Duration::from_secs(20);
    cfg
}

pub async fn topics(cfg: &Config, partitions: i32) {
    common::create_topic(&cfg.topics.name(TopicRole::Scored), partitions).await;
    common::create_topic(&cfg.topics.name(TopicRole::DeadLetter), 1).await;
}

pub fn traceparent() -> String {
    format!("00-{TRACE}-00f067aa0ba902b7-01")
}

/// Produces (partition, key, payload) messages with a traceparent header; waits for delivery.
pub async fn produce(cfg: &Config, msgs: &[(i32, String, Vec<u8>)]) {
    let producer: FutureProducer = etl_pipe::kafka::producer_config(&cfg.kafka)
        .create()
        .unwrap();
    let topic = cfg.topics.name(TopicRole::Scored);
    let tp = traceparent();
    let mut futs = Vec::new();
    for (p, k, v) in msgs {
        let rec = FutureRecord::to(&topic)
            .partition(*p)
            .key(k.as_bytes())
            .payload(v.as_slice())
            .headers(OwnedHeaders::new().insert(Header {
                key: "traceparent",
                value: Some(tp.as_str()),
            }));
        // Enqueue now (send() would wait for each delivery in turn when awaited one by one).
        match producer.send_result(rec) {
            Ok(f) => futs.push(f),
            Err((e, _)) => panic!("enqueueing: {e}"),
        }
    }
    for f in futs {
        f.await.expect("delivery").expect("delivered");
    }
}

/// Encodes a record as the score stage does.
pub fn encode(schema: &RecordSchema, r: &Record) -> Vec<u8> {
    Codec::new(schema.clone(), Framing::SingleObject)
        .encode(r)
        .unwrap()
}

/// `n` records spread round-robin over `partitions`, keys `k0..k{n-1}`.
pub fn spread(schema: &RecordSchema, n: usize, partitions: i32) -> Vec<(i32, String, Vec<u8>)> {
    let c = Codec::new(schema.clone(), Framing::SingleObject);
    (0..n)
        .map(|i| {
            let key = format!("k{i}");
            (
                (i as i32) % partitions,
                key.clone(),
                c.encode(&record(&key, i as i32)).unwrap(),
            )
        })
        .collect()
}

pub type SinkTask = (JoinHandle<Result<(), SinkError>>, CancellationToken);

pub fn spawn_mysql(cfg: &Config, schema: &RecordSchema, decoder: Arc<dyn Decode>) -> SinkTask {
    let token = CancellationToken::new();
    let (cfg, schema, t) = (cfg.clone(), schema.clone(), token.clone());
    let h = tokio::spawn(async move {
        etl_pipe::stages::sinks::mysql::run_with(
            &cfg.common(),
            &cfg.sink,
            &cfg.mysql,
            schema,
            decoder,
            t,
        )
        .await
    });
    (h, token)
}

pub fn spawn_mongo(cfg: &Config, schema: &RecordSchema, decoder: Arc<dyn Decode>) -> SinkTask {
    let token = CancellationToken::new();
    let (cfg, schema, t) = (cfg.clone(), schema.clone(), token.clone());
    let h = tokio::spawn(async move {
        etl_pipe::stages::sinks::mongo::run_with(
            &cfg.common(),
            &cfg.sink,
            &cfg.mongo,
            schema,
            decoder,
            t,
        )
        .await
    });
    (h, token)
}

pub async fn stop(task: SinkTask) -> Result<(), SinkError> {
    task.1.cancel();
    tokio::time::timeout(Duration::from_secs(60), task.0)
        .await
        .expect("sink stops within 60 s")
        .expect("sink task")
}

/// Polls `f` until it returns `want` (or 60 s pass); returns the last value.
pub async fn wait_for<F, Fut>(want: i64, mut f: F) -> i64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = f().await;
        if v == want || tokio::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A dead letter as read back: key, payload and headers as text.
#[derive(Debug)]
pub struct Dl {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Dl {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the dead-letter topic: at least `n` messages, then 2 s more for extras.
pub async fn dead_letters(cfg: &Config, n: usize) -> Vec<Dl> {
    let consumer: StreamConsumer =
        etl_pipe::kafka::consumer_config(&cfg.kafka, &common::unique("dl"))
            .create()
            .unwrap();
    consumer
        .subscribe(&[&cfg.topics.name(TopicRole::DeadLetter)])
        .unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut stream = consumer.stream();
    loop {
        let wait = if out.len() >= n {
            Duration::from_secs(2)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(Ok(m))) => out.push(Dl {
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Ok(Some(Err(e))) => panic!("consume error: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// A TCP proxy in front of a database that a test can take down and bring back: down closes
/// every open connection and drops new ones at once (what a client sees when the server
/// stops), up forwards again. Lets a test cut one instance off its database without stopping
/// the shared server other tests use. [`Proxy::stall`] is the other kind of outage: a server
/// that hangs or a network that drops packets without a reset — connections stay open and
/// nothing comes back on them, ever, even after [`Proxy::set_up`] lets new ones through.
pub struct Proxy {
    pub port: u16,
    state: tokio::sync::watch::Sender<u8>,
}

const PROXY_UP: u8 = 0;
const PROXY_DOWN: u8 = 1;
const PROXY_STALLED: u8 = 2;

/// Holds a connection open for ever without reading or writing.
async fn hang<T>(held: T) {
    let _held = held;
    std::future::pending::<()>().await
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        let target = target.to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::watch::channel(PROXY_UP);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                match *rx.borrow() {
                    PROXY_DOWN => {
                        drop(client);
                        continue;
                    }
                    PROXY_STALLED => {
                        tokio::spawn(hang(client));
                        continue;
                    }
                    _ => {}
                }
                let mut rx = rx.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let stalled = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                        s = rx.wait_for(|s| *s != PROXY_UP) => {
                            s.map(|s| *s == PROXY_STALLED).unwrap_or(false)
                        }
                    };
                    if stalled {
                        hang((client, server)).await;
                    }
                });
            }
        });
        Proxy { port, state: tx }
    }

    pub fn set_up(&self, up: bool) {
        self.state
            .send_replace(if up { PROXY_UP } else { PROXY_DOWN });
    }

    /// Every open connection hangs for good; new ones are accepted and hang too until
    /// [`Proxy::set_up`].
    pub fn stall(&self) {
        self.state.send_replace(PROXY_STALLED);
    }
}

/// A scored record for `key` fetched at `fetched_at` (ms), `version` in `league_points`.
pub fn versioned(key: &str, version: i32, fetched_at: i64) -> Record {
    let mut r = record(key, version);
    r.set("fetched_at", Value::TimestampMillis(fetched_at));
    r
}

/// Produces (partition, key, payload) messages in Kafka transactions of `per_txn` messages
/// each, as the score stage does: every transaction leaves a commit marker after its records.
pub async fn produce_in_transactions(
    cfg: &Config,
    msgs: &[(i32, String, Vec<u8>)],
    per_txn: usize,
) {
    use rdkafka::producer::Producer as _;
    let producer: FutureProducer = etl_pipe::kafka::producer_config(&cfg.kafka)
        .set("transactional.id", common::unique("txn"))
        .create()
        .unwrap();
    let t = Duration::from_secs(30);
    producer.init_transactions(t).unwrap();
    let topic = cfg.topics.name(TopicRole::Scored);
    for chunk in msgs.chunks(per_txn) {
        producer.begin_transaction().unwrap();
        let mut futs = Vec::new();
        for (p, k, v) in chunk {
            let rec = FutureRecord::to(&topic)
                .partition(*p)
                .key(k.as_bytes())
                .payload(v.as_slice());
            match producer.send_result(rec) {
                Ok(f) => futs.push(f),
                Err((e, _)) => panic!("enqueueing: {e}"),
            }
        }
        for f in futs {
            f.await.expect("delivery").expect("delivered");
        }
        producer.commit_transaction(t).unwrap();
    }
}

/// Per partition of the scored topic: (high watermark, the group's committed offset or -1).
pub fn ends_and_committed(cfg: &Config, stage: &str, partitions: i32) -> Vec<(i64, i64)> {
    let c: rdkafka::consumer::BaseConsumer =
        etl_pipe::kafka::consumer_config(&cfg.kafka, &cfg.pipeline.group_id(stage))
            .create()
            .unwrap();
    let topic = cfg.topics.name(TopicRole::Scored);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(&topic, p);
    }
    let t = Duration::from_secs(10);
    let got = c.committed_offsets(tpl, t).unwrap();
    (0..partitions)
        .map(|p| {
            let (_, hi) = c.fetch_watermarks(&topic, p, t).unwrap();
            let committed = got
                .find_partition(&topic, p)
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(-1);
            (hi, committed)
        })
        .collect()
}

/// Waits (up to `within`) until the group's committed offset of every partition is its high
/// watermark: lag 0. Returns the last (high watermark, committed) per partition.
pub async fn wait_caught_up(
    cfg: &Config,
    stage: &str,
    partitions: i32,
    within: Duration,
) -> Vec<(i64, i64)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let v = ends_and_committed(cfg, stage, partitions);
        if v.iter().all(|(hi, c)| hi == c) || tokio::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `etl-pipe status`'s lag of a stage's group.
pub fn status_lag(cfg: &Config, stage: &str) -> Option<i64> {
    let s = etl_pipe::ops::status::collect(cfg).unwrap();
    s.groups.iter().find(|g| g.stage == stage).unwrap().lag
}

/// The nested fixture schema of issue 20 (`tests/fixtures/nested_entry.avsc`): every Avro
/// 1.12 type, nested.
pub fn nested_schema() -> RecordSchema {
    etl_pipe::codec::load_schema(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/nested_entry.avsc"
    ))
    .expect("tests/fixtures/nested_entry.avsc")
}

/// The uuid of nested record `i`.
pub fn nested_id(i: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x550e_8400_e29b_41d4_a716_4466_5544_0000 + i)
}

/// A record of [`nested_schema`]: `mini_series` set for even `i`, null for odd; `score` is
/// `-123.45 - i/100`, `ts_us` 2023-11-14 22:13:20.123456 UTC.
pub fn nested_record(i: i64) -> Record {
    use etl_pipe::record::Decimal;
    let rec = |fields: Vec<(&str, Value)>| Record {
        fields: fields.into_iter().map(|(n, v)| (n.into(), v)).collect(),
    };
    let s = |v: &str| Value::String(v.into());
    let series = rec(vec![
        ("progress", s("WL-")),
        ("target", Value::Int(3)),
        ("wins", Value::Int(1)),
        ("losses", Value::Int(0)),
    ]);
    let player = rec(vec![
        ("name", s("player 플레이어")),
        ("puuid", Value::Uuid(nested_id(1000 + i as u128))),
        ("tier", Value::Enum("GOLD".into())),
        ("series", Value::Null),
    ]);
    rec(vec![
        ("id", Value::Uuid(nested_id(i as u128))),
        ("region", Value::Enum("NA".into())),
        (
            "score",
            Value::Decimal(Decimal::new(-12_345 - i as i128, 2)),
        ),
        ("prize", Value::Decimal(Decimal::new(99_999_999_999_999, 4))),
        ("hash", Value::Fixed((0..16).collect())),
        ("raw", Value::Bytes(vec![0, 0xff, b'\'', b'\\'])),
        (
            "tags",
            Value::Array(vec![s("a"), s("it's \"quoted\" \\ too")]),
        ),
        ("counts", Value::Map(vec![("games".into(), Value::Long(7))])),
        (
            "mini_series",
            if i % 2 == 0 {
                Value::Record(series)
            } else {
                Value::Null
            },
        ),
        ("players", Value::Array(vec![Value::Record(player)])),
        ("choice", Value::Long(42)),
        (
            "samples",
            Value::Map(vec![(
                "psi".into(),
                Value::Array(vec![Value::Double(0.5), Value::Double(-1e300)]),
            )]),
        ),
        ("day", Value::Date(19_000)),
        ("at_ms", Value::TimeMillis(45_296_789)),
        ("at_us", Value::TimeMicros(45_296_789_012)),
        ("ts_ms", Value::TimestampMillis(1_700_000_000_123)),
        ("ts_us", Value::TimestampMicros(1_700_000_000_123_456)),
        ("local_ms", Value::LocalTimestampMillis(1_700_000_000_123)),
        (
            "local_us",
            Value::LocalTimestampMicros(1_700_000_000_123_456),
        ),
        ("flag", Value::Null),
        ("ratio", Value::Float(0.25)),
    ])
}

/// `n` records of [`nested_schema`] on partition 0, keys `n0..n{n-1}`.
pub fn nested_messages(n: i64) -> Vec<(i32, String, Vec<u8>)> {
    let c = Codec::new(nested_schema(), Framing::SingleObject);
    (0..n)
        .map(|i| (0, format!("n{i}"), c.encode(&nested_record(i)).unwrap()))
        .collect()
}
