//! Record-level outcome events: every dead letter, database-rejected row, quarantined or
//! flagged window and redriven record becomes one log event (`event = "record_outcome"`) with
//! the record's trace id and source coordinates, so that a search of the `logs` topic for a
//! trace id (Kafdrop, `etl-pipe trace`) finds what happened to it.
//!
//! Floods are aggregated, never blocking: at most [`PER_SECOND`] events a second go out one by
//! one; past that, events are counted by outcome and stage, and one summary event
//! (`event = "record_outcomes_aggregated"`, with the count and the first few trace ids) follows
//! when the second is over. The log layer itself drops rather than waits when its queue is full.
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::message::Headers;

use crate::kafka::headers as h;

/// Individual outcome events per second before they are aggregated.
pub const PER_SECOND: u32 = 200;
/// Trace ids a summary event names.
const SAMPLE_IDS: usize = 5;

/// What became of one record.
#[derive(Debug, Clone, Default)]
pub struct RecordOutcome {
    /// `dead_letter`, `db_rejected`, `quarantined`, `flagged`, `redriven`.
    pub outcome: &'static str,
    pub stage: &'static str,
    /// The reason's kind (a dead letter's `etl.error.kind`, a window's decision).
    pub kind: String,
    pub reason: String,
    pub trace_id: Option<String>,
    pub key: Option<String>,
    /// Where the record was read from (topic, partition, offset).
    pub source: Option<(String, i32, i64)>,
}

impl RecordOutcome {
    /// A dead letter's outcome from the dead letter's own key and headers (trace, error kind
    /// and message, source coordinates).
    pub fn from_dead_letter<H: Headers>(
        outcome: &'static str,
        stage: &'static str,
        key: Option<&[u8]>,
        headers: &H,
    ) -> RecordOutcome {
        let source = match (
            h::get_str(headers, h::SOURCE_TOPIC),
            h::get_str(headers, h::SOURCE_PARTITION).and_then(|p| p.parse().ok()),
            h::get_str(headers, h::SOURCE_OFFSET).and_then(|o| o.parse().ok()),
        ) {
            (Some(t), Some(p), Some(o)) => Some((t.to_string(), p, o)),
            _ => None,
        };
        RecordOutcome {
            outcome,
            stage,
            kind: h::get_str(headers, h::ERROR_KIND).unwrap_or("").to_string(),
            reason: h::get_str(headers, h::ERROR_MESSAGE)
                .unwrap_or("")
                .to_string(),
            trace_id: h::get_str(headers, h::TRACEPARENT)
                .and_then(super::trace::trace_id)
                .map(str::to_string),
            key: key.map(|k| String::from_utf8_lossy(k).into_owned()),
            source,
        }
    }
}

#[derive(Default)]
struct Limiter {
    second: Option<Instant>,
    sent: u32,
    held: BTreeMap<(&'static str, &'static str), u64>,
    sample: Vec<String>,
}

fn limiter() -> &'static Mutex<Limiter> {
    static L: OnceLock<Mutex<Limiter>> = OnceLock::new();
    L.get_or_init(|| Mutex::new(Limiter::default()))
}

/// Logs one outcome (or counts it into the next summary when this second's share is spent).
pub fn record(o: &RecordOutcome) {
    let mut l = limiter().lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if l.second.is_none_or(|s| now >= s + Duration::from_secs(1)) {
        summary(&mut l);
        l.second = Some(now);
        l.sent = 0;
    }
    if l.sent >= PER_SECOND {
        *l.held.entry((o.outcome, o.stage)).or_default() += 1;
        if l.sample.len() < SAMPLE_IDS {
            if let Some(t) = &o.trace_id {
                l.sample.push(t.clone());
            }
        }
        return;
    }
    l.sent += 1;
    drop(l);
    let (topic, partition, offset) = match &o.source {
        Some((t, p, off)) => (t.as_str(), Some(*p), Some(*off)),
        None => ("", None, None),
    };
    tracing::info!(
        event = "record_outcome",
        outcome = o.outcome,
        stage = o.stage,
        kind = %o.kind,
        trace_id = o.trace_id.as_deref(),
        key = o.key.as_deref(),
        source_topic = topic,
        source_partition = partition,
        source_offset = offset,
        reason = %o.reason,
        "record {}: {}",
        o.outcome,
        o.kind
    );
}

/// Sends the summary of what the last second held back (if anything); stages call it after
/// each batch so that a quiet stage does not keep a summary to itself.
pub fn flush() {
    let mut l = limiter().lock().unwrap_or_else(|p| p.into_inner());
    if l.second
        .is_some_and(|s| s.elapsed() >= Duration::from_secs(1))
    {
        summary(&mut l);
        l.second = None;
        l.sent = 0;
    }
}

fn summary(l: &mut Limiter) {
    if l.held.is_empty() {
        return;
    }
    let total: u64 = l.held.values().sum();
    let by: Vec<String> = l
        .held
        .iter()
        .map(|((o, s), n)| format!("{s}/{o}: {n}"))
        .collect();
    tracing::warn!(
        event = "record_outcomes_aggregated",
        records = total,
        outcomes = %by.join(", "),
        first_trace_ids = %l.sample.join(","),
        "{total} more record outcomes within one second, aggregated (over {PER_SECOND}/s)"
    );
    l.held.clear();
    l.sample.clear();
}
