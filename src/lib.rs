//! etl-pipe: a Kafka-native streaming ETL pipeline.
//!
//! Stages are independent processes connected by Kafka topics:
//! `extract` (HTTP API → raw), `clean` (raw → cleaned Avro, dead letters),
//! `score` (cleaned → scored, quality windows, quarantine), `sink-mysql` and
//! `sink-mongo` (scored → databases). Each stage is a module under [`stages`]
//! with one entry point, `run(config, shutdown)`.
//!
//! - [`config`]: the typed TOML configuration, environment overrides, secrets, `validate()`.
//! - [`cli`]: the clap subcommands.
//! - [`kafka`]: client setup, headers, the dead-letter envelope, topic management.
//! - [`shutdown`]: the one cancellation signal every loop selects on.
//! - [`sample_api`]: the demo HTTP API the extract stage pulls from (`etl-pipe sample-api`).
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
