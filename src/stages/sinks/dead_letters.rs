//! Records a sink gives up on: the [`Rejected`] reason attached to a message, and the
//! [`DeadLetters`] producer that writes them to the dead-letter topic and waits for each
//! acknowledgement (a batch's offsets may move only once its dead letters are durable).
use std::collections::HashSet;
use std::sync::Mutex;
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

/// Stops the batch (fatal, before any dead letter is sent or offset moved) when more of it is
/// rejected than `sink.max_rejected_share` allows: so many bad records at once means the
/// schema, the table or the topic is wrong, not the records.
pub fn check_rejected_share(
    sink: &super::SinkConfig,
    rejected: &[Rejected],
    records: usize,
) -> Result<(), SinkError> {
    if !sink.too_many_rejected(rejected.len(), records) {
        return Ok(());
    }
    let first = rejected
        .first()
        .map(|r| format!("{}: {}", r.kind, r.message))
        .unwrap_or_default();
    Err(SinkError::Fatal {
        what: "writing a batch",
        message: format!(
            "{} of {records} records of the batch were rejected, more than sink.max_rejected_share = {} allows; \
             nothing was committed and the offsets did not move. First rejection: {first}",
            rejected.len(),
            sink.max_rejected_share
        ),
    })
}

/// `what` of a failure to send a dead letter (Kafka, not the database).
pub const SENDING_DEAD_LETTER: &str = "sending a dead letter";

/// The offsets of a batch whose dead letters were acknowledged: a batch retried after its
/// dead letters went out (a failed COMMIT, a lost connection) does not send them again.
#[derive(Default)]
pub struct SentDeadLetters(Mutex<HashSet<i64>>);

impl SentDeadLetters {
    fn contains(&self, offset: i64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&offset)
    }
    fn insert(&self, offset: i64) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(offset);
    }
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

    /// Sends the rejected messages of a batch that `sent` does not hold yet; Ok once every one
    /// is acknowledged (each acknowledged one is added to `sent`).
    pub async fn send(
        &self,
        topic: &str,
        msgs: &[SinkMessage],
        rejected: &[Rejected],
        sent: &SentDeadLetters,
    ) -> Result<(), SinkError> {
        use rdkafka::producer::FutureRecord;
        let mut pending = Vec::with_capacity(rejected.len());
        let mut sending = Vec::with_capacity(rejected.len());
        let mut outcomes = Vec::with_capacity(rejected.len());
        for r in rejected {
            let Some(m) = msgs.get(r.index) else { continue };
            if sent.contains(m.offset) {
                continue;
            }
            let dl = DeadLetter {
                stage: self.stage,
                kind: r.kind,
                message: &r.message,
                source: Some((topic, m.partition, m.offset)),
            };
            let headers = dl.headers(m.headers.as_ref().map(|h| h.as_borrowed()));
            outcomes.push(
                crate::observability::outcome::RecordOutcome::from_dead_letter(
                    "db_rejected",
                    self.stage,
                    m.key.as_deref(),
                    &headers,
                ),
            );
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
            sending.push((r, m.offset));
        }
        let mut failed = None;
        for ((r, offset), fut) in sending.iter().zip(pending) {
            match fut.await {
                Ok(_) => {
                    sent.insert(*offset);
                    metrics::counter!(metric::DEAD_LETTERS, "kind" => r.kind).increment(1);
                }
                Err((e, _)) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(SinkError::Retriable {
                what: SENDING_DEAD_LETTER,
                message: e.to_string(),
            });
        }
        for o in &outcomes {
            crate::observability::outcome::record(o);
        }
        crate::observability::outcome::flush();
        if let Some((first, _)) = sending.first() {
            tracing::warn!(
                topic,
                dead_letters = sending.len(),
                first_kind = first.kind,
                first_error = %first.message,
                "records sent to the dead-letter topic"
            );
        }
        Ok(())
    }
}
