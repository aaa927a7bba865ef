//! The poll thread's loop: poll the consumer (callbacks, and records of partitions without a
//! queue of their own), take records from each partition's queue while the partition has room,
//! copy them into its buffer, and every few milliseconds apply finished batches, hand out due
//! ones and retry failed commits; on shutdown, write what is in hand, wait for it, commit and
//! leave the group.
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;

use super::commit::{commit_written, Commit};
use super::context::{one, Driver, SinkContext};
use super::state::State;
use super::BatchWriter;
use crate::stages::sinks::{SinkError, SinkMessage};

/// Longest wait on the consumer's queue while idle: records arriving in a partition's queue
/// are noticed within it.
const IDLE_POLL: Duration = Duration::from_millis(10);
/// Most records taken from one partition's queue before the next partition's turn.
const DRAIN_MAX: usize = 1_000;

pub(super) fn poll_loop<W: BatchWriter>(consumer: Arc<Driver<W>>) -> Result<(), SinkError> {
    let ctx = consumer.context();
    // The last round took records from a partition's queue: poll again at once.
    let mut took = false;
    let mut last_house = Instant::now();
    let mut last_recommit = Instant::now();
    let mut last_positions = Instant::now();
    // The writer connected to its database before the loop started; from here on each write
    // says whether the database answers (`sinks::report_db`).
    crate::observability::health().set_db_connected(true);
    let result = loop {
        let timeout = if took {
            Duration::ZERO
        } else {
            ctx.poll_timeout(&consumer).min(IDLE_POLL)
        };
        let mut idle = true;
        crate::observability::server::report_consumer(&*consumer);
        match consumer.poll(timeout) {
            Some(Ok(m)) => {
                idle = false;
                ctx.buffer(&consumer, &m, true);
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
            }
            None => {}
        }
        took = ctx.drain_queues(&consumer);
        if took {
            idle = false;
        }
        if idle || last_house.elapsed() >= Duration::from_millis(2) {
            last_house = Instant::now();
            if let Some(done) = ctx.housekeeping(&consumer, &mut last_recommit) {
                break done;
            }
            if last_positions.elapsed() >= ctx.max_age.min(Duration::from_secs(1)) {
                last_positions = Instant::now();
                ctx.store_idle_positions(&consumer);
            }
        }
    };
    ctx.wait_for_inflight(&consumer);
    {
        let mut st = ctx.lock();
        let parts: Vec<i32> = st.parts.keys().copied().collect();
        commit_written(&consumer, &ctx.topic, &mut st, &parts, Commit::Latest);
    }
    consumer.unsubscribe();
    // Serve the revocation so the group hands the partitions over at once.
    let _ = consumer.poll(Duration::from_millis(100));
    // The queues hold the consumer: drop them, so that it closes when this thread ends.
    ctx.queues().clear();
    tracing::info!(stage = W::STAGE, ok = result.is_ok(), "sink stopped");
    result
}

impl<W: BatchWriter> SinkContext<W> {
    /// How long the next poll may wait (starting the stop first when shutdown came): short
    /// while batches are in flight or being finished, else until the oldest buffer is due.
    fn poll_timeout(&self, consumer: &Driver<W>) -> Duration {
        let mut st = self.lock();
        if self.shutdown.is_cancelled() && !st.stopping {
            st.stopping = true;
            tracing::info!("shutdown: writing the records in hand");
            if let Ok(a) = consumer.assignment() {
                let _ = consumer.pause(&a);
            }
        }
        if st.inflight > 0 || st.stopping {
            Duration::from_millis(2)
        } else {
            let now = Instant::now();
            st.parts
                .values()
                .filter_map(|ps| ps.first_at)
                .map(|t| (t + self.max_age).saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100))
        }
    }

    /// Takes records from each partition's queue while the partition has room (see
    /// [`buffer`](Self::buffer)); true when any record was taken.
    fn drain_queues(&self, consumer: &Driver<W>) -> bool {
        let queues = self.queues();
        let mut took = false;
        for (&p, q) in queues.iter() {
            if !self.has_room(p) {
                continue;
            }
            for _ in 0..DRAIN_MAX {
                match q.poll(Duration::ZERO) {
                    Some(Ok(m)) => {
                        took = true;
                        if !self.buffer(consumer, &m, false) {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(partition = p, error = %e, "consumer error");
                        break;
                    }
                    None => break,
                }
            }
        }
        took
    }

    /// Whether a partition's records are taken now: not while its next batch is full and the
    /// previous one is still being written, nor when stopping or blocked (those are ignored).
    fn has_room(&self, p: i32) -> bool {
        let st = self.lock();
        !st.stopping
            && st.parts.get(&p).is_some_and(|ps| {
                let busy = ps.inflight && ps.full(self.batch_size, self.batch_max_bytes);
                !ps.blocked && !busy
            })
    }

    /// Copies a message into its partition's buffer and dispatches the buffer when it is full
    /// and the partition has no batch in flight. Returns whether the partition has room for
    /// more; when it has none and the record came from the consumer's queue (`pause`: the
    /// partition has no queue of its own), pauses the partition.
    fn buffer(&self, consumer: &Driver<W>, m: &BorrowedMessage<'_>, pause: bool) -> bool {
        let p = m.partition();
        let mut st = self.lock();
        let stopping = st.stopping;
        let mut full = false;
        let mut room = true;
        if let Some(ps) = st.parts.get_mut(&p) {
            if !ps.blocked && !stopping {
                ps.buf.push(SinkMessage {
                    partition: p,
                    offset: m.offset(),
                    key: m.key().map(|k| k.to_vec()),
                    payload: m.payload().map(|v| v.to_vec()),
                    headers: m.headers().map(|h| h.detach()),
                });
                let now = Instant::now();
                ps.first_at.get_or_insert(now);
                ps.last_record_at = Some(now);
                ps.bytes += m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len);
                if ps.full(self.batch_size, self.batch_max_bytes) {
                    if !ps.inflight {
                        full = true;
                    } else {
                        room = false;
                        if pause && !ps.paused {
                            let _ = consumer.pause(&one(&self.topic, p));
                            ps.paused = true;
                        }
                    }
                }
            }
        }
        if full {
            self.dispatch(consumer, &mut st, p);
        }
        room
    }

    /// Applies finished batches, dispatches due ones and retries failed commits; `Some` when
    /// the loop is over (a fatal error, or a stop with nothing left to write).
    fn housekeeping(
        &self,
        consumer: &Driver<W>,
        last_recommit: &mut Instant,
    ) -> Option<Result<(), SinkError>> {
        let mut st = self.lock();
        loop {
            let next = {
                let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
                rx.try_recv()
            };
            match next {
                Ok(c) => self.complete(consumer, &mut st, c),
                Err(_) => break,
            }
        }
        if let Some(e) = st.fatal.take() {
            return Some(Err(e));
        }
        self.dispatch_due(consumer, &mut st);
        // Synchronous commits that failed, again at most once a second.
        if last_recommit.elapsed() >= Duration::from_secs(1) {
            let retry: Vec<i32> = st
                .parts
                .iter()
                .filter(|(_, ps)| ps.uncommitted().is_some() && !ps.inflight)
                .map(|(p, _)| *p)
                .collect();
            if !retry.is_empty() {
                *last_recommit = Instant::now();
                let how = Commit::Pending(CommitMode::Sync);
                commit_written(consumer, &self.topic, &mut st, &retry, how);
            }
        }
        if st.stopping {
            let pending = st.inflight > 0 || st.parts.values().any(|ps| !ps.buf.is_empty());
            if !pending {
                return Some(Ok(()));
            }
            if self.stop.is_cancelled() && st.inflight == 0 {
                return Some(Ok(()));
            }
        }
        None
    }

    /// Dispatches every buffer that is full, old enough, or (when stopping) not empty.
    fn dispatch_due(&self, consumer: &Driver<W>, st: &mut State) {
        let now = Instant::now();
        let due: Vec<i32> = st
            .parts
            .iter()
            .filter(|(_, ps)| {
                !ps.inflight
                    && !ps.buf.is_empty()
                    && (st.stopping
                        || ps.full(self.batch_size, self.batch_max_bytes)
                        || ps.first_at.is_some_and(|t| now >= t + self.max_age))
            })
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            self.dispatch(consumer, st, p);
        }
    }

    /// Stores the positions of idle partitions that are past the offset stored (transaction
    /// markers): see the module docs. Every polled record of such a partition is written (its
    /// buffer is empty and nothing is in flight), so the position skips no record; a seek
    /// (`follow_the_store`) resets the position, so a stale one is never stored.
    fn store_idle_positions(&self, consumer: &Driver<W>) {
        let mut st = self.lock();
        if st.stopping {
            return;
        }
        let now = Instant::now();
        let idle: Vec<i32> = st
            .parts
            .iter()
            .filter(|(_, ps)| {
                !ps.inflight
                    && !ps.blocked
                    && !ps.paused
                    && ps.buf.is_empty()
                    && ps.last_record_at.is_none_or(|t| now >= t + self.max_age)
            })
            .map(|(p, _)| *p)
            .collect();
        if idle.is_empty() {
            return;
        }
        let positions = match consumer.position() {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "reading the consumer's positions");
                return;
            }
        };
        for p in idle {
            let Some(Offset::Offset(at)) =
                positions.find_partition(&self.topic, p).map(|e| e.offset())
            else {
                continue; // nothing consumed since the assignment or the last seek
            };
            // `expected` is the stored position (Mongo: the written one; none yet after an
            // assignment, and a valid position is then past the group's committed offset).
            let ahead = st
                .parts
                .get(&p)
                .is_some_and(|ps| ps.expected.is_none_or(|e| at > e));
            if ahead {
                self.dispatch_position(&mut st, p, at);
            }
        }
    }

    /// Waits (bounded by the hard stop) for batches still in flight, e.g. after a fatal error.
    fn wait_for_inflight(&self, consumer: &Driver<W>) {
        loop {
            let inflight = self.lock().inflight;
            if inflight == 0 || self.stop.is_cancelled() {
                break;
            }
            let next = {
                let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
                rx.recv_timeout(Duration::from_millis(50))
            };
            if let Ok(c) = next {
                let mut st = self.lock();
                self.complete(consumer, &mut st, c);
                st.fatal.take();
            }
        }
    }
}
