//! `sink-mysql`: scored records into typed MySQL / MariaDB rows, exactly once.
//!
//! Each batch (one partition) is one database transaction: lock the partition's row in the
//! offsets table and check it still holds the offset this instance expects (a fence against
//! a second owner of the partition, and the way an ambiguous commit is resolved), multi-row
//! `INSERT ... ON DUPLICATE KEY UPDATE` statements, dead letters for the rows MySQL rejects as
//! data, then the new `next_offset`, then COMMIT. On assignment the consumer starts from the
//! offsets in this table, never from Kafka's committed offsets (those are written after the
//! commit, only so that lag shows in Kafdrop and the lag gauges).
//!
//! Statements are sent as text (no bound parameters; strings as escaped literals under the
//! session's own sql_mode): INFRA.md measured them faster than prepared statements from 2
//! connections up, and there is no 65 535-parameter limit to meet; statements are still cut
//! at `rows_per_statement`, 65 535 / columns rows, and `max_allowed_packet`.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlPoolOptions};
use sqlx::{ConnectOptions, Connection, MySqlPool, Row as _};
use tokio_util::sync::CancellationToken;

use super::batch::{self, Batch, BatchWriter, Outcome};
use super::MysqlConfig;
use super::{
    lineage, metric, DeadLetters, Rejected, SinkConfig, SinkError, SinkMessage, UpsertSyntax,
};
use crate::record::{FieldType, Record, RecordSchema, Value};
use crate::settings::Common;

pub const STAGE: &str = "sink-mysql";

/// The most bound parameters one prepared statement may hold; text statements have no such
/// limit, but keeping under it leaves the prepared protocol open.
const MAX_PLACEHOLDERS: usize = 65_535;

/// The session's SQL mode: strict, so a bad value is an error (and a dead letter) instead of
/// a silently truncated or zeroed column.
/// Also READ COMMITTED: no gap locks between partitions writing neighbouring keys.
const SESSION_SETUP: &str =
    "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'; \
     SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED";

// ------------------------------------------------------------------------------------------
// Server flavour

/// What `SELECT VERSION()` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql(u32, u32, u32),
}

impl Flavor {
    pub fn parse(version: &str) -> Flavor {
        if version.to_ascii_lowercase().contains("mariadb") {
            return Flavor::MariaDb;
        }
        let mut nums = version
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>().unwrap_or(0));
        Flavor::MySql(
            nums.next().unwrap_or(0),
            nums.next().unwrap_or(0),
            nums.next().unwrap_or(0),
        )
    }

    /// `INSERT ... AS new` exists from MySQL 8.0.19; MariaDB has no row alias.
    pub fn supports_row_alias(&self) -> bool {
        match *self {
            Flavor::MariaDb => false,
            Flavor::MySql(a, b, c) => (a, b, c) >= (8, 0, 19),
        }
    }

    /// A binary, NO PAD collation: keys compare byte for byte (`'a'` and `'a '` or `'A'` are
    /// different records).
    pub fn key_collation(&self) -> &'static str {
        match *self {
            Flavor::MariaDb => "utf8mb4_nopad_bin",
            Flavor::MySql(a, ..) if a >= 8 => "utf8mb4_0900_bin",
            Flavor::MySql(..) => "utf8mb4_bin",
        }
    }
}

// ------------------------------------------------------------------------------------------
// Type mapping and table layout

/// The column type the sink creates for an Avro type.
pub fn sql_type(ty: &FieldType, string_length: u32) -> String {
    match ty {
        FieldType::Boolean => "BOOLEAN".into(),
        FieldType::Int => "INT".into(),
        FieldType::Long => "BIGINT".into(),
        FieldType::Float => "FLOAT".into(),
        FieldType::Double => "DOUBLE".into(),
        FieldType::String => format!("VARCHAR({string_length})"),
        FieldType::TimestampMillis => "DATETIME(3)".into(),
    }
}

/// The `information_schema.COLUMNS.DATA_TYPE`s an existing column may have for an Avro type.
pub fn accepted_types(ty: &FieldType) -> &'static [&'static str] {
    match ty {
        FieldType::Boolean => &["tinyint", "smallint", "mediumint", "int", "bigint", "bit"],
        FieldType::Int => &["int", "bigint", "decimal"],
        FieldType::Long => &["bigint", "decimal"],
        FieldType::Float => &["float", "double", "decimal"],
        FieldType::Double => &["double", "decimal"],
        FieldType::String => &[
            "varchar",
            "char",
            "tinytext",
            "text",
            "mediumtext",
            "longtext",
        ],
        FieldType::TimestampMillis => &["datetime", "timestamp"],
    }
}

fn type_name(ty: &FieldType) -> &'static str {
    match ty {
        FieldType::Boolean => "boolean",
        FieldType::Int => "int",
        FieldType::Long => "long",
        FieldType::Float => "float",
        FieldType::Double => "double",
        FieldType::String => "string",
        FieldType::TimestampMillis => "timestamp-millis",
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The Kafka message key (UTF-8), column `_key`.
    KafkaKey,
    /// A schema field (by name).
    Field(String),
    TraceId,
    SourceTopic,
    SourcePartition,
    SourceOffset,
    LoadedAt,
}

/// One column of the target table.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub ty: FieldType,
    pub nullable: bool,
    pub source: Source,
    /// The full SQL type written in `CREATE TABLE` / `ADD COLUMN`.
    pub create_type: String,
    pub doc: Option<String>,
}

/// The target table: columns in insert order, the primary key first.
#[derive(Debug, Clone)]
pub struct Layout {
    pub table: String,
    pub columns: Vec<Column>,
}

impl Layout {
    /// The layout for a schema. Fails (naming the key) when `key_field` is not a usable key.
    pub fn new(
        schema: &RecordSchema,
        table: &str,
        key_field: Option<&str>,
        string_length: u32,
        flavor: Flavor,
    ) -> Result<Layout, SinkError> {
        let key_len = string_length.min(768); // 3072-byte InnoDB key / 4 bytes per character
        let coll = flavor.key_collation();
        for f in &schema.fields {
            if lineage::ALL.contains(&f.name.as_str()) {
                return Err(SinkError::Schema(format!(
                    "schema field `{}` has the name of a lineage column; rename the field",
                    f.name
                )));
            }
        }
        let mut columns = Vec::with_capacity(schema.fields.len() + 6);
        match key_field {
            None => columns.push(Column {
                name: lineage::KEY.into(),
                ty: FieldType::String,
                nullable: false,
                source: Source::KafkaKey,
                create_type: format!("VARCHAR(255) CHARACTER SET utf8mb4 COLLATE {coll} NOT NULL"),
                doc: Some("Kafka message key".into()),
            }),
            Some(k) => {
                let f = schema.field(k).ok_or_else(|| {
                    SinkError::Config(crate::settings::ConfigError::key(
                        "sink.key_field",
                        format!("`{k}` is not a field of schema {}", schema.name),
                    ))
                })?;
                let t = match f.ty {
                    FieldType::String => {
                        format!("VARCHAR({key_len}) CHARACTER SET utf8mb4 COLLATE {coll}")
                    }
                    FieldType::Int | FieldType::Long | FieldType::TimestampMillis => {
                        sql_type(&f.ty, string_length)
                    }
                    _ => {
                        return Err(SinkError::Config(crate::settings::ConfigError::key(
                            "sink.key_field",
                            format!(
                                "`{k}` is a {}; a key must be a string, int, long or timestamp",
                                type_name(&f.ty)
                            ),
                        )))
                    }
                };
                if f.nullable {
                    return Err(SinkError::Config(crate::settings::ConfigError::key(
                        "sink.key_field",
                        format!("`{k}` is nullable; a key field must not be"),
                    )));
                }
                columns.push(Column {
                    name: f.name.clone(),
                    ty: f.ty.clone(),
                    nullable: false,
                    source: Source::Field(f.name.clone()),
                    create_type: format!("{t} NOT NULL"),
                    doc: f.doc.clone(),
                });
            }
        }
        for f in &schema.fields {
            if Some(f.name.as_str()) == key_field {
                continue;
            }
            let null = if f.nullable { "NULL" } else { "NOT NULL" };
            columns.push(Column {
                name: f.name.clone(),
                ty: f.ty.clone(),
                nullable: f.nullable,
                source: Source::Field(f.name.clone()),
                create_type: format!("{} {null}", sql_type(&f.ty, string_length)),
                doc: f.doc.clone(),
            });
        }
        let lin = |name: &str, ty: FieldType, nullable, source, t: &str, doc: &str| Column {
            name: name.into(),
            ty,
            nullable,
            source,
            create_type: t.into(),
            doc: Some(doc.into()),
        };
        columns.push(lin(
            lineage::TRACE_ID,
            FieldType::String,
            true,
            Source::TraceId,
            "CHAR(32) CHARACTER SET ascii NULL",
            "W3C trace id (traceparent header, else the record's trace_id)",
        ));
        columns.push(lin(
            lineage::SOURCE_TOPIC,
            FieldType::String,
            false,
            Source::SourceTopic,
            "VARCHAR(249) CHARACTER SET ascii NOT NULL",
            "Kafka topic the row was read from",
        ));
        columns.push(lin(
            lineage::SOURCE_PARTITION,
            FieldType::Int,
            false,
            Source::SourcePartition,
            "INT NOT NULL",
            "Kafka partition the row was read from",
        ));
        columns.push(lin(
            lineage::SOURCE_OFFSET,
            FieldType::Long,
            false,
            Source::SourceOffset,
            "BIGINT NOT NULL",
            "Kafka offset the row was read from",
        ));
        columns.push(lin(
            lineage::LOADED_AT,
            FieldType::TimestampMillis,
            false,
            Source::LoadedAt,
            "DATETIME(3) NOT NULL",
            "When the sink wrote the row (UTC)",
        ));
        Ok(Layout {
            table: table.to_string(),
            columns,
        })
    }

    pub fn key(&self) -> &Column {
        &self.columns[0]
    }

    pub fn create_table_sql(&self) -> String {
        let mut s = format!("CREATE TABLE IF NOT EXISTS {} (\n", ident(&self.table));
        for c in &self.columns {
            let _ = write!(s, "  {} {}", ident(&c.name), c.create_type);
            if let Some(d) = &c.doc {
                let _ = write!(s, " COMMENT {}", comment_literal(d));
            }
            s.push_str(",\n");
        }
        let _ = write!(
            s,
            "  PRIMARY KEY ({})\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            ident(&self.key().name)
        );
        s
    }

    /// `INSERT INTO t (cols) VALUES ` — rows follow.
    fn insert_prefix(&self) -> String {
        let cols: Vec<String> = self.columns.iter().map(|c| ident(&c.name)).collect();
        format!(
            "INSERT INTO {} ({}) VALUES ",
            ident(&self.table),
            cols.join(",")
        )
    }

    /// The `ON DUPLICATE KEY UPDATE` tail: every column but the key takes the new value.
    fn upsert_suffix(&self, alias: bool) -> String {
        let sets: Vec<String> = self.columns[1..]
            .iter()
            .map(|c| {
                let n = ident(&c.name);
                if alias {
                    format!("{n}=new.{n}")
                } else {
                    format!("{n}=VALUES({n})")
                }
            })
            .collect();
        format!(
            "{} ON DUPLICATE KEY UPDATE {}",
            if alias { " AS new" } else { "" },
            sets.join(",")
        )
    }
}

/// A quoted identifier.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A comment literal; the session runs without NO_BACKSLASH_ESCAPES (its sql_mode is ours).
fn comment_literal(s: &str) -> String {
    let s: String = s.chars().take(1000).collect();
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

// ------------------------------------------------------------------------------------------
// Rendering rows as SQL text

/// A string literal. Safe because the session's sql_mode is ours (backslash escapes on, no
/// NO_BACKSLASH_ESCAPES) and the connection charset is utf8mb4, where no multibyte character
/// contains the bytes of `'` or `\`; NUL is escaped too.
fn push_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 8);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

fn push_datetime(out: &mut String, millis: i64) -> Result<(), String> {
    let dt = chrono::DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| format!("timestamp {millis} ms is outside any date"))?;
    let _ = write!(out, "'{}'", dt.format("%Y-%m-%d %H:%M:%S%.3f"));
    Ok(())
}

fn push_value(out: &mut String, col: &Column, v: &Value) -> Result<(), String> {
    let bad = |what: &str| format!("field `{}` ({}) holds {what}", col.name, type_name(&col.ty));
    match (&col.ty, v) {
        (_, Value::Null) => {
            if !col.nullable {
                return Err(format!("field `{}` is null but not nullable", col.name));
            }
            out.push_str("NULL");
        }
        (FieldType::Boolean, Value::Boolean(b)) => out.push(if *b { '1' } else { '0' }),
        (FieldType::Int | FieldType::Long, Value::Int(i)) => {
            let _ = write!(out, "{i}");
        }
        (FieldType::Long, Value::Long(i)) => {
            let _ = write!(out, "{i}");
        }
        (FieldType::Long, Value::TimestampMillis(i)) => {
            let _ = write!(out, "{i}");
        }
        (FieldType::Int, Value::Long(i)) => {
            if i32::try_from(*i).is_err() {
                return Err(bad(&format!("{i}, out of range for an int")));
            }
            let _ = write!(out, "{i}");
        }
        (FieldType::Float | FieldType::Double, Value::Float(f)) => {
            if !f.is_finite() {
                return Err(bad(&format!("{f}, which MySQL cannot store")));
            }
            let _ = write!(out, "{f:e}");
        }
        (FieldType::Float | FieldType::Double, Value::Double(f)) => {
            if !f.is_finite() {
                return Err(bad(&format!("{f}, which MySQL cannot store")));
            }
            let _ = write!(out, "{f:e}");
        }
        (FieldType::Float | FieldType::Double, Value::Int(i)) => {
            let _ = write!(out, "{i}");
        }
        (FieldType::Double, Value::Long(i)) => {
            let _ = write!(out, "{i}");
        }
        (FieldType::String, Value::String(s)) => push_string(out, s),
        (FieldType::TimestampMillis, Value::TimestampMillis(ms) | Value::Long(ms)) => {
            push_datetime(out, *ms).map_err(|e| bad(&e))?
        }
        (_, other) => {
            return Err(bad(&format!("a value of another type ({other:?})")));
        }
    }
    Ok(())
}

/// The per-row context that is not in the record.
pub struct RowContext<'a> {
    pub topic: &'a str,
    pub loaded_at_millis: i64,
}

/// One row rendered as `(v1,v2,...)`, with the index of its message in the batch.
#[derive(Debug, Clone)]
pub struct RowText {
    pub index: usize,
    pub text: String,
}

/// Renders a record as a row tuple, or says why it cannot be a row.
pub fn render_row(
    layout: &Layout,
    ctx: &RowContext<'_>,
    msg: &SinkMessage,
    record: &Record,
    out: &mut String,
) -> Result<(), Rejected> {
    let reject = |kind, message| Rejected {
        index: 0,
        kind,
        message,
    };
    out.push('(');
    for (i, col) in layout.columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match &col.source {
            Source::KafkaKey => {
                let k = msg
                    .key_str()
                    .map_err(|e| reject("missing_key", e.to_string()))?;
                push_string(out, k);
            }
            Source::Field(name) => {
                let v = record.get(name).unwrap_or(&Value::Null);
                push_value(out, col, v).map_err(|e| reject("invalid_record", e))?;
            }
            Source::TraceId => match msg.trace_id(Some(record)) {
                Some(t) => {
                    out.push('\'');
                    out.push_str(&t);
                    out.push('\'');
                }
                None => out.push_str("NULL"),
            },
            Source::SourceTopic => push_string(out, ctx.topic),
            Source::SourcePartition => {
                let _ = write!(out, "{}", msg.partition);
            }
            Source::SourceOffset => {
                let _ = write!(out, "{}", msg.offset);
            }
            Source::LoadedAt => {
                push_datetime(out, ctx.loaded_at_millis).map_err(|e| reject("invalid_record", e))?
            }
        }
    }
    out.push(')');
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Errors

/// How a MySQL error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Back off and retry the whole transaction.
    Retriable,
    /// The rows themselves are bad: split the statement to find them, dead-letter them.
    Data,
    /// Retrying will not help and it is not the rows' fault: stop the stage.
    Fatal,
}

/// Sorts a MySQL / MariaDB server error number.
pub fn classify_number(n: u16) -> ErrorClass {
    match n {
        // lock wait timeout, deadlock, too many connections, server shutdown, network
        // read/write errors, query interrupted/killed, commit/rollback failed, too many
        // transactions, read-only (failover in progress), MariaDB statement timeout and
        // connection killed, MySQL query timeout, client idle disconnect.
        1205 | 1213 | 1040 | 1053 | 1077 | 1152 | 1154 | 1155 | 1156 | 1157 | 1158 | 1159
        | 1160 | 1161 | 1180 | 1181 | 1203 | 1317 | 1290 | 1637 | 1792 | 1836 | 1927 | 1969
        | 2002 | 2003 | 2006 | 2013 | 3024 | 4031 => ErrorClass::Retriable,
        // data too long, out of range, incorrect value, null in NOT NULL, data truncated,
        // illegal value, incorrect value for function, value out of range, invalid
        // character string, foreign key failures, duplicate on a secondary unique key,
        // CHECK constraints (MariaDB 4025, MySQL 3819), invalid JSON, row size too large.
        1406 | 1264 | 1292 | 1366 | 1048 | 1265 | 1367 | 1411 | 1690 | 1300 | 1451 | 1452
        | 1062 | 1216 | 1217 | 4025 | 3819 | 3140 | 1118 | 1263 | 1138 => ErrorClass::Data,
        _ => ErrorClass::Fatal,
    }
}

/// Sorts any sqlx error.
pub fn classify(e: &sqlx::Error) -> (ErrorClass, String) {
    match e {
        sqlx::Error::Database(db) => match db.try_downcast_ref::<MySqlDatabaseError>() {
            Some(m) => (
                classify_number(m.number()),
                format!("MySQL error {}: {}", m.number(), m.message()),
            ),
            None => (ErrorClass::Fatal, db.to_string()),
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => (ErrorClass::Retriable, e.to_string()),
        _ => (ErrorClass::Fatal, e.to_string()),
    }
}

fn sink_error(what: &'static str, e: &sqlx::Error) -> SinkError {
    let (class, message) = classify(e);
    match class {
        ErrorClass::Retriable => SinkError::Retriable { what, message },
        _ => SinkError::Fatal { what, message },
    }
}

/// The 1-based row number MySQL names in a data error ("... at row 3").
fn row_hint(message: &str) -> Option<usize> {
    let at = message.rfind(" at row ")?;
    message[at + 8..]
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

// ------------------------------------------------------------------------------------------
// The sink

/// A connected MySQL sink: pool, layout and statement limits.
pub struct MysqlSink {
    pool: MySqlPool,
    layout: Arc<Layout>,
    flavor: Flavor,
    offsets_table: String,
    group: String,
    insert_prefix: String,
    upsert_suffix: String,
    max_rows: usize,
    max_bytes: usize,
    sink: SinkConfig,
    codec: Arc<super::RecordDecoder>,
    dead_letters: Option<DeadLetters>,
}

/// Opens a pool whose sessions are strict, UTC and READ COMMITTED.
pub async fn connect(cfg: &MysqlConfig, connections: u32) -> Result<MySqlPool, SinkError> {
    let password = cfg.password.resolve("mysql.password")?;
    let opts = MySqlConnectOptions::new()
        .host(&cfg.host)
        .port(cfg.port)
        .username(&cfg.user)
        .password(password.expose())
        .database(&cfg.database)
        .charset("utf8mb4")
        .timezone(Some("+00:00".to_string()))
        // Statements carry whole batches of data: never into the logs.
        .disable_statement_logging();
    MySqlPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                sqlx::Executor::execute(&mut *conn, SESSION_SETUP).await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await
        .map_err(|e| {
            let (class, message) = classify(&e);
            let message = format!(
                "{message} (mysql://{}@{}:{}/{})",
                cfg.user, cfg.host, cfg.port, cfg.database
            );
            match class {
                ErrorClass::Retriable => SinkError::Retriable {
                    what: "connecting to MySQL",
                    message,
                },
                _ => SinkError::Fatal {
                    what: "connecting to MySQL",
                    message,
                },
            }
        })
}

/// A column as `information_schema` describes it.
#[derive(Debug, Clone)]
struct ExistingColumn {
    data_type: String,
    column_type: String,
    nullable: bool,
    has_default: bool,
    generated: bool,
}

async fn existing_columns(
    pool: &MySqlPool,
    table: &str,
) -> Result<Option<(BTreeMap<String, ExistingColumn>, Vec<String>)>, SinkError> {
    let rows = sqlx::query(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), CAST(COLUMN_TYPE AS CHAR), \
         CAST(IS_NULLABLE AS CHAR), COLUMN_DEFAULT IS NOT NULL, CAST(EXTRA AS CHAR) \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(|e| sink_error("reading the table's columns", &e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut cols = BTreeMap::new();
    for r in rows {
        let name: String = r
            .try_get(0)
            .map_err(|e| sink_error("reading columns", &e))?;
        let extra: String = r.try_get(5).unwrap_or_default();
        let nullable: String = r.try_get(3).unwrap_or_default();
        let has_default: bool = r.try_get::<i64, _>(4).map(|v| v != 0).unwrap_or(false);
        cols.insert(
            name,
            ExistingColumn {
                data_type: r
                    .try_get::<String, _>(1)
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
                column_type: r.try_get::<String, _>(2).unwrap_or_default(),
                nullable: nullable.eq_ignore_ascii_case("YES"),
                has_default,
                generated: extra.to_ascii_lowercase().contains("auto_increment")
                    || extra.to_ascii_lowercase().contains("generated"),
            },
        );
    }
    let pk: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.KEY_COLUMN_USAGE \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(|e| sink_error("reading the table's primary key", &e))?;
    Ok(Some((cols, pk)))
}

/// What to do with an existing table: the columns to add, or every mismatch found.
fn plan_existing(
    layout: &Layout,
    cols: &BTreeMap<String, ExistingColumn>,
    pk: &[String],
) -> Result<Vec<Column>, Vec<String>> {
    let mut problems = Vec::new();
    let mut add = Vec::new();
    for c in &layout.columns {
        match cols.get(&c.name) {
            None if c.nullable && matches!(c.source, Source::Field(_)) => add.push(c.clone()),
            None => problems.push(format!(
                "column `{}` is missing{}",
                c.name,
                if matches!(c.source, Source::Field(_)) {
                    " and the field is not nullable, so it cannot be added to existing rows"
                } else {
                    " (a lineage column)"
                }
            )),
            Some(e) => {
                let ok = accepted_types(&c.ty);
                if !ok.contains(&e.data_type.as_str()) {
                    problems.push(format!(
                        "column `{}` is {} but field `{}` ({}) needs one of {}",
                        c.name,
                        e.column_type,
                        c.name,
                        type_name(&c.ty),
                        ok.join(", ").to_ascii_uppercase()
                    ));
                }
                if c.nullable && !e.nullable {
                    problems.push(format!(
                        "column `{}` is NOT NULL but the field is nullable",
                        c.name
                    ));
                }
            }
        }
    }
    for (name, e) in cols {
        let known = layout.columns.iter().any(|c| &c.name == name);
        if !known && !e.nullable && !e.has_default && !e.generated {
            problems.push(format!(
                "column `{name}` is not in the schema and is NOT NULL without a default, so no row could be inserted"
            ));
        }
    }
    if pk != [layout.key().name.clone()] {
        problems.push(format!(
            "the primary key is ({}) but must be ({})",
            pk.join(", "),
            layout.key().name
        ));
    }
    if problems.is_empty() {
        Ok(add)
    } else {
        Err(problems)
    }
}

/// Creates the table, or checks it and adds the columns of new nullable fields.
pub async fn ensure_table(pool: &MySqlPool, layout: &Layout) -> Result<(), SinkError> {
    match existing_columns(pool, &layout.table).await? {
        None => {
            sqlx::Executor::execute(pool, layout.create_table_sql().as_str())
                .await
                .map_err(|e| sink_error("creating the table", &e))?;
            tracing::info!(table = %layout.table, columns = layout.columns.len(), "created table");
        }
        Some((cols, pk)) => match plan_existing(layout, &cols, &pk) {
            Ok(add) if add.is_empty() => {}
            Ok(add) => {
                let parts: Vec<String> = add
                    .iter()
                    .map(|c| format!("ADD COLUMN {} {}", ident(&c.name), c.create_type))
                    .collect();
                let sql = format!("ALTER TABLE {} {}", ident(&layout.table), parts.join(", "));
                sqlx::Executor::execute(pool, sql.as_str())
                .await
                .map_err(|e| sink_error("adding columns", &e))?;
                let names: Vec<&str> = add.iter().map(|c| c.name.as_str()).collect();
                tracing::info!(table = %layout.table, added = ?names, "added columns for new nullable schema fields");
            }
            Err(problems) => {
                return Err(SinkError::Schema(format!(
                    "table `{}` does not match the schema: {}. Alter or drop the table, or point sink.mysql.table at another one",
                    layout.table,
                    problems.join("; ")
                )))
            }
        },
    }
    Ok(())
}

/// Creates the offsets table if absent.
pub async fn ensure_offsets_table(pool: &MySqlPool, table: &str) -> Result<(), SinkError> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {} (\n\
           consumer_group VARCHAR(255) NOT NULL,\n\
           topic VARCHAR(249) NOT NULL,\n\
           partition_id INT NOT NULL,\n\
           next_offset BIGINT NOT NULL COMMENT 'offset of the next record to write',\n\
           updated_at DATETIME(3) NOT NULL,\n\
           PRIMARY KEY (consumer_group, topic, partition_id)\n\
         ) ENGINE=InnoDB DEFAULT CHARSET=ascii COLLATE=ascii_bin",
        ident(table)
    );
    sqlx::Executor::execute(pool, sql.as_str())
        .await
        .map_err(|e| sink_error("creating the offsets table", &e))?;
    Ok(())
}

/// The stored next offsets of a topic's partitions for a consumer group.
pub async fn stored_offsets(
    pool: &MySqlPool,
    offsets_table: &str,
    group: &str,
    topic: &str,
) -> Result<HashMap<i32, i64>, SinkError> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(&format!(
        "SELECT partition_id, next_offset FROM {} WHERE consumer_group = ? AND topic = ?",
        ident(offsets_table)
    ))
    .bind(group)
    .bind(topic)
    .fetch_all(pool)
    .await
    .map_err(|e| sink_error("reading stored offsets", &e))?;
    Ok(rows.into_iter().collect())
}

/// Sets the stored next offsets of a topic's partitions (what `replay` does for sink-mysql);
/// the sink must not be running.
pub async fn store_offsets(
    pool: &MySqlPool,
    offsets_table: &str,
    group: &str,
    topic: &str,
    offsets: &HashMap<i32, i64>,
) -> Result<(), SinkError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| sink_error("beginning a transaction", &e))?;
    for (p, o) in offsets {
        sqlx::query(&format!(
            "INSERT INTO {} (consumer_group, topic, partition_id, next_offset, updated_at) \
             VALUES (?, ?, ?, ?, UTC_TIMESTAMP(3)) \
             ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset), updated_at = VALUES(updated_at)",
            ident(offsets_table)
        ))
        .bind(group)
        .bind(topic)
        .bind(p)
        .bind(o)
        .execute(&mut *tx)
        .await
        .map_err(|e| sink_error("storing offsets", &e))?;
    }
    tx.commit()
        .await
        .map_err(|e| sink_error("committing offsets", &e))
}

/// A batch made ready for the database: rows rendered, bad records already rejected.
pub struct Prepared {
    pub rows: Vec<RowText>,
    pub rejected: Vec<Rejected>,
}

impl MysqlSink {
    /// Connects, creates or checks the tables and works out the statement limits.
    pub async fn new(
        cfg: &Common,
        sink: &SinkConfig,
        db: &MysqlConfig,
        schema: &RecordSchema,
        codec: Arc<super::RecordDecoder>,
        dead_letters: Option<DeadLetters>,
    ) -> Result<MysqlSink, SinkError> {
        let sink = sink.clone();
        let pool = connect(db, sink.mysql.connections + 1).await?;
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&pool)
            .await
            .map_err(|e| sink_error("asking the server version", &e))?;
        let flavor = Flavor::parse(&version);
        let table = sink
            .mysql
            .table
            .clone()
            .unwrap_or_else(|| super::default_target_name(schema));
        let layout = Layout::new(
            schema,
            &table,
            sink.key_field.as_deref(),
            sink.mysql.string_length,
            flavor,
        )?;
        ensure_table(&pool, &layout).await?;
        ensure_offsets_table(&pool, &sink.mysql.offsets_table).await?;
        let packet: i64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
            .fetch_one(&pool)
            .await
            .map_err(|e| sink_error("reading max_allowed_packet", &e))?;
        let alias = match sink.mysql.upsert_syntax {
            UpsertSyntax::Auto => flavor.supports_row_alias(),
            UpsertSyntax::Values => false,
            UpsertSyntax::Alias => {
                if !flavor.supports_row_alias() {
                    return Err(SinkError::Config(crate::settings::ConfigError::key(
                        "sink.mysql.upsert_syntax",
                        format!("`alias` needs MySQL >= 8.0.19; the server is {version}"),
                    )));
                }
                true
            }
        };
        let insert_prefix = layout.insert_prefix();
        let upsert_suffix = layout.upsert_suffix(alias);
        let overhead = insert_prefix.len() + upsert_suffix.len() + 1024;
        let max_bytes = sink
            .mysql
            .max_statement_bytes
            .min(
                usize::try_from(packet)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(overhead),
            )
            .saturating_sub(insert_prefix.len() + upsert_suffix.len())
            .max(1024);
        let max_rows = sink
            .mysql
            .rows_per_statement
            .min(MAX_PLACEHOLDERS / layout.columns.len())
            .max(1);
        tracing::info!(
            server = %version,
            table = %layout.table,
            upsert = if alias { "AS new" } else { "VALUES()" },
            max_rows,
            max_bytes,
            "mysql sink ready"
        );
        Ok(MysqlSink {
            pool,
            layout: Arc::new(layout),
            flavor,
            offsets_table: sink.mysql.offsets_table.clone(),
            group: cfg.pipeline.group_id(STAGE),
            insert_prefix,
            upsert_suffix,
            max_rows,
            max_bytes,
            sink,
            codec,
            dead_letters,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Decodes and renders a batch (CPU work, off the poll thread).
    pub async fn prepare(&self, topic: &str, msgs: &[SinkMessage]) -> Result<Prepared, SinkError> {
        let ctx = RowContext {
            topic,
            loaded_at_millis: chrono::Utc::now().timestamp_millis(),
        };
        let mut rows = Vec::with_capacity(msgs.len());
        let mut rejected = Vec::new();
        super::decode_each(&*self.codec, msgs, |index, m, d| {
            match d.and_then(|record| self.render(&ctx, index, m, &record)) {
                Ok(row) => rows.push(row),
                Err(r) => rejected.push(r),
            }
        })
        .await?;
        Ok(Prepared { rows, rejected })
    }

    /// Renders one decoded record (also used by tests that bypass Kafka).
    pub fn render(
        &self,
        ctx: &RowContext<'_>,
        index: usize,
        msg: &SinkMessage,
        record: &Record,
    ) -> Result<RowText, Rejected> {
        let mut text = String::with_capacity(256);
        match render_row(&self.layout, ctx, msg, record, &mut text) {
            Ok(()) if text.len() > self.max_bytes => Err(Rejected {
                index,
                kind: "mysql_data",
                message: format!(
                    "the row is {} bytes of SQL, above the statement limit of {} (max_allowed_packet)",
                    text.len(),
                    self.max_bytes
                ),
            }),
            Ok(()) => Ok(RowText { index, text }),
            Err(mut r) => {
                r.index = index;
                Err(r)
            }
        }
    }

    fn statement(&self, rows: &[RowText]) -> String {
        let len: usize = rows.iter().map(|r| r.text.len() + 1).sum();
        let mut s =
            String::with_capacity(self.insert_prefix.len() + len + self.upsert_suffix.len());
        s.push_str(&self.insert_prefix);
        for (i, r) in rows.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&r.text);
        }
        s.push_str(&self.upsert_suffix);
        s
    }

    /// Cuts rows into statements under the row and byte limits.
    fn chunks<'a>(&self, rows: &'a [RowText]) -> Vec<&'a [RowText]> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut bytes = 0;
        for (i, r) in rows.iter().enumerate() {
            let n = i - start;
            if n > 0 && (n >= self.max_rows || bytes + r.text.len() + 1 > self.max_bytes) {
                out.push(&rows[start..i]);
                start = i;
                bytes = 0;
            }
            bytes += r.text.len() + 1;
        }
        if start < rows.len() {
            out.push(&rows[start..]);
        }
        out
    }

    /// Inserts rows in order; rows MySQL rejects as data are found by splitting the failing
    /// statement (MySQL's "at row N" first, halves otherwise) and returned as rejected. Any
    /// other error ends the attempt. A failed statement is rolled back by InnoDB on its own,
    /// so the transaction goes on.
    pub async fn insert_rows(
        &self,
        conn: &mut MySqlConnection,
        rows: &[RowText],
        rejected: &mut Vec<Rejected>,
    ) -> Result<usize, SinkError> {
        let mut statements = 0;
        for chunk in self.chunks(rows) {
            // A stack of slices still to write, the next one on top: order is kept.
            let mut stack: Vec<&[RowText]> = vec![chunk];
            while let Some(part) = stack.pop() {
                statements += 1;
                let sql = self.statement(part);
                // A plain string without arguments goes as a text-protocol COM_QUERY.
                let err = match sqlx::Executor::execute(&mut *conn, sql.as_str()).await {
                    Ok(_) => continue,
                    Err(e) => e,
                };
                let (class, message) = classify(&err);
                match class {
                    ErrorClass::Data if part.len() == 1 => rejected.push(Rejected {
                        index: part[0].index,
                        kind: "mysql_data",
                        message,
                    }),
                    ErrorClass::Data => match row_hint(&message) {
                        Some(n) if n >= 1 && n <= part.len() => {
                            if n < part.len() {
                                stack.push(&part[n..]);
                            }
                            stack.push(&part[n - 1..n]);
                            if n > 1 {
                                stack.push(&part[..n - 1]);
                            }
                        }
                        _ => {
                            let mid = part.len() / 2;
                            stack.push(&part[mid..]);
                            stack.push(&part[..mid]);
                        }
                    },
                    ErrorClass::Retriable => {
                        return Err(SinkError::Retriable {
                            what: "inserting rows",
                            message,
                        })
                    }
                    ErrorClass::Fatal => {
                        return Err(SinkError::Fatal {
                            what: "inserting rows",
                            message,
                        })
                    }
                }
            }
        }
        Ok(statements)
    }

    /// One attempt at a batch: the whole transaction.
    async fn attempt(
        &self,
        batch: &Batch,
        prepared: &Prepared,
        next_offset: i64,
    ) -> Result<Outcome, SinkError> {
        let started = Instant::now();
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| sink_error("getting a connection", &e))?;
        let mut tx = conn
            .begin()
            .await
            .map_err(|e| sink_error("beginning a transaction", &e))?;
        let stored: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT next_offset FROM {} WHERE consumer_group = ? AND topic = ? AND partition_id = ? FOR UPDATE",
            ident(&self.offsets_table)
        ))
        .bind(&self.group)
        .bind(&*batch.topic)
        .bind(batch.partition)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| sink_error("locking the partition's offset", &e))?;
        if stored != batch.expected {
            let _ = tx.rollback().await;
            return Ok(Outcome::Fenced { stored });
        }
        let mut rejected = prepared.rejected.clone();
        self.insert_rows(&mut tx, &prepared.rows, &mut rejected)
            .await?;
        if !rejected.is_empty() {
            rejected.sort_by_key(|r| r.index);
            match &self.dead_letters {
                Some(dl) => dl.send(&batch.topic, &batch.messages, &rejected).await?,
                None => {
                    return Err(SinkError::Fatal {
                        what: "dead-lettering",
                        message: "no dead-letter producer".into(),
                    })
                }
            }
        }
        sqlx::query(&format!(
            "INSERT INTO {} (consumer_group, topic, partition_id, next_offset, updated_at) \
             VALUES (?, ?, ?, ?, UTC_TIMESTAMP(3)) \
             ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset), updated_at = VALUES(updated_at)",
            ident(&self.offsets_table)
        ))
        .bind(&self.group)
        .bind(&*batch.topic)
        .bind(batch.partition)
        .bind(next_offset)
        .execute(&mut *tx)
        .await
        .map_err(|e| sink_error("storing the offset", &e))?;
        tx.commit()
            .await
            .map_err(|e| sink_error("committing", &e))?;
        metrics::histogram!(metric::TRANSACTION_SECONDS).record(started.elapsed().as_secs_f64());
        let dead = rejected.len();
        Ok(Outcome::Written {
            next_offset,
            rows: batch.messages.len() - dead,
            dead_letters: dead,
        })
    }
}

impl BatchWriter for MysqlSink {
    const STAGE: &'static str = STAGE;
    const OFFSETS_IN_KAFKA: bool = false;

    async fn start_offsets(
        &self,
        topic: &str,
        _partitions: &[i32],
    ) -> Result<Option<HashMap<i32, i64>>, SinkError> {
        stored_offsets(&self.pool, &self.offsets_table, &self.group, topic)
            .await
            .map(Some)
    }

    async fn write(&self, batch: Batch, stop: CancellationToken) -> Result<Outcome, SinkError> {
        let Some(last) = batch.messages.last() else {
            return Ok(Outcome::Written {
                next_offset: batch.expected.unwrap_or(0),
                rows: 0,
                dead_letters: 0,
            });
        };
        let next_offset = last.offset + 1;
        let prepared = super::retry(
            "decoding a batch",
            self.sink.retry_max_backoff,
            &stop,
            || self.prepare(&batch.topic, &batch.messages),
        )
        .await?;
        super::retry(
            "writing a batch to MySQL",
            self.sink.retry_max_backoff,
            &stop,
            || async {
                let r = self.attempt(&batch, &prepared, next_offset).await;
                if r.is_err() {
                    metrics::counter!(metric::TRANSACTION_ABORTS).increment(1);
                }
                r
            },
        )
        .await
    }
}

/// `etl-pipe sink-mysql`: runs until `shutdown`, then finishes the batches in hand.
pub async fn run(
    cfg: &Common,
    sink: &SinkConfig,
    db: &MysqlConfig,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    let (schema, codec) = super::load_codec(cfg, sink).await?;
    run_with(cfg, sink, db, schema, codec, shutdown).await
}

/// [`run`] with a given schema and decoder.
pub async fn run_with(
    cfg: &Common,
    sink: &SinkConfig,
    db: &MysqlConfig,
    schema: RecordSchema,
    codec: Arc<super::RecordDecoder>,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    batch::connect_and_drive(cfg, sink, "connecting to MySQL", shutdown, |dl| {
        MysqlSink::new(cfg, sink, db, &schema, codec.clone(), Some(dl))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::FieldSchema;

    fn schema() -> RecordSchema {
        let f = |name: &str, ty: FieldType, nullable: bool| FieldSchema {
            name: name.into(),
            ty,
            nullable,
            doc: None,
            default: None,
        };
        RecordSchema {
            name: "etl.league.LeagueEntry".into(),
            fields: vec![
                f("summoner_id", FieldType::String, false),
                f("wins", FieldType::Int, false),
                f("win_rate", FieldType::Double, true),
                f("fetched_at", FieldType::TimestampMillis, false),
            ],
            source: String::new(),
        }
    }

    #[test]
    fn flavor_and_upsert_form() {
        assert_eq!(Flavor::parse("10.11.6-MariaDB-0+deb12u1"), Flavor::MariaDb);
        assert!(!Flavor::MariaDb.supports_row_alias());
        assert!(Flavor::parse("8.4.3").supports_row_alias());
        assert!(!Flavor::parse("8.0.18-log").supports_row_alias());
        let l = Layout::new(&schema(), "t", None, 255, Flavor::MariaDb).unwrap();
        assert!(l
            .upsert_suffix(false)
            .starts_with(" ON DUPLICATE KEY UPDATE `summoner_id`=VALUES(`summoner_id`)"));
        assert!(l
            .upsert_suffix(true)
            .starts_with(" AS new ON DUPLICATE KEY UPDATE `summoner_id`=new.`summoner_id`"));
    }

    #[test]
    fn create_table_maps_types_and_key() {
        let l = Layout::new(&schema(), "t", Some("summoner_id"), 100, Flavor::MariaDb).unwrap();
        let sql = l.create_table_sql();
        assert!(sql.contains("`summoner_id` VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL"), "{sql}");
        assert!(sql.contains("`wins` INT NOT NULL"), "{sql}");
        assert!(sql.contains("`win_rate` DOUBLE NULL"), "{sql}");
        assert!(sql.contains("`fetched_at` DATETIME(3) NOT NULL"), "{sql}");
        assert!(sql.contains("PRIMARY KEY (`summoner_id`)"), "{sql}");
        assert!(sql.contains("`_loaded_at` DATETIME(3) NOT NULL"), "{sql}");
        assert!(Layout::new(&schema(), "t", Some("win_rate"), 100, Flavor::MariaDb).is_err());
        assert!(Layout::new(&schema(), "t", Some("nope"), 100, Flavor::MariaDb).is_err());
    }

    #[test]
    fn rows_render_as_safe_literals() {
        let l = Layout::new(&schema(), "t", None, 255, Flavor::MariaDb).unwrap();
        let msg = SinkMessage {
            partition: 2,
            offset: 7,
            key: Some(b"k'1".to_vec()),
            payload: None,
            headers: None,
        };
        let mut r = Record::new();
        r.set("summoner_id", Value::String("a'b\\c".into()));
        r.set("wins", Value::Int(3));
        r.set("win_rate", Value::Null);
        r.set("fetched_at", Value::TimestampMillis(1_700_000_000_123));
        let ctx = RowContext {
            topic: "s",
            loaded_at_millis: 0,
        };
        let mut out = String::new();
        render_row(&l, &ctx, &msg, &r, &mut out).unwrap();
        assert_eq!(
            out,
            r"('k\'1','a\'b\\c',3,NULL,'2023-11-14 22:13:20.123',NULL,'s',2,7,'1970-01-01 00:00:00.000')"
        );
        r.set("win_rate", Value::Double(f64::NAN));
        let e = render_row(&l, &ctx, &msg, &r, &mut String::new()).unwrap_err();
        assert_eq!(e.kind, "invalid_record");
        r.set("win_rate", Value::Double(0.5));
        let no_key = SinkMessage { key: None, ..msg };
        let e = render_row(&l, &ctx, &no_key, &r, &mut String::new()).unwrap_err();
        assert_eq!(e.kind, "missing_key");
    }

    #[test]
    fn errors_are_sorted() {
        assert_eq!(classify_number(1213), ErrorClass::Retriable);
        assert_eq!(classify_number(1205), ErrorClass::Retriable);
        assert_eq!(classify_number(1406), ErrorClass::Data);
        assert_eq!(classify_number(1264), ErrorClass::Data);
        assert_eq!(classify_number(1146), ErrorClass::Fatal);
        assert_eq!(
            row_hint("Data too long for column 'tier' at row 37"),
            Some(37)
        );
        assert_eq!(row_hint("Column 'x' cannot be null"), None);
    }

    #[test]
    fn existing_table_mismatch_is_explained() {
        let l = Layout::new(&schema(), "t", None, 255, Flavor::MariaDb).unwrap();
        let mut cols = BTreeMap::new();
        for c in &l.columns {
            cols.insert(
                c.name.clone(),
                ExistingColumn {
                    data_type: accepted_types(&c.ty)[0].into(),
                    column_type: accepted_types(&c.ty)[0].into(),
                    nullable: c.nullable,
                    has_default: false,
                    generated: false,
                },
            );
        }
        let pk = vec!["_key".to_string()];
        assert!(plan_existing(&l, &cols, &pk).unwrap().is_empty());
        cols.remove("win_rate");
        let add = plan_existing(&l, &cols, &pk).unwrap();
        assert_eq!(add[0].name, "win_rate");
        cols.get_mut("wins").unwrap().data_type = "varchar".into();
        cols.get_mut("wins").unwrap().column_type = "varchar(10)".into();
        let err = plan_existing(&l, &cols, &pk).unwrap_err().join("; ");
        assert!(err.contains("column `wins` is varchar(10)"), "{err}");
    }
}
