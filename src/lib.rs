//! etl-pipe: a Kafka-native streaming ETL pipeline.
//!
//! Stages are independent processes connected by Kafka topics:
//! `extract` (HTTP API → raw), `clean` (raw → cleaned Avro, dead letters),
//! `score` (cleaned → scored, quality windows, quarantine), `sink-mysql` and
//! `sink-mongo` (scored → databases). Each stage is a module under [`stages`]
//! with one entry point, `run(common, own config…, shutdown)`.
//!
//! Layers, from the bottom (a module imports only those below it):
//! - [`settings`]: what every part shares — pipeline name/instance, Kafka connection, topic
//!   roles and names, secrets, `ConfigError`. Knows no stage.
//! - [`record`], [`retry`], [`shutdown`]: the record model, the one backoff policy, the one
//!   cancellation signal.
//! - [`codec`] (Avro, framing, registry), [`kafka`] (client configs, headers, dead-letter
//!   envelope, topics, the exactly-once loop), [`quality`] (missing ratio, PSI, VIF, windows,
//!   decisions), [`observability`] (logs topic, metrics, health).
//! - [`stages`]: extract, clean, score, sinks (a folder per sink). Each owns its config type.
//! - [`config`]: the whole TOML file assembled above the stages (load, env overrides, validate).
//! - [`ops`]: replay, redrive, status — operations a person runs against a pipeline.
//! - [`tooling`]: sample API, local runner (demo, bench-e2e, tests), bench commands.
//! - [`cli`]: the clap subcommands; `main.rs` only parses and exits.
//!
//! `tests/layout.rs` checks that the pipeline layers never import `config`, `ops`, `tooling`
//! or `cli`.
pub mod cli;
pub mod codec;
pub mod config;
pub mod kafka;
pub mod observability;
pub mod ops;
pub mod quality;
pub mod record;
pub mod retry;
pub mod settings;
pub mod shutdown;
pub mod stages;
pub mod tooling;
