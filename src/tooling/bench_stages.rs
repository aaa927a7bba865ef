//! `etl-pipe bench-stages`: clean and score against their ceiling, a transactional
//! pass-through, in one run on the same records.
//!
//! Produces N raw records (the sample API's entries with extract's headers) to a fresh `raw`
//! topic, then runs, in this process and one after the other: a pass-through of `raw` (the
//! same consume → produce loop in Kafka transactions, [`crate::kafka::eos`], with clean's
//! batch settings, copying each message unchanged), clean itself (`raw` → `cleaned`), a
//! pass-through of `cleaned` with score's batch settings, and score (`cleaned` → `scored`).
//! Each run's rate counts from its group's first commit to the commit that covers every
//! record (the group join before it is the same for all and not the stage's work). Prints
//! records/s, each stage's share of its pass-through and the CPU seconds each took. Fresh
//! topics, removed afterwards unless `--keep`. Not a test: figures depend on the machine.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::kafka::eos::{self, Output, Settings, Stats, Transform, TransformError};
use crate::kafka::headers;
use crate::observability::trace::new_traceparent;
use crate::settings::TopicRole;
use crate::tooling::local::tally::GroupProgress;
use crate::tooling::sample_api::data::Dataset;

/// Options of `bench-stages`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchStagesArgs {
    /// Raw records (the sample API's undrifted entries).
    #[arg(long, default_value_t = 500_000)]
    pub records: u64,
    /// Partitions of the bench topics.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Rounds of the four runs (alternated, so that a change in the machine's load shows).
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// Keep the topics afterwards.
    #[arg(long)]
    pub keep: bool,
}

type BenchResult<T> = Result<T, String>;

/// Copies every message to `to`, unchanged (key, bytes, headers, partition).
struct PassThrough {
    to: Arc<str>,
}

impl Transform for PassThrough {
    fn transform(
        &mut self,
        msg: &BorrowedMessage<'_>,
        out: &mut Vec<Output>,
    ) -> Result<(), TransformError> {
        out.push(Output {
            topic: self.to.clone(),
            partition: Some(msg.partition()),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            headers: msg.headers().map(rdkafka::message::BorrowedHeaders::detach),
            dead_letter: None,
            origin: None,
        });
        Ok(())
    }
}

/// One measured run: records/s between the first and the last commit, CPU seconds.
struct Measured {
    rate: f64,
    cpu: f64,
}

/// Where the loop's thread spent a run, per record: `process` (transform + produce), `commit`
/// and `poll` in µs, and the share of the thread's time they add up to.
fn loop_line(stats: &Stats) -> String {
    let t = stats.loop_time;
    let n = stats.records_in.max(1) as f64;
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n;
    let total = (t.poll + t.process + t.commit + t.recover)
        .as_secs_f64()
        .max(1e-9);
    let share = |d: Duration| 100.0 * d.as_secs_f64() / total;
    format!(
        "loop thread per record: process {:.1} µs ({:.0} %), commit {:.1} µs ({:.0} %, {} transactions), poll {:.1} µs ({:.0} %, incl. the group join)",
        us(t.process),
        share(t.process),
        us(t.commit),
        share(t.commit),
        stats.transactions,
        us(t.poll),
        share(t.poll),
    )
}

/// Runs the benchmark and prints the figures.
pub async fn run(cfg: &Config, args: &BenchStagesArgs) -> BenchResult<()> {
    let run_id = format!(
        "bench-stages-{}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S")
    );
    let mut cfg = cfg.clone();
    cfg.pipeline.name = run_id.clone();
    cfg.topics.partitions = args.partitions;
    // The records come from this process: no registry (single-object Avro), like the demo.
    cfg.kafka.schema_registry_url = None;
    for role in TopicRole::ALL {
        cfg.topics
            .set_name(role, format!("{run_id}.{}", role.key().replace('_', "-")));
    }
    let pass_raw = format!("{run_id}.pass-raw");
    let pass_cleaned = format!("{run_id}.pass-cleaned");
    println!(
        "bench-stages {run_id}: {} records, {} partitions, clean batches {} / {:?}, score batches {} / {:?}, load average {}",
        args.records,
        args.partitions,
        cfg.clean_or_default().batch_size,
        cfg.clean_or_default().batch_max_age,
        cfg.score.clone().unwrap_or_default().batch_size,
        cfg.score.clone().unwrap_or_default().batch_max_age,
        crate::tooling::bench_gate::load_average()
    );
    println!("  {}", fetch_settings(&cfg.kafka));
    create_topics(&cfg, &[&pass_raw, &pass_cleaned]).await?;
    let produced = produce_raw(&cfg, args.records, args.partitions).await?;
    println!("  produced {} raw records at {produced:.0}/s", args.records);
    let result = rounds(&cfg, args, &pass_raw, &pass_cleaned).await;
    if !args.keep {
        delete_topics(&cfg, &[&pass_raw, &pass_cleaned]).await;
    }
    result
}

async fn rounds(
    cfg: &Config,
    args: &BenchStagesArgs,
    pass_raw: &str,
    pass_cleaned: &str,
) -> BenchResult<()> {
    let mut table: Vec<(String, Measured, Measured)> = Vec::new();
    for round in 1..=args.rounds {
        // Each round reads the inputs from the start under fresh groups.
        let mut c = cfg.clone();
        c.pipeline.name = format!("{}.r{round}", cfg.pipeline.name);
        let (stage, pass) = clean_round(&c, round, pass_raw).await?;
        table.push((format!("clean (round {round})"), stage, pass));
        let (stage, pass) = score_round(&c, pass_cleaned).await?;
        table.push((format!("score (round {round})"), stage, pass));
    }
    println!("  stage               offsets/s   CPU s   pass-through offsets/s   CPU s   stage / pass-through");
    for (name, stage, pass) in &table {
        println!(
            "  {name:<18} {:>10.0} {:>7.1} {:>24.0} {:>7.1} {:>21.0} %",
            stage.rate,
            stage.cpu,
            pass.rate,
            pass.cpu,
            100.0 * stage.rate / pass.rate
        );
    }
    if args.rounds > 1 {
        for stage in ["clean", "score"] {
            let ratios: Vec<f64> = table
                .iter()
                .filter(|(name, ..)| name.starts_with(stage))
                .map(|(_, s, p)| 100.0 * s.rate / p.rate)
                .collect();
            println!(
                "  {stage} / pass-through over {} rounds: median {:.0} %, range {:.0}–{:.0} %",
                ratios.len(),
                median(&ratios),
                ratios.iter().copied().fold(f64::INFINITY, f64::min),
                ratios.iter().copied().fold(0.0, f64::max)
            );
        }
    }
    println!(
        "load average after: {}",
        crate::tooling::bench_gate::load_average()
    );
    Ok(())
}

/// The consumers' fetch and pre-fetch settings this run uses (the stages' defaults, or
/// `kafka.client_options`): the stages and their pass-throughs share them, and they move the
/// ceiling as much as the stages, so ratios from runs with different settings do not compare.
fn fetch_settings(kafka: &crate::config::KafkaConfig) -> String {
    let c = crate::kafka::consumer_config(kafka, "bench-stages");
    let parts: Vec<String> = crate::kafka::CONSUMER_MEMORY_DEFAULTS
        .iter()
        .map(|(k, _)| format!("{k}={}", c.get(k).unwrap_or("-")))
        .collect();
    format!(
        "consumer fetch settings (stages and pass-throughs): {}",
        parts.join(", ")
    )
}

/// The median of `xs` (the mean of the middle two for an even count); 0 when empty.
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The pass-through of `raw` with clean's batch settings, then clean itself: (clean, pass).
async fn clean_round(c: &Config, round: u32, pass_raw: &str) -> BenchResult<(Measured, Measured)> {
    let clean = c.clean_or_default();
    let raw_end = end_offsets(c, &c.topics.name(TopicRole::Raw))?;
    let (size, age) = (clean.batch_size, clean.batch_max_age);
    let pass = measure_pass(c, "pass-raw", TopicRole::Raw, raw_end, pass_raw, size, age).await?;
    // Round 1's clean writes the cleaned topic the score runs read; later rounds' clean write
    // a topic of their own.
    let mut cc = c.clone();
    if round > 1 {
        let cleaned = c.topics.name(TopicRole::Cleaned);
        cc.topics
            .set_name(TopicRole::Cleaned, format!("{cleaned}.r{round}"));
        create_topics(&cc, &[]).await?;
    }
    let common = cc.common();
    let stage = measure(
        &cc,
        "clean",
        TopicRole::Raw,
        raw_end,
        move |stop| async move {
            crate::stages::clean::run_with_stats(&common, &clean, stop)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await?;
    Ok((stage, pass))
}

/// The pass-through of `cleaned` with score's batch settings, then score: (score, pass).
async fn score_round(c: &Config, pass_cleaned: &str) -> BenchResult<(Measured, Measured)> {
    let score = c.score.clone().unwrap_or_default();
    // Offsets, not records: a transactional topic's offsets include the commit markers (one
    // per partition per transaction).
    let cleaned_end = end_offsets(c, &c.topics.name(TopicRole::Cleaned))?;
    let (size, age) = (score.batch_size, score.batch_max_age);
    let pass = measure_pass(
        c,
        "pass-cleaned",
        TopicRole::Cleaned,
        cleaned_end,
        pass_cleaned,
        size,
        age,
    )
    .await?;
    let (common, quality, clean) = (c.common(), c.quality.clone(), c.clean_or_default());
    let stage = measure(
        c,
        "score",
        TopicRole::Cleaned,
        cleaned_end,
        move |stop| async move {
            crate::stages::score::run_with_stats(&common, &score, &quality, &clean, stop)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await?;
    Ok((stage, pass))
}

/// A pass-through of `input` to `to` as group `name`, with these batch bounds, measured.
async fn measure_pass(
    c: &Config,
    name: &'static str,
    input: TopicRole,
    end: u64,
    to: &str,
    batch_size: usize,
    batch_max_age: Duration,
) -> BenchResult<Measured> {
    let s = pass_settings(c, name, input, batch_size, batch_max_age);
    measure(c, name, input, end, pass_through(c, s, to)).await
}

/// The loop settings of a pass-through standing in for `stage` (its batch bounds).
fn pass_settings(
    cfg: &Config,
    name: &'static str,
    input: TopicRole,
    batch_size: usize,
    batch_max_age: Duration,
) -> Settings {
    let mut s = Settings::for_stage(&cfg.common(), name, input);
    (s.batch_size, s.batch_max_age) = (batch_size, batch_max_age);
    s
}

/// A pass-through run to `to` with `settings`, as `measure` starts it.
fn pass_through(
    cfg: &Config,
    settings: Settings,
    to: &str,
) -> impl FnOnce(
    CancellationToken,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = BenchResult<Stats>> + Send>> {
    let kafka = cfg.kafka.clone();
    let t = PassThrough { to: to.into() };
    move |stop| {
        Box::pin(async move {
            eos::run(kafka, settings, t, stop)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// The sum of `topic`'s partitions' end offsets.
fn end_offsets(cfg: &Config, topic: &str) -> BenchResult<u64> {
    let consumer: rdkafka::consumer::BaseConsumer = crate::kafka::base_config(&cfg.kafka)
        .create()
        .map_err(|e| e.to_string())?;
    let mut sum = 0;
    for p in 0..cfg.topics.partitions {
        let (_, high) = rdkafka::consumer::Consumer::fetch_watermarks(
            &consumer,
            topic,
            p,
            Duration::from_secs(10),
        )
        .map_err(|e| format!("end offsets of {topic}: {e}"))?;
        sum += high.max(0) as u64;
    }
    Ok(sum)
}

/// Starts `start(stop)` and waits until `stage`'s group has committed offset `n` (summed over
/// the partitions) of its input; the rate counts from its first commit.
async fn measure<F, Fut>(
    cfg: &Config,
    stage: &str,
    input: TopicRole,
    n: u64,
    start: F,
) -> BenchResult<Measured>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = BenchResult<Stats>> + Send + 'static,
{
    let topic = cfg.topics.name(input);
    let partitions: Vec<i32> = (0..cfg.topics.partitions).collect();
    let progress =
        GroupProgress::new(cfg, stage, &topic, &partitions).map_err(|e| e.to_string())?;
    let stop = CancellationToken::new();
    let cpu0 = process_cpu_seconds();
    let task = tokio::spawn(start(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut first: Option<(Instant, u64)> = None;
    let done = loop {
        if task.is_finished() {
            return Err(format!(
                "{stage} stopped before it had read every record: {:?}",
                task.await
            ));
        }
        if Instant::now() > deadline {
            stop.cancel();
            return Err(format!("{stage} did not finish within 30 minutes"));
        }
        let committed: u64 = committed_total(&progress);
        if committed > 0 && first.is_none() {
            first = Some((Instant::now(), committed));
        }
        if committed >= n {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu = process_cpu_seconds() - cpu0;
    stop.cancel();
    let stats = task.await.map_err(|e| e.to_string())??;
    let (t0, c0) = first.unwrap_or((done, 0));
    let rate = (n - c0) as f64 / done.duration_since(t0).as_secs_f64().max(1e-3);
    println!("  {stage:<14} {rate:>9.0} records/s  ({:.1} CPU s)", cpu);
    println!("                 {}", loop_line(&stats));
    Ok(Measured { rate, cpu })
}

fn committed_total(progress: &GroupProgress) -> u64 {
    progress
        .committed()
        .map(|m: HashMap<i32, i64>| m.values().map(|&o| o.max(0) as u64).sum())
        .unwrap_or(0)
}

/// This process's user + system CPU seconds.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    (ticks(11) + ticks(12)) / 100.0
}

async fn create_topics(cfg: &Config, extra: &[&str]) -> BenchResult<()> {
    let admin: AdminClient<DefaultClientContext> = crate::kafka::base_config(&cfg.kafka)
        .create()
        .map_err(|e| e.to_string())?;
    let mut names: Vec<String> = TopicRole::ALL.iter().map(|r| cfg.topics.name(*r)).collect();
    names.extend(extra.iter().map(|s| s.to_string()));
    let p = cfg.topics.partitions;
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, p, TopicReplication::Fixed(1)))
        .collect();
    // Topics that exist already (a later round's) are left as they are.
    admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .map_err(|e| format!("creating the bench topics: {e}"))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

async fn delete_topics(cfg: &Config, extra: &[&str]) {
    let prefix = format!("{}.", cfg.pipeline.name);
    let Ok(admin) =
        crate::kafka::base_config(&cfg.kafka).create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let Ok(md) = admin.inner().fetch_metadata(None, Duration::from_secs(10)) else {
        return;
    };
    let names: Vec<String> = md
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| n.starts_with(&prefix) || extra.contains(&n.as_str()))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let _ = admin.delete_topics(&refs, &AdminOptions::new()).await;
}

/// The sample API's first `n` entries to `raw`, keyed and with the headers extract sets.
async fn produce_raw(cfg: &Config, n: u64, partitions: i32) -> BenchResult<f64> {
    let producer: FutureProducer = crate::kafka::producer_config(&cfg.kafka)
        .create()
        .map_err(|e| e.to_string())?;
    let topic = cfg.topics.name(TopicRole::Raw);
    let data = Dataset::new(n, 1000, 42);
    let fetched_at = chrono::Utc::now().to_rfc3339();
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + 20_000).min(n);
        let mut futs = Vec::with_capacity((end - i) as usize);
        for j in i..end {
            let json = data.entry_json(j);
            let key = serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .and_then(|v| {
                    v.get("summonerId")
                        .and_then(|k| k.as_str())
                        .map(String::from)
                })
                .unwrap_or_else(|| format!("k{j}"));
            let tp = new_traceparent();
            let hs = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: headers::TRACEPARENT,
                    value: Some(&tp),
                })
                .insert(Header {
                    key: headers::SOURCE,
                    value: Some("bench-stages"),
                })
                .insert(Header {
                    key: headers::FETCHED_AT,
                    value: Some(&fetched_at),
                });
            let mut rec = FutureRecord::to(&topic)
                .partition((j % partitions as u64) as i32)
                .key(&key)
                .payload(&json)
                .headers(hs);
            // Enqueue now; wait for room when librdkafka's queue is full.
            loop {
                match producer.send_result(rec) {
                    Ok(f) => break futs.push(f),
                    Err((e, back))
                        if e.rdkafka_error_code()
                            == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                    {
                        rec = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(format!("producing raw: {e}")),
                }
            }
        }
        for f in futs {
            f.await
                .map_err(|e| format!("producing raw: {e}"))?
                .map_err(|(e, _)| format!("producing raw: {e}"))?;
        }
        i = end;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(super::median(&[51.0, 45.0, 61.0]), 51.0);
        assert_eq!(super::median(&[40.0, 60.0, 50.0, 30.0]), 45.0);
        assert_eq!(super::median(&[]), 0.0);
    }

    #[test]
    fn the_fetch_settings_line_shows_defaults_and_overrides() {
        use crate::config::KafkaConfig;
        use crate::settings::ClientOption;
        let mut kafka = KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            ..Default::default()
        };
        let line = super::fetch_settings(&kafka);
        assert!(line.contains("max.partition.fetch.bytes=262144"), "{line}");
        assert!(line.contains("queued.max.messages.kbytes=4096"), "{line}");
        kafka.client_options.insert(
            "max.partition.fetch.bytes".into(),
            ClientOption::Value("1048576".into()),
        );
        let line = super::fetch_settings(&kafka);
        assert!(line.contains("max.partition.fetch.bytes=1048576"), "{line}");
    }
}
