//! Records a sink gives up on: the [`Rejected`] reason attached to a message, and the
//! [`DeadLetters`] producer that writes them to the dead-letter topic and waits for each
//! acknowledgement (a batch's offsets may move only once its dead letters are durable).
use std::time::Duration;

use super::{metric, SinkError, SinkMessage};
use crate::kafka::headers::DeadLetter;
use crate::settings::{Common, TopicRole};

/// A record the sink gives up on, with the reason (goes to the dead-letter topic).
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Index of the message in its batch.
    pub index: usize,
    /// `decode`, `missing_key`, `mysql_data`, `mongo_write`...
    pub kind: &'static str,
    pub message: String,
}

/// Writes dead letters and waits for their delivery (they must be durable before the batch's
/// offsets move).
#[derive(Clone)]
pub struct DeadLetters {
    producer: rdkafka::producer::FutureProducer,
    topic: String,
    stage: &'static str,
}

impl DeadLetters {
    pub fn new(cfg: &Common, stage: &'static str) -> Result<DeadLetters, SinkError> {
        let producer = crate::kafka::producer_config(&cfg.kafka)
            .create()
            .map_err(|e| SinkError::Fatal {
                what: "creating the dead-letter producer",
                message: e.to_string(),
            })?;
        Ok(DeadLetters {
            producer,
            topic: cfg.topics.name(TopicRole::DeadLetter),
            stage,
        })
    }

    /// Sends the rejected messages of a batch; Ok once every one is acknowledged.
    pub async fn send(
        &self,
        topic: &str,
        msgs: &[SinkMessage],
        rejected: &[Rejected],
    ) -> Result<(), SinkError> {
        use rdkafka::producer::FutureRecord;
        let mut pending = Vec::with_capacity(rejected.len());
        for r in rejected {
            let Some(m) = msgs.get(r.index) else { continue };
            let dl = DeadLetter {
                stage: self.stage,
                kind: r.kind,
                message: &r.message,
                source: Some((topic, m.partition, m.offset)),
            };
            let headers = dl.headers(m.headers.as_ref().map(|h| h.as_borrowed()));
            let mut rec: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(k) = &m.key {
                rec = rec.key(k.as_slice());
            }
            if let Some(p) = &m.payload {
                rec = rec.payload(p.as_slice());
            }
            pending.push(
                self.producer
                    .send(rec, rdkafka::util::Timeout::After(Duration::from_secs(60))),
            );
        }
        for (r, fut) in rejected.iter().zip(pending) {
            match fut.await {
                Ok(_) => {
                    metrics::counter!(metric::DEAD_LETTERS, "kind" => r.kind).increment(1);
                }
                Err((e, _)) => {
                    return Err(SinkError::Retriable {
                        what: "sending a dead letter",
                        message: e.to_string(),
                    })
                }
            }
        }
        if !rejected.is_empty() {
            tracing::warn!(
                topic,
                dead_letters = rejected.len(),
                first_kind = rejected[0].kind,
                first_error = %rejected[0].message,
                "records sent to the dead-letter topic"
            );
        }
        Ok(())
    }
}
