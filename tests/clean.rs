//! The clean stage against the real broker: what lands in cleaned and dead-letter (read
//! with read_committed, decoded with the codec), exactly once across a SIGKILL and across
//! rebalances, the abort-and-rewind path of the shared loop, and start-up config errors.
mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, FutureProducer, FutureRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use etl_pipe::codec::{load_schema, Codec, Framing};
use etl_pipe::config::{Config, TopicRole};
use etl_pipe::kafka::eos::{self, Output, Settings, Transform, TransformError};
use etl_pipe::kafka::{self, headers as h};
use etl_pipe::observability::trace;
use etl_pipe::record::{Record, Value};
use etl_pipe::stages::clean::{self, CleanConfig};

const FETCHED_AT: &str = "2026-11-28T10:15:30.123Z";

fn fetched_at_ms() -> i64 {
    chrono::DateTime::parse_from_rfc3339(FETCHED_AT)
        .unwrap()
        .timestamp_millis()
}

fn demo_clean() -> CleanConfig {
    let text = std::fs::read_to_string("config/demo.toml").unwrap();
    Config::from_toml_with_env(&text, "config/demo.toml", &[])
        .unwrap()
        .clean
        .unwrap()
}

fn stage_config(test: &str) -> Config {
    let mut cfg = common::test_config(test);
    let mut c = demo_clean();
    c.batch_max_age = Duration::from_millis(50);
    cfg.clean = Some(c);
    cfg.pipeline.instance = Some(common::unique("i"));
    cfg
}

async fn create_topics(cfg: &Config, raw_partitions: i32) {
    common::create_topic(&cfg.topics.name(TopicRole::Raw), raw_partitions).await;
    common::create_topic(&cfg.topics.name(TopicRole::Cleaned), 2).await;
    common::create_topic(&cfg.topics.name(TopicRole::DeadLetter), 1).await;
}

fn raw_json(id: &str, wins: &str, losses: i64) -> String {
    format!(
        r#"{{"summonerId":"{id}","summonerName":"Name {id}","queueType":"RANKED_SOLO_5x5","tier":"DIAMOND","rank":"I","leaguePoints":75,"wins":{wins},"losses":{losses},"veteran":false,"inactive":false,"freshBlood":true,"hotStreak":false}}"#
    )
}

fn raw_headers(traceparent: Option<&str>) -> OwnedHeaders {
    let mut hs = OwnedHeaders::new();
    if let Some(tp) = traceparent {
        hs = hs.insert(Header {
            key: h::TRACEPARENT,
            value: Some(tp),
        });
    }
    hs.insert(Header {
        key: h::SOURCE,
        value: Some("test-api"),
    })
    .insert(Header {
        key: h::FETCHED_AT,
        value: Some(FETCHED_AT),
    })
}

/// Everything committed in `topics` (read_committed), read from the beginning. One consumer
/// per topic, because a partition-EOF event names only the partition.
struct Reader {
    parts: Vec<(BaseConsumer, Vec<bool>)>,
    messages: Vec<OwnedMessage>,
}

impl Reader {
    fn new(topics: &[String]) -> Reader {
        let parts = topics
            .iter()
            .map(|topic| {
                let mut c =
                    kafka::consumer_config(&common::kafka_config(), &common::unique("reader"));
                c.set("enable.partition.eof", "true");
                let consumer: BaseConsumer = c.create().unwrap();
                let md = consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(10))
                    .unwrap();
                let n = md.topics()[0].partitions().len();
                assert!(n > 0, "topic {topic} exists");
                let mut tpl = TopicPartitionList::new();
                for p in 0..n as i32 {
                    tpl.add_partition_offset(topic, p, Offset::Beginning)
                        .unwrap();
                }
                consumer.assign(&tpl).unwrap();
                (consumer, vec![false; n])
            })
            .collect();
        Reader {
            parts,
            messages: Vec::new(),
        }
    }

    /// Takes everything the consumers have ready; sleeps a little when nothing was.
    fn poll_once(&mut self) {
        let mut idle = true;
        for (consumer, eof) in &mut self.parts {
            loop {
                match consumer.poll(Duration::ZERO) {
                    Some(Ok(m)) => {
                        eof[m.partition() as usize] = false;
                        self.messages.push(m.detach());
                        idle = false;
                    }
                    Some(Err(KafkaError::PartitionEOF(p))) => eof[p as usize] = true,
                    Some(Err(e)) => panic!("reading: {e}"),
                    None => break,
                }
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reads until every partition is at its end (the last stable offset).
    fn read_to_end(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.parts.iter().any(|(_, eof)| eof.iter().any(|e| !e)) {
            assert!(Instant::now() < deadline, "read_to_end timed out");
            self.poll_once();
        }
    }

    /// Reads until `done(messages)` holds, or panics after `timeout`.
    fn read_until(&mut self, timeout: Duration, done: impl Fn(&[OwnedMessage]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.messages) {
            assert!(
                Instant::now() < deadline,
                "timed out with {} messages",
                self.messages.len()
            );
            self.poll_once();
        }
    }
}

fn header<'a>(m: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    m.headers().and_then(|hs| h::get_str(hs, name))
}

fn codec() -> Codec {
    Codec::new(
        load_schema("schemas/league_entry.cleaned.avsc").unwrap(),
        Framing::SingleObject,
    )
}

#[allow(clippy::too_many_arguments)]
fn expected_record(
    id: &str,
    wins: i32,
    losses: i32,
    trace_id: Option<&str>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Record {
    let games = wins + losses;
    let s = |x: &str| Value::String(x.to_string());
    Record {
        fields: vec![
            ("summoner_id".into(), s(id)),
            ("summoner_name".into(), s(&format!("Name {id}"))),
            ("queue_type".into(), s("RANKED_SOLO_5x5")),
            ("tier".into(), s("DIAMOND")),
            ("rank".into(), s("I")),
            ("league_points".into(), Value::Int(75)),
            ("wins".into(), Value::Int(wins)),
            ("losses".into(), Value::Int(losses)),
            ("veteran".into(), Value::Boolean(false)),
            ("inactive".into(), Value::Boolean(false)),
            ("fresh_blood".into(), Value::Boolean(true)),
            ("hot_streak".into(), Value::Boolean(false)),
            ("mini_series".into(), Value::Null),
            ("games".into(), Value::Int(games)),
            (
                "win_rate".into(),
                if games == 0 {
                    Value::Null
                } else {
                    Value::Double(wins as f64 / games as f64)
                },
            ),
            ("source".into(), s("test-api")),
            ("trace_id".into(), trace_id.map(s).unwrap_or(Value::Null)),
            ("source_topic".into(), s(topic)),
            ("source_partition".into(), Value::Int(partition)),
            ("source_offset".into(), Value::Long(offset)),
            ("fetched_at".into(), Value::TimestampMillis(fetched_at_ms())),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_records_are_cleaned_and_bad_ones_dead_lettered_with_the_reason() {
    let cfg = stage_config("clean_map");
    create_topics(&cfg, 1).await;
    let raw_topic = cfg.topics.name(TopicRole::Raw);
    let producer: FutureProducer = kafka::producer_config(&cfg.kafka).create().unwrap();

    // (key, value, traceparent) in partition order; the offset is the index.
    let tp_good = trace::new_traceparent();
    let tp_bad = trace::new_traceparent();
    let inputs: Vec<(&str, String, Option<String>)> = vec![
        ("a1", raw_json("a1", "120", 100), Some(tp_good.clone())),
        ("a2", "{not json".into(), Some(tp_bad.clone())),
        (
            "a3",
            raw_json("a3", "1", 1).replace(r#""summonerId":"a3","#, ""),
            None,
        ),
        ("a4", raw_json("a4", r#""12""#, 8), None),
        ("a5", raw_json("a5", "-4", 8), Some(tp_bad.clone())),
        ("a6", "[1,2,3]".into(), None),
        ("a7", raw_json("a7", r#""many""#, 8), None),
        ("a8", raw_json("a8", "0", 0), Some("garbage".into())),
    ];
    for (key, value, tp) in &inputs {
        send_raw(&producer, &raw_topic, key, value, tp.as_deref()).await;
    }

    let shutdown = CancellationToken::new();
    let stage = spawn_clean(&cfg, &shutdown);
    let cleaned_topic = cfg.topics.name(TopicRole::Cleaned);
    let dl_topic = cfg.topics.name(TopicRole::DeadLetter);
    let mut reader = Reader::new(&[cleaned_topic.clone(), dl_topic.clone()]);
    tokio::task::block_in_place(|| {
        reader.read_until(Duration::from_secs(60), |m| m.len() >= inputs.len())
    });
    shutdown.cancel();
    let stats = tokio::time::timeout(Duration::from_secs(60), stage)
        .await
        .expect("the stage stops within 60 s of shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(stats.records_in, 8);
    assert_eq!((stats.records_out, stats.dead_letters), (3, 5));
    tokio::task::block_in_place(|| reader.read_to_end(Duration::from_secs(30)));

    let codec = codec();
    let mut cleaned: Vec<(String, Record, OwnedMessage)> = reader
        .messages
        .iter()
        .filter(|m| m.topic() == cleaned_topic)
        .map(|m| {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            (key, codec.decode(m.payload().unwrap()).unwrap(), m.clone())
        })
        .collect();
    cleaned.sort_by_key(|(k, _, _)| k.clone());
    let trace_good = trace::trace_id(&tp_good).map(str::to_string);
    let expected = vec![
        (
            "a1".to_string(),
            expected_record("a1", 120, 100, trace_good.as_deref(), &raw_topic, 0, 0),
        ),
        (
            "a4".to_string(),
            expected_record("a4", 12, 8, None, &raw_topic, 0, 3),
        ),
        (
            "a8".to_string(),
            expected_record("a8", 0, 0, None, &raw_topic, 0, 7),
        ),
    ];
    assert_eq!(
        cleaned
            .iter()
            .map(|(k, r, _)| (k.clone(), r.clone()))
            .collect::<Vec<_>>(),
        expected,
        "exactly the good records, typed, derived and with lineage"
    );
    // Headers travel: traceparent, etl.source, etl.fetched_at.
    let a1 = &cleaned[0].2;
    assert_eq!(header(a1, h::TRACEPARENT), Some(tp_good.as_str()));
    assert_eq!(header(a1, h::SOURCE), Some("test-api"));
    assert_eq!(header(a1, h::FETCHED_AT), Some(FETCHED_AT));

    let dls: BTreeMap<String, &OwnedMessage> = reader
        .messages
        .iter()
        .filter(|m| m.topic() == dl_topic)
        .map(|m| (String::from_utf8(m.key().unwrap().to_vec()).unwrap(), m))
        .collect();
    let expect_dl = [
        ("a2", "invalid_json", 1),
        ("a3", "missing_required", 2),
        ("a5", "out_of_range", 4),
        ("a6", "not_an_object", 5),
        ("a7", "type", 6),
    ];
    assert_eq!(
        dls.keys().cloned().collect::<Vec<_>>(),
        expect_dl
            .iter()
            .map(|e| e.0.to_string())
            .collect::<Vec<_>>()
    );
    for (key, kind, offset) in expect_dl {
        let m = dls[key];
        let original = &inputs[offset as usize].1;
        assert_eq!(
            m.payload(),
            Some(original.as_bytes()),
            "{key}: original bytes"
        );
        assert_eq!(header(m, h::ERROR_KIND), Some(kind), "{key}");
        assert_eq!(header(m, h::ERROR_STAGE), Some("clean"), "{key}");
        assert_eq!(header(m, h::SOURCE_TOPIC), Some(raw_topic.as_str()));
        assert_eq!(header(m, h::SOURCE_PARTITION), Some("0"));
        assert_eq!(
            header(m, h::SOURCE_OFFSET),
            Some(offset.to_string().as_str())
        );
        assert_eq!(header(m, h::ATTEMPTS), Some("1"));
        assert_eq!(
            header(m, h::SOURCE),
            Some("test-api"),
            "original headers kept"
        );
        assert!(!header(m, h::ERROR_MESSAGE).unwrap().is_empty());
    }
    assert_eq!(header(dls["a2"], h::TRACEPARENT), Some(tp_bad.as_str()));
    assert!(header(dls["a3"], h::ERROR_MESSAGE)
        .unwrap()
        .contains("summonerId"));
    assert!(header(dls["a7"], h::ERROR_MESSAGE)
        .unwrap()
        .contains("\"many\""));

    // The group's committed offset is the end of raw: nothing will be read again.
    let c: BaseConsumer = kafka::consumer_config(&cfg.kafka, &cfg.pipeline.group_id("clean"))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&raw_topic, 0);
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    assert_eq!(got.elements()[0].offset(), Offset::Offset(8));
}

/// Produces `n` raw records numbered from `start` over the raw topic's partitions; every 50th
/// is malformed. Returns when all are acknowledged.
fn produce_numbered(topic: &str, start: usize, n: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka::producer_config(&common::kafka_config())
            .create()
            .unwrap();
    let headers = raw_headers(Some(&trace::new_traceparent()));
    for i in start..start + n {
        let key = format!("s{i}");
        let value = if i % 50 == 7 {
            format!("{{\"summonerId\":\"{key}\",\"wins\":\"many\"")
        } else {
            raw_json(&key, &(i % 300).to_string(), (i % 200) as i64)
        };
        let mut rec = BaseRecord::to(topic)
            .key(key.as_str())
            .payload(value.as_str())
            .headers(headers.clone());
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// The raw record ids found in cleaned (decoded) and dead-letter (keys), with their counts.
fn ids(reader: &Reader, cfg: &Config) -> HashMap<String, usize> {
    let codec = codec();
    let cleaned = cfg.topics.name(TopicRole::Cleaned);
    let mut out: HashMap<String, usize> = HashMap::new();
    for m in &reader.messages {
        let id = if m.topic() == cleaned {
            let r = codec.decode(m.payload().unwrap()).unwrap();
            r.get("summoner_id").unwrap().as_str().unwrap().to_string()
        } else {
            String::from_utf8(m.key().unwrap().to_vec()).unwrap()
        };
        *out.entry(id).or_default() += 1;
    }
    out
}

fn assert_exactly_once(reader: &Reader, cfg: &Config, total: usize) {
    let counts = ids(reader, cfg);
    let dups: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).take(5).collect();
    assert!(dups.is_empty(), "duplicates: {dups:?}");
    let missing: Vec<_> = (0..total)
        .map(|i| format!("s{i}"))
        .filter(|k| !counts.contains_key(k))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "missing: {missing:?}");
    assert_eq!(counts.len(), total);
    assert_eq!(reader.messages.len(), total);
}

/// Reads until `total` messages arrived; on a timeout, panics with the stages' logs.
fn read_or_dump(reader: &mut Reader, total: usize, stages: &[&Stage]) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        reader.read_until(Duration::from_secs(180), |m| m.len() >= total)
    }));
    if r.is_err() {
        let logs: Vec<String> = stages.iter().map(|s| s.log()).collect();
        panic!(
            "only {} of {total} messages; stage logs:\n{}",
            reader.messages.len(),
            logs.join("\n-----\n")
        );
    }
}

struct Stage(Child, tempfile::NamedTempFile);

impl Stage {
    fn start(cfg: &Config, instance: &str, batch_size: usize) -> Stage {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_etl-pipe"));
        cmd.args(["clean", "--config", "config/demo.toml"])
            .env("ETL__KAFKA__BROKERS", common::kafka_brokers())
            .env("ETL__PIPELINE__NAME", &cfg.pipeline.name)
            .env("ETL__PIPELINE__INSTANCE", instance)
            .env("ETL__CLEAN__BATCH_SIZE", batch_size.to_string())
            .env("ETL_MYSQL_PASSWORD", "unused")
            // Several instances on one host: no /metrics server (it has one port per stage).
            .env("ETL__OBSERVABILITY__HTTP_PORT", "0")
            .env("RUST_LOG", "info,etl_pipe::kafka::eos=debug")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap());
        for role in TopicRole::ALL {
            cmd.env(
                format!("ETL__TOPICS__{}__NAME", role.key().to_uppercase()),
                cfg.topics.name(role),
            );
        }
        Stage(cmd.spawn().unwrap(), log)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.1.path()).unwrap()
    }

    /// Waits for the exit after SIGTERM; panics with the log unless it is a clean exit.
    fn stop(mut self) -> String {
        sigterm(&self.0);
        let status = self.0.wait().unwrap();
        let log = self.log();
        assert!(status.success(), "graceful stop: {status}\n{log}");
        assert!(log.contains("batch in hand committed"), "{log}");
        log
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Raw records committed by the clean group so far (sum over partitions). Reads with
/// read_uncommitted: a read_committed consumer asks for *stable* offsets and waits while a
/// (killed) transaction still holds offsets of the group.
fn committed_total(cfg: &Config, partitions: i32) -> i64 {
    let raw = cfg.topics.name(TopicRole::Raw);
    let c: BaseConsumer = kafka::consumer_config(&cfg.kafka, &cfg.pipeline.group_id("clean"))
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(&raw, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements()
        .iter()
        .map(|e| e.offset().to_raw().unwrap_or(0).max(0))
        .sum()
}

#[test]
fn exactly_once_across_a_sigkill_mid_stream() {
    common::require_kafka();
    let cfg = stage_config("clean_crash");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(create_topics(&cfg, 3));
    let raw = cfg.topics.name(TopicRole::Raw);
    const TOTAL: usize = 50_000;
    // The stable instance id makes the restart fence the killed process and abort its open
    // transaction at once (instead of after kafka.transaction_timeout).
    let instance = common::unique("crash");

    // Half the records are there before the stage starts, the rest arrives while it runs.
    produce_numbered(&raw, 0, TOTAL / 2);
    let mut first = Stage::start(&cfg, &instance, 500);
    let feeder = {
        let raw = raw.clone();
        std::thread::spawn(move || {
            for chunk in 0..25 {
                produce_numbered(&raw, TOTAL / 2 + chunk * 1000, 1000);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // Kill once some transactions have committed, while input is still arriving.
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed_total(&cfg, 3) < 5_000 {
        assert!(
            Instant::now() < deadline,
            "the stage committed nothing in 120 s"
        );
        if let Ok(Some(status)) = first.0.try_wait() {
            panic!("stage exited early: {status}\n{}", first.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    let at_kill = committed_total(&cfg, 3);
    assert!(
        at_kill < TOTAL as i64,
        "the kill must land mid-stream (committed {at_kill})"
    );

    let second = Stage::start(&cfg, &instance, 500);
    feeder.join().unwrap();
    let mut reader = Reader::new(&[
        cfg.topics.name(TopicRole::Cleaned),
        cfg.topics.name(TopicRole::DeadLetter),
    ]);
    read_or_dump(&mut reader, TOTAL, &[&second]);
    second.stop();
    reader.read_to_end(Duration::from_secs(60));
    assert_exactly_once(&reader, &cfg, TOTAL);
    assert_eq!(committed_total(&cfg, 3), TOTAL as i64);
    let dead = reader
        .messages
        .iter()
        .filter(|m| m.topic() == cfg.topics.name(TopicRole::DeadLetter))
        .count();
    assert_eq!(dead, TOTAL / 50);

    // Evidence that the kill hit an open transaction: read_uncommitted also sees its aborted
    // records (not asserted: a kill between two transactions is legal, just less telling).
    let hw: i64 = [TopicRole::Cleaned, TopicRole::DeadLetter]
        .iter()
        .map(|r| {
            let t = cfg.topics.name(*r);
            let c: BaseConsumer = kafka::consumer_config(&cfg.kafka, "probe")
                .create()
                .unwrap();
            (0..2)
                .filter_map(|p| c.fetch_watermarks(&t, p, Duration::from_secs(10)).ok())
                .map(|(lo, hi)| hi - lo)
                .sum::<i64>()
        })
        .sum();
    eprintln!(
        "committed at kill: {at_kill}; records in cleaned+dead-letter: {TOTAL} committed, \
         {hw} log entries incl. aborted records and transaction markers"
    );
}

#[test]
fn exactly_once_across_rebalances() {
    common::require_kafka();
    let cfg = stage_config("clean_rebalance");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(create_topics(&cfg, 4));
    let raw = cfg.topics.name(TopicRole::Raw);
    const TOTAL: usize = 20_000;
    let feeder = {
        let raw = raw.clone();
        std::thread::spawn(move || {
            for chunk in 0..20 {
                produce_numbered(&raw, chunk * 1000, 1000);
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    let a = Stage::start(&cfg, &common::unique("a"), 300);
    std::thread::sleep(Duration::from_secs(2));
    // B joins: A gives some partitions up (cooperative revoke) mid-stream.
    let b = Stage::start(&cfg, &common::unique("b"), 300);
    std::thread::sleep(Duration::from_secs(3));
    // A leaves gracefully: B takes its partitions over.
    let a_log = a.log();
    let a_log = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.stop()))
        .unwrap_or_else(|_| panic!("A did not stop cleanly:\n{a_log}"));
    feeder.join().unwrap();
    let mut reader = Reader::new(&[
        cfg.topics.name(TopicRole::Cleaned),
        cfg.topics.name(TopicRole::DeadLetter),
    ]);
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_or_dump(&mut reader, TOTAL, &[&b])
    }))
    .is_err()
    {
        panic!("A's log:\n{a_log}");
    }
    let b_log = b.stop();
    assert!(a_log.contains("partitions revoked"), "{a_log}");
    assert!(b_log.contains("partitions assigned"), "{b_log}");
    reader.read_to_end(Duration::from_secs(60));
    assert_exactly_once(&reader, &cfg, TOTAL);
}

/// `msg`'s key and payload, to `to`.
fn echo(to: &Arc<str>, msg: &BorrowedMessage<'_>) -> Output {
    Output::to(to.clone())
        .key(msg.key().map(<[u8]>::to_vec))
        .payload(msg.payload().unwrap_or_default().to_vec())
}

/// Runs the exactly-once loop with `transform` until `n` outputs are committed in `out_topic`,
/// then shuts it down: its stats, and the reader holding those outputs.
async fn run_until_read<T: Transform + Send + 'static>(
    cfg: &Config,
    settings: Settings,
    transform: T,
    out_topic: &str,
    n: usize,
) -> (eos::Stats, Reader) {
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(eos::run(
        cfg.kafka.clone(),
        settings,
        transform,
        shutdown.clone(),
    ));
    let mut reader = Reader::new(&[out_topic.to_string()]);
    tokio::task::block_in_place(|| reader.read_until(Duration::from_secs(60), |m| m.len() >= n));
    shutdown.cancel();
    let stats = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the loop stops within 60 s of shutdown")
        .unwrap()
        .unwrap();
    (stats, reader)
}

/// Echoes each input; fails (retriably) the first time it sees offset `fail_at`.
struct FlakyEcho {
    to: Arc<str>,
    fail_at: i64,
    failures: Arc<AtomicUsize>,
}

impl Transform for FlakyEcho {
    fn transform(
        &mut self,
        msg: &BorrowedMessage<'_>,
        out: &mut Vec<Output>,
    ) -> Result<(), TransformError> {
        if msg.offset() == self.fail_at && self.failures.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(TransformError::Retriable("injected failure".into()));
        }
        out.push(echo(&self.to, msg));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transaction_is_aborted_rewound_and_retried_without_duplicates() {
    let cfg = stage_config("eos_abort");
    create_topics(&cfg, 1).await;
    let raw = cfg.topics.name(TopicRole::Raw);
    let out_topic = cfg.topics.name(TopicRole::Cleaned);
    tokio::task::block_in_place(|| produce_numbered(&raw, 0, 100));

    let mut settings = Settings::for_stage(&cfg.common(), "eos-test", TopicRole::Raw);
    settings.batch_size = 30;
    settings.batch_max_age = Duration::from_secs(5);
    let failures = Arc::new(AtomicUsize::new(0));
    let transform = FlakyEcho {
        to: out_topic.clone().into(),
        fail_at: 45, // the second transaction: 30..60 is aborted once
        failures: failures.clone(),
    };
    let (stats, mut reader) = run_until_read(&cfg, settings, transform, &out_topic, 100).await;
    tokio::task::block_in_place(|| reader.read_to_end(Duration::from_secs(30)));
    assert_eq!(
        failures.load(Ordering::SeqCst),
        2,
        "failed once, then passed"
    );
    assert_eq!(stats.aborts, 1);
    assert_eq!(stats.records_in, 100);
    let mut keys: Vec<usize> = reader
        .messages
        .iter()
        .map(|m| {
            std::str::from_utf8(&m.key().unwrap()[1..])
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        (0..100).collect::<Vec<_>>(),
        "every input exactly once: the aborted outputs are invisible"
    );
}

/// Echoes each message after `per_message` of work: a stage slower than its batch age.
struct SlowEcho {
    to: Arc<str>,
    per_message: Duration,
}

impl Transform for SlowEcho {
    fn transform(
        &mut self,
        msg: &BorrowedMessage<'_>,
        out: &mut Vec<Output>,
    ) -> Result<(), TransformError> {
        std::thread::sleep(self.per_message);
        out.push(echo(&self.to, msg));
        Ok(())
    }
}

/// With a backlog that holds a full batch, a transaction fills up to `batch_size` past
/// `batch_max_age`: a slow stage pays no more commits per record than a fast one. Before,
/// this stage (200 µs per message, 10 ms batches) committed 1 800 records in 79 transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_backlog_a_transaction_fills_to_batch_size_past_its_age() {
    let cfg = stage_config("eos_fill");
    create_topics(&cfg, 1).await;
    let raw = cfg.topics.name(TopicRole::Raw);
    let out_topic = cfg.topics.name(TopicRole::Cleaned);
    tokio::task::block_in_place(|| produce_numbered(&raw, 0, 1800));

    let mut settings = Settings::for_stage(&cfg.common(), "eos-test", TopicRole::Raw);
    settings.batch_size = 600;
    settings.batch_max_age = Duration::from_millis(10);
    let transform = SlowEcho {
        to: out_topic.clone().into(),
        per_message: Duration::from_micros(200),
    };
    let (stats, reader) = run_until_read(&cfg, settings, transform, &out_topic, 1800).await;
    assert_eq!(stats.records_in, 1800);
    assert_eq!(reader.messages.len(), 1800, "every record once");
    // 3 full batches (each ≈ 120 ms of work, under STRETCH_MAX); a few more if a fetch
    // left the consumer's queue empty for a moment (an empty poll ends a fill).
    assert!(
        stats.transactions <= 8,
        "{} transactions for 1 800 records in batches of 600",
        stats.transactions
    );
}

#[test]
fn a_bad_clean_config_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    let cases = [
        (
            "[clean.fields.wins]\nmin = 10\nmax = 5\n",
            "clean.fields.wins.min",
        ),
        ("[clean.fields.tier]\nmax = 5\n", "clean.fields.tier.max"),
        (
            "[clean.fields.winz]\nfrom = \"wins\"\n",
            "clean.fields.winz",
        ),
        (
            "[clean.fields.games]\nderive = \"ratio\"\nargs = [\"wins\", \"losses\"]\n",
            "clean.fields.games.derive",
        ),
        ("[clean]\nschema = \"schemas/nope.avsc\"\n", "clean.schema"),
    ];
    for (text, key) in cases {
        std::fs::write(&f, text).unwrap();
        for cmd in [&["config", "check"][..], &["clean"][..]] {
            let out = Command::new(env!("CARGO_BIN_EXE_etl-pipe"))
                .args(cmd)
                .arg("--config")
                .arg(&f)
                .env("ETL__KAFKA__BROKERS", "127.0.0.1:1")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{cmd:?} {text}: {stderr}");
            assert!(stderr.contains(key), "{cmd:?} expected {key}: {stderr}");
        }
    }
    // The demo mapping passes.
    let out = Command::new(env!("CARGO_BIN_EXE_etl-pipe"))
        .args(["config", "check", "--config", "config/demo.toml"])
        .env("ETL_MYSQL_PASSWORD", "x")
        .env("ETL_API_TOKEN", "y")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[clean.fields.win_rate]"), "{stdout}");
}

/// A cleaned schema with a nested record, an array of records and lineage, for the nested test.
const NESTED_SCHEMA: &str = r#"{"type": "record", "name": "Entry", "namespace": "test.nested",
  "fields": [
    {"name": "summoner_id", "type": "string"},
    {"name": "progress", "type": ["null", "string"], "default": null},
    {"name": "mini_series", "type": ["null", {"type": "record", "name": "MiniSeries", "fields": [
      {"name": "target", "type": "int"}, {"name": "wins", "type": "int"},
      {"name": "losses", "type": "int"}, {"name": "progress", "type": "string"}]}],
     "default": null},
    {"name": "players", "type": {"type": "array", "items": {"type": "record", "name": "Player",
      "fields": [{"name": "name", "type": "string"}, {"name": "kills", "type": "int"}]}},
     "default": []},
    {"name": "source_offset", "type": "long"}
  ]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_json_is_cleaned_into_nested_avro_and_a_bad_leaf_names_its_path() {
    let mut cfg = stage_config("clean_nested");
    let schema_path = std::env::temp_dir().join(format!("{}.avsc", common::unique("nested")));
    std::fs::write(&schema_path, NESTED_SCHEMA).unwrap();
    let mut c = cfg.clean.take().unwrap();
    c.schema = schema_path.clone();
    c.fields.clear();
    c.key_field = Some("summoner_id".into());
    c.auto_map = true;
    c.fields.insert(
        "progress".into(),
        clean::FieldMapping {
            from: Some("miniSeries.progress".into()),
            ..Default::default()
        },
    );
    cfg.clean = Some(c);
    create_topics(&cfg, 1).await;
    let raw_topic = cfg.topics.name(TopicRole::Raw);
    let producer: FutureProducer = kafka::producer_config(&cfg.kafka).create().unwrap();
    let inputs = [
        (
            "n1",
            r#"{"summonerId": "n1", "miniSeries": {"target": 3, "wins": 1, "losses": 0, "progress": "WNN"},
                "players": [{"name": "a", "kills": 3}, {"name": "b", "kills": "4"}]}"#,
        ),
        (
            "n2",
            r#"{"summonerId": "n2", "players": [{"name": "a", "kills": 3}, {"name": "b", "kills": "x"}]}"#,
        ),
        ("n3", r#"{"summonerId": "n3", "players": []}"#),
    ];
    for (key, value) in &inputs {
        send_raw(&producer, &raw_topic, key, value, None).await;
    }

    let shutdown = CancellationToken::new();
    let stage = spawn_clean(&cfg, &shutdown);
    let cleaned_topic = cfg.topics.name(TopicRole::Cleaned);
    let dl_topic = cfg.topics.name(TopicRole::DeadLetter);
    let mut reader = Reader::new(&[cleaned_topic.clone(), dl_topic.clone()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while reader.messages.len() < inputs.len() && !stage.is_finished() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::task::block_in_place(|| reader.poll_once());
    }
    if stage.is_finished() {
        panic!("the stage stopped early: {:?}", stage.await);
    }
    shutdown.cancel();
    let stats = tokio::time::timeout(Duration::from_secs(60), stage)
        .await
        .expect("the stage stops within 60 s of shutdown")
        .unwrap()
        .unwrap();
    assert_eq!((stats.records_out, stats.dead_letters), (2, 1));
    tokio::task::block_in_place(|| reader.read_to_end(Duration::from_secs(30)));

    let codec = Codec::new(load_schema(&schema_path).unwrap(), Framing::SingleObject);
    let mut cleaned: Vec<(String, Record)> = reader
        .messages
        .iter()
        .filter(|m| m.topic() == cleaned_topic)
        .map(|m| {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            (key, codec.decode(m.payload().unwrap()).unwrap())
        })
        .collect();
    cleaned.sort_by_key(|(k, _)| k.clone());
    let s = |x: &str| Value::String(x.to_string());
    let rec = |fields: Vec<(&str, Value)>| Record {
        fields: fields.into_iter().map(|(n, v)| (n.into(), v)).collect(),
    };
    let player = |name: &str, kills: i32| {
        Value::Record(rec(vec![("name", s(name)), ("kills", Value::Int(kills))]))
    };
    assert_eq!(
        cleaned,
        vec![
            (
                "n1".to_string(),
                rec(vec![
                    ("summoner_id", s("n1")),
                    ("progress", s("WNN")),
                    (
                        "mini_series",
                        Value::Record(rec(vec![
                            ("target", Value::Int(3)),
                            ("wins", Value::Int(1)),
                            ("losses", Value::Int(0)),
                            ("progress", s("WNN")),
                        ])),
                    ),
                    (
                        "players",
                        Value::Array(vec![player("a", 3), player("b", 4)])
                    ),
                    ("source_offset", Value::Long(0)),
                ])
            ),
            (
                "n3".to_string(),
                rec(vec![
                    ("summoner_id", s("n3")),
                    ("progress", Value::Null),
                    ("mini_series", Value::Null),
                    ("players", Value::Array(vec![])),
                    ("source_offset", Value::Long(2)),
                ])
            ),
        ],
        "the nested record and the array of records travel as Avro"
    );

    let dl: Vec<&OwnedMessage> = reader
        .messages
        .iter()
        .filter(|m| m.topic() == dl_topic)
        .collect();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].key(), Some("n2".as_bytes()));
    assert_eq!(dl[0].payload(), Some(inputs[1].1.as_bytes()));
    assert_eq!(header(dl[0], h::ERROR_KIND), Some("type"));
    let reason = header(dl[0], h::ERROR_MESSAGE).unwrap();
    assert!(
        reason.contains("`players`: at `players[1].kills`: \"x\" is not a number"),
        "{reason}"
    );
    let _ = std::fs::remove_file(schema_path);
}

/// One raw message to partition 0 of `topic`, with extract's headers.
async fn send_raw(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &str,
    traceparent: Option<&str>,
) {
    producer
        .send(
            FutureRecord::to(topic)
                .partition(0)
                .key(key)
                .payload(value)
                .headers(raw_headers(traceparent)),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

/// The clean stage in this process until `shutdown`.
fn spawn_clean(
    cfg: &Config,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<Result<eos::Stats, clean::CleanError>> {
    let (cfg, shutdown) = (cfg.clone(), shutdown.clone());
    tokio::spawn(async move {
        clean::run_with_stats(&cfg.common(), &cfg.clean_or_default(), shutdown).await
    })
}
