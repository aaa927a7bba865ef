//! A message as the gate holds it until its verdict ([`Held`]), and what a reported block
//! leaves until the transaction that emits it commits ([`Closed`]: logged and counted then).
use rdkafka::message::OwnedHeaders;

use super::baseline::Source;
use super::{LOG_TARGET, STAGE};
use crate::kafka::eos::Output;
use crate::quality::Decision;
use crate::record::Record;

/// One message held until its verdict.
pub(super) struct Held {
    pub(super) offset: i64,
    pub(super) item: Item,
}

pub(super) enum Item {
    Record(HeldRecord),
    /// Undecodable: its dead letter, emitted with the verdict of the records held with it.
    DeadLetter(Output),
    /// Read again to rebuild a partition's window after a restart (emitted before; `None`:
    /// undecodable).
    Replayed(Option<Record>),
}

/// A decoded record, with what its scored or quarantined message is made of.
pub(super) struct HeldRecord {
    /// The decoded record; only the gate's fields when `datum` is set.
    pub(super) record: Record,
    /// Where the datum starts in `payload` when the record was written with the input
    /// schema itself and only the gate's fields were decoded: the scored record is then
    /// that datum followed by the quality fields ([`crate::codec::Extension`]).
    pub(super) datum: Option<usize>,
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Vec<u8>,
    pub(super) headers: Option<OwnedHeaders>,
}

/// What is logged and counted once the transaction with a block's report commits.
pub(super) struct Closed {
    /// The block: `<topic>/<partition>/<first offset>-<last offset>`.
    pub(super) window: String,
    pub(super) topic: String,
    pub(super) partition: i32,
    /// The worst decision made in the block.
    pub(super) decision: Decision,
    /// Records judged in the block.
    pub(super) rows: u64,
    pub(super) messages: u64,
    pub(super) failed: u64,
    pub(super) dead_letters: u64,
    pub(super) baseline: Source,
    pub(super) psi: bool,
    pub(super) reasons: String,
    pub(super) report: String,
}

impl Closed {
    pub(super) fn emit(&self) {
        metrics::counter!("etl_quality_windows_total", "decision" => self.decision.to_string())
            .increment(1);
        metrics::histogram!("etl_score_window_records").record(self.messages as f64);
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
                    failed = self.failed,
                    dead_letters = self.dead_letters,
                    baseline = ?self.baseline,
                    psi = self.psi,
                    "quality block {}",
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
