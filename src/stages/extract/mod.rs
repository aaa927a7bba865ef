//! The extract stage: HTTP API → `raw` (and `dead-letter`), with checkpoints in
//! `extract_state`.
//!
//! A *pass* fetches every stream (one expanded URL template) page by page, `concurrency`
//! streams at a time, through one rate limiter. Pages flow to one transactional producer that
//! commits records, dead letters and the streams' checkpoints together, so after a crash the
//! next run resumes each stream at the first page whose records are not committed: no record
//! is lost and none is written twice (readers use `read_committed`).
//!
//! `--once` runs one pass (resuming an unfinished one); otherwise a pass starts every
//! `extract.interval`. Before each pass the API is probed: a rejected credential stops the
//! stage, an API that is down is retried with backoff and then reported.
//!
//! `run.rs` sets the stage up and loops over passes, `pass.rs` plans and runs one pass,
//! `stream.rs` pages through one stream; `http.rs` asks the API, `page.rs` splits a body into
//! records, `sink.rs` writes them to Kafka with the checkpoints of `checkpoint.rs`.
pub mod checkpoint;
pub mod config;
pub mod http;
pub mod page;
mod pass;
mod report;
mod run;
pub mod sink;
pub mod source;
mod stream;

use tokio_util::sync::CancellationToken;

use crate::settings::{Common, ConfigError};
use config::ExtractConfig;

pub use report::{FailedRequest, RunReport};
pub use run::run;

/// `etl-pipe extract` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ExtractArgs {
    /// One pass (resuming an unfinished one), then exit: 0 when complete, 2 when requests failed.
    #[arg(long)]
    pub once: bool,
    /// Ignore the checkpoints: the first pass starts over.
    #[arg(long)]
    pub fresh: bool,
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// One pass, then return (resumes an unfinished pass first).
    pub once: bool,
    /// Ignore checkpoints: the first pass starts over.
    pub fresh: bool,
}

/// Errors that stop the stage.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "the API rejected the credential: HTTP {status} from {url}; check extract.auth.token (read from {secret}). Not retried"
    )]
    Rejected {
        status: u16,
        url: String,
        secret: String,
    },
    #[error(
        "the API is unavailable: {url} failed after {attempts} probe attempts (last: {reason})"
    )]
    Unavailable {
        url: String,
        attempts: u32,
        reason: String,
    },
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("fenced: another extractor with transactional id `{0}` has started; this one stops")]
    Fenced(String),
    #[error("extract state: {0}")]
    State(String),
    #[error("{0}")]
    Http(String),
}

/// The CLI entry: runs until done or a signal; prints the report.
pub async fn cli_run(
    cfg: &Common,
    x: &ExtractConfig,
    args: &ExtractArgs,
    shutdown: CancellationToken,
) -> Result<std::process::ExitCode, ExtractError> {
    let report = run(
        cfg,
        x,
        RunOptions {
            once: args.once,
            fresh: args.fresh,
        },
        shutdown,
    )
    .await?;
    print!("{report}");
    Ok(if report.failed.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(2)
    })
}

/// The transactional id of an extractor: stable per source, so a restarted extractor fences
/// its predecessor and takes over its checkpoints.
pub fn transactional_id(cfg: &Common, x: &ExtractConfig) -> String {
    format!("{}.extract.{}", cfg.pipeline.name, x.source)
}
