//! Where every record of a run ended up: exact counts per topic (read_committed), dead
//! letters by stage and reason, quality windows, MySQL rows, Mongo documents. (What the stages'
//! `/metrics` say — latency, phases — is read by [`super::prom`].)
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
