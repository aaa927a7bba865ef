//! `[sink]`, `[sink.mysql]` and `[sink.mongo]`: the settings both sinks share and each sink's
//! own, their defaults, and the start-up `validate()` that names the offending key.
//! (The database connections themselves are `[mysql]` and `[mongo]`, beside each sink.)
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::ConfigError;

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
    /// Schema field that orders the versions of a key: a row / document is replaced only by a
    /// record whose value is the same or newer, so a redrive or a replay of older records
    /// never reverts newer ones. Must be a non-nullable timestamp-millis, long or int field;
    /// `""` turns the check off (the last record written wins).
    #[serde(default = "default_version_field")]
    pub version_field: String,
    /// The sink stops (offsets unmoved) when more than this share of a batch's records is
    /// rejected (dead letters of any kind) and at least 10 are: a wrong schema, table or
    /// topic then stops the stage instead of dead-lettering the whole stream. 1 turns it off.
    #[serde(default = "default_max_rejected_share")]
    pub max_rejected_share: f64,
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
fn default_version_field() -> String {
    "fetched_at".into()
}
fn default_max_rejected_share() -> f64 {
    0.5
}

/// Fewest rejected records in one batch that can stop the sink through
/// `sink.max_rejected_share` (a bad record alone in a small batch is a dead letter, not a stop).
pub const MIN_REJECTED_TO_STOP: usize = 10;

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
            version_field: default_version_field(),
            max_rejected_share: default_max_rejected_share(),
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

/// How sink-mysql sends its multi-row upserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementProtocol {
    /// Prepared statements with bound values (COM_STMT_EXECUTE): the server parses each
    /// statement shape once per connection instead of every row's literals.
    Binary,
    /// SQL text with the values as escaped literals (COM_QUERY).
    Text,
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
    /// `VARCHAR` length (characters) of a string key column in a table the sink creates (at
    /// most 768: InnoDB's 3072-byte key). Other string columns are `LONGTEXT`, which holds
    /// whatever the schema allows, so MySQL stores every record MongoDB stores.
    #[serde(default = "default_string_length")]
    pub string_length: u32,
    /// `auto`, `values` or `alias` (see [`UpsertSyntax`]).
    #[serde(default = "default_upsert_syntax")]
    pub upsert_syntax: UpsertSyntax,
    /// `binary`: prepared multi-row upserts with bound values, parsed by the server once per
    /// connection and statement shape (measured 1.4x the rows/s of `text`, README
    /// "Benchmarks"); `text`: the values as escaped SQL literals, for a proxy or server that
    /// does not take prepared statements.
    #[serde(default = "default_protocol")]
    pub protocol: StatementProtocol,
    /// Nested record fields stored as one column per field (`mini_series` → `mini_series_wins`,
    /// `mini_series_losses`, ...) instead of one `JSON` column; a dotted path flattens a record
    /// inside a flattened one (`["mini_series", "mini_series.detail"]`).
    #[serde(default)]
    pub flatten: Vec<String>,
    /// Longest one call to MySQL may wait for its answer (a batch's inserts count as one call;
    /// the dead letters' delivery by Kafka is not a MySQL call) before it counts as a retriable
    /// failure: logged, readiness red, retried on a new connection; the cut-off one is closed
    /// and killed on the server so that its transaction's locks go. A server that stops
    /// answering must not hang the sink silently. Above InnoDB's `innodb_lock_wait_timeout`
    /// (50 s by default), so that a lock wait ends with the server's own error first.
    #[serde(default = "default_mysql_write_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
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
fn default_protocol() -> StatementProtocol {
    StatementProtocol::Binary
}
fn default_mysql_write_timeout() -> Duration {
    Duration::from_secs(60)
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
            protocol: default_protocol(),
            flatten: Vec::new(),
            write_timeout: default_mysql_write_timeout(),
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
    /// Longest a batch's write may take before it counts as a retriable failure (logged,
    /// readiness red, retried): a server that stops answering must not hang the sink silently.
    #[serde(default = "default_mongo_write_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    /// How Avro decimals are stored: `decimal128` (default; exact, up to 34 digits) or
    /// `string` (the exact decimal text, e.g. `"-123.47"`: for servers without Decimal128 —
    /// FerretDB 1.24 drops the connection on one — and for decimals beyond 34 digits).
    #[serde(default)]
    pub decimals: MongoDecimals,
}

/// `sink.mongo.decimals`: the BSON type decimals are stored as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MongoDecimals {
    /// BSON Decimal128: exact, at most 34 significant digits.
    #[default]
    Decimal128,
    /// The decimal's exact text (`"-123.47"`).
    String,
}

fn default_mongo_write_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_mongo_write_concurrency() -> usize {
    1
}

impl Default for SinkMongoConfig {
    fn default() -> Self {
        SinkMongoConfig {
            collection: None,
            write_concurrency: default_mongo_write_concurrency(),
            write_timeout: default_mongo_write_timeout(),
            decimals: MongoDecimals::default(),
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
    /// True when `rejected` of a batch of `records` is more than `sink.max_rejected_share`
    /// allows (and at least [`MIN_REJECTED_TO_STOP`]).
    pub fn too_many_rejected(&self, rejected: usize, records: usize) -> bool {
        rejected >= MIN_REJECTED_TO_STOP
            && self.max_rejected_share < 1.0
            && rejected as f64 > self.max_rejected_share * records as f64
    }

    /// Rejects contradictions, naming the key (called from `Config::validate`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_batching()?;
        self.validate_names()?;
        self.mysql.validate_limits()
    }

    /// Batch cuts, write concurrency and backoff.
    fn validate_batching(&self) -> Result<(), ConfigError> {
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
        if self.mongo.write_timeout < Duration::from_secs(1) {
            return Err(ConfigError::key(
                "sink.mongo.write_timeout",
                "must be at least 1s",
            ));
        }
        if self.mysql.write_timeout < Duration::from_secs(1) {
            return Err(ConfigError::key(
                "sink.mysql.write_timeout",
                "must be at least 1s",
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
        if !(self.max_rejected_share > 0.0 && self.max_rejected_share <= 1.0) {
            return Err(ConfigError::key(
                "sink.max_rejected_share",
                format!(
                    "must be above 0 and at most 1 (1 = never stop), not {}",
                    self.max_rejected_share
                ),
            ));
        }
        Ok(())
    }

    /// The key field and the table / collection names (they are spliced into SQL).
    fn validate_names(&self) -> Result<(), ConfigError> {
        if let Some(k) = &self.key_field {
            if k.is_empty() {
                return Err(ConfigError::key(
                    "sink.key_field",
                    "must name a schema field (or be left out to use the Kafka key)",
                ));
            }
        }
        let m = &self.mysql;
        if !self.version_field.is_empty() && !is_identifier(&self.version_field) {
            return Err(ConfigError::key(
                "sink.version_field",
                format!(
                    "`{}` must be a schema field name (or \"\" for no version check)",
                    self.version_field
                ),
            ));
        }
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
        Ok(())
    }
}

impl SinkMysqlConfig {
    /// Connections, statement limits and column sizes.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        if self.connections == 0 || self.connections > 256 {
            return Err(ConfigError::key(
                "sink.mysql.connections",
                "must be between 1 and 256",
            ));
        }
        if self.rows_per_statement == 0 {
            return Err(ConfigError::key(
                "sink.mysql.rows_per_statement",
                "must be at least 1",
            ));
        }
        if self.max_statement_bytes < 64 * 1024 {
            return Err(ConfigError::key(
                "sink.mysql.max_statement_bytes",
                "must be at least 65536",
            ));
        }
        if self.string_length == 0 || self.string_length > 16_383 {
            return Err(ConfigError::key(
                "sink.mysql.string_length",
                "must be between 1 and 16383 (the VARCHAR limit in utf8mb4)",
            ));
        }
        for f in &self.flatten {
            if !f.split('.').all(is_identifier) {
                return Err(ConfigError::key(
                    "sink.mysql.flatten",
                    format!("`{f}` must be a field name, or a dotted path of field names"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = SinkConfig {
            max_rejected_share: 0.0,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sink.max_rejected_share"));
        let c = SinkConfig {
            version_field: "no such".into(),
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sink.version_field"));
    }

    #[test]
    fn the_rejected_share_stops_only_above_the_share_and_the_minimum() {
        let c = SinkConfig::default();
        assert!(!c.too_many_rejected(1, 1), "one bad record alone");
        assert!(!c.too_many_rejected(9, 9));
        assert!(!c.too_many_rejected(10, 20), "exactly half");
        assert!(c.too_many_rejected(11, 20));
        let off = SinkConfig {
            max_rejected_share: 1.0,
            ..Default::default()
        };
        assert!(!off.too_many_rejected(2000, 2000));
    }
}
