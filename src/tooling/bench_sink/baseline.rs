//! The original project's way, which the sinks are measured against: an ORM-style loop of one
//! prepared `INSERT` per row into MySQL, and one `replace_one` upsert per document into MongoDB.
use std::time::Instant;

use sqlx::mysql::{MySql, MySqlArguments};
use sqlx::query::Query;

use super::fatal;
use super::input::{bench_collection, key_of, league_document, league_record};
use crate::config::Config;
use crate::record::{Record, RecordSchema, Value};
use crate::stages::sinks::mysql::{self, Flavor, Layout};
use crate::stages::sinks::SinkError;

/// Inserts `n` records (numbered after the `skip` the sink loaded) one `INSERT` at a time: all
/// in one transaction, then a quarter of them in autocommit. Prints and returns the rows/s of
/// each.
pub(super) async fn mysql_row_by_row(
    cfg: &Config,
    schema: &RecordSchema,
    skip: usize,
    n: usize,
) -> Result<(f64, f64), SinkError> {
    let pool = mysql::connect(&cfg.mysql, 1).await?;
    let layout = Layout::new(
        schema,
        "league_entry_row_by_row",
        cfg.sink.key_field.as_deref(),
        255,
        Flavor::MariaDb,
    )?;
    mysql::ensure_table(&pool, &layout).await?;
    let sql = insert_sql(&layout);
    let rows: Vec<Record> = (0..n).map(|i| league_record(schema, skip + i)).collect();
    let t = Instant::now();
    let mut tx = pool.begin().await.map_err(|e| fatal("begin", e))?;
    for (i, r) in rows.iter().enumerate() {
        bind_row(sqlx::query(&sql), &layout, r, i)
            .execute(&mut *tx)
            .await
            .map_err(|e| fatal("row-by-row insert", e))?;
    }
    tx.commit().await.map_err(|e| fatal("commit", e))?;
    let one_tx = rows.len() as f64 / t.elapsed().as_secs_f64();
    println!(
        "row by row, one transaction: {} rows at {:.0} rows/s",
        rows.len(),
        one_tx
    );
    sqlx::Executor::execute(
        &pool,
        format!("TRUNCATE TABLE {}", mysql::ident(&layout.table)).as_str(),
    )
    .await
    .map_err(|e| fatal("truncate", e))?;
    let auto_n = (rows.len() / 4).max(1);
    let t = Instant::now();
    for (i, r) in rows.iter().take(auto_n).enumerate() {
        bind_row(sqlx::query(&sql), &layout, r, i)
            .execute(&pool)
            .await
            .map_err(|e| fatal("row-by-row insert", e))?;
    }
    let auto = auto_n as f64 / t.elapsed().as_secs_f64();
    println!("row by row, autocommit: {auto_n} rows at {auto:.0} rows/s");
    pool.close().await;
    Ok((one_tx, auto))
}

/// `INSERT INTO t (every column) VALUES (?, …)`.
fn insert_sql(layout: &Layout) -> String {
    let cols: Vec<String> = layout
        .columns
        .iter()
        .map(|c| mysql::ident(&c.name))
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        mysql::ident(&layout.table),
        cols.join(","),
        vec!["?"; cols.len()].join(",")
    )
}

/// Binds record `i` to the statement, one value per column of the layout.
fn bind_row<'q>(
    mut q: Query<'q, MySql, MySqlArguments>,
    layout: &Layout,
    r: &Record,
    i: usize,
) -> Query<'q, MySql, MySqlArguments> {
    for c in &layout.columns {
        q = match &c.source {
            mysql::Source::KafkaKey => q.bind(key_of(r, i)),
            mysql::Source::Field(n) => match r.get(n).cloned().unwrap_or(Value::Null) {
                Value::Null => q.bind(None::<String>),
                Value::Boolean(b) => q.bind(b),
                Value::Int(v) => q.bind(v),
                Value::Long(v) => q.bind(v),
                Value::Float(v) => q.bind(v),
                Value::Double(v) => q.bind(v),
                Value::String(s) => q.bind(s),
                Value::TimestampMillis(ms) => {
                    q.bind(chrono::DateTime::from_timestamp_millis(ms).map(|d| d.naive_utc()))
                }
                // Nested and logical values (not in the bench's flat schema): JSON text.
                other => q.bind(serde_json::to_string(&other).ok()),
            },
            mysql::Source::Path(_) => q.bind(None::<String>),
            mysql::Source::TraceId => q.bind(None::<String>),
            mysql::Source::SourceTopic => q.bind("bench"),
            mysql::Source::SourcePartition => q.bind(0i32),
            mysql::Source::SourceOffset => q.bind(i as i64),
            mysql::Source::LoadedAt => q.bind(chrono::Utc::now().naive_utc()),
        };
    }
    q
}

/// Upserts `n` documents one `replace_one` at a time into database `db`; prints and returns
/// documents/s.
pub(super) async fn mongo_one_by_one(
    cfg: &Config,
    db: &str,
    schema: &RecordSchema,
    n: usize,
) -> Result<f64, SinkError> {
    let coll = bench_collection(cfg, db, "league_entry_one_by_one").await?;
    let t = Instant::now();
    for i in 0..n {
        let (id, doc) = league_document(schema, i, mongodb::bson::DateTime::now())?;
        coll.replace_one(mongodb::bson::doc! {"_id": id}, doc)
            .upsert(true)
            .await
            .map_err(|e| fatal("replace_one", e))?;
    }
    let one = n as f64 / t.elapsed().as_secs_f64();
    println!("one by one (replace_one upsert): {n} documents at {one:.0} docs/s");
    Ok(one)
}
