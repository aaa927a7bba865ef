//! Setting the score stage up and running it: the resolved config, the codecs of the
//! cleaned and scored topics, the baseline (file, store or none), then the exactly-once
//! loop with a [`ScoreTransform`].
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::baseline::{self, Baselines};
use super::config::Resolved;
use super::transform::{Parts, ScoreTransform};
use super::{ScoreConfig, ScoreError, LOG_TARGET, STAGE};
use crate::kafka::eos::{self, Stats};
use crate::quality::{Baseline, FieldSpec, QualityConfig};
use crate::retry::{retry, Stopped};
use crate::settings::{Common, TopicRole};
use crate::stages::clean::CleanConfig;
use crate::stages::transactional::{self, log_stopped};

/// Runs the score stage until `shutdown` (then commits the batch in hand) or a fatal error.
/// `clean` is the clean stage's mapping: its key and linear derived fields are not profiled.
pub async fn run(
    cfg: &Common,
    score: &ScoreConfig,
    quality: &QualityConfig,
    clean: &CleanConfig,
    shutdown: CancellationToken,
) -> Result<(), ScoreError> {
    run_with_stats(cfg, score, quality, clean, shutdown)
        .await
        .map(|_| ())
}

/// [`run`], returning what was committed (for benchmarks and tests).
pub async fn run_with_stats(
    cfg: &Common,
    score: &ScoreConfig,
    quality: &QualityConfig,
    clean: &CleanConfig,
    shutdown: CancellationToken,
) -> Result<Stats, ScoreError> {
    let Resolved {
        schema_in,
        schema_out,
        specs,
        baseline: file,
    } = score.resolve(cfg.kafka.transaction_timeout, clean)?;
    let cleaned_topic = cfg.topics.name(TopicRole::Cleaned);
    let scored_topic = cfg.topics.name(TopicRole::Scored);
    let what = format!("registering the schema of {cleaned_topic}");
    let Some(codec_in) =
        transactional::reader_codec_for(cfg, schema_in, &cleaned_topic, &what, &shutdown).await?
    else {
        return Ok(Stats::default());
    };
    // Records written with an older version of the cleaned schema stay readable.
    let older = codec_in.add_history(&score.schema_in)?;
    let what = format!("registering the schema of {scored_topic}");
    let Some(codec_out) =
        transactional::codec_for(cfg, schema_out, &scored_topic, &what, &shutdown).await?
    else {
        return Ok(Stats::default());
    };
    let handle = tokio::runtime::Handle::current();
    let opened = baselines(cfg, score, quality, file, &specs, &handle, &shutdown).await?;
    let Some(baselines) = opened else {
        return Ok(Stats::default());
    };

    let settings = transactional::settings(
        cfg,
        STAGE,
        TopicRole::Cleaned,
        score.batch_size,
        score.batch_max_age,
    );
    let info = baselines.info();
    tracing::info!(
        target: LOG_TARGET,
        stage = STAGE,
        input = %settings.input_topics.join(","),
        scored = %scored_topic,
        window_records = score.window_records,
        policy = %score.policy,
        fields = %specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(","),
        baseline = ?info.source,
        baseline_rows = info.rows,
        older_input_schemas = older,
        "score stage starting"
    );
    let parts = Parts {
        codec_in: Arc::new(codec_in),
        codec_out: Arc::new(codec_out),
        specs,
        baselines,
        handle,
        shutdown: shutdown.clone(),
    };
    let transform =
        ScoreTransform::new(cfg, score, quality, parts).map_err(ScoreError::Baseline)?;
    let stats = eos::run(cfg.kafka.clone(), settings, transform, shutdown).await?;
    log_stopped!(LOG_TARGET, STAGE, stats);
    Ok(stats)
}

/// The baseline manager: the `score.baseline` file (already loaded), none, or the store
/// (waiting for the broker while it is unavailable). `None` when shutdown came first.
async fn baselines(
    cfg: &Common,
    score: &ScoreConfig,
    quality: &QualityConfig,
    file: Option<Baseline>,
    specs: &[FieldSpec],
    handle: &tokio::runtime::Handle,
    shutdown: &CancellationToken,
) -> Result<Option<Baselines>, ScoreError> {
    match (file, &score.baseline) {
        (Some(b), Some(path)) => {
            return Ok(Some(Baselines::from_file(b, &path.display().to_string())))
        }
        _ if score.baseline_from_first_records == 0 => return Ok(Some(Baselines::none())),
        _ => {}
    }
    let target = score.baseline_from_first_records;
    let opened = retry(
        "reading the baseline store",
        transactional::backoff(),
        shutdown,
        |e: &baseline::OpenError| matches!(e, baseline::OpenError::Retriable(_)),
        || {
            let (c, q) = (cfg.clone(), quality.clone());
            let (specs, h) = (specs.to_vec(), handle.clone());
            async move {
                tokio::task::spawn_blocking(move || Baselines::open_store(&c, &q, specs, target, h))
                    .await
                    .map_err(|e| baseline::OpenError::Fatal(e.to_string()))?
            }
        },
    )
    .await;
    match opened {
        Ok(b) => Ok(Some(b)),
        Err(Stopped::Cancelled) => Ok(None),
        Err(Stopped::Permanent(e)) => Err(ScoreError::Baseline(e.to_string())),
    }
}
