//! Where every record of a run ended up: exact counts per topic (read_committed), dead
//! letters by stage and reason, quality windows, MySQL rows, Mongo documents, latency.
use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::LocalError;
use crate::config::{Config, TopicRole};
use crate::kafka::headers as h;

/// Reads a topic from its start to its current end (committed data only), calling `f` per record.
pub fn scan(
    cfg: &Config,
    topic: &str,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, LocalError> {
    let cc = crate::kafka::consumer_config(&cfg.kafka, &format!("{}.tally", cfg.pipeline.name));
    let consumer: BaseConsumer = cc.create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let Some(t) = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
    else {
        return Ok(0);
    };
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::BTreeMap::new();
    for p in t.partitions() {
        let (lo, hi) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        if hi > lo {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(lo))?;
            ends.insert(p.id(), hi);
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
}

pub fn failed(cfg: &Config, role: TopicRole) -> Result<Failed, LocalError> {
    let mut out = Failed::default();
    scan(cfg, &cfg.topics.name(role), |m| {
        let get = |k: &str| {
            m.headers()
                .and_then(|hs| h::get_str(hs, k))
                .unwrap_or("unknown")
                .to_string()
        };
        *out.by_reason
            .entry((get(h::ERROR_STAGE), get(h::ERROR_KIND)))
            .or_default() += 1;
        out.keys
            .push(m.key().map(|k| String::from_utf8_lossy(k).into_owned()));
    })?;
    Ok(out)
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

/// API fetch → MySQL commit latencies in milliseconds (`_loaded_at − fetched_at`), sorted.
pub async fn latencies_ms(pool: &sqlx::MySqlPool, table: &str) -> Result<Vec<f64>, LocalError> {
    let rows: Vec<(Option<i64>,)> = sqlx::query_as(&format!(
        "SELECT CAST(TIMESTAMPDIFF(MICROSECOND, fetched_at, `_loaded_at`) AS SIGNED) FROM `{table}`"
    ))
    .fetch_all(pool)
    .await
    .map_err(|e| LocalError::Mysql(e.to_string()))?;
    let mut v: Vec<f64> = rows
        .into_iter()
        .filter_map(|(x,)| x)
        .map(|us| us as f64 / 1000.0)
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v)
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

/// The value at quantile `q` of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i).copied()
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

pub async fn mongo_docs(
    coll: &mongodb::Collection<mongodb::bson::Document>,
) -> Result<u64, LocalError> {
    coll.count_documents(mongodb::bson::doc! {})
        .await
        .map_err(|e| LocalError::Mongo(e.to_string()))
}
