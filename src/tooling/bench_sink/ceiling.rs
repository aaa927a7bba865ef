//! The ceilings `bench-sink` measures the sinks against, in the same run, on the same rows and
//! the same table shape (issue #18): what the database takes when nothing but the database
//! work is done.
//!
//! - MySQL, `LOAD DATA LOCAL INFILE` by the `mariadb` (or `mysql`) command-line client: sqlx
//!   does not speak the LOCAL INFILE protocol. The file holds the rows exactly as sink-mysql's
//!   text protocol renders them (its own SQL literals, read with `ENCLOSED BY '\''`); only the
//!   client's run is timed.
//! - MySQL, the sink's own multi-row upserts (same statements and protocol, same batch size,
//!   one transaction per batch) over `sink.mysql.connections` connections, without Kafka, the
//!   fence or the offsets table.
//! - MongoDB, the driver's `insert_many` of the same documents in batches of 1 000, as many at
//!   once as sink-mongo writes (`sink.mongo.write_concurrency`).
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::fatal;
use super::input::{bench_collection, encoded, league_document};
use crate::codec::Codec;
use crate::config::Config;
use crate::record::RecordSchema;
use crate::stages::sinks::mysql::{self, MysqlSink, Row, RowBody};
use crate::stages::sinks::{RecordDecoder, SinkError, SinkMessage, StatementProtocol};

/// Records rendered at a time.
const CHUNK: usize = 10_000;

/// The `n` bench records as the messages the sink reads (key, Avro payload, traceparent).
fn messages(
    codec: &Codec,
    schema: &RecordSchema,
    from: usize,
    to: usize,
    partitions: i32,
) -> Result<Vec<SinkMessage>, SinkError> {
    (from..to)
        .map(|j| {
            let (key, payload, headers) = encoded(codec, schema, j)?;
            Ok(SinkMessage {
                partition: (j as i32) % partitions,
                offset: (j / partitions as usize) as i64,
                key: Some(key.into_bytes()),
                payload: Some(payload),
                headers: Some(headers),
            })
        })
        .collect()
}

/// rows/s of `LOAD DATA LOCAL INFILE` and of the sink's upserts over N connections.
pub(super) struct MysqlCeilings {
    pub load_data: f64,
    pub upserts: f64,
}

/// The `n` bench records as `sink` renders them (in its protocol).
async fn rows(
    sink: &MysqlSink,
    topic: &str,
    codec: &Arc<Codec>,
    schema: &RecordSchema,
    n: usize,
    partitions: i32,
) -> Result<Vec<Row>, SinkError> {
    let mut rows: Vec<Row> = Vec::with_capacity(n);
    for from in (0..n).step_by(CHUNK) {
        let msgs = messages(codec, schema, from, (from + CHUNK).min(n), partitions)?;
        let prepared = sink.prepare(topic, &msgs).await?;
        if let Some(r) = prepared.rejected.first() {
            return Err(fatal("rendering the ceiling's rows", r.message.clone()));
        }
        rows.extend(prepared.rows);
    }
    Ok(rows)
}

/// Renders `n` records as sink-mysql does, then times both MySQL ceilings into fresh tables of
/// the sink's shape: LOAD DATA reads the rows as SQL literals (the text protocol's rendering),
/// the upserts use the configured protocol.
pub(super) async fn mysql(
    cfg: &Config,
    schema: &RecordSchema,
    codec: &Arc<Codec>,
    n: usize,
    partitions: i32,
) -> Result<MysqlCeilings, SinkError> {
    let mut sink_cfg = cfg.sink.clone();
    sink_cfg.mysql.table = Some("league_entry_ceiling_upsert".into());
    let decoder = codec.clone() as Arc<RecordDecoder>;
    let mut text_cfg = sink_cfg.clone();
    text_cfg.mysql.protocol = StatementProtocol::Text;
    let text_sink = MysqlSink::new(
        &cfg.common(),
        &text_cfg,
        &cfg.mysql,
        schema,
        decoder.clone(),
        None,
    )
    .await?;
    let topic = cfg.topics.name(crate::config::TopicRole::Scored);

    let load_table = "league_entry_ceiling_load";
    sqlx::Executor::execute(
        text_sink.pool(),
        format!(
            "CREATE TABLE {} LIKE {}",
            mysql::ident(load_table),
            mysql::ident(&text_sink.layout().table)
        )
        .as_str(),
    )
    .await
    .map_err(|e| fatal("creating the LOAD DATA table", e))?;
    let text_rows = rows(&text_sink, &topic, codec, schema, n, partitions).await?;
    let load_data = load_data(cfg, &text_sink, load_table, &text_rows).await?;
    drop(text_rows);
    println!(
        "ceiling, LOAD DATA LOCAL INFILE ({} client): {n} rows at {load_data:.0} rows/s",
        client()?
    );

    let sink = MysqlSink::new(&cfg.common(), &sink_cfg, &cfg.mysql, schema, decoder, None).await?;
    let rows = rows(&sink, &topic, codec, schema, n, partitions).await?;
    let upserts = upserts(
        &sink,
        &rows,
        sink_cfg.batch_size,
        sink_cfg.mysql.connections,
    )
    .await?;
    println!(
        "ceiling, the sink's upserts without Kafka ({} rows per transaction, {} connections, {:?} protocol): {n} rows at {upserts:.0} rows/s",
        sink_cfg.batch_size, sink_cfg.mysql.connections, sink_cfg.mysql.protocol
    );
    Ok(MysqlCeilings { load_data, upserts })
}

/// The MariaDB or MySQL command-line client on PATH.
fn client() -> Result<&'static str, SinkError> {
    ["mariadb", "mysql"]
        .into_iter()
        .find(|c| {
            std::process::Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .ok_or_else(|| {
            fatal(
                "the LOAD DATA ceiling",
                "needs the `mariadb` or `mysql` command-line client on PATH (Debian: mariadb-client)",
            )
        })
}

/// A file removed when dropped.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes the rows to a temporary file for LOAD DATA: each tuple without its parentheses (the
/// sink's own literals, comma separated), one per line.
fn rows_file(rows: &[Row]) -> Result<TempFile, SinkError> {
    let file =
        TempFile(std::env::temp_dir().join(format!("etl-pipe-bench-{}.rows", std::process::id())));
    let err = |e: std::io::Error| fatal("writing the rows file", e);
    let mut w = std::io::BufWriter::new(std::fs::File::create(&file.0).map_err(err)?);
    for r in rows {
        let RowBody::Text(text) = &r.body else {
            return Err(fatal("writing the rows file", "a row is not SQL text"));
        };
        w.write_all(&text.as_bytes()[1..text.len() - 1])
            .and_then(|()| w.write_all(b"\n"))
            .map_err(err)?;
    }
    w.flush().map_err(err)?;
    Ok(file)
}

/// Times the client's `LOAD DATA LOCAL INFILE` of the rows ([`rows_file`]) into `table`;
/// checks the row count.
async fn load_data(
    cfg: &Config,
    sink: &MysqlSink,
    table: &str,
    rows: &[Row],
) -> Result<f64, SinkError> {
    let file = rows_file(rows)?;
    let path = &file.0;
    let cols: Vec<String> = sink
        .layout()
        .columns
        .iter()
        .map(|c| mysql::ident(&c.name))
        .collect();
    let sql = format!(
        "SET time_zone = '+00:00'; LOAD DATA LOCAL INFILE '{}' INTO TABLE {} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\\'' ESCAPED BY '\\\\' \
         LINES TERMINATED BY '\\n' ({})",
        path.display(),
        mysql::ident(table),
        cols.join(",")
    );
    let db = &cfg.mysql;
    let password = db.password.resolve("mysql.password")?;
    let mut cmd = tokio::process::Command::new(client()?);
    cmd.args([
        "--local-infile=1",
        "--protocol=TCP",
        "--default-character-set=utf8mb4",
    ])
    .arg(format!("--host={}", db.host))
    .arg(format!("--port={}", db.port))
    .arg(format!("--user={}", db.user))
    .arg(&db.database)
    .arg("-e")
    .arg(&sql)
    // The password in the environment, not on the command line (`ps` shows arguments).
    .env("MYSQL_PWD", password.expose());
    if db.ssl_mode == mysql::MysqlSslMode::Disabled {
        cmd.arg("--skip-ssl");
    }
    let started = Instant::now();
    let out = cmd
        .output()
        .await
        .map_err(|e| fatal("running the mariadb client", e))?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(fatal(
            "LOAD DATA LOCAL INFILE",
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let loaded: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", mysql::ident(table)))
        .fetch_one(sink.pool())
        .await
        .map_err(|e| fatal("counting the loaded rows", e))?;
    if loaded as usize != rows.len() {
        return Err(fatal(
            "LOAD DATA LOCAL INFILE",
            format!("loaded {loaded} rows of {}", rows.len()),
        ));
    }
    Ok(rows.len() as f64 / seconds)
}

/// The sink's statements, batch by batch (one transaction each), over `connections` tasks.
async fn upserts(
    sink: &MysqlSink,
    rows: &[Row],
    batch: usize,
    connections: u32,
) -> Result<f64, SinkError> {
    let started = Instant::now();
    in_parallel(
        rows.chunks(batch.max(1)).collect(),
        connections as usize,
        |rows| async move {
            let mut conn = sink
                .pool()
                .acquire()
                .await
                .map_err(|e| fatal("a connection", e))?;
            let mut tx = sqlx::Connection::begin(&mut *conn)
                .await
                .map_err(|e| fatal("begin", e))?;
            let mut rejected = Vec::new();
            sink.insert_rows(&mut tx, rows, &mut rejected).await?;
            tx.commit().await.map_err(|e| fatal("commit", e))?;
            if rejected.is_empty() {
                Ok(())
            } else {
                Err(fatal("the upsert ceiling", "MySQL rejected a row"))
            }
        },
    )
    .await?;
    Ok(rows.len() as f64 / started.elapsed().as_secs_f64())
}

/// docs/s of `insert_many` (batches of 1 000, `concurrency` at once) of the same documents
/// sink-mongo writes, into a fresh collection.
pub(super) async fn mongo(
    cfg: &Config,
    db: &str,
    schema: &RecordSchema,
    n: usize,
    concurrency: usize,
) -> Result<f64, SinkError> {
    let coll = bench_collection(cfg, db, "league_entry_ceiling_insert_many").await?;
    let loaded_at = mongodb::bson::DateTime::now();
    let docs = (0..n)
        .map(|i| league_document(schema, i, loaded_at).map(|(_, d)| d))
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    in_parallel(docs.chunks(1_000).collect(), concurrency, |b| async {
        coll.insert_many(b.iter())
            .await
            .map(|_| ())
            .map_err(|e| fatal("insert_many", e))
    })
    .await?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "ceiling, insert_many (batches of 1 000, {} at once): {n} documents at {rate:.0} docs/s",
        concurrency.max(1)
    );
    Ok(rate)
}

/// Runs `work` on every item, `workers` at a time (each worker takes the next item when done);
/// the first error wins.
async fn in_parallel<T: Copy, F, Fut>(
    items: Vec<T>,
    workers: usize,
    work: F,
) -> Result<(), SinkError>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<(), SinkError>>,
{
    let next = AtomicUsize::new(0);
    let worker = || async {
        while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
            work(*item).await?;
        }
        Ok::<(), SinkError>(())
    };
    for r in futures::future::join_all((0..workers.max(1)).map(|_| worker())).await {
        r?;
    }
    Ok(())
}
