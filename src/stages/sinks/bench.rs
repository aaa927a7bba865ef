//! `etl-pipe bench-sink`: the sinks against the row-by-row way.
use crate::config::Config;

use super::SinkError;

/// Options of `bench-sink`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Records to load through the sinks.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
}

/// Runs the benchmark and prints the figures.
pub async fn run(_cfg: &Config, _args: &BenchArgs) -> Result<(), SinkError> {
    Err(SinkError::Stopped)
}
