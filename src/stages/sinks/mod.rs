//! The two sinks of the pipeline: `sink-mysql` (typed rows, exactly-once through an offsets
//! table written in the same database transaction as the rows) and `sink-mongo` (whole
//! documents, effectively-once through idempotent upserts by key, Kafka offsets committed
//! after the write).
//!
//! Both share the consumer driver in [`batch`]: one poll thread, per-partition batches cut by
//! count or age (whichever first), at most one batch in flight per partition (so rows of a
//! partition are written in order) and several partitions written in parallel.
//! See `docs/notes/sinks.md` for the table layout, the type mapping and the guarantees.
pub mod batch;
mod connections;
pub mod mongo;
pub mod mysql;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use rdkafka::message::OwnedHeaders;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::codec::{Codec, CodecError};
use crate::kafka::headers::{self, DeadLetter};
use crate::observability::trace;
use crate::record::{Record, RecordSchema, Value};
use crate::settings::{Common, ConfigError, TopicRole};

/// Metric names: the shared ones of `observability::names`.
pub(crate) use crate::observability::names as metric;

/// Names of the lineage columns / document fields every sink writes next to the record's own
/// fields. The leading underscore keeps them apart from schema fields.
pub use connections::{MongoConfig, MysqlConfig};

pub mod lineage {
    /// Primary key column when `sink.key_field` is unset: the Kafka message key (UTF-8).
    pub const KEY: &str = "_key";
    pub const TRACE_ID: &str = "_trace_id";
    pub const SOURCE_TOPIC: &str = "_source_topic";
    pub const SOURCE_PARTITION: &str = "_source_partition";
    pub const SOURCE_OFFSET: &str = "_source_offset";
    pub const LOADED_AT: &str = "_loaded_at";
    pub const ALL: [&str; 6] = [
        KEY,
        TRACE_ID,
        SOURCE_TOPIC,
        SOURCE_PARTITION,
        SOURCE_OFFSET,
        LOADED_AT,
    ];
}

/// `[sink]`: settings shared by `sink-mysql` and `sink-mongo`, with one table per sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Avro schema of the scored records: the MySQL table is created from it or checked
    /// against it, and records are decoded into it.
    #[serde(default = "default_schema")]
    pub schema: PathBuf,
    /// Schema field that is the primary key (MySQL) and `_id` (Mongo). Unset: the Kafka
    /// message key, as UTF-8 text, in a `_key` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_field: Option<String>,
    /// A partition's batch is written when it holds this many records...
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// ...or when its records' keys and payloads reach this many bytes (bounds memory when
    /// records are large; one record above it is a batch of its own)...
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// ...or when its oldest record has waited this long, whichever comes first.
    #[serde(default = "default_batch_max_age", with = "humantime_serde")]
    pub batch_max_age: Duration,
    /// Longest wait between two attempts at a retriable failure (backoff doubles from 100 ms).
    #[serde(default = "default_retry_max_backoff", with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// On shutdown, how long the batches in hand may still take (retries included) before
    /// the sink gives up on them (they are then replayed at the next start; nothing is lost).
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    #[serde(default)]
    pub mysql: SinkMysqlConfig,
    #[serde(default)]
    pub mongo: SinkMongoConfig,
}

fn default_schema() -> PathBuf {
    PathBuf::from("schemas/league_entry.scored.avsc")
}
fn default_batch_size() -> usize {
    2000
}
fn default_batch_max_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_batch_max_age() -> Duration {
    Duration::from_millis(200)
}
fn default_retry_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            schema: default_schema(),
            key_field: None,
            batch_size: default_batch_size(),
            batch_max_bytes: default_batch_max_bytes(),
            batch_max_age: default_batch_max_age(),
            retry_max_backoff: default_retry_max_backoff(),
            shutdown_timeout: default_shutdown_timeout(),
            mysql: SinkMysqlConfig::default(),
            mongo: SinkMongoConfig::default(),
        }
    }
}

/// How the upsert refers to the incoming row in `ON DUPLICATE KEY UPDATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpsertSyntax {
    /// `AS new` on MySQL >= 8.0.19, `VALUES(col)` on MariaDB and older MySQL (from `SELECT VERSION()`).
    Auto,
    /// `c = VALUES(c)`: MariaDB and every MySQL (deprecated, with a warning, on MySQL >= 8.0.20).
    Values,
    /// `INSERT ... AS new ... c = new.c`: MySQL >= 8.0.19 only.
    Alias,
}

/// `[sink.mysql]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkMysqlConfig {
    /// Target table; default: the schema's record name in snake_case (`league_entry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Table holding the next offset per (consumer group, topic, partition).
    #[serde(default = "default_offsets_table")]
    pub offsets_table: String,
    /// Database connections; partitions are written in parallel up to this many.
    #[serde(default = "default_connections")]
    pub connections: u32,
    /// Rows per INSERT statement at most (also kept under 65 535 / columns).
    #[serde(default = "default_rows_per_statement")]
    pub rows_per_statement: usize,
    /// Bytes per INSERT statement at most; lowered to the server's `max_allowed_packet`.
    #[serde(default = "default_max_statement_bytes")]
    pub max_statement_bytes: usize,
    /// `VARCHAR` length (characters) of string columns in a table the sink creates.
    #[serde(default = "default_string_length")]
    pub string_length: u32,
    /// `auto`, `values` or `alias` (see [`UpsertSyntax`]).
    #[serde(default = "default_upsert_syntax")]
    pub upsert_syntax: UpsertSyntax,
}

fn default_offsets_table() -> String {
    "etl_offsets".into()
}
fn default_connections() -> u32 {
    4
}
fn default_rows_per_statement() -> usize {
    1000
}
fn default_max_statement_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_string_length() -> u32 {
    255
}
fn default_upsert_syntax() -> UpsertSyntax {
    UpsertSyntax::Auto
}

impl Default for SinkMysqlConfig {
    fn default() -> Self {
        Self {
            table: None,
            offsets_table: default_offsets_table(),
            connections: default_connections(),
            rows_per_statement: default_rows_per_statement(),
            max_statement_bytes: default_max_statement_bytes(),
            string_length: default_string_length(),
            upsert_syntax: default_upsert_syntax(),
        }
    }
}

/// `[sink.mongo]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkMongoConfig {
    /// Target collection; default: the schema's record name in snake_case (`league_entry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// Batches (one per partition) prepared and written at the same time. FerretDB on SQLite
    /// runs one write at a time anyway, so 1 costs no throughput there and keeps one prepared
    /// batch in memory instead of one per partition; raise it for a MongoDB cluster.
    #[serde(default = "default_mongo_write_concurrency")]
    pub write_concurrency: usize,
}

fn default_mongo_write_concurrency() -> usize {
    1
}

impl Default for SinkMongoConfig {
    fn default() -> Self {
        SinkMongoConfig {
            collection: None,
            write_concurrency: default_mongo_write_concurrency(),
        }
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

impl SinkConfig {
    /// Rejects contradictions, naming the key (called from `Config::validate`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_size == 0 || self.batch_size > 1_000_000 {
            return Err(ConfigError::key(
                "sink.batch_size",
                "must be between 1 and 1000000",
            ));
        }
        if !(1024..=1 << 30).contains(&self.batch_max_bytes) {
            return Err(ConfigError::key(
                "sink.batch_max_bytes",
                "must be between 1024 and 1073741824",
            ));
        }
        if self.mongo.write_concurrency == 0 || self.mongo.write_concurrency > 64 {
            return Err(ConfigError::key(
                "sink.mongo.write_concurrency",
                "must be between 1 and 64",
            ));
        }
        if self.batch_max_age.is_zero() {
            return Err(ConfigError::key("sink.batch_max_age", "must be above 0"));
        }
        if self.retry_max_backoff < Duration::from_millis(100) {
            return Err(ConfigError::key(
                "sink.retry_max_backoff",
                "must be at least 100ms",
            ));
        }
        if let Some(k) = &self.key_field {
            if k.is_empty() {
                return Err(ConfigError::key(
                    "sink.key_field",
                    "must name a schema field (or be left out to use the Kafka key)",
                ));
            }
        }
        let m = &self.mysql;
        for (key, v) in [
            ("sink.mysql.table", m.table.as_deref()),
            ("sink.mysql.offsets_table", Some(m.offsets_table.as_str())),
            ("sink.mongo.collection", self.mongo.collection.as_deref()),
        ] {
            if let Some(v) = v {
                if !is_identifier(v) {
                    return Err(ConfigError::key(
                        key,
                        format!(
                            "`{v}` must be 1-64 letters, digits or '_', not starting with a digit"
                        ),
                    ));
                }
            }
        }
        if m.table.as_deref() == Some(m.offsets_table.as_str()) {
            return Err(ConfigError::key(
                "sink.mysql.offsets_table",
                "must differ from sink.mysql.table",
            ));
        }
        if m.connections == 0 || m.connections > 256 {
            return Err(ConfigError::key(
                "sink.mysql.connections",
                "must be between 1 and 256",
            ));
        }
        if m.rows_per_statement == 0 {
            return Err(ConfigError::key(
                "sink.mysql.rows_per_statement",
                "must be at least 1",
            ));
        }
        if m.max_statement_bytes < 64 * 1024 {
            return Err(ConfigError::key(
                "sink.mysql.max_statement_bytes",
                "must be at least 65536",
            ));
        }
        if m.string_length == 0 || m.string_length > 16_383 {
            return Err(ConfigError::key(
                "sink.mysql.string_length",
                "must be between 1 and 16383 (the VARCHAR limit in utf8mb4)",
            ));
        }
        Ok(())
    }
}

/// The default table / collection name: the schema's record name without namespace, in snake_case.
pub fn default_target_name(schema: &RecordSchema) -> String {
    let simple = schema.name.rsplit('.').next().unwrap_or(&schema.name);
    let mut out = String::new();
    for (i, c) in simple.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        }
    }
    if out.is_empty() {
        "records".into()
    } else {
        out
    }
}

/// Everything a sink can meet, sorted for the caller.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The target table/collection does not fit the schema; a person must act.
    #[error("{0}")]
    Schema(String),
    /// A database failure that backing off may cure (connection, deadlock, lock timeout...).
    #[error("{what}: {message}")]
    Retriable { what: &'static str, message: String },
    /// A database or Kafka failure that retrying will not cure (permissions, missing table...).
    #[error("{what}: {message}")]
    Fatal { what: &'static str, message: String },
    /// Shutdown came (and its grace period passed) before the work could finish.
    #[error("stopped before the batch could be written")]
    Stopped,
}

impl SinkError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, SinkError::Retriable { .. })
    }
}

/// One consumed message, owned (it leaves the poll thread).
#[derive(Debug, Clone)]
pub struct SinkMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Option<OwnedHeaders>,
}

impl SinkMessage {
    /// When extract fetched the record from the API (`etl.fetched_at`, ms since the epoch).
    pub fn fetched_at_ms(&self) -> Option<i64> {
        headers::fetched_at_ms(self.headers.as_ref()?)
    }

    /// The trace id of the message: from its `traceparent` header, else the record's
    /// `trace_id` field when it holds a valid 32-hex id.
    pub fn trace_id(&self, record: Option<&Record>) -> Option<String> {
        if let Some(h) = &self.headers {
            if let Some(id) = headers::get_str(h, headers::TRACEPARENT).and_then(trace::trace_id) {
                return Some(id.to_string());
            }
        }
        match record.and_then(|r| r.get("trace_id")) {
            Some(Value::String(s)) if s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit()) => {
                Some(s.to_ascii_lowercase())
            }
            _ => None,
        }
    }

    /// The Kafka key as UTF-8 text.
    pub fn key_str(&self) -> Result<&str, &'static str> {
        match &self.key {
            None => Err("the message has no key"),
            Some(k) if k.is_empty() => Err("the message key is empty"),
            Some(k) => std::str::from_utf8(k).map_err(|_| "the message key is not UTF-8"),
        }
    }
}

/// Why a message could not be decoded.
#[derive(Debug, Clone)]
pub struct DecodeFailure {
    /// True when the bytes may be fine and only a lookup failed (schema registry away).
    pub retriable: bool,
    pub message: String,
}

/// Turns a message's bytes into a record of the sink's schema (the Avro codec in production;
/// tests may plug in their own).
pub trait Decode: Send + Sync {
    /// Decodes without I/O.
    fn decode(&self, bytes: &[u8]) -> Result<Record, DecodeFailure>;

    /// Decodes, doing I/O first if needed (the codec fetches an unknown schema-registry id);
    /// called when [`decode`](Self::decode) failed as retriable.
    fn decode_slow<'a>(
        &'a self,
        bytes: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = Result<Record, DecodeFailure>> + Send + 'a>> {
        Box::pin(std::future::ready(self.decode(bytes)))
    }
}

fn codec_failure(e: CodecError) -> DecodeFailure {
    DecodeFailure {
        retriable: e.is_retriable(),
        message: e.to_string(),
    }
}

impl Decode for Codec {
    fn decode(&self, bytes: &[u8]) -> Result<Record, DecodeFailure> {
        Codec::decode(self, bytes).map_err(codec_failure)
    }

    fn decode_slow<'a>(
        &'a self,
        bytes: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = Result<Record, DecodeFailure>> + Send + 'a>> {
        Box::pin(async move { self.decode_async(bytes).await.map_err(codec_failure) })
    }
}

/// The decoder a sink holds.
pub type RecordDecoder = dyn Decode;

/// Decodes every message of a batch in turn, handing `f` the message's index, the message
/// and its record (or the reason it is poison). Records are handed over one at a time, never
/// collected: a decoded record takes several times the memory of its Avro bytes. A
/// retriable failure fails the whole call (the batch is retried).
pub(crate) async fn decode_each(
    decoder: &RecordDecoder,
    msgs: &[SinkMessage],
    mut f: impl FnMut(usize, &SinkMessage, Result<Record, Rejected>),
) -> Result<(), SinkError> {
    for (index, m) in msgs.iter().enumerate() {
        let Some(payload) = m.payload.as_deref() else {
            f(
                index,
                m,
                Err(Rejected {
                    index,
                    kind: "decode",
                    message: "the message has no value".into(),
                }),
            );
            continue;
        };
        let decoded = match decoder.decode(payload) {
            Err(e) if e.retriable => decoder.decode_slow(payload).await,
            other => other,
        };
        match decoded {
            Ok(r) => f(index, m, Ok(r)),
            Err(e) if e.retriable => {
                return Err(SinkError::Retriable {
                    what: "decoding",
                    message: e.message,
                })
            }
            Err(e) => f(
                index,
                m,
                Err(Rejected {
                    index,
                    kind: "decode",
                    message: e.message,
                }),
            ),
        }
    }
    Ok(())
}

/// A record the sink gives up on, with the reason (goes to the dead-letter topic).
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Index of the message in its batch.
    pub index: usize,
    /// `decode`, `missing_key`, `mysql_data`, `mongo_write`...
    pub kind: &'static str,
    pub message: String,
}

/// Writes dead letters and waits for their delivery (they must be durable before the batch's
/// offsets move).
#[derive(Clone)]
pub struct DeadLetters {
    producer: rdkafka::producer::FutureProducer,
    topic: String,
    stage: &'static str,
}

impl DeadLetters {
    pub fn new(cfg: &Common, stage: &'static str) -> Result<DeadLetters, SinkError> {
        let producer = crate::kafka::producer_config(&cfg.kafka)
            .create()
            .map_err(|e| SinkError::Fatal {
                what: "creating the dead-letter producer",
                message: e.to_string(),
            })?;
        Ok(DeadLetters {
            producer,
            topic: cfg.topics.name(TopicRole::DeadLetter),
            stage,
        })
    }

    /// Sends the rejected messages of a batch; Ok once every one is acknowledged.
    pub async fn send(
        &self,
        topic: &str,
        msgs: &[SinkMessage],
        rejected: &[Rejected],
    ) -> Result<(), SinkError> {
        use rdkafka::producer::FutureRecord;
        let mut pending = Vec::with_capacity(rejected.len());
        for r in rejected {
            let Some(m) = msgs.get(r.index) else { continue };
            let dl = DeadLetter {
                stage: self.stage,
                kind: r.kind,
                message: &r.message,
                source: Some((topic, m.partition, m.offset)),
            };
            let headers = dl.headers(m.headers.as_ref().map(|h| h.as_borrowed()));
            let mut rec: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(k) = &m.key {
                rec = rec.key(k.as_slice());
            }
            if let Some(p) = &m.payload {
                rec = rec.payload(p.as_slice());
            }
            pending.push(
                self.producer
                    .send(rec, rdkafka::util::Timeout::After(Duration::from_secs(60))),
            );
        }
        for (r, fut) in rejected.iter().zip(pending) {
            match fut.await {
                Ok(_) => {
                    metrics::counter!(metric::DEAD_LETTERS, "kind" => r.kind).increment(1);
                }
                Err((e, _)) => {
                    return Err(SinkError::Retriable {
                        what: "sending a dead letter",
                        message: e.to_string(),
                    })
                }
            }
        }
        if !rejected.is_empty() {
            tracing::warn!(
                topic,
                dead_letters = rejected.len(),
                first_kind = rejected[0].kind,
                first_error = %rejected[0].message,
                "records sent to the dead-letter topic"
            );
        }
        Ok(())
    }
}

/// The sink's schema (`sink.schema`) and its Avro codec, which also reads data written with
/// the older schemas of `history/` beside it.
pub async fn load_codec(
    cfg: &Common,
    sink: &SinkConfig,
) -> Result<(RecordSchema, std::sync::Arc<RecordDecoder>), SinkError> {
    let schema_err =
        |e: CodecError| SinkError::Config(ConfigError::key("sink.schema", e.to_string()));
    let schema = crate::codec::load_schema(&sink.schema).map_err(schema_err)?;
    let topic = cfg.topics.name(TopicRole::Scored);
    let codec = Codec::from_config(&cfg.kafka, schema.clone(), &topic)
        .await
        .map_err(|e| SinkError::Retriable {
            what: "setting up the codec",
            message: e.to_string(),
        })?;
    if let Some(history) = sink.schema.parent().map(|d| d.join("history")) {
        if history.is_dir() {
            for (file, writer) in crate::codec::load_schema_dir(&history).map_err(schema_err)? {
                if writer.name != schema.name {
                    continue;
                }
                if let Err(e) = codec.add_writer_schema(writer) {
                    tracing::debug!(%file, error = %e, "older schema not readable as the sink's schema");
                }
            }
        }
    }
    Ok((schema, std::sync::Arc::new(codec)))
}

/// Runs `attempt` until it succeeds or fails for good; retriable errors are backed off
/// ([`crate::retry`]: 100 ms doubling up to `max_backoff`, jittered) and retried until `stop`
/// is cancelled.
pub async fn retry<T, F, Fut>(
    what: &'static str,
    max_backoff: Duration,
    stop: &CancellationToken,
    attempt: F,
) -> Result<T, SinkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SinkError>>,
{
    let backoff = crate::retry::Backoff::new(Duration::from_millis(100), max_backoff);
    let retriable = |e: &SinkError| {
        let r = e.is_retriable();
        if r {
            metrics::counter!(metric::RETRIES, "kind" => "database").increment(1);
        }
        r
    };
    crate::retry::retry(what, backoff, stop, retriable, attempt)
        .await
        .map_err(|e| match e {
            crate::retry::Stopped::Cancelled => SinkError::Stopped,
            crate::retry::Stopped::Permanent(e) => e,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_target_name_is_snake_case() {
        let s = RecordSchema {
            name: "etl.league.LeagueEntry".into(),
            fields: vec![],
            source: String::new(),
        };
        assert_eq!(default_target_name(&s), "league_entry");
    }

    #[test]
    fn trace_id_prefers_header_then_field() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let m = SinkMessage {
            partition: 0,
            offset: 0,
            key: None,
            payload: None,
            headers: Some(OwnedHeaders::new().insert(rdkafka::message::Header {
                key: headers::TRACEPARENT,
                value: Some(tp),
            })),
        };
        assert_eq!(
            m.trace_id(None).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        let m2 = SinkMessage { headers: None, ..m };
        let mut r = Record::new();
        r.set(
            "trace_id",
            Value::String("ABCDEF0123456789abcdef0123456789".into()),
        );
        assert_eq!(
            m2.trace_id(Some(&r)).as_deref(),
            Some("abcdef0123456789abcdef0123456789")
        );
        r.set("trace_id", Value::String("nope".into()));
        assert_eq!(m2.trace_id(Some(&r)), None);
    }

    #[test]
    fn fetched_at_comes_from_the_extract_header() {
        let with = |v: Option<&str>| SinkMessage {
            partition: 0,
            offset: 0,
            key: None,
            payload: None,
            headers: v.map(|v| {
                OwnedHeaders::new().insert(rdkafka::message::Header {
                    key: headers::FETCHED_AT,
                    value: Some(v),
                })
            }),
        };
        // What extract writes: RFC 3339 with milliseconds, UTC.
        assert_eq!(
            with(Some("2026-11-28T21:12:40.123Z")).fetched_at_ms(),
            Some(1_795_900_360_123)
        );
        assert_eq!(with(Some("not a time")).fetched_at_ms(), None);
        assert_eq!(with(None).fetched_at_ms(), None);
    }

    #[test]
    fn validate_names_keys() {
        let c = SinkConfig {
            batch_size: 0,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sink.batch_size"));
        let c = SinkConfig {
            batch_max_bytes: 10,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sink.batch_max_bytes"));
        let mut c = SinkConfig::default();
        c.mysql.table = Some("bad name".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sink.mysql.table"));
    }
}
