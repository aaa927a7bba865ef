//! A partition's open window (the messages held in it), and what a closed window leaves
//! until the transaction that emits it commits: its outputs ([`Due`]) and what is then
//! logged and counted ([`Closed`]).
use std::time::Instant;

use rdkafka::message::OwnedHeaders;

use super::baseline::Source;
use super::{LOG_TARGET, STAGE};
use crate::kafka::eos::Output;
use crate::quality::Decision;
use crate::record::Record;

/// One message held in a window.
pub(super) struct Held {
    pub(super) offset: i64,
    pub(super) timestamp: Option<i64>,
    pub(super) item: Item,
}

pub(super) enum Item {
    Record(HeldRecord),
    /// Undecodable: its dead letter, emitted with the window.
    DeadLetter(Output),
}

/// A decoded record, with what its scored or quarantined message is made of.
pub(super) struct HeldRecord {
    pub(super) record: Record,
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Vec<u8>,
    pub(super) headers: Option<OwnedHeaders>,
}

/// The open window of one input partition.
pub(super) struct Window {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) opened: Instant,
    pub(super) opened_at_ms: i64,
    pub(super) held: Vec<Held>,
}

impl Window {
    pub(super) fn open(topic: &str, partition: i32, capacity: usize) -> Window {
        Window {
            topic: topic.to_string(),
            partition,
            opened: Instant::now(),
            opened_at_ms: chrono::Utc::now().timestamp_millis(),
            held: Vec::with_capacity(capacity),
        }
    }

    pub(super) fn first_offset(&self) -> i64 {
        self.held.first().map_or(-1, |h| h.offset)
    }
}

/// A window whose outputs are computed, waiting for the next `flush`.
pub(super) struct Due {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) first_offset: i64,
    pub(super) outputs: Vec<Output>,
    pub(super) closed: Closed,
}

/// What is logged and counted once a window's transaction commits.
pub(super) struct Closed {
    pub(super) window: String,
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) decision: Decision,
    pub(super) rows: u64,
    pub(super) messages: usize,
    pub(super) quarantined: u64,
    pub(super) dead_letters: u64,
    pub(super) closed_by: &'static str,
    pub(super) baseline: Source,
    pub(super) psi: bool,
    pub(super) reasons: String,
    pub(super) report: String,
}

impl Closed {
    pub(super) fn emit(&self) {
        metrics::counter!("etl_quality_windows_total", "decision" => self.decision.to_string())
            .increment(1);
        if self.quarantined > 0 {
            metrics::counter!("etl_quarantined_records_total").increment(self.quarantined);
        }
        metrics::histogram!("etl_score_window_records", "closed_by" => self.closed_by)
            .record(self.messages as f64);
        macro_rules! window_event {
            ($level:ident) => {
                tracing::$level!(
                    target: LOG_TARGET,
                    stage = STAGE,
                    window = %self.window,
                    topic = %self.topic,
                    partition = self.partition,
                    decision = %self.decision,
                    reasons = %self.reasons,
                    rows = self.rows,
                    messages = self.messages,
                    quarantined = self.quarantined,
                    dead_letters = self.dead_letters,
                    closed_by = self.closed_by,
                    baseline = ?self.baseline,
                    psi = self.psi,
                    "quality window {}",
                    self.decision
                )
            };
        }
        if self.decision == Decision::Fail {
            window_event!(warn);
        } else {
            window_event!(info);
        }
        tracing::debug!(target: LOG_TARGET, window = %self.window, report = %self.report, "quality report");
    }
}
