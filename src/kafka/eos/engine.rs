//! The transaction engine: the state shared by the loop and the rebalance callback (the
//! transactional producer, the transform, the open transaction and the input positions), and
//! the transaction's life — begin, produce, commit with the input offsets, abort, rewind.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::failure::{classify, is_retriable, retry_call, stalled, Failure};
use super::limits::{left_out, MessageLimits};
use super::watchdog::{Call, Watch};
use super::{Output, Stats, Timing, Transform};
use crate::kafka::headers::{with_message, ERROR_MESSAGE};
use crate::observability::outcome::{self, RecordOutcome};

/// `etl.error.kind` of a record whose output the broker would refuse as too large.
pub(super) const OUTPUT_TOO_LARGE: &str = "output_too_large";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Txn {
    Idle,
    Open,
    /// A failed transaction that could not be aborted yet.
    NeedsAbort,
}

/// A producer whose own thread serves delivery reports: `abort_transaction` purges and then
/// waits for the purged messages' reports, which would never come with nobody polling.
pub(super) type TxnProducer = ThreadedProducer<DefaultProducerContext>;

pub(super) struct Engine<T> {
    pub(super) stage: &'static str,
    dead_letter_topic: Arc<str>,
    pub(super) producer: TxnProducer,
    pub(super) transform: T,
    pub(super) txn: Txn,
    pub(super) rewind_pending: bool,
    pub(super) fatal: Option<String>,
    pub(super) batch_started: Instant,
    /// Whether the open transaction fills up to `batch_size` past `batch_max_age`, because
    /// the input already holds the rest of a full batch (decided once, when it reaches its
    /// age; `None` until then).
    pub(super) fill: Option<bool>,
    /// How long the last commit took (`send_offsets_to_transaction` + `commit_transaction`).
    pub(super) last_commit: Duration,
    pub(super) batch_in: u64,
    /// Next offset per input partition since the last rewind (kept across transactions so a
    /// stateful transform's `held_from` can move without new input).
    pub(super) positions: Vec<(String, i32, i64)>,
    out_by_topic: Vec<(Arc<str>, u64)>,
    dl_by_kind: Vec<(&'static str, u64)>,
    /// The dead letters of the transaction in hand, logged as record outcomes once it commits.
    outcomes: Vec<RecordOutcome>,
    /// Reused for every transform call, so a batch does not allocate a vector per message.
    outbuf: Vec<Output>,
    pub(super) stats: Stats,
    limits: MessageLimits,
    pub(super) timing: Timing,
    /// When the failed transaction in hand first asked for its abort.
    abort_since: Option<Instant>,
    /// The committed offset of each input partition, as far as this instance knows (its own
    /// commits, or read once after an assignment).
    pub(super) committed: HashMap<(String, i32), i64>,
    /// Where the loop is, for its watchdog (the revoke callback names its commit too).
    pub(super) watch: Watch,
}

// A poisoned lock means a panic mid-update; the engine is then in doubt, which the abort
// and rewind that follow a panic-free failure path would fix — but we never panic inside.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `topic[partition],...` for logs.
pub(super) fn describe(parts: &[(String, i32)]) -> String {
    parts
        .iter()
        .map(|(t, p)| format!("{t}[{p}]"))
        .collect::<Vec<_>>()
        .join(",")
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

impl<T: Transform> Engine<T> {
    /// An idle engine around a producer whose transactions are initialised.
    pub(super) fn new(
        stage: &'static str,
        dead_letter_topic: Arc<str>,
        producer: TxnProducer,
        transform: T,
        limits: MessageLimits,
        timing: Timing,
    ) -> Self {
        Engine {
            limits,
            timing,
            abort_since: None,
            committed: HashMap::new(),
            watch: Watch::new(),
            stage,
            dead_letter_topic,
            producer,
            transform,
            txn: Txn::Idle,
            rewind_pending: false,
            fatal: None,
            batch_started: Instant::now(),
            fill: None,
            last_commit: Duration::ZERO,
            batch_in: 0,
            positions: Vec::new(),
            out_by_topic: Vec::new(),
            dl_by_kind: Vec::new(),
            outcomes: Vec::new(),
            outbuf: Vec::new(),
            stats: Stats::default(),
        }
    }

    pub(super) fn begin(&mut self) -> Result<(), Failure> {
        if self.txn == Txn::Idle {
            self.producer
                .begin_transaction()
                .map_err(|e| classify("begin_transaction", &e))?;
            self.txn = Txn::Open;
            self.batch_started = Instant::now();
            self.fill = None;
        }
        Ok(())
    }

    /// One input message: transform, produce its outputs, remember its position.
    pub(super) fn process(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), Failure> {
        self.begin()?;
        let mut out = std::mem::take(&mut self.outbuf);
        let res = match self.transform.transform(msg, &mut out) {
            Ok(()) => self.produce_all(&mut out, Some(msg)),
            Err(e) => Err(Failure::from_transform("transform", e)),
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

    /// The idle tick: lets a stateful transform emit what is due, in a transaction of its own.
    pub(super) fn flush_idle<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), Failure> {
        let mut out = std::mem::take(&mut self.outbuf);
        let res = match self.transform.flush(&mut out) {
            Ok(()) if out.is_empty() => Ok(()),
            Ok(()) => self
                .begin()
                .and_then(|()| self.produce_all(&mut out, None))
                .and_then(|()| self.commit(consumer)),
            Err(e) => Err(Failure::from_transform("flush", e)),
        };
        out.clear();
        self.outbuf = out;
        res
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

    /// Produces one output; one the broker would refuse as too large is replaced by a dead
    /// letter ([`Self::too_large`]).
    fn produce(&mut self, o: Output, source: Option<&BorrowedMessage<'_>>) -> Result<(), Failure> {
        if let (Some(_), Some(hs)) = (o.dead_letter, &o.headers) {
            self.outcomes.push(RecordOutcome::from_dead_letter(
                "dead_letter",
                self.stage,
                o.key.as_deref(),
                hs,
            ));
        }
        let max = self
            .limits
            .max_for_blocking(&o.topic)
            .map_err(|e| Failure::Abort(e.to_string()))?;
        let size = o.wire_size();
        if size > max {
            return self.too_large(o, size, max, source);
        }
        match self.send(o)? {
            None => Ok(()),
            // librdkafka refused it although it looked small enough: the same way out.
            Some(o) => self.too_large(o, size, max, source),
        }
    }

    /// Sends one output into the transaction; `Some(output)` when librdkafka refuses it as too
    /// large (`message.max.bytes`).
    fn send(&mut self, mut o: Output) -> Result<Option<Output>, Failure> {
        let mut full_since: Option<Instant> = None;
        loop {
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&o.topic);
            if let Some(k) = &o.key {
                rec = rec.key(k.as_slice());
            }
            if let Some(p) = &o.payload {
                rec = rec.payload(p.as_slice());
            }
            if let Some(h) = o.headers.take() {
                rec = rec.headers(h);
            }
            if let Some(p) = o.partition {
                rec = rec.partition(p);
            }
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                    o.headers = rec.headers;
                    // The local queue is full: the producer's thread frees room as delivery
                    // reports come in (its poll, unlike a sleep, would always last the timeout).
                    // Not for ever: a queue that does not drain within a call's timeout (its
                    // partitions' leaders away) aborts the transaction, to be retried.
                    let since = *full_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.timing.call {
                        return Err(Failure::Abort(format!(
                            "the producer's queue stayed full for {:?} (kafka.transaction_timeout \
                             / 3): {} messages not delivered",
                            self.timing.call,
                            self.producer.in_flight_count()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                    rec,
                )) => {
                    o.headers = rec.headers;
                    return Ok(Some(o));
                }
                // Anything else (an erroneous transaction state, an unknown topic) is not the
                // record's fault: abort and retry.
                Err((e, _)) => return Err(classify(&format!("producing to {}", o.topic), &e)),
            }
        }
        self.count(o.topic, o.dead_letter);
        Ok(None)
    }

    /// An output of `size` bytes is more than its topic takes (`max`): poison. A record is
    /// replaced by the dead letter of its source (the origin the transform kept, or else the
    /// input message); a dead letter too large for the dead-letter topic goes without its
    /// payload (the message says why; the coordinates say where the record is).
    fn too_large(
        &mut self,
        o: Output,
        size: usize,
        max: usize,
        source: Option<&BorrowedMessage<'_>>,
    ) -> Result<(), Failure> {
        let topic = o.topic.clone();
        if o.dead_letter.is_some() {
            return self.produce_reference(o, size, max);
        }
        let reason = format!(
            "the output to {topic} is {size} bytes, more than the {max} it accepts \
             (max.message.bytes of the topic, message.max.bytes of the producer)"
        );
        let dl_topic = self.dead_letter_topic.clone();
        // The origin wins: a stateful transform (score) emits records held from earlier.
        let dl = match (source, o.origin) {
            (_, Some(mut origin)) => {
                origin.take_headers_from(o.headers.as_ref());
                origin.dead_letter(dl_topic, self.stage, OUTPUT_TOO_LARGE, &reason, o.key)
            }
            (Some(src), None) => {
                Output::dead_letter(dl_topic, self.stage, OUTPUT_TOO_LARGE, &reason, src)
            }
            (None, None) => Output::reference(
                dl_topic,
                self.stage,
                OUTPUT_TOO_LARGE,
                &reason,
                o.key,
                o.headers.as_ref(),
            ),
        };
        let max_dl = self
            .limits
            .max_for_blocking(&dl.topic)
            .map_err(|e| Failure::Abort(e.to_string()))?;
        let dl_size = dl.wire_size();
        if dl_size > max_dl {
            return self.produce_reference(dl, dl_size, max_dl);
        }
        match self.send(dl)? {
            None => Ok(()),
            Some(dl) => self.produce_reference(dl, dl_size, max_dl),
        }
    }

    /// A dead letter of `size` bytes, more than its topic takes (`max`), without its payload
    /// (and, if still too large, without its key); stops the stage if even that is refused.
    fn produce_reference(
        &mut self,
        mut dl: Output,
        size: usize,
        max: usize,
    ) -> Result<(), Failure> {
        let why = left_out(size, &dl.topic, max);
        dl.payload = None;
        dl.headers = dl.headers.map(|h| with_message(&h, ERROR_MESSAGE, &why));
        if dl.wire_size() > max {
            dl.key = None;
        }
        if dl.wire_size() <= max && self.send(dl)?.is_none() {
            return Ok(());
        }
        Err(Failure::Fatal(format!(
            "a dead letter to {} does not fit even without its payload and key ({max} bytes \
             at most); raise the topic's max.message.bytes",
            self.dead_letter_topic
        )))
    }

    /// Counts a produced output for the metrics of the batch.
    fn count(&mut self, topic: Arc<str>, dead_letter: Option<&'static str>) {
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
    }

    /// Flushes the transform, sends the input offsets and commits.
    pub(super) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), Failure> {
        self.watch.calling(Call::Flush);
        let mut out = std::mem::take(&mut self.outbuf);
        let flushed = match self.transform.flush(&mut out) {
            Ok(()) => self.produce_all(&mut out, None),
            Err(e) => Err(Failure::from_transform("flush", e)),
        };
        self.outbuf = out;
        flushed?;

        let tpl = self.offsets()?;
        let t_offsets = Instant::now();
        let (stage, timing) = (self.stage, self.timing);
        if tpl.count() > 0 {
            let gm = consumer.group_metadata().ok_or_else(|| {
                Failure::Abort("the consumer has no group metadata (not in the group yet)".into())
            })?;
            self.watch.calling(Call::SendOffsets);
            retry_call(
                stage,
                "send_offsets_to_transaction",
                t_offsets,
                timing,
                &self.watch,
                || {
                    self.producer
                        .send_offsets_to_transaction(&tpl, &gm, timing.call)
                },
            )?;
        }
        let t_commit = Instant::now();
        self.watch.calling(Call::Delivery);
        self.wait_delivered()?;
        self.watch.calling(Call::CommitTransaction);
        retry_call(
            stage,
            "commit_transaction",
            t_offsets,
            timing,
            &self.watch,
            || self.producer.commit_transaction(timing.call),
        )?;
        self.txn = Txn::Idle;
        for e in tpl.elements() {
            if let Offset::Offset(o) = e.offset() {
                self.committed
                    .insert((e.topic().to_string(), e.partition()), o);
            }
        }
        self.committed(t_commit - t_offsets, t_commit.elapsed());
        Ok(())
    }

    /// The offsets to commit: per input partition the next offset, or the oldest one the
    /// transform still holds in memory.
    fn offsets(&self) -> Result<TopicPartitionList, Failure> {
        let mut tpl = TopicPartitionList::new();
        for (t, p, next) in &self.positions {
            let at = match self.transform.held_from(t, *p) {
                Some(h) => h.min(*next),
                None => *next,
            };
            tpl.add_partition_offset(t, *p, Offset::Offset(at))
                .map_err(|e| Failure::Abort(format!("offset list: {e}")))?;
        }
        Ok(tpl)
    }

    /// Waits until every output is acknowledged (this producer's thread serves the delivery
    /// reports), so that the flush inside `commit_transaction` finds nothing in flight: rdkafka's
    /// flush polls in 100 ms steps that always run to their end (docs/notes/eos.md).
    /// A failed delivery still fails the commit that follows.
    fn wait_delivered(&self) -> Result<(), Failure> {
        let deadline = Instant::now() + self.timing.call;
        while self.producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(Failure::Abort(format!(
                    "{} outputs not acknowledged within {:?}",
                    self.producer.in_flight_count(),
                    self.timing.call
                )));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        Ok(())
    }

    /// Metrics and stats of a committed batch; `offsets` and `commit` are how long
    /// `send_offsets_to_transaction` and `commit_transaction` (incl. the flush) took.
    fn committed(&mut self, offsets: Duration, commit: Duration) {
        self.last_commit = offsets + commit;
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
        for o in self.outcomes.drain(..) {
            outcome::record(&o);
        }
        outcome::flush();
        self.transform.committed();
    }

    /// Records a failure: fatal stops the loop; otherwise abort (now if possible) and rewind.
    pub(super) fn fail(&mut self, f: Failure) {
        match f {
            Failure::Fatal(m) => self.fatal = Some(m),
            // The broker is fine: abort now, not at the transaction timeout readers wait on.
            Failure::Halt(m) => {
                if self.txn == Txn::Open {
                    self.txn = Txn::NeedsAbort;
                    self.try_abort();
                }
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
                self.abort_since.get_or_insert_with(Instant::now);
                self.rewind_pending = true;
                self.try_abort();
            }
        }
    }

    pub(super) fn try_abort(&mut self) {
        if self.txn != Txn::NeedsAbort {
            return;
        }
        self.watch.calling(Call::AbortTransaction);
        self.watch.attempt(true);
        let aborted = self.producer.abort_transaction(self.timing.call);
        self.watch.attempt(false);
        match aborted {
            Ok(()) => {
                self.txn = Txn::Idle;
                if self.abort_since.take().is_some() {
                    stalled(self.stage, false);
                }
            }
            Err(e) => {
                let since = *self.abort_since.get_or_insert_with(Instant::now);
                match classify("abort_transaction", &e) {
                    Failure::Fatal(m) | Failure::Halt(m) => self.fatal = Some(m),
                    Failure::Abort(m) if since.elapsed() >= self.timing.deadline => {
                        self.fatal = Some(format!(
                            "the failed transaction could not be aborted within {:?} \
                             (kafka.transaction_timeout); stopping, so that the next start of \
                             this transactional id resolves it and the group hands the \
                             partitions on: {m}",
                            self.timing.deadline
                        ))
                    }
                    Failure::Abort(m) => {
                        if is_retriable(&e) {
                            stalled(self.stage, true);
                        }
                        tracing::warn!(stage = self.stage, error = %m, "abort failed; will retry")
                    }
                }
            }
        }
        self.batch_in = 0;
        self.out_by_topic.clear();
        self.dl_by_kind.clear();
        self.outcomes.clear();
    }

    /// Seeks every assigned partition back to its committed offset.
    pub(super) fn rewind<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), String> {
        let assignment = consumer
            .assignment()
            .map_err(|e| format!("assignment: {e}"))?;
        let mut parts: Vec<(String, i32)> = Vec::new();
        if assignment.count() > 0 {
            self.watch.calling(Call::CommittedOffsets);
            let committed = consumer
                .committed_offsets(assignment, self.timing.call)
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
                .seek_partitions(seek, self.timing.call)
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
