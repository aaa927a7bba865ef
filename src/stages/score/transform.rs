//! The score stage's [`Transform`] on the exactly-once loop: decodes each cleaned message
//! into its partition's open window, closes a window when it is full or old enough, emits the
//! closed windows' outputs at the next flush, and tells the loop which offsets are still held.
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{BorrowedMessage, Message};

use super::baseline::Baselines;
use super::close::Closer;
use super::window::{Closed, Due, Held, HeldRecord, Item, Window};
use super::{ScoreConfig, LOG_TARGET, STAGE};
use crate::codec::{Codec, CodecError};
use crate::kafka::eos::{Output, Transform, TransformError};
use crate::quality::{FieldSpec, QualityConfig};
use crate::record::Record;
use crate::settings::{Common, TopicRole};

/// The score stage's [`Transform`]: holds messages in per-partition windows and emits a
/// window's outputs when it closes.
pub struct ScoreTransform {
    codec_in: Arc<Codec>,
    handle: tokio::runtime::Handle,
    closer: Closer,
    window_records: usize,
    window_max_age: Duration,
    dead_letter: Arc<str>,
    baselines: Baselines,
    windows: Vec<Window>,
    due: Vec<Due>,
    /// Emitted into the open transaction; logged and counted when it commits.
    pending: Vec<Closed>,
}

/// Everything [`ScoreTransform::new`] needs besides the config.
pub struct Parts {
    pub codec_in: Arc<Codec>,
    pub codec_out: Arc<Codec>,
    pub specs: Vec<FieldSpec>,
    pub baselines: Baselines,
    pub handle: tokio::runtime::Handle,
}

impl ScoreTransform {
    pub fn new(cfg: &Common, score: &ScoreConfig, quality: &QualityConfig, parts: Parts) -> Self {
        let dead_letter: Arc<str> = cfg.topics.name(TopicRole::DeadLetter).into();
        ScoreTransform {
            codec_in: parts.codec_in,
            handle: parts.handle,
            closer: Closer {
                codec_out: parts.codec_out,
                specs: parts.specs,
                quality: quality.clone(),
                drift_min_rows: score.drift_min_rows,
                scored: cfg.topics.name(TopicRole::Scored).into(),
                quarantine: cfg.topics.name(TopicRole::Quarantine).into(),
                quality_topic: cfg.topics.name(TopicRole::Quality).into(),
                dead_letter: dead_letter.clone(),
                instance: cfg.pipeline.instance_id(),
            },
            window_records: score.window_records,
            window_max_age: score.window_max_age,
            dead_letter,
            baselines: parts.baselines,
            windows: Vec::new(),
            due: Vec::new(),
            pending: Vec::new(),
        }
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

    /// Evaluates a window and queues its outputs for the next flush.
    fn close(&mut self, w: Window, closed_by: &'static str) {
        if let Some(due) = self.closer.close(w, closed_by, &self.baselines) {
            self.due.push(due);
        }
    }

    /// The message as held in its window: the decoded record, or the dead letter of an
    /// undecodable one.
    fn hold(&mut self, msg: &BorrowedMessage<'_>) -> Result<Held, TransformError> {
        let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
        let payload = msg.payload().unwrap_or_default();
        let item = match self.decode(payload) {
            Ok(record) => {
                self.baselines.feed(topic, partition, offset, &record);
                Item::Record(HeldRecord {
                    record,
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
        Ok(Held {
            offset,
            timestamp: msg.timestamp().to_millis(),
            item,
        })
    }

    /// Index of the open window of `topic`/`partition`, opened now if there is none.
    fn window_of(&mut self, topic: &str, partition: i32) -> usize {
        match self
            .windows
            .iter()
            .position(|w| w.partition == partition && w.topic == topic)
        {
            Some(i) => i,
            None => {
                let capacity = self.window_records.min(4096);
                self.windows.push(Window::open(topic, partition, capacity));
                self.windows.len() - 1
            }
        }
    }
}

impl Transform for ScoreTransform {
    fn transform(
        &mut self,
        msg: &BorrowedMessage<'_>,
        _out: &mut Vec<Output>,
    ) -> Result<(), TransformError> {
        let held = self.hold(msg)?;
        let i = self.window_of(msg.topic(), msg.partition());
        self.windows[i].held.push(held);
        if self.windows[i].held.len() >= self.window_records {
            let w = self.windows.swap_remove(i);
            self.close(w, "records");
        }
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<Output>) -> Result<(), TransformError> {
        self.baselines.tick();
        let mut i = 0;
        while i < self.windows.len() {
            if self.windows[i].opened.elapsed() >= self.window_max_age {
                let w = self.windows.swap_remove(i);
                self.close(w, "age");
            } else {
                i += 1;
            }
        }
        for d in self.due.drain(..) {
            out.extend(d.outputs);
            self.pending.push(d.closed);
        }
        let held: usize = self.windows.iter().map(|w| w.held.len()).sum();
        metrics::gauge!("etl_score_held_records").set(held as f64);
        Ok(())
    }

    fn held_from(&self, topic: &str, partition: i32) -> Option<i64> {
        let open = self
            .windows
            .iter()
            .filter(|w| w.partition == partition && w.topic == topic)
            .map(Window::first_offset);
        let due = self
            .due
            .iter()
            .filter(|d| d.partition == partition && d.topic == topic)
            .map(|d| d.first_offset);
        open.chain(due).min()
    }

    fn reset(&mut self, partitions: &[(String, i32)]) {
        let hit = |t: &str, p: i32| partitions.iter().any(|(pt, pp)| *pp == p && pt == t);
        self.windows.retain(|w| !hit(&w.topic, w.partition));
        self.due.retain(|d| !hit(&d.topic, d.partition));
        self.pending.retain(|c| !hit(&c.topic, c.partition));
    }

    fn committed(&mut self) {
        for c in self.pending.drain(..) {
            c.emit();
        }
    }
}

impl Drop for ScoreTransform {
    fn drop(&mut self) {
        let held: usize = self.windows.iter().map(|w| w.held.len()).sum();
        if held > 0 {
            tracing::info!(
                target: LOG_TARGET,
                stage = STAGE,
                records = held,
                windows = self.windows.len(),
                "stopping with open windows: their records were not emitted and their offsets \
                 not committed; the next run reads them again"
            );
        }
    }
}
