//! `etl-pipe bench-sink`: the sinks against the row-by-row way of the original project.
//!
//! Produces N scored records (Avro, the real codec) to a fresh topic, runs `sink-mysql`
//! in-process until every record is committed, then times the original project's way (an
//! ORM-style loop: one prepared `INSERT` per row, in one transaction and in autocommit) on a
//! smaller count; then the same for MongoDB (`sink-mongo` vs one `replace_one` upsert per
//! document). Prints rows/s, batch latency percentiles and peak RSS. Uses fresh topics,
//! database and collections, and removes them afterwards unless `--keep`.
//! Not a test: figures depend on the machine; record them with the machine's description.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::codec::{Codec, Framing};
use crate::config::{Config, TopicRole};
use crate::record::{Record, RecordSchema, Value};
use crate::stages::sinks::mysql::{self, Flavor, Layout};
use crate::stages::sinks::{metric, RecordDecoder, SinkError};

/// Options of `bench-sink`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Records loaded through sink-mysql.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// Rows written one INSERT at a time (in one transaction, and a quarter of it in autocommit).
    #[arg(long, default_value_t = 20_000)]
    pub row_by_row: usize,
    /// Partitions of the benchmark topic (= parallel database transactions).
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Records loaded through sink-mongo (0: skip MongoDB). FerretDB on SQLite is slow:
    /// keep this small there.
    #[arg(long, default_value_t = 20_000)]
    pub mongo_records: usize,
    /// Documents upserted one at a time.
    #[arg(long, default_value_t = 2_000)]
    pub mongo_one_by_one: usize,
    /// Keep the topics, database and collections afterwards.
    #[arg(long)]
    pub keep: bool,
}

// ------------------------------------------------------------------------------------------
// A metrics recorder that keeps every histogram sample and counter total (per name).

#[derive(Default)]
struct Capture {
    hist: Mutex<HashMap<String, Vec<f64>>>,
    counters: Mutex<HashMap<String, u64>>,
}

struct H(&'static Capture, String);
impl metrics::HistogramFn for H {
    fn record(&self, v: f64) {
        if let Ok(mut m) = self.0.hist.lock() {
            m.entry(self.1.clone()).or_default().push(v);
        }
    }
}
struct C(&'static Capture, String);
impl metrics::CounterFn for C {
    fn increment(&self, v: u64) {
        if let Ok(mut m) = self.0.counters.lock() {
            *m.entry(self.1.clone()).or_default() += v;
        }
    }
    fn absolute(&self, v: u64) {
        if let Ok(mut m) = self.0.counters.lock() {
            m.insert(self.1.clone(), v);
        }
    }
}

struct CaptureRecorder(&'static Capture);
impl Recorder for CaptureRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(C(self.0, key.name().to_string())))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(H(self.0, key.name().to_string())))
    }
}

/// Installs the benchmark's metrics recorder (before any other: the first one wins).
pub fn install_recorder() {
    let _ = capture();
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::default());
        let _ = metrics::set_global_recorder(CaptureRecorder(c));
        c
    })
}

impl Capture {
    fn reset(&self) {
        if let Ok(mut m) = self.hist.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.counters.lock() {
            m.clear();
        }
    }
    fn counter(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .map(|m| m.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }
    /// (count, p50, p95, p99, max) of a histogram, in its unit.
    fn percentiles(&self, name: &str) -> (usize, f64, f64, f64, f64) {
        let mut v = self
            .hist
            .lock()
            .map(|m| m.get(name).cloned().unwrap_or_default())
            .unwrap_or_default();
        if v.is_empty() {
            return (0, 0.0, 0.0, 0.0, 0.0);
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
        (v.len(), q(0.5), q(0.95), q(0.99), v[v.len() - 1])
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn fatal(what: &'static str, e: impl std::fmt::Display) -> SinkError {
    SinkError::Fatal {
        what,
        message: e.to_string(),
    }
}

// ------------------------------------------------------------------------------------------
// Data

/// A realistic scored league entry, varied by `i`.
pub fn league_record(schema: &RecordSchema, i: usize) -> Record {
    const TIERS: [&str; 6] = ["IRON", "BRONZE", "SILVER", "GOLD", "PLATINUM", "DIAMOND"];
    const RANKS: [&str; 4] = ["I", "II", "III", "IV"];
    let wins = (i * 7 % 300) as i32;
    let losses = (i * 11 % 280) as i32;
    let games = wins + losses;
    let mut r = Record::new();
    for f in &schema.fields {
        let v = match f.name.as_str() {
            "summoner_id" => Value::String(format!("summoner-{i:010}-{:016x}", i * 2_654_435_761)),
            "summoner_name" => Value::String(format!("Player {i}")),
            "queue_type" => Value::String("RANKED_SOLO_5x5".into()),
            "tier" => Value::String(TIERS[i % 6].into()),
            "rank" => Value::String(RANKS[i % 4].into()),
            "league_points" => Value::Int((i % 100) as i32),
            "wins" => Value::Int(wins),
            "losses" => Value::Int(losses),
            "veteran" => Value::Boolean(i % 3 == 0),
            "inactive" => Value::Boolean(false),
            "fresh_blood" => Value::Boolean(i % 5 == 0),
            "hot_streak" => Value::Boolean(i % 7 == 0),
            "games" => Value::Int(games),
            "win_rate" if games > 0 => Value::Double(wins as f64 / games as f64),
            "source" => Value::String("riot-league-v4".into()),
            "trace_id" => Value::String(format!("{:032x}", (i as u128) * 0x9E37_79B9_7F4A_7C15)),
            "source_topic" => Value::String("etl.raw".into()),
            "source_partition" => Value::Int((i % 3) as i32),
            "source_offset" => Value::Long(i as i64),
            "fetched_at" => Value::TimestampMillis(1_700_000_000_000 + i as i64),
            "quality_window" => Value::String(format!(
                "etl.cleaned/{}/{}-{}",
                i % 3,
                i / 1000 * 1000,
                i / 1000 * 1000 + 999
            )),
            "quality_decision" => Value::String("PASS".into()),
            _ => match (&f.ty, f.nullable) {
                (_, true) => Value::Null,
                (crate::record::FieldType::String, _) => Value::String(format!("v{i}")),
                (crate::record::FieldType::Int, _) => Value::Int(i as i32),
                (crate::record::FieldType::Long, _) => Value::Long(i as i64),
                (crate::record::FieldType::TimestampMillis, _) => Value::TimestampMillis(i as i64),
                (crate::record::FieldType::Boolean, _) => Value::Boolean(true),
                _ => Value::Double(i as f64),
            },
        };
        r.fields.push((f.name.clone(), v));
    }
    r
}

fn key_of(r: &Record, i: usize) -> String {
    match r.get("summoner_id") {
        Some(Value::String(s)) => s.clone(),
        _ => format!("k{i}"),
    }
}

async fn create_topics(cfg: &Config, partitions: i32) -> Result<(), SinkError> {
    let admin: AdminClient<DefaultClientContext> =
        crate::kafka::base_config(&cfg.kafka)
            .create()
            .map_err(|e| fatal("creating the admin client", e))?;
    let scored = cfg.topics.name(TopicRole::Scored);
    let dl = cfg.topics.name(TopicRole::DeadLetter);
    let topics = [
        NewTopic::new(&scored, partitions, TopicReplication::Fixed(1)),
        NewTopic::new(&dl, 1, TopicReplication::Fixed(1)),
    ];
    admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .map_err(|e| fatal("creating topics", e))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

async fn delete_topics(cfg: &Config) {
    if let Ok(admin) =
        crate::kafka::base_config(&cfg.kafka).create::<AdminClient<DefaultClientContext>>()
    {
        let names = [
            cfg.topics.name(TopicRole::Scored),
            cfg.topics.name(TopicRole::DeadLetter),
        ];
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let _ = admin.delete_topics(&refs, &AdminOptions::new()).await;
    }
}

/// Produces `n` encoded records round-robin over the partitions; returns records/s.
async fn produce(cfg: &Config, codec: &Codec, n: usize, partitions: i32) -> Result<f64, SinkError> {
    let producer: FutureProducer = crate::kafka::producer_config(&cfg.kafka)
        .create()
        .map_err(|e| fatal("creating the producer", e))?;
    let topic = cfg.topics.name(TopicRole::Scored);
    let schema = codec.schema().clone();
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + 20_000).min(n);
        let mut futs = Vec::with_capacity(end - i);
        for j in i..end {
            let r = league_record(&schema, j);
            let key = key_of(&r, j);
            let bytes = codec.encode(&r).map_err(|e| fatal("encoding", e))?;
            let tp = format!("00-{:032x}-{:016x}-01", (j as u128) + 1, j + 1);
            let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                key: crate::kafka::headers::TRACEPARENT,
                value: Some(tp.as_str()),
            });
            let mut rec = FutureRecord::to(&topic)
                .partition((j as i32) % partitions)
                .key(key.as_bytes())
                .payload(&bytes)
                .headers(headers);
            // Enqueue now; wait for room when librdkafka's queue is full.
            loop {
                match producer.send_result(rec) {
                    Ok(f) => {
                        futs.push(f);
                        break;
                    }
                    Err((e, back)) => {
                        if e.rdkafka_error_code()
                            != Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        {
                            return Err(fatal("producing", e));
                        }
                        rec = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
        for f in futs {
            f.await
                .map_err(|e| fatal("producing", e))?
                .map_err(|(e, _)| fatal("producing", e))?;
        }
        i = end;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Waits until the sink reports `n` records written; returns (seconds from the first batch
/// handed to a writer to the last commit, seconds from the sink's start to the last commit).
async fn wait_written(
    n: usize,
    started: Instant,
    task: &tokio::task::JoinHandle<Result<(), SinkError>>,
) -> Result<(f64, f64), SinkError> {
    let c = capture();
    let mut first: Option<Instant> = None;
    loop {
        if first.is_none() && c.counter(metric::RECORDS_IN) > 0 {
            first = Some(Instant::now());
        }
        if c.counter(metric::RECORDS_OUT) as usize >= n {
            let now = Instant::now();
            let t0 = first.unwrap_or(started);
            return Ok((
                now.duration_since(t0).as_secs_f64().max(1e-3),
                now.duration_since(started).as_secs_f64(),
            ));
        }
        if task.is_finished() {
            return Err(fatal("the sink", "stopped before writing every record"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn print_latency(label: &str) {
    let (n, p50, p95, p99, max) = capture().percentiles(metric::BATCH_SECONDS);
    let (_, s50, _, _, _) = capture().percentiles(metric::BATCH_SIZE);
    println!(
        "  {label}: {n} batches, median {s50:.0} records; batch latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p50 * 1e3,
        p95 * 1e3,
        p99 * 1e3,
        max * 1e3
    );
}

/// Runs the benchmark and prints the figures.
pub async fn run(cfg: &Config, args: &BenchArgs) -> Result<(), SinkError> {
    let cap = capture();
    let schema =
        crate::codec::load_schema(&cfg.sink.schema).map_err(|e| fatal("loading the schema", e))?;
    let codec = Arc::new(Codec::new(schema.clone(), Framing::SingleObject));
    let id = format!("{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    let mut bc = cfg.clone();
    bc.pipeline.name = format!("bench-{id}");
    bc.topics.scored.name = Some(format!("bench-{id}.scored"));
    bc.topics.dead_letter.name = Some(format!("bench-{id}.dead-letter"));
    bc.kafka.schema_registry_url = None;
    let db = format!("etl_bench_{id}");

    println!(
        "etl-pipe bench-sink: {} records, {} partitions, schema {} ({} fields)",
        args.records,
        args.partitions,
        schema.name,
        schema.fields.len()
    );
    println!(
        "machine: {} cores, load average {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    // ---- MySQL
    let admin_pool = mysql::connect(&cfg.mysql, 2).await?;
    sqlx::Executor::execute(
        &admin_pool,
        format!("CREATE DATABASE `{db}` CHARACTER SET utf8mb4").as_str(),
    )
    .await
    .map_err(|e| fatal("creating the bench database", e))?;
    bc.mysql.database = db.clone();
    create_topics(&bc, args.partitions).await?;
    let rate = produce(&bc, &codec, args.records, args.partitions).await?;
    println!("produced {} records at {:.0}/s", args.records, rate);

    cap.reset();
    let token = CancellationToken::new();
    let started = Instant::now();
    let (c2, s2, d2, t2) = (
        bc.clone(),
        schema.clone(),
        codec.clone() as Arc<RecordDecoder>,
        token.clone(),
    );
    let task = tokio::spawn(async move {
        mysql::run_with(&c2.common(), &c2.sink, &c2.mysql, s2, d2, t2).await
    });
    let (steady, total) = wait_written(args.records, started, &task).await?;
    token.cancel();
    task.await.map_err(|e| fatal("the sink task", e))??;
    let sink_rate = args.records as f64 / steady;
    println!("sink-mysql: {} rows in {:.1} s from the first batch ({:.1} s with start-up and group join): {:.0} rows/s", args.records, steady, total, sink_rate);
    print_latency("sink-mysql");
    println!("  peak RSS so far {:.0} MiB", peak_rss_mib());

    // The original project's way: one INSERT per row (an ORM session loop).
    let pool = mysql::connect(&bc.mysql, 1).await?;
    let layout = Layout::new(
        &schema,
        "league_entry_row_by_row",
        cfg.sink.key_field.as_deref(),
        255,
        Flavor::MariaDb,
    )?;
    mysql::ensure_table(&pool, &layout).await?;
    let cols: Vec<String> = layout
        .columns
        .iter()
        .map(|c| mysql::ident(&c.name))
        .collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        mysql::ident(&layout.table),
        cols.join(","),
        vec!["?"; cols.len()].join(",")
    );
    let rows: Vec<Record> = (0..args.row_by_row)
        .map(|i| league_record(&schema, args.records + i))
        .collect();
    let insert = |r: &Record, i: usize| {
        let mut q = sqlx::query(&sql);
        for c in &layout.columns {
            q = match &c.source {
                mysql::Source::KafkaKey => q.bind(key_of(r, i)),
                mysql::Source::Field(n) => match r.get(n).cloned().unwrap_or(Value::Null) {
                    Value::Null => q.bind(None::<String>),
                    Value::Boolean(b) => q.bind(b),
                    Value::Int(v) => q.bind(v),
                    Value::Long(v) => q.bind(v),
                    Value::Float(v) => q.bind(v),
                    Value::Double(v) => q.bind(v),
                    Value::String(s) => q.bind(s),
                    Value::TimestampMillis(ms) => {
                        q.bind(chrono::DateTime::from_timestamp_millis(ms).map(|d| d.naive_utc()))
                    }
                },
                mysql::Source::TraceId => q.bind(None::<String>),
                mysql::Source::SourceTopic => q.bind("bench"),
                mysql::Source::SourcePartition => q.bind(0i32),
                mysql::Source::SourceOffset => q.bind(i as i64),
                mysql::Source::LoadedAt => q.bind(chrono::Utc::now().naive_utc()),
            };
        }
        q
    };
    let t = Instant::now();
    let mut tx = pool.begin().await.map_err(|e| fatal("begin", e))?;
    for (i, r) in rows.iter().enumerate() {
        insert(r, i)
            .execute(&mut *tx)
            .await
            .map_err(|e| fatal("row-by-row insert", e))?;
    }
    tx.commit().await.map_err(|e| fatal("commit", e))?;
    let one_tx = rows.len() as f64 / t.elapsed().as_secs_f64();
    println!(
        "row by row, one transaction: {} rows at {:.0} rows/s",
        rows.len(),
        one_tx
    );
    sqlx::Executor::execute(
        &pool,
        format!("TRUNCATE TABLE {}", mysql::ident(&layout.table)).as_str(),
    )
    .await
    .map_err(|e| fatal("truncate", e))?;
    let auto_n = (rows.len() / 4).max(1);
    let t = Instant::now();
    for (i, r) in rows.iter().take(auto_n).enumerate() {
        insert(r, i)
            .execute(&pool)
            .await
            .map_err(|e| fatal("row-by-row insert", e))?;
    }
    let auto = auto_n as f64 / t.elapsed().as_secs_f64();
    println!("row by row, autocommit: {auto_n} rows at {auto:.0} rows/s");
    println!(
        "=> sink-mysql is {:.1}x the row-by-row loop in one transaction, {:.1}x autocommit",
        sink_rate / one_tx,
        sink_rate / auto
    );
    pool.close().await;

    // ---- MongoDB
    if args.mongo_records > 0 {
        let mut mc = bc.clone();
        mc.topics.scored.name = Some(format!("bench-{id}.scored-mongo"));
        mc.mongo.database = db.clone();
        create_topics(&mc, args.partitions).await?;
        let rate = produce(&mc, &codec, args.mongo_records, args.partitions).await?;
        println!("produced {} records at {:.0}/s", args.mongo_records, rate);
        cap.reset();
        let token = CancellationToken::new();
        let started = Instant::now();
        let (c2, s2, d2, t2) = (
            mc.clone(),
            schema.clone(),
            codec.clone() as Arc<RecordDecoder>,
            token.clone(),
        );
        let task = tokio::spawn(async move {
            crate::stages::sinks::mongo::run_with(&c2.common(), &c2.sink, &c2.mongo, s2, d2, t2)
                .await
        });
        let (steady, total) = wait_written(args.mongo_records, started, &task).await?;
        token.cancel();
        task.await.map_err(|e| fatal("the sink task", e))??;
        let bulk = args.mongo_records as f64 / steady;
        println!("sink-mongo: {} documents in {:.1} s from the first batch ({:.1} s with start-up): {:.0} docs/s", args.mongo_records, steady, total, bulk);
        print_latency("sink-mongo");

        let client = mongodb::Client::with_uri_str(&cfg.mongo.uri)
            .await
            .map_err(|e| fatal("mongo client", e))?;
        let coll = client
            .database(&db)
            .collection::<mongodb::bson::Document>("league_entry_one_by_one");
        let t = Instant::now();
        for i in 0..args.mongo_one_by_one {
            let r = league_record(&schema, i);
            let msg = crate::stages::sinks::SinkMessage {
                partition: 0,
                offset: i as i64,
                key: Some(key_of(&r, i).into_bytes()),
                payload: None,
                headers: None,
            };
            let (id, doc) = crate::stages::sinks::mongo::document(
                None,
                "bench",
                mongodb::bson::DateTime::now(),
                &msg,
                &r,
            )
            .map_err(|e| fatal("document", e.message))?;
            coll.replace_one(mongodb::bson::doc! {"_id": id}, doc)
                .upsert(true)
                .await
                .map_err(|e| fatal("replace_one", e))?;
        }
        let one = args.mongo_one_by_one as f64 / t.elapsed().as_secs_f64();
        println!(
            "one by one (replace_one upsert): {} documents at {one:.0} docs/s",
            args.mongo_one_by_one
        );
        println!("=> sink-mongo is {:.1}x one-by-one upserts", bulk / one);
        // The Mongo database is left in place: dropping a database FerretDB (SQLite) is
        // still writing can crash it.
        println!("  (MongoDB database {db} left in place)");
        if !args.keep {
            delete_topics(&mc).await;
        }
    }

    println!(
        "peak RSS {:.0} MiB (whole process, producing included)",
        peak_rss_mib()
    );
    if !args.keep {
        let _ =
            sqlx::Executor::execute(&admin_pool, format!("DROP DATABASE `{db}`").as_str()).await;
        delete_topics(&bc).await;
    }
    Ok(())
}
