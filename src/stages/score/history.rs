//! Reading a partition's records before an offset again, so that a stage taking the partition
//! over (a start, a restart, a rebalance, a rewind after an aborted transaction) rebuilds the
//! gate's state — the trailing window and the VIF in force — from the input itself. The state
//! is a function of the records in order ([`super::lane`]), so nothing else needs storing:
//! the committed offset is where emitting resumes, and what precedes it is read again.
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::eos::TransformError;
use crate::record::Record;
use crate::settings::Common;

/// How long one read-back may take before it counts as a broker problem (retriable).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A message read again: its offset and payload.
type Raw = (i64, Vec<u8>);
/// A message read again, decoded (`None`: undecodable).
pub(super) type Replayed = (i64, Option<Record>);
/// Decodes a payload read again; `Err` only for what is not the record's fault.
pub(super) type Decode<'a> = dyn FnMut(&[u8]) -> Result<Option<Record>, TransformError> + 'a;

/// Reads partitions back (read_committed, no commits).
pub(super) struct History {
    consumer: BaseConsumer,
}

impl History {
    pub(super) fn open(cfg: &Common, group: &str) -> Result<History, String> {
        let mut c = crate::kafka::base_config(&cfg.kafka);
        // assign() needs a group id; nothing is committed or subscribed under it.
        c.set("group.id", format!("{group}.history-reader"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true");
        let consumer = c
            .create()
            .map_err(|e| format!("score history consumer: {e}"))?;
        Ok(History { consumer })
    }

    /// The records of `topic`/`partition` before offset `before`, enough of them for
    /// `enough` (given the decoded records read so far, oldest first) or back to the
    /// partition's start. Reads `span` offsets back, doubling until that holds.
    pub(super) fn read_back(
        &self,
        topic: &str,
        partition: i32,
        before: i64,
        mut span: i64,
        decode: &mut Decode<'_>,
        enough: &dyn Fn(&[Replayed]) -> bool,
    ) -> Result<Vec<Replayed>, TransformError> {
        let retriable = |e: KafkaError| {
            TransformError::Retriable(format!("reading {topic}[{partition}] back: {e}"))
        };
        // A leader moving (a broker stopping) fails metadata calls for a moment: retried here
        // within READ_TIMEOUT, so that it does not abort the stage's transaction (whose abort
        // can itself fail while the coordinator moves, and stop the stage).
        let deadline = Instant::now() + READ_TIMEOUT;
        let low = loop {
            match self
                .consumer
                .fetch_watermarks(topic, partition, READ_TIMEOUT)
            {
                Ok((low, _)) => break low,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(topic, partition, error = %e, "reading back: watermarks; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(retriable(e)),
            }
        };
        if before <= low {
            return Ok(Vec::new());
        }
        loop {
            let from = (before - span).max(low);
            let mut out = Vec::new();
            for (offset, payload) in self.read(topic, partition, from, before)? {
                out.push((offset, decode(&payload)?));
            }
            if from == low || enough(&out) {
                return Ok(out);
            }
            span = span.saturating_mul(2);
        }
    }

    /// The committed messages at offsets `from..before`.
    fn read(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        before: i64,
    ) -> Result<Vec<Raw>, TransformError> {
        let fail = |m: String| {
            TransformError::Retriable(format!("reading {topic}[{partition}] back: {m}"))
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))
            .map_err(|e| fail(e.to_string()))?;
        self.consumer
            .assign(&tpl)
            .map_err(|e| fail(e.to_string()))?;
        let deadline = Instant::now() + READ_TIMEOUT;
        let mut out = Vec::new();
        loop {
            if Instant::now() > deadline {
                return Err(fail(format!("took more than {READ_TIMEOUT:?}")));
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) if m.offset() >= before => break,
                Some(Ok(m)) => out.push((m.offset(), m.payload().unwrap_or_default().to_vec())),
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                // Transient fetch errors (a leader moving) resolve themselves within the
                // deadline: librdkafka refetches metadata and goes on.
                Some(Err(e)) => {
                    tracing::debug!(topic, partition, error = %e, "reading back; waiting")
                }
            }
        }
        // Stop fetching until the next read-back.
        self.consumer
            .assign(&TopicPartitionList::new())
            .map_err(|e| fail(e.to_string()))?;
        Ok(out)
    }
}
