//! `etl-pipe redrive`: send dead letters or quarantined records back to the topic they came
//! from (their `etl.source.topic` header), filtered by error kind, stage and time, with a
//! progress bar. The original key, bytes and headers travel unchanged, plus `etl.attempts`: a
//! record that fails again comes back with its attempts + 1, and once it reaches
//! `--max-attempts` redrive leaves it where it is, so nothing loops forever.
//!
//! Redrive reads a snapshot (each partition up to its end when the command starts) and commits
//! nothing: running it twice sends twice. That is safe downstream (sinks upsert by key), and
//! `--since` narrows a second run.
use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{Config, TopicRole};
use crate::kafka::headers::{self as h};

const TIMEOUT: Duration = Duration::from_secs(15);
const MAX_IN_FLIGHT: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Metadata(#[from] crate::kafka::MetadataError),
    #[error("delivery to {topic} failed: {message}")]
    Delivery { topic: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum From {
    DeadLetter,
    Quarantine,
}

impl From {
    pub fn role(&self) -> TopicRole {
        match self {
            From::DeadLetter => TopicRole::DeadLetter,
            From::Quarantine => TopicRole::Quarantine,
        }
    }
}

/// What to redrive.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only these `etl.error.kind`s (empty = all).
    pub kinds: Vec<String>,
    /// Only records that failed in this stage (`etl.error.stage`).
    pub stage: Option<String>,
    /// Only records written to the dead-letter topic at or after (ms since epoch).
    pub since_ms: Option<i64>,
    /// ... and before (ms since epoch).
    pub until_ms: Option<i64>,
    /// Records with this many attempts or more stay where they are.
    pub max_attempts: u32,
    /// Send to this topic instead of the source topic (e.g. accept a quarantined window into scored).
    pub to_topic: Option<String>,
}

/// What a run did (or would do), by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub scanned: u64,
    /// Sent (or, in a dry run, to be sent) per destination topic.
    pub sent: BTreeMap<String, u64>,
    /// Sent per error kind.
    pub by_kind: BTreeMap<String, u64>,
    pub filtered_out: u64,
    /// Left in place: attempts >= max.
    pub exhausted: u64,
    /// Left in place: no source topic (e.g. a bad record of an API page never was in Kafka).
    pub no_source: u64,
}

impl Summary {
    pub fn total_sent(&self) -> u64 {
        self.sent.values().sum()
    }
}

/// Runs a redrive. `progress` shows a bar on a terminal.
pub async fn run(
    cfg: &Config,
    from: From,
    filter: &Filter,
    dry_run: bool,
    progress: bool,
) -> Result<Summary, RedriveError> {
    let topic = cfg.topics.name(from.role());
    let group = format!("{}.redrive", cfg.pipeline.name);
    let mut cc = crate::kafka::consumer_config(&cfg.kafka, &group);
    // Committed data only; no group offsets are used or committed. The consumer position tells
    // when a partition is read to its end (the last offsets may be transaction markers).
    cc.set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cc.create()?;
    let (mut ends, total) = snapshot(&consumer, &topic, filter.since_ms)?;
    let mut summary = Summary::default();
    if ends.is_empty() {
        return Ok(summary);
    }
    let bar = progress_bar(progress, total);
    let producer: FutureProducer = crate::kafka::producer_config(&cfg.kafka).create()?;
    let mut in_flight = FuturesUnordered::new();
    while !ends.is_empty() {
        let msg = match consumer.poll(Duration::from_millis(500)) {
            None => {
                drop_finished(&consumer, &topic, &mut ends);
                continue;
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => m,
        };
        if !within_snapshot(&mut ends, msg.partition(), msg.offset()) {
            continue;
        }
        summary.scanned += 1;
        bar.inc(1);
        let Some((dest, attempts)) = judge(&msg, filter, &mut summary) else {
            continue;
        };
        if dry_run {
            continue;
        }
        if let Some(hs) = msg.headers() {
            let mut o = crate::observability::outcome::RecordOutcome::from_dead_letter(
                "redriven",
                "redrive",
                msg.key(),
                hs,
            );
            o.reason = format!("to {dest} (attempt {attempts})");
            o.source = Some((topic.clone(), msg.partition(), msg.offset()));
            crate::observability::outcome::record(&o);
        }
        let mut record = FutureRecord::to(&dest).headers(redriven_headers(msg.headers(), attempts));
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(p) = msg.payload() {
            record = record.payload(p);
        }
        let delivery = send(&producer, record, &mut in_flight).await?;
        in_flight.push(async move { (dest, delivery.await) });
        while in_flight.len() >= MAX_IN_FLIGHT {
            drain_one(&mut in_flight).await?;
        }
    }
    while !in_flight.is_empty() {
        drain_one(&mut in_flight).await?;
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// Assigns each partition from its start (or the first record at `since`) and returns the
/// end of each (its high watermark now: the snapshot) and the records to scan.
fn snapshot(
    consumer: &BaseConsumer,
    topic: &str,
    since_ms: Option<i64>,
) -> Result<(BTreeMap<i32, i64>, u64), RedriveError> {
    let partitions = crate::kafka::partitions(consumer.client(), topic, TIMEOUT)?;
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    let mut total: u64 = 0;
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
        let mut start = low;
        if let Some(since) = since_ms {
            let mut q = TopicPartitionList::new();
            q.add_partition_offset(topic, p, Offset::Offset(since))?;
            let r = consumer.offsets_for_times(q, TIMEOUT)?;
            start = match r.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => high,
            };
        }
        if start < high {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            total += (high - start) as u64;
        }
    }
    if !ends.is_empty() {
        consumer.assign(&tpl)?;
    }
    Ok((ends, total))
}

fn progress_bar(show: bool, total: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(total);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} redrive [{bar:40}] {pos}/{len} records  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    b
}

/// Partitions whose position reached their snapshot end are done (the last offsets may be
/// transaction markers, which are never delivered).
fn drop_finished(consumer: &BaseConsumer, topic: &str, ends: &mut BTreeMap<i32, i64>) {
    if let Ok(pos) = consumer.position() {
        for e in pos.elements_for_topic(topic) {
            if let Offset::Offset(o) = e.offset() {
                if ends.get(&e.partition()).is_some_and(|end| o >= *end) {
                    ends.remove(&e.partition());
                }
            }
        }
    }
}

/// Whether a record is inside the snapshot; the partition is done after its last one.
fn within_snapshot(ends: &mut BTreeMap<i32, i64>, partition: i32, offset: i64) -> bool {
    let Some(end) = ends.get(&partition).copied() else {
        return false;
    };
    if offset + 1 >= end {
        ends.remove(&partition);
    }
    offset < end
}

/// Applies the filter and the attempt limit, counting the outcome in `summary`; returns the
/// destination topic and the attempts so far when the record is to be sent.
fn judge(
    msg: &rdkafka::message::BorrowedMessage<'_>,
    filter: &Filter,
    summary: &mut Summary,
) -> Option<(String, u32)> {
    let get = |name: &str| {
        msg.headers()
            .and_then(|hs| h::get_str(hs, name))
            .map(str::to_string)
    };
    let kind = get(h::ERROR_KIND).unwrap_or_else(|| "unknown".into());
    let stage = get(h::ERROR_STAGE);
    let attempts: u32 = get(h::ATTEMPTS).and_then(|a| a.parse().ok()).unwrap_or(1);
    let ts = msg.timestamp().to_millis();
    let keep = (filter.kinds.is_empty() || filter.kinds.contains(&kind))
        && filter
            .stage
            .as_ref()
            .is_none_or(|s| stage.as_ref() == Some(s))
        && filter.since_ms.is_none_or(|s| ts.is_none_or(|t| t >= s))
        && filter.until_ms.is_none_or(|u| ts.is_none_or(|t| t < u));
    if !keep {
        summary.filtered_out += 1;
        return None;
    }
    if attempts >= filter.max_attempts {
        summary.exhausted += 1;
        return None;
    }
    let Some(dest) = filter.to_topic.clone().or_else(|| get(h::SOURCE_TOPIC)) else {
        summary.no_source += 1;
        return None;
    };
    *summary.sent.entry(dest.clone()).or_default() += 1;
    *summary.by_kind.entry(kind).or_default() += 1;
    Some((dest, attempts))
}

/// The original headers minus the error envelope, plus the attempt count so far.
fn redriven_headers(
    headers: Option<&rdkafka::message::BorrowedHeaders>,
    attempts: u32,
) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(hs) = headers {
        for hd in hs.iter() {
            if hd.key.starts_with("etl.error.")
                || hd.key.starts_with("etl.source.")
                || hd.key == h::ATTEMPTS
            {
                continue;
            }
            out = out.insert(Header {
                key: hd.key,
                value: hd.value,
            });
        }
    }
    let attempts_s = attempts.to_string();
    out.insert(Header {
        key: h::ATTEMPTS,
        value: Some(&attempts_s),
    })
}

/// Enqueues `record`; while the local queue is full, lets deliveries complete first.
async fn send<'a, F>(
    producer: &FutureProducer,
    mut record: FutureRecord<'a, [u8], [u8]>,
    in_flight: &mut FuturesUnordered<F>,
) -> Result<rdkafka::producer::DeliveryFuture, RedriveError>
where
    F: std::future::Future<Output = Delivery>,
{
    loop {
        match producer.send_result(record) {
            Ok(d) => return Ok(d),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                if in_flight.is_empty() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                } else {
                    drain_one(in_flight).await?;
                }
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

type Delivery = (
    String,
    Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
);

async fn drain_one<F>(in_flight: &mut FuturesUnordered<F>) -> Result<(), RedriveError>
where
    F: std::future::Future<Output = Delivery>,
{
    if let Some((topic, res)) = in_flight.next().await {
        match res {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                return Err(RedriveError::Delivery {
                    topic,
                    message: e.to_string(),
                })
            }
            Err(_) => {
                return Err(RedriveError::Delivery {
                    topic,
                    message: "producer dropped the delivery report".into(),
                })
            }
        }
    }
    Ok(())
}

/// The summary as lines a person reads.
pub fn render(s: &Summary, dry_run: bool) -> String {
    let verb = if dry_run { "would send" } else { "sent" };
    let mut out = format!(
        "scanned {} record(s); {verb} {}\n",
        s.scanned,
        s.total_sent()
    );
    for (t, n) in &s.sent {
        out.push_str(&format!("  → {t}: {n}\n"));
    }
    for (k, n) in &s.by_kind {
        out.push_str(&format!("  kind {k}: {n}\n"));
    }
    out.push_str(&format!(
        "left in place: {} filtered out, {} at max attempts, {} without a source topic\n",
        s.filtered_out, s.exhausted, s.no_source
    ));
    out
}
