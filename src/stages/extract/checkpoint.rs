//! Checkpoints in the compacted `extract_state` topic.
//!
//! Two kinds of record, keyed so compaction keeps the latest of each:
//! - `<source>/pass`: the current pass (id, start, completion).
//! - `<source>/stream/<stream id>`: where that stream of that pass continues.
//!
//! Both are written inside the same Kafka transaction as the records they account for, so a
//! checkpoint is visible (read_committed) exactly when its records are.
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::source::Position;
use crate::kafka::MetadataError;
use crate::settings::KafkaConfig;

/// The pass record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassState {
    pub pass_id: String,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    /// Streams in the pass.
    pub streams: usize,
}

/// A stream's position within a pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamCheckpoint {
    pub pass_id: String,
    pub stream: String,
    pub position: Position,
    /// Pages, records and dead letters of this stream so far in the pass.
    pub pages: u64,
    pub records: u64,
    pub dead_letters: u64,
    pub updated_at: DateTime<Utc>,
}

pub fn pass_key(source: &str) -> String {
    format!("{source}/pass")
}

pub fn stream_key(source: &str, stream: &str) -> String {
    format!("{source}/stream/{stream}")
}

/// What the state topic says about one source.
#[derive(Debug, Default, Clone)]
pub struct State {
    pub pass: Option<PassState>,
    /// By stream id.
    pub streams: HashMap<String, StreamCheckpoint>,
}

/// Reads the state topic to its end (read_committed) and keeps the latest value per key of
/// `source`. Blocking; call from `spawn_blocking`. Call after `init_transactions`, which
/// aborts a killed predecessor's open transaction so the end is reachable.
pub fn load(
    kafka: &KafkaConfig,
    topic: &str,
    group: &str,
    source: &str,
    timeout: Duration,
) -> Result<State, String> {
    // EofReader: the partition ends are expected here, not ERRORs in the log.
    let consumer: BaseConsumer<crate::kafka::reader::EofReader> =
        crate::kafka::consumer_config(kafka, group)
            .set("enable.partition.eof", "true")
            .create_with_context(crate::kafka::reader::EofReader::default())
            .map_err(|e| format!("creating the state reader: {e}"))?;
    let (tpl, mut pending) = nonempty_partitions(&consumer, topic, timeout)?;
    let mut state = State::default();
    if pending.is_empty() {
        return Ok(state);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| format!("assigning {topic}: {e}"))?;
    let keys = Keys::of(source);
    let deadline = Instant::now() + timeout;
    while !pending.is_empty() {
        if Instant::now() > deadline {
            return Err(format!(
                "state topic {topic} not read to its end within {timeout:?} (an open transaction of a live extractor?)"
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => return Err(format!("reading state topic {topic}: {e}")),
            Some(Ok(m)) => state.apply(&keys, m.key(), m.payload(), topic)?,
        }
    }
    Ok(state)
}

/// The partitions of the state topic that hold records, from their beginning.
fn nonempty_partitions<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<(TopicPartitionList, HashSet<i32>), String> {
    let ids = crate::kafka::partitions(consumer.client(), topic, timeout).map_err(|e| match e {
        MetadataError::Kafka { source, .. } => {
            format!("metadata of state topic {topic}: {source}")
        }
        MetadataError::NoTopic(_) => {
            format!("state topic {topic} does not exist; create it with `etl-pipe topics apply`")
        }
    })?;
    let mut tpl = TopicPartitionList::new();
    let mut pending = HashSet::new();
    for id in ids {
        let (lo, hi) = consumer
            .fetch_watermarks(topic, id, timeout)
            .map_err(|e| format!("watermarks of {topic}/{id}: {e}"))?;
        if hi > lo {
            tpl.add_partition_offset(topic, id, Offset::Beginning)
                .map_err(|e| e.to_string())?;
            pending.insert(id);
        }
    }
    Ok((tpl, pending))
}

/// The record keys of one source.
struct Keys {
    /// `<source>/`: every key of the source.
    prefix: String,
    /// `<source>/pass`.
    pass: String,
    /// `<source>/stream/`, followed by the stream id.
    stream: String,
}

impl Keys {
    fn of(source: &str) -> Keys {
        let prefix = format!("{source}/");
        Keys {
            pass: pass_key(source),
            stream: format!("{prefix}stream/"),
            prefix,
        }
    }
}

impl State {
    /// One record of the state topic: the latest pass record or checkpoint wins, a record
    /// without payload (tombstone) deletes; other sources' records are ignored.
    fn apply(
        &mut self,
        keys: &Keys,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        topic: &str,
    ) -> Result<(), String> {
        let Some(key) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
            return Ok(());
        };
        if !key.starts_with(&keys.prefix) {
            return Ok(());
        }
        if key == keys.pass {
            self.pass = match payload {
                None => None,
                Some(p) => Some(
                    serde_json::from_slice(p)
                        .map_err(|e| format!("unreadable pass record `{key}` in {topic}: {e}"))?,
                ),
            };
        } else if let Some(stream) = key.strip_prefix(&keys.stream) {
            match payload {
                None => {
                    self.streams.remove(stream);
                }
                Some(p) => match serde_json::from_slice::<StreamCheckpoint>(p) {
                    Ok(c) => {
                        self.streams.insert(stream.to_string(), c);
                    }
                    Err(e) => {
                        // A checkpoint we cannot read only costs a refetch of that stream.
                        tracing::warn!(key, error = %e, "ignoring unreadable checkpoint");
                        self.streams.remove(stream);
                    }
                },
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_as_json() {
        let c = StreamCheckpoint {
            pass_id: "p".into(),
            stream: "queue=Q".into(),
            position: Position::Page(4),
            pages: 3,
            records: 600,
            dead_letters: 1,
            updated_at: Utc::now(),
        };
        let j = serde_json::to_string(&c).unwrap();
        assert!(j.contains(r#""position":{"page":4}"#), "{j}");
        assert_eq!(serde_json::from_str::<StreamCheckpoint>(&j).unwrap(), c);
        let d = serde_json::to_string(&Position::Done).unwrap();
        assert_eq!(d, r#""done""#);
    }
}
