//! Where every record of a run ended up: exact counts per topic (read_committed), dead
//! letters by stage and reason, quality windows, MySQL rows, Mongo documents, latency.
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::LocalError;
use crate::config::{Config, TopicRole};
use crate::kafka::headers as h;
use crate::kafka::MetadataError;

/// The tally's reader: a read_committed consumer with librdkafka's own (large) pre-fetch
/// limits. The stages' memory caps would make it fetch a few thousand records per round trip
/// and, between the watcher's polls, stop fetching altogether.
fn reader_config(cfg: &Config) -> rdkafka::ClientConfig {
    let mut cc = crate::kafka::consumer_config(&cfg.kafka, &format!("{}.tally", cfg.pipeline.name));
    cc.set("queued.min.messages", "100000")
        .set("queued.max.messages.kbytes", "65536")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760");
    cc
}

/// The partition ids of `topic` ([`crate::kafka::partitions`]), `None` when it does not exist.
fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<Option<Vec<i32>>, LocalError> {
    match crate::kafka::partitions(consumer.client(), topic, Duration::from_secs(10)) {
        Ok(ids) => Ok(Some(ids)),
        Err(MetadataError::NoTopic(_)) => Ok(None),
        Err(MetadataError::Kafka { source, .. }) => Err(source.into()),
    }
}

/// Consumer errors librdkafka reports and recovers from itself (a broker down, a leader
/// moving): the reader keeps polling.
fn transient(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::NotLeaderForPartition
                | C::LeaderNotAvailable
                | C::RequestTimedOut
                | C::OperationTimedOut
                | C::NetworkException
                | C::NotCoordinator
                | C::CoordinatorNotAvailable
        )
    )
}

/// Reads a topic from its start to its current end (committed data only), calling `f` per record.
pub fn scan(
    cfg: &Config,
    topic: &str,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, LocalError> {
    let cc = reader_config(cfg);
    let consumer: BaseConsumer = cc.create()?;
    let Some(ids) = partitions(&consumer, topic)? else {
        return Ok(0);
    };
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::BTreeMap::new();
    for p in ids {
        let (lo, hi) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if hi > lo {
            tpl.add_partition_offset(topic, p, Offset::Offset(lo))?;
            ends.insert(p, hi);
        }
    }
    if ends.is_empty() {
        return Ok(0);
    }
    consumer.assign(&tpl)?;
    let mut n = 0;
    let mut idle = 0;
    while !ends.is_empty() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                idle = 0;
                n += 1;
                f(&m);
                if let Some(end) = ends.get(&m.partition()) {
                    if m.offset() + 1 >= *end {
                        ends.remove(&m.partition());
                    }
                }
            }
            // A broker going away mid-read (a failure test): librdkafka reconnects by itself.
            Some(Err(e)) if transient(&e) => idle += 1,
            Some(Err(e)) => return Err(e.into()),
            None => {
                // The last offsets may be transaction markers, never delivered: the position
                // tells when a partition is read to its end.
                if let Ok(pos) = consumer.position() {
                    for e in pos.elements_for_topic(topic) {
                        if let Offset::Offset(o) = e.offset() {
                            if ends.get(&e.partition()).is_some_and(|end| o >= *end) {
                                ends.remove(&e.partition());
                            }
                        }
                    }
                }
                // An open transaction holds read_committed readers back: don't wait for it forever.
                idle += 1;
                if idle > 100 {
                    break;
                }
            }
        }
    }
    Ok(n)
}

/// Counts and the first/last message timestamps of a topic.
#[derive(Debug, Clone, Copy, Default)]
pub struct TopicCount {
    pub records: u64,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

impl TopicCount {
    /// Records per second between the first and the last record.
    pub fn rate(&self) -> Option<f64> {
        let (a, b) = (self.first_ms?, self.last_ms?);
        (b > a).then(|| self.records as f64 / ((b - a) as f64 / 1000.0))
    }
}

pub fn count_topic(cfg: &Config, role: TopicRole) -> Result<TopicCount, LocalError> {
    let mut c = TopicCount::default();
    c.records = scan(cfg, &cfg.topics.name(role), |m| {
        if let Some(t) = m.timestamp().to_millis() {
            c.first_ms = Some(c.first_ms.map_or(t, |f| f.min(t)));
            c.last_ms = Some(c.last_ms.map_or(t, |l| l.max(t)));
        }
    })?;
    Ok(c)
}

/// Dead letters (or quarantined records) by (stage, kind), and their keys.
#[derive(Debug, Clone, Default)]
pub struct Failed {
    pub by_reason: BTreeMap<(String, String), u64>,
    pub keys: Vec<Option<String>>,
}

impl Failed {
    pub fn total(&self) -> u64 {
        self.by_reason.values().sum()
    }
    pub fn count_stage(&self, stage: &str) -> u64 {
        self.by_reason
            .iter()
            .filter(|((s, _), _)| s == stage)
            .map(|(_, n)| n)
            .sum()
    }
    /// One stage's counts by kind (e.g. extract's dead letters by reason).
    pub fn kinds_of(&self, stage: &str) -> BTreeMap<String, u64> {
        self.by_reason
            .iter()
            .filter(|((s, _), _)| s == stage)
            .map(|((_, k), n)| (k.clone(), *n))
            .collect()
    }
}

pub fn failed(cfg: &Config, role: TopicRole) -> Result<Failed, LocalError> {
    let mut out = Failed::default();
    scan(cfg, &cfg.topics.name(role), |m| out.add(m))?;
    Ok(out)
}

impl Failed {
    /// Counts one dead letter (or quarantined record) by its error headers.
    pub fn add(&mut self, m: &BorrowedMessage<'_>) {
        let get = |k: &str| {
            m.headers()
                .and_then(|hs| h::get_str(hs, k))
                .unwrap_or("unknown")
                .to_string()
        };
        *self
            .by_reason
            .entry((get(h::ERROR_STAGE), get(h::ERROR_KIND)))
            .or_default() += 1;
        self.keys
            .push(m.key().map(|k| String::from_utf8_lossy(k).into_owned()));
    }
}

/// Follows a topic from its start while a run goes on: every [`Follower::drain`] reads only
/// what was committed since the previous one, so watching a 1 M-record run costs one read
/// of each record instead of a full scan per poll.
pub struct Follower {
    consumer: BaseConsumer,
    /// Per partition: the offset after the last record read.
    pub ends: BTreeMap<i32, i64>,
    /// Records read so far.
    pub records: u64,
    /// The topic's partitions.
    pub partitions: Vec<i32>,
}

impl Follower {
    pub fn new(cfg: &Config, role: TopicRole) -> Result<Self, LocalError> {
        let topic = cfg.topics.name(role);
        let cc = reader_config(cfg);
        let consumer: BaseConsumer = cc.create()?;
        let Some(partitions) = partitions(&consumer, &topic)? else {
            return Err(LocalError::Other(format!(
                "topic {topic} has no partitions"
            )));
        };
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(&topic, *p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        Ok(Follower {
            consumer,
            ends: BTreeMap::new(),
            records: 0,
            partitions,
        })
    }

    /// Reads every record fetched so far (never waits for more), calling `f` per record.
    pub fn drain(&mut self, mut f: impl FnMut(&BorrowedMessage<'_>)) -> Result<u64, LocalError> {
        let mut n = 0;
        let mut empty = 0;
        // A few short waits so that a fetch in flight is not mistaken for the end.
        while empty < 3 {
            match self.consumer.poll(Duration::from_millis(5)) {
                Some(Ok(m)) => {
                    empty = 0;
                    n += 1;
                    self.ends.insert(m.partition(), m.offset() + 1);
                    f(&m);
                }
                // A broker stopped by a failure test: librdkafka reconnects by itself.
                Some(Err(e)) if transient(&e) => empty += 1,
                Some(Err(e)) => return Err(e.into()),
                None => empty += 1,
            }
        }
        self.records += n;
        Ok(n)
    }

    /// True when `stored` (a sink's next offset per partition) has reached every record read.
    pub fn reached_by(&self, stored: &HashMap<i32, i64>) -> bool {
        self.ends
            .iter()
            .all(|(p, end)| stored.get(p).is_some_and(|s| s >= end))
    }
}

/// The sink-mysql instance's stored next offsets on `topic` (its offsets table; empty before
/// the sink created it).
pub async fn mysql_progress(
    cfg: &Config,
    pool: &sqlx::MySqlPool,
    topic: &str,
) -> Result<HashMap<i32, i64>, LocalError> {
    let t = &cfg.sink.mysql.offsets_table;
    let r = crate::stages::sinks::mysql::stored_offsets(
        pool,
        t,
        &cfg.pipeline.group_id("sink-mysql"),
        topic,
    )
    .await;
    match r {
        Ok(m) => Ok(m),
        // Before the sink created it.
        Err(e) if no_such_table(&e.to_string()) => Ok(HashMap::new()),
        Err(e) => Err(LocalError::Mysql(e.to_string())),
    }
}

/// Whether a MySQL error message says the table does not exist (error 1146).
pub fn no_such_table(message: &str) -> bool {
    message.contains("1146") || message.contains("doesn't exist")
}

/// The sink-mongo consumer group's committed offsets on `topic` (it commits after each write).
pub struct GroupProgress {
    consumer: BaseConsumer,
    tpl: TopicPartitionList,
}

impl GroupProgress {
    pub fn new(
        cfg: &Config,
        stage: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Self, LocalError> {
        let cc = crate::kafka::consumer_config(&cfg.kafka, &cfg.pipeline.group_id(stage));
        let consumer: BaseConsumer = cc.create()?;
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(topic, *p);
        }
        Ok(GroupProgress { consumer, tpl })
    }

    pub fn committed(&self) -> Result<HashMap<i32, i64>, LocalError> {
        let c = self
            .consumer
            .committed_offsets(self.tpl.clone(), Duration::from_secs(10))?;
        Ok(c.elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }
}

/// One quality report.
#[derive(Debug, Clone)]
pub struct Window {
    pub id: String,
    pub decision: String,
    pub rows: u64,
    pub reasons: Vec<String>,
}

pub fn windows(cfg: &Config) -> Result<Vec<Window>, LocalError> {
    let mut out = Vec::new();
    scan(cfg, &cfg.topics.name(TopicRole::Quality), |m| {
        let Some(v) = m
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
        else {
            return;
        };
        let Some(decision) = v.get("decision").and_then(|d| d.as_str()) else {
            return; // not a window report (e.g. a stored baseline)
        };
        let id = v
            .get("window")
            .and_then(|w| {
                w.as_str()
                    .map(str::to_string)
                    .or_else(|| w.get("id").and_then(|i| i.as_str()).map(str::to_string))
            })
            .or_else(|| m.key().map(|k| String::from_utf8_lossy(k).into_owned()))
            .unwrap_or_default();
        let rows = v
            .get("rows")
            .and_then(|r| r.as_u64())
            .or_else(|| {
                v.get("report")
                    .and_then(|r| r.get("rows"))
                    .and_then(|r| r.as_u64())
            })
            .unwrap_or(0);
        let reasons = v
            .get("reasons")
            .or_else(|| v.get("report").and_then(|r| r.get("reasons")))
            .and_then(|r| r.as_array())
            .map(|a| {
                a.iter()
                    .map(|x| {
                        x.get("message")
                            .and_then(|m| m.as_str())
                            .map(str::to_string)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Window {
            id,
            decision: decision.to_string(),
            rows,
            reasons,
        });
    })?;
    Ok(out)
}

/// The run's MySQL table name.
pub fn mysql_table(cfg: &Config) -> Result<String, LocalError> {
    match &cfg.sink.mysql.table {
        Some(t) => Ok(t.clone()),
        None => {
            let schema = crate::codec::load_schema(&cfg.sink.schema)
                .map_err(|e| LocalError::Other(e.to_string()))?;
            Ok(crate::stages::sinks::default_target_name(&schema))
        }
    }
}

pub async fn mysql_pool(cfg: &Config) -> Result<sqlx::MySqlPool, LocalError> {
    crate::stages::sinks::mysql::connect(&cfg.mysql, 1)
        .await
        .map_err(|e| LocalError::Mysql(e.to_string()))
}

/// Rows in the run's table (0 before the sink created it).
pub async fn mysql_rows(pool: &sqlx::MySqlPool, table: &str) -> Result<u64, LocalError> {
    let exists: Option<(String,)> = sqlx::query_as(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?",
    )
    .bind(table)
    .fetch_optional(pool)
    .await
    .map_err(|e| LocalError::Mysql(e.to_string()))?;
    if exists.is_none() {
        return Ok(0);
    }
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM `{table}`"))
        .fetch_one(pool)
        .await
        .map_err(|e| LocalError::Mysql(e.to_string()))?;
    Ok(n as u64)
}

/// First and last `_loaded_at` (ms since epoch) in the table.
pub async fn load_span_ms(
    pool: &sqlx::MySqlPool,
    table: &str,
) -> Result<Option<(i64, i64)>, LocalError> {
    let row: (Option<i64>, Option<i64>) = sqlx::query_as(&format!(
        "SELECT CAST(FLOOR(UNIX_TIMESTAMP(MIN(`_loaded_at`)) * 1000) AS SIGNED), \
         CAST(FLOOR(UNIX_TIMESTAMP(MAX(`_loaded_at`)) * 1000) AS SIGNED) FROM `{table}`"
    ))
    .fetch_one(pool)
    .await
    .map_err(|e| LocalError::Mysql(e.to_string()))?;
    Ok(match row {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    })
}

/// The value of label `name` in a Prometheus series' `{…}` text.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let (_, rest) = labels.split_once(&format!("{name}=\""))?;
    rest.split('"').next()
}

/// Per `phase` label of the histogram `name` in `/metrics` text: (observations, seconds),
/// summed over the other labels (`<name>_count` and `<name>_sum`).
pub fn phase_totals(text: &str, name: &str) -> BTreeMap<String, (u64, f64)> {
    let mut out: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (sum, rest) = match (rest.strip_prefix("_sum{"), rest.strip_prefix("_count{")) {
            (Some(r), _) => (true, r),
            (_, Some(r)) => (false, r),
            _ => continue,
        };
        let Some((labels, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        let Some(phase) = label(labels, "phase") else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let e = out.entry(phase.to_string()).or_default();
        if sum {
            e.1 += v;
        } else {
            e.0 += v as u64;
        }
    }
    out
}

/// Per value of label `by`, the counter `name` in `/metrics` text summed over its other labels
/// (and over the texts of several processes pasted together).
pub fn counter_by(text: &str, name: &str, by: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{name}{{");
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        let (Some(key), Ok(v)) = (label(labels, by), value.trim().parse::<f64>()) else {
            continue;
        };
        *out.entry(key.to_string()).or_default() += v;
    }
    out
}

/// A Prometheus histogram read from `/metrics` text: cumulative counts per upper bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// (upper bound `le`, cumulative count), ascending; the last bound is `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// Sums the `<name>_bucket` series of `text` over their other labels.
    pub fn parse(text: &str, name: &str) -> Histogram {
        let prefix = format!("{name}_bucket{{");
        let mut by: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with(&prefix)) {
            let Some((labels, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Some(le) = label(labels, "le") else {
                continue;
            };
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                match le.parse() {
                    Ok(v) => v,
                    Err(_) => continue,
                }
            };
            let Ok(n) = value.trim().parse::<f64>() else {
                continue;
            };
            let e = by.entry(le.to_bits()).or_insert((le, 0));
            e.1 += n as u64;
        }
        let mut buckets: Vec<(f64, u64)> = by.into_values().collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Histogram { buckets }
    }

    pub fn count(&self) -> u64 {
        self.buckets.last().map_or(0, |b| b.1)
    }

    /// The value at quantile `q`, interpolated linearly inside its bucket (as Prometheus'
    /// `histogram_quantile` does); `None` without samples. Above the last finite bound the
    /// answer is that bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut prev = (0.0, 0u64);
        for &(le, n) in &self.buckets {
            if n as f64 >= rank {
                if le.is_infinite() {
                    return Some(prev.0);
                }
                let inside = (n - prev.1) as f64;
                let frac = if inside > 0.0 {
                    (rank - prev.1 as f64) / inside
                } else {
                    1.0
                };
                return Some(prev.0 + (le - prev.0) * frac);
            }
            prev = (le, n);
        }
        Some(prev.0)
    }
}

pub async fn mongo_collection(
    cfg: &Config,
) -> Result<mongodb::Collection<mongodb::bson::Document>, LocalError> {
    let mut opts = mongodb::options::ClientOptions::parse(&cfg.mongo.uri)
        .await
        .map_err(|e| LocalError::Mongo(e.to_string()))?;
    if let (Some(user), Some(pw)) = (&cfg.mongo.user, &cfg.mongo.password) {
        let secret = pw.resolve("mongo.password")?;
        opts.credential = Some(
            mongodb::options::Credential::builder()
                .username(user.clone())
                .password(secret.expose().to_string())
                .build(),
        );
    }
    let client =
        mongodb::Client::with_options(opts).map_err(|e| LocalError::Mongo(e.to_string()))?;
    let coll = match &cfg.sink.mongo.collection {
        Some(c) => c.clone(),
        None => {
            let schema = crate::codec::load_schema(&cfg.sink.schema)
                .map_err(|e| LocalError::Other(e.to_string()))?;
            crate::stages::sinks::default_target_name(&schema)
        }
    };
    Ok(client.database(&cfg.mongo.database).collection(&coll))
}

/// Documents in the collection: the `count` of `collStats`, else `count_documents` (far slower
/// and heavier in FerretDB at 1 M documents; figures in docs/notes/bench-e2e.md).
pub async fn mongo_docs(
    coll: &mongodb::Collection<mongodb::bson::Document>,
) -> Result<u64, LocalError> {
    use mongodb::bson::Bson;
    let stats = coll
        .client()
        .database(coll.namespace().db.as_str())
        .run_command(mongodb::bson::doc! {"collStats": coll.name()})
        .await;
    if let Ok(d) = stats {
        match d.get("count") {
            Some(Bson::Int32(n)) => return Ok(*n as u64),
            Some(Bson::Int64(n)) => return Ok(*n as u64),
            Some(Bson::Double(n)) => return Ok(*n as u64),
            _ => {}
        }
    }
    coll.count_documents(mongodb::bson::doc! {})
        .await
        .map_err(|e| LocalError::Mongo(e.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn phase_totals_sum_count_and_seconds_per_phase() {
        let text =
            "etl_sink_phase_seconds_bucket{stage=\"sink-mysql\",phase=\"insert\",le=\"0.1\"} 3\n\
                    etl_sink_phase_seconds_sum{stage=\"sink-mysql\",phase=\"insert\"} 0.25\n\
                    etl_sink_phase_seconds_count{stage=\"sink-mysql\",phase=\"insert\"} 4\n\
                    etl_sink_phase_seconds_sum{stage=\"sink-mysql\",phase=\"commit\"} 1.5\n\
                    etl_sink_phase_seconds_count{stage=\"sink-mysql\",phase=\"commit\"} 4\n\
                    etl_sink_phase_seconds_sum{stage=\"sink-mysql\",phase=\"insert\"} 0.5\n\
                    etl_sink_phase_seconds_count{stage=\"sink-mysql\",phase=\"insert\"} 2\n\
                    etl_other_seconds_sum{phase=\"insert\"} 9\n";
        let t = super::phase_totals(text, "etl_sink_phase_seconds");
        assert_eq!(t.len(), 2);
        assert_eq!(t["insert"], (6, 0.75));
        assert_eq!(t["commit"], (4, 1.5));
    }

    use super::*;

    #[test]
    fn counter_by_sums_a_counter_per_label_value_over_processes() {
        let text = "\
# TYPE etl_loop_phase_microseconds_total counter
etl_loop_phase_microseconds_total{stage=\"clean\",phase=\"poll\"} 1500000
etl_loop_phase_microseconds_total{stage=\"clean\",phase=\"process\"} 250
etl_loop_phase_microseconds_total_other{phase=\"poll\"} 7
etl_loop_phase_microseconds_total{stage=\"clean\",phase=\"poll\"} 500000
etl_loop_phase_microseconds_total{stage=\"clean\"} 9
";
        let t = counter_by(text, "etl_loop_phase_microseconds_total", "phase");
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t["poll"], 2_000_000.0);
        assert_eq!(t["process"], 250.0);
    }

    #[test]
    fn histogram_sums_label_sets_and_interpolates() {
        let text = "\
# TYPE etl_sink_fetch_to_commit_seconds histogram
etl_sink_fetch_to_commit_seconds_bucket{stage=\"sink-mysql\",le=\"0.5\"} 50
etl_sink_fetch_to_commit_seconds_bucket{stage=\"sink-mysql\",le=\"1\"} 90
etl_sink_fetch_to_commit_seconds_bucket{stage=\"sink-mysql\",le=\"+Inf\"} 100
etl_sink_fetch_to_commit_seconds_bucket{stage=\"other\",le=\"0.5\"} 50
etl_sink_fetch_to_commit_seconds_bucket{stage=\"other\",le=\"1\"} 90
etl_sink_fetch_to_commit_seconds_bucket{stage=\"other\",le=\"+Inf\"} 100
etl_sink_fetch_to_commit_seconds_sum 70
";
        let h = Histogram::parse(text, FETCH);
        assert_eq!(
            h.buckets,
            vec![(0.5, 100), (1.0, 180), (f64::INFINITY, 200)]
        );
        assert_eq!(h.count(), 200);
        // Rank 50 of 200 lies halfway into the first bucket [0, 0.5].
        assert_eq!(h.quantile(0.25), Some(0.25));
        // Rank 140: 40 of the 80 samples in (0.5, 1].
        assert_eq!(h.quantile(0.7), Some(0.75));
        // Beyond the last finite bound: that bound.
        assert_eq!(h.quantile(0.99), Some(1.0));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    const FETCH: &str = crate::observability::names::FETCH_TO_COMMIT_SECONDS;
}
