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
//! `ThreadedProducer` (whose thread serves delivery reports): every librdkafka call here blocks,
//! and the transform is synchronous CPU work.
//!
//! This file holds the public API and the set-up; `output` and `transform` what a stage
//! supplies, `engine` the transaction, `positions` committing past markers when caught up,
//! `rebalance` the consumer context, `failure` the sorting of errors, `main_loop` the loop
//! itself, `watchdog` the thread that names a phase lasting too long.
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
mod engine;
mod failure;
pub mod limits;
mod main_loop;
mod output;
mod positions;
mod rebalance;
mod transform;
mod watchdog;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use tokio_util::sync::CancellationToken;

use crate::retry::Backoff;
use crate::settings::{Common, KafkaConfig, TopicRole};
use engine::{lock, Engine, Txn, TxnProducer};
use failure::{classify, Failure};
use rebalance::Ctx;

pub use output::{keep_headers, Origin, Output};
pub use transform::{Transform, TransformError};
pub use watchdog::STUCK_EXIT_CODE;

/// The longest a single broker call (commit, offsets, seek) may take before it counts as
/// failed (shorter when the transaction deadline is: [`Timing`]).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest poll, so that shutdown is noticed promptly.
const MAX_POLL: Duration = Duration::from_millis(100);

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
    /// How long a commit (or the abort of a failed transaction) may stay unconfirmed by the
    /// broker before the stage stops with an error (`kafka.transaction_timeout`: by then the
    /// coordinator has aborted a transaction it did not commit).
    pub txn_deadline: Duration,
}

/// How long transactional calls may take: each call `call`, a whole commit or abort `deadline`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) call: Duration,
    pub(crate) deadline: Duration,
}

impl Timing {
    /// A third of the deadline per call (1 s to 30 s), so that a timed-out call is repeated a
    /// few times before the deadline.
    fn new(deadline: Duration) -> Timing {
        Timing {
            call: (deadline / 3).clamp(Duration::from_secs(1), CALL_TIMEOUT),
            deadline,
        }
    }
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
            txn_deadline: cfg.kafka.transaction_timeout,
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
    /// Where the loop's thread spent the run.
    pub loop_time: LoopTime,
}

/// Where the loop's thread spends its time: the watchdog's phases summed.
/// `process` is transform + produce per message; `commit` every transaction commit (flush,
/// `send_offsets_to_transaction`, delivery, `commit_transaction`, idle ticks, revokes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopTime {
    pub poll: Duration,
    pub process: Duration,
    pub commit: Duration,
    pub recover: Duration,
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

/// The blocking loop. See the module docs.
pub fn run_blocking<T: Transform>(
    kafka: &KafkaConfig,
    settings: Settings,
    transform: T,
    shutdown: CancellationToken,
) -> Result<Stats, EosError> {
    let stage = settings.stage;
    // Wrong credentials stop the stage here, naming the topic and the operation.
    super::access::check(
        kafka,
        stage,
        &settings.input_topics,
        &[settings.dead_letter_topic.to_string()],
        CALL_TIMEOUT,
    )
    .map_err(|e| EosError::Fatal(e.to_string()))?;
    let producer = create_producer(kafka, &settings)?;
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    if !init_transactions(&producer, stage, &shutdown, &mut backoff)? {
        return Ok(Stats::default());
    }
    tracing::info!(stage, transactional_id = %settings.transactional_id, "transactions initialised");

    let timing = Timing::new(settings.txn_deadline);
    let limits =
        limits::MessageLimits::new(kafka, timing.call).map_err(|source| EosError::Client {
            what: "admin client",
            source,
        })?;
    let engine = Arc::new(Mutex::new(Engine::new(
        stage,
        settings.dead_letter_topic.clone(),
        producer,
        transform,
        limits,
        timing,
    )));
    let consumer = subscribe(kafka, &settings, &engine)?;

    // Twice the transaction timeout: by then every bounded call has given up (watchdog.rs).
    let watch = lock(&engine).watch.clone();
    let _watchdog = watch.spawn(
        stage,
        settings.txn_deadline * 2,
        overdue_after(kafka, timing),
    );
    let result = main_loop::main_loop(&consumer, &engine, &settings, &shutdown, &mut backoff);

    let mut stats = lock(&engine).stats.clone();
    stats.loop_time = watch.spent();
    match &result {
        Ok(()) => teardown(consumer, &engine),
        // Stopping on a fatal error: often no broker answers (a partition, the deadline), and
        // then leaving the group and the clients' close wait on requests nobody answers (15–25 s
        // seen). Nothing left to do there keeps data safe — the open transaction is aborted by
        // the coordinator or by the next instance's `init_transactions` — so the stage does not
        // wait for it longer than `FATAL_TEARDOWN`.
        Err(_) => bounded_teardown(consumer, engine, stage),
    }
    tracing::info!(
        stage,
        records_in = stats.records_in,
        transactions = stats.transactions,
        poll_s = stats.loop_time.poll.as_secs_f64(),
        process_s = stats.loop_time.process.as_secs_f64(),
        commit_s = stats.loop_time.commit.as_secs_f64(),
        recover_s = stats.loop_time.recover.as_secs_f64(),
        "loop ended: where its thread spent the run"
    );
    result.map(|()| stats)
}

/// Leaves the group before the producer goes (the revoke callback may still run), then aborts
/// a transaction still open — only after a fatal error or a failed final commit (best effort: a
/// fenced producer cannot, and then the coordinator has aborted it already).
fn teardown<T: Transform>(consumer: BaseConsumer<Ctx<T>>, engine: &Mutex<Engine<T>>) {
    consumer.unsubscribe();
    drop(consumer);
    let eng = lock(engine);
    if eng.txn != Txn::Idle {
        let _ = eng.producer.abort_transaction(Duration::from_secs(5));
    }
}

/// The longest a stage stopping on a fatal error waits for its [`teardown`].
pub const FATAL_TEARDOWN: Duration = Duration::from_secs(5);

/// [`teardown`] on a thread of its own, waited for at most [`FATAL_TEARDOWN`]; past that the
/// thread is left to finish (or to end with the process) and the stage's error is returned.
fn bounded_teardown<T: Transform>(
    consumer: BaseConsumer<Ctx<T>>,
    engine: Arc<Mutex<Engine<T>>>,
    stage: &'static str,
) {
    let started = Instant::now();
    let (done, finished) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("{stage}-teardown"))
        .spawn(move || {
            teardown(consumer, &engine);
            let _ = done.send(());
        });
    if spawned.is_err() {
        // The closure is dropped with the spawn: the clients close here, unbounded.
        return;
    }
    if finished.recv_timeout(FATAL_TEARDOWN).is_err() {
        tracing::warn!(
            stage,
            waited = ?started.elapsed(),
            "stopping without waiting for the Kafka clients' close any longer (no broker \
             answered): the open transaction is aborted by its coordinator or by the next \
             instance with this transactional id; the group reassigns the partitions after \
             its session timeout"
        );
    }
}

/// How long one attempt of a transactional call may run before the watchdog takes it for
/// librdkafka ignoring its timeout: a request inside it may wait `socket.timeout.ms` (60 s by
/// default) before its handler looks at the call's own timeout, plus a margin.
fn overdue_after(kafka: &KafkaConfig, timing: Timing) -> Duration {
    let socket = kafka
        .client_options
        .get("socket.timeout.ms")
        .and_then(|v| v.value()?.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(60), Duration::from_millis);
    timing.call.max(socket) + OVERDUE_MARGIN
}

/// `connections.max.idle.ms` of the transactional producer unless set (see `create_producer`).
const IDLE_CONNECTIONS_CLOSE_MS: &str = "10000";

/// What [`overdue_after`] adds to the longest wait librdkafka may legitimately take.
const OVERDUE_MARGIN: Duration = Duration::from_secs(15);

fn create_producer(kafka: &KafkaConfig, settings: &Settings) -> Result<TxnProducer, EosError> {
    let mut producer_config =
        super::transactional_producer_config(kafka, &settings.transactional_id);
    if !kafka.client_options.contains_key("retry.backoff.ms") {
        // Right after a commit the coordinator answers CONCURRENT_TRANSACTIONS until the
        // previous transaction's markers are written; librdkafka retries after
        // retry.backoff.ms, 100 ms by default, which most transactions would then wait.
        producer_config.set("retry.backoff.ms", "10");
    }
    if !kafka.client_options.contains_key("connections.max.idle.ms") {
        // librdkafka's send_offsets_to_transaction waits for the group coordinator's broker
        // to come up, and a broker that left the metadata (stopped) never does: the request is
        // looked at again only when some broker connection of this producer goes up or down
        // (librdkafka #5456, #5511). Idle connections closed after 10 s are such a change:
        // the stuck call then asks for the new coordinator and completes within its timeout,
        // instead of for ever (the watchdog's exit stays the backstop). A busy producer's
        // connections are never idle that long; an idle stage reconnects on its next batch.
        producer_config.set("connections.max.idle.ms", IDLE_CONNECTIONS_CLOSE_MS);
    }
    producer_config.create().map_err(|source| EosError::Client {
        what: "producer",
        source,
    })
}

/// init_transactions fences an older process with the same transactional id and aborts its
/// open transaction. Retried while the broker is away; `false` when shutdown came first.
fn init_transactions(
    producer: &TxnProducer,
    stage: &'static str,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<bool, EosError> {
    loop {
        if shutdown.is_cancelled() {
            return Ok(false);
        }
        match producer.init_transactions(CALL_TIMEOUT) {
            Ok(()) => return Ok(true),
            Err(e) => match classify("init_transactions", &e) {
                Failure::Fatal(m) | Failure::Halt(m) => return Err(EosError::Fatal(m)),
                Failure::Abort(m) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(stage, error = %m, retry_in = ?wait, "cannot initialise transactions; retrying");
                    std::thread::sleep(wait);
                }
            },
        }
    }
}

/// The consumer, its context sharing `engine`, subscribed to the input topics.
fn subscribe<T: Transform>(
    kafka: &KafkaConfig,
    settings: &Settings,
    engine: &Arc<Mutex<Engine<T>>>,
) -> Result<BaseConsumer<Ctx<T>>, EosError> {
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
    tracing::info!(stage = settings.stage, group = %settings.group_id, topics = %topics.join(","), "consuming");
    Ok(consumer)
}
