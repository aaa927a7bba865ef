//! [`MysqlSink`], the writer: connects and readies the tables, turns a batch into rendered
//! rows off the poll thread, and writes each batch as one transaction: lock and check the
//! partition's offset (the fence), insert the rows (splitting out the ones MySQL rejects as
//! data), send their dead letters, store the new offset, commit.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use sqlx::mysql::MySqlConnection;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, MySql, MySqlPool, Transaction};
use tokio_util::sync::CancellationToken;

use super::bound::{arguments, BoundRow};
use super::cutoff::{Bound, ServerConn};
use super::ddl::ensure_table;
use super::errors::{classify, row_hint, sink_error, ErrorClass};
use super::layout::Layout;
use super::offsets::{ensure_offsets_table, lock_offset, stored_offsets_on, write_offset};
use super::server::{connect, max_allowed_packet, row_alias, server_version, Flavor};
use super::sql::{render_row, row_params, Row, RowBody, RowContext, Statements};
use super::{MysqlConfig, STAGE};
use crate::record::{Record, RecordSchema};
use crate::settings::Common;
use crate::stages::sinks::batch::{Batch, BatchWriter, Outcome};
use crate::stages::sinks::{
    check_rejected_share, decode_each, default_target_name, metric, report_db, retry,
    version_field, Connect, DeadLetters, Phases, RecordDecoder, Rejected, SentDeadLetters,
    SinkConfig, SinkError, SinkMessage, StatementProtocol,
};

/// A connected MySQL sink: pool, layout and statement limits.
pub struct MysqlSink {
    pool: MySqlPool,
    layout: Arc<Layout>,
    flavor: Flavor,
    offsets_table: String,
    group: String,
    statements: Statements,
    sink: SinkConfig,
    codec: Arc<RecordDecoder>,
    dead_letters: Option<DeadLetters>,
    /// The longest row text rendered so far (bytes): each row's text starts with this
    /// capacity instead of growing from a guess (reallocations were a tenth of the rendering).
    row_bytes: std::sync::atomic::AtomicUsize,
    /// Every call to MySQL bounded by `sink.mysql.write_timeout` ([`super::cutoff`]).
    bound: Bound,
}

/// A batch made ready for the database: rows rendered, bad records already rejected.
pub struct Prepared {
    pub rows: Vec<Row>,
    pub rejected: Vec<Rejected>,
}

impl MysqlSink {
    /// Connects, creates or checks the tables and works out the statement limits.
    pub async fn new(
        cfg: &Common,
        sink: &SinkConfig,
        db: &MysqlConfig,
        schema: &RecordSchema,
        codec: Arc<RecordDecoder>,
        dead_letters: Option<DeadLetters>,
    ) -> Result<MysqlSink, SinkError> {
        let sink = sink.clone();
        let pool = connect(db, sink.mysql.connections + 1).await?;
        let version = server_version(&pool).await?;
        let flavor = Flavor::parse(&version);
        let table = sink
            .mysql
            .table
            .clone()
            .unwrap_or_else(|| default_target_name(schema));
        let layout = Layout::with_flatten(
            schema,
            &table,
            sink.key_field.as_deref(),
            sink.mysql.string_length,
            flavor,
            &sink.mysql.flatten,
        )?;
        ensure_table(&pool, &layout).await?;
        ensure_offsets_table(&pool, &sink.mysql.offsets_table).await?;
        let packet = max_allowed_packet(&pool).await?;
        let alias = row_alias(sink.mysql.upsert_syntax, flavor, &version)?;
        let version_col = version_field(schema, &sink)?;
        let statements =
            Statements::new(&layout, alias, version_col.as_deref(), packet, &sink.mysql);
        tracing::info!(
            server = %version,
            table = %layout.table,
            upsert = if alias { "AS new" } else { "VALUES()" },
            version = version_col.as_deref().unwrap_or("(none: last write wins)"),
            max_rows = statements.max_rows,
            max_bytes = statements.max_bytes,
            "mysql sink ready"
        );
        let bound = Bound::new(pool.clone(), sink.mysql.write_timeout);
        Ok(MysqlSink {
            pool,
            layout: Arc::new(layout),
            flavor,
            offsets_table: sink.mysql.offsets_table.clone(),
            group: cfg.pipeline.group_id(STAGE),
            statements,
            sink,
            codec,
            dead_letters,
            row_bytes: std::sync::atomic::AtomicUsize::new(256),
            bound,
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
        decode_each(&*self.codec, msgs, |index, m, d| {
            match d.and_then(|record| self.render(&ctx, index, m, &record)) {
                Ok(row) => rows.push(row),
                Err(r) => rejected.push(r),
            }
        })
        .await?;
        Ok(Prepared { rows, rejected })
    }

    /// Renders one decoded record in the sink's protocol (also used by tests that bypass
    /// Kafka).
    pub fn render(
        &self,
        ctx: &RowContext<'_>,
        index: usize,
        msg: &SinkMessage,
        record: &Record,
    ) -> Result<Row, Rejected> {
        use std::sync::atomic::Ordering::Relaxed;
        let hint = self.row_bytes.load(Relaxed);
        let (rendered, body, text_len) = match self.sink.mysql.protocol {
            StatementProtocol::Text => {
                let mut text = String::with_capacity(hint);
                let r = render_row(&self.layout, ctx, msg, record, &mut text);
                let len = text.len();
                (r, RowBody::Text(text), len)
            }
            StatementProtocol::Binary => {
                let mut row = BoundRow::with_capacity(hint);
                let r = row_params(&self.layout, ctx, msg, record, |p| row.push(p));
                let len = row.data_len();
                (r, RowBody::Bound(row), len)
            }
        };
        let row = Row { index, body };
        let bytes = row.bytes();
        if bytes <= self.statements.max_bytes {
            self.row_bytes.fetch_max(text_len, Relaxed);
        }
        match rendered {
            Ok(()) if bytes > self.statements.max_bytes => Err(Rejected {
                index,
                kind: "mysql_data",
                message: format!(
                    "the row is {bytes} bytes, above the statement limit of {} (max_allowed_packet)",
                    self.statements.max_bytes
                ),
            }),
            Ok(()) => Ok(row),
            Err(mut r) => {
                r.index = index;
                Err(r)
            }
        }
    }

    /// Inserts rows in order; rows MySQL rejects as data are found by splitting the failing
    /// statement (MySQL's "at row N" first, halves otherwise) and returned as rejected. Any
    /// other error ends the attempt. A failed statement is rolled back by InnoDB on its own,
    /// so the transaction goes on.
    pub async fn insert_rows(
        &self,
        conn: &mut MySqlConnection,
        rows: &[Row],
        rejected: &mut Vec<Rejected>,
    ) -> Result<usize, SinkError> {
        let mut statements = 0;
        for chunk in self.statements.chunks(rows) {
            // A stack of slices still to write, the next one on top: order is kept.
            let mut stack: Vec<&[Row]> = vec![chunk];
            while let Some(part) = stack.pop() {
                // Bound rows go in statements of a few shapes only (`Statements::piece`).
                let take = self.statements.piece(part);
                if take < part.len() {
                    stack.push(&part[take..]);
                    stack.push(&part[..take]);
                    continue;
                }
                statements += 1;
                let sql = self.statements.statement(part);
                let args = arguments(part, self.layout.columns.len()).map_err(|message| {
                    SinkError::Fatal {
                        what: "binding a statement's values",
                        message,
                    }
                })?;
                // Text rows: a plain string without arguments goes as a text-protocol
                // COM_QUERY. Bound rows: prepared once per connection and shape (sqlx's
                // statement cache), then executed with the values.
                let done = match args {
                    None => sqlx::Executor::execute(&mut *conn, sql.as_str()).await,
                    Some(args) => sqlx::query_with(&sql, args).execute(&mut *conn).await,
                };
                let err = match done {
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

    /// One attempt at a batch: the whole transaction. `sent` holds the dead letters earlier
    /// attempts at the same batch already sent. Each call to MySQL is bounded
    /// ([`super::cutoff`]); waiting for the dead letters' delivery is not.
    async fn attempt(
        &self,
        batch: &Batch,
        prepared: &Prepared,
        next_offset: i64,
        sent: &SentDeadLetters,
    ) -> Result<Outcome, SinkError> {
        let started = Instant::now();
        let mut phase = Phases::new();
        let b = &self.bound;
        let mut conn = b.acquire().await?;
        phase.end("acquire");
        let server = conn.server.clone();
        let what = "writing a batch to MySQL";
        let (mut tx, stored) = self
            .begin_fenced(&mut conn.conn, &server, what, &batch.topic, batch.partition)
            .await?;
        if stored != batch.expected {
            conn.finished = self.roll_back(tx, &server, what).await;
            return Ok(Outcome::Fenced { stored });
        }
        let (table, group) = (&self.offsets_table, &self.group);
        phase.end("fence");
        let mut rejected = prepared.rejected.clone();
        b.call(
            &server,
            what,
            self.insert_rows(&mut tx, &prepared.rows, &mut rejected),
        )
        .await?;
        phase.end("insert");
        if !rejected.is_empty() {
            rejected.sort_by_key(|r| r.index);
            // Before anything is sent: a table-wide problem stops here, rolled back.
            check_rejected_share(&self.sink, &rejected, batch.messages.len())?;
            match &self.dead_letters {
                Some(dl) => {
                    dl.send(&batch.topic, &batch.messages, &rejected, sent)
                        .await?
                }
                None => {
                    return Err(SinkError::Fatal {
                        what: "dead-lettering",
                        message: "no dead-letter producer".into(),
                    })
                }
            }
        }
        let store = write_offset(
            &mut tx,
            table,
            group,
            &batch.topic,
            batch.partition,
            next_offset,
        );
        b.call(&server, what, async {
            store
                .await
                .map_err(|e| sink_error("storing the offset", &e))
        })
        .await?;
        phase.end("offset");
        let commit = async move { tx.commit().await.map_err(|e| sink_error("committing", &e)) };
        b.call(&server, what, commit).await?;
        conn.finished = true;
        phase.end("commit");
        metrics::histogram!(metric::TRANSACTION_SECONDS).record(started.elapsed().as_secs_f64());
        let dead = rejected.len();
        Ok(Outcome::Written {
            next_offset,
            rows: batch.messages.len() - dead,
            dead_letters: dead,
        })
    }
}

impl MysqlSink {
    /// One attempt at moving a partition's stored offset from `expected` to `position` in its
    /// own transaction, behind the same fence as a batch.
    async fn attempt_position(
        &self,
        topic: &str,
        partition: i32,
        expected: Option<i64>,
        position: i64,
    ) -> Result<Outcome, SinkError> {
        let b = &self.bound;
        let mut conn = b.acquire().await?;
        let server = conn.server.clone();
        let what = "storing a position in MySQL";
        let (mut tx, stored) = self
            .begin_fenced(&mut conn.conn, &server, what, topic, partition)
            .await?;
        if stored != expected {
            conn.finished = self.roll_back(tx, &server, what).await;
            return Ok(Outcome::Fenced { stored });
        }
        let (table, group) = (&self.offsets_table, &self.group);
        let store = write_offset(&mut tx, table, group, topic, partition, position);
        b.call(&server, what, async {
            store
                .await
                .map_err(|e| sink_error("storing the offset", &e))
        })
        .await?;
        let commit = async move { tx.commit().await.map_err(|e| sink_error("committing", &e)) };
        b.call(&server, what, commit).await?;
        conn.finished = true;
        Ok(Outcome::Written {
            next_offset: position,
            rows: 0,
            dead_letters: 0,
        })
    }
}

impl MysqlSink {
    /// Begins a transaction on `pc` and locks the partition's row of the offsets table (the
    /// fence): the transaction and the offset stored, each call bounded.
    async fn begin_fenced<'c>(
        &self,
        pc: &'c mut PoolConnection<MySql>,
        server: &ServerConn,
        what: &'static str,
        topic: &str,
        partition: i32,
    ) -> Result<(Transaction<'c, MySql>, Option<i64>), SinkError> {
        let b = &self.bound;
        let mut tx = b
            .call(server, what, async move {
                pc.begin()
                    .await
                    .map_err(|e| sink_error("beginning a transaction", &e))
            })
            .await?;
        let (table, group) = (&self.offsets_table, &self.group);
        let fence = lock_offset(&mut tx, table, group, topic, partition);
        let stored = b
            .call(server, what, async {
                fence
                    .await
                    .map_err(|e| sink_error("locking the partition's offset", &e))
            })
            .await?;
        Ok((tx, stored))
    }

    /// Rolls a fenced transaction back, bounded: whether its connection may go back to the pool.
    async fn roll_back(
        &self,
        tx: Transaction<'_, MySql>,
        server: &ServerConn,
        what: &'static str,
    ) -> bool {
        let rollback = async move {
            tx.rollback()
                .await
                .map_err(|e| sink_error("rolling back", &e))
        };
        self.bound.call(server, what, rollback).await.is_ok()
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
        let mut conn = self.bound.acquire().await?;
        let server = conn.server.clone();
        let read = stored_offsets_on(&mut conn.conn, &self.offsets_table, &self.group, topic);
        let offsets = self
            .bound
            .call(&server, "reading the stored offsets", read)
            .await?;
        conn.finished = true;
        Ok(Some(offsets))
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
        let mut phase = Phases::new();
        let prepared = retry(
            "decoding a batch",
            self.sink.retry_max_backoff,
            &stop,
            || self.prepare(&batch.topic, &batch.messages),
        )
        .await?;
        phase.end("prepare");
        let sent = SentDeadLetters::default();
        retry(
            "writing a batch to MySQL",
            self.sink.retry_max_backoff,
            &stop,
            || async {
                let r = self.attempt(&batch, &prepared, next_offset, &sent).await;
                report_db(&r);
                if r.is_err() {
                    metrics::counter!(metric::TRANSACTION_ABORTS).increment(1);
                }
                r
            },
        )
        .await
    }

    async fn store_position(
        &self,
        topic: Arc<str>,
        partition: i32,
        expected: Option<i64>,
        position: i64,
        stop: CancellationToken,
    ) -> Result<Outcome, SinkError> {
        retry(
            "storing a position past transaction markers",
            self.sink.retry_max_backoff,
            &stop,
            || async {
                let r = self
                    .attempt_position(&topic, partition, expected, position)
                    .await;
                report_db(&r);
                r
            },
        )
        .await
    }
}

impl Connect for MysqlSink {
    type Db = MysqlConfig;
    const CONNECTING: &'static str = "connecting to MySQL";

    async fn connect(
        cfg: &Common,
        sink: &SinkConfig,
        db: &MysqlConfig,
        schema: &RecordSchema,
        codec: Arc<RecordDecoder>,
        dead_letters: DeadLetters,
    ) -> Result<MysqlSink, SinkError> {
        MysqlSink::new(cfg, sink, db, schema, codec, Some(dead_letters)).await
    }
}
