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
mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use self::store::Store;
use crate::quality::{Baseline, BaselineBuilder, FieldSpec, QualityConfig};
use crate::record::Record;
use crate::settings::Common;

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
        self.follow(store);
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
            None => match b.finish(&self.specs, &self.quality, &self.instance) {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(target: "etl_pipe::score", error = %e, "the built baseline cannot be serialised; going on without PSI");
                    self.state = State::None;
                    return;
                }
            },
        };
        match store.publish_unless_there(&stored) {
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

    /// Newer records in the store win; a tombstone clears the baseline in use.
    fn follow(&mut self, store: &mut Store) {
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
    }
}

impl Building {
    /// The baseline of the records fed, and its store record (built by `instance`, now,
    /// covering the offsets fed); the builder starts afresh.
    fn finish(
        &mut self,
        specs: &[FieldSpec],
        quality: &QualityConfig,
        instance: &str,
    ) -> Result<(StoredBaseline, Baseline), serde_json::Error> {
        let builder = std::mem::replace(
            &mut self.builder,
            BaselineBuilder::new(specs.to_vec(), quality),
        );
        let baseline = builder.build();
        let value = serde_json::to_value(&baseline)?;
        let mut coverage: Vec<Coverage> = self
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
            built_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            instance: instance.to_string(),
            coverage,
            baseline: value,
        };
        Ok((stored, baseline))
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
