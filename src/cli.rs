//! The command line: one subcommand per stage or operation. Doc comments are the help text.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::kafka::topics::{self, TopicOutcome};

/// etl-pipe: a Kafka-native streaming ETL pipeline.
#[derive(Debug, Parser)]
#[command(name = "etl-pipe", version, about)]
pub struct Cli {
    /// Config file (TOML). Every key can also be set with ETL__SECTION__KEY environment variables.
    #[arg(long, short, global = true, env = "ETL_CONFIG")]
    pub config: Option<PathBuf>,
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
    /// Pull records from the HTTP API (`[extract]`) into the raw topic: a pass every
    /// `extract.interval`, or one pass with `--once`. Resumes from checkpoints after a restart.
    Extract(crate::stages::extract::ExtractArgs),
    /// Serve the demo league-entries API (deterministic data, token, rate limit, faults, drift).
    SampleApi(crate::sample_api::SampleApiArgs),
    /// Benchmark the extract stage: an in-process sample API into fresh topics, one pass.
    BenchExtract(crate::stages::extract::BenchArgs),
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
    Ok(Config::load(cli.config.as_deref())?)
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
        } => {
            let cfg = load(&cli)?;
            println!("{}", cfg.to_toml());
            for line in cfg.secret_status() {
                println!("# secret {line}");
            }
            eprintln!("config OK");
            Ok(ExitCode::SUCCESS)
        }
        Command::Topics {
            command: TopicsCommand::Apply,
        } => {
            let cfg = load(&cli)?;
            let specs = cfg.topics.all()?;
            let results = runtime()?.block_on(topics::apply(&cfg.kafka, &specs))?;
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
                            println!(
                                "            {line} (left as it is; change it by hand if intended)"
                            );
                        }
                    }
                }
            }
            Ok(if differs {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Extract(args) => {
            let cfg = load(&cli)?;
            let _obs = crate::observability::init("extract");
            Ok(runtime()?.block_on(crate::stages::extract::cli_run(&cfg, args))?)
        }
        Command::SampleApi(args) => {
            let _obs = crate::observability::init("sample-api");
            runtime()?
                .block_on(async {
                    crate::sample_api::serve(args, crate::shutdown::on_signals()).await
                })
                .map_err(anyhow::Error::msg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchExtract(args) => {
            let cfg = load(&cli)?;
            let _obs = crate::observability::init("bench-extract");
            runtime()?.block_on(crate::stages::extract::cli_bench(&cfg, args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
