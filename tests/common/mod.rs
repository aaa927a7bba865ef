//! Shared fixtures for integration tests: they connect to the real local stack
//! (`deploy/local/stack.sh up`), give each test its own topic, database and collection
//! names, and fail with a clear message when a service is unreachable — never skip.
#![allow(dead_code)]

pub mod accounting;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use etl_pipe::config::{Config, KafkaConfig};
use etl_pipe::kafka;

pub fn kafka_brokers() -> String {
    std::env::var("ETL_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}
pub fn mysql_url_base() -> String {
    std::env::var("ETL_TEST_MYSQL").unwrap_or_else(|_| "mysql://etl:etl@127.0.0.1:3306".into())
}
pub fn mongo_uri() -> String {
    std::env::var("ETL_TEST_MONGO").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into())
}

const HINT: &str =
    "start the local stack with `deploy/local/stack.sh up` (the README's test command does this)";

/// A name unique to this test run:
/// `etltest_<prefix>_<start>_<pid>_<counter>_<random>`, `<start>` the test process's start in
/// Unix seconds. `examples/prune_test_artefacts.rs` (run by the test command) removes topics,
/// databases, tables and collections so named once they are older than the longest test run.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    static START: OnceLock<u64> = OnceLock::new();
    let start = *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
    });
    let n = N.fetch_add(1, Ordering::SeqCst);
    let r: u32 = rand::random::<u32>() % 1000;
    format!("etltest_{prefix}_{start}_{}_{n}_{r}", std::process::id())
}

pub fn kafka_config() -> KafkaConfig {
    KafkaConfig {
        brokers: kafka_brokers(),
        ..Default::default()
    }
}

/// A config pointing at the local stack with topic names unique to this test.
pub fn test_config(test: &str) -> Config {
    let mut cfg = Config {
        kafka: kafka_config(),
        ..Default::default()
    };
    cfg.pipeline.name = unique(test).replace('_', "-");
    let p = unique(test);
    cfg.topics.raw.name = Some(format!("{p}.raw"));
    cfg.topics.cleaned.name = Some(format!("{p}.cleaned"));
    cfg.topics.scored.name = Some(format!("{p}.scored"));
    cfg.topics.dead_letter.name = Some(format!("{p}.dead-letter"));
    cfg.topics.quarantine.name = Some(format!("{p}.quarantine"));
    cfg.topics.quality.name = Some(format!("{p}.quality"));
    cfg.topics.logs.name = Some(format!("{p}.logs"));
    cfg.topics.extract_state.name = Some(format!("{p}.extract-state"));
    cfg.topics.score_baseline.name = Some(format!("{p}.score-baseline"));
    cfg
}

/// Fails the test with a clear message when Kafka does not answer a metadata request.
pub fn require_kafka() {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .expect("creating kafka admin client");
    if let Err(e) = admin.inner().fetch_metadata(None, Duration::from_secs(10)) {
        panic!("Kafka at {} is unreachable ({e}); {HINT}", kafka_brokers());
    }
}

/// Creates a topic for this test and waits until its leaders are known.
pub async fn create_topic(name: &str, partitions: i32) {
    require_kafka();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    let res = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create_topics request");
    for r in res {
        if let Err((t, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                panic!("creating topic {t}: {code}");
            }
        }
    }
    for _ in 0..100 {
        let md = admin
            .inner()
            .fetch_metadata(Some(name), Duration::from_secs(5))
            .unwrap();
        if md.topics()[0].partitions().len() == partitions as usize
            && md.topics()[0].partitions().iter().all(|p| p.leader() >= 0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("topic {name} has no leaders after 10s");
}

/// Creates a fresh MySQL database for this test and returns a pool connected to it.
pub async fn mysql_db(test: &str) -> (String, sqlx::MySqlPool) {
    let db = unique(test);
    let admin = match sqlx::MySqlPool::connect(&format!("{}/mysql", mysql_url_base())).await {
        Ok(p) => p,
        Err(e) => panic!(
            "MySQL at {} is unreachable ({e}); {HINT}",
            mysql_url_base().replace(":etl@", ":***@")
        ),
    };
    sqlx::query(&format!("CREATE DATABASE `{db}` CHARACTER SET utf8mb4"))
        .execute(&admin)
        .await
        .unwrap();
    let pool = sqlx::MySqlPool::connect(&format!("{}/{db}", mysql_url_base()))
        .await
        .unwrap();
    (db, pool)
}

/// A MongoDB database unique to this test; fails clearly when the server does not answer a ping.
pub async fn mongo_db(test: &str) -> mongodb::Database {
    let client = mongodb::Client::with_uri_str(mongo_uri()).await.unwrap();
    let db = client.database(&unique(test));
    if let Err(e) = client
        .database("admin")
        .run_command(mongodb::bson::doc! {"ping": 1})
        .await
    {
        panic!(
            "MongoDB (FerretDB) at {} is unreachable ({e}); {HINT}",
            mongo_uri()
        );
    }
    db
}

/// What the sample API serves for `source`: poison records by kind, and the good records' keys.
pub fn expected_source(
    source: &etl_pipe::tooling::local::SourceOptions,
) -> (
    std::collections::BTreeMap<String, u64>,
    std::collections::BTreeSet<String>,
) {
    use etl_pipe::tooling::sample_api::data::{Dataset, Expected};
    let mut ds = Dataset::new(source.records, source.page_size, source.seed);
    ds.queues = vec!["RANKED_SOLO_5x5".into()];
    ds.tiers = source.tiers.clone();
    ds.divisions = source.divisions.clone();
    ds.malformed_rate = source.malformed_rate;
    ds.missing_rate = source.missing_rate;
    ds.drift_after_pages = source.drift_after_pages;
    let mut poison = std::collections::BTreeMap::new();
    let mut keys = std::collections::BTreeSet::new();
    for i in 0..source.records {
        match ds.expected(i) {
            Expected::Poison { kind } => *poison.entry(kind.to_string()).or_default() += 1,
            Expected::Record { key } => {
                keys.insert(key);
            }
        }
    }
    (poison, keys)
}

/// The exact counts of a run: every bad source record dead-lettered by extract with its
/// reason, every good one in raw once, and each stage's output = its input minus what it
/// dead-lettered or quarantined, down to one row and one document per scored record.
pub fn assert_exact_counts(
    o: &etl_pipe::tooling::local::run::Outcome,
    source: &etl_pipe::tooling::local::SourceOptions,
) {
    let (poison, keys) = expected_source(source);
    let extract_dl = o.dead_letters.kinds_of("extract");
    assert_eq!(extract_dl, poison, "extract dead letters by reason");
    assert_eq!(
        o.topics["raw"].records,
        keys.len() as u64,
        "raw: each good record once"
    );
    let dl_clean = o.dead_letters.count_stage("clean");
    let dl_score = o.dead_letters.count_stage("score");
    assert_eq!(
        o.topics["cleaned"].records,
        o.topics["raw"].records - dl_clean
    );
    assert_eq!(
        o.topics["scored"].records + o.quarantine.total(),
        o.topics["cleaned"].records - dl_score
    );
    assert_eq!(
        o.mysql_rows, o.topics["scored"].records,
        "one row per scored record"
    );
    assert_eq!(o.mongo_docs, o.mysql_rows, "one document per row");
    assert!(o.mysql_rows > 0);
}

/// A message read back.
#[derive(Debug, Clone)]
pub struct Got {
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

/// Everything committed in `topic` (read_committed, from the beginning to the end).
pub fn read_committed(cfg: &Config, topic: &str) -> Vec<Got> {
    let mut c = kafka::base_config(&cfg.kafka);
    c.set("enable.auto.commit", "false")
        .set("group.id", "test-reader")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = c.create().unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    assert!(!parts.is_empty(), "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut at_end = HashSet::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < parts.len() {
        assert!(Instant::now() < deadline, "reading {topic} took over 60s");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|hd| {
                                (
                                    hd.key.to_string(),
                                    String::from_utf8_lossy(hd.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Got {
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
        }
    }
    out
}

/// A cleaned league entry with these drawn values; the other fields fixed (rank I, no flags
/// but `veteran`/`inactive` false, `games` = wins + losses, lineage of offset 0 of `etl.raw`).
pub fn league_entry(
    id: &str,
    name: etl_pipe::record::Value,
    tier: &str,
    league_points: i32,
    wins: i32,
    losses: i32,
) -> etl_pipe::record::Record {
    use etl_pipe::record::{Record, Value};
    let mut r = Record::new();
    r.set("summoner_id", Value::String(id.into()));
    r.set("summoner_name", name);
    r.set("queue_type", Value::String("RANKED_SOLO_5x5".into()));
    r.set("tier", Value::String(tier.into()));
    r.set("rank", Value::String("I".into()));
    r.set("league_points", Value::Int(league_points));
    r.set("wins", Value::Int(wins));
    r.set("losses", Value::Int(losses));
    r.set("veteran", Value::Boolean(false));
    r.set("inactive", Value::Boolean(false));
    r.set("fresh_blood", Value::Null);
    r.set("hot_streak", Value::Boolean(false));
    r.set("games", Value::Int(wins + losses));
    r.set("win_rate", Value::Null);
    r.set("source", Value::String("league-v4".into()));
    r.set("trace_id", Value::Null);
    r.set("source_topic", Value::String("etl.raw".into()));
    r.set("source_partition", Value::Int(0));
    r.set("source_offset", Value::Long(0));
    r.set("fetched_at", Value::TimestampMillis(1_735_689_600_000));
    r
}

/// The score stage of `cfg`, in-process until `shutdown`: what it committed, or its error.
pub fn spawn_score(
    cfg: &Config,
    shutdown: &tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Result<etl_pipe::kafka::eos::Stats, etl_pipe::stages::score::ScoreError>>
{
    let (cfg, shutdown) = (cfg.clone(), shutdown.clone());
    tokio::spawn(async move {
        etl_pipe::stages::score::run_with_stats(
            &cfg.common(),
            &cfg.score.clone().unwrap_or_default(),
            &cfg.quality,
            &cfg.clean_or_default(),
            shutdown,
        )
        .await
    })
}

/// A fresh pipeline with this `[score]` section and its topics created. The names are
/// near-unique: their PSI means nothing (their missing ratio does), so it is off for them.
pub async fn score_pipeline(
    test: &str,
    partitions: i32,
    score: etl_pipe::stages::score::ScoreConfig,
) -> Config {
    require_kafka();
    let mut cfg = test_config(test);
    cfg.topics.partitions = partitions;
    cfg.score = Some(score);
    cfg.quality.fields.insert(
        "summoner_name".into(),
        etl_pipe::quality::FieldThresholds {
            psi_warn: Some(f64::INFINITY),
            psi_fail: Some(f64::INFINITY),
            ..Default::default()
        },
    );
    cfg.validate().unwrap();
    kafka::topics::apply(&cfg.kafka, &cfg.topics.all().unwrap())
        .await
        .unwrap();
    cfg
}

/// Field specs for `fields`, the ones in `numeric` numeric, the others categorical.
pub fn field_specs(fields: &[&str], numeric: &[&str]) -> Vec<etl_pipe::quality::FieldSpec> {
    use etl_pipe::quality::{FieldKind, FieldSpec};
    fields
        .iter()
        .map(|f| {
            let kind = if numeric.contains(f) {
                FieldKind::Numeric
            } else {
                FieldKind::Categorical
            };
            FieldSpec::new(*f, kind)
        })
        .collect()
}
