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
pub mod checkpoint;
pub mod config;
pub mod http;
pub mod page;
pub mod sink;
pub mod source;

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::producer::Producer;
use rdkafka::ClientConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::settings::{Common, ConfigError, TopicRole};
use checkpoint::{PassState, State};
use config::{AuthKind, ExtractConfig, PaginationMode};
use http::{FetchError, HttpSource};
use page::parse_page;
use sink::{DeliveryCounter, Msg, PageOut, Sink};
use source::{Auth, Position, Stream};

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

/// A request given up on; its stream stops there and resumes there on the next run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRequest {
    pub stream: String,
    /// Redacted.
    pub url: String,
    pub attempts: u32,
    pub reason: String,
}

impl fmt::Display for FailedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] after {} attempt(s): {}",
            self.url, self.stream, self.attempts, self.reason
        )
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Passes started or resumed.
    pub passes: u32,
    /// Passes completed (every stream to its end).
    pub completed: u32,
    /// Id of the last pass.
    pub pass_id: Option<String>,
    /// The last pass was resumed from checkpoints.
    pub resumed: bool,
    /// Streams skipped because a checkpoint said they were done.
    pub streams_skipped: usize,
    pub streams: usize,
    pub requests: u64,
    pub retries: u64,
    pub rate_limited: u64,
    pub http_bytes: u64,
    pub pages: u64,
    pub records: u64,
    pub dead_letters: u64,
    pub payload_bytes: u64,
    pub transactions: u64,
    pub aborted_transactions: u64,
    /// Requests given up on in the last pass.
    pub failed: Vec<FailedRequest>,
    /// Probes that found the API down (continuous mode keeps going).
    pub unavailable: u32,
    pub interrupted: bool,
    pub elapsed: Duration,
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "extract: {} pass(es), {} completed{}{}",
            self.passes,
            self.completed,
            if self.resumed {
                ", last one resumed from checkpoints"
            } else {
                ""
            },
            if self.interrupted {
                ", interrupted"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  records {} -> raw, {} -> dead-letter, {} pages, {} transactions ({} aborted)",
            self.records,
            self.dead_letters,
            self.pages,
            self.transactions,
            self.aborted_transactions
        )?;
        writeln!(
            f,
            "  requests {} ({} retries, {} rate limited), {:.1} MB received, {:.1}s",
            self.requests,
            self.retries,
            self.rate_limited,
            self.http_bytes as f64 / 1e6,
            self.elapsed.as_secs_f64()
        )?;
        if self.streams_skipped > 0 {
            writeln!(
                f,
                "  {} stream(s) already done in this pass, skipped",
                self.streams_skipped
            )?;
        }
        if !self.failed.is_empty() {
            writeln!(
                f,
                "  FAILED requests ({}); their streams resume there on the next run:",
                self.failed.len()
            )?;
            for r in &self.failed {
                writeln!(f, "    {r}")?;
            }
        }
        Ok(())
    }
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

/// Where the token comes from, for messages (never the value).
fn secret_source(x: &ExtractConfig) -> String {
    match (&x.auth.token.env, &x.auth.token.file) {
        (Some(v), _) => format!("env {v}"),
        (_, Some(p)) => format!("file {}", p.display()),
        _ => "nowhere".into(),
    }
}

/// The transactional id of an extractor: stable per source, so a restarted extractor fences
/// its predecessor and takes over its checkpoints.
pub fn transactional_id(cfg: &Common, x: &ExtractConfig) -> String {
    format!("{}.extract.{}", cfg.pipeline.name, x.source)
}

struct Ctx {
    cfg: ExtractConfig,
    http: HttpSource,
    records_path: Vec<String>,
    key_path: Vec<String>,
    next_field: Option<Vec<String>>,
}

enum StreamEnd {
    Done,
    Failed(FailedRequest),
    Rejected { status: u16, url: String },
    Cancelled,
}

/// Fetches one stream from `pos` to its end, sending every page to the sink.
async fn run_stream(
    ctx: &Ctx,
    stream: &Stream,
    mut pos: Position,
    mut pages_done: u64,
    tx: &mpsc::Sender<Msg>,
    cancel: &CancellationToken,
) -> StreamEnd {
    let id: Arc<str> = Arc::from(stream.id.as_str());
    loop {
        let url = match source::position_url(&ctx.cfg, stream, &pos) {
            Ok(Some(u)) => u,
            Ok(None) => return StreamEnd::Done,
            Err(reason) => {
                return StreamEnd::Failed(FailedRequest {
                    stream: stream.id.clone(),
                    url: ctx.http.auth.redact(&stream.url),
                    attempts: 0,
                    reason,
                })
            }
        };
        let shown = ctx.http.auth.redact(url.as_str());
        let max = ctx.cfg.pagination.max_pages;
        if max > 0 && pages_done >= max {
            tracing::warn!(stream = %id, max_pages = max, "extract.pagination.max_pages reached; stream ends here");
            let out = PageOut {
                stream: id.clone(),
                url: shown,
                fetched_at: Utc::now(),
                page: Default::default(),
                next: Position::Done,
            };
            return match tx.send(Msg::Page(out)).await {
                Ok(()) => StreamEnd::Done,
                Err(_) => StreamEnd::Cancelled,
            };
        }
        let fetched = ctx
            .http
            .fetch(&url, &stream.id, cancel, |ans| {
                let page = parse_page(
                    ans.body,
                    &ctx.records_path,
                    &ctx.key_path,
                    ctx.next_field.as_deref(),
                )
                .map_err(|e| e.to_string())?;
                Ok((page, ans.link, ans.fetched_at))
            })
            .await;
        let (page, link, fetched_at) = match fetched {
            Ok(v) => v,
            Err(FetchError::Cancelled) => return StreamEnd::Cancelled,
            Err(FetchError::Rejected { status, url }) => {
                return StreamEnd::Rejected { status, url }
            }
            Err(FetchError::Failed {
                url,
                attempts,
                reason,
            }) => {
                tracing::error!(stream = %id, url = %url, attempts, reason = %reason, "request failed; stream stops for this run");
                return StreamEnd::Failed(FailedRequest {
                    stream: stream.id.clone(),
                    url,
                    attempts,
                    reason,
                });
            }
        };
        let next = match (&ctx.cfg.pagination.mode, &pos) {
            (PaginationMode::Page, Position::Page(n)) => {
                if page.elements() == 0 {
                    Position::Done
                } else {
                    Position::Page(n + 1)
                }
            }
            (PaginationMode::NextLink, _) => {
                let target = match &ctx.next_field {
                    Some(_) => page.next_link.clone(),
                    None => link.as_deref().and_then(source::link_header_next),
                };
                match target {
                    None => Position::Done,
                    Some(t) => match source::resolve_link(&url, &t) {
                        Ok(u) => {
                            let u = ctx.http.auth.strip(&u);
                            if u == url {
                                tracing::warn!(stream = %id, "next link points at the same page; stream ends");
                                Position::Done
                            } else {
                                Position::Url(u.to_string())
                            }
                        }
                        Err(reason) => {
                            return StreamEnd::Failed(FailedRequest {
                                stream: stream.id.clone(),
                                url: shown,
                                attempts: 1,
                                reason: ctx.http.auth.redact(&reason),
                            })
                        }
                    },
                }
            }
            _ => Position::Done,
        };
        let done = next == Position::Done;
        let out = PageOut {
            stream: id.clone(),
            url: shown,
            fetched_at,
            page,
            next: next.clone(),
        };
        if tx.send(Msg::Page(out)).await.is_err() {
            return StreamEnd::Cancelled;
        }
        pages_done += 1;
        if done {
            return StreamEnd::Done;
        }
        pos = next;
    }
}

/// Where each stream starts in this pass, and the pass record.
struct Plan {
    pass: PassState,
    new_pass: bool,
    starts: Vec<(usize, Position, u64)>,
    skipped: usize,
}

fn plan(state: &State, streams: &[Stream], cfg: &ExtractConfig, fresh: bool) -> Plan {
    let resumable = state
        .pass
        .as_ref()
        .filter(|p| p.completed_at.is_none() && cfg.resume && !fresh);
    match resumable {
        Some(p) => {
            let mut starts = Vec::new();
            let mut skipped = 0;
            for (i, s) in streams.iter().enumerate() {
                match state.streams.get(&s.id).filter(|c| c.pass_id == p.pass_id) {
                    Some(c) if c.position == Position::Done => skipped += 1,
                    Some(c) => {
                        let compatible = matches!(
                            (&c.position, cfg.pagination.mode),
                            (Position::Page(_), PaginationMode::Page)
                                | (Position::Url(_), PaginationMode::NextLink)
                        );
                        if compatible {
                            starts.push((i, c.position.clone(), c.pages));
                        } else {
                            tracing::warn!(stream = %s.id, "checkpoint does not fit extract.pagination; stream starts over");
                            starts.push((i, Position::start(cfg, s), 0));
                        }
                    }
                    None => starts.push((i, Position::start(cfg, s), 0)),
                }
            }
            Plan {
                pass: p.clone(),
                new_pass: false,
                starts,
                skipped,
            }
        }
        None => Plan {
            pass: PassState {
                pass_id: uuid::Uuid::new_v4().to_string(),
                started_at: Utc::now(),
                completed_at: None,
                streams: streams.len(),
            },
            new_pass: true,
            starts: streams
                .iter()
                .enumerate()
                .map(|(i, s)| (i, Position::start(cfg, s), 0))
                .collect(),
            skipped: 0,
        },
    }
}

/// Runs the extract stage until the pass is done (`--once`) or shutdown.
pub async fn run(
    cfg: &Common,
    x: &ExtractConfig,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<RunReport, ExtractError> {
    let t0 = Instant::now();
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
    let raw_topic = cfg.topics.name(TopicRole::Raw);
    let dead_letter_topic = cfg.topics.name(TopicRole::DeadLetter);
    let state_topic = cfg.topics.name(TopicRole::ExtractState);
    let txn_id = transactional_id(cfg, x);

    let mut pc: ClientConfig = crate::kafka::transactional_producer_config(&cfg.kafka, &txn_id);
    // Key-hash partitioning compatible with the Java client (a record key lands where a
    // Kafka Streams or Connect job would expect it).
    pc.set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "500000");
    let producer: sink::TxnProducer = pc
        .create_with_context(DeliveryCounter::default())
        .map_err(|e| ExtractError::Kafka(format!("creating the producer: {e}")))?;
    let producer = Arc::new(producer);
    let op_timeout = cfg.kafka.transaction_timeout;
    {
        // Missing topics would only show as delivery timeouts minutes later: check them now.
        let p = producer.clone();
        let names = [
            raw_topic.clone(),
            dead_letter_topic.clone(),
            state_topic.clone(),
        ];
        tokio::task::spawn_blocking(move || {
            for t in &names {
                let md = p
                    .client()
                    .fetch_metadata(Some(t), Duration::from_secs(15))
                    .map_err(|e| ExtractError::Kafka(format!("metadata of topic {t}: {e}")))?;
                let ok = md
                    .topics()
                    .first()
                    .is_some_and(|m| m.error().is_none() && !m.partitions().is_empty());
                if !ok {
                    return Err(ExtractError::Kafka(format!(
                        "topic {t} does not exist; create the pipeline's topics with `etl-pipe topics apply`"
                    )));
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| ExtractError::Kafka(e.to_string()))??;
    }
    {
        // Fences a previous instance with the same id and aborts its open transaction.
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
    }
    let state = {
        let kafka = cfg.kafka.clone();
        let group = cfg.pipeline.group_id("extract-state");
        let topic = state_topic.clone();
        let src = x.source.clone();
        tokio::task::spawn_blocking(move || {
            checkpoint::load(&kafka, &topic, &group, &src, Duration::from_secs(60))
        })
        .await
        .map_err(|e| ExtractError::State(e.to_string()))?
        .map_err(ExtractError::State)?
    };
    tracing::info!(
        source = %x.source,
        streams = streams.len(),
        transactional_id = %txn_id,
        checkpoints = state.streams.len(),
        last_pass = ?state.pass.as_ref().map(|p| (&p.pass_id, p.completed_at.is_some())),
        "extract starting"
    );
    let mut sink = Sink {
        producer,
        transactional_id: txn_id,
        source: x.source.clone(),
        raw_topic,
        dead_letter_topic,
        state_topic,
        op_timeout,
        state,
        stats: Default::default(),
    };

    let mut report = RunReport {
        streams: streams.len(),
        ..Default::default()
    };
    let mut fresh = opts.fresh;
    let result = loop {
        // Continuous mode: the next pass starts `interval` after the last one started.
        if !opts.once {
            if let Some(p) = sink
                .state
                .pass
                .as_ref()
                .filter(|p| p.completed_at.is_some())
            {
                if !fresh {
                    let due = p.started_at + x.interval;
                    let wait = (due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    if !wait.is_zero() {
                        tracing::info!(next_pass_at = %due, "waiting for the next pass");
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.cancelled() => break Ok(()),
                        }
                    }
                }
            }
        }
        if shutdown.is_cancelled() {
            report.interrupted = true;
            break Ok(());
        }
        let plan = plan(&sink.state, &streams, x, fresh);
        fresh = false;

        // The availability check.
        let probe_url = match &x.probe.url {
            Some(u) => reqwest::Url::parse(u)
                .map_err(|e| ConfigError::key("extract.probe.url", e.to_string()))?,
            None => match source::position_url(x, &streams[0], &Position::start(x, &streams[0])) {
                Ok(Some(u)) => u,
                _ => reqwest::Url::parse(&streams[0].url)
                    .map_err(|e| ConfigError::key("extract.url", e.to_string()))?,
            },
        };
        match ctx
            .http
            .probe(&probe_url, x.probe.attempts, &shutdown)
            .await
        {
            Ok(()) => {}
            Err(FetchError::Cancelled) => {
                report.interrupted = true;
                break Ok(());
            }
            Err(FetchError::Rejected { status, url }) => {
                break Err(ExtractError::Rejected {
                    status,
                    url,
                    secret: secret_source(x),
                })
            }
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
                    break Err(err);
                }
                tracing::error!(error = %err, retry_in_s = x.interval.as_secs(), "source unavailable; the pass is skipped");
                tokio::select! {
                    _ = tokio::time::sleep(x.interval) => continue,
                    _ = shutdown.cancelled() => break Ok(()),
                }
            }
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
        let outcome = run_pass(&ctx, &mut sink, &streams, plan, x, &shutdown).await;
        report.failed = outcome.failed.clone();
        if let Err(e) = outcome.result {
            break Err(e);
        }
        if let Some((status, url)) = outcome.rejected {
            break Err(ExtractError::Rejected {
                status,
                url,
                secret: secret_source(x),
            });
        }
        if outcome.completed {
            report.completed += 1;
            metrics::counter!("etl_extract_passes_total", "outcome" => "completed").increment(1);
        } else if outcome.cancelled {
            report.interrupted = true;
            break Ok(());
        } else {
            metrics::counter!("etl_extract_passes_total", "outcome" => "failed").increment(1);
            tracing::error!(
                failed = outcome.failed.len(),
                "pass ended with failed requests; their streams resume on the next run"
            );
        }
        if opts.once {
            break Ok(());
        }
        if !outcome.completed {
            // Retry the unfinished streams after the interval.
            tokio::select! {
                _ = tokio::time::sleep(x.interval) => {}
                _ = shutdown.cancelled() => break Ok(()),
            }
        }
    };

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
    result.map(|()| report)
}

struct PassOutcome {
    result: Result<(), ExtractError>,
    completed: bool,
    cancelled: bool,
    failed: Vec<FailedRequest>,
    rejected: Option<(u16, String)>,
}

async fn run_pass(
    ctx: &Arc<Ctx>,
    sink: &mut Sink,
    streams: &[Stream],
    plan: Plan,
    cfg: &ExtractConfig,
    shutdown: &CancellationToken,
) -> PassOutcome {
    let cancel = shutdown.child_token();
    // Enough pages in flight to fill a transaction while the previous one commits, and no
    // more: each queued page holds its whole response body (at 256 pages of 1 000 records the
    // extractor peaked at 144 MiB, 45 MiB of it response buffers; heaptrack).
    let (tx, rx) = mpsc::channel::<Msg>((cfg.concurrency * 4).max(16));
    if plan.new_pass && tx.send(Msg::PassStart(plan.pass.clone())).await.is_err() {
        return PassOutcome {
            result: Err(ExtractError::Kafka("sink is gone".into())),
            completed: false,
            cancelled: false,
            failed: vec![],
            rejected: None,
        };
    }
    let queue = Arc::new(Mutex::new(VecDeque::from(plan.starts)));
    let failed = Arc::new(Mutex::new(Vec::<FailedRequest>::new()));
    let rejected = Arc::new(Mutex::new(None::<(u16, String)>));
    let streams: Arc<Vec<Stream>> = Arc::new(streams.to_vec());
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..cfg.concurrency.min(streams.len()).max(1) {
        let (ctx, queue, failed, rejected, streams, tx, cancel) = (
            ctx.clone(),
            queue.clone(),
            failed.clone(),
            rejected.clone(),
            streams.clone(),
            tx.clone(),
            cancel.clone(),
        );
        workers.spawn(async move {
            let mut all_done = true;
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some((i, pos, pages)) = next else { break };
                if cancel.is_cancelled() {
                    all_done = false;
                    break;
                }
                match run_stream(&ctx, &streams[i], pos, pages, &tx, &cancel).await {
                    StreamEnd::Done => {}
                    StreamEnd::Failed(f) => {
                        all_done = false;
                        if let Ok(mut v) = failed.lock() {
                            v.push(f);
                        }
                    }
                    StreamEnd::Rejected { status, url } => {
                        all_done = false;
                        if let Ok(mut r) = rejected.lock() {
                            *r = Some((status, url));
                        }
                        // The credential is gone for every stream: stop the pass.
                        cancel.cancel();
                    }
                    StreamEnd::Cancelled => {
                        all_done = false;
                        break;
                    }
                }
            }
            all_done
        });
    }
    let sink_fut = sink.run(rx, cfg.commit_records, cfg.commit_interval);
    let workers_fut = async {
        let mut all_done = true;
        while let Some(r) = workers.join_next().await {
            all_done &= r.unwrap_or(false);
        }
        let leftover = queue.lock().map(|q| q.len()).unwrap_or(1);
        let completed = all_done && leftover == 0 && !cancel.is_cancelled();
        if completed {
            let mut p = plan.pass.clone();
            p.completed_at = Some(Utc::now());
            let _ = tx.send(Msg::PassDone(p)).await;
        }
        drop(tx);
        completed
    };
    let (sink_result, completed) = tokio::join!(sink_fut, workers_fut);
    if sink_result.is_err() {
        cancel.cancel();
    }
    let failed = failed.lock().map(|v| v.clone()).unwrap_or_default();
    let rejected = rejected.lock().ok().and_then(|r| r.clone());
    PassOutcome {
        completed: completed && sink_result.is_ok(),
        cancelled: shutdown.is_cancelled(),
        result: sink_result,
        failed,
        rejected,
    }
}
