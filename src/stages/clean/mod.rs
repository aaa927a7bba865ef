//! `etl-pipe clean`: raw API JSON (`etl-pipe.raw`) → typed Avro records (`etl-pipe.cleaned`), exactly
//! once. It owns the mapping from raw fields to the cleaned schema ([`mapping`], configured by
//! `[clean]`, see [`config`]) and the lineage fields; the Kafka transactions are the shared
//! loop in [`crate::kafka::eos`].
//!
//! Per raw message: map (JSON → [`Record`](crate::record::Record)), fill lineage from the
//! headers and the message position, encode with the codec, produce to cleaned with the same
//! `traceparent`, `etl.source` and `etl.fetched_at` headers. A record that cannot be mapped
//! (or encoded) is **poison**: its original key, bytes and headers go to dead-letter with
//! `etl.error.kind` = the [`ErrorKind`] (`invalid_json`, `type`, ...) and the reason; the
//! stage goes on. Broker and registry failures are **retriable**: the transaction is aborted
//! and the records are read again.
pub mod config;
pub mod mapping;

use std::sync::Arc;

use rdkafka::message::{BorrowedMessage, Headers, Message};
use tokio_util::sync::CancellationToken;

pub use config::{CleanConfig, Derive, FieldMapping, Scalar};
pub use mapping::{ErrorKind, Lineage, Mapped, Mapper, MappingError, LINEAGE_FIELDS};

use crate::codec::{Codec, CodecError};
use crate::kafka::eos::{self, EosError, Output, Stats, Transform, TransformError};
use crate::kafka::headers as h;
use crate::observability::trace::trace_id;
use crate::settings::{Common, ConfigError, TopicRole};
use crate::stages::transactional::{self, log_stopped};

/// The stage name: consumer group `<pipeline>.clean`, metric label, `etl.error.stage`.
pub const STAGE: &str = "clean";

/// Headers carried from a raw message to its cleaned record.
const KEEP_HEADERS: [&str; 3] = [h::TRACEPARENT, h::SOURCE, h::FETCHED_AT];

#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("codec for the cleaned topic: {0}")]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Eos(#[from] EosError),
}

/// The clean stage's [`Transform`]: one raw message → one cleaned record or one dead letter.
pub struct CleanTransform {
    mapper: Mapper,
    codec: Arc<Codec>,
    cleaned: Arc<str>,
    dead_letter: Arc<str>,
    /// `clean.source_name`, else the raw topic's name.
    source_fallback: Option<String>,
}

impl CleanTransform {
    pub fn new(cfg: &Common, clean: &CleanConfig, mapper: Mapper, codec: Arc<Codec>) -> Self {
        CleanTransform {
            mapper,
            codec,
            cleaned: cfg.topics.name(TopicRole::Cleaned).into(),
            dead_letter: cfg.topics.name(TopicRole::DeadLetter).into(),
            source_fallback: clean.source_name.clone(),
        }
    }
}

impl Transform for CleanTransform {
    fn transform(
        &mut self,
        msg: &BorrowedMessage<'_>,
        out: &mut Vec<Output>,
    ) -> Result<(), TransformError> {
        // The three headers lineage reads, in one pass over the message's headers.
        let headers = msg.headers();
        let [traceparent, source, fetched_at] = headers
            .map(|hs| h::get_strs(hs, KEEP_HEADERS))
            .unwrap_or_default();
        // Just the three kept ones (extract's records): the output carries them as they are,
        // copied in one call instead of header by header.
        let only_kept = headers.filter(|hs| {
            hs.count() == KEEP_HEADERS.len()
                && fetched_at.is_some()
                && source.is_some()
                && traceparent.is_some()
        });
        let fetched_at_ms = fetched_at
            .and_then(mapping::parse_rfc3339_ms)
            .or_else(|| msg.timestamp().to_millis());
        let lineage = Lineage {
            source: source
                .or(self.source_fallback.as_deref())
                .unwrap_or(msg.topic()),
            trace_id: traceparent.and_then(trace_id),
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
            fetched_at_ms,
        };
        let mapped = match self.mapper.map(msg.payload().unwrap_or_default(), &lineage) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(
                    stage = STAGE,
                    kind = e.kind.as_str(),
                    offset = msg.offset(),
                    partition = msg.partition(),
                    trace_id = lineage.trace_id,
                    error = %e,
                    "dead letter"
                );
                out.push(Output::dead_letter(
                    self.dead_letter.clone(),
                    STAGE,
                    e.kind.as_str(),
                    &e.message,
                    msg,
                ));
                return Ok(());
            }
        };
        match self.codec.encode(&mapped.record) {
            Ok(bytes) => {
                let key = match mapped.key {
                    Some(k) => Some(k.into_bytes()),
                    None => msg.key().map(<[u8]>::to_vec),
                };
                out.push(
                    Output::to(self.cleaned.clone())
                        .key(key)
                        .payload(bytes)
                        .headers(match only_kept {
                            Some(hs) => hs.detach(),
                            None => eos::keep_headers(msg, &KEEP_HEADERS),
                        }),
                );
            }
            Err(e) if e.is_retriable() => return Err(TransformError::Retriable(e.to_string())),
            Err(e) => out.push(Output::dead_letter(
                self.dead_letter.clone(),
                STAGE,
                e.kind(),
                &e.to_string(),
                msg,
            )),
        }
        Ok(())
    }
}

/// Runs the clean stage until `shutdown` (then commits the batch in hand) or a fatal error.
pub async fn run(
    cfg: &Common,
    clean: &CleanConfig,
    shutdown: CancellationToken,
) -> Result<(), CleanError> {
    run_with_stats(cfg, clean, shutdown).await.map(|_| ())
}

/// [`run`], returning what was committed (for benchmarks and tests).
pub async fn run_with_stats(
    cfg: &Common,
    clean: &CleanConfig,
    shutdown: CancellationToken,
) -> Result<Stats, CleanError> {
    clean.validate_settings(cfg.kafka.transaction_timeout)?;
    let schema = clean.load_schema()?;
    let mapper = Mapper::new(&schema, clean)?;
    let cleaned_topic = cfg.topics.name(TopicRole::Cleaned);
    let what = "registering the cleaned schema";
    let Some(codec) =
        transactional::codec_for(cfg, schema, &cleaned_topic, what, &shutdown).await?
    else {
        return Ok(Stats::default());
    };

    let settings = transactional::settings(
        cfg,
        STAGE,
        TopicRole::Raw,
        clean.batch_size,
        clean.batch_max_age,
    );
    tracing::info!(
        stage = STAGE,
        schema = %clean.schema.display(),
        input = %settings.input_topics.join(","),
        output = %cleaned_topic,
        batch_size = clean.batch_size,
        batch_max_age = ?clean.batch_max_age,
        "clean stage starting"
    );
    let transform = CleanTransform::new(cfg, clean, mapper, Arc::new(codec));
    let stats = eos::run(cfg.kafka.clone(), settings, transform, shutdown).await?;
    // The stage's own logs go under its module path (the default target).
    log_stopped!(module_path!(), STAGE, stats);
    Ok(stats)
}
