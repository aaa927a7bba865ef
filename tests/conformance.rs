//! Conformance of etl-pipe's Confluent-framed Avro with a client nobody here wrote: the
//! Confluent Python client (`confluent-kafka`'s `AvroSerializer` / `AvroDeserializer` with its
//! `SchemaRegistryClient`), against the real local Kafka and schema registry.
//!
//! (a) clean and score run over raw records with a registry configured; Python reads what they
//!     wrote (cleaned, scored, and quarantine, which holds the original cleaned bytes) and must
//!     get the values etl-pipe's own reader gets, field by field, message by message.
//! (b) Python produces cleaned records; etl-pipe's reader codec decodes them to the values
//!     Python was given, and the score stage scores all of them (nothing dead-lettered).
//! (c) The nested fixture (`tests/fixtures/nested_entry.avsc`: uuid, enum, decimals on bytes
//!     and fixed, fixed, bytes, arrays, maps, nested and nullable records, a general union,
//!     dates, times, every timestamp): etl-pipe writes edge and varied records
//!     Confluent-framed, Python reads them; Python writes them, etl-pipe reads them; every
//!     value exact (datetimes to the microsecond, floating point to the bit).
//!
//! The venv comes from `deploy/local/pyvenv.sh` (created on first use, from PyPI); a missing
//! venv, Python or registry FAILS the test, it never skips. (Single-object framing against
//! apache-avro's reader is covered by `src/codec/tests.rs`:
//! `single_object_header_is_the_one_apache_avro_reads`.)
mod common;
mod conformance_nested;
mod registry_support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value as Json};
use tokio_util::sync::CancellationToken;

use etl_pipe::codec::{load_schema, Codec};
use etl_pipe::config::{Config, TopicRole};
use etl_pipe::kafka::{self, headers as h};
use etl_pipe::record::{Record, Value};
use etl_pipe::stages::score::ScoreConfig;
use etl_pipe::stages::{clean, score};

use conformance_nested::{nested, nested_key, NESTED};

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/conformance.py");

/// The venv's python (made by deploy/local/pyvenv.sh if missing). Panics naming what failed.
fn python() -> String {
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/local/pyvenv.sh"
        ))
        .output()
        .expect("running deploy/local/pyvenv.sh (needs bash)");
    assert!(
        out.status.success(),
        "deploy/local/pyvenv.sh failed: the Confluent Python client is required for this test:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        std::path::Path::new(&py).is_file(),
        "deploy/local/pyvenv.sh printed `{py}`, which is not a file"
    );
    py
}

fn run_python(args: &[&str]) -> String {
    use std::io::Read;
    let mut child = Command::new(python())
        .arg(SCRIPT)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running tests/python/conformance.py");
    // Read both pipes while waiting (a full pipe would stall the script).
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    // A test tool that hangs must fail the test, not the whole run: once the registry left a
    // request unanswered and the client (then without a timeout) waited for ever.
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let stderr = String::from_utf8_lossy(&stderr);
    let status = status
        .unwrap_or_else(|| panic!("conformance.py {args:?} still running after 240 s:\n{stderr}"));
    assert!(
        status.success(),
        "conformance.py {args:?} failed:\n{stderr}"
    );
    String::from_utf8(stdout).unwrap()
}

/// How conformance.py prints datetimes: the flat tests' timestamp-millis as integer epoch
/// milliseconds (`read`'s default), or every datetime as `{"ts_us": exact microseconds}`
/// (`read --exact-times`: fastavro gives datetimes, which do not say whether the field was
/// millis or micros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Times {
    Millis,
    ExactMicros,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A value as the JSON conformance.py prints (its `plain`): floating point as the exact bits
/// of the value as a double (decimal text would leave the comparison to serde_json's parsing,
/// which is not always correctly rounded: 16 of 300 doubles came back one ULP off that way);
/// decimals as `{"decimal": fixed-point text}`, uuids as their string, bytes and fixed as
/// `{"bytes_hex"}`, enums as the symbol, dates as days, times as `{"time_us"}`, datetimes
/// per `times`; records and maps as objects, arrays as lists. timestamp-nanos and
/// local-timestamp-nanos as the integer (fastavro 1.13 has no such logical type).
fn to_json(v: &Value, times: Times) -> Json {
    let ts_us = |us: i64| match times {
        Times::ExactMicros => json!({ "ts_us": us }),
        // conformance.py rounds to the millisecond: (us + 500) // 1000.
        Times::Millis => json!((us + 500).div_euclid(1000)),
    };
    let millis = |ms: i64| match times {
        Times::Millis => json!(ms),
        Times::ExactMicros => json!({ "ts_us": ms.checked_mul(1000).expect("timestamp in range") }),
    };
    match v {
        Value::Null => Json::Null,
        Value::Boolean(b) => json!(b),
        Value::Int(i) | Value::Date(i) => json!(i),
        Value::Long(i) | Value::TimestampNanos(i) | Value::LocalTimestampNanos(i) => json!(i),
        Value::TimestampMillis(ms) | Value::LocalTimestampMillis(ms) => millis(*ms),
        Value::TimestampMicros(us) | Value::LocalTimestampMicros(us) => ts_us(*us),
        Value::TimeMillis(ms) => json!({ "time_us": *ms as i64 * 1000 }),
        Value::TimeMicros(us) => json!({ "time_us": us }),
        Value::Float(f) => json!({ "f64_bits": (*f as f64).to_bits() }),
        Value::Double(f) => json!({ "f64_bits": f.to_bits() }),
        Value::String(s) | Value::Enum(s) => json!(s),
        Value::Bytes(b) | Value::Fixed(b) => json!({ "bytes_hex": hex(b) }),
        Value::Decimal(d) => json!({ "decimal": d.to_string() }),
        Value::Uuid(u) => json!(u.hyphenated().to_string()),
        Value::Array(items) => Json::Array(items.iter().map(|x| to_json(x, times)).collect()),
        Value::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, x)| (k.clone(), to_json(x, times)))
                .collect(),
        ),
        Value::Record(r) => json!(record_json(r, times)),
    }
}

fn record_json(r: &Record, times: Times) -> BTreeMap<String, Json> {
    r.fields
        .iter()
        .map(|(k, v)| (k.to_string(), to_json(v, times)))
        .collect()
}

/// A value as `conformance.py produce` takes it (see its `typed`): logical dates, times and
/// timestamps as the integer in the type's unit (fastavro accepts those), and as one-key
/// objects what JSON cannot carry exactly: `{"$decimal"}`, `{"$bytes_hex"}`, `{"$uuid"}`,
/// `{"$f64_bits"}` (infinities, NaN, -0.0, every bit).
fn produce_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Boolean(b) => json!(b),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => json!(i),
        Value::Long(i)
        | Value::TimeMicros(i)
        | Value::TimestampMillis(i)
        | Value::TimestampMicros(i)
        | Value::TimestampNanos(i)
        | Value::LocalTimestampMillis(i)
        | Value::LocalTimestampMicros(i)
        | Value::LocalTimestampNanos(i) => json!(i),
        Value::Float(f) => json!({ "$f64_bits": (*f as f64).to_bits() }),
        Value::Double(f) => json!({ "$f64_bits": f.to_bits() }),
        Value::String(s) | Value::Enum(s) => json!(s),
        Value::Bytes(b) | Value::Fixed(b) => json!({ "$bytes_hex": hex(b) }),
        Value::Decimal(d) => json!({ "$decimal": d.to_string() }),
        Value::Uuid(u) => json!({ "$uuid": u.hyphenated().to_string() }),
        Value::Array(items) => Json::Array(items.iter().map(produce_json).collect()),
        Value::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, x)| (k.clone(), produce_json(x)))
                .collect(),
        ),
        Value::Record(r) => Json::Object(
            r.fields
                .iter()
                .map(|(k, x)| (k.to_string(), produce_json(x)))
                .collect(),
        ),
    }
}

fn raw_json(i: usize) -> String {
    let name = if i % 7 == 0 {
        String::new()
    } else {
        format!(r#""summonerName":"名前 {i} \"q\"","#)
    };
    let veteran = if i % 5 == 0 {
        String::new()
    } else {
        format!(r#""veteran":{},"#, i % 2 == 0)
    };
    let (wins, losses) = if i % 11 == 0 {
        (0, 0)
    } else {
        (i % 300 + 1, i % 170)
    };
    let tier = ["IRON", "SILVER", "GOLD", "DIAMOND"][i % 4];
    format!(
        r#"{{"summonerId":"c{i}",{name}"queueType":"RANKED_SOLO_5x5","tier":"{tier}","rank":"II","leaguePoints":{},{veteran}"wins":{wins},"losses":{losses},"inactive":false,"freshBlood":{},"hotStreak":true}}"#,
        i % 100,
        i % 3 == 0
    )
}

fn demo_clean() -> clean::CleanConfig {
    let text = std::fs::read_to_string("config/demo.toml").unwrap();
    let mut c = Config::from_toml_with_env(&text, "config/demo.toml", &[])
        .unwrap()
        .clean
        .unwrap();
    c.batch_max_age = Duration::from_millis(50);
    c
}

fn score_config() -> ScoreConfig {
    ScoreConfig {
        window_records: 10,
        batch_max_age: Duration::from_millis(100),
        schema_in: format!("{SCHEMAS}/league_entry.cleaned.avsc").into(),
        schema_out: format!("{SCHEMAS}/league_entry.scored.avsc").into(),
        baseline: None,
        baseline_from_first_records: 0,
        ..Default::default()
    }
}

async fn create_topics(cfg: &Config) {
    for role in [
        TopicRole::Raw,
        TopicRole::Cleaned,
        TopicRole::Scored,
        TopicRole::Quarantine,
        TopicRole::Quality,
        TopicRole::DeadLetter,
    ] {
        common::create_topic(&cfg.topics.name(role), 1).await;
    }
}

fn config(test: &str) -> Config {
    let mut cfg = common::test_config(test);
    cfg.kafka.schema_registry_url = Some(registry_support::registry_url());
    cfg.clean = Some(demo_clean());
    cfg.score = Some(score_config());
    cfg.pipeline.instance = Some(common::unique("i"));
    cfg
}

/// Runs score (and clean when `with_clean`) until `done` says the output is complete.
async fn run_stages<T>(cfg: &Config, with_clean: bool, done: impl FnOnce() -> T) -> T {
    let shutdown = CancellationToken::new();
    let mut stages = Vec::new();
    if with_clean {
        let (cfg, s) = (cfg.clone(), shutdown.clone());
        stages.push(tokio::spawn(async move {
            clean::run(&cfg.common(), &cfg.clean_or_default(), s)
                .await
                .map_err(|e| e.to_string())
        }));
    }
    let (c, s) = (cfg.clone(), shutdown.clone());
    stages.push(tokio::spawn(async move {
        score::run(
            &c.common(),
            &c.score.clone().unwrap_or_default(),
            &c.quality,
            &c.clean_or_default(),
            s,
        )
        .await
        .map_err(|e| e.to_string())
    }));
    let out = tokio::task::block_in_place(done);
    shutdown.cancel();
    for s in stages {
        tokio::time::timeout(Duration::from_secs(60), s)
            .await
            .expect("stage stops within 60 s")
            .unwrap()
            .unwrap();
    }
    out
}

/// `(topic, partition, offset)` → (key, decoded value as JSON) of what etl-pipe's reader reads.
type Decoded = BTreeMap<(String, i32, i64), (Option<String>, BTreeMap<String, Json>)>;

/// What etl-pipe's reader codec decodes from `topics` (each with its reader schema: a file of
/// `schemas/`, or an absolute path).
async fn rust_read(cfg: &Config, topics: &[(String, &str)], count: usize, times: Times) -> Decoded {
    let names: Vec<String> = topics.iter().map(|(t, _)| t.clone()).collect();
    let msgs = tokio::task::block_in_place(|| {
        registry_support::read_until(&names, Duration::from_secs(180), |m| m.len() >= count)
    });
    assert_eq!(
        msgs.len(),
        count,
        "etl-pipe wrote {} of {count}",
        msgs.len()
    );
    let mut readers = BTreeMap::new();
    for (topic, schema) in topics {
        let s = load_schema(std::path::Path::new(SCHEMAS).join(schema)).unwrap();
        readers.insert(topic.clone(), Codec::reader(&cfg.kafka, s).unwrap());
    }
    let mut out = Decoded::new();
    for m in msgs {
        let payload = m.payload().unwrap();
        assert_eq!(
            payload[0],
            0,
            "{}@{}: not Confluent framing",
            m.topic(),
            m.offset()
        );
        let r = readers[m.topic()].decode_async(payload).await.unwrap();
        let key = m.key().map(|k| String::from_utf8(k.to_vec()).unwrap());
        out.insert(
            (m.topic().to_string(), m.partition(), m.offset()),
            (key, record_json(&r, times)),
        );
    }
    out
}

fn python_read(topics: &[String], count: usize, times: Times) -> Decoded {
    let brokers = common::kafka_brokers();
    let registry = registry_support::registry_url();
    let count_s = count.to_string();
    let mut args = vec!["read", &brokers, &registry, "--count", &count_s];
    if times == Times::ExactMicros {
        args.push("--exact-times");
    }
    args.extend(topics.iter().map(String::as_str));
    let mut out = Decoded::new();
    for line in run_python(&args).lines() {
        let j: Json = serde_json::from_str(line).unwrap();
        let value: BTreeMap<String, Json> = serde_json::from_value(j["value"].clone()).unwrap();
        out.insert(
            (
                j["topic"].as_str().unwrap().to_string(),
                j["partition"].as_i64().unwrap() as i32,
                j["offset"].as_i64().unwrap(),
            ),
            (j["key"].as_str().map(str::to_string), value),
        );
    }
    out
}

/// Field-by-field comparison, every message; lists every difference.
fn assert_same(ours: &Decoded, theirs: &Decoded) {
    let mut diffs = Vec::new();
    for (at, (key, rec)) in ours {
        let Some((tkey, trec)) = theirs.get(at) else {
            diffs.push(format!("{at:?}: Python did not read it"));
            continue;
        };
        if key != tkey {
            diffs.push(format!("{at:?}: key {key:?} vs {tkey:?}"));
        }
        field_diffs(
            &format!("{at:?}"),
            ("etl-pipe", rec),
            ("Python", trec),
            &mut diffs,
        );
    }
    for at in theirs.keys().filter(|a| !ours.contains_key(*a)) {
        diffs.push(format!("{at:?}: only Python read it"));
    }
    assert_no_diffs(&diffs);
}

/// The differences between two decoded records, field by field, both ways.
fn field_diffs(
    at: &str,
    (ours, want): (&str, &BTreeMap<String, Json>),
    (theirs, got): (&str, &BTreeMap<String, Json>),
    diffs: &mut Vec<String>,
) {
    for (field, v) in want {
        if got.get(field) != Some(v) {
            diffs.push(format!(
                "{at} field `{field}`: {ours} {v}, {theirs} {:?}",
                got.get(field)
            ));
        }
    }
    for field in got.keys().filter(|f| !want.contains_key(*f)) {
        diffs.push(format!("{at}: {theirs} has extra field `{field}`"));
    }
}

fn assert_no_diffs(diffs: &[String]) {
    assert!(
        diffs.is_empty(),
        "{} differences, first: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(20)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_reads_what_clean_and_score_write() {
    registry_support::require_registry().await;
    let _ = python();
    let cfg = config("conf_rust_writes");
    create_topics(&cfg).await;
    let raw = cfg.topics.name(TopicRole::Raw);
    let cleaned = cfg.topics.name(TopicRole::Cleaned);
    let scored = cfg.topics.name(TopicRole::Scored);
    let quarantine = cfg.topics.name(TopicRole::Quarantine);
    const N: usize = 300;

    let producer: FutureProducer = kafka::producer_config(&cfg.kafka).create().unwrap();
    for i in 0..N {
        let tp = format!("00-{:032x}-{:016x}-01", i + 1, i + 1);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: h::TRACEPARENT,
                value: Some(&tp),
            })
            .insert(Header {
                key: h::SOURCE,
                value: Some("conformance"),
            })
            .insert(Header {
                key: h::FETCHED_AT,
                value: Some("2025-01-01T00:00:00.123Z"),
            });
        producer
            .send(
                FutureRecord::to(&raw)
                    .key(&format!("c{i}"))
                    .payload(&raw_json(i))
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    // clean writes cleaned; score reads it and writes scored (PASS/WARN) or quarantine (FAIL).
    let outputs = [scored.clone(), quarantine.clone()];
    run_stages(&cfg, true, || {
        registry_support::read_until(&outputs, Duration::from_secs(180), |m| m.len() >= N)
    })
    .await;

    let topics = [
        (cleaned.clone(), "league_entry.cleaned.avsc"),
        (scored.clone(), "league_entry.scored.avsc"),
        // Quarantine holds the original cleaned bytes.
        (quarantine.clone(), "league_entry.cleaned.avsc"),
    ];
    let ours = rust_read(&cfg, &topics, 2 * N, Times::Millis).await;
    let names: Vec<String> = topics.iter().map(|(t, _)| t.clone()).collect();
    let theirs = python_read(&names, 2 * N, Times::Millis);
    assert_same(&ours, &theirs);

    // Sanity on what was compared: every kind of value, and the scored fields set.
    let cleaned_values: Vec<_> = ours.iter().filter(|(k, _)| k.0 == cleaned).collect();
    assert_eq!(cleaned_values.len(), N);
    assert!(cleaned_values
        .iter()
        .any(|(_, (_, r))| r["summoner_name"].is_null()));
    assert!(cleaned_values
        .iter()
        .any(|(_, (_, r))| r["win_rate"].is_null()));
    assert!(cleaned_values.iter().any(|(_, (_, r))| r["summoner_name"]
        .as_str()
        .is_some_and(|s| s.contains('名'))));
    assert!(cleaned_values
        .iter()
        .all(|(_, (_, r))| r["fetched_at"] == json!(1_735_689_600_123i64)));
    assert!(ours
        .iter()
        .filter(|(k, _)| k.0 == scored)
        .all(|(_, (_, r))| r["quality_window"].is_string()));
}

fn entry(i: usize) -> Record {
    let mut r = Record::new();
    r.set("summoner_id", Value::String(format!("py{i}")));
    r.set(
        "summoner_name",
        if i % 6 == 0 {
            Value::Null
        } else {
            Value::String(format!("ünï {i}"))
        },
    );
    r.set("queue_type", Value::String("RANKED_FLEX_SR".into()));
    r.set("tier", Value::String(["GOLD", "SILVER"][i % 2].into()));
    r.set("rank", Value::String("I".into()));
    r.set("league_points", Value::Int((i % 100) as i32));
    r.set("wins", Value::Int((i % 90) as i32 + 1));
    r.set("losses", Value::Int((i % 40) as i32));
    r.set(
        "veteran",
        if i % 4 == 0 {
            Value::Null
        } else {
            Value::Boolean(i % 3 == 0)
        },
    );
    r.set("inactive", Value::Boolean(false));
    r.set("fresh_blood", Value::Null);
    r.set("hot_streak", Value::Boolean(i % 2 == 1));
    // The cleaned schema's nested record (a promotion series), set for every third entry.
    r.set(
        "mini_series",
        if i % 3 == 0 {
            let mut m = Record::new();
            m.set("target", Value::Int(3));
            m.set("wins", Value::Int((i / 3 % 3) as i32));
            m.set("losses", Value::Int((i / 3 % 2) as i32));
            m.set(
                "progress",
                Value::String(["WLN", "", "WW"][i / 3 % 3].into()),
            );
            Value::Record(m)
        } else {
            Value::Null
        },
    );
    let games = (i % 90) as i32 + 1 + (i % 40) as i32;
    r.set("games", Value::Int(games));
    r.set(
        "win_rate",
        Value::Double(((i % 90) as f64 + 1.0) / games as f64),
    );
    r.set("source", Value::String("python".into()));
    r.set(
        "trace_id",
        Value::String(format!("{:032x}", i as u128 * 0x1234_5678_9abc)),
    );
    r.set("source_topic", Value::String("etl.raw".into()));
    r.set("source_partition", Value::Int(0));
    r.set("source_offset", Value::Long(i as i64 + (1 << 40)));
    r.set(
        "fetched_at",
        Value::TimestampMillis(1_735_689_600_000 + i as i64),
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etl_pipe_reads_what_python_writes() {
    registry_support::require_registry().await;
    let cfg = config("conf_python_writes");
    create_topics(&cfg).await;
    let cleaned = cfg.topics.name(TopicRole::Cleaned);
    const N: usize = 200;

    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("records.jsonl");
    let sent: BTreeMap<String, BTreeMap<String, Json>> = (0..N)
        .map(|i| (format!("py{i}"), record_json(&entry(i), Times::Millis)))
        .collect();
    // For Python to serialize: plain JSON numbers (serde_json writes the shortest exact
    // decimal; Python's json parsing is correctly rounded).
    let lines: Vec<String> = (0..N)
        .map(|i| {
            let r = entry(i);
            let plain: BTreeMap<&str, Json> = r
                .fields
                .iter()
                .map(|(k, v)| {
                    let j = match v {
                        Value::Double(f) => json!(f),
                        Value::Float(f) => json!(*f as f64),
                        other => to_json(other, Times::Millis),
                    };
                    (&**k, j)
                })
                .collect();
            serde_json::to_string(&plain).unwrap()
        })
        .collect();
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    let out = run_python(&[
        "produce",
        &common::kafka_brokers(),
        &registry_support::registry_url(),
        &cleaned,
        &format!("{SCHEMAS}/league_entry.cleaned.avsc"),
        jsonl.to_str().unwrap(),
    ]);
    let produced: Json = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(produced["produced"], json!(N), "{out}");

    // etl-pipe's reader codec: the values Python was given, field by field.
    let ours = rust_read(
        &cfg,
        &[(cleaned.clone(), "league_entry.cleaned.avsc")],
        N,
        Times::Millis,
    )
    .await;
    let mut diffs = Vec::new();
    for (key, rec) in ours.values() {
        let key = key.clone().unwrap();
        if &sent[&key] != rec {
            diffs.push(format!("{key}: sent {:?}, decoded {rec:?}", sent[&key]));
        }
    }
    assert!(diffs.is_empty(), "{diffs:#?}");
    let id = produced["schema_id"].as_u64().unwrap() as u32;
    assert_eq!(
        registry_support::latest(&format!("{cleaned}-value"))
            .await
            .map(|l| l.0),
        Some(id),
        "Python's frame id is the subject's latest id"
    );

    // The score stage consumes them: every record scored or quarantined, none dead-lettered,
    // the cleaned fields unchanged.
    let scored = cfg.topics.name(TopicRole::Scored);
    let quarantine = cfg.topics.name(TopicRole::Quarantine);
    let dead_letter = cfg.topics.name(TopicRole::DeadLetter);
    let outputs = [scored.clone(), quarantine.clone(), dead_letter.clone()];
    let msgs = run_stages(&cfg, false, || {
        registry_support::read_until(&outputs, Duration::from_secs(180), |m| m.len() >= N)
    })
    .await;
    let dead: Vec<_> = msgs.iter().filter(|m| m.topic() == dead_letter).collect();
    assert!(dead.is_empty(), "{} dead letters", dead.len());
    let out = rust_read(
        &cfg,
        &[
            (scored, "league_entry.scored.avsc"),
            (quarantine, "league_entry.cleaned.avsc"),
        ],
        N,
        Times::Millis,
    )
    .await;
    for (key, rec) in out.values() {
        let key = key.clone().unwrap();
        for (field, v) in &sent[&key] {
            assert_eq!(&rec[field], v, "{key} field `{field}`");
        }
    }
}

/// Every message of `got` is one of `sent` (by key), field by field; every one sent was got.
fn assert_as_sent(who: &str, sent: &BTreeMap<String, BTreeMap<String, Json>>, got: &Decoded) {
    let mut diffs = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (at, (key, rec)) in got {
        let Some(key) = key else {
            diffs.push(format!("{at:?}: no key"));
            continue;
        };
        let Some(want) = sent.get(key) else {
            diffs.push(format!("{at:?}: key {key} was not sent"));
            continue;
        };
        seen.insert(key.clone());
        field_diffs(key, ("sent", want), (who, rec), &mut diffs);
    }
    for key in sent.keys().filter(|k| !seen.contains(*k)) {
        diffs.push(format!("{key}: sent, {who} did not decode it"));
    }
    assert_no_diffs(&diffs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nested_schema_round_trips_with_the_confluent_client() {
    registry_support::require_registry().await;
    let _ = python();
    let cfg = config("conf_nested");
    let prefix = common::unique("conf_nested");
    let (etl_topic, py_topic) = (format!("{prefix}.etl"), format!("{prefix}.python"));
    common::create_topic(&etl_topic, 1).await;
    common::create_topic(&py_topic, 1).await;
    const N: usize = 52;

    let schema = load_schema(NESTED).unwrap();
    let records: Vec<Record> = (0..N).map(nested).collect();
    // What was compared: every branch of the union, nulls and values of each nullable.
    let kinds = |field: &str| -> std::collections::BTreeSet<&'static str> {
        records
            .iter()
            .map(|r| r.get(field).unwrap().kind())
            .collect()
    };
    assert_eq!(kinds("choice").len(), 4, "{:?}", kinds("choice"));
    assert_eq!(kinds("mini_series").len(), 2);
    assert_eq!(kinds("flag").len(), 2);
    let sent: BTreeMap<String, BTreeMap<String, Json>> = records
        .iter()
        .map(|r| (nested_key(r), record_json(r, Times::ExactMicros)))
        .collect();
    assert_eq!(sent.len(), N, "distinct keys");

    // (a) etl-pipe writes, Confluent-framed with the schema registered as a stage registers
    // its output schema; Python reads.
    let writer = Codec::writer(&cfg.kafka, schema.clone(), &etl_topic)
        .await
        .unwrap();
    assert!(
        matches!(writer.framing(), etl_pipe::codec::Framing::Confluent { .. }),
        "{:?}",
        writer.framing()
    );
    let producer: FutureProducer = kafka::producer_config(&cfg.kafka).create().unwrap();
    for r in &records {
        let payload = writer.encode(r).unwrap();
        producer
            .send(
                FutureRecord::to(&etl_topic)
                    .key(&nested_key(r))
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let topics = [(etl_topic.clone(), NESTED)];
    let ours = rust_read(&cfg, &topics, N, Times::ExactMicros).await;
    let theirs = python_read(std::slice::from_ref(&etl_topic), N, Times::ExactMicros);
    assert_same(&ours, &theirs);
    assert_as_sent("Python", &sent, &theirs);
    assert_as_sent("etl-pipe", &sent, &ours);

    // (b) Python writes the same records with AvroSerializer; etl-pipe's reader decodes them
    // to the values Python was given.
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("nested.jsonl");
    let lines: Vec<String> = records
        .iter()
        .map(|r| produce_json(&Value::Record(r.clone())).to_string())
        .collect();
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    let out = run_python(&[
        "produce",
        &common::kafka_brokers(),
        &registry_support::registry_url(),
        &py_topic,
        NESTED,
        jsonl.to_str().unwrap(),
        "--key-field",
        "id",
    ]);
    let produced: Json = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(produced["produced"], json!(N), "{out}");
    let ours = rust_read(&cfg, &[(py_topic.clone(), NESTED)], N, Times::ExactMicros).await;
    assert_as_sent("etl-pipe", &sent, &ours);
    let id = produced["schema_id"].as_u64().unwrap() as u32;
    assert_eq!(
        registry_support::latest(&format!("{py_topic}-value"))
            .await
            .map(|l| l.0),
        Some(id),
        "Python's frame id is the subject's latest id"
    );
}
