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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::ObservabilityConfig;
use crate::observability::names;
use crate::settings::{Common, KafkaConfig, TopicRole};

/// Targets never shipped: the Kafka client's own logs (they would describe the log producer's
/// trouble through the log producer) and this module.
const EXCLUDED_TARGETS: [&str; 3] = ["rdkafka", "librdkafka", module_path!()];
/// Longest `message` shipped; longer ones are cut (a log line is not a payload).
const MAX_MESSAGE: usize = 16 * 1024;
/// Longest string field value shipped.
const MAX_FIELD: usize = 4 * 1024;
/// How long the shipper waits for a new event before serving delivery reports.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long the shipper waits for librdkafka to make room before trying again.
const ROOM_WAIT: Duration = Duration::from_millis(2);
/// Events sent per wake-up before the shipper polls the producer again.
const BURST: usize = 4096;

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
            topic: settings.topic,
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

fn now_rfc3339() -> String {
    rfc3339(Utc::now())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One message on the logs topic.
#[derive(Serialize)]
struct LogRecord<'a> {
    timestamp: String,
    level: &'static str,
    /// `event`, or `span` for a span-close record.
    kind: &'static str,
    pipeline: &'a str,
    stage: &'a str,
    instance: &'a str,
    target: &'a str,
    message: String,
    fields: Map<String, Value>,
    trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<String>,
    /// Enclosing spans, outermost first.
    spans: Vec<SpanOut>,
}

#[derive(Serialize)]
struct SpanOut {
    name: &'static str,
    fields: Map<String, Value>,
}

/// What the layer keeps per span (in the registry's span extensions).
struct SpanData {
    start: DateTime<Utc>,
    started: Instant,
    fields: Map<String, Value>,
    trace_id: Option<String>,
}

/// Collects fields into JSON; picks out `message`, `trace_id`/`traceparent` and the `log.*`
/// fields that `tracing-log` adds to events bridged from the `log` crate.
#[derive(Default)]
struct JsonVisitor {
    fields: Map<String, Value>,
    message: Option<String>,
    trace_id: Option<String>,
    log_target: Option<String>,
}

impl JsonVisitor {
    fn put(&mut self, name: &str, value: Value) {
        match name {
            "message" => {
                self.message = Some(match value {
                    Value::String(s) => truncate(s, MAX_MESSAGE),
                    v => v.to_string(),
                });
                return;
            }
            "log.target" => {
                if let Value::String(s) = value {
                    self.log_target = Some(s);
                }
                return;
            }
            n if n.starts_with("log.") => return,
            "trace_id" => {
                if let Value::String(s) = &value {
                    if !s.is_empty() {
                        self.trace_id = Some(s.clone());
                    }
                }
            }
            "traceparent" => {
                if let Value::String(s) = &value {
                    if let Some(id) = super::trace::trace_id(s) {
                        self.trace_id.get_or_insert_with(|| id.to_string());
                    }
                }
            }
            _ => {}
        }
        let value = match value {
            Value::String(s) => Value::String(truncate(s, MAX_FIELD)),
            v => v,
        };
        self.fields.insert(name.to_string(), value);
    }
}

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.put(field.name(), v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field.name(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field.name(), Value::from(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field.name(), Value::String(value.to_string()));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(field.name(), Value::String(value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field.name(), Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), Value::String(value.to_string()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut s = value.to_string();
        let mut source = value.source();
        while let Some(e) = source {
            s.push_str(": ");
            s.push_str(&e.to_string());
            source = e.source();
        }
        self.put(field.name(), Value::String(s));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field.name(), Value::String(format!("{value:?}")));
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
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

/// Copies the spans (outermost first) into the record; the innermost span with a trace id
/// gives the record its trace id when the event has none of its own.
fn collect_spans<'a, R, I>(spans: I, rec: &mut LogRecord<'_>)
where
    R: LookupSpan<'a> + 'a,
    I: Iterator<Item = tracing_subscriber::registry::SpanRef<'a, R>>,
{
    let mut span_trace = None;
    for span in spans {
        let ext = span.extensions();
        let fields = match ext.get::<SpanData>() {
            Some(d) => {
                if d.trace_id.is_some() {
                    span_trace = d.trace_id.clone();
                }
                d.fields.clone()
            }
            None => Map::new(),
        };
        rec.spans.push(SpanOut {
            name: span.metadata().name(),
            fields,
        });
    }
    if rec.trace_id.is_none() {
        rec.trace_id = span_trace;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visitor_takes_trace_id_from_traceparent_and_hides_log_fields() {
        let mut v = JsonVisitor::default();
        v.put(
            "traceparent",
            Value::String("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        );
        v.put("log.target", Value::String("librdkafka".into()));
        v.put("log.line", Value::from(3));
        v.put("message", Value::String("hello".into()));
        assert_eq!(
            v.trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(v.log_target.as_deref(), Some("librdkafka"));
        assert_eq!(v.message.as_deref(), Some("hello"));
        assert_eq!(v.fields.len(), 1, "{:?}", v.fields);
    }

    #[test]
    fn excluded_targets_cover_kafka_client_and_self() {
        assert!(excluded("rdkafka::producer::base_producer"));
        assert!(excluded("librdkafka"));
        assert!(excluded(module_path!()));
        assert!(!excluded("etl_pipe::stages::clean"));
    }

    #[test]
    fn long_strings_are_cut_on_a_char_boundary() {
        let s = truncate("é".repeat(10), 5);
        assert!(s.ends_with('…'));
        assert!(s.len() <= 5 + '…'.len_utf8());
    }
}
