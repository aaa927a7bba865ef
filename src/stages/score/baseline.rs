//! Where the score stage's PSI baseline comes from, and how it is shared.
//!
//! Three sources, in this order:
//! 1. **`score.baseline`** (a file saved with `etl-pipe profile REF --save-baseline FILE`):
//!    fixed for the life of the process; the store is not used.
//! 2. **The store**: the compacted topic `topics.score_baseline` (default
//!    `etl.score-baseline`, one partition, kept forever), one record per pipeline, key
//!    `<pipeline>.score`, value a JSON [`StoredBaseline`]. At start-up the stage reads it to
//!    the end; while running it keeps tailing it. **The latest record for the key is the
//!    baseline**, for every instance (that is also what compaction keeps): a newer one
//!    replaces the one in use (logged), a tombstone (null value) clears it, which starts a
//!    new build.
//! 3. **Building** (`score.baseline_from_first_records` = N > 0, no stored baseline): every
//!    decoded record the instance reads is fed to a [`BaselineBuilder`] (once per offset, so
//!    records read again after a rewind are not counted twice) until N. Then the instance
//!    reads the store to its end once more — if another instance published meanwhile, that
//!    one is used and this build is dropped — and otherwise publishes its own (idempotent
//!    producer, acks=all, delivery awaited) and reads it back. A publication that fails is
//!    retried every few seconds; until one succeeds the windows have no PSI.
//!
//! Windows evaluated while the baseline is being built have no PSI (`psi_status:
//! no_baseline`, and their report says why). A window whose records went into the baseline
//! has no PSI either, whoever evaluates it (the store record lists the offsets it covers):
//! comparing records with a baseline made of themselves says nothing.
//!
//! Two instances that finish a build at the same moment may both publish; each then reads
//! the store and converges on the later record within one poll (≤ 100 ms), so for that
//! moment a window or two can be measured against the other build. Pin a file baseline when
//! that matters.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::quality::{Baseline, BaselineBuilder, FieldSpec, QualityConfig};
use crate::record::Record;
use crate::settings::{Common, TopicRole};

/// `format` of a stored baseline record.
pub const STORED_FORMAT: &str = "etl-pipe-score-baseline";
const STORED_VERSION: u32 = 1;
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const PUBLISH_RETRY: Duration = Duration::from_secs(5);

/// The offsets of one input partition that went into a built baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    pub topic: String,
    pub partition: i32,
    /// First and last offset fed to the builder (inclusive).
    pub from: i64,
    pub to: i64,
}

/// The value of a record in the baseline store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredBaseline {
    pub format: String,
    pub version: u32,
    /// When the baseline was built (RFC 3339).
    pub built_at: String,
    /// The instance that built it.
    pub instance: String,
    /// The input offsets its records came from.
    pub coverage: Vec<Coverage>,
    /// The baseline itself, in the `etl-pipe profile --save-baseline` format.
    pub baseline: serde_json::Value,
}

/// Where the baseline in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `score.baseline`.
    File,
    /// Read from the store (built by any instance, this one included).
    Store,
    /// Being built from the first records; no PSI yet.
    Building,
    /// No baseline at all (`baseline_from_first_records = 0`, no file).
    None,
}

/// A baseline ready for use.
#[derive(Debug)]
pub struct Active {
    pub baseline: Baseline,
    pub source: Source,
    /// Where it was built and by whom (`file <path>`, `instance x at t`).
    pub origin: String,
    pub coverage: Vec<Coverage>,
}

impl Active {
    /// Whether offsets `first..=last` of `topic`/`partition` overlap the records the
    /// baseline was built from.
    pub fn covers(&self, topic: &str, partition: i32, first: i64, last: i64) -> bool {
        self.coverage.iter().any(|c| {
            c.topic == topic && c.partition == partition && first <= c.to && last >= c.from
        })
    }
}

/// The builder while a baseline is being built.
pub struct Building {
    builder: BaselineBuilder,
    target: u64,
    /// Per input partition: first and last offset fed.
    fed: HashMap<(String, i32), (i64, i64)>,
    /// Built, waiting for a publication that failed; retried at `retry_at`.
    unpublished: Option<(StoredBaseline, Baseline)>,
    retry_at: Option<Instant>,
}

impl Building {
    fn new(specs: Vec<FieldSpec>, quality: &QualityConfig, target: u64) -> Self {
        Building {
            builder: BaselineBuilder::new(specs, quality),
            target,
            fed: HashMap::new(),
            unpublished: None,
            retry_at: None,
        }
    }
}

/// The baseline the stage measures PSI against, and how it gets one.
pub enum State {
    None,
    Ready(Arc<Active>),
    Building(Box<Building>),
}

/// What the window reports say about the baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub source: Source,
    /// Rows of the baseline in use (or fed so far while building).
    pub rows: u64,
    /// Records a build needs (only while building).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// The baseline manager: state, store reader and publisher.
pub struct Baselines {
    state: State,
    store: Option<Store>,
    specs: Vec<FieldSpec>,
    quality: QualityConfig,
    build_target: u64,
    instance: String,
}

impl Baselines {
    /// A fixed baseline from a file; no store.
    pub fn from_file(baseline: Baseline, path: &str) -> Self {
        Baselines {
            state: State::Ready(Arc::new(Active {
                baseline,
                source: Source::File,
                origin: format!("file {path}"),
                coverage: Vec::new(),
            })),
            store: None,
            specs: Vec::new(),
            quality: QualityConfig::default(),
            build_target: 0,
            instance: String::new(),
        }
    }

    /// No baseline at all.
    pub fn none() -> Self {
        Baselines {
            state: State::None,
            store: None,
            specs: Vec::new(),
            quality: QualityConfig::default(),
            build_target: 0,
            instance: String::new(),
        }
    }

    /// The store-backed manager: reads the store to its end (blocking); building starts
    /// when it holds no baseline.
    pub fn open_store(
        cfg: &Common,
        quality: &QualityConfig,
        specs: Vec<FieldSpec>,
        target: u64,
        handle: tokio::runtime::Handle,
    ) -> Result<Self, OpenError> {
        let mut store = Store::open(cfg, handle)?;
        let latest = store.read_to_end().map_err(OpenError::Retriable)?;
        let mut me = Baselines {
            state: State::None,
            store: None,
            specs,
            quality: quality.clone(),
            build_target: target,
            instance: cfg.pipeline.instance_id(),
        };
        me.state = match latest.flatten() {
            Some(active) => {
                tracing::info!(target: "etl_pipe::score", origin = %active.origin, rows = active.baseline.rows, topic = %store.topic, "baseline read from the store");
                State::Ready(Arc::new(active))
            }
            None => {
                tracing::info!(target: "etl_pipe::score", records = target, topic = %store.topic, "no baseline in the store: building one from the first records");
                me.building()
            }
        };
        me.store = Some(store);
        Ok(me)
    }

    fn building(&self) -> State {
        State::Building(Box::new(Building::new(
            self.specs.clone(),
            &self.quality,
            self.build_target,
        )))
    }

    /// The baseline in use, if any.
    pub fn active(&self) -> Option<Arc<Active>> {
        match &self.state {
            State::Ready(a) => Some(a.clone()),
            _ => None,
        }
    }

    pub fn info(&self) -> Info {
        match &self.state {
            State::None => Info {
                source: Source::None,
                rows: 0,
                target: None,
                origin: None,
            },
            State::Ready(a) => Info {
                source: a.source,
                rows: a.baseline.rows,
                target: None,
                origin: Some(a.origin.clone()),
            },
            State::Building(b) => Info {
                source: Source::Building,
                rows: b.builder.rows(),
                target: Some(b.target),
                origin: None,
            },
        }
    }

    /// Feeds a decoded record while building (once per offset).
    pub fn feed(&mut self, topic: &str, partition: i32, offset: i64, record: &Record) {
        let State::Building(b) = &mut self.state else {
            return;
        };
        if b.unpublished.is_some() || b.builder.rows() >= b.target {
            return;
        }
        match b.fed.get_mut(&(topic.to_string(), partition)) {
            Some((_, last)) if offset <= *last => return,
            Some((_, last)) => *last = offset,
            None => {
                b.fed
                    .insert((topic.to_string(), partition), (offset, offset));
            }
        }
        b.builder.push(record);
    }

    /// Follows the store and finishes a build that has its records: call regularly (it
    /// does not block unless a build is being published).
    pub fn tick(&mut self) {
        let Some(mut store) = self.store.take() else {
            return;
        };
        self.tick_with(&mut store);
        self.store = Some(store);
    }

    fn tick_with(&mut self, store: &mut Store) {
        // Newer records in the store win.
        match store.poll_latest() {
            Some(Some(active)) => {
                let changed = match &self.state {
                    State::Ready(a) => a.origin != active.origin,
                    _ => true,
                };
                if changed {
                    tracing::info!(target: "etl_pipe::score", origin = %active.origin, rows = active.baseline.rows, "baseline from the store in use");
                    self.state = State::Ready(Arc::new(active));
                }
            }
            Some(None) => {
                if matches!(self.state, State::Ready(_)) {
                    tracing::warn!(target: "etl_pipe::score", "the stored baseline was deleted (tombstone): building a new one from the next records");
                    self.state = if self.build_target > 0 {
                        self.building()
                    } else {
                        State::None
                    };
                }
            }
            None => {}
        }
        let State::Building(b) = &mut self.state else {
            return;
        };
        if b.builder.rows() < b.target && b.unpublished.is_none() {
            return;
        }
        if b.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let (stored, baseline) = match b.unpublished.take() {
            Some(x) => x,
            None => {
                let builder = std::mem::replace(
                    &mut b.builder,
                    BaselineBuilder::new(self.specs.clone(), &self.quality),
                );
                let baseline = builder.build();
                let value = match serde_json::to_value(&baseline) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::error!(target: "etl_pipe::score", error = %e, "the built baseline cannot be serialised; going on without PSI");
                        self.state = State::None;
                        return;
                    }
                };
                let mut coverage: Vec<Coverage> = b
                    .fed
                    .iter()
                    .map(|((t, p), (from, to))| Coverage {
                        topic: t.clone(),
                        partition: *p,
                        from: *from,
                        to: *to,
                    })
                    .collect();
                coverage.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
                let stored = StoredBaseline {
                    format: STORED_FORMAT.into(),
                    version: STORED_VERSION,
                    built_at: chrono::Utc::now()
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    instance: self.instance.clone(),
                    coverage,
                    baseline: value,
                };
                (stored, baseline)
            }
        };
        // Someone else may have published while this instance was building.
        let result = store.read_to_end().and_then(|latest| match latest {
            Some(Some(active)) => Ok(active),
            _ => {
                store.publish(&stored)?;
                match store.read_to_end()? {
                    Some(Some(active)) => Ok(active),
                    _ => Err("the published baseline is not in the store".to_string()),
                }
            }
        });
        match result {
            Ok(active) => {
                tracing::info!(target: "etl_pipe::score", origin = %active.origin, rows = active.baseline.rows, built_here = active.origin == origin_of(&stored), "baseline ready");
                self.state = State::Ready(Arc::new(active));
            }
            Err(e) => {
                tracing::warn!(target: "etl_pipe::score", error = %e, retry_in = ?PUBLISH_RETRY, "cannot publish the built baseline; windows have no PSI until it is published");
                b.unpublished = Some((stored, baseline));
                b.retry_at = Some(Instant::now() + PUBLISH_RETRY);
            }
        }
    }
}

fn origin_of(s: &StoredBaseline) -> String {
    format!("built by {} at {}", s.instance, s.built_at)
}

/// Why the store could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The store topic does not exist: a person must run `etl-pipe topics apply`.
    Fatal(String),
    /// The broker did not answer in time: retry.
    Retriable(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Fatal(m) | OpenError::Retriable(m) => f.write_str(m),
        }
    }
}

/// Reads and writes the store topic.
struct Store {
    topic: String,
    partitions: Vec<i32>,
    key: String,
    consumer: BaseConsumer,
    producer: FutureProducer,
    handle: tokio::runtime::Handle,
}

impl Store {
    fn open(cfg: &Common, handle: tokio::runtime::Handle) -> Result<Self, OpenError> {
        let topic = cfg.topics.name(TopicRole::ScoreBaseline);
        let mut c = crate::kafka::base_config(&cfg.kafka);
        // assign() needs a group id; nothing is committed or subscribed under it.
        c.set(
            "group.id",
            format!("{}.baseline-reader", cfg.pipeline.group_id(super::STAGE)),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true");
        let consumer: BaseConsumer = c
            .create()
            .map_err(|e| OpenError::Fatal(format!("baseline store consumer: {e}")))?;
        let md = consumer
            .fetch_metadata(Some(&topic), CALL_TIMEOUT)
            .map_err(|e| OpenError::Retriable(format!("metadata of {topic}: {e}")))?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(OpenError::Fatal(format!(
                "the baseline store topic {topic} (topics.score_baseline) does not exist; \
                 create it with `etl-pipe topics apply`"
            )));
        }
        let mut p = crate::kafka::producer_config(&cfg.kafka);
        p.set("message.timeout.ms", CALL_TIMEOUT.as_millis().to_string());
        let producer: FutureProducer = p
            .create()
            .map_err(|e| OpenError::Fatal(format!("baseline store producer: {e}")))?;
        Ok(Store {
            topic,
            partitions,
            key: cfg.pipeline.group_id(super::STAGE),
            consumer,
            producer,
            handle,
        })
    }

    /// Reads the store from the beginning until every partition reported its end (it is
    /// compacted and small), then goes on tailing from there. `Some(x)`: the latest record
    /// of our key (`None` inside = a tombstone); `None`: no record of ours.
    fn read_to_end(&mut self) -> Result<Option<Option<Active>>, String> {
        // Assigning anew makes librdkafka report the end of each partition again.
        let mut tpl = TopicPartitionList::new();
        for p in &self.partitions {
            tpl.add_partition_offset(&self.topic, *p, Offset::Beginning)
                .map_err(|e| format!("assign {}: {e}", self.topic))?;
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| format!("assign {}: {e}", self.topic))?;
        let parts = self.partitions.len();
        let mut at_end = std::collections::HashSet::new();
        let mut latest = None;
        let deadline = Instant::now() + CALL_TIMEOUT;
        while at_end.len() < parts {
            if Instant::now() > deadline {
                return Err(format!(
                    "reading the baseline store {} took more than {CALL_TIMEOUT:?}",
                    self.topic
                ));
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) => {
                    at_end.remove(&m.partition());
                    if let Some(x) = self.decode(&m) {
                        latest = Some(x);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                Some(Err(e)) => {
                    tracing::warn!(target: "etl_pipe::score", error = %e, topic = %self.topic, "reading the baseline store");
                }
            }
        }
        Ok(latest)
    }

    /// Whatever arrived since the last call, without waiting.
    fn poll_latest(&mut self) -> Option<Option<Active>> {
        let mut latest = None;
        while let Some(r) = self.consumer.poll(Duration::ZERO) {
            if let Ok(m) = r {
                if let Some(x) = self.decode(&m) {
                    latest = Some(x);
                }
            }
        }
        latest
    }

    /// `Some(None)` for our tombstone, `Some(Some)` for a valid baseline of ours, `None`
    /// for other keys and for records that are not a valid baseline (logged).
    fn decode(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> Option<Option<Active>> {
        if m.key() != Some(self.key.as_bytes()) {
            return None;
        }
        let Some(payload) = m.payload() else {
            return Some(None);
        };
        let label = format!("{}[{}]@{}", self.topic, m.partition(), m.offset());
        let parsed = serde_json::from_slice::<StoredBaseline>(payload)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                if s.format != STORED_FORMAT || s.version != STORED_VERSION {
                    return Err(format!(
                        "format {:?} version {} (expected {STORED_FORMAT:?} {STORED_VERSION})",
                        s.format, s.version
                    ));
                }
                let b = Baseline::from_json(&s.baseline.to_string(), &label)
                    .map_err(|e| e.to_string())?;
                Ok(Active {
                    baseline: b,
                    source: Source::Store,
                    origin: origin_of(&s),
                    coverage: s.coverage,
                })
            });
        match parsed {
            Ok(a) => Some(Some(a)),
            Err(e) => {
                tracing::warn!(target: "etl_pipe::score", record = %label, error = %e, "ignoring an invalid record in the baseline store");
                None
            }
        }
    }

    fn publish(&self, stored: &StoredBaseline) -> Result<(), String> {
        let payload = serde_json::to_vec(stored).map_err(|e| e.to_string())?;
        let record = FutureRecord::to(&self.topic)
            .key(self.key.as_bytes())
            .payload(&payload);
        self.handle
            .block_on(self.producer.send(record, CALL_TIMEOUT))
            .map(|_| ())
            .map_err(|(e, _)| format!("publishing the baseline to {}: {e}", self.topic))
    }
}
