//! The `tracing` layer that ships log events (and span durations) to the logs topic.
//!
//! Each event at or above the configured level becomes one JSON object (timestamp, level,
//! stage, instance, target, message, fields, trace id, the enclosing spans), serialized on the
//! calling thread and handed to a bounded channel with `try_send`: the caller never waits. A
//! background thread owns its own `BaseProducer` (not the stages' transactional or idempotent
//! ones) and sends each object to the logs topic keyed by the instance id, so one instance's
//! events stay ordered in one partition.
//!
//! What it never does:
//! - block: a full channel drops the event (before formatting it) and counts it
//!   (`etl_log_events_dropped_total{reason}`); when librdkafka's own queue is full the shipper
//!   stops draining the channel, so the oldest events wait and the newest are dropped. The
//!   count is reported on stderr at most once per report interval, never through `tracing`;
//! - loop: events from `rdkafka`/`librdkafka` targets and from this module are not shipped, the
//!   shipper thread runs with a no-op `tracing` dispatcher, and its producer's own librdkafka
//!   logs and errors go to stderr only.
//!
//! Spans: when a span at or above the level closes, a record with `kind = "span"`,
//! `duration_ms`, `start` and `end` is shipped (see `docs/notes/observability.md` for the span
//! names stages use).
mod encode;
mod shipper;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::error::KafkaError;
use serde_json::Map;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use self::encode::{collect_spans, now_rfc3339, rfc3339, JsonVisitor, LogRecord, SpanData};
use super::ObservabilityConfig;
use crate::settings::{Common, KafkaConfig, TopicRole};

/// Targets never shipped: the Kafka client's own logs (they would describe the log producer's
/// trouble through the log producer) and this module (its submodules start with its path).
const EXCLUDED_TARGETS: [&str; 3] = ["rdkafka", "librdkafka", module_path!()];

/// What the log layer needs; [`KafkaLogSettings::from_config`] fills it from the config.
#[derive(Debug, Clone)]
pub struct KafkaLogSettings {
    /// Brokers and raw client options (security settings apply to the log producer too).
    pub kafka: KafkaConfig,
    /// The logs topic.
    pub topic: String,
    pub pipeline: String,
    pub stage: String,
    /// The message key: the stage instance.
    pub instance: String,
    /// Lowest level shipped.
    pub min_level: Level,
    /// Ship a `kind = "span"` record with the duration when a span at or above `min_level`
    /// closes.
    pub span_durations: bool,
    /// Bound of the channel in front of the producer, and of the producer's own queue.
    pub queue_capacity: usize,
    /// How often dropped events are reported on stderr (only when some were dropped).
    pub report_interval: Duration,
}

impl KafkaLogSettings {
    pub fn from_config(cfg: &Common, o: &ObservabilityConfig, stage: &str) -> Self {
        KafkaLogSettings {
            kafka: cfg.kafka.clone(),
            topic: cfg.topics.name(TopicRole::Logs),
            pipeline: cfg.pipeline.name.clone(),
            stage: stage.to_string(),
            instance: cfg.pipeline.instance_id(),
            min_level: o.kafka_log_level.as_level(),
            span_durations: o.span_durations,
            queue_capacity: o.queue_capacity.max(1),
            report_interval: Duration::from_secs(10),
        }
    }
}

/// Counters shared by the layer (caller side), the shipper thread and the producer context.
#[derive(Default)]
struct Stats {
    /// Events in the channel (approximate): lets a full queue drop an event before paying for
    /// its formatting.
    queued: AtomicUsize,
    queue_full: AtomicU64,
    produce_error: AtomicU64,
    delivery_failed: AtomicU64,
    sent: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    fn dropped(&self) -> u64 {
        self.queue_full.load(Ordering::Relaxed)
            + self.produce_error.load(Ordering::Relaxed)
            + self.delivery_failed.load(Ordering::Relaxed)
    }

    fn set_error(&self, e: String) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e);
        }
    }

    fn take_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|mut g| g.take())
    }
}

enum Command {
    Event(Vec<u8>),
    Flush {
        deadline: Instant,
        done: mpsc::Sender<bool>,
    },
}

/// The layer. Add it to a `tracing_subscriber::registry()`; keep the [`KafkaLogHandle`] to
/// flush at shutdown.
pub struct KafkaLogLayer {
    tx: SyncSender<Command>,
    stats: Arc<Stats>,
    capacity: usize,
    pipeline: String,
    stage: String,
    instance: String,
    min_level: Level,
    span_durations: bool,
}

/// Flushes and reads the counters of a [`KafkaLogLayer`].
pub struct KafkaLogHandle {
    tx: SyncSender<Command>,
    stats: Arc<Stats>,
}

impl KafkaLogLayer {
    /// Creates the layer, its producer and its shipper thread. Fails only when librdkafka
    /// rejects the client config; an unreachable broker is not an error (events queue, then
    /// drop and are counted).
    pub fn new(settings: KafkaLogSettings) -> Result<(KafkaLogLayer, KafkaLogHandle), KafkaError> {
        let stats = Arc::new(Stats::default());
        let capacity = settings.queue_capacity.max(1);
        let tx = shipper::spawn(&settings, capacity, &stats)?;
        let layer = KafkaLogLayer {
            tx: tx.clone(),
            stats: stats.clone(),
            capacity,
            pipeline: settings.pipeline,
            stage: settings.stage,
            instance: settings.instance,
            min_level: settings.min_level,
            span_durations: settings.span_durations,
        };
        Ok((layer, KafkaLogHandle { tx, stats }))
    }

    fn enqueue(&self, payload: Vec<u8>) {
        // Counted before the send so the shipper's decrement can never come first.
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Command::Event(payload)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn wanted(&self, level: &Level, target: &str) -> bool {
        *level <= self.min_level && !excluded(target)
    }

    /// A full queue drops the event here, before it is formatted.
    fn has_room(&self) -> bool {
        if self.stats.queued.load(Ordering::Relaxed) >= self.capacity {
            self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn record<'a>(&'a self, level: &Level, target: &'a str, message: String) -> LogRecord<'a> {
        LogRecord {
            timestamp: now_rfc3339(),
            level: level.as_str(),
            kind: "event",
            pipeline: &self.pipeline,
            stage: &self.stage,
            instance: &self.instance,
            target,
            message,
            fields: Map::new(),
            trace_id: None,
            duration_ms: None,
            start: None,
            end: None,
            spans: Vec::new(),
        }
    }
}

impl KafkaLogHandle {
    /// Waits until every event handed to the layer so far is delivered or `timeout` passes.
    /// Returns whether everything was delivered.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (done, wait) = mpsc::channel();
        let mut cmd = Command::Flush { deadline, done };
        // The flush request queues behind the events; while the channel is full (broker away)
        // keep trying until the deadline rather than wait for room.
        loop {
            match self.tx.try_send(cmd) {
                Ok(()) => break,
                Err(TrySendError::Full(c)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    cmd = c;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        wait.recv_timeout(left + Duration::from_millis(500))
            .unwrap_or(false)
    }

    /// Events that did not reach the topic (queue full, produce error, delivery failed).
    pub fn dropped(&self) -> u64 {
        self.stats.dropped()
    }

    /// Events delivered to the topic.
    pub fn sent(&self) -> u64 {
        self.stats.sent.load(Ordering::Relaxed)
    }
}

fn excluded(target: &str) -> bool {
    EXCLUDED_TARGETS.iter().any(|t| target.starts_with(t))
}

impl<S> Layer<S> for KafkaLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut v = JsonVisitor::default();
        attrs.record(&mut v);
        span.extensions_mut().insert(SpanData {
            start: Utc::now(),
            started: Instant::now(),
            fields: v.fields,
            trace_id: v.trace_id,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(data) = ext.get_mut::<SpanData>() {
            let mut v = JsonVisitor::default();
            values.record(&mut v);
            data.fields.append(&mut v.fields);
            if v.trace_id.is_some() {
                data.trace_id = v.trace_id;
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !self.wanted(meta.level(), meta.target()) || !self.has_room() {
            return;
        }
        let mut v = JsonVisitor::default();
        event.record(&mut v);
        let target = v.log_target.as_deref().unwrap_or(meta.target());
        if excluded(target) {
            return;
        }
        let mut rec = self.record(meta.level(), target, v.message.unwrap_or_default());
        rec.fields = v.fields;
        rec.trace_id = v.trace_id;
        if let Some(scope) = ctx.event_scope(event) {
            collect_spans(scope.from_root(), &mut rec);
        }
        if let Ok(bytes) = serde_json::to_vec(&rec) {
            self.enqueue(bytes);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if !self.span_durations {
            return;
        }
        let Some(span) = ctx.span(&id) else { return };
        let meta = span.metadata();
        if !self.wanted(meta.level(), meta.target()) || !self.has_room() {
            return;
        }
        let mut rec = {
            let ext = span.extensions();
            let Some(data) = ext.get::<SpanData>() else {
                return;
            };
            let end = Utc::now();
            let mut rec = self.record(meta.level(), meta.target(), meta.name().to_string());
            rec.kind = "span";
            rec.fields = data.fields.clone();
            rec.trace_id = data.trace_id.clone();
            rec.duration_ms = Some(data.started.elapsed().as_secs_f64() * 1000.0);
            rec.start = Some(rfc3339(data.start));
            rec.end = Some(rfc3339(end));
            rec
        };
        if let Some(parent) = span.parent() {
            collect_spans(parent.scope().from_root(), &mut rec);
        }
        if let Ok(bytes) = serde_json::to_vec(&rec) {
            self.enqueue(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_targets_cover_kafka_client_and_self() {
        assert!(excluded("rdkafka::producer::base_producer"));
        assert!(excluded("librdkafka"));
        assert!(excluded(module_path!()));
        assert!(excluded("etl_pipe::observability::kafka_layer::shipper"));
        assert!(!excluded("etl_pipe::stages::clean"));
    }
}
