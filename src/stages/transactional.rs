//! What the exactly-once stages (clean, score) share around the loop of
//! [`crate::kafka::eos`]: the loop's settings, waiting for the schema registry to get a codec,
//! and the log line that says what a run committed.
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::codec::{Codec, CodecError};
use crate::kafka::eos::Settings;
use crate::record::RecordSchema;
use crate::retry::{retry, Backoff, Stopped};
use crate::settings::{Common, TopicRole};

/// How a stage waits at start-up for a service it needs (schema registry, baseline store):
/// 0.5 s doubling to 30 s.
pub(crate) fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
}

/// The loop settings of `stage` reading `input`, with its own batch bounds.
pub(crate) fn settings(
    cfg: &Common,
    stage: &'static str,
    input: TopicRole,
    batch_size: usize,
    batch_max_age: Duration,
) -> Settings {
    let mut settings = Settings::for_stage(cfg, stage, input);
    settings.batch_size = batch_size;
    settings.batch_max_age = batch_max_age;
    settings
}

/// The writer codec for `topic`. With a schema registry, registering the schema needs it up:
/// that is retriable, so wait for it (`what` names the wait in the retry log); refused
/// credentials or an untrusted certificate stop the stage ([`CodecError::is_refusal`]).
/// `None` when shutdown came first.
pub(crate) async fn codec_for(
    cfg: &Common,
    schema: RecordSchema,
    topic: &str,
    what: &str,
    shutdown: &CancellationToken,
) -> Result<Option<Codec>, CodecError> {
    let retriable = |e: &CodecError| e.is_retriable() && !e.is_refusal();
    match retry(what, backoff(), shutdown, retriable, || {
        Codec::writer(&cfg.kafka, schema.clone(), topic)
    })
    .await
    {
        Ok(c) => Ok(Some(c)),
        Err(Stopped::Cancelled) => Ok(None),
        Err(Stopped::Permanent(e)) => Err(e),
    }
}

/// The reader codec of an input topic: it registers nothing (the writer does), so it needs
/// no registry at start-up; it looks writer schemas up by id as messages come. Same shape
/// as [`codec_for`] so a stage switches with one word.
pub(crate) async fn reader_codec_for(
    cfg: &Common,
    schema: RecordSchema,
    _topic: &str,
    _what: &str,
    _shutdown: &CancellationToken,
) -> Result<Option<Codec>, CodecError> {
    Codec::reader(&cfg.kafka, schema).map(Some)
}

/// Logs `<stage> stage stopped` with what the run committed ([`Stats`](crate::kafka::eos::Stats)).
/// A macro, not a function: a `tracing` target must be a constant, and each stage keeps its own.
macro_rules! log_stopped {
    ($target:expr, $stage:expr, $stats:expr) => {
        tracing::info!(
            target: $target,
            stage = $stage,
            records_in = $stats.records_in,
            records_out = $stats.records_out,
            dead_letters = $stats.dead_letters,
            transactions = $stats.transactions,
            aborts = $stats.aborts,
            "{} stage stopped",
            $stage
        )
    };
}
pub(crate) use log_stopped;
