//! The two sinks of the pipeline: `sink-mysql` (typed rows, exactly-once through an offsets
//! table written in the same database transaction as the rows) and `sink-mongo` (whole
//! documents, effectively-once through idempotent upserts by key, Kafka offsets committed
//! after the write).
//!
//! Both share the consumer driver in [`batch`]: one poll thread, per-partition batches cut by
//! count or age (whichever first), at most one batch in flight per partition (so rows of a
//! partition are written in order) and several partitions written in parallel. This module
//! owns what both sinks share besides: the errors they sort everything into, the retry loop,
//! the lineage names, and `run_sink`, the one way a sink stage starts.
//! See `docs/notes/sinks.md` for the table layout, the type mapping and the guarantees.
pub mod batch;
mod config;
mod dead_letters;
mod decode;
mod message;
pub mod mongo;
pub mod mysql;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::record::RecordSchema;
use crate::settings::{Common, ConfigError};

pub use config::{
    MongoDecimals, SinkConfig, SinkMongoConfig, SinkMysqlConfig, StatementProtocol, UpsertSyntax,
    MIN_REJECTED_TO_STOP,
};
pub use dead_letters::{
    check_rejected_share, DeadLetters, Rejected, SentDeadLetters, SENDING_DEAD_LETTER,
};
pub(crate) use decode::decode_each;
pub use decode::{load_codec, Decode, DecodeFailure, RecordDecoder};
pub use message::SinkMessage;
pub use mongo::MongoConfig;
pub use mysql::MysqlConfig;

/// Metric names: the shared ones of `observability::names`.
pub(crate) use crate::observability::names as metric;

/// Records the phases of a batch in [`metric::SINK_PHASE_SECONDS`]: each `end` records the
/// time since the previous one (or the start).
pub(crate) struct Phases(std::time::Instant);

impl Phases {
    pub(crate) fn new() -> Phases {
        Phases(std::time::Instant::now())
    }
    pub(crate) fn end(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        metrics::histogram!(metric::SINK_PHASE_SECONDS, "phase" => phase)
            .record(now.duration_since(self.0).as_secs_f64());
        self.0 = now;
    }
}

/// Names of the lineage columns / document fields every sink writes next to the record's own
/// fields. The leading underscore keeps them apart from schema fields.
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

/// The field that orders versions of a key (`sink.version_field`), checked against the
/// schema: `None` when the check is off. It must be a non-nullable timestamp-millis, long or
/// int: a null version could never be compared, so its row could never change again.
pub fn version_field(
    schema: &RecordSchema,
    sink: &SinkConfig,
) -> Result<Option<String>, SinkError> {
    use crate::record::FieldType;
    let name = sink.version_field.as_str();
    if name.is_empty() {
        return Ok(None);
    }
    let bad = |m: String| SinkError::Config(ConfigError::key("sink.version_field", m));
    let f = schema.field(name).ok_or_else(|| {
        bad(format!(
            "`{name}` is not a field of schema {} (set \"\" to write without a version check)",
            schema.name
        ))
    })?;
    if f.nullable {
        return Err(bad(format!(
            "`{name}` is nullable; a version field must not be"
        )));
    }
    match f.ty {
        FieldType::TimestampMillis | FieldType::Long | FieldType::Int => Ok(Some(name.to_string())),
        _ => Err(bad(format!(
            "`{name}` must be a timestamp-millis, long or int field"
        ))),
    }
}

/// Readiness from write results (`/readyz`'s database check): a write the database answered
/// means connected; one that failed as retriable (the database away, a timeout) means not,
/// until a write succeeds again. A dead letter Kafka did not take says nothing about the
/// database. An idle sink keeps its last answer.
pub(crate) fn report_db<T>(result: &Result<T, SinkError>) {
    match result {
        Ok(_) => crate::observability::health().set_db_connected(true),
        Err(SinkError::Retriable { what, .. }) if *what != SENDING_DEAD_LETTER => {
            crate::observability::health().set_db_connected(false)
        }
        Err(_) => {}
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

/// How a sink stage's writer comes to be: what [`run_sink`] needs beyond the driver.
pub(crate) trait Connect: batch::BatchWriter + Sized {
    /// The database's connection settings (`[mysql]`, `[mongo]`).
    type Db: Sync;
    /// Names the connection attempt in the logs while the database is away.
    const CONNECTING: &'static str;

    /// Connects to the database and readies the target (one attempt; retried by the caller).
    fn connect(
        cfg: &Common,
        sink: &SinkConfig,
        db: &Self::Db,
        schema: &RecordSchema,
        codec: Arc<RecordDecoder>,
        dead_letters: DeadLetters,
    ) -> impl Future<Output = Result<Self, SinkError>> + Send;
}

/// A sink stage's `run`: loads the sink's schema and codec, then [`run_sink_with`].
pub(crate) async fn run_sink<W: Connect>(
    cfg: &Common,
    sink: &SinkConfig,
    db: &W::Db,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    let (schema, codec) = load_codec(cfg, sink).await?;
    run_sink_with::<W>(cfg, sink, db, schema, codec, shutdown).await
}

/// A sink stage's `run_with`: connects the writer (retrying while the database is away) and
/// drives it until `shutdown`.
pub(crate) async fn run_sink_with<W: Connect>(
    cfg: &Common,
    sink: &SinkConfig,
    db: &W::Db,
    schema: RecordSchema,
    codec: Arc<RecordDecoder>,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    batch::connect_and_drive(cfg, sink, W::CONNECTING, shutdown, |dl| {
        W::connect(cfg, sink, db, &schema, codec.clone(), dl)
    })
    .await
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
            aliases: Vec::new(),
            fields: vec![],
            source: String::new(),
        };
        assert_eq!(default_target_name(&s), "league_entry");
    }
}
