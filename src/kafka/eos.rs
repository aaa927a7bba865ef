//! Exactly-once consume–transform–produce: the loop the clean and score stages share.
//!
//! A stage supplies a [`Transform`] (input message → output messages); [`run`] owns the Kafka
//! side. Per batch (at most `batch_size` input messages, or `batch_max_age` after the first):
//!
//! 1. `begin_transaction` on the first message of the batch;
//! 2. per input message, the transform's outputs are produced into the transaction (cleaned
//!    records and dead letters alike) and the partition's next offset is remembered;
//! 3. `send_offsets_to_transaction(next offsets, consumer.group_metadata())`, then
//!    `commit_transaction` — which flushes and fails if any output was not delivered, so the
//!    outputs and the input offsets become visible together or not at all.
//!
//! **On failure** inside a transaction: `abort_transaction`, then seek every assigned
//! partition back to its committed offset and back off (100 ms doubling to 30 s); nothing is
//! lost (the offsets did not move) and nothing is duplicated (the outputs were aborted;
//! consumers downstream use `read_committed`). A fatal producer error (fenced by a newer
//! instance with the same transactional id, or by the group coordinator) stops the stage.
//!
//! **Rebalances** (cooperative-sticky): the transaction in hand is committed inside the
//! revoke callback, before librdkafka gives the partitions up, so records of a revoked
//! partition are never committed by a later transaction while a new owner reads them. Lost
//! partitions (session timed out) are aborted instead. Assigned partitions start at their
//! committed offsets; with `read_committed` librdkafka asks for *stable* offsets (KIP-447),
//! so a new owner waits for a transaction of the old owner still in flight.
//!
//! **Shutdown**: the token is checked between messages; the batch in hand is committed,
//! then the consumer leaves the group.
//!
//! The loop runs on one dedicated thread (`spawn_blocking`) around a `BaseConsumer` and a
//! `ThreadedProducer` (whose thread serves delivery reports): every librdkafka call here blocks, and the transform is synchronous CPU work.
//!
//! ```no_run
//! use etl_pipe::config::TopicRole;
//! use etl_pipe::kafka::eos::{self, Output, Settings, Transform, TransformError};
//! use rdkafka::message::{BorrowedMessage, Message};
//! use std::sync::Arc;
//!
//! struct Upper { to: Arc<str> }
//! impl Transform for Upper {
//!     fn transform(&mut self, m: &BorrowedMessage<'_>, out: &mut Vec<Output>)
//!         -> Result<(), TransformError> {
//!         let v = m.payload().unwrap_or_default().to_ascii_uppercase();
//!         out.push(Output::to(self.to.clone()).key(m.key().map(<[u8]>::to_vec)).payload(v));
//!         Ok(())
//!     }
//! }
//! # async fn demo(cfg: &etl_pipe::settings::Common, shutdown: tokio_util::sync::CancellationToken) {
//! // group <pipeline>.upper, transactional id <pipeline>.upper.<instance>, reads etl.cleaned
//! let mut settings = Settings::for_stage(cfg, "upper", TopicRole::Cleaned);
//! settings.batch_size = 500;
//! let stats = eos::run(cfg.kafka.clone(), settings, Upper { to: "out".into() }, shutdown).await;
//! # }
//! ```
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::headers::DeadLetter;
use crate::retry::Backoff;
use crate::settings::{Common, KafkaConfig, TopicRole};

/// How long a single broker call (commit, offsets, seek) may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest poll, so that shutdown is noticed promptly.
const MAX_POLL: Duration = Duration::from_millis(100);

/// One message to produce inside the transaction.
#[derive(Debug)]
pub struct Output {
    pub topic: Arc<str>,
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Option<OwnedHeaders>,
    /// `Some(kind)` when this is a dead letter (counted in `etl_dead_letters_total{kind}`).
    pub dead_letter: Option<&'static str>,
}

impl Output {
    /// An output to `topic`; add the parts with the builder methods.
    pub fn to(topic: Arc<str>) -> Output {
        Output {
            topic,
            partition: None,
            key: None,
            payload: None,
            headers: None,
            dead_letter: None,
        }
    }
    pub fn key(mut self, key: Option<Vec<u8>>) -> Self {
        self.key = key;
        self
    }
    pub fn payload(mut self, payload: Vec<u8>) -> Self {
        self.payload = Some(payload);
        self
    }
    pub fn headers(mut self, headers: OwnedHeaders) -> Self {
        self.headers = Some(headers);
        self
    }
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// The dead letter of `source`: its key, bytes and headers unchanged, plus the `etl.error.*`
    /// and `etl.source.*` envelope ([`DeadLetter`]).
    pub fn dead_letter(
        topic: Arc<str>,
        stage: &str,
        kind: &'static str,
        message: &str,
        source: &BorrowedMessage<'_>,
    ) -> Output {
        let headers = DeadLetter {
            stage,
            kind,
            message,
            source: Some((source.topic(), source.partition(), source.offset())),
        }
        .headers(source.headers());
        Output {
            topic,
            partition: None,
            key: source.key().map(<[u8]>::to_vec),
            payload: source.payload().map(<[u8]>::to_vec),
            headers: Some(headers),
            dead_letter: Some(kind),
        }
    }
}

/// A transform failure. Poison records are not failures: the transform turns them into
/// dead-letter outputs itself.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// Something outside the record failed (e.g. a schema registry): abort, rewind, back off,
    /// try the same records again.
    #[error("{0}")]
    Retriable(String),
    /// The stage cannot go on (a person must act): abort and stop.
    #[error("{0}")]
    Fatal(String),
}

/// The stage-specific part of a consume–transform–produce loop.
///
/// Everything runs on the loop's thread; the hooks other than `transform` have defaults that
/// fit a stateless transform (clean). A stateful one (score: windows per partition) uses
/// `flush` to emit what is due, `held_from` to keep the committed offset at the oldest record
/// it still holds in memory, and `reset` to drop state when records will be read again.
pub trait Transform: Send + 'static {
    /// One input message → zero or more outputs appended to `out`.
    fn transform(
        &mut self,
        msg: &BorrowedMessage<'_>,
        out: &mut Vec<Output>,
    ) -> Result<(), TransformError>;

    /// Called before every commit, and every `batch_max_age` while idle: append outputs that
    /// are due without a new input (e.g. windows closed by age).
    fn flush(&mut self, _out: &mut Vec<Output>) -> Result<(), TransformError> {
        Ok(())
    }

    /// The oldest offset of `topic`/`partition` whose effect is still only in memory; the
    /// transaction commits this offset instead of "last processed + 1", so a restart reads
    /// those records again. `None`: everything read has been emitted.
    fn held_from(&self, _topic: &str, _partition: i32) -> Option<i64> {
        None
    }

    /// These partitions will be read again from their committed offsets (after an abort) or
    /// belong to another instance now (revoked): forget what is held for them.
    fn reset(&mut self, _partitions: &[(String, i32)]) {}

    /// The transaction holding every output appended so far committed (log or count what
    /// is now durable; outputs of an aborted transaction are followed by `reset` instead).
    fn committed(&mut self) {}
}

/// What the loop needs besides the Kafka connection.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Stage name: metric label, dead-letter `etl.error.stage`, logs.
    pub stage: &'static str,
    pub input_topics: Vec<String>,
    pub group_id: String,
    /// Stable and unique per instance (`<pipeline>.<stage>.<instance>`): a restart with the same
    /// id fences the previous process and aborts its open transaction at once.
    pub transactional_id: String,
    /// Most input messages per transaction.
    pub batch_size: usize,
    /// Longest time a transaction stays open collecting messages.
    pub batch_max_age: Duration,
    /// Where an output the producer refuses (too large...) is replaced by a dead letter of its
    /// source record.
    pub dead_letter_topic: Arc<str>,
}

impl Settings {
    /// The settings of `stage` reading the topic of `input`: group `<pipeline>.<stage>`,
    /// transactional id `<pipeline>.<stage>.<instance>`, the pipeline's dead-letter topic,
    /// and the default batching (2000 messages / 100 ms; set the fields to change it).
    pub fn for_stage(cfg: &Common, stage: &'static str, input: TopicRole) -> Settings {
        Settings {
            stage,
            input_topics: vec![cfg.topics.name(input)],
            group_id: cfg.pipeline.group_id(stage),
            transactional_id: format!(
                "{}.{stage}.{}",
                cfg.pipeline.name,
                cfg.pipeline.instance_id()
            ),
            batch_size: 2000,
            batch_max_age: Duration::from_millis(100),
            dead_letter_topic: cfg.topics.name(TopicRole::DeadLetter).into(),
        }
    }
}

/// Totals of a run (committed work only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub records_in: u64,
    pub records_out: u64,
    pub dead_letters: u64,
    pub transactions: u64,
    pub aborts: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EosError {
    #[error("creating the Kafka {what}: {source}")]
    Client {
        what: &'static str,
        source: KafkaError,
    },
    #[error("subscribing to {topics}: {source}")]
    Subscribe { topics: String, source: KafkaError },
    /// The stage must stop: fenced producer, fatal broker error, fatal transform error.
    #[error("{0}")]
    Fatal(String),
    #[error("the stage's thread failed: {0}")]
    Join(String),
}

/// Runs the loop until `shutdown` is cancelled (then commits the batch in hand and returns)
/// or a fatal error. Call from async code; the loop gets its own blocking thread.
pub async fn run<T: Transform>(
    kafka: KafkaConfig,
    settings: Settings,
    transform: T,
    shutdown: CancellationToken,
) -> Result<Stats, EosError> {
    tokio::task::spawn_blocking(move || run_blocking(&kafka, settings, transform, shutdown))
        .await
        .map_err(|e| EosError::Join(e.to_string()))?
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Txn {
    Idle,
    Open,
    /// A failed transaction that could not be aborted yet.
    NeedsAbort,
}

/// What went wrong in a transaction, sorted once.
enum Failure {
    /// Abort, rewind, back off, retry.
    Abort(String),
    /// Stop the stage.
    Fatal(String),
}

fn classify(what: &str, e: &KafkaError) -> Failure {
    match e {
        KafkaError::Transaction(re) if re.is_fatal() => Failure::Fatal(format!("{what}: {e}")),
        _ => Failure::Abort(format!("{what}: {e}")),
    }
}

/// Whether a transactional call may simply be repeated (librdkafka: "retriable").
fn is_retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(re) if re.is_retriable())
}

/// A producer whose own thread serves delivery reports: `abort_transaction` purges and then
/// waits for the purged messages' reports, which would never come with nobody polling.
type TxnProducer = ThreadedProducer<DefaultProducerContext>;

struct Engine<T> {
    stage: &'static str,
    dead_letter_topic: Arc<str>,
    producer: TxnProducer,
    transform: T,
    txn: Txn,
    rewind_pending: bool,
    fatal: Option<String>,
    batch_started: Instant,
    batch_in: u64,
    /// Next offset per input partition since the last rewind (kept across transactions so a
    /// stateful transform's `held_from` can move without new input).
    positions: Vec<(String, i32, i64)>,
    out_by_topic: Vec<(Arc<str>, u64)>,
    dl_by_kind: Vec<(&'static str, u64)>,
    outbuf: Vec<Output>,
    stats: Stats,
}

/// The consumer context: it shares the engine with the loop so that the revoke callback
/// (run inside `poll`, on the loop's thread) can commit the transaction in hand.
struct Ctx<T: Transform> {
    engine: Arc<Mutex<Engine<T>>>,
}

impl<T: Transform> ClientContext for Ctx<T> {}

impl<T: Transform> ConsumerContext for Ctx<T> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                let lost = consumer.assignment_lost();
                let mut eng = lock(&self.engine);
                tracing::info!(
                    stage = eng.stage,
                    partitions = %describe(&revoked),
                    lost,
                    "partitions revoked"
                );
                if eng.txn == Txn::Open && eng.fatal.is_none() {
                    if lost {
                        eng.fail(Failure::Abort(
                            "partitions lost (session timed out): the transaction in hand \
                             cannot be committed"
                                .into(),
                        ));
                    } else if let Err(f) = eng.commit(consumer) {
                        eng.fail(f);
                    }
                }
                eng.positions
                    .retain(|(t, p, _)| !revoked.iter().any(|(rt, rp)| rt == t && rp == p));
                eng.transform.reset(&revoked);
            }
            Rebalance::Assign(tpl) => {
                let eng = lock(&self.engine);
                let assigned: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                tracing::info!(stage = eng.stage, partitions = %describe(&assigned), "partitions assigned");
            }
            Rebalance::Error(e) => {
                let eng = lock(&self.engine);
                tracing::warn!(stage = eng.stage, error = %e, "rebalance error");
            }
        }
    }
}

fn describe(parts: &[(String, i32)]) -> String {
    parts
        .iter()
        .map(|(t, p)| format!("{t}[{p}]"))
        .collect::<Vec<_>>()
        .join(",")
}

// A poisoned lock means a panic mid-update; the engine is then in doubt, which the abort
// and rewind that follow a panic-free failure path would fix — but we never panic inside.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: Transform> Engine<T> {
    fn begin(&mut self) -> Result<(), Failure> {
        if self.txn == Txn::Idle {
            self.producer
                .begin_transaction()
                .map_err(|e| classify("begin_transaction", &e))?;
            self.txn = Txn::Open;
            self.batch_started = Instant::now();
        }
        Ok(())
    }

    /// One input message: transform, produce its outputs, remember its position.
    fn process(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), Failure> {
        self.begin()?;
        let mut out = std::mem::take(&mut self.outbuf);
        let res = self.transform.transform(msg, &mut out);
        let res = match res {
            Ok(()) => self.produce_all(&mut out, Some(msg)),
            Err(TransformError::Retriable(m)) => Err(Failure::Abort(format!("transform: {m}"))),
            Err(TransformError::Fatal(m)) => Err(Failure::Fatal(format!("transform: {m}"))),
        };
        out.clear();
        self.outbuf = out;
        res?;
        let (topic, partition, next) = (msg.topic(), msg.partition(), msg.offset() + 1);
        match self
            .positions
            .iter_mut()
            .find(|(t, p, _)| *p == partition && t == topic)
        {
            Some(pos) => pos.2 = next,
            None => self.positions.push((topic.to_string(), partition, next)),
        }
        self.batch_in += 1;
        Ok(())
    }

    fn produce_all(
        &mut self,
        out: &mut Vec<Output>,
        source: Option<&BorrowedMessage<'_>>,
    ) -> Result<(), Failure> {
        for o in out.drain(..) {
            self.produce(o, source)?;
        }
        Ok(())
    }

    fn produce(&mut self, o: Output, source: Option<&BorrowedMessage<'_>>) -> Result<(), Failure> {
        let Output {
            topic,
            partition,
            key,
            payload,
            mut headers,
            dead_letter,
        } = o;
        loop {
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&topic);
            if let Some(k) = &key {
                rec = rec.key(k.as_slice());
            }
            if let Some(p) = &payload {
                rec = rec.payload(p.as_slice());
            }
            if let Some(h) = headers.take() {
                rec = rec.headers(h);
            }
            if let Some(p) = partition {
                rec = rec.partition(p);
            }
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                    headers = rec.headers;
                    // The local queue is full: the producer's thread frees room as delivery
                    // reports come in (its poll, unlike a sleep, would always last the timeout).
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                    // Larger than message.max.bytes: this output is poison. The source record
                    // goes to dead-letter in its place.
                    return match (dead_letter, source) {
                        (None, Some(src)) => {
                            let dl = Output::dead_letter(
                                self.dead_letter_topic.clone(),
                                self.stage,
                                "output_too_large",
                                &format!(
                                    "the output to {topic} ({} bytes) exceeds the producer's \
                                     message.max.bytes",
                                    payload.as_ref().map_or(0, Vec::len)
                                ),
                                src,
                            );
                            self.produce(dl, None)
                        }
                        _ => Err(Failure::Fatal(format!(
                            "a message to {topic} exceeds the producer's message.max.bytes and \
                             cannot be dead-lettered either; raise message.max.bytes \
                             (kafka.client_options) and the topic's max.message.bytes"
                        ))),
                    };
                }
                // Anything else (an erroneous transaction state, an unknown topic) is not the
                // record's fault: abort and retry.
                Err((e, _)) => return Err(classify(&format!("producing to {topic}"), &e)),
            }
        }
        match dead_letter {
            Some(kind) => match self.dl_by_kind.iter_mut().find(|(k, _)| *k == kind) {
                Some(c) => c.1 += 1,
                None => self.dl_by_kind.push((kind, 1)),
            },
            None => match self.out_by_topic.iter_mut().find(|(t, _)| *t == topic) {
                Some(c) => c.1 += 1,
                None => self.out_by_topic.push((topic, 1)),
            },
        }
        Ok(())
    }

    /// Flushes the transform, sends the input offsets and commits.
    fn commit<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), Failure> {
        let mut out = std::mem::take(&mut self.outbuf);
        let flushed = match self.transform.flush(&mut out) {
            Ok(()) => self.produce_all(&mut out, None),
            Err(TransformError::Retriable(m)) => Err(Failure::Abort(format!("flush: {m}"))),
            Err(TransformError::Fatal(m)) => Err(Failure::Fatal(format!("flush: {m}"))),
        };
        self.outbuf = out;
        flushed?;

        let mut tpl = TopicPartitionList::new();
        for (t, p, next) in &self.positions {
            let at = match self.transform.held_from(t, *p) {
                Some(h) => h.min(*next),
                None => *next,
            };
            tpl.add_partition_offset(t, *p, Offset::Offset(at))
                .map_err(|e| Failure::Abort(format!("offset list: {e}")))?;
        }
        let t_offsets = Instant::now();
        if tpl.count() > 0 {
            let gm = consumer.group_metadata().ok_or_else(|| {
                Failure::Abort("the consumer has no group metadata (not in the group yet)".into())
            })?;
            retry_call("send_offsets_to_transaction", || {
                self.producer
                    .send_offsets_to_transaction(&tpl, &gm, CALL_TIMEOUT)
            })?;
        }
        let t_commit = Instant::now();
        self.wait_delivered()?;
        retry_call("commit_transaction", || {
            self.producer.commit_transaction(CALL_TIMEOUT)
        })?;
        self.txn = Txn::Idle;
        self.committed(t_commit - t_offsets, t_commit.elapsed());
        Ok(())
    }

    /// Waits until every output is acknowledged (this producer's thread serves the delivery
    /// reports), so that the flush inside `commit_transaction` finds nothing in flight: rdkafka's
    /// flush polls in steps that always last 100 ms, measured as +100 ms per transaction.
    /// A failed delivery still fails the commit that follows.
    fn wait_delivered(&self) -> Result<(), Failure> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        while self.producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(Failure::Abort(format!(
                    "{} outputs not acknowledged within {CALL_TIMEOUT:?}",
                    self.producer.in_flight_count()
                )));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        Ok(())
    }

    /// Metrics and stats of a committed batch; `offsets` and `commit` are how long
    /// `send_offsets_to_transaction` and `commit_transaction` (incl. the flush) took.
    fn committed(&mut self, offsets: Duration, commit: Duration) {
        let stage = self.stage;
        let secs = self.batch_started.elapsed().as_secs_f64();
        metrics::counter!("etl_records_in_total", "stage" => stage).increment(self.batch_in);
        metrics::histogram!("etl_batch_size", "stage" => stage).record(self.batch_in as f64);
        metrics::histogram!("etl_batch_seconds", "stage" => stage).record(secs);
        let mut out = 0;
        for (topic, n) in self.out_by_topic.drain(..) {
            metrics::counter!("etl_records_out_total", "stage" => stage, "topic" => topic.to_string())
                .increment(n);
            out += n;
        }
        let mut dls = 0;
        for (kind, n) in self.dl_by_kind.drain(..) {
            metrics::counter!("etl_dead_letters_total", "stage" => stage, "kind" => kind)
                .increment(n);
            dls += n;
        }
        tracing::debug!(
            stage,
            records_in = self.batch_in,
            records_out = out,
            dead_letters = dls,
            seconds = secs,
            send_offsets_ms = offsets.as_millis() as u64,
            commit_ms = commit.as_millis() as u64,
            "transaction committed"
        );
        self.stats.records_in += self.batch_in;
        self.stats.records_out += out;
        self.stats.dead_letters += dls;
        self.stats.transactions += 1;
        self.batch_in = 0;
        self.transform.committed();
    }

    /// Records a failure: fatal stops the loop; otherwise abort (now if possible) and rewind.
    fn fail(&mut self, f: Failure) {
        match f {
            Failure::Fatal(m) => {
                self.fatal = Some(m);
            }
            Failure::Abort(reason) => {
                TransactionAborted {
                    stage: self.stage,
                    reason: &reason,
                    records: self.batch_in,
                }
                .emit();
                self.stats.aborts += 1;
                self.txn = Txn::NeedsAbort;
                self.rewind_pending = true;
                self.try_abort();
            }
        }
    }

    fn try_abort(&mut self) {
        if self.txn != Txn::NeedsAbort {
            return;
        }
        match self.producer.abort_transaction(CALL_TIMEOUT) {
            Ok(()) => self.txn = Txn::Idle,
            Err(e) => match classify("abort_transaction", &e) {
                Failure::Fatal(m) => self.fatal = Some(m),
                Failure::Abort(m) => {
                    tracing::warn!(stage = self.stage, error = %m, "abort failed; will retry")
                }
            },
        }
        self.batch_in = 0;
        self.out_by_topic.clear();
        self.dl_by_kind.clear();
    }

    /// Seeks every assigned partition back to its committed offset.
    fn rewind<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), String> {
        let assignment = consumer
            .assignment()
            .map_err(|e| format!("assignment: {e}"))?;
        let mut parts: Vec<(String, i32)> = Vec::new();
        if assignment.count() > 0 {
            let committed = consumer
                .committed_offsets(assignment, CALL_TIMEOUT)
                .map_err(|e| format!("committed offsets: {e}"))?;
            let mut seek = TopicPartitionList::new();
            for e in committed.elements() {
                // No committed offset yet: the consumer's auto.offset.reset (earliest).
                let to = match e.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    _ => Offset::Beginning,
                };
                seek.add_partition_offset(e.topic(), e.partition(), to)
                    .map_err(|e| format!("seek list: {e}"))?;
                parts.push((e.topic().to_string(), e.partition()));
            }
            let result = consumer
                .seek_partitions(seek, CALL_TIMEOUT)
                .map_err(|e| format!("seek: {e}"))?;
            for e in result.elements() {
                if let Err(err) = e.error() {
                    return Err(format!("seek {}[{}]: {err}", e.topic(), e.partition()));
                }
            }
        }
        self.positions.clear();
        self.transform.reset(&parts);
        self.rewind_pending = false;
        tracing::info!(stage = self.stage, partitions = %describe(&parts), "rewound to the committed offsets");
        Ok(())
    }
}

/// Repeats a transactional call that librdkafka calls retriable (e.g. a timeout), a few times.
fn retry_call(what: &str, mut f: impl FnMut() -> Result<(), KafkaError>) -> Result<(), Failure> {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MIN * 4);
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) if is_retriable(&e) && backoff.failures() < 3 => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, attempt = backoff.failures(), "{what} failed; retrying");
                std::thread::sleep(wait);
            }
            Err(e) => return Err(classify(what, &e)),
        }
    }
}

/// A transaction was aborted: log at warn and count.
struct TransactionAborted<'a> {
    stage: &'static str,
    reason: &'a str,
    records: u64,
}

impl TransactionAborted<'_> {
    fn emit(&self) {
        tracing::warn!(
            stage = self.stage,
            reason = self.reason,
            records = self.records,
            "transaction aborted; rewinding to the committed offsets"
        );
        metrics::counter!("etl_transaction_aborts_total", "stage" => self.stage).increment(1);
    }
}

/// The blocking loop. See the module docs.
pub fn run_blocking<T: Transform>(
    kafka: &KafkaConfig,
    settings: Settings,
    transform: T,
    shutdown: CancellationToken,
) -> Result<Stats, EosError> {
    let stage = settings.stage;
    let mut producer_config =
        super::transactional_producer_config(kafka, &settings.transactional_id);
    if !kafka.client_options.contains_key("retry.backoff.ms") {
        // Right after a commit the coordinator answers CONCURRENT_TRANSACTIONS until the
        // previous transaction's markers are written; librdkafka retries after
        // retry.backoff.ms, 100 ms by default, which most transactions would then wait.
        producer_config.set("retry.backoff.ms", "10");
    }
    let producer: TxnProducer = producer_config
        .create()
        .map_err(|source| EosError::Client {
            what: "producer",
            source,
        })?;

    // init_transactions fences an older process with the same transactional id and aborts
    // its open transaction. Retried while the broker is away.
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        if shutdown.is_cancelled() {
            return Ok(Stats::default());
        }
        match producer.init_transactions(CALL_TIMEOUT) {
            Ok(()) => break,
            Err(e) => match classify("init_transactions", &e) {
                Failure::Fatal(m) => return Err(EosError::Fatal(m)),
                Failure::Abort(m) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(stage, error = %m, retry_in = ?wait, "cannot initialise transactions; retrying");
                    std::thread::sleep(wait);
                }
            },
        }
    }
    tracing::info!(stage, transactional_id = %settings.transactional_id, "transactions initialised");

    let engine = Arc::new(Mutex::new(Engine {
        stage,
        dead_letter_topic: settings.dead_letter_topic.clone(),
        producer,
        transform,
        txn: Txn::Idle,
        rewind_pending: false,
        fatal: None,
        batch_started: Instant::now(),
        batch_in: 0,
        positions: Vec::new(),
        out_by_topic: Vec::new(),
        dl_by_kind: Vec::new(),
        outbuf: Vec::new(),
        stats: Stats::default(),
    }));
    let consumer: BaseConsumer<Ctx<T>> = super::consumer_config(kafka, &settings.group_id)
        .create_with_context(Ctx {
            engine: engine.clone(),
        })
        .map_err(|source| EosError::Client {
            what: "consumer",
            source,
        })?;
    let topics: Vec<&str> = settings.input_topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|source| EosError::Subscribe {
            topics: topics.join(","),
            source,
        })?;
    tracing::info!(stage, group = %settings.group_id, topics = %topics.join(","), "consuming");

    let result = main_loop(&consumer, &engine, &settings, &shutdown, &mut backoff);

    // Leave the group before the producer goes (the revoke callback may still run).
    consumer.unsubscribe();
    drop(consumer);
    let eng = lock(&engine);
    if eng.txn != Txn::Idle {
        // Only after a fatal error or a failed final commit: abort what is left (best effort;
        // a fenced producer cannot, and then the coordinator has aborted it already).
        let _ = eng.producer.abort_transaction(Duration::from_secs(5));
    }
    let stats = eng.stats.clone();
    drop(eng);
    result.map(|()| stats)
}

fn main_loop<T: Transform>(
    consumer: &BaseConsumer<Ctx<T>>,
    engine: &Arc<Mutex<Engine<T>>>,
    settings: &Settings,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), EosError> {
    let stage = settings.stage;
    let mut last_tick = Instant::now();
    // When the loop may next try to recover (abort / rewind) after a failure.
    let mut retry_at: Option<Instant> = None;
    loop {
        let mut eng = lock(engine);
        if let Some(m) = &eng.fatal {
            tracing::error!(stage, error = %m, "stopping: fatal error");
            return Err(EosError::Fatal(m.clone()));
        }
        if shutdown.is_cancelled() {
            if eng.txn == Txn::Open {
                if let Err(f) = eng.commit(consumer) {
                    eng.fail(f);
                }
            }
            if let Some(m) = &eng.fatal {
                return Err(EosError::Fatal(m.clone()));
            }
            tracing::info!(
                stage,
                records = eng.stats.records_in,
                "shutdown: batch in hand committed"
            );
            return Ok(());
        }

        // Recovering from a failed transaction: abort, then rewind, with backoff in between.
        if eng.txn == Txn::NeedsAbort || eng.rewind_pending {
            if retry_at.is_none_or(|t| Instant::now() >= t) {
                eng.try_abort();
                if eng.txn == Txn::Idle {
                    match eng.rewind(consumer) {
                        Ok(()) => {
                            retry_at = None;
                            // Back off once before reading again, without discarding anything.
                            let wait = backoff.next_delay();
                            drop(eng);
                            sleep_polling_nothing(wait, shutdown);
                            continue;
                        }
                        Err(m) => tracing::warn!(stage, error = %m, "rewind failed; will retry"),
                    }
                }
                retry_at = Some(Instant::now() + backoff.next_delay());
            }
            drop(eng);
            // Keep polling (group membership, callbacks) and discard: the rewind reads it again.
            let _ = consumer.poll(MAX_POLL);
            continue;
        }

        // Commit when the batch is full or old enough.
        if eng.txn == Txn::Open
            && (eng.batch_in >= settings.batch_size as u64
                || eng.batch_started.elapsed() >= settings.batch_max_age)
        {
            match eng.commit(consumer) {
                Ok(()) => backoff.reset(),
                Err(f) => {
                    eng.fail(f);
                    continue;
                }
            }
        }

        // Idle tick: let a stateful transform emit what is due.
        if eng.txn == Txn::Idle && last_tick.elapsed() >= settings.batch_max_age {
            last_tick = Instant::now();
            let mut out = std::mem::take(&mut eng.outbuf);
            let due = eng.transform.flush(&mut out);
            let res = match due {
                Ok(()) if out.is_empty() => Ok(()),
                Ok(()) => eng
                    .begin()
                    .and_then(|()| eng.produce_all(&mut out, None))
                    .and_then(|()| eng.commit(consumer)),
                Err(TransformError::Retriable(m)) => Err(Failure::Abort(format!("flush: {m}"))),
                Err(TransformError::Fatal(m)) => Err(Failure::Fatal(format!("flush: {m}"))),
            };
            out.clear();
            eng.outbuf = out;
            if let Err(f) = res {
                eng.fail(f);
                continue;
            }
        }

        let timeout = if eng.txn == Txn::Open {
            settings
                .batch_max_age
                .saturating_sub(eng.batch_started.elapsed())
                .min(MAX_POLL)
        } else {
            MAX_POLL
        };
        drop(eng);

        crate::observability::server::report_consumer(consumer);
        // The rebalance callback may run inside poll; it takes the engine lock itself.
        let Some(polled) = consumer.poll(timeout) else {
            continue;
        };
        let mut eng = lock(engine);
        match polled {
            Err(e) => {
                // Consumer errors are reports (broker down, partition EOF...): librdkafka
                // recovers by itself; positions did not move.
                tracing::warn!(stage, error = %e, "consumer error");
            }
            Ok(msg) => {
                if eng.rewind_pending || eng.txn == Txn::NeedsAbort {
                    continue; // a revoke callback failed the transaction: read again after the rewind
                }
                if let Err(f) = eng.process(&msg) {
                    eng.fail(f);
                }
            }
        }
    }
}

/// Sleeps `wait` in short steps, returning early on shutdown.
fn sleep_polling_nothing(wait: Duration, shutdown: &CancellationToken) {
    let until = Instant::now() + wait;
    while Instant::now() < until && !shutdown.is_cancelled() {
        std::thread::sleep(MAX_POLL.min(until.saturating_duration_since(Instant::now())));
    }
}

/// Copies the named headers of `msg` (those present) into a new header set.
pub fn keep_headers(msg: &BorrowedMessage<'_>, names: &[&str]) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(names.len());
    if let Some(h) = msg.headers() {
        for header in h.iter() {
            if names.contains(&header.key) {
                out = out.insert(rdkafka::message::Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
    }
    out
}
