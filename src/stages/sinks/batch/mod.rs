//! The consumer driver both sinks run on.
//!
//! One blocking thread owns a `BaseConsumer` (measured several times faster than
//! `StreamConsumer` on small messages) and does nothing but poll, copy messages into
//! per-partition buffers and hand finished batches to tokio tasks. A partition's batch is cut
//! at `sink.batch_size` records, at `sink.batch_max_bytes` of keys and payloads, or when its
//! oldest record is `sink.batch_max_age` old, whichever comes first. Each partition has at
//! most one batch in flight, so its rows are written in offset order; different partitions are
//! written in parallel. Each partition has its own librdkafka queue: while its next batch is
//! full and its previous one is still being written, the thread stops taking its records
//! (librdkafka then stops fetching it at `queued.min.messages`) and keeps polling the others
//! and the consumer, so it stays in its group. (Pausing the partition instead cost up to 1 s
//! per batch: see [`SinkContext::split`].)
//!
//! Assignment: the rebalance callback asks the writer where each new partition starts (the
//! MySQL sink reads its offsets table) and assigns the partitions at those offsets, before any
//! record of them is fetched. Revocation first lets the batches in flight for the revoked
//! partitions finish (bounded), then drops what is buffered for them. Works with the
//! cooperative-sticky (incremental) and the eager protocols.
//!
//! Transaction markers: a transaction's commit marker takes the offset after its last record,
//! and the consumer's position steps over it, but a batch's `next_offset` is its last
//! record plus one. So when a partition has been idle (no record for `sink.batch_max_age`, nothing
//! buffered or in flight) and its position is past the offset stored, the position is stored
//! like a batch without records ([`BatchWriter::store_position`]) and committed to Kafka:
//! lag reads 0 on a caught-up transactional topic (issue #16 item 10).
//!
//! Shutdown: stop fetching, write every buffered record regardless of age, wait for all
//! batches, commit, leave the group. Batches still failing `sink.shutdown_timeout` after the
//! signal are abandoned; their offsets did not move, so the next start writes them again.
//!
//! This file holds the writer's side of the contract ([`BatchWriter`], [`Batch`],
//! [`Outcome`]) and the start-up; `state.rs` the per-partition buffers and positions,
//! `context.rs` applying finished batches and handing out new ones, `rebalance.rs` assignment
//! and revocation, `commit.rs` committing written offsets to Kafka, `poll.rs` the poll loop.
mod commit;
mod context;
mod poll;
mod rebalance;
mod state;

use std::collections::HashMap;
use std::future::Future;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::{SinkConfig, SinkError, SinkMessage};
use crate::settings::{Common, TopicRole};
use context::Driver;
pub use context::SinkContext;
use state::State;

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

    /// Moves an idle partition's stored position from `expected` to `position`, past offsets
    /// that hold no record for the sink (transaction markers, aborted records), fenced like a
    /// batch; retrying retriable failures until `stop`. The default is for writers whose
    /// position Kafka holds (Mongo): nothing to store, the driver commits `position`.
    fn store_position(
        &self,
        topic: Arc<str>,
        partition: i32,
        expected: Option<i64>,
        position: i64,
        stop: CancellationToken,
    ) -> impl Future<Output = Result<Outcome, SinkError>> + Send {
        let _ = (topic, partition, expected, stop);
        std::future::ready(Ok(Outcome::Written {
            next_offset: position,
            rows: 0,
            dead_letters: 0,
        }))
    }
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

/// The sink's consumer: the pipeline's consumer settings, big fetches by default (the sink is
/// throughput-bound), and pre-fetch caps per partition: each partition has its own queue here
/// ([`SinkContext::split`]), so librdkafka's `queued.*` caps count per partition, not over the
/// consumer (2 000 messages / 4 MiB per partition raised sink-mongo's peak RSS from 59 to 74
/// MiB in a 1 M-record bench-e2e). `kafka.client_options` still wins.
fn consumer_config(kafka: &crate::settings::KafkaConfig, group: &str) -> rdkafka::ClientConfig {
    let mut cc = crate::kafka::consumer_config(kafka, group);
    crate::kafka::set_defaults(
        &mut cc,
        kafka,
        &[
            ("fetch.min.bytes", "65536"),
            ("fetch.wait.max.ms", "100"),
            ("queued.min.messages", "1000"),
            ("queued.max.messages.kbytes", "1024"),
            ("max.partition.fetch.bytes", "262144"),
        ],
    );
    cc
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
        me: std::sync::OnceLock::new(),
        queues: Mutex::new(HashMap::new()),
    };
    let (kafka, reads, writes) = (
        cfg.kafka.clone(),
        vec![topic.to_string()],
        vec![cfg.topics.name(TopicRole::DeadLetter)],
    );
    tokio::task::spawn_blocking(move || {
        crate::kafka::access::check(&kafka, W::STAGE, &reads, &writes, Duration::from_secs(30))
    })
    .await
    .map_err(|e| SinkError::Fatal {
        what: "checking access",
        message: e.to_string(),
    })?
    .map_err(|e| SinkError::Fatal {
        what: "checking access",
        message: e.to_string(),
    })?;
    let cc = consumer_config(&cfg.kafka, &group);
    let consumer: Arc<Driver<W>> =
        Arc::new(cc.create_with_context(ctx).map_err(|e| SinkError::Fatal {
            what: "creating the consumer",
            message: e.to_string(),
        })?);
    let _ = consumer.context().me.set(Arc::downgrade(&consumer));
    consumer
        .subscribe(&[&topic])
        .map_err(|e| SinkError::Fatal {
            what: "subscribing",
            message: e.to_string(),
        })?;
    tracing::info!(stage = W::STAGE, %topic, %group, "sink started");
    let result = tokio::task::spawn_blocking(move || poll::poll_loop(consumer))
        .await
        .map_err(|e| SinkError::Fatal {
            what: "the poll thread",
            message: e.to_string(),
        })?;
    stop.cancel();
    result
}

#[cfg(test)]
mod tests {
    use crate::settings::{ClientOption, KafkaConfig};

    #[test]
    fn the_users_fetch_options_win_over_the_sinks_defaults() {
        let mut kafka = KafkaConfig::default();
        let c = super::consumer_config(&kafka, "g");
        assert_eq!(c.get("fetch.min.bytes"), Some("65536"));
        assert_eq!(c.get("fetch.wait.max.ms"), Some("100"));
        for (k, v) in [("fetch.min.bytes", "1"), ("fetch.wait.max.ms", "5")] {
            kafka
                .client_options
                .insert(k.into(), ClientOption::Value(v.into()));
        }
        let c = super::consumer_config(&kafka, "g");
        assert_eq!(c.get("fetch.min.bytes"), Some("1"));
        assert_eq!(c.get("fetch.wait.max.ms"), Some("5"));
    }
}
