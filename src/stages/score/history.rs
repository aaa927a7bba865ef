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
use tokio_util::sync::CancellationToken;

/// How long one read-back may take in all (watermarks and every read) before it counts as a
/// broker problem (retriable: the transaction aborts, the loop backs off and reads again).
/// One budget for the whole read-back, not one per step: with a step each, a read-back during
/// a broker outage could last minutes without a word (see `kafka::eos::watchdog`).
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
    /// The stage's shutdown: a read-back gives up when it comes.
    shutdown: CancellationToken,
}

impl History {
    pub(super) fn open(
        cfg: &Common,
        group: &str,
        shutdown: CancellationToken,
    ) -> Result<History, String> {
        let mut c = crate::kafka::base_config(&cfg.kafka);
        // assign() needs a group id; nothing is committed or subscribed under it.
        c.set("group.id", format!("{group}.history-reader"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            // A read-back from before the log start (retention) starts at the log start.
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true");
        let consumer = c
            .create()
            .map_err(|e| format!("score history consumer: {e}"))?;
        Ok(History { consumer, shutdown })
    }

    /// The records of `topic`/`partition` before offset `before`, enough of them for
    /// `enough` (given the decoded records read so far, oldest first) or back to the
    /// partition's start. Reads `span` offsets back, doubling until that holds. All of it
    /// within [`READ_TIMEOUT`], else a retriable error.
    pub(super) fn read_back(
        &self,
        topic: &str,
        partition: i32,
        before: i64,
        mut span: i64,
        decode: &mut Decode<'_>,
        enough: &dyn Fn(&[Replayed]) -> bool,
    ) -> Result<Vec<Replayed>, TransformError> {
        let mut step = Step {
            topic,
            partition,
            deadline: Instant::now() + READ_TIMEOUT,
            shutdown: &self.shutdown,
            warned: false,
        };
        // The partition's start comes from the fetches themselves (librdkafka caches the log
        // start offset each fetch response carries), never from a watermark query: that one
        // (`fetch_watermarks`) sends its request to the leader it knew and, with that broker
        // stopped, could wait past its timeout (librdkafka #2588, rust-rdkafka #762), on the
        // loop's thread. An offset before the start is reset to it (`auto.offset.reset`).
        loop {
            let from = (before - span).max(0);
            let mut out = Vec::new();
            for (offset, payload) in self.read(&mut step, from, before)? {
                out.push((offset, decode(&payload)?));
            }
            // Not known (no fetch answered with it): assume more may precede `from`.
            let low = cached_log_start(&self.consumer, topic, partition).unwrap_or(0);
            if from <= low || enough(&out) {
                return Ok(out);
            }
            span = span.saturating_mul(2);
        }
    }

    /// The committed messages at offsets `from..before`.
    fn read(
        &self,
        step: &mut Step<'_>,
        from: i64,
        before: i64,
    ) -> Result<Vec<Raw>, TransformError> {
        let (topic, partition) = (step.topic, step.partition);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))
            .map_err(|e| step.fail(e.to_string()))?;
        self.consumer
            .assign(&tpl)
            .map_err(|e| step.fail(e.to_string()))?;
        let mut out = Vec::new();
        loop {
            if let Err(e) = step.check() {
                // Stop fetching before giving up (best effort: the next read-back assigns anew).
                let _ = self.consumer.assign(&TopicPartitionList::new());
                return Err(e);
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) if m.offset() >= before => break,
                Some(Ok(m)) => out.push((m.offset(), m.payload().unwrap_or_default().to_vec())),
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                // Transient fetch errors (a leader moving) resolve themselves within the
                // deadline: librdkafka refetches metadata and goes on.
                Some(Err(e)) => step.waiting("records", &e.to_string()),
            }
        }
        // Stop fetching until the next read-back.
        self.consumer
            .assign(&TopicPartitionList::new())
            .map_err(|e| step.fail(e.to_string()))?;
        Ok(out)
    }
}

/// The log start offset of `topic`/`partition` as the last fetch response reported it.
fn cached_log_start(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
    crate::kafka::cached_watermarks(consumer.client(), topic, partition)
        .map(|(low, _)| low)
        .filter(|low| *low >= 0)
}

/// One read-back's budget: its deadline, the stage's shutdown, and whether it said it waits.
struct Step<'a> {
    topic: &'a str,
    partition: i32,
    deadline: Instant,
    shutdown: &'a CancellationToken,
    warned: bool,
}

impl Step<'_> {
    fn fail(&self, m: String) -> TransformError {
        TransformError::Retriable(format!(
            "reading {}[{}] back: {m}",
            self.topic, self.partition
        ))
    }

    /// Err once the deadline has passed or shutdown came.
    fn check(&self) -> Result<(), TransformError> {
        if self.shutdown.is_cancelled() {
            return Err(self.fail("shutdown requested".into()));
        }
        if Instant::now() >= self.deadline {
            return Err(self.fail(format!("not done within {READ_TIMEOUT:?}")));
        }
        Ok(())
    }

    /// The broker did not give `what` yet: said once per read-back at warn (a read-back
    /// waits only while a broker is away), then at debug.
    fn waiting(&mut self, what: &str, error: &str) {
        if self.warned {
            tracing::debug!(
                topic = self.topic,
                partition = self.partition,
                error,
                "reading back: waiting for {what}"
            );
        } else {
            self.warned = true;
            tracing::warn!(
                stage = "score",
                topic = self.topic,
                partition = self.partition,
                error,
                "reading the partition back to rebuild its window: waiting for {what} (a broker away?)"
            );
        }
    }
}
