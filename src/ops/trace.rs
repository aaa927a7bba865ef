//! `etl-pipe trace <key | trace id>`: one record's journey — where it was fetched, every topic
//! it passed (partition, offset, time), the quality window and decision, its MySQL row and
//! Mongo document (or why they are absent), and the log events that carry its trace id.
//!
//! What it reads, and what it does not:
//! - a trace id is turned into the key through the MySQL row (`_trace_id`), else the Mongo
//!   document, else the dead-letter and quarantine topics (scanned within the time bounds);
//! - with the key, every keyed topic is read in **one partition**: all producers use the Java
//!   client's partitioner (`kafka::partitioner`), so the key's partition is known — from the
//!   first record at `--since` to the end at `--until` (or now);
//! - the logs topic is keyed by stage instance, so it is scanned whole within the bounds;
//! - what was not searched (before `--since`, after `--until`, topics that do not exist) is
//!   listed in the result.
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use serde::Serialize;

use crate::config::{Config, TopicRole};
use crate::kafka::headers as h;
use crate::kafka::partitioner::partition_for;

const TIMEOUT: Duration = Duration::from_secs(10);
/// Topics a record passes, in order, all keyed by the record's key.
const KEYED: [TopicRole; 5] = [
    TopicRole::Raw,
    TopicRole::Cleaned,
    TopicRole::Scored,
    TopicRole::Quarantine,
    TopicRole::DeadLetter,
];

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("Kafka metadata: {0}")]
    Metadata(#[from] crate::kafka::MetadataError),
    #[error("{0}")]
    Other(String),
}

pub use super::scan::Bounds;

/// One message of the record in a topic.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    pub role: &'static str,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The message's timestamp (RFC 3339).
    pub time: Option<String>,
    pub trace_id: Option<String>,
    /// Why it is there (dead letters and quarantine): stage, kind and message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The quality window (quarantine: from `etl.quality.window`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

/// Where the record came from (extract's headers on `raw`).
#[derive(Debug, Clone, Serialize)]
pub struct Fetched {
    pub source: Option<String>,
    pub fetched_at: Option<String>,
}

/// The MySQL row or the Mongo document, or why there is none.
#[derive(Debug, Clone, Serialize)]
pub struct Landed {
    pub found: bool,
    /// Lineage and quality columns / fields of the row or document.
    pub fields: Vec<(String, String)>,
    /// Why it is absent (or the error that kept it from being read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A log event that carries one of the record's trace ids.
#[derive(Debug, Clone, Serialize)]
pub struct LogEvent {
    pub time: String,
    pub level: String,
    pub stage: String,
    pub message: String,
    pub offset: i64,
    pub partition: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Journey {
    pub query: String,
    pub key: Option<String>,
    pub trace_ids: Vec<String>,
    pub fetched: Option<Fetched>,
    pub hops: Vec<Hop>,
    pub quality: Option<(String, String)>,
    pub mysql: Landed,
    pub mongo: Landed,
    pub logs: Vec<LogEvent>,
    /// Messages read, per topic.
    pub scanned: Vec<(String, u64)>,
    /// What was not searched.
    pub not_searched: Vec<String>,
}

impl Journey {
    /// Whether anything of the record was found.
    pub fn found(&self) -> bool {
        !self.hops.is_empty() || self.mysql.found || self.mongo.found || !self.logs.is_empty()
    }
}

/// A 32-hex trace id (not all zeros).
pub fn is_trace_id(s: &str) -> bool {
    s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit()) && s.chars().any(|c| c != '0')
}

fn reader(cfg: &Config) -> Result<BaseConsumer, TraceError> {
    Ok(super::scan::reader(cfg, "trace")?)
}

fn scan(
    c: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    b: Bounds,
    progress: bool,
    f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, TraceError> {
    Ok(super::scan::scan(c, topic, partitions, b, progress, f)?)
}

fn time_of(m: &BorrowedMessage<'_>) -> Option<String> {
    m.timestamp()
        .to_millis()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn hop(role: TopicRole, m: &BorrowedMessage<'_>) -> Hop {
    let hs = m.headers();
    let get = |k: &str| hs.and_then(|hs| h::get_str(hs, k)).map(str::to_string);
    let reason = get(h::ERROR_KIND).map(|k| {
        format!(
            "{} {}: {}",
            get(h::ERROR_STAGE).unwrap_or_default(),
            k,
            get(h::ERROR_MESSAGE).unwrap_or_default()
        )
    });
    Hop {
        role: role.key(),
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        time: time_of(m),
        trace_id: get(h::TRACEPARENT)
            .as_deref()
            .and_then(crate::observability::trace::trace_id)
            .map(str::to_string),
        reason,
        window: get("etl.quality.window"),
    }
}

/// Follows `query` (a key or a trace id) through the pipeline.
pub async fn run(
    cfg: &Config,
    query: &str,
    b: Bounds,
    progress: bool,
) -> Result<Journey, TraceError> {
    let mut j = Journey {
        query: query.to_string(),
        key: None,
        trace_ids: Vec::new(),
        fetched: None,
        hops: Vec::new(),
        quality: None,
        mysql: absent("not looked up"),
        mongo: absent("not looked up"),
        logs: Vec::new(),
        scanned: Vec::new(),
        not_searched: Vec::new(),
    };
    if let Some(s) = b.since_ms {
        j.not_searched
            .push(format!("anything before {}", rfc3339(s)));
    }
    if let Some(u) = b.until_ms {
        j.not_searched
            .push(format!("anything after {}", rfc3339(u)));
    }
    let c = reader(cfg)?;
    // A query that looks like a trace id is tried as one first; keys can look the same (the
    // league API's ids are 32 hex too), so when no record has that trace id it is a key.
    let key = if is_trace_id(query) {
        let t = query.to_lowercase();
        match key_of_trace(cfg, &c, &t, b, progress, &mut j).await? {
            Some(k) => {
                j.trace_ids.push(t);
                k
            }
            None => query.to_string(),
        }
    } else {
        query.to_string()
    };
    j.key = Some(key.clone());
    for role in KEYED {
        let topic = cfg.topics.name(role);
        let parts = match crate::kafka::partitions(c.client(), &topic, TIMEOUT) {
            Ok(p) => p,
            Err(e) => {
                j.not_searched.push(format!("{topic}: {e}"));
                continue;
            }
        };
        let p = partition_for(key.as_bytes(), parts.len() as i32);
        let mut found = Vec::new();
        let n = scan(&c, &topic, &[p], b, progress, |m| {
            if m.key() == Some(key.as_bytes()) {
                found.push(hop(role, m));
                if role == TopicRole::Raw {
                    let hs = m.headers();
                    let get = |k: &str| hs.and_then(|hs| h::get_str(hs, k)).map(str::to_string);
                    j.fetched = Some(Fetched {
                        source: get(h::SOURCE),
                        fetched_at: get(h::FETCHED_AT),
                    });
                }
            }
        })?;
        j.scanned.push((format!("{topic}[{p}]"), n));
        for hp in &found {
            if let Some(t) = &hp.trace_id {
                if !j.trace_ids.contains(t) {
                    j.trace_ids.push(t.clone());
                }
            }
            if let (Some(w), true) = (&hp.window, role == TopicRole::Quarantine) {
                j.quality = Some((w.clone(), "FAIL (quarantined)".into()));
            }
        }
        j.hops.extend(found);
    }
    j.mysql = mysql_row(cfg, &key).await;
    if let Some(w) = field(&j.mysql, "quality_window") {
        let d = field(&j.mysql, "quality_decision").unwrap_or_default();
        j.quality = Some((w, d));
    }
    j.mongo = mongo_doc(cfg, &key).await;
    explain_absence(&mut j);
    scan_logs(cfg, &c, b, progress, &mut j)?;
    Ok(j)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The lineage and quality columns of a row / fields of a document that trace shows.
const LANDED_FIELDS: [&str; 7] = [
    "_trace_id",
    "_source_topic",
    "_source_partition",
    "_source_offset",
    "_loaded_at",
    "quality_window",
    "quality_decision",
];

fn absent(note: &str) -> Landed {
    Landed {
        found: false,
        fields: Vec::new(),
        note: Some(note.to_string()),
    }
}

fn field(l: &Landed, name: &str) -> Option<String> {
    l.fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Says why the row and the document are missing, from where the record stopped.
fn explain_absence(j: &mut Journey) {
    let last = j
        .hops
        .iter()
        .rev()
        .find(|h| h.role != "raw" && h.role != "cleaned");
    let why = match last {
        Some(h) if h.role == "dead_letter" => {
            format!("dead-lettered: {}", h.reason.clone().unwrap_or_default())
        }
        Some(h) if h.role == "quarantine" => format!(
            "quarantined in window {}",
            h.window.clone().unwrap_or_default()
        ),
        Some(_) => "in scored, not (yet) written: see the sinks' lag in `etl-pipe status`".into(),
        None if j.hops.is_empty() => "the record is in no topic within the bounds".into(),
        None => "stopped before scored (see the hops above)".into(),
    };
    for l in [&mut j.mysql, &mut j.mongo] {
        if !l.found && l.note.as_deref() == Some("no row") {
            l.note = Some(why.clone());
        }
    }
}

async fn key_of_trace(
    cfg: &Config,
    c: &BaseConsumer,
    trace: &str,
    b: Bounds,
    progress: bool,
    j: &mut Journey,
) -> Result<Option<String>, TraceError> {
    if let Ok(Some(k)) = mysql_key_of_trace(cfg, trace).await {
        return Ok(Some(k));
    }
    if let Ok(Some(k)) = mongo_key_of_trace(cfg, trace).await {
        return Ok(Some(k));
    }
    for role in [TopicRole::DeadLetter, TopicRole::Quarantine] {
        let topic = cfg.topics.name(role);
        let Ok(parts) = crate::kafka::partitions(c.client(), &topic, TIMEOUT) else {
            continue;
        };
        let mut key = None;
        let n = scan(c, &topic, &parts, b, progress, |m| {
            let t = m
                .headers()
                .and_then(|hs| h::get_str(hs, h::TRACEPARENT))
                .and_then(crate::observability::trace::trace_id);
            if key.is_none() && t == Some(trace) {
                key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            }
        })?;
        j.scanned.push((format!("{topic} (all partitions)"), n));
        if key.is_some() {
            return Ok(key);
        }
    }
    Ok(None)
}

/// The log events that carry one of the journey's trace ids.
fn scan_logs(
    cfg: &Config,
    c: &BaseConsumer,
    b: Bounds,
    progress: bool,
    j: &mut Journey,
) -> Result<(), TraceError> {
    let topic = cfg.topics.name(TopicRole::Logs);
    let Ok(parts) = crate::kafka::partitions(c.client(), &topic, TIMEOUT) else {
        j.not_searched.push(format!("{topic}: no such topic"));
        return Ok(());
    };
    if j.trace_ids.is_empty() {
        return Ok(());
    }
    let ids = j.trace_ids.clone();
    let mut events = Vec::new();
    let n = scan(c, &topic, &parts, b, progress, |m| {
        let Some(v) = m.payload() else { return };
        // Cheap filter first: most events carry none of the ids.
        let text = String::from_utf8_lossy(v);
        if !ids.iter().any(|id| text.contains(id.as_str())) {
            return;
        }
        let Ok(e) = serde_json::from_str::<serde_json::Value>(&text) else {
            return;
        };
        let s = |k: &str| e.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        events.push(LogEvent {
            time: s("timestamp"),
            level: s("level"),
            stage: s("stage"),
            message: s("message"),
            offset: m.offset(),
            partition: m.partition(),
        });
    })?;
    j.scanned.push((format!("{topic} (all partitions)"), n));
    j.logs = events;
    Ok(())
}

fn mysql_table(cfg: &Config) -> Result<(String, String), String> {
    let schema = crate::codec::load_schema(&cfg.sink.schema).map_err(|e| e.to_string())?;
    let table = cfg
        .sink
        .mysql
        .table
        .clone()
        .unwrap_or_else(|| crate::stages::sinks::default_target_name(&schema));
    let key = cfg
        .sink
        .key_field
        .clone()
        .unwrap_or_else(|| crate::stages::sinks::lineage::KEY.to_string());
    Ok((table, key))
}

async fn mysql_key_of_trace(cfg: &Config, trace: &str) -> Result<Option<String>, String> {
    let (table, key) = mysql_table(cfg)?;
    let pool = crate::stages::sinks::mysql::connect(&cfg.mysql, 1)
        .await
        .map_err(|e| e.to_string())?;
    let sql = format!(
        "SELECT CAST(`{key}` AS CHAR) FROM `{table}` WHERE `{}` = ? LIMIT 1",
        crate::stages::sinks::lineage::TRACE_ID
    );
    let r: Option<(String,)> = sqlx::query_as(&sql)
        .bind(trace)
        .fetch_optional(&pool)
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.map(|(k,)| k))
}

/// The row's lineage and quality columns.
async fn mysql_row(cfg: &Config, key: &str) -> Landed {
    use sqlx::Row;
    let (table, key_col) = match mysql_table(cfg) {
        Ok(t) => t,
        Err(e) => return absent(&format!("not read: {e}")),
    };
    let pool = match crate::stages::sinks::mysql::connect(&cfg.mysql, 1).await {
        Ok(p) => p,
        Err(e) => return absent(&format!("not read: {e}")),
    };
    let cols = LANDED_FIELDS;
    let select: Vec<String> = cols
        .iter()
        .map(|c| format!("CAST(`{c}` AS CHAR)"))
        .collect();
    let sql = format!(
        "SELECT {} FROM `{table}` WHERE `{key_col}` = ?",
        select.join(", ")
    );
    match sqlx::query(&sql).bind(key).fetch_optional(&pool).await {
        Ok(Some(row)) => Landed {
            found: true,
            fields: cols
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let v: Option<String> = row.try_get(i).ok().flatten();
                    (c.to_string(), v.unwrap_or_else(|| "NULL".into()))
                })
                .collect(),
            note: None,
        },
        Ok(None) => absent("no row"),
        Err(e) => absent(&format!("not read: {e}")),
    }
}

async fn mongo_db(cfg: &Config) -> Result<mongodb::Collection<mongodb::bson::Document>, String> {
    let mut opts = mongodb::options::ClientOptions::parse(&cfg.mongo.uri)
        .await
        .map_err(|e| e.to_string())?;
    opts.server_selection_timeout = Some(TIMEOUT);
    if let (Some(user), Some(pw)) = (&cfg.mongo.user, &cfg.mongo.password) {
        let secret = pw.resolve("mongo.password").map_err(|e| e.to_string())?;
        opts.credential = Some(
            mongodb::options::Credential::builder()
                .username(user.clone())
                .password(secret.expose().to_string())
                .build(),
        );
    }
    let client = mongodb::Client::with_options(opts).map_err(|e| e.to_string())?;
    let schema = crate::codec::load_schema(&cfg.sink.schema).map_err(|e| e.to_string())?;
    let coll = cfg
        .sink
        .mongo
        .collection
        .clone()
        .unwrap_or_else(|| crate::stages::sinks::default_target_name(&schema));
    Ok(client.database(&cfg.mongo.database).collection(&coll))
}

async fn mongo_key_of_trace(cfg: &Config, trace: &str) -> Result<Option<String>, String> {
    let coll = mongo_db(cfg).await?;
    let d = coll
        .find_one(mongodb::bson::doc! {"_trace_id": trace})
        .projection(mongodb::bson::doc! {"_id": 1})
        .await
        .map_err(|e| e.to_string())?;
    Ok(d.and_then(|d| d.get_str("_id").ok().map(str::to_string)))
}

async fn mongo_doc(cfg: &Config, key: &str) -> Landed {
    let coll = match mongo_db(cfg).await {
        Ok(c) => c,
        Err(e) => return absent(&format!("not read: {e}")),
    };
    let fields = LANDED_FIELDS;
    match coll.find_one(mongodb::bson::doc! {"_id": key}).await {
        Ok(Some(d)) => Landed {
            found: true,
            fields: fields
                .iter()
                .filter_map(|f| d.get(*f).map(|v| (f.to_string(), bson_text(v))))
                .collect(),
            note: None,
        },
        Ok(None) => absent("no row"),
        Err(e) => absent(&format!("not read: {e}")),
    }
}

fn bson_text(v: &mongodb::bson::Bson) -> String {
    use mongodb::bson::Bson;
    match v {
        Bson::String(s) => s.clone(),
        Bson::DateTime(d) => rfc3339(d.timestamp_millis()),
        Bson::Null => "NULL".into(),
        other => other.to_string(),
    }
}

/// The journey as text, one line per hop.
pub fn render(j: &Journey) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "record {}   trace {}",
        j.key.as_deref().unwrap_or("(key not found)"),
        if j.trace_ids.is_empty() {
            "(none)".to_string()
        } else {
            j.trace_ids.join(", ")
        }
    );
    if let Some(f) = &j.fetched {
        let _ = writeln!(
            s,
            "  fetched      {}   from {}",
            f.fetched_at.as_deref().unwrap_or("?"),
            f.source.as_deref().unwrap_or("?")
        );
    }
    for h in &j.hops {
        let _ = writeln!(
            s,
            "  {:<12} partition {} offset {}   at {}{}",
            h.role,
            h.partition,
            h.offset,
            h.time.as_deref().unwrap_or("?"),
            h.reason
                .as_deref()
                .map(|r| format!("   {r}"))
                .unwrap_or_default()
        );
    }
    if let Some((w, d)) = &j.quality {
        let _ = writeln!(s, "  quality      window {w}   {d}");
    }
    for (name, l) in [("mysql", &j.mysql), ("mongo", &j.mongo)] {
        if l.found {
            let f: Vec<String> = l.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(s, "  {name:<12} {}", f.join("  "));
        } else {
            let _ = writeln!(
                s,
                "  {name:<12} absent: {}",
                l.note.as_deref().unwrap_or("")
            );
        }
    }
    let _ = writeln!(
        s,
        "  logs         {} events with its trace id",
        j.logs.len()
    );
    for e in &j.logs {
        let _ = writeln!(
            s,
            "    {} {:<5} {:<10} {}",
            e.time, e.level, e.stage, e.message
        );
    }
    let scanned: Vec<String> = j.scanned.iter().map(|(t, n)| format!("{t}: {n}")).collect();
    let _ = writeln!(s, "  read         {}", scanned.join(", "));
    if !j.not_searched.is_empty() {
        let _ = writeln!(s, "  not searched {}", j.not_searched.join("; "));
    }
    s
}
