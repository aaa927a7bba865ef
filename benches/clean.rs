//! Throughput of the clean stage, raw → cleaned, on the local broker: one instance, the demo
//! mapping (`config/demo.toml`), one run. Prints figures; asserts nothing (they vary with the
//! machine and its load).
//!
//! `cargo bench --bench clean` (release). Environment:
//! `CLEAN_BENCH_RECORDS` (200000), `CLEAN_BENCH_PARTITIONS` (3), `CLEAN_BENCH_BATCH` (the demo's
//! `clean.batch_size`), `CLEAN_BENCH_SERIES_EVERY` (10: every 10th raw record carries a nested
//! `miniSeries`, mapped to the `mini_series` record; 1 = all, 0 = none),
//! `ETL_TEST_KAFKA` (127.0.0.1:9092).
//!
//! 1. mapping + Avro encoding alone (`Mapper::map` + `Codec::encode`, one thread, no Kafka);
//! 2. the stage: N raw records (1 % malformed, so dead letters are in the mix) are produced
//!    first, then `stages::clean::run` starts in-process on fresh topics; the rate is taken
//!    from the consumer group's committed offsets (what is durably done), from the first
//!    commit to the last, and also end to end including start-up (group join, init).
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::TopicPartitionList;
use tokio_util::sync::CancellationToken;

use etl_pipe::codec::{Codec, Framing};
use etl_pipe::config::{Config, TopicRole};
use etl_pipe::kafka::{self, headers as h};
use etl_pipe::observability::trace;
use etl_pipe::stages::clean::{self, Lineage, Mapper};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn raw_json(i: usize, series_every: usize) -> String {
    if i % 100 == 42 {
        return format!(r#"{{"summonerId":"s{i}","wins":"many""#);
    }
    let series = if series_every > 0 && i % series_every == 0 {
        format!(
            r#","miniSeries":{{"target":3,"wins":{},"losses":{},"progress":"WLN"}}"#,
            i % 3,
            i % 2
        )
    } else {
        String::new()
    };
    format!(
        r#"{{"summonerId":"s{i}","summonerName":"Player {i}","queueType":"RANKED_SOLO_5x5","tier":"DIAMOND","rank":"II","leaguePoints":{},"wins":{},"losses":{},"veteran":false,"inactive":false,"freshBlood":{},"hotStreak":false{series}}}"#,
        i % 100,
        10 + i % 300,
        7 + i % 200,
        i % 2 == 0
    )
}

fn main() {
    // RUST_LOG=etl_pipe::kafka::eos=debug shows each transaction's timings.
    let _obs = etl_pipe::observability::init(None, "bench");
    let n = env_or("CLEAN_BENCH_RECORDS", 200_000);
    let partitions = env_or("CLEAN_BENCH_PARTITIONS", 3) as i32;
    let series_every = env_or("CLEAN_BENCH_SERIES_EVERY", 10);
    println!("schema: config/demo.toml's cleaned schema; miniSeries on every {series_every}th raw record (0 = none)");
    let brokers = std::env::var("ETL_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());

    let text = std::fs::read_to_string("config/demo.toml").expect("config/demo.toml");
    let mut cfg = Config::from_toml_with_env(&text, "config/demo.toml", &[]).expect("demo config");
    let tag = format!(
        "bench-clean-{}-{}",
        std::process::id(),
        rand::random::<u16>()
    );
    cfg.kafka.brokers = brokers;
    cfg.pipeline.name = tag.clone();
    cfg.pipeline.instance = Some("bench".into());
    cfg.topics.partitions = partitions;
    for role in TopicRole::ALL {
        let name = format!("{tag}.{}", role.key().replace('_', "-"));
        match role {
            TopicRole::Raw => cfg.topics.raw.name = Some(name),
            TopicRole::Cleaned => cfg.topics.cleaned.name = Some(name),
            TopicRole::Scored => cfg.topics.scored.name = Some(name),
            TopicRole::DeadLetter => cfg.topics.dead_letter.name = Some(name),
            TopicRole::Quarantine => cfg.topics.quarantine.name = Some(name),
            TopicRole::Quality => cfg.topics.quality.name = Some(name),
            TopicRole::Logs => cfg.topics.logs.name = Some(name),
            TopicRole::ExtractState => cfg.topics.extract_state.name = Some(name),
            TopicRole::ScoreBaseline => cfg.topics.score_baseline.name = Some(name),
        }
    }
    let clean_cfg = cfg.clean.clone().expect("[clean] in demo.toml");
    let batch = env_or("CLEAN_BENCH_BATCH", clean_cfg.batch_size);
    cfg.clean = Some(etl_pipe::stages::clean::CleanConfig {
        batch_size: batch,
        ..clean_cfg.clone()
    });

    // 1. Mapping + encoding, no Kafka.
    let schema = clean_cfg.load_schema().expect("schema");
    let mapper = Mapper::new(&schema, &clean_cfg).expect("mapping");
    let codec = Codec::new(schema, Framing::SingleObject);
    let raws: Vec<String> = (0..n).map(|i| raw_json(i, series_every)).collect();
    let lineage = Lineage {
        source: "bench",
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        topic: "etl.raw",
        partition: 0,
        offset: 0,
        fetched_at_ms: Some(1_764_000_000_000),
    };
    let t = Instant::now();
    let mut bytes = 0usize;
    let mut bad = 0usize;
    for r in &raws {
        match mapper.map(r.as_bytes(), &lineage) {
            Ok(m) => bytes += codec.encode(&m.record).map(|b| b.len()).unwrap_or(0),
            Err(_) => bad += 1,
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "mapping+encode (1 thread, no Kafka): {n} records in {secs:.2} s = {:.0} records/s \
         ({bad} dead letters, {:.0} bytes per cleaned record)",
        n as f64 / secs,
        bytes as f64 / (n - bad) as f64
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let specs = cfg.topics.all().expect("topics");
    rt.block_on(kafka::topics::apply(&cfg.kafka, &specs))
        .expect("creating topics (is the local stack up? deploy/local/stack.sh up)");

    // 2a. Load raw.
    let raw_topic = cfg.topics.name(TopicRole::Raw);
    let producer: ThreadedProducer<DefaultProducerContext> = kafka::producer_config(&cfg.kafka)
        .create()
        .expect("producer");
    let fetched = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let t = Instant::now();
    for (i, value) in raws.iter().enumerate() {
        let tp = trace::new_traceparent();
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: h::TRACEPARENT,
                value: Some(&tp),
            })
            .insert(Header {
                key: h::SOURCE,
                value: Some("bench"),
            })
            .insert(Header {
                key: h::FETCHED_AT,
                value: Some(&fetched),
            });
        let key = format!("s{i}");
        let mut rec = BaseRecord::to(&raw_topic)
            .key(&key)
            .payload(value)
            .headers(headers);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    println!(
        "loaded {n} raw records into {raw_topic} ({partitions} partitions) in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // 2b. The stage.
    let shutdown = CancellationToken::new();
    let start = Instant::now();
    let stage = {
        let cfg = cfg.clone();
        let shutdown = shutdown.clone();
        rt.spawn(async move {
            clean::run_with_stats(&cfg.common(), &cfg.clean_or_default(), shutdown).await
        })
    };
    let group = cfg.pipeline.group_id("clean");
    let watcher: BaseConsumer = kafka::consumer_config(&cfg.kafka, &group)
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("consumer");
    let committed = || -> i64 {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&raw_topic, p);
        }
        watcher
            .committed_offsets(tpl, Duration::from_secs(10))
            .map(|l| {
                l.elements()
                    .iter()
                    .map(|e| e.offset().to_raw().unwrap_or(0).max(0))
                    .sum()
            })
            .unwrap_or(0)
    };
    let mut first: Option<(Instant, i64)> = None;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let done = committed();
        if done > 0 && first.is_none() {
            first = Some((Instant::now(), done));
        }
        if done >= n as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "only {done} of {n} after 30 min");
        std::thread::sleep(Duration::from_millis(20));
    }
    let end = Instant::now();
    shutdown.cancel();
    let stats = rt
        .block_on(stage)
        .expect("stage task")
        .expect("stage result");
    let (t0, c0) = first.unwrap_or((start, 0));
    let steady = (n as i64 - c0) as f64 / (end - t0).as_secs_f64();
    let total = n as f64 / (end - start).as_secs_f64();
    println!(
        "clean stage, 1 instance, batch_size {batch}: {n} records ({} cleaned, {} dead letters, \
         {} transactions, {} aborts)",
        stats.records_out, stats.dead_letters, stats.transactions, stats.aborts
    );
    println!(
        "  steady state (first commit → last): {steady:.0} records/s; end to end incl. start-up \
         ({:.1} s to the first commit): {total:.0} records/s over {:.1} s",
        (t0 - start).as_secs_f64(),
        (end - start).as_secs_f64()
    );
}
