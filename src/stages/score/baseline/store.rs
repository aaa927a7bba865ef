//! The baseline store's reader and writer: the compacted topic `topics.score_baseline`, read
//! from the beginning to its end (at start-up and before publishing a build), then tailed;
//! one record per pipeline, the latest of our key being the baseline.
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::{
    origin_of, Active, OpenError, Source, StoredBaseline, CALL_TIMEOUT, STORED_FORMAT,
    STORED_VERSION,
};
use crate::kafka::MetadataError;
use crate::quality::Baseline;
use crate::settings::{Common, TopicRole};

/// Reads and writes the store topic.
pub(super) struct Store {
    pub(super) topic: String,
    partitions: Vec<i32>,
    key: String,
    consumer: BaseConsumer,
    producer: FutureProducer,
    handle: tokio::runtime::Handle,
}

impl Store {
    pub(super) fn open(cfg: &Common, handle: tokio::runtime::Handle) -> Result<Self, OpenError> {
        let topic = cfg.topics.name(TopicRole::ScoreBaseline);
        let mut c = crate::kafka::base_config(&cfg.kafka);
        // assign() needs a group id; nothing is committed or subscribed under it.
        c.set(
            "group.id",
            format!(
                "{}.baseline-reader",
                cfg.pipeline.group_id(crate::stages::score::STAGE)
            ),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true");
        let consumer: BaseConsumer = c
            .create()
            .map_err(|e| OpenError::Fatal(format!("baseline store consumer: {e}")))?;
        let partitions = match crate::kafka::partitions(consumer.client(), &topic, CALL_TIMEOUT) {
            Ok(ids) => ids,
            Err(MetadataError::Kafka { source, .. }) => {
                return Err(OpenError::Retriable(format!(
                    "metadata of {topic}: {source}"
                )))
            }
            Err(MetadataError::NoTopic(_)) => {
                return Err(OpenError::Fatal(format!(
                    "the baseline store topic {topic} (topics.score_baseline) does not exist; \
                     create it with `etl-pipe topics apply`"
                )))
            }
        };
        let mut p = crate::kafka::producer_config(&cfg.kafka);
        p.set("message.timeout.ms", CALL_TIMEOUT.as_millis().to_string());
        let producer: FutureProducer = p
            .create()
            .map_err(|e| OpenError::Fatal(format!("baseline store producer: {e}")))?;
        Ok(Store {
            topic,
            partitions,
            key: cfg.pipeline.group_id(crate::stages::score::STAGE),
            consumer,
            producer,
            handle,
        })
    }

    /// Reads the store from the beginning until every partition reported its end (it is
    /// compacted and small), then goes on tailing from there. `Some(x)`: the latest record
    /// of our key (`None` inside = a tombstone); `None`: no record of ours.
    pub(super) fn read_to_end(&mut self) -> Result<Option<Option<Active>>, String> {
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
    pub(super) fn poll_latest(&mut self) -> Option<Option<Active>> {
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

    /// Publishes `stored` and reads it back, unless someone else published meanwhile (this
    /// instance may have been building while another one did): the baseline now in the store.
    pub(super) fn publish_unless_there(
        &mut self,
        stored: &StoredBaseline,
    ) -> Result<Active, String> {
        match self.read_to_end()? {
            Some(Some(active)) => Ok(active),
            _ => {
                self.publish(stored)?;
                match self.read_to_end()? {
                    Some(Some(active)) => Ok(active),
                    _ => Err("the published baseline is not in the store".to_string()),
                }
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
