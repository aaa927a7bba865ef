//! The background side of the log layer: one thread that owns the log producer (a plain
//! `BaseProducer`, not the stages' transactional or idempotent ones), drains the channel into
//! it without ever blocking the layer, and publishes the counters (metrics, and dropped events
//! on stderr at most once per report interval).
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::{Command, KafkaLogSettings, Stats};
use crate::observability::names;

/// How long the shipper waits for a new event before serving delivery reports.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long the shipper waits for librdkafka to make room before trying again.
const ROOM_WAIT: Duration = Duration::from_millis(2);
/// Events sent per wake-up before the shipper polls the producer again.
const BURST: usize = 4096;

/// Creates the log producer and starts the shipper thread; returns the channel into it
/// (bounded by `capacity`). Fails only when librdkafka rejects the client config or the
/// thread cannot start.
pub(super) fn spawn(
    settings: &KafkaLogSettings,
    capacity: usize,
    stats: &Arc<Stats>,
) -> Result<SyncSender<Command>, KafkaError> {
    let mut cc = crate::kafka::base_config(&settings.kafka);
    cc.set("client.id", format!("etl-pipe-logs-{}", settings.instance))
        // Losing a log line on a broker failover is acceptable; blocking the stage is not.
        .set("enable.idempotence", "false")
        .set("acks", "1")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        // Bound memory: at most `capacity` events wait in librdkafka besides the channel.
        .set(
            "queue.buffering.max.messages",
            capacity.clamp(1, 2_000_000).to_string(),
        )
        // A broker away for longer than this loses the oldest log events, counted.
        .set("message.timeout.ms", "30000");
    let producer: BaseProducer<LogProducerContext> =
        cc.create_with_context(LogProducerContext {
            stats: stats.clone(),
        })?;
    let (tx, rx) = mpsc::sync_channel(capacity);
    let shipper = Shipper {
        rx,
        producer,
        topic: settings.topic.clone(),
        key: settings.instance.clone(),
        stats: stats.clone(),
        report_interval: settings.report_interval,
        reported_dropped: 0,
        pending: None,
        published: [0; 4],
        last_report: Instant::now(),
    };
    std::thread::Builder::new()
        .name("etl-log-shipper".into())
        .spawn(move || {
            // Nothing this thread does (rdkafka internals included) reaches any subscriber.
            tracing::dispatcher::with_default(&tracing::Dispatch::none(), || shipper.run())
        })
        .map_err(|e| {
            KafkaError::ClientCreation(format!("cannot start the log shipper thread: {e}"))
        })?;
    Ok(tx)
}

/// The log producer's context: delivery reports update the counters; librdkafka's logs and
/// errors go to stderr, never to `tracing` (they would be shipped by the producer they are
/// about).
struct LogProducerContext {
    stats: Arc<Stats>,
}

impl ClientContext for LogProducerContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        eprintln!("etl-pipe log shipper: librdkafka {level:?} {fac}: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.stats.set_error(format!("{error}: {reason}"));
    }
}

impl ProducerContext for LogProducerContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.stats.delivery_failed.fetch_add(1, Ordering::Relaxed);
                self.stats.set_error(e.to_string());
            }
        }
    }
}

/// The background side: owns the receiver and the producer.
struct Shipper {
    rx: Receiver<Command>,
    producer: BaseProducer<LogProducerContext>,
    topic: String,
    key: String,
    stats: Arc<Stats>,
    report_interval: Duration,
    reported_dropped: u64,
    /// An event librdkafka had no room for yet.
    pending: Option<Vec<u8>>,
    /// Counter values already published as metrics (queue_full, produce_error,
    /// delivery_failed, sent).
    published: [u64; 4],
    last_report: Instant,
}

impl Shipper {
    fn run(mut self) {
        loop {
            // librdkafka's queue was full: hold that event and stop draining the channel, so
            // the channel fills and the layer drops new events before formatting them.
            if let Some(payload) = self.pending.take() {
                self.send(payload);
                if self.pending.is_some() {
                    // Delivery reports and message timeouts make room. (rdkafka's `poll` waits
                    // out its whole timeout, so keep it short.)
                    self.producer.poll(ROOM_WAIT);
                    self.tick(false);
                    continue;
                }
            }
            match self.rx.recv_timeout(POLL_INTERVAL) {
                Ok(cmd) => {
                    self.handle(cmd);
                    let mut n = 0;
                    while self.pending.is_none() && n < BURST {
                        match self.rx.try_recv() {
                            Ok(cmd) => self.handle(cmd),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.producer.flush(Duration::from_secs(5));
                    self.tick(true);
                    return;
                }
            }
            self.producer.poll(Duration::ZERO);
            self.tick(false);
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Event(payload) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                self.send(payload);
            }
            Command::Flush { deadline, done } => {
                let left = deadline.saturating_duration_since(Instant::now());
                let ok = self.producer.flush(left).is_ok() && self.pending.is_none();
                self.tick(true);
                let _ = done.send(ok);
            }
        }
    }

    /// Hands one event to librdkafka; keeps it in `pending` when librdkafka's queue is full.
    fn send(&mut self, payload: Vec<u8>) {
        let record = BaseRecord::to(&self.topic).key(&self.key).payload(&payload);
        match self.producer.send(record) {
            Ok(()) => {}
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                self.pending = Some(payload);
            }
            Err((e, _)) => {
                self.stats.produce_error.fetch_add(1, Ordering::Relaxed);
                self.stats.set_error(e.to_string());
            }
        }
    }

    /// Publishes the counters as metrics and, at most once per report interval (or when
    /// forced), tells stderr how many events were dropped since the last report.
    fn tick(&mut self, force: bool) {
        let s = &self.stats;
        let queue_full = s.queue_full.load(Ordering::Relaxed);
        let produce_error = s.produce_error.load(Ordering::Relaxed);
        let delivery_failed = s.delivery_failed.load(Ordering::Relaxed);
        let sent = s.sent.load(Ordering::Relaxed);
        // Increments of what is new since the last tick, so several layers in one process
        // (tests, benches) add up instead of overwriting each other.
        let now = [queue_full, produce_error, delivery_failed, sent];
        for (i, reason) in ["queue_full", "produce_error", "delivery_failed", ""]
            .into_iter()
            .enumerate()
        {
            let delta = now[i].saturating_sub(self.published[i]);
            if delta == 0 {
                continue;
            }
            if reason.is_empty() {
                metrics::counter!(names::LOG_EVENTS_SENT).increment(delta);
            } else {
                metrics::counter!(names::LOG_EVENTS_DROPPED, "reason" => reason).increment(delta);
            }
        }
        self.published = now;
        if !force && self.last_report.elapsed() < self.report_interval {
            return;
        }
        self.last_report = Instant::now();
        let dropped = queue_full + produce_error + delivery_failed;
        let error = s.take_error();
        if dropped > self.reported_dropped {
            eprintln!(
                "etl-pipe log shipper: {} log events not shipped to {} since the last report \
                 (total: {queue_full} queue full, {produce_error} produce errors, \
                 {delivery_failed} delivery failures){}",
                dropped - self.reported_dropped,
                self.topic,
                error
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            );
            self.reported_dropped = dropped;
        } else if let Some(e) = error {
            eprintln!("etl-pipe log shipper: Kafka problem: {e}");
        }
    }
}
