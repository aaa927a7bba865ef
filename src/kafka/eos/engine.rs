//! The transaction engine: the state shared by the loop and the rebalance callback (the
//! transactional producer, the transform, the open transaction and the input positions), and
//! the transaction's life — begin, produce, commit with the input offsets, abort, rewind.
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::failure::{classify, retry_call, Failure};
use super::{Output, Stats, Transform, CALL_TIMEOUT};

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
    pub(super) batch_in: u64,
    /// Next offset per input partition since the last rewind (kept across transactions so a
    /// stateful transform's `held_from` can move without new input).
    pub(super) positions: Vec<(String, i32, i64)>,
    out_by_topic: Vec<(Arc<str>, u64)>,
    dl_by_kind: Vec<(&'static str, u64)>,
    /// Reused for every transform call, so a batch does not allocate a vector per message.
    outbuf: Vec<Output>,
    pub(super) stats: Stats,
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
    ) -> Self {
        Engine {
            stage,
            dead_letter_topic,
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
        }
    }

    pub(super) fn begin(&mut self) -> Result<(), Failure> {
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
                    let size = payload.as_ref().map_or(0, Vec::len);
                    return self.too_large(&topic, size, dead_letter, source);
                }
                // Anything else (an erroneous transaction state, an unknown topic) is not the
                // record's fault: abort and retry.
                Err((e, _)) => return Err(classify(&format!("producing to {topic}"), &e)),
            }
        }
        self.count(topic, dead_letter);
        Ok(())
    }

    /// An output of `size` bytes to `topic` exceeds message.max.bytes: dead-letters its source
    /// record instead, or stops the stage when the output was itself a dead letter or has no
    /// source (a flushed output).
    fn too_large(
        &mut self,
        topic: &str,
        size: usize,
        dead_letter: Option<&'static str>,
        source: Option<&BorrowedMessage<'_>>,
    ) -> Result<(), Failure> {
        match (dead_letter, source) {
            (None, Some(src)) => {
                let dl = Output::dead_letter(
                    self.dead_letter_topic.clone(),
                    self.stage,
                    "output_too_large",
                    &format!(
                        "the output to {topic} ({size} bytes) exceeds the producer's \
                         message.max.bytes"
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
        }
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
        let mut out = std::mem::take(&mut self.outbuf);
        let flushed = match self.transform.flush(&mut out) {
            Ok(()) => self.produce_all(&mut out, None),
            Err(e) => Err(Failure::from_transform("flush", e)),
        };
        self.outbuf = out;
        flushed?;

        let tpl = self.offsets()?;
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
    pub(super) fn fail(&mut self, f: Failure) {
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

    pub(super) fn try_abort(&mut self) {
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
    pub(super) fn rewind<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), String> {
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
