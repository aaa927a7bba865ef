//! The score stage's [`Transform`] on the exactly-once loop: decodes each cleaned message,
//! passes it through its partition's gate ([`Lane`]) and routes what the gate judged in the
//! same transaction; rebuilds a partition's gate from the records before its committed offset
//! when it takes the partition over; tells the loop which offsets are still held.
use std::sync::Arc;

use rdkafka::message::{BorrowedMessage, Message};

use super::baseline::{Baselines, Source};
use super::config::{DECISION_FIELD, REASONS_FIELD, WINDOW_FIELD};
use super::history::History;
use super::lane::{replayed, Lane, Reference, Step};
use super::route::{Routed, Router};
use super::window::{Closed, Held, HeldRecord, Item};
use super::{ScoreConfig, LOG_TARGET, STAGE};
use crate::codec::{Codec, CodecError, Projection};
use crate::kafka::eos::{Output, Transform, TransformError};
use crate::quality::{FieldSpec, QualityConfig};
use crate::record::Record;
use crate::settings::{Common, TopicRole};

/// The score stage's [`Transform`]: one gate per input partition.
pub struct ScoreTransform {
    codec_in: Arc<Codec>,
    /// Decodes only the gate's fields of a record written with the input schema itself,
    /// when the output schema extends it ([`Router::extension`]).
    projection: Option<Projection>,
    handle: tokio::runtime::Handle,
    router: Router,
    quality: QualityConfig,
    specs: Vec<FieldSpec>,
    window_records: usize,
    min_window_records: usize,
    dead_letter: Arc<str>,
    baselines: Baselines,
    history: History,
    lanes: Vec<Lane>,
    /// Reports in the open transaction; logged and counted when it commits.
    pending: Vec<Closed>,
    /// Records routed in the open transaction, by outcome; counted when it commits.
    routed: [u64; 4],
    /// The open transaction's FAIL records (quarantined or flagged): logged as one record
    /// outcome event when it commits.
    failed: FailedRecords,
}

/// FAIL records of one transaction, for their outcome event: how many, the first few trace
/// ids, and the first record's window and reasons.
#[derive(Default)]
struct FailedRecords {
    outcome: &'static str,
    records: u64,
    trace_ids: Vec<String>,
    first: Option<(String, i32, i64, String, String)>,
}

/// Trace ids a FAIL outcome event names.
const FAILED_TRACE_IDS: usize = 5;

/// The trace id of a held record (from its `traceparent` header).
fn trace_of(held: &Held) -> Option<String> {
    let Item::Record(r) = &held.item else {
        return None;
    };
    r.headers
        .as_ref()
        .and_then(|hs| crate::kafka::headers::get_str(hs, crate::kafka::headers::TRACEPARENT))
        .and_then(crate::observability::trace::trace_id)
        .map(str::to_string)
}

impl FailedRecords {
    fn add(
        &mut self,
        outcome: &'static str,
        (topic, partition, offset): (&str, i32, i64),
        trace_id: Option<String>,
        verdict: &super::lane::Verdict,
    ) {
        self.outcome = outcome;
        self.records += 1;
        if let Some(t) = trace_id.filter(|_| self.trace_ids.len() < FAILED_TRACE_IDS) {
            self.trace_ids.push(t);
        }
        self.first.get_or_insert_with(|| {
            (
                topic.to_string(),
                partition,
                offset,
                verdict.window.clone(),
                verdict.message.clone(),
            )
        });
    }

    /// The outcome event (`observability::outcome` fields), then empty.
    fn emit(&mut self) {
        let Some((topic, partition, offset, window, reason)) = self.first.take() else {
            return;
        };
        tracing::info!(
            event = "record_outcome",
            outcome = self.outcome,
            stage = STAGE,
            kind = "quality_fail",
            trace_id = self.trace_ids.first().map(String::as_str),
            first_trace_ids = %self.trace_ids.join(","),
            records = self.records,
            window = %window,
            source_topic = %topic,
            source_partition = partition,
            source_offset = offset,
            reason = %reason,
            "records {}: {} (first in window {})",
            self.outcome,
            self.records,
            window
        );
        *self = FailedRecords::default();
    }
}

/// Everything [`ScoreTransform::new`] needs besides the config.
pub struct Parts {
    pub codec_in: Arc<Codec>,
    pub codec_out: Arc<Codec>,
    pub specs: Vec<FieldSpec>,
    pub baselines: Baselines,
    pub handle: tokio::runtime::Handle,
    /// The stage's shutdown: a read-back in progress gives up when it comes.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl ScoreTransform {
    pub fn new(
        cfg: &Common,
        score: &ScoreConfig,
        quality: &QualityConfig,
        parts: Parts,
    ) -> Result<Self, String> {
        let dead_letter: Arc<str> = cfg.topics.name(TopicRole::DeadLetter).into();
        let reasons_field = parts
            .codec_out
            .schema()
            .field(super::config::REASONS_FIELD)
            .is_some();
        // Only when the input has none of the quality fields: they are set afresh.
        let quality_in = [WINDOW_FIELD, DECISION_FIELD, REASONS_FIELD]
            .iter()
            .any(|n| parts.codec_in.schema().field(n).is_some());
        let extension = parts
            .codec_out
            .extension_of(parts.codec_in.schema())
            .filter(|_| !quality_in);
        let projection = match &extension {
            Some(_) => {
                let tops: Vec<&str> = parts.specs.iter().map(FieldSpec::top_level).collect();
                Some(
                    parts
                        .codec_in
                        .projection(|name| tops.contains(&name))
                        .map_err(|e| format!("the gate's fields of the input schema: {e}"))?,
                )
            }
            None => None,
        };
        Ok(ScoreTransform {
            projection,
            codec_in: parts.codec_in,
            handle: parts.handle,
            router: Router {
                codec_out: parts.codec_out,
                scored: cfg.topics.name(TopicRole::Scored).into(),
                quarantine: cfg.topics.name(TopicRole::Quarantine).into(),
                quality_topic: cfg.topics.name(TopicRole::Quality).into(),
                dead_letter: dead_letter.clone(),
                instance: cfg.pipeline.instance_id(),
                extension,
                policy: score.policy,
                reasons_field,
            },
            quality: quality.clone(),
            specs: parts.specs,
            window_records: score.window_records,
            min_window_records: score.min_window(quality),
            dead_letter,
            baselines: parts.baselines,
            history: History::open(cfg, &cfg.pipeline.group_id(STAGE), parts.shutdown)?,
            lanes: Vec::new(),
            pending: Vec::new(),
            failed: FailedRecords::default(),
            routed: [0; 4],
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<Record, CodecError> {
        match self.codec_in.decode(bytes) {
            // A registry id seen for the first time: fetch it (this thread may block).
            Err(CodecError::SchemaNotCached { .. }) => {
                self.handle.block_on(self.codec_in.decode_async(bytes))
            }
            other => other,
        }
    }

    /// The message as the gate holds it: the decoded record, or the dead letter of an
    /// undecodable one.
    fn hold(&mut self, msg: &BorrowedMessage<'_>) -> Result<Held, TransformError> {
        let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
        let payload = msg.payload().unwrap_or_default();
        // The input schema's own records: only the gate's fields (the rest is copied as
        // bytes into the scored record); any other writer schema is resolved whole.
        let own = self
            .projection
            .as_ref()
            .and_then(|p| Some((p, self.codec_in.own_datum(payload)?)));
        let (decoded, datum) = match own {
            Some((p, datum)) => (p.decode(datum), Some(payload.len() - datum.len())),
            None => (self.decode(payload), None),
        };
        let item = match decoded {
            Ok(record) => {
                self.baselines.feed(topic, partition, offset, &record);
                Item::Record(HeldRecord {
                    record,
                    datum,
                    key: msg.key().map(<[u8]>::to_vec),
                    payload: payload.to_vec(),
                    headers: msg.headers().map(|hs| hs.detach()),
                })
            }
            Err(e) if e.is_retriable() => {
                return Err(TransformError::Retriable(format!(
                    "decoding {topic}[{partition}]@{offset}: {e}"
                )))
            }
            Err(e) => {
                tracing::debug!(target: LOG_TARGET, stage = STAGE, kind = e.kind(), partition, offset, error = %e, "dead letter");
                Item::DeadLetter(Output::dead_letter(
                    self.dead_letter.clone(),
                    STAGE,
                    e.kind(),
                    &e.to_string(),
                    msg,
                ))
            }
        };
        Ok(Held { offset, item })
    }

    fn reference(&self) -> Reference {
        match self.baselines.active() {
            Some(a) => Reference::Ready(a),
            None if self.baselines.info().source == Source::Building => Reference::Building,
            None => Reference::None,
        }
    }

    /// Index of the gate of `topic`/`partition`; a new one is rebuilt from the records
    /// before `offset` (the first offset this instance reads there).
    fn lane_of(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<usize, TransformError> {
        if let Some(i) = self
            .lanes
            .iter()
            .position(|l| l.partition == partition && *l.topic == *topic)
        {
            return Ok(i);
        }
        let mut lane = Lane::new(
            topic,
            partition,
            self.specs.clone(),
            self.window_records,
            self.min_window_records,
            &self.quality,
        );
        let n = self.window_records as i64;
        let started = std::time::Instant::now();
        let block_of = |o: i64| o.div_euclid(n.max(1));
        // Enough: N decoded records before the first record of the last block read, so the
        // window at that block's start — and the VIF it sets — is the one a run that never
        // stopped had.
        let enough = |read: &[(i64, Option<Record>)]| {
            let Some(&(last, _)) = read.last() else {
                return false;
            };
            let start = read
                .iter()
                .position(|(o, _)| block_of(*o) == block_of(last))
                .unwrap_or(0);
            read[..start].iter().filter(|(_, r)| r.is_some()).count() >= n as usize
        };
        let mut decode = |bytes: &[u8]| match self.decode(bytes) {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.is_retriable() => Err(TransformError::Retriable(e.to_string())),
            Err(_) => Ok(None),
        };
        let read = self
            .history
            .read_back(topic, partition, offset, 3 * n, &mut decode, &enough)?;
        let (records, reference) = (read.len(), self.reference());
        for (o, record) in read {
            // Emitted before: only the state matters.
            lane.replay(replayed(o, record), &reference, &self.quality);
        }
        lane.drop_held();
        tracing::info!(
            target: LOG_TARGET,
            stage = STAGE,
            topic,
            partition,
            from = offset,
            records,
            took = ?started.elapsed(),
            "partition's quality window rebuilt from the records before its committed offset"
        );
        self.lanes.push(lane);
        Ok(self.lanes.len() - 1)
    }

    /// Routes what gate `i` gave: the report of a block that ended, the judged messages.
    fn emit(&mut self, i: usize, step: Step, out: &mut Vec<Output>) -> Result<(), TransformError> {
        for end in &step.ended {
            let (o, closed) = self.router.report(end, &self.baselines.info());
            out.push(o);
            self.pending.push(closed);
        }
        let (topic, partition) = (self.lanes[i].topic.clone(), self.lanes[i].partition);
        for j in step.judged {
            // What a FAIL record's outcome event needs, read before routing moves the record.
            let fail = (j.verdict.decision == crate::quality::Decision::Fail)
                .then(|| (j.verdict.clone(), j.held.offset, trace_of(&j.held)));
            let routed = self.router.route(j, &topic, partition, out)?;
            let outcome = match routed {
                Routed::Quarantined => Some("quarantined"),
                Routed::Flagged => Some("flagged"),
                _ => None,
            };
            if let (Some((verdict, offset, tid)), Some(o)) = (fail, outcome) {
                self.failed
                    .add(o, (&topic, partition, offset), tid, &verdict);
            }
            let slot = match routed {
                Routed::Scored => 0,
                Routed::Flagged => 1,
                Routed::Quarantined => 2,
                Routed::DeadLetter => 3,
                Routed::Skipped => continue,
            };
            self.routed[slot] += 1;
        }
        Ok(())
    }
}

impl Transform for ScoreTransform {
    fn transform(
        &mut self,
        msg: &BorrowedMessage<'_>,
        out: &mut Vec<Output>,
    ) -> Result<(), TransformError> {
        let i = self.lane_of(msg.topic(), msg.partition(), msg.offset())?;
        let held = self.hold(msg)?;
        let reference = self.reference();
        let step = self.lanes[i].push(held, &reference, &self.quality);
        self.emit(i, step, out)
    }

    fn flush(&mut self, out: &mut Vec<Output>) -> Result<(), TransformError> {
        self.baselines.tick();
        let reference = self.reference();
        for i in 0..self.lanes.len() {
            if self.lanes[i].held() == 0 {
                continue;
            }
            let step = self.lanes[i].release(&reference, &self.quality, false);
            self.emit(i, step, out)?;
        }
        let held: usize = self.lanes.iter().map(Lane::held).sum();
        metrics::gauge!("etl_score_held_records").set(held as f64);
        Ok(())
    }

    fn held_from(&self, topic: &str, partition: i32) -> Option<i64> {
        self.lanes
            .iter()
            .find(|l| l.partition == partition && *l.topic == *topic)
            .and_then(Lane::held_from)
    }

    fn reset(&mut self, partitions: &[(String, i32)]) {
        let hit = |t: &str, p: i32| partitions.iter().any(|(pt, pp)| *pp == p && pt == t);
        self.lanes.retain(|l| !hit(&l.topic, l.partition));
        self.pending.retain(|c| !hit(&c.topic, c.partition));
        // Counts of an aborted transaction are dropped whole (a rebalance commits first).
        self.routed = [0; 4];
        self.failed = FailedRecords::default();
    }

    fn committed(&mut self) {
        for c in self.pending.drain(..) {
            c.emit();
        }
        self.failed.emit();
        let [scored, flagged, quarantined, _] = std::mem::take(&mut self.routed);
        for (decision, n) in [
            ("pass_or_warn", scored),
            ("flagged", flagged),
            ("quarantined", quarantined),
        ] {
            if n > 0 {
                metrics::counter!("etl_quality_records_total", "outcome" => decision).increment(n);
            }
        }
        if quarantined > 0 {
            metrics::counter!("etl_quarantined_records_total").increment(quarantined);
        }
    }
}

impl Drop for ScoreTransform {
    fn drop(&mut self) {
        let held: usize = self.lanes.iter().map(Lane::held).sum();
        if held > 0 {
            tracing::info!(
                target: LOG_TARGET,
                stage = STAGE,
                records = held,
                "stopping with records still waiting for a full window (or the baseline): \
                 they were not emitted and their offsets not committed; the next run reads \
                 them again"
            );
        }
    }
}
