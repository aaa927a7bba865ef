//! The command line: one subcommand per stage or operation. Doc comments are the help text.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, TopicRole};
use crate::kafka::topics::{self, TopicOutcome};

/// etl-pipe: a Kafka-native streaming ETL pipeline.
#[derive(Debug, Parser)]
#[command(name = "etl-pipe", version, about)]
pub struct Cli {
    /// Config file (TOML). Every key can also be set with ETL__SECTION__KEY environment variables.
    #[arg(long, short, global = true, env = "ETL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Port of this stage's /metrics, /healthz and /readyz server (0 = none); overrides
    /// `observability.http_port`.
    #[arg(long, global = true, env = "ETL_HTTP_PORT")]
    pub http_port: Option<u16>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage the pipeline's Kafka topics.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Consume `scored` and write typed rows to MySQL / MariaDB, exactly once: rows and
    /// consumer offsets commit in one database transaction (`[sink]`, `[sink.mysql]`, `[mysql]`).
    SinkMysql,
    /// Consume `scored` and write whole documents to MongoDB / FerretDB with unordered bulk
    /// upserts by key; offsets commit after the write (`[sink]`, `[sink.mongo]`, `[mongo]`).
    SinkMongo,
    /// Benchmark the sinks against row-by-row writes (local stack; not a test).
    BenchSink(crate::tooling::bench_sink::BenchArgs),
    /// Benchmark clean and score against a transactional pass-through of the same records
    /// (their ceiling; local stack; not a test).
    BenchStages(crate::tooling::bench_stages::BenchStagesArgs),
    /// Move a stage's position (consumer group; for sink-mysql also its offsets table) so it
    /// reprocesses or skips records. Dry run unless --execute; refuses while the stage runs.
    Replay(ReplayArgs),
    /// Send dead-letter or quarantined records back to the topic they came from.
    Redrive(RedriveArgs),
    /// Topic sizes and each stage's members and lag.
    Status,
    /// Read the quality topic: `quality report` draws it as one HTML page.
    Quality {
        #[command(subcommand)]
        command: QualityCommand,
    },
    /// One record's journey: fetch, every topic it passed, its quality window, its MySQL row
    /// and Mongo document, and the log events with its trace id.
    Trace(TraceArgs),
    /// Least privilege: print the Kafka ACLs each stage needs (one principal per stage:
    /// topics, consumer groups, transactional ids, idempotent writes) and the database grants
    /// of each sink; `--execute` creates the ACLs through the admin API, as the configured
    /// Kafka principal (an administrator).
    Acls(AclsArgs),
    /// Run the whole pipeline here, end to end: the sample API with faults and every stage as a
    /// separate process against the local stack, until every record has landed; then a summary.
    Demo(crate::tooling::local::cli::DemoArgs),
    /// End-to-end benchmark: records/s per stage, latency percentiles, CPU and peak memory.
    BenchE2e(crate::tooling::local::cli::BenchE2eArgs),
    /// Data-quality profile of a JSONL or CSV file: missing and type-error ratios, PSI
    /// against a baseline, VIF, and the PASS/WARN/FAIL decision of `[quality]`.
    /// Exits 0 on PASS or WARN, 3 on FAIL (WARN too with --strict), 1 on an error.
    Profile(crate::quality::profile::ProfileArgs),
    /// Run the clean stage: raw JSON → typed Avro records (raw → cleaned) by the `[clean]`
    /// mapping, exactly once; records that cannot be mapped go to dead-letter with the reason.
    /// Stops on SIGINT/SIGTERM after committing the batch in hand.
    Clean,
    /// Run the score stage: cleaned → scored, each record judged PASS / WARN / FAIL on the
    /// trailing window of its partition by `[score]` and `[quality]`; FAIL records go to
    /// quarantine (or on, flagged, or stop the stage: `score.policy`), one report per block of
    /// offsets to the quality topic, exactly once. Stops on SIGINT/SIGTERM after committing the
    /// batch in hand.
    Score,
    /// Pull records from the HTTP API (`[extract]`) into the raw topic: a pass every
    /// `extract.interval`, or one pass with `--once`. Resumes from checkpoints after a restart.
    Extract(crate::stages::extract::ExtractArgs),
    /// Serve the demo league-entries API (deterministic data, token, rate limit, faults, drift).
    SampleApi(crate::tooling::sample_api::SampleApiArgs),
    /// Benchmark the extract stage: an in-process sample API into fresh topics, one pass.
    BenchExtract(crate::tooling::bench_extract::BenchArgs),
    /// Measure the quality gate offline on the sample API's data: false alarms on undrifted
    /// records, drifted records caught and undrifted ones quarantined with them, by the
    /// `[score]` and `[quality]` settings (needs `score.baseline`).
    BenchGate(crate::tooling::bench_gate::BenchGateArgs),
}

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// The record's key (e.g. its summoner id) or a 32-hex trace id.
    pub query: String,
    /// Read topics from the first record at this time (RFC 3339 or a date); default: 24 hours ago.
    #[arg(long)]
    pub since: Option<String>,
    /// Read topics up to this time (RFC 3339 or a date); default: now.
    #[arg(long)]
    pub until: Option<String>,
    /// Read every retained record (no --since bound).
    #[arg(long, conflicts_with = "since")]
    pub all: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum QualityCommand {
    /// Write the score stage's block reports (the `quality` topic, read_committed) as one
    /// self-contained HTML page: decisions per block over time, PSI / missing ratio / VIF per
    /// field over time, and the blocks that failed with their reasons. Exits 4 when the range
    /// holds no report (the page is written anyway, saying so).
    Report(QualityReportArgs),
}

#[derive(Debug, clap::Args)]
pub struct QualityReportArgs {
    /// The HTML file to write.
    #[arg(long, value_name = "FILE.html")]
    pub out: PathBuf,
    /// Reports written at or after this time: RFC 3339, a date, or an age like 1h, 2d.
    /// Default: everything retained.
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Reports written before this time (same forms). Default: now.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Only the blocks of this input partition (of `cleaned`).
    #[arg(long, value_name = "N")]
    pub partition: Option<i32>,
}

#[derive(Debug, clap::Args)]
pub struct AclsArgs {
    /// A stage's principal instead of `User:etl-<stage>`: `clean=User:svc-clean` (repeatable).
    #[arg(long = "principal", value_name = "STAGE=PRINCIPAL")]
    pub principals: Vec<String>,
    /// The MySQL account the grants name.
    #[arg(long, default_value = "'etl_sink'@'%'")]
    pub mysql_user: String,
    /// Create the Kafka ACLs (the database grants are only printed).
    #[arg(long)]
    pub execute: bool,
}

#[derive(Debug, clap::Args)]
pub struct RedriveArgs {
    /// Which topic to redrive from.
    #[arg(long, value_enum)]
    pub from: crate::ops::redrive::From,
    /// Only these error kinds (`etl.error.kind`), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub kind: Vec<String>,
    /// Only records that failed in this stage (`etl.error.stage`).
    #[arg(long)]
    pub stage: Option<String>,
    /// Only records dead-lettered at or after this time (RFC 3339 or a date).
    #[arg(long)]
    pub since: Option<String>,
    /// Only records dead-lettered before this time (RFC 3339 or a date).
    #[arg(long)]
    pub until: Option<String>,
    /// Records that already had this many attempts stay where they are.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Send to this topic instead of each record's source topic
    /// (e.g. accept a quarantined window straight into the scored topic).
    #[arg(long)]
    pub to: Option<String>,
    /// Count what would be sent, send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(
    ["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"])))]
pub struct ReplayArgs {
    /// The stage whose position moves.
    #[arg(long, value_enum)]
    pub stage: crate::ops::replay::Stage,
    /// Go back to the first retained record.
    #[arg(long)]
    pub to_earliest: bool,
    /// Skip to the end (nothing is reprocessed).
    #[arg(long)]
    pub to_latest: bool,
    /// Exact offsets per partition: `0:100,1:250` (other partitions are left alone).
    #[arg(long, value_name = "P:O,...")]
    pub to_offset: Option<String>,
    /// The first record at or after this time (RFC 3339, e.g. 2026-11-28T10:00:00Z, or a date).
    #[arg(long, value_name = "TIME")]
    pub to_datetime: Option<String>,
    /// Move by N records from the current position (negative = back).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
    /// Only these partitions (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub partition: Option<Vec<i32>>,
    /// Print the plan only (the default).
    #[arg(long, conflicts_with = "execute")]
    pub dry_run: bool,
    /// Apply the plan.
    #[arg(long)]
    pub execute: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective config (file + environment, defaults filled in, secrets redacted);
    /// fail naming the key on an unknown key, a wrong type or a contradiction.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create missing topics; report (never change) existing ones whose settings differ.
    /// Exits 3 when any topic differs.
    Apply,
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    if cli.http_port.is_some() {
        cfg.observability.http_port = cli.http_port;
    }
    Ok(cfg)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check(&load(&cli)?),
        Command::Topics {
            command: TopicsCommand::Apply,
        } => topics_apply(&load(&cli)?),
        Command::SinkMysql | Command::SinkMongo | Command::Clean | Command::Score => {
            stage(&load(&cli)?, &cli.command)
        }
        Command::Extract(args) => {
            let cfg = load(&cli)?;
            let c = &cfg;
            run_stage(c, "extract", |shutdown| async move {
                Ok(
                    crate::stages::extract::cli_run(&c.common(), &c.extract, args, shutdown)
                        .await?,
                )
            })
        }
        Command::Status => {
            let status = crate::ops::status::collect(&load(&cli)?)?;
            print!("{}", crate::ops::status::render(&status));
            Ok(ExitCode::SUCCESS)
        }
        Command::Trace(args) => trace(&load(&cli)?, args),
        Command::Quality {
            command: QualityCommand::Report(args),
        } => quality_report(&load(&cli)?, args),
        Command::Replay(args) => replay(&load(&cli)?, args),
        Command::Acls(args) => acls(&load(&cli)?, args),
        Command::Redrive(args) => redrive(&load(&cli)?, args),
        Command::Profile(args) => Ok(crate::quality::profile::run(args, &load(&cli)?.quality)?),
        Command::Demo(args) => {
            let _obs = crate::observability::init(None, "demo")?;
            let (exe, base) = local_runner(&cli)?;
            runtime()?.block_on(crate::tooling::local::cli::demo(&exe, &base, args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchE2e(args) => {
            let _obs = crate::observability::init(None, "bench-e2e")?;
            let (exe, base) = local_runner(&cli)?;
            runtime()?.block_on(crate::tooling::local::cli::bench(&exe, &base, args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchSink(args) => {
            let cfg = load(&cli)?;
            // The benchmark reads the sinks' metrics itself: its recorder goes in first.
            crate::tooling::bench_sink::install_recorder();
            let _guard = crate::observability::init(None, "bench-sink")?;
            runtime()?.block_on(crate::tooling::bench_sink::run(&cfg, args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchStages(args) => {
            let cfg = load(&cli)?;
            let _guard = crate::observability::init(None, "bench-stages")?;
            runtime()?
                .block_on(crate::tooling::bench_stages::run(&cfg, args))
                .map_err(anyhow::Error::msg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::SampleApi(args) => {
            let _obs = crate::observability::init(None, "sample-api")?;
            runtime()?
                .block_on(async {
                    crate::tooling::sample_api::serve(args, crate::shutdown::on_signals()).await
                })
                .map_err(anyhow::Error::msg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchGate(args) => {
            let cfg = load(&cli)?;
            crate::tooling::bench_gate::run(&cfg, args).map_err(anyhow::Error::msg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchExtract(args) => {
            let cfg = load(&cli)?;
            let _obs = crate::observability::init(None, "bench-extract")?;
            runtime()?.block_on(crate::tooling::bench_extract::cli_bench(&cfg, args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `config check`: the effective config, where each secret comes from, and "config OK".
fn config_check(cfg: &Config) -> anyhow::Result<ExitCode> {
    println!("{}", cfg.to_toml());
    for line in cfg.secret_status() {
        println!("# secret {line}");
    }
    cfg.check_secrets()?;
    eprintln!("config OK");
    Ok(ExitCode::SUCCESS)
}

/// `topics apply`: creates what is missing, reports what differs (exit 3), changes nothing
/// else; with a schema registry, sets the compatibility level of the Avro topics' subjects.
fn topics_apply(cfg: &Config) -> anyhow::Result<ExitCode> {
    let specs = cfg.topics.all()?;
    let rt = runtime()?;
    let results = rt.block_on(topics::apply(&cfg.kafka, &specs))?;
    let mut differs = false;
    for (spec, outcome) in results {
        let what = format!(
            "{:<22} partitions={} rf={} retention.ms={} cleanup={}",
            spec.name,
            spec.partitions,
            spec.replication_factor,
            spec.retention_ms(),
            spec.cleanup_policy.as_kafka()
        );
        match outcome {
            TopicOutcome::Created => println!("created   {what}"),
            TopicOutcome::Unchanged => println!("ok        {what}"),
            TopicOutcome::Differs(d) => {
                differs = true;
                println!("DIFFERS   {what}");
                for line in d {
                    println!("            {line} (left as it is; change it by hand if intended)");
                }
            }
        }
    }
    let avro: Vec<String> = TopicRole::AVRO
        .iter()
        .map(|r| cfg.topics.name(*r))
        .collect();
    let level = cfg.kafka.schema_registry_compatibility.as_str();
    for subject in rt.block_on(crate::codec::set_compatibility(&cfg.kafka, &avro))? {
        println!("subject   {subject:<22} compatibility={level}");
    }
    Ok(if differs {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// The four Kafka-to-Kafka/database stages: each gets the shared settings and its own config.
fn stage(cfg: &Config, command: &Command) -> anyhow::Result<ExitCode> {
    use crate::stages::{clean, score, sinks};
    let common = &cfg.common();
    let name = match command {
        Command::SinkMysql => sinks::mysql::STAGE,
        Command::SinkMongo => sinks::mongo::STAGE,
        Command::Clean => "clean",
        _ => "score",
    };
    run_stage(cfg, name, |shutdown| async move {
        match command {
            Command::SinkMysql => {
                sinks::mysql::run(common, &cfg.sink, &cfg.mysql, shutdown).await?
            }
            Command::SinkMongo => {
                sinks::mongo::run(common, &cfg.sink, &cfg.mongo, shutdown).await?
            }
            Command::Clean => clean::run(common, &cfg.clean_or_default(), shutdown).await?,
            _ => {
                let score_cfg = cfg.score.clone().unwrap_or_default();
                let clean_cfg = cfg.clean_or_default();
                score::run(common, &score_cfg, &cfg.quality, &clean_cfg, shutdown).await?
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `demo` and `bench-e2e`: the etl-pipe binary to start stages with, and the base config
/// (`config/demo.toml` unless `--config`).
fn local_runner(cli: &Cli) -> anyhow::Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe().context("locating the etl-pipe binary")?;
    let base = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("config/demo.toml"));
    Ok((exe, base))
}

fn trace(cfg: &Config, args: &TraceArgs) -> anyhow::Result<ExitCode> {
    use crate::ops::{replay::parse_datetime, trace};
    let since_ms = match (&args.since, args.all) {
        (Some(s), _) => Some(parse_datetime(s)?),
        (None, true) => None,
        (None, false) => Some(chrono::Utc::now().timestamp_millis() - 24 * 3_600_000),
    };
    let bounds = trace::Bounds {
        since_ms,
        until_ms: args.until.as_deref().map(parse_datetime).transpose()?,
    };
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let j = runtime()?.block_on(trace::run(cfg, &args.query, bounds, progress))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        print!("{}", trace::render(&j));
    }
    Ok(if j.found() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

fn quality_report(cfg: &Config, args: &QualityReportArgs) -> anyhow::Result<ExitCode> {
    use crate::ops::{quality_report as q, scan::Bounds};
    let now = chrono::Utc::now().timestamp_millis();
    let time = |s: &Option<String>| s.as_deref().map(|s| q::parse_time(s, now)).transpose();
    let bounds = Bounds {
        since_ms: time(&args.from)?,
        until_ms: time(&args.to)?,
    };
    cfg.kafka.check_secrets()?;
    let o = q::run(cfg, args.out.clone(), bounds, args.partition)?;
    let skipped = if o.skipped > 0 {
        format!(", {} other messages skipped", o.skipped)
    } else {
        String::new()
    };
    println!(
        "{} block reports ({} failed) from {} ({}){skipped}; written to {}",
        o.reports,
        o.failed,
        o.topic,
        o.range,
        o.out.display()
    );
    if o.reports == 0 {
        eprintln!(
            "no block reports in {} ({}): the page says so; exit 4",
            o.topic, o.range
        );
        return Ok(ExitCode::from(4));
    }
    Ok(ExitCode::SUCCESS)
}

fn acls(cfg: &Config, args: &AclsArgs) -> anyhow::Result<ExitCode> {
    use crate::ops::acls;
    let principals = acls::principals(&args.principals).map_err(anyhow::Error::msg)?;
    let list = acls::kafka_acls(cfg, &principals);
    // The rows' table and collection: configured, or named after the schema as the sinks do.
    let default_name = || -> anyhow::Result<String> {
        let schema = crate::codec::load_schema(&cfg.sink.schema)
            .with_context(|| format!("reading sink.schema {}", cfg.sink.schema.display()))?;
        Ok(crate::stages::sinks::default_target_name(&schema))
    };
    let table = match &cfg.sink.mysql.table {
        Some(t) => t.clone(),
        None => default_name()?,
    };
    let collection = match &cfg.sink.mongo.collection {
        Some(c) => c.clone(),
        None => default_name()?,
    };
    print!(
        "{}",
        acls::render(
            &list,
            &acls::mysql_grants(cfg, &table, &args.mysql_user),
            &acls::mongo_grants(cfg, &collection)
        )
    );
    if args.execute {
        cfg.kafka.check_secrets()?;
        crate::kafka::access::probe(&cfg.kafka, std::time::Duration::from_secs(10))?;
        let n = acls::execute(cfg, &list).context("creating the Kafka ACLs")?;
        println!(
            "
created {n} Kafka ACL bindings (existing ones are left as they are)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn redrive(cfg: &Config, args: &RedriveArgs) -> anyhow::Result<ExitCode> {
    use crate::ops::{redrive, replay::parse_datetime};
    let filter = redrive::Filter {
        kinds: args.kind.clone(),
        stage: args.stage.clone(),
        since_ms: args.since.as_deref().map(parse_datetime).transpose()?,
        until_ms: args.until.as_deref().map(parse_datetime).transpose()?,
        max_attempts: args.max_attempts.max(1),
        to_topic: args.to.clone(),
    };
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let summary = runtime()?.block_on(redrive::run(
        cfg,
        args.from,
        &filter,
        args.dry_run,
        progress,
    ))?;
    print!("{}", redrive::render(&summary, args.dry_run));
    Ok(ExitCode::SUCCESS)
}

/// Runs a stage: logging to stderr and the logs topic, the `/metrics` `/healthz` `/readyz`
/// server, and the shutdown signal; the guard flushes the logs topic on the way out.
fn run_stage<T, Fut>(
    cfg: &Config,
    stage: &str,
    f: impl FnOnce(tokio_util::sync::CancellationToken) -> Fut,
) -> anyhow::Result<T>
where
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    cfg.kafka.check_secrets()?;
    let guard = crate::observability::init(Some((&cfg.common(), &cfg.observability)), stage)?;
    let rt = runtime()?;
    let result = rt.block_on(async {
        let shutdown = crate::shutdown::on_signals();
        guard.serve(shutdown.clone()).await?;
        let result = f(shutdown.clone()).await;
        // Stops the health server too.
        shutdown.cancel();
        result
    });
    guard.shutdown();
    result
}

fn replay(cfg: &Config, args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    use crate::ops::replay::{self as r, Target};
    let target = if args.to_earliest {
        Target::Earliest
    } else if args.to_latest {
        Target::Latest
    } else if let Some(s) = &args.to_offset {
        Target::Offsets(r::parse_offsets(s)?)
    } else if let Some(s) = &args.to_datetime {
        Target::Timestamp(r::parse_datetime(s)?)
    } else if let Some(n) = args.shift_by {
        Target::ShiftBy(n)
    } else {
        anyhow::bail!(
            "give one of --to-earliest, --to-latest, --to-offset, --to-datetime, --shift-by"
        );
    };
    r::preflight(cfg, args.stage)?;
    let rt = runtime()?;
    // sink-mysql resumes from its offsets table, not from the Kafka group.
    let stored = rt.block_on(crate::ops::replay_mysql::current(cfg, args.stage))?;
    let plan = r::plan(
        cfg,
        args.stage,
        &target,
        args.partition.as_deref(),
        stored.as_ref(),
    )?;
    print!("{}", r::render(&plan));
    if !args.execute {
        println!("dry run: nothing changed (add --execute to apply)");
        return Ok(ExitCode::SUCCESS);
    }
    rt.block_on(crate::ops::replay_mysql::apply(cfg, &plan))?;
    r::execute_kafka(cfg, &plan)?;
    println!(
        "done: group {} moved on {} partition(s)",
        plan.group,
        plan.partitions.len()
    );
    Ok(ExitCode::SUCCESS)
}
