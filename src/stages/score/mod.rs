//! `etl-pipe score`: cleaned records (`etl.cleaned`) → scored records (`etl.scored`) or
//! quarantine (`etl.quarantine`), with one quality report per window (`etl.quality`), exactly
//! once. It owns the windows, their evaluation (through [`crate::quality`]) and the routing;
//! the Kafka transactions are the shared loop in [`crate::kafka::eos`].
//!
//! **Windows.** One open window per input partition. A decoded record (or the dead letter of
//! an undecodable one) is *held* in its partition's window; nothing is produced for it yet.
//! The window closes when it holds `score.window_records` messages or has been open
//! `score.window_max_age`. At close the stage computes the [`QualityReport`] of its records
//! (missing ratios, PSI against the baseline, VIF) and, in the transaction that follows:
//! - PASS / WARN: every record to `scored` (the output schema: the same fields plus
//!   `quality_window` = the window id `<topic>/<partition>/<first offset>-<last offset>` and
//!   `quality_decision`);
//! - FAIL: every record to `quarantine`, original key, bytes and headers unchanged, plus the
//!   envelope (`etl.error.kind = quality_fail`, the reasons as the message, source
//!   topic/partition/offset, attempts) and `etl.quality.window`;
//! - the window's dead letters (`etl.error.kind` from [`CodecError::kind`]) to `dead-letter`;
//! - the report JSON to `quality`, key = the window id;
//! - the input offset after the window's last message.
//!
//! **Offsets.** Every transaction of the loop commits, per partition, the first offset of
//! the window still open there ([`Transform::held_from`]), never past a record not yet
//! emitted. A crash or an aborted transaction therefore re-reads the open windows' records
//! from Kafka (and the windows restart at the same offsets), and a record is emitted only
//! in the transaction that also moves the offset past it: each input message ends up in
//! exactly one of scored ∪ quarantine ∪ dead-letter, once.
//!
//! **Small windows.** A window closed by age may hold few rows; below
//! `score.drift_min_rows` its PSI and VIF are reported but not judged (their sampling noise
//! alone reaches the lines); missing and type-error ratios are judged in every window.
//!
//! The baseline is described in [`baseline`].
pub mod baseline;
pub mod config;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use config::ScoreConfig;

use self::baseline::{Baselines, Source};
use self::config::{DECISION_FIELD, WINDOW_FIELD};
use crate::codec::{Codec, CodecError};
use crate::kafka::eos::{self, EosError, Output, Settings, Stats, Transform, TransformError};
use crate::kafka::headers::{self as h, DeadLetter};
use crate::quality::{Decision, FieldSpec, Metric, QualityConfig, QualityReport, WindowStats};
use crate::record::{Record, RecordSchema, Value};
use crate::retry::{retry, Backoff, Stopped};
use crate::settings::{Common, ConfigError, TopicRole};
use crate::stages::clean::CleanConfig;

/// The stage name: consumer group `<pipeline>.score`, metric label, `etl.error.stage`.
pub const STAGE: &str = "score";
/// Header naming the window a scored or quarantined record was evaluated in.
pub const WINDOW_HEADER: &str = "etl.quality.window";
/// `etl.error.kind` of a quarantined record.
pub const QUALITY_FAIL: &str = "quality_fail";

/// Headers carried from a cleaned message to its scored record.
const KEEP_HEADERS: [&str; 3] = [h::TRACEPARENT, h::SOURCE, h::FETCHED_AT];
const LOG_TARGET: &str = "etl_pipe::score";

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("baseline: {0}")]
    Baseline(String),
    #[error(transparent)]
    Eos(#[from] EosError),
}

/// One message held in a window.
struct Held {
    offset: i64,
    timestamp: Option<i64>,
    item: Item,
}

enum Item {
    Record {
        record: Record,
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
        headers: Option<OwnedHeaders>,
    },
    /// Undecodable: its dead letter, emitted with the window.
    DeadLetter(Output),
}

/// The open window of one input partition.
struct Window {
    topic: String,
    partition: i32,
    opened: Instant,
    opened_at_ms: i64,
    held: Vec<Held>,
}

impl Window {
    fn first_offset(&self) -> i64 {
        self.held.first().map_or(-1, |h| h.offset)
    }
}

/// A window whose outputs are computed, waiting for the next `flush`.
struct Due {
    topic: String,
    partition: i32,
    first_offset: i64,
    outputs: Vec<Output>,
    closed: Closed,
}

/// What is logged and counted once a window's transaction commits.
struct Closed {
    window: String,
    topic: String,
    partition: i32,
    decision: Decision,
    rows: u64,
    messages: usize,
    quarantined: u64,
    dead_letters: u64,
    closed_by: &'static str,
    baseline: Source,
    psi: bool,
    reasons: String,
    report: String,
}

impl Closed {
    fn emit(&self) {
        metrics::counter!("etl_quality_windows_total", "decision" => self.decision.to_string())
            .increment(1);
        if self.quarantined > 0 {
            metrics::counter!("etl_quarantined_records_total").increment(self.quarantined);
        }
        metrics::histogram!("etl_score_window_records", "closed_by" => self.closed_by)
            .record(self.messages as f64);
        macro_rules! window_event {
            ($level:ident) => {
                tracing::$level!(
                    target: LOG_TARGET,
                    stage = STAGE,
                    window = %self.window,
                    topic = %self.topic,
                    partition = self.partition,
                    decision = %self.decision,
                    reasons = %self.reasons,
                    rows = self.rows,
                    messages = self.messages,
                    quarantined = self.quarantined,
                    dead_letters = self.dead_letters,
                    closed_by = self.closed_by,
                    baseline = ?self.baseline,
                    psi = self.psi,
                    "quality window {}",
                    self.decision
                )
            };
        }
        if self.decision == Decision::Fail {
            window_event!(warn);
        } else {
            window_event!(info);
        }
        tracing::debug!(target: LOG_TARGET, window = %self.window, report = %self.report, "quality report");
    }
}

/// The report published to the quality topic: where the window is, what it held, and the
/// quality figures and decision ([`QualityReport`], flattened).
#[derive(Serialize)]
struct WindowReport<'a> {
    window: &'a str,
    stage: &'static str,
    instance: &'a str,
    topic: &'a str,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
    /// Messages in the window: decoded records (`rows`) + dead letters.
    messages: usize,
    dead_letters: u64,
    /// `records` (the window was full) or `age` (`window_max_age` passed).
    closed_by: &'static str,
    opened_at: Option<String>,
    closed_at: Option<String>,
    /// Kafka timestamps of the first and last message.
    first_timestamp: Option<String>,
    last_timestamp: Option<String>,
    /// Where the window's records went.
    routed_to: &'a str,
    baseline: baseline::Info,
    /// Whether PSI was measured (a baseline, and not one built from these records).
    psi_measured: bool,
    /// Whether PSI and VIF counted in the decision (`rows` ≥ `score.drift_min_rows`).
    drift_judged: bool,
    #[serde(flatten)]
    report: &'a QualityReport,
}

fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// The score stage's [`Transform`]: holds messages in per-partition windows and emits a
/// window's outputs when it closes.
pub struct ScoreTransform {
    codec_in: Arc<Codec>,
    codec_out: Arc<Codec>,
    handle: tokio::runtime::Handle,
    specs: Vec<FieldSpec>,
    quality: QualityConfig,
    window_records: usize,
    window_max_age: Duration,
    drift_min_rows: u64,
    scored: Arc<str>,
    quarantine: Arc<str>,
    quality_topic: Arc<str>,
    dead_letter: Arc<str>,
    instance: String,
    baselines: Baselines,
    windows: Vec<Window>,
    due: Vec<Due>,
    /// Emitted into the open transaction; logged and counted when it commits.
    pending: Vec<Closed>,
}

/// Everything [`ScoreTransform::new`] needs besides the config.
pub struct Parts {
    pub codec_in: Arc<Codec>,
    pub codec_out: Arc<Codec>,
    pub specs: Vec<FieldSpec>,
    pub baselines: Baselines,
    pub handle: tokio::runtime::Handle,
}

impl ScoreTransform {
    pub fn new(cfg: &Common, score: &ScoreConfig, quality: &QualityConfig, parts: Parts) -> Self {
        ScoreTransform {
            codec_in: parts.codec_in,
            codec_out: parts.codec_out,
            handle: parts.handle,
            specs: parts.specs,
            quality: quality.clone(),
            window_records: score.window_records,
            window_max_age: score.window_max_age,
            drift_min_rows: score.drift_min_rows,
            scored: cfg.topics.name(TopicRole::Scored).into(),
            quarantine: cfg.topics.name(TopicRole::Quarantine).into(),
            quality_topic: cfg.topics.name(TopicRole::Quality).into(),
            dead_letter: cfg.topics.name(TopicRole::DeadLetter).into(),
            instance: cfg.pipeline.instance_id(),
            baselines: parts.baselines,
            windows: Vec::new(),
            due: Vec::new(),
            pending: Vec::new(),
        }
    }

    fn decode(&self, bytes: &[u8]) -> Result<Record, CodecError> {
        match self.codec_in.decode(bytes) {
            // A registry id seen for the first time: fetch it (this thread may block).
            Err(CodecError::SchemaNotCached { .. }) => {
                self.handle.block_on(self.codec_in.decode_async(bytes))
            }
            other => other,
        }
    }

    /// Evaluates a window and queues its outputs for the next flush.
    fn close(&mut self, w: Window, closed_by: &'static str) {
        let Window {
            topic,
            partition,
            opened,
            opened_at_ms,
            held,
        } = w;
        let (Some(first), Some(last)) = (held.first(), held.last()) else {
            return;
        };
        let (first_offset, last_offset) = (first.offset, last.offset);
        let (first_ts, last_ts) = (first.timestamp, last.timestamp);
        let id = format!("{topic}/{partition}/{first_offset}-{last_offset}");

        let active = self.baselines.active();
        let mut note = None;
        let psi_baseline = match &active {
            Some(a) if a.covers(&topic, partition, first_offset, last_offset) => {
                note = Some(format!(
                    "PSI not measured: records of this window are part of the baseline \
                     ({} rows, {}) built from the first records",
                    a.baseline.rows, a.origin
                ));
                None
            }
            Some(a) => Some(&a.baseline),
            None => None,
        };
        let info = self.baselines.info();
        if active.is_none() {
            note = Some(match info.source {
                Source::Building => format!(
                    "PSI not measured: the baseline is being built from the first {} records \
                     ({} so far)",
                    info.target.unwrap_or_default(),
                    info.rows
                ),
                _ => "PSI not measured: no baseline (score.baseline is not set and \
                      score.baseline_from_first_records = 0)"
                    .to_string(),
            });
        }
        let psi_measured = psi_baseline.is_some();
        let baseline_source = info.source;
        let mut stats = WindowStats::new(self.specs.clone(), psi_baseline);
        for h in &held {
            if let Item::Record { record, .. } = &h.item {
                stats.push(record);
            }
        }
        let mut report = stats.report(&self.quality);
        if let Some(n) = note {
            report
                .notes
                .retain(|n| n != "PSI needs a baseline; none given");
            report.notes.push(n);
        }
        let drift_judged = report.rows >= self.drift_min_rows;
        if !drift_judged {
            unjudge_drift(&mut report, self.drift_min_rows);
        }
        let fail = report.decision == Decision::Fail;
        let reasons = report
            .reasons
            .iter()
            .map(|r| r.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let decision = report.decision.to_string();
        let messages = held.len();

        let mut outputs = Vec::with_capacity(messages + 1);
        let (mut quarantined, mut dead_letters) = (0u64, 0u64);
        let fail_message = format!("quality window {id} FAIL: {reasons}");
        for hm in held {
            match hm.item {
                Item::DeadLetter(o) => {
                    dead_letters += 1;
                    outputs.push(o);
                }
                Item::Record {
                    record,
                    key,
                    payload,
                    headers,
                } if fail => {
                    quarantined += 1;
                    let hs = DeadLetter {
                        stage: STAGE,
                        kind: QUALITY_FAIL,
                        message: &fail_message,
                        source: Some((&topic, partition, hm.offset)),
                    }
                    .headers(headers.as_ref().map(|h| h.as_borrowed()));
                    drop(record);
                    outputs.push(
                        Output::to(self.quarantine.clone())
                            .key(key)
                            .payload(payload)
                            .headers(with_header(hs, WINDOW_HEADER, &id)),
                    );
                }
                Item::Record {
                    mut record,
                    key,
                    payload,
                    headers,
                } => {
                    record.set(WINDOW_FIELD, Value::String(id.clone()));
                    record.set(DECISION_FIELD, Value::String(decision.clone()));
                    match self.codec_out.encode(&record) {
                        Ok(bytes) => {
                            let hs = keep(headers.as_ref(), &KEEP_HEADERS);
                            outputs.push(
                                Output::to(self.scored.clone())
                                    .key(key)
                                    .payload(bytes)
                                    .headers(with_header(hs, WINDOW_HEADER, &id)),
                            );
                        }
                        // Poison: the scored schema cannot hold this record.
                        Err(e) => {
                            dead_letters += 1;
                            let hs = DeadLetter {
                                stage: STAGE,
                                kind: e.kind(),
                                message: &e.to_string(),
                                source: Some((&topic, partition, hm.offset)),
                            }
                            .headers(headers.as_ref().map(|h| h.as_borrowed()));
                            let mut o = Output::to(self.dead_letter.clone())
                                .key(key)
                                .payload(payload)
                                .headers(hs);
                            o.dead_letter = Some(e.kind());
                            outputs.push(o);
                        }
                    }
                }
            }
        }
        let routed_to: &str = if fail { &self.quarantine } else { &self.scored };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let json = serde_json::to_string(&WindowReport {
            window: &id,
            stage: STAGE,
            instance: &self.instance,
            topic: &topic,
            partition,
            first_offset,
            last_offset,
            messages,
            dead_letters,
            closed_by,
            opened_at: rfc3339(opened_at_ms),
            closed_at: rfc3339(now_ms),
            first_timestamp: first_ts.and_then(rfc3339),
            last_timestamp: last_ts.and_then(rfc3339),
            routed_to,
            baseline: info,
            psi_measured,
            drift_judged,
            report: &report,
        })
        .unwrap_or_else(|e| format!("{{\"window\": {id:?}, \"error\": {:?}}}", e.to_string()));
        outputs.push(
            Output::to(self.quality_topic.clone())
                .key(Some(id.clone().into_bytes()))
                .payload(json.clone().into_bytes()),
        );
        tracing::trace!(target: LOG_TARGET, window = %id, open_for = ?opened.elapsed(), "window closed");
        self.due.push(Due {
            first_offset,
            outputs,
            closed: Closed {
                window: id,
                topic: topic.clone(),
                partition,
                decision: report.decision,
                rows: report.rows,
                messages,
                quarantined,
                dead_letters,
                closed_by,
                baseline: baseline_source,
                psi: psi_measured,
                reasons,
                report: json,
            },
            topic,
            partition,
        });
    }
}

/// Takes PSI and VIF out of the decision of a window too small for them (they stay in
/// the field figures): drops their reasons, recomputes the field and window decisions.
fn unjudge_drift(report: &mut QualityReport, min_rows: u64) {
    let before = report.reasons.len();
    report
        .reasons
        .retain(|r| !matches!(r.metric, Metric::Psi | Metric::Vif));
    for f in &mut report.fields {
        f.decision = report
            .reasons
            .iter()
            .filter(|r| r.field.as_deref() == Some(f.name.as_str()))
            .map(|r| r.level)
            .max()
            .unwrap_or(Decision::Pass);
    }
    report.decision = report
        .reasons
        .iter()
        .map(|r| r.level)
        .max()
        .unwrap_or(Decision::Pass);
    report.notes.push(format!(
        "PSI and VIF not judged: {} rows < score.drift_min_rows ({min_rows}){}",
        report.rows,
        if report.reasons.len() < before {
            "; their WARN/FAIL reasons were dropped"
        } else {
            ""
        }
    ));
}

/// The named headers of `headers`, owned.
fn keep(headers: Option<&OwnedHeaders>, names: &[&str]) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(names.len() + 1);
    if let Some(hs) = headers {
        for header in hs.iter() {
            if names.contains(&header.key) {
                out = out.insert(Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
    }
    out
}

fn with_header(headers: OwnedHeaders, key: &str, value: &str) -> OwnedHeaders {
    headers.insert(Header {
        key,
        value: Some(value),
    })
}

impl Transform for ScoreTransform {
    fn transform(
        &mut self,
        msg: &BorrowedMessage<'_>,
        _out: &mut Vec<Output>,
    ) -> Result<(), TransformError> {
        let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
        let payload = msg.payload().unwrap_or_default();
        let item = match self.decode(payload) {
            Ok(record) => {
                self.baselines.feed(topic, partition, offset, &record);
                Item::Record {
                    record,
                    key: msg.key().map(<[u8]>::to_vec),
                    payload: payload.to_vec(),
                    headers: msg.headers().map(|hs| hs.detach()),
                }
            }
            Err(e) if e.is_retriable() => {
                return Err(TransformError::Retriable(format!(
                    "decoding {topic}[{partition}]@{offset}: {e}"
                )))
            }
            Err(e) => {
                tracing::debug!(target: LOG_TARGET, stage = STAGE, kind = e.kind(), partition, offset, error = %e, "dead letter");
                Item::DeadLetter(Output::dead_letter(
                    self.dead_letter.clone(),
                    STAGE,
                    e.kind(),
                    &e.to_string(),
                    msg,
                ))
            }
        };
        let held = Held {
            offset,
            timestamp: msg.timestamp().to_millis(),
            item,
        };
        let i = match self
            .windows
            .iter()
            .position(|w| w.partition == partition && w.topic == topic)
        {
            Some(i) => i,
            None => {
                self.windows.push(Window {
                    topic: topic.to_string(),
                    partition,
                    opened: Instant::now(),
                    opened_at_ms: chrono::Utc::now().timestamp_millis(),
                    held: Vec::with_capacity(self.window_records.min(4096)),
                });
                self.windows.len() - 1
            }
        };
        self.windows[i].held.push(held);
        if self.windows[i].held.len() >= self.window_records {
            let w = self.windows.swap_remove(i);
            self.close(w, "records");
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<Output>) -> Result<(), TransformError> {
        self.baselines.tick();
        let mut i = 0;
        while i < self.windows.len() {
            if self.windows[i].opened.elapsed() >= self.window_max_age {
                let w = self.windows.swap_remove(i);
                self.close(w, "age");
            } else {
                i += 1;
            }
        }
        for d in self.due.drain(..) {
            out.extend(d.outputs);
            self.pending.push(d.closed);
        }
        let held: usize = self.windows.iter().map(|w| w.held.len()).sum();
        metrics::gauge!("etl_score_held_records").set(held as f64);
        Ok(())
    }

    fn held_from(&self, topic: &str, partition: i32) -> Option<i64> {
        let open = self
            .windows
            .iter()
            .filter(|w| w.partition == partition && w.topic == topic)
            .map(Window::first_offset);
        let due = self
            .due
            .iter()
            .filter(|d| d.partition == partition && d.topic == topic)
            .map(|d| d.first_offset);
        open.chain(due).min()
    }

    fn reset(&mut self, partitions: &[(String, i32)]) {
        let hit = |t: &str, p: i32| partitions.iter().any(|(pt, pp)| *pp == p && pt == t);
        self.windows.retain(|w| !hit(&w.topic, w.partition));
        self.due.retain(|d| !hit(&d.topic, d.partition));
        self.pending.retain(|c| !hit(&c.topic, c.partition));
    }

    fn committed(&mut self) {
        for c in self.pending.drain(..) {
            c.emit();
        }
    }
}

impl Drop for ScoreTransform {
    fn drop(&mut self) {
        let held: usize = self.windows.iter().map(|w| w.held.len()).sum();
        if held > 0 {
            tracing::info!(
                target: LOG_TARGET,
                stage = STAGE,
                records = held,
                windows = self.windows.len(),
                "stopping with open windows: their records were not emitted and their offsets \
                 not committed; the next run reads them again"
            );
        }
    }
}

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

/// A codec for `topic`, waiting for the schema registry while it is unavailable.
/// `None` when shutdown came first.
async fn codec_for(
    cfg: &Common,
    schema: RecordSchema,
    topic: &str,
    shutdown: &CancellationToken,
) -> Result<Option<Codec>, CodecError> {
    let what = format!("registering the schema of {topic}");
    match retry(
        &what,
        registry_backoff(),
        shutdown,
        CodecError::is_retriable,
        || Codec::from_config(&cfg.kafka, schema.clone(), topic),
    )
    .await
    {
        Ok(c) => Ok(Some(c)),
        Err(Stopped::Cancelled) => Ok(None),
        Err(Stopped::Permanent(e)) => Err(e),
    }
}

/// Waiting for the schema registry or the baseline store: 0.5 s doubling to 30 s.
fn registry_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
}

/// [`run`], returning what was committed (for benchmarks and tests).
pub async fn run_with_stats(
    cfg: &Common,
    score: &ScoreConfig,
    quality: &QualityConfig,
    clean: &CleanConfig,
    shutdown: CancellationToken,
) -> Result<Stats, ScoreError> {
    let resolved = score.resolve(cfg.kafka.transaction_timeout, clean)?;
    let cleaned_topic = cfg.topics.name(TopicRole::Cleaned);
    let scored_topic = cfg.topics.name(TopicRole::Scored);
    let Some(codec_in) = codec_for(cfg, resolved.schema_in, &cleaned_topic, &shutdown).await?
    else {
        return Ok(Stats::default());
    };
    let Some(codec_out) = codec_for(cfg, resolved.schema_out, &scored_topic, &shutdown).await?
    else {
        return Ok(Stats::default());
    };
    let handle = tokio::runtime::Handle::current();

    let baselines = match (resolved.baseline, &score.baseline) {
        (Some(b), Some(path)) => Baselines::from_file(b, &path.display().to_string()),
        _ if score.baseline_from_first_records == 0 => Baselines::none(),
        _ => {
            let target = score.baseline_from_first_records;
            let opened = retry(
                "reading the baseline store",
                registry_backoff(),
                &shutdown,
                |e: &baseline::OpenError| matches!(e, baseline::OpenError::Retriable(_)),
                || {
                    let (c, q) = (cfg.clone(), quality.clone());
                    let (specs, h) = (resolved.specs.clone(), handle.clone());
                    async move {
                        tokio::task::spawn_blocking(move || {
                            Baselines::open_store(&c, &q, specs, target, h)
                        })
                        .await
                        .map_err(|e| baseline::OpenError::Fatal(e.to_string()))?
                    }
                },
            )
            .await;
            match opened {
                Ok(b) => b,
                Err(Stopped::Cancelled) => return Ok(Stats::default()),
                Err(Stopped::Permanent(e)) => return Err(ScoreError::Baseline(e.to_string())),
            }
        }
    };

    let mut settings = Settings::for_stage(cfg, STAGE, TopicRole::Cleaned);
    settings.batch_size = score.batch_size;
    settings.batch_max_age = score.batch_max_age;
    let info = baselines.info();
    tracing::info!(
        target: LOG_TARGET,
        stage = STAGE,
        input = %settings.input_topics.join(","),
        scored = %scored_topic,
        window_records = score.window_records,
        window_max_age = ?score.window_max_age,
        fields = %resolved.specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(","),
        baseline = ?info.source,
        baseline_rows = info.rows,
        "score stage starting"
    );
    let transform = ScoreTransform::new(
        cfg,
        score,
        quality,
        Parts {
            codec_in: Arc::new(codec_in),
            codec_out: Arc::new(codec_out),
            specs: resolved.specs,
            baselines,
            handle,
        },
    );
    let stats = eos::run(cfg.kafka.clone(), settings, transform, shutdown).await?;
    tracing::info!(
        target: LOG_TARGET,
        stage = STAGE,
        records_in = stats.records_in,
        records_out = stats.records_out,
        dead_letters = stats.dead_letters,
        transactions = stats.transactions,
        aborts = stats.aborts,
        "score stage stopped"
    );
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::{BaselineBuilder, FieldKind};

    fn rec(x: i32, name: Option<&str>) -> Record {
        let mut r = Record::new();
        r.set("x", Value::Int(x));
        r.set(
            "name",
            name.map_or(Value::Null, |n| Value::String(n.into())),
        );
        r
    }

    #[test]
    fn a_small_window_keeps_missing_ratios_but_does_not_judge_psi() {
        let specs = vec![
            FieldSpec::new("x", FieldKind::Numeric),
            FieldSpec::new("name", FieldKind::Categorical),
        ];
        let cfg = QualityConfig::default();
        let mut b = BaselineBuilder::new(specs.clone(), &cfg);
        for i in 0..1000 {
            b.push(&rec(i % 100, Some("a")));
        }
        let baseline = b.build();
        // Ten rows far above the baseline: PSI FAILs.
        let mut w = WindowStats::new(specs.clone(), Some(&baseline));
        for i in 0..10 {
            w.push(&rec(500 + i, Some("a")));
        }
        let mut report = w.report(&cfg);
        assert_eq!(report.decision, Decision::Fail);
        unjudge_drift(&mut report, 100);
        assert_eq!(report.decision, Decision::Pass, "{:?}", report.reasons);
        assert!(report.fields[0].psi.is_some(), "the figure stays");
        assert_eq!(report.fields[0].decision, Decision::Pass);
        assert!(report.notes.iter().any(|n| n.contains("drift_min_rows")));

        // Missing names still FAIL a small window.
        let mut w = WindowStats::new(specs, Some(&baseline));
        for i in 0..10 {
            w.push(&rec(i, (i % 2 == 0).then_some("a")));
        }
        let mut report = w.report(&cfg);
        unjudge_drift(&mut report, 100);
        assert_eq!(report.decision, Decision::Fail);
        assert_eq!(report.fields[1].decision, Decision::Fail);
        assert!(report
            .reasons
            .iter()
            .all(|r| r.metric == Metric::MissingRatio));
    }

    #[test]
    fn only_the_named_headers_are_kept() {
        let hs = OwnedHeaders::new()
            .insert(Header {
                key: h::TRACEPARENT,
                value: Some("00-a-b-01"),
            })
            .insert(Header {
                key: h::ERROR_KIND,
                value: Some("x"),
            });
        let kept = with_header(keep(Some(&hs), &KEEP_HEADERS), WINDOW_HEADER, "t/0/0-9");
        assert_eq!(kept.count(), 2);
        assert_eq!(h::get_str(&kept, h::TRACEPARENT), Some("00-a-b-01"));
        assert_eq!(h::get_str(&kept, WINDOW_HEADER), Some("t/0/0-9"));
        assert_eq!(keep(None, &KEEP_HEADERS).count(), 0);
    }
}
