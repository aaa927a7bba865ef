//! How large a message each topic takes, checked before producing: a record the broker would
//! refuse fails the whole transaction, and retrying it fails again forever (a crash loop of
//! the stage), whereas a dead letter lets the stage go on.
//!
//! The limit of a topic is the smaller of its `max.message.bytes` (read from the broker once
//! per topic: the topic's override, or the broker's `message.max.bytes`, 1 048 588 by
//! default) and the producer's own `message.max.bytes` (librdkafka refuses larger messages
//! before sending them; 1 000 000 unless `kafka.client_options` sets it). Sizes are counted
//! uncompressed, with the record and batch framing: a message that compression would have
//! squeezed under the limit is refused too, which keeps the rule the same for every payload.
use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, OwnedHeaders};

use crate::settings::KafkaConfig;

/// librdkafka's default `message.max.bytes`.
pub const PRODUCER_DEFAULT_MAX: usize = 1_000_000;
/// A record batch header (61 bytes) plus the largest record framing librdkafka assumes.
const FRAMING: usize = 61 + 36;
/// Framing of one header (two varint lengths).
const HEADER_FRAMING: usize = 10;

/// The bytes a message takes on the wire, uncompressed, framing included.
pub fn wire_size(
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    headers: Option<&OwnedHeaders>,
) -> usize {
    let headers: usize = headers.map_or(0, |hs| {
        hs.iter()
            .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len) + HEADER_FRAMING)
            .sum()
    });
    FRAMING + key.map_or(0, <[u8]>::len) + payload.map_or(0, <[u8]>::len) + headers
}

/// The topic's limit could not be read (broker away, topic missing): retriable.
#[derive(Debug, thiserror::Error)]
#[error("reading max.message.bytes of topic {topic}: {message}")]
pub struct LimitError {
    pub topic: String,
    pub message: String,
}

/// The message size limit per topic, read once per topic.
pub struct MessageLimits {
    admin: AdminClient<DefaultClientContext>,
    producer_max: usize,
    by_topic: HashMap<String, usize>,
    timeout: Duration,
}

impl MessageLimits {
    /// An admin client to the cluster of `kafka`; `timeout` bounds each lookup.
    pub fn new(kafka: &KafkaConfig, timeout: Duration) -> Result<MessageLimits, KafkaError> {
        let config = crate::kafka::base_config(kafka);
        let producer_max = config
            .get("message.max.bytes")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(PRODUCER_DEFAULT_MAX);
        Ok(MessageLimits {
            admin: config.create()?,
            producer_max,
            by_topic: HashMap::new(),
            timeout,
        })
    }

    /// The largest message ([`wire_size`]) `topic` accepts from this producer.
    pub async fn max_for(&mut self, topic: &str) -> Result<usize, LimitError> {
        if let Some(max) = self.by_topic.get(topic) {
            return Ok(*max);
        }
        let err = |message: String| LimitError {
            topic: topic.to_string(),
            message,
        };
        let opts = AdminOptions::new().request_timeout(Some(self.timeout));
        let results = self
            .admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &opts)
            .await
            .map_err(|e| err(e.to_string()))?;
        let resource = results
            .into_iter()
            .next()
            .ok_or_else(|| err("the broker returned no result".into()))?
            .map_err(|code| err(code.to_string()))?;
        let topic_max: usize = resource
            .get("max.message.bytes")
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| err("the broker did not report it".into()))?;
        let max = topic_max.min(self.producer_max);
        tracing::debug!(
            topic,
            topic_max,
            producer_max = self.producer_max,
            "message size limit"
        );
        self.by_topic.insert(topic.to_string(), max);
        Ok(max)
    }

    /// [`max_for`](Self::max_for) from a thread outside the async runtime (the exactly-once
    /// loop's): the admin client's own thread completes the lookup.
    pub fn max_for_blocking(&mut self, topic: &str) -> Result<usize, LimitError> {
        if let Some(max) = self.by_topic.get(topic) {
            return Ok(*max);
        }
        futures::executor::block_on(self.max_for(topic))
    }
}

/// Why a message was left out of its dead letter, appended to the dead letter's message.
pub fn left_out(size: usize, topic: &str, max: usize) -> String {
    format!(
        "its {size} bytes are left out of this dead letter: {topic} accepts at most {max} \
         (max.message.bytes of the topic, message.max.bytes of the producer)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Header;

    #[test]
    fn wire_size_counts_key_payload_headers_and_framing() {
        let h = OwnedHeaders::new().insert(Header {
            key: "k",
            value: Some("vv"),
        });
        assert_eq!(
            wire_size(Some(b"abc"), Some(&[0u8; 100]), Some(&h)),
            FRAMING + 3 + 100 + 1 + 2 + HEADER_FRAMING
        );
        assert_eq!(wire_size(None, None, None), FRAMING);
    }
}
