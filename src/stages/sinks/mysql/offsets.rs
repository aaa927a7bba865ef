//! The offsets table: one row per (consumer group, topic, partition) holding the offset of
//! the next record to write. The sink reads it on assignment, locks and checks a partition's
//! row at the start of each batch's transaction (the fence) and moves it in the same
//! transaction as the rows; `replay` rewrites it while the sink is stopped.
use std::collections::HashMap;

use sqlx::mysql::MySqlConnection;
use sqlx::MySqlPool;

use super::errors::sink_error;
use super::sql::ident;
use crate::stages::sinks::SinkError;

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
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| sink_error("getting a connection", &e))?;
    stored_offsets_on(&mut conn, offsets_table, group, topic).await
}

/// [`stored_offsets`] on a connection of the caller's.
pub(super) async fn stored_offsets_on(
    conn: &mut MySqlConnection,
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
    .fetch_all(conn)
    .await
    .map_err(|e| sink_error("reading stored offsets", &e))?;
    Ok(rows.into_iter().collect())
}

/// Sets the stored next offsets of a topic's partitions, all in one transaction (what
/// `replay` does for sink-mysql); the sink must not be running.
pub async fn store_offsets(
    pool: &MySqlPool,
    offsets_table: &str,
    group: &str,
    topic: &str,
    offsets: impl IntoIterator<Item = (i32, i64)>,
) -> Result<(), SinkError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| sink_error("beginning a transaction", &e))?;
    for (p, o) in offsets {
        write_offset(&mut tx, offsets_table, group, topic, p, o)
            .await
            .map_err(|e| sink_error("storing offsets", &e))?;
    }
    tx.commit()
        .await
        .map_err(|e| sink_error("committing offsets", &e))
}

/// `next_offset` of a row a batch's transaction creates before it stores the real one; never
/// committed (the same transaction overwrites it, or rolls it back).
const PLACEHOLDER: i64 = -1;

/// Locks a partition's row until the transaction ends and reads its next offset (`None`:
/// nothing stored yet).
///
/// A missing row locks nothing (READ COMMITTED takes no gap locks), so two owners of a new
/// partition could both pass the fence and the later commit would move the offset back. The
/// row is therefore created here, in this transaction: a second owner's insert of the same
/// row waits for this transaction, then finds the committed offset and is fenced.
pub(super) async fn lock_offset(
    conn: &mut MySqlConnection,
    offsets_table: &str,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, sqlx::Error> {
    let select = format!(
        "SELECT next_offset FROM {} WHERE consumer_group = ? AND topic = ? AND partition_id = ? FOR UPDATE",
        ident(offsets_table)
    );
    async fn read(
        conn: &mut MySqlConnection,
        select: &str,
        (group, topic, partition): (&str, &str, i32),
    ) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar::<_, i64>(select)
            .bind(group)
            .bind(topic)
            .bind(partition)
            .fetch_optional(conn)
            .await
    }
    let key = (group, topic, partition);
    if let Some(o) = read(&mut *conn, &select, key).await? {
        return Ok(Some(o));
    }
    sqlx::query(&format!(
        "INSERT INTO {} (consumer_group, topic, partition_id, next_offset, updated_at) \
         VALUES (?, ?, ?, {PLACEHOLDER}, UTC_TIMESTAMP(3)) \
         ON DUPLICATE KEY UPDATE next_offset = next_offset",
        ident(offsets_table)
    ))
    .bind(group)
    .bind(topic)
    .bind(partition)
    .execute(&mut *conn)
    .await?;
    Ok(read(&mut *conn, &select, key)
        .await?
        .filter(|o| *o != PLACEHOLDER))
}

/// Sets a partition's next offset (inserting its row when absent).
pub(super) async fn write_offset(
    conn: &mut MySqlConnection,
    offsets_table: &str,
    group: &str,
    topic: &str,
    partition: i32,
    next_offset: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO {} (consumer_group, topic, partition_id, next_offset, updated_at) \
         VALUES (?, ?, ?, ?, UTC_TIMESTAMP(3)) \
         ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset), updated_at = VALUES(updated_at)",
        ident(offsets_table)
    ))
    .bind(group)
    .bind(topic)
    .bind(partition)
    .bind(next_offset)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
