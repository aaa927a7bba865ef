//! The consumer driver both sinks run on.
//!
//! One blocking thread owns a `BaseConsumer` (measured several times faster than
//! `StreamConsumer` on small messages) and does nothing but poll, copy messages into
//! per-partition buffers and hand finished batches to tokio tasks. A partition's batch is cut
//! at `sink.batch_size` records, at `sink.batch_max_bytes` of keys and payloads, or when its
//! oldest record is `sink.batch_max_age` old, whichever comes first. Each partition has at
//! most one batch in flight, so its rows are written in offset order; different partitions are
//! written in parallel. While a partition's next batch is full and its previous one is still
//! being written, the partition is paused (the thread keeps polling, so the consumer stays in
//! its group).
//!
//! Assignment: the rebalance callback asks the writer where each new partition starts (the
//! MySQL sink reads its offsets table) and assigns the partitions at those offsets, before any
//! record of them is fetched. Revocation first lets the batches in flight for the revoked
//! partitions finish (bounded), then drops what is buffered for them. Works with the
//! cooperative-sticky (incremental) and the eager protocols.
//!
//! Shutdown: stop fetching, write every buffered record regardless of age, wait for all
//! batches, commit, leave the group. Batches still failing `sink.shutdown_timeout` after the
//! signal are abandoned; their offsets did not move, so the next start writes them again.
use std::collections::HashMap;
use std::future::Future;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::{metric, SinkConfig, SinkError, SinkMessage};
use crate::settings::{Common, TopicRole};

/// A partition's records to write, in offset order.
#[derive(Debug)]
pub struct Batch {
    pub topic: Arc<str>,
    pub partition: i32,
    pub messages: Vec<SinkMessage>,
    /// The next offset the writer's store holds for this partition, as this instance knows it
    /// (`None`: nothing stored). The MySQL sink refuses to write when the store says otherwise.
    pub expected: Option<i64>,
}

/// What became of a batch.
#[derive(Debug)]
pub enum Outcome {
    /// Durably written; the partition continues at `next_offset`.
    Written {
        next_offset: i64,
        rows: usize,
        dead_letters: usize,
    },
    /// The store holds another position than expected (another instance wrote the partition,
    /// or an earlier commit whose answer was lost did go through): nothing was written, and
    /// the partition must continue from `stored`.
    Fenced { stored: Option<i64> },
}

/// A sink's write side, driven by [`drive`].
pub trait BatchWriter: Send + Sync + 'static {
    /// Stage name: consumer group `<pipeline>.<stage>`, dead-letter `etl.error.stage`.
    const STAGE: &'static str;
    /// True when Kafka's committed offset is the sink's position (Mongo: committed after
    /// each write); false when the writer stores it (MySQL: Kafka commits
    /// are only for lag visibility).
    const OFFSETS_IN_KAFKA: bool;

    /// Where newly assigned partitions start: `Some(map)` with the stored next offset per
    /// partition (absent: from the beginning), or `None` for Kafka's committed offsets.
    fn start_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> impl Future<Output = Result<Option<HashMap<i32, i64>>, SinkError>> + Send;

    /// Writes one batch, retrying retriable failures until `stop`.
    fn write(
        &self,
        batch: Batch,
        stop: CancellationToken,
    ) -> impl Future<Output = Result<Outcome, SinkError>> + Send;
}

/// A token cancelled `grace` after `shutdown` is: the end of the shutdown's patience.
pub fn hard_stop(shutdown: &CancellationToken, grace: Duration) -> CancellationToken {
    let stop = CancellationToken::new();
    let (s, t) = (shutdown.clone(), stop.clone());
    tokio::spawn(async move {
        s.cancelled().await;
        tokio::select! {
            _ = tokio::time::sleep(grace) => t.cancel(),
            _ = t.cancelled() => {}
        }
    });
    stop
}

struct Completion {
    partition: i32,
    epoch: u64,
    records: usize,
    started: Instant,
    result: Result<Outcome, SinkError>,
}

#[derive(Default)]
struct PartState {
    epoch: u64,
    buf: Vec<SinkMessage>,
    /// Key and payload bytes in `buf`.
    bytes: usize,
    first_at: Option<Instant>,
    inflight: bool,
    paused: bool,
    /// Start offsets could not be read (shutdown came first): its records are ignored.
    blocked: bool,
    expected: Option<i64>,
    /// The last next_offset written.
    written: Option<i64>,
    /// The last offset committed to Kafka (a synchronous commit that succeeded, an
    /// asynchronous one that was sent).
    committed: Option<i64>,
}

impl PartState {
    /// The latest written offset when Kafka does not have it yet (a new batch, or a commit
    /// that failed: retried with the newest offset, never an older one).
    fn uncommitted(&self) -> Option<i64> {
        self.written.filter(|w| self.committed != Some(*w))
    }

    /// The buffer holds a whole batch (by records or by bytes).
    fn full(&self, batch_size: usize, batch_max_bytes: usize) -> bool {
        self.buf.len() >= batch_size || self.bytes >= batch_max_bytes
    }
}

#[derive(Default)]
struct State {
    parts: HashMap<i32, PartState>,
    next_epoch: u64,
    inflight: usize,
    stopping: bool,
    fatal: Option<SinkError>,
}

/// The consumer context: owns the driver state so the rebalance callback can use it.
pub struct SinkContext<W: BatchWriter> {
    writer: Arc<W>,
    handle: Handle,
    topic: Arc<str>,
    shutdown: CancellationToken,
    stop: CancellationToken,
    batch_size: usize,
    batch_max_bytes: usize,
    max_age: Duration,
    retry_max_backoff: Duration,
    state: Mutex<State>,
    tx: mpsc::Sender<Completion>,
    rx: Mutex<mpsc::Receiver<Completion>>,
}

type Driver<W> = BaseConsumer<SinkContext<W>>;

impl<W: BatchWriter> ClientContext for SinkContext<W> {}

impl<W: BatchWriter> ConsumerContext for SinkContext<W> {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let parts: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.on_assign(consumer, tpl, &parts, cooperative)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.on_revoke(consumer, tpl, &parts, cooperative)
            }
            other => {
                tracing::error!(error = ?other, "rebalance error; dropping the assignment");
                let _ = consumer.unassign();
                let mut st = self.lock();
                st.parts.clear();
            }
        }
    }
}

impl<W: BatchWriter> SinkContext<W> {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state itself stays consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_assign(
        &self,
        consumer: &Driver<W>,
        tpl: &mut TopicPartitionList,
        parts: &[i32],
        cooperative: bool,
    ) {
        let starts = if parts.is_empty() {
            Ok(None)
        } else {
            let writer = self.writer.clone();
            let topic = self.topic.clone();
            let p = parts.to_vec();
            self.handle.block_on(super::retry(
                "reading stored offsets",
                self.retry_max_backoff,
                &self.stop,
                || writer.start_offsets(&topic, &p),
            ))
        };
        let mut st = self.lock();
        let mut blocked = false;
        let mut expected: HashMap<i32, i64> = HashMap::new();
        match starts {
            Ok(Some(map)) => {
                for &p in parts {
                    let off = map
                        .get(&p)
                        .map(|o| Offset::Offset(*o))
                        .unwrap_or(Offset::Beginning);
                    if let Err(e) = tpl.set_partition_offset(&self.topic, p, off) {
                        tracing::error!(partition = p, error = %e, "cannot set start offset");
                    }
                }
                expected = map;
            }
            Ok(None) => {}
            Err(e) => {
                blocked = true;
                if !matches!(e, SinkError::Stopped) {
                    st.fatal.get_or_insert(e);
                }
            }
        }
        let r = if cooperative {
            consumer.incremental_assign(tpl)
        } else {
            consumer.assign(tpl)
        };
        if let Err(e) = r {
            st.fatal.get_or_insert(SinkError::Fatal {
                what: "assigning partitions",
                message: e.to_string(),
            });
        }
        for &p in parts {
            st.next_epoch += 1;
            let epoch = st.next_epoch;
            st.parts.insert(
                p,
                PartState {
                    epoch,
                    blocked,
                    expected: expected.get(&p).copied(),
                    ..Default::default()
                },
            );
        }
        if blocked || st.stopping {
            let _ = consumer.pause(tpl);
        }
        let starts: Vec<String> = parts
            .iter()
            .map(|p| match expected.get(p) {
                Some(o) => format!("{p}@{o}"),
                None => format!("{p}@start"),
            })
            .collect();
        tracing::info!(topic = %self.topic, partitions = ?starts, "partitions assigned");
        metrics::gauge!(metric::ASSIGNED_PARTITIONS).set(st.parts.len() as f64);
    }

    fn on_revoke(
        &self,
        consumer: &Driver<W>,
        tpl: &TopicPartitionList,
        parts: &[i32],
        cooperative: bool,
    ) {
        // Let the batches in flight for these partitions finish, so their new owner starts
        // where they end (a batch that outlives this wait is still safe: see Outcome::Fenced).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let busy = {
                let st = self.lock();
                parts
                    .iter()
                    .any(|p| st.parts.get(p).is_some_and(|ps| ps.inflight))
            };
            if !busy || Instant::now() >= deadline {
                break;
            }
            let next = {
                let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
                rx.recv_timeout(Duration::from_millis(100))
            };
            if let Ok(c) = next {
                let mut st = self.lock();
                self.complete(consumer, &mut st, c);
            }
        }
        let mut st = self.lock();
        if !consumer.assignment_lost() {
            commit_written(consumer, &self.topic, &mut st, parts, Commit::Latest);
        }
        for p in parts {
            st.parts.remove(p);
        }
        let r = if cooperative {
            consumer.incremental_unassign(tpl)
        } else {
            consumer.unassign()
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "unassigning partitions");
        }
        tracing::info!(topic = %self.topic, partitions = ?parts, "partitions revoked");
        metrics::gauge!(metric::ASSIGNED_PARTITIONS).set(st.parts.len() as f64);
    }

    /// Applies a finished batch to the state.
    fn complete(&self, consumer: &Driver<W>, st: &mut State, c: Completion) {
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
        match c.result {
            Ok(Outcome::Written {
                next_offset,
                rows,
                dead_letters,
            }) => {
                ps.expected = Some(next_offset);
                ps.written = Some(next_offset);
                let target = if W::OFFSETS_IN_KAFKA {
                    "mongo"
                } else {
                    "mysql"
                };
                metrics::counter!(metric::RECORDS_OUT, "topic" => target).increment(rows as u64);
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
                // Where Kafka holds the position (Mongo) the commit is synchronous (≈ 6 ms on
                // this thread): its failure is then known, and the offset is committed again
                // (retried by the poll loop) instead of lingering uncommitted. The
                // write is acknowledged either way: a commit that never lands only means the
                // batch is written again after a restart (the same documents). MySQL stores
                // its position itself; the Kafka commit is only for lag, asynchronous.
                let how = if W::OFFSETS_IN_KAFKA {
                    Commit::Pending(CommitMode::Sync)
                } else {
                    Commit::Pending(CommitMode::Async)
                };
                commit_written(consumer, &self.topic, st, &[c.partition], how);
            }
            Ok(Outcome::Fenced { stored }) => {
                tracing::warn!(
                    partition = c.partition,
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
                if let Err(e) =
                    consumer.seek(&self.topic, c.partition, off, Duration::from_secs(10))
                {
                    st.fatal.get_or_insert(SinkError::Fatal {
                        what: "seeking to the stored offset",
                        message: e.to_string(),
                    });
                    return;
                }
                if ps.paused {
                    let _ = consumer.resume(&one(&self.topic, c.partition));
                    ps.paused = false;
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

    /// Hands a partition's buffer to a writer task.
    fn dispatch(&self, consumer: &Driver<W>, st: &mut State, p: i32) {
        let Some(ps) = st.parts.get_mut(&p) else {
            return;
        };
        if ps.inflight || ps.buf.is_empty() {
            return;
        }
        let messages = std::mem::take(&mut ps.buf);
        ps.bytes = 0;
        let started = ps.first_at.take().unwrap_or_else(Instant::now);
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
        self.handle.spawn(async move {
            let fetched: Vec<i64> = batch
                .messages
                .iter()
                .filter_map(SinkMessage::fetched_at_ms)
                .collect();
            let result = writer.write(batch, stop).await;
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

fn one(topic: &str, p: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, p);
    tpl
}

/// Which offsets [`commit_written`] commits, and how.
#[derive(Clone, Copy)]
enum Commit {
    /// The offsets written since the last commit ([`PartState::uncommitted`]).
    Pending(CommitMode),
    /// The latest written offset of each partition, synchronously, whether it was committed
    /// before or not (revocation, shutdown: also covers an asynchronous commit that was lost).
    Latest,
}

/// Commits the written offsets of `parts` to Kafka. After a synchronous commit that fails the
/// offsets stay uncommitted: the poll loop tries again with the latest ones.
fn commit_written<W: BatchWriter>(
    consumer: &Driver<W>,
    topic: &str,
    st: &mut State,
    parts: &[i32],
    how: Commit,
) {
    let mut tpl = TopicPartitionList::new();
    let mut sent = Vec::new();
    for p in parts {
        if let Some(ps) = st.parts.get(p) {
            let offset = match how {
                Commit::Pending(_) => ps.uncommitted(),
                Commit::Latest => ps.written,
            };
            if let Some(o) = offset {
                let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(o));
                sent.push((*p, o));
            }
        }
    }
    if tpl.count() == 0 {
        return;
    }
    let mode = match how {
        Commit::Pending(m) => m,
        Commit::Latest => CommitMode::Sync,
    };
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            for (p, o) in sent {
                if let Some(ps) = st.parts.get_mut(&p) {
                    ps.committed = Some(o);
                }
            }
        }
        // MySQL: only lag visibility suffers. Mongo: the records are written; until a commit
        // lands, a restart writes them again, the same documents (upserts by key).
        Err(e) => {
            tracing::warn!(error = %e, partitions = ?sent, "committing offsets to Kafka failed; will retry")
        }
    }
}

/// Connects a writer (retrying while its database is away; `what` names the attempt in the
/// logs), then [`drive`]s it until `shutdown`. `connect` gets the stage's dead-letter producer.
pub async fn connect_and_drive<W, F, Fut>(
    cfg: &Common,
    sink: &SinkConfig,
    what: &'static str,
    shutdown: CancellationToken,
    connect: F,
) -> Result<(), SinkError>
where
    W: BatchWriter,
    F: Fn(super::DeadLetters) -> Fut,
    Fut: Future<Output = Result<W, SinkError>>,
{
    let dead_letters = super::DeadLetters::new(cfg, W::STAGE)?;
    let stop = hard_stop(&shutdown, sink.shutdown_timeout);
    let writer = super::retry(what, sink.retry_max_backoff, &stop, || {
        connect(dead_letters.clone())
    })
    .await?;
    drive(cfg, sink, Arc::new(writer), shutdown).await
}

/// Consumes the scored topic and feeds `writer` until `shutdown`; see the module docs.
pub async fn drive<W: BatchWriter>(
    cfg: &Common,
    sink: &SinkConfig,
    writer: Arc<W>,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    let topic: Arc<str> = cfg.topics.name(TopicRole::Scored).into();
    let group = cfg.pipeline.group_id(W::STAGE);
    let stop = hard_stop(&shutdown, sink.shutdown_timeout);
    let (tx, rx) = mpsc::channel();
    let ctx = SinkContext {
        writer,
        handle: Handle::current(),
        topic: topic.clone(),
        shutdown: shutdown.clone(),
        stop: stop.clone(),
        batch_size: sink.batch_size,
        batch_max_bytes: sink.batch_max_bytes,
        max_age: sink.batch_max_age,
        retry_max_backoff: sink.retry_max_backoff,
        state: Mutex::new(State::default()),
        tx,
        rx: Mutex::new(rx),
    };
    let mut cc = crate::kafka::consumer_config(&cfg.kafka, &group);
    // Fetch big chunks: the sink is throughput-bound.
    cc.set("fetch.min.bytes", "65536")
        .set("fetch.wait.max.ms", "100");
    let consumer: Driver<W> = cc.create_with_context(ctx).map_err(|e| SinkError::Fatal {
        what: "creating the consumer",
        message: e.to_string(),
    })?;
    consumer
        .subscribe(&[&topic])
        .map_err(|e| SinkError::Fatal {
            what: "subscribing",
            message: e.to_string(),
        })?;
    tracing::info!(stage = W::STAGE, %topic, %group, "sink started");
    let result = tokio::task::spawn_blocking(move || poll_loop(consumer))
        .await
        .map_err(|e| SinkError::Fatal {
            what: "the poll thread",
            message: e.to_string(),
        })?;
    stop.cancel();
    result
}

fn poll_loop<W: BatchWriter>(consumer: Driver<W>) -> Result<(), SinkError> {
    let ctx = consumer.context();
    let topic = ctx.topic.clone();
    let mut last_house = Instant::now();
    let mut last_recommit = Instant::now();
    let result = loop {
        let timeout = {
            let mut st = ctx.lock();
            if ctx.shutdown.is_cancelled() && !st.stopping {
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
                    .map(|t| (t + ctx.max_age).saturating_duration_since(now))
                    .min()
                    .unwrap_or(Duration::from_millis(100))
                    .min(Duration::from_millis(100))
            }
        };
        let mut idle = true;
        // The writer connected to its database before the loop started.
        crate::observability::health().set_db_connected(true);
        crate::observability::server::report_consumer(&consumer);
        match consumer.poll(timeout) {
            Some(Ok(m)) => {
                idle = false;
                let p = m.partition();
                let mut st = ctx.lock();
                let stopping = st.stopping;
                let mut full = false;
                if let Some(ps) = st.parts.get_mut(&p) {
                    if !ps.blocked && !stopping {
                        ps.buf.push(SinkMessage {
                            partition: p,
                            offset: m.offset(),
                            key: m.key().map(|k| k.to_vec()),
                            payload: m.payload().map(|v| v.to_vec()),
                            headers: m.headers().map(|h| h.detach()),
                        });
                        ps.first_at.get_or_insert_with(Instant::now);
                        ps.bytes +=
                            m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len);
                        if ps.full(ctx.batch_size, ctx.batch_max_bytes) {
                            if ps.inflight {
                                if !ps.paused {
                                    let _ = consumer.pause(&one(&topic, p));
                                    ps.paused = true;
                                }
                            } else {
                                full = true;
                            }
                        }
                    }
                }
                if full {
                    ctx.dispatch(&consumer, &mut st, p);
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
            }
            None => {}
        }
        if idle || last_house.elapsed() >= Duration::from_millis(2) {
            last_house = Instant::now();
            let mut st = ctx.lock();
            loop {
                let next = {
                    let rx = ctx.rx.lock().unwrap_or_else(|p| p.into_inner());
                    rx.try_recv()
                };
                match next {
                    Ok(c) => ctx.complete(&consumer, &mut st, c),
                    Err(_) => break,
                }
            }
            if let Some(e) = st.fatal.take() {
                break Err(e);
            }
            let now = Instant::now();
            let due: Vec<i32> = st
                .parts
                .iter()
                .filter(|(_, ps)| {
                    !ps.inflight
                        && !ps.buf.is_empty()
                        && (st.stopping
                            || ps.full(ctx.batch_size, ctx.batch_max_bytes)
                            || ps.first_at.is_some_and(|t| now >= t + ctx.max_age))
                })
                .map(|(p, _)| *p)
                .collect();
            for p in due {
                ctx.dispatch(&consumer, &mut st, p);
            }
            // Synchronous commits that failed, again at most once a second.
            if last_recommit.elapsed() >= Duration::from_secs(1) {
                let retry: Vec<i32> = st
                    .parts
                    .iter()
                    .filter(|(_, ps)| ps.uncommitted().is_some() && !ps.inflight)
                    .map(|(p, _)| *p)
                    .collect();
                if !retry.is_empty() {
                    last_recommit = Instant::now();
                    let how = Commit::Pending(CommitMode::Sync);
                    commit_written(&consumer, &topic, &mut st, &retry, how);
                }
            }
            if st.stopping {
                let pending = st.inflight > 0 || st.parts.values().any(|ps| !ps.buf.is_empty());
                if !pending {
                    break Ok(());
                }
                if ctx.stop.is_cancelled() && st.inflight == 0 {
                    break Ok(());
                }
            }
        }
    };
    // Wait (bounded by the hard stop) for batches still in flight, e.g. after a fatal error.
    loop {
        let inflight = ctx.lock().inflight;
        if inflight == 0 || ctx.stop.is_cancelled() {
            break;
        }
        let next = {
            let rx = ctx.rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv_timeout(Duration::from_millis(50))
        };
        if let Ok(c) = next {
            let mut st = ctx.lock();
            ctx.complete(&consumer, &mut st, c);
            st.fatal.take();
        }
    }
    {
        let mut st = ctx.lock();
        let parts: Vec<i32> = st.parts.keys().copied().collect();
        commit_written(&consumer, &topic, &mut st, &parts, Commit::Latest);
    }
    consumer.unsubscribe();
    // Serve the revocation so the group hands the partitions over at once.
    let _ = consumer.poll(Duration::from_millis(100));
    tracing::info!(stage = W::STAGE, ok = result.is_ok(), "sink stopped");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_commit_is_retried_with_the_latest_written_offset() {
        // Written, never committed (or its commit failed): the latest written offset is due.
        let mut ps = PartState {
            written: Some(50),
            ..Default::default()
        };
        assert_eq!(ps.uncommitted(), Some(50));
        // Committed: nothing due.
        ps.committed = Some(50);
        assert_eq!(ps.uncommitted(), None);
        // A newer batch written after a commit failed for an older one: the newer offset.
        ps.written = Some(80);
        assert_eq!(ps.uncommitted(), Some(80));
    }

    #[test]
    fn a_batch_is_full_by_records_or_by_bytes() {
        let mut ps = PartState::default();
        assert!(!ps.full(2, 100));
        ps.bytes = 100;
        assert!(ps.full(2, 100));
        ps.bytes = 0;
        ps.buf = (0..2)
            .map(|i| SinkMessage {
                partition: 0,
                offset: i,
                key: None,
                payload: None,
                headers: None,
            })
            .collect();
        assert!(ps.full(2, 100));
    }
}
