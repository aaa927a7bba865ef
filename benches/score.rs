//! Throughput of the score stage, cleaned → scored, one instance, through the real local
//! Kafka (`deploy/local/stack.sh up`). Produces N cleaned league records (codec-encoded,
//! 3 partitions, fresh topics), then runs the stage in-process and times it from start until
//! its consumer group has committed the end of every partition (every window emitted).
//! Prints figures; asserts nothing.
//!
//! `cargo bench --bench score` (release). `SCORE_BENCH_RECORDS=200000` (default; rounded up
//! to whole windows),
//! `SCORE_BENCH_WINDOW=1000` (window_records), `SCORE_BENCH_BATCH=10000` (batch_size),
//! `SCORE_BENCH_SERIES_EVERY=10` (every 10th record carries the nested `mini_series`; 1 = all,
//! and then its leaves `mini_series.wins` / `mini_series.progress` are profiled too; 0 = none),
//! `ETL_TEST_KAFKA=host:port`.
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use etl_pipe::codec::{load_schema, Codec, Framing};
use etl_pipe::config::{Config, KafkaConfig, TopicRole};
use etl_pipe::kafka;
use etl_pipe::record::{Record, Value};
use etl_pipe::stages::score::{self, ScoreConfig};

const PARTITIONS: i32 = 3;

fn entry(i: usize, rng: &mut StdRng, series_every: usize) -> Record {
    let wins = rng.gen_range(0..400);
    let losses = rng.gen_range(0..400);
    let mut r = Record::new();
    r.set("summoner_id", Value::String(format!("sid-{i:09}")));
    r.set(
        "summoner_name",
        Value::String(format!("player {}", rng.gen_range(0..5000))),
    );
    r.set("queue_type", Value::String("RANKED_SOLO_5x5".into()));
    r.set(
        "tier",
        Value::String(["IRON", "BRONZE", "SILVER", "GOLD", "PLATINUM"][rng.gen_range(0..5)].into()),
    );
    r.set(
        "rank",
        Value::String(["I", "II", "III", "IV"][rng.gen_range(0..4)].into()),
    );
    r.set("league_points", Value::Int(rng.gen_range(0..100)));
    r.set("wins", Value::Int(wins));
    r.set("losses", Value::Int(losses));
    r.set("veteran", Value::Boolean(rng.gen_bool(0.2)));
    r.set("inactive", Value::Boolean(false));
    r.set("fresh_blood", Value::Null);
    r.set("hot_streak", Value::Boolean(rng.gen_bool(0.1)));
    r.set("games", Value::Int(wins + losses));
    if series_every > 0 && i % series_every == 0 {
        let mut m = Record::new();
        m.set("target", Value::Int(3));
        m.set("wins", Value::Int((i % 3) as i32));
        m.set("losses", Value::Int((i % 2) as i32));
        m.set(
            "progress",
            Value::String(["WLN", "LWN", "WWN"][i % 3].into()),
        );
        r.set("mini_series", Value::Record(m));
    } else {
        r.set("mini_series", Value::Null);
    }
    r.set(
        "win_rate",
        if wins + losses == 0 {
            Value::Null
        } else {
            Value::Double(wins as f64 / (wins + losses) as f64)
        },
    );
    r.set("source", Value::String("league-v4".into()));
    r.set(
        "trace_id",
        Value::String(format!("{:032x}", rng.gen::<u128>())),
    );
    r.set("source_topic", Value::String("etl.raw".into()));
    r.set("source_partition", Value::Int(0));
    r.set("source_offset", Value::Long(i as i64));
    r.set("fetched_at", Value::TimestampMillis(1_735_689_600_000));
    r
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The committed offsets of the stage's group, summed over partitions.
fn committed(consumer: &BaseConsumer, topic: &str) -> i64 {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    match consumer.committed_offsets(tpl, Duration::from_secs(10)) {
        Ok(got) => got
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum(),
        Err(_) => 0,
    }
}

#[tokio::main]
async fn main() {
    // RUST_LOG=etl_pipe=debug shows each transaction.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let n = env_usize("SCORE_BENCH_RECORDS", 200_000);
    let window = env_usize("SCORE_BENCH_WINDOW", 1000);
    let series_every = env_usize("SCORE_BENCH_SERIES_EVERY", 10);
    println!("mini_series on every {series_every}th record (0 = none; 1 = all, leaves profiled)");
    // Whole windows per partition (kept from the windows before issue 17; the trailing rule
    // only needs each partition to reach one window).
    let per_round = PARTITIONS as usize * window;
    let n = n.div_ceil(per_round) * per_round;
    let run = format!(
        "score-bench-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let mut cfg = Config {
        kafka: KafkaConfig {
            brokers: std::env::var("ETL_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    cfg.pipeline.name = run.clone();
    cfg.topics.partitions = PARTITIONS;
    for role in TopicRole::ALL {
        let name = format!("{run}.{}", role.key());
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
    let dir = env!("CARGO_MANIFEST_DIR");
    cfg.score = Some(ScoreConfig {
        window_records: window,
        schema_in: format!("{dir}/schemas/league_entry.cleaned.avsc").into(),
        schema_out: format!("{dir}/schemas/league_entry.scored.avsc").into(),
        fields: Some(
            [
                "summoner_name",
                "tier",
                "rank",
                "league_points",
                "wins",
                "losses",
                "win_rate",
                "veteran",
                "hot_streak",
            ]
            .iter()
            .chain(if series_every == 1 {
                ["mini_series.wins", "mini_series.progress"].iter()
            } else {
                [].iter()
            })
            .map(|s| s.to_string())
            .collect(),
        ),
        batch_size: env_usize("SCORE_BENCH_BATCH", 10_000),
        ..Default::default()
    });
    cfg.validate().expect("config");
    kafka::topics::apply(&cfg.kafka, &cfg.topics.all().expect("topics"))
        .await
        .expect("creating topics (is Kafka up? deploy/local/stack.sh up)");
    let cleaned = cfg.topics.name(TopicRole::Cleaned);

    // Input: N records, round robin over the partitions.
    let codec = Codec::new(
        load_schema(format!("{dir}/schemas/league_entry.cleaned.avsc")).expect("schema"),
        Framing::SingleObject,
    );
    let producer: FutureProducer = kafka::producer_config(&cfg.kafka)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()
        .expect("producer");
    let mut rng = StdRng::seed_from_u64(1);
    let t = Instant::now();
    let mut bytes = 0usize;
    let mut inflight = Vec::with_capacity(10_000);
    for i in 0..n {
        let payload = codec
            .encode(&entry(i, &mut rng, series_every))
            .expect("encode");
        bytes += payload.len();
        let key = format!("sid-{i:09}");
        let rec = FutureRecord::to(&cleaned)
            .partition(i as i32 % PARTITIONS)
            .key(&key)
            .payload(&payload);
        match producer.send_result(rec) {
            Ok(f) => inflight.push(f),
            Err((e, _)) => panic!("produce: {e}"),
        }
        if inflight.len() == 10_000 {
            for f in inflight.drain(..) {
                f.await
                    .expect("delivery")
                    .map_err(|(e, _)| e)
                    .expect("delivery");
            }
        }
    }
    for f in inflight.drain(..) {
        f.await
            .expect("delivery")
            .map_err(|(e, _)| e)
            .expect("delivery");
    }
    println!(
        "produced {n} cleaned records ({:.0} B each) in {:.2?}",
        bytes as f64 / n as f64,
        t.elapsed()
    );

    // The stage, timed until its group committed the end of every partition.
    let group_reader: BaseConsumer =
        kafka::consumer_config(&cfg.kafka, &cfg.pipeline.group_id("score"))
            .create()
            .expect("consumer");
    let shutdown = CancellationToken::new();
    let t = Instant::now();
    let stage = {
        let (cfg, shutdown) = (cfg.clone(), shutdown.clone());
        tokio::spawn(async move {
            score::run_with_stats(
                &cfg.common(),
                &cfg.score.clone().unwrap_or_default(),
                &cfg.quality,
                &cfg.clean_or_default(),
                shutdown,
            )
            .await
        })
    };
    let mut first_commit = None;
    loop {
        let c = committed(&group_reader, &cleaned);
        if c > 0 && first_commit.is_none() {
            first_commit = Some((t.elapsed(), c));
        }
        if c >= n as i64 {
            break;
        }
        if stage.is_finished() {
            panic!("the stage stopped early: {:?}", stage.await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = t.elapsed();
    shutdown.cancel();
    let stats = stage.await.expect("join").expect("stage");
    let (t0, c0) = first_commit.unwrap_or_default();
    println!(
        "score: {n} records in {elapsed:.2?} including start-up (window_records={window}): {:.0} records/s",
        n as f64 / elapsed.as_secs_f64(),
    );
    println!(
        "  after the first committed window ({t0:.2?}, {c0} records): {:.0} records/s; {} transactions, {} aborts, {} outputs",
        (n as i64 - c0) as f64 / (elapsed - t0).as_secs_f64().max(1e-9),
        stats.transactions,
        stats.aborts,
        stats.records_out
    );
}
