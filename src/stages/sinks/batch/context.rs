//! The consumer context, [`SinkContext`]: the driver's state behind its lock, applying a
//! finished batch to it ([`complete`](SinkContext::complete)) and handing a partition's
//! buffer to a writer task ([`dispatch`](SinkContext::dispatch)).
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::commit::{commit_written, Commit};
use super::state::{Completion, PartState, State};
use super::{Batch, BatchWriter, Outcome};
use crate::stages::sinks::{metric, SinkError, SinkMessage};

/// The consumer context: owns the driver state so the rebalance callback can use it.
pub struct SinkContext<W: BatchWriter> {
    pub(super) writer: Arc<W>,
    pub(super) handle: Handle,
    pub(super) topic: Arc<str>,
    pub(super) shutdown: CancellationToken,
    pub(super) stop: CancellationToken,
    pub(super) batch_size: usize,
    pub(super) batch_max_bytes: usize,
    pub(super) max_age: Duration,
    pub(super) retry_max_backoff: Duration,
    pub(super) state: Mutex<State>,
    pub(super) tx: mpsc::Sender<Completion>,
    pub(super) rx: Mutex<mpsc::Receiver<Completion>>,
    /// The consumer itself, to split partition queues in the rebalance callback (set once it
    /// exists; weak, as the consumer owns this context).
    pub(super) me: OnceLock<Weak<Driver<W>>>,
    /// Each assigned partition's own queue ([`split`](SinkContext::split)). Holds the consumer
    /// alive: cleared on revocation and when the poll loop ends.
    pub(super) queues: Mutex<HashMap<i32, PartitionQueue<SinkContext<W>>>>,
}

pub(super) type Driver<W> = BaseConsumer<SinkContext<W>>;

/// A partition's own queue, polled only while the partition has room for records.
pub(super) type Queue<W> = PartitionQueue<SinkContext<W>>;

impl<W: BatchWriter> ClientContext for SinkContext<W> {}

impl<W: BatchWriter> SinkContext<W> {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state itself stays consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn queues(&self) -> MutexGuard<'_, HashMap<i32, Queue<W>>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives each partition its own queue, before it is assigned (issue #18): the poll thread
    /// then stops taking a partition's records while its next batch is full and the previous
    /// one is still being written, and librdkafka stops fetching it once its queue holds
    /// `queued.min.messages` / `queued.max.messages.kbytes`. This replaced pausing the
    /// partition: librdkafka drops what it pre-fetched for a paused partition, and after a
    /// resume its broker thread fetched the partition again only at its next wake-up, up to 1 s
    /// later; measured, each partition waited for records 60 % of the time (p99 0.8 s) and the
    /// sink ran at a quarter of its database's speed. A partition whose queue cannot be split
    /// goes through the consumer's queue and is paused as before.
    pub(super) fn split(&self, parts: &[i32]) {
        let Some(consumer) = self.me.get().and_then(Weak::upgrade) else {
            return;
        };
        let mut queues = self.queues();
        for &p in parts {
            match consumer.split_partition_queue(&self.topic, p) {
                Some(q) => {
                    queues.insert(p, q);
                }
                None => {
                    tracing::warn!(partition = p, "no queue of its own for the partition; it is paused while its writer is busy");
                }
            }
        }
    }

    /// Applies a finished batch to the state.
    pub(super) fn complete(&self, consumer: &Driver<W>, st: &mut State, c: Completion) {
        st.inflight = st.inflight.saturating_sub(1);
        let elapsed = c.started.elapsed().as_secs_f64();
        let Some(ps) = st
            .parts
            .get_mut(&c.partition)
            .filter(|ps| ps.epoch == c.epoch)
        else {
            // The partition went away meanwhile; its new owner takes it from the store.
            return;
        };
        ps.inflight = false;
        ps.done_at = Some(Instant::now());
        match c.result {
            Ok(Outcome::Written {
                next_offset,
                rows,
                dead_letters,
            }) => {
                ps.expected = Some(next_offset);
                ps.written = Some(next_offset);
                if c.records == 0 {
                    tracing::debug!(
                        partition = c.partition,
                        next_offset,
                        "position past transaction markers stored"
                    );
                } else {
                    let target = if W::OFFSETS_IN_KAFKA {
                        "mongo"
                    } else {
                        "mysql"
                    };
                    metrics::counter!(metric::RECORDS_OUT, "topic" => target)
                        .increment(rows as u64);
                    metrics::histogram!(metric::BATCH_SIZE).record(c.records as f64);
                    metrics::histogram!(metric::BATCH_SECONDS).record(elapsed);
                    tracing::debug!(
                        partition = c.partition,
                        next_offset,
                        rows,
                        dead_letters,
                        seconds = elapsed,
                        "batch written"
                    );
                }
                let how = Commit::after_write::<W>();
                commit_written(consumer, &self.topic, st, &[c.partition], how);
            }
            Ok(Outcome::Fenced { stored }) => {
                if let Err(e) = self.follow_the_store(consumer, ps, c.partition, stored) {
                    st.fatal.get_or_insert(e);
                }
            }
            Err(SinkError::Stopped) => {
                tracing::warn!(
                    partition = c.partition,
                    records = c.records,
                    "shutdown grace period over: batch abandoned, it will be written after the restart"
                );
            }
            Err(e) => {
                st.fatal.get_or_insert(e);
            }
        }
    }

    /// A fenced batch: drops what is buffered and continues the partition from the offset
    /// the store holds.
    fn follow_the_store(
        &self,
        consumer: &Driver<W>,
        ps: &mut PartState,
        partition: i32,
        stored: Option<i64>,
    ) -> Result<(), SinkError> {
        tracing::warn!(
            partition,
            expected = ?ps.expected,
            stored = ?stored,
            "the stored offset moved under this instance (another owner, or a commit whose answer was lost); continuing from the stored offset"
        );
        ps.buf.clear();
        ps.bytes = 0;
        ps.first_at = None;
        ps.expected = stored;
        // The store's position is the partition's: what a later commit reports to Kafka.
        ps.written = stored;
        let off = stored.map(Offset::Offset).unwrap_or(Offset::Beginning);
        if let Err(e) = consumer.seek(&self.topic, partition, off, Duration::from_secs(10)) {
            return Err(SinkError::Fatal {
                what: "seeking to the stored offset",
                message: e.to_string(),
            });
        }
        if ps.paused {
            let _ = consumer.resume(&one(&self.topic, partition));
            ps.paused = false;
        }
        Ok(())
    }

    /// Hands a partition's buffer to a writer task.
    pub(super) fn dispatch(&self, consumer: &Driver<W>, st: &mut State, p: i32) {
        let Some(ps) = st.parts.get_mut(&p) else {
            return;
        };
        if ps.inflight || ps.buf.is_empty() {
            return;
        }
        let messages = std::mem::take(&mut ps.buf);
        ps.bytes = 0;
        let started = ps.first_at.take().unwrap_or_else(Instant::now);
        if let Some(done) = ps.done_at.take() {
            metrics::histogram!(metric::SINK_PHASE_SECONDS, "phase" => "wait")
                .record(done.elapsed().as_secs_f64());
        }
        let handed = Instant::now();
        ps.inflight = true;
        if ps.paused && !st.stopping {
            let _ = consumer.resume(&one(&self.topic, p));
            ps.paused = false;
        }
        let batch = Batch {
            topic: self.topic.clone(),
            partition: p,
            expected: ps.expected,
            messages,
        };
        let epoch = ps.epoch;
        st.inflight += 1;
        let records = batch.messages.len();
        metrics::counter!(metric::RECORDS_IN, "topic" => self.topic.to_string())
            .increment(records as u64);
        let writer = self.writer.clone();
        let tx = self.tx.clone();
        let stop = self.stop.clone();
        let revoked = ps.revoked.clone();
        self.handle.spawn(async move {
            metrics::histogram!(metric::SINK_PHASE_SECONDS, "phase" => "queued")
                .record(handed.elapsed().as_secs_f64());
            let fetched: Vec<i64> = batch
                .messages
                .iter()
                .filter_map(SinkMessage::fetched_at_ms)
                .collect();
            let result = tokio::select! {
                r = writer.write(batch, stop) => r,
                // A revoked partition: drop the write where it is (retrying, or mid-command);
                // its new owner writes from the committed position.
                _ = revoked.cancelled() => Err(SinkError::Stopped),
            };
            if let Ok(Outcome::Written { .. }) = &result {
                let now = chrono::Utc::now().timestamp_millis();
                let h = metrics::histogram!(metric::FETCH_TO_COMMIT_SECONDS);
                for f in fetched {
                    h.record((now - f).max(0) as f64 / 1000.0);
                }
            }
            let _ = tx.send(Completion {
                partition: p,
                epoch,
                records,
                started,
                result,
            });
        });
    }
}

impl<W: BatchWriter> SinkContext<W> {
    /// Hands an idle partition's position to a writer task, in flight like a batch without
    /// records: no batch of the partition runs meanwhile, a revocation waits for it or cancels
    /// it, a fence answers it, and once stored it is committed like a batch's offset.
    pub(super) fn dispatch_position(&self, st: &mut State, p: i32, position: i64) {
        let Some(ps) = st.parts.get_mut(&p) else {
            return;
        };
        if ps.inflight || !ps.buf.is_empty() {
            return;
        }
        ps.inflight = true;
        let (epoch, expected, revoked) = (ps.epoch, ps.expected, ps.revoked.clone());
        st.inflight += 1;
        let writer = self.writer.clone();
        let (tx, stop, topic) = (self.tx.clone(), self.stop.clone(), self.topic.clone());
        self.handle.spawn(async move {
            let started = Instant::now();
            let result = tokio::select! {
                r = writer.store_position(topic, p, expected, position, stop) => r,
                _ = revoked.cancelled() => Err(SinkError::Stopped),
            };
            let _ = tx.send(Completion {
                partition: p,
                epoch,
                records: 0,
                started,
                result,
            });
        });
    }
}

/// A list of one partition, to pause or resume it.
pub(super) fn one(topic: &str, p: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, p);
    tpl
}
