//! `etl-pipe bench-sink`: the sinks against their databases' ceilings and against the
//! row-by-row way of the original project.
//!
//! Produces N scored records (Avro, the real codec) to a fresh topic, runs `sink-mysql`
//! in-process until every record is committed, then measures the ceilings on the same rows and
//! table shape (`ceiling`: LOAD DATA LOCAL INFILE, the sink's upserts without Kafka) and the
//! original project's way (an ORM-style loop: one prepared `INSERT` per row, in one transaction
//! and in autocommit) on a smaller count; then the same for MongoDB (`sink-mongo` vs
//! `insert_many` and one `replace_one` upsert per document). Prints rows/s, the ratios, batch
//! latency percentiles, the time per phase and the sink's peak RSS. Uses fresh topics,
//! database and collections, and removes them afterwards unless `--keep` (the MongoDB
//! database at the start of the next run: FerretDB may still be writing it at the end).
//! Not a test: figures depend on the machine; record them with the machine's description.
//!
//! This module owns the flags and the phases of a run; `capture` what is measured, `input` the
//! records and topics, `ceiling` the databases' ceilings, `baseline` the original project's
//! way.
mod baseline;
mod capture;
mod ceiling;
mod input;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use capture::install_recorder;
pub use input::league_record;

use crate::codec::{Codec, Framing};
use crate::config::Config;
use crate::record::RecordSchema;
use crate::stages::sinks::{metric, RecordDecoder, SinkError};
use crate::stages::sinks::{mongo, mysql};
use capture::{capture, peak_rss_mib};
use input::{create_topics, delete_topics, produce};

/// Options of `bench-sink`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Records loaded through sink-mysql.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// Rows written one INSERT at a time (in one transaction, and a quarter of it in autocommit).
    #[arg(long, default_value_t = 20_000)]
    pub row_by_row: usize,
    /// Partitions of the benchmark topic (= parallel database transactions).
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Records loaded through sink-mongo (0: skip MongoDB). FerretDB on SQLite is slow:
    /// keep this small there.
    #[arg(long, default_value_t = 20_000)]
    pub mongo_records: usize,
    /// Documents upserted one at a time.
    #[arg(long, default_value_t = 2_000)]
    pub mongo_one_by_one: usize,
    /// Keep the topics, database and collections afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Keys (summoner ids, the table's primary key and the documents' `_id`) in random order,
    /// as the pipeline's are, instead of ascending with the record number.
    #[arg(long)]
    pub random_keys: bool,
}

fn fatal(what: &'static str, e: impl std::fmt::Display) -> SinkError {
    SinkError::Fatal {
        what,
        message: e.to_string(),
    }
}

/// Runs the benchmark and prints the figures.
pub async fn run(cfg: &Config, args: &BenchArgs) -> Result<(), SinkError> {
    // Before any metric is recorded (a no-op when the CLI installed it already).
    install_recorder();
    input::set_random_keys(args.random_keys);
    let schema =
        crate::codec::load_schema(&cfg.sink.schema).map_err(|e| fatal("loading the schema", e))?;
    let codec = Arc::new(Codec::new(schema.clone(), Framing::SingleObject));
    let bench = Bench {
        args,
        schema,
        codec,
    };
    let id = format!("{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    let db = format!("etl_bench_{id}");
    let bc = bench_config(cfg, &id, &db);
    bench.print_header();

    let admin_pool = mysql::connect(&cfg.mysql, 2).await?;
    sqlx::Executor::execute(
        &admin_pool,
        format!("CREATE DATABASE `{db}` CHARACTER SET utf8mb4").as_str(),
    )
    .await
    .map_err(|e| fatal("creating the bench database", e))?;
    bench.mysql(&bc).await?;
    if args.mongo_records > 0 {
        bench.mongo(&bc, &id, &db).await?;
    }

    println!(
        "peak RSS {:.0} MiB (whole process, from the last sink run on: the ceilings' rows included)",
        peak_rss_mib()
    );
    if !args.keep {
        let _ =
            sqlx::Executor::execute(&admin_pool, format!("DROP DATABASE `{db}`").as_str()).await;
        delete_topics(&bc).await;
    }
    Ok(())
}

/// The run's own pipeline name, topics and MySQL database (`bench-<id>`, `etl_bench_<id>`).
fn bench_config(cfg: &Config, id: &str, db: &str) -> Config {
    let mut bc = cfg.clone();
    bc.pipeline.name = format!("bench-{id}");
    bc.topics.scored.name = Some(format!("bench-{id}.scored"));
    bc.topics.dead_letter.name = Some(format!("bench-{id}.dead-letter"));
    bc.kafka.schema_registry_url = None;
    bc.mysql.database = db.to_string();
    bc
}

/// The sink under test.
#[derive(Debug, Clone, Copy)]
enum Target {
    Mysql,
    Mongo,
}

/// What every phase of a run shares.
struct Bench<'a> {
    args: &'a BenchArgs,
    schema: RecordSchema,
    codec: Arc<Codec>,
}

impl Bench<'_> {
    fn print_header(&self) {
        println!(
            "etl-pipe bench-sink: {} records, {} partitions, schema {} ({} fields), keys {}",
            self.args.records,
            self.args.partitions,
            self.schema.name,
            self.schema.fields.len(),
            if self.args.random_keys {
                "in random order"
            } else {
                "ascending"
            }
        );
        println!(
            "machine: {} cores, load average {}",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
    }

    /// sink-mysql on `--records`, then the row-by-row loop on `--row-by-row`.
    async fn mysql(&self, bc: &Config) -> Result<(), SinkError> {
        let n = self.args.records;
        let (steady, total) = self.load_through_sink(Target::Mysql, bc, n).await?;
        let sink_rate = n as f64 / steady;
        println!("sink-mysql: {} rows in {:.1} s from the first batch ({:.1} s with start-up and group join): {:.0} rows/s", n, steady, total, sink_rate);
        print_latency("sink-mysql");
        print_phases(steady, self.args.partitions);

        let ceilings =
            ceiling::mysql(bc, &self.schema, &self.codec, n, self.args.partitions).await?;
        let (one_tx, auto) =
            baseline::mysql_row_by_row(bc, &self.schema, n, self.args.row_by_row).await?;
        println!(
            "=> sink-mysql is {:.0} % of LOAD DATA and {:.0} % of its own upserts without Kafka; {:.1}x the row-by-row loop in one transaction, {:.1}x autocommit",
            100.0 * sink_rate / ceilings.load_data,
            100.0 * sink_rate / ceilings.upserts,
            sink_rate / one_tx,
            sink_rate / auto
        );
        Ok(())
    }

    /// sink-mongo on `--mongo-records` (its own topic, the bench database), then one-by-one
    /// upserts on `--mongo-one-by-one`.
    async fn mongo(&self, bc: &Config, id: &str, db: &str) -> Result<(), SinkError> {
        let mut mc = bc.clone();
        mc.topics.scored.name = Some(format!("bench-{id}.scored-mongo"));
        mc.mongo.database = db.to_string();
        if !self.args.keep {
            input::drop_earlier_databases(&mc, db).await?;
        }
        let n = self.args.mongo_records;
        let (steady, total) = self.load_through_sink(Target::Mongo, &mc, n).await?;
        let bulk = n as f64 / steady;
        println!("sink-mongo: {} documents in {:.1} s from the first batch ({:.1} s with start-up): {:.0} docs/s", n, steady, total, bulk);
        print_latency("sink-mongo");
        print_phases(steady, self.args.partitions);

        let concurrency = mc.sink.mongo.write_concurrency;
        let insert_many = ceiling::mongo(&mc, db, &self.schema, n, concurrency).await?;
        let one =
            baseline::mongo_one_by_one(&mc, db, &self.schema, self.args.mongo_one_by_one).await?;
        println!(
            "=> sink-mongo is {:.0} % of insert_many; {:.1}x one-by-one upserts",
            100.0 * bulk / insert_many,
            bulk / one
        );
        // The Mongo database is left in place: dropping a database FerretDB (SQLite) is
        // still writing can crash it. The next run drops it (unless `--keep`).
        println!("  (MongoDB database {db} left in place: the next bench-sink drops it)");
        if !self.args.keep {
            delete_topics(&mc).await;
        }
        Ok(())
    }

    /// Creates the config's topics, produces `n` records to them, then runs the sink
    /// in-process until it has written them all; returns the seconds of [`wait_written`].
    async fn load_through_sink(
        &self,
        target: Target,
        cfg: &Config,
        n: usize,
    ) -> Result<(f64, f64), SinkError> {
        let partitions = self.args.partitions;
        create_topics(cfg, partitions).await?;
        let rate = produce(cfg, &self.codec, n, partitions).await?;
        println!("produced {} records at {:.0}/s", n, rate);

        capture().reset();
        let before = capture::reset_peak_rss();
        let token = CancellationToken::new();
        let started = Instant::now();
        let (c2, s2, d2, t2) = (
            cfg.clone(),
            self.schema.clone(),
            self.codec.clone() as Arc<RecordDecoder>,
            token.clone(),
        );
        let task = tokio::spawn(async move {
            let common = c2.common();
            match target {
                Target::Mysql => mysql::run_with(&common, &c2.sink, &c2.mysql, s2, d2, t2).await,
                Target::Mongo => mongo::run_with(&common, &c2.sink, &c2.mongo, s2, d2, t2).await,
            }
        });
        let seconds = wait_written(n, started, &task).await?;
        token.cancel();
        task.await.map_err(|e| fatal("the sink task", e))??;
        println!(
            "  RSS {before:.0} MiB when the sink started (producing done), peak {:.0} MiB while it ran",
            peak_rss_mib()
        );
        Ok(seconds)
    }
}

/// Waits until the sink reports `n` records written; returns (seconds from the first batch
/// handed to a writer to the last commit, seconds from the sink's start to the last commit).
async fn wait_written(
    n: usize,
    started: Instant,
    task: &tokio::task::JoinHandle<Result<(), SinkError>>,
) -> Result<(f64, f64), SinkError> {
    let c = capture();
    let mut first: Option<Instant> = None;
    loop {
        if first.is_none() && c.counter(metric::RECORDS_IN) > 0 {
            first = Some(Instant::now());
        }
        if c.counter(metric::RECORDS_OUT) as usize >= n {
            let now = Instant::now();
            let t0 = first.unwrap_or(started);
            return Ok((
                now.duration_since(t0).as_secs_f64().max(1e-3),
                now.duration_since(started).as_secs_f64(),
            ));
        }
        if task.is_finished() {
            return Err(fatal("the sink", "stopped before writing every record"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn print_latency(label: &str) {
    let (n, p50, p95, p99, max) = capture().percentiles(metric::BATCH_SECONDS);
    let (_, s50, _, _, _) = capture().percentiles(metric::BATCH_SIZE);
    println!(
        "  {label}: {n} batches, median {s50:.0} records; batch latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p50 * 1e3,
        p95 * 1e3,
        p99 * 1e3,
        max * 1e3
    );
}

/// Where the batches spent their time ([`metric::SINK_PHASE_SECONDS`]): per phase the count,
/// p50 and p99, and its share of the partitions' time (`seconds` of the run × `partitions`);
/// then how many database transactions were open on average.
fn print_phases(seconds: f64, partitions: i32) {
    let c = capture();
    let budget = seconds * f64::from(partitions.max(1));
    println!("  time per phase (share of {partitions} partitions × {seconds:.1} s):");
    for phase in [
        "wait", "queued", "prepare", "acquire", "fence", "insert", "offset", "commit",
    ] {
        let name = format!("{}{{phase={phase}}}", metric::SINK_PHASE_SECONDS);
        let (n, p50, _, p99, _) = c.percentiles(&name);
        if n == 0 {
            continue;
        }
        println!(
            "    {phase:<8} n {n:>6}  p50 {:>7.1} ms  p99 {:>7.1} ms  total {:>7.1} s  {:>5.1} %",
            p50 * 1e3,
            p99 * 1e3,
            c.sum(&name),
            100.0 * c.sum(&name) / budget
        );
    }
    let tx = c.sum(metric::TRANSACTION_SECONDS);
    if tx > 0.0 {
        println!(
            "    database transactions open on average: {:.2} (of {partitions} partitions)",
            tx / seconds
        );
    }
}
