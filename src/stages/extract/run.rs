//! The stage's run: set-up (config, HTTP client, the transactional producer, the topic check,
//! `init_transactions`, the checkpoints), then pass after pass — wait for the next one, probe
//! the API, run the pass, account for it — and the report.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::producer::Producer;
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{self, State};
use super::config::{AuthKind, ExtractConfig};
use super::http::{FetchError, HttpSource};
use super::pass::{plan, run_pass, PassOutcome};
use super::sink::{DeliveryCounter, Sink, TxnProducer};
use super::source::{self, Auth, Position, Stream};
use super::stream::Ctx;
use super::{page, transactional_id, ExtractError, RunOptions, RunReport};
use crate::settings::{Common, ConfigError, TopicRole};

/// Runs the extract stage until the pass is done (`--once`) or shutdown.
pub async fn run(
    cfg: &Common,
    x: &ExtractConfig,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<RunReport, ExtractError> {
    let t0 = Instant::now();
    let (streams, ctx) = prepare(x)?;
    let mut sink = connect(cfg, x, streams.len()).await?;
    let mut report = RunReport {
        streams: streams.len(),
        ..Default::default()
    };
    let result = passes(&ctx, &mut sink, &streams, x, &opts, &shutdown, &mut report).await;
    fill_report(&mut report, &ctx, &sink, t0);
    result.map(|()| report)
}

/// Where the token comes from, for messages (never the value).
fn secret_source(x: &ExtractConfig) -> String {
    match (&x.auth.token.env, &x.auth.token.file) {
        (Some(v), _) => format!("env {v}"),
        (_, Some(p)) => format!("file {}", p.display()),
        _ => "nowhere".into(),
    }
}

/// Validates the config, expands the streams, reads the credential, builds the HTTP client.
fn prepare(x: &ExtractConfig) -> Result<(Vec<Stream>, Arc<Ctx>), ExtractError> {
    x.validate()?;
    let streams = source::expand(x).map_err(|m| ConfigError::key("extract.url", m))?;
    let token = match x.auth.kind {
        AuthKind::None => None,
        _ => Some(x.auth.token.resolve("extract.auth.token")?),
    };
    let auth = Auth::new(x, token);
    let ctx = Arc::new(Ctx {
        cfg: x.clone(),
        http: HttpSource::new(x, auth).map_err(ExtractError::Http)?,
        records_path: page::path(&x.records_path),
        key_path: page::path(&x.key_field),
        next_field: x.pagination.next_field.as_deref().map(page::path),
    });
    Ok((streams, ctx))
}

/// The sink: a transactional producer with its transactions initialised, once the topics are
/// known to exist, and the committed checkpoints.
async fn connect(cfg: &Common, x: &ExtractConfig, streams: usize) -> Result<Sink, ExtractError> {
    let raw_topic = cfg.topics.name(TopicRole::Raw);
    let dead_letter_topic = cfg.topics.name(TopicRole::DeadLetter);
    let state_topic = cfg.topics.name(TopicRole::ExtractState);
    let txn_id = transactional_id(cfg, x);

    let (kafka, reads, writes) = (
        cfg.kafka.clone(),
        vec![state_topic.clone()],
        vec![
            raw_topic.clone(),
            dead_letter_topic.clone(),
            state_topic.clone(),
        ],
    );
    tokio::task::spawn_blocking(move || {
        crate::kafka::access::check(&kafka, "extract", &reads, &writes, Duration::from_secs(30))
    })
    .await
    .map_err(|e| ExtractError::Kafka(e.to_string()))?
    .map_err(|e| ExtractError::Kafka(e.to_string()))?;
    let producer = Arc::new(create_producer(cfg, &txn_id)?);
    let op_timeout = cfg.kafka.transaction_timeout;
    check_topics(
        &producer,
        [
            raw_topic.clone(),
            dead_letter_topic.clone(),
            state_topic.clone(),
        ],
    )
    .await?;
    init_transactions(&producer, &txn_id, op_timeout).await?;
    let mut limits = crate::kafka::eos::limits::MessageLimits::new(&cfg.kafka, op_timeout)
        .map_err(|e| ExtractError::Kafka(format!("admin client: {e}")))?;
    let raw_max = limits
        .max_for(&raw_topic)
        .await
        .map_err(|e| ExtractError::Kafka(e.to_string()))?;
    let dead_letter_max = limits
        .max_for(&dead_letter_topic)
        .await
        .map_err(|e| ExtractError::Kafka(e.to_string()))?;
    let state = load_state(cfg, x, &state_topic).await?;
    tracing::info!(
        source = %x.source,
        streams,
        transactional_id = %txn_id,
        checkpoints = state.streams.len(),
        last_pass = ?state.pass.as_ref().map(|p| (&p.pass_id, p.completed_at.is_some())),
        "extract starting"
    );
    Ok(Sink {
        producer,
        transactional_id: txn_id,
        source: x.source.clone(),
        raw_topic,
        dead_letter_topic,
        state_topic,
        op_timeout,
        raw_max,
        dead_letter_max,
        state,
        stats: Default::default(),
    })
}

fn create_producer(cfg: &Common, txn_id: &str) -> Result<TxnProducer, ExtractError> {
    let mut pc: ClientConfig = crate::kafka::transactional_producer_config(&cfg.kafka, txn_id);
    // Key-hash partitioning compatible with the Java client (a record key lands where a
    // Kafka Streams or Connect job would expect it).
    pc.set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "500000");
    pc.create_with_context(DeliveryCounter::default())
        .map_err(|e| ExtractError::Kafka(format!("creating the producer: {e}")))
}

/// Missing topics would only show as delivery timeouts minutes later: check them now.
async fn check_topics(producer: &Arc<TxnProducer>, names: [String; 3]) -> Result<(), ExtractError> {
    let p = producer.clone();
    tokio::task::spawn_blocking(move || {
        for t in &names {
            crate::kafka::partitions(p.client(), t, Duration::from_secs(15))
                .map_err(|e| ExtractError::Kafka(e.to_string()))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| ExtractError::Kafka(e.to_string()))?
}

/// Fences a previous instance with the same id and aborts its open transaction.
async fn init_transactions(
    producer: &Arc<TxnProducer>,
    txn_id: &str,
    op_timeout: Duration,
) -> Result<(), ExtractError> {
    let p = producer.clone();
    tokio::task::spawn_blocking(move || p.init_transactions(op_timeout))
        .await
        .map_err(|e| ExtractError::Kafka(e.to_string()))?
        .map_err(|e| {
            ExtractError::Kafka(format!(
                "init_transactions for `{txn_id}` (is the broker up, with transaction.state.log settings?): {e}"
            ))
        })?;
    // The transaction coordinator answered: Kafka is reachable (extract needs nothing else).
    crate::observability::health().set_kafka_connected(true);
    Ok(())
}

/// The committed checkpoints of this source.
async fn load_state(
    cfg: &Common,
    x: &ExtractConfig,
    state_topic: &str,
) -> Result<State, ExtractError> {
    let kafka = cfg.kafka.clone();
    let group = cfg.pipeline.group_id("extract-state");
    let topic = state_topic.to_string();
    let src = x.source.clone();
    tokio::task::spawn_blocking(move || {
        checkpoint::load(&kafka, &topic, &group, &src, Duration::from_secs(60))
    })
    .await
    .map_err(|e| ExtractError::State(e.to_string()))?
    .map_err(ExtractError::State)
}

/// What the pass loop does next.
enum Step {
    /// Go on with this pass, or on to the next one.
    Go,
    /// The pass is skipped: back to the top of the loop.
    Again,
    /// The run ends with this result.
    Stop(Result<(), ExtractError>),
}

/// Pass after pass until `--once` is done, shutdown, or an error that stops the stage.
async fn passes(
    ctx: &Arc<Ctx>,
    sink: &mut Sink,
    streams: &[Stream],
    x: &ExtractConfig,
    opts: &RunOptions,
    shutdown: &CancellationToken,
    report: &mut RunReport,
) -> Result<(), ExtractError> {
    let mut fresh = opts.fresh;
    loop {
        // Continuous mode: the next pass starts `interval` after the last one started.
        if !opts.once && !fresh && !wait_for_next_pass(&sink.state, x, shutdown).await {
            return Ok(());
        }
        if shutdown.is_cancelled() {
            report.interrupted = true;
            return Ok(());
        }
        let plan = plan(&sink.state, streams, x, fresh);
        fresh = false;

        match probe(ctx, streams, x, opts, shutdown, report).await? {
            Step::Go => {}
            Step::Again => continue,
            Step::Stop(result) => return result,
        }

        report.passes += 1;
        report.pass_id = Some(plan.pass.pass_id.clone());
        report.resumed = !plan.new_pass;
        report.streams_skipped = plan.skipped;
        tracing::info!(
            pass_id = %plan.pass.pass_id,
            resumed = !plan.new_pass,
            streams = plan.starts.len(),
            skipped = plan.skipped,
            "pass starting"
        );
        let outcome = run_pass(ctx, sink, streams, plan, x, shutdown).await;
        let completed = outcome.completed;
        if let Step::Stop(result) = account(report, outcome, x) {
            return result;
        }
        if opts.once {
            return Ok(());
        }
        if !completed {
            // Retry the unfinished streams after the interval.
            tokio::select! {
                _ = tokio::time::sleep(x.interval) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

/// Waits until `interval` after the start of the last pass, if it completed. `false`: shutdown
/// came first.
async fn wait_for_next_pass(
    state: &State,
    x: &ExtractConfig,
    shutdown: &CancellationToken,
) -> bool {
    let Some(p) = state.pass.as_ref().filter(|p| p.completed_at.is_some()) else {
        return true;
    };
    let due = p.started_at + x.interval;
    let wait = (due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    if !wait.is_zero() {
        tracing::info!(next_pass_at = %due, "waiting for the next pass");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
    true
}

/// The availability check before a pass: a rejected credential stops the stage; an API that
/// is down stops `--once` and skips the pass otherwise.
async fn probe(
    ctx: &Ctx,
    streams: &[Stream],
    x: &ExtractConfig,
    opts: &RunOptions,
    shutdown: &CancellationToken,
    report: &mut RunReport,
) -> Result<Step, ExtractError> {
    if !x.probe.enabled {
        return Ok(Step::Go);
    }
    let first_page = match source::position_url(x, &streams[0], &Position::start(x, &streams[0])) {
        Ok(Some(u)) => u,
        _ => reqwest::Url::parse(&streams[0].url)
            .map_err(|e| ConfigError::key("extract.url", e.to_string()))?,
    };
    let probe_url = match &x.probe.url {
        Some(u) => reqwest::Url::parse(u)
            .map_err(|e| ConfigError::key("extract.probe.url", e.to_string()))?,
        None => first_page.clone(),
    };
    // The first page probed is not fetched again: the pass takes the probe's answer.
    let keep = probe_url == first_page;
    match ctx
        .http
        .probe(&probe_url, x.probe.attempts, keep, shutdown)
        .await
    {
        Ok(()) => Ok(Step::Go),
        Err(FetchError::Cancelled) => {
            report.interrupted = true;
            Ok(Step::Stop(Ok(())))
        }
        Err(FetchError::Rejected { status, url }) => Ok(Step::Stop(Err(ExtractError::Rejected {
            status,
            url,
            secret: secret_source(x),
        }))),
        Err(FetchError::Failed {
            url,
            attempts,
            reason,
        }) => {
            let err = ExtractError::Unavailable {
                url,
                attempts,
                reason,
            };
            report.unavailable += 1;
            metrics::counter!("etl_extract_source_unavailable_total").increment(1);
            if opts.once {
                return Ok(Step::Stop(Err(err)));
            }
            tracing::error!(error = %err, retry_in_s = x.interval.as_secs(), "source unavailable; the pass is skipped");
            tokio::select! {
                _ = tokio::time::sleep(x.interval) => Ok(Step::Again),
                _ = shutdown.cancelled() => Ok(Step::Stop(Ok(()))),
            }
        }
    }
}

/// Adds a pass's outcome to the report: `Stop` when the run ends with it.
fn account(report: &mut RunReport, outcome: PassOutcome, x: &ExtractConfig) -> Step {
    report.failed = outcome.failed.clone();
    if let Err(e) = outcome.result {
        return Step::Stop(Err(e));
    }
    if let Some((status, url)) = outcome.rejected {
        return Step::Stop(Err(ExtractError::Rejected {
            status,
            url,
            secret: secret_source(x),
        }));
    }
    if outcome.completed {
        report.completed += 1;
        metrics::counter!("etl_extract_passes_total", "outcome" => "completed").increment(1);
    } else if outcome.cancelled {
        report.interrupted = true;
        return Step::Stop(Ok(()));
    } else {
        metrics::counter!("etl_extract_passes_total", "outcome" => "failed").increment(1);
        tracing::error!(
            failed = outcome.failed.len(),
            "pass ended with failed requests; their streams resume on the next run"
        );
    }
    Step::Go
}

/// The HTTP and sink counters of the run.
fn fill_report(report: &mut RunReport, ctx: &Ctx, sink: &Sink, t0: Instant) {
    let s = &ctx.http.stats;
    report.requests = s.requests.load(Ordering::Relaxed);
    report.retries = s.retries.load(Ordering::Relaxed);
    report.rate_limited = s.rate_limited.load(Ordering::Relaxed);
    report.http_bytes = s.bytes.load(Ordering::Relaxed);
    report.pages = sink.stats.pages;
    report.records = sink.stats.records;
    report.dead_letters = sink.stats.dead_letters;
    report.payload_bytes = sink.stats.payload_bytes;
    report.transactions = sink.stats.transactions;
    report.aborted_transactions = sink.stats.aborted;
    report.elapsed = t0.elapsed();
}
