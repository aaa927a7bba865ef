//! [`EofReader`]: the client context of consumers that read a topic to its end with
//! `enable.partition.eof` (extract's checkpoint loader). librdkafka reports each partition's
//! end to the poll *and* to the client's error callback, whose default logs it at ERROR as
//! `librdkafka: Global error: PartitionEOF`: a line at every extract start with checkpoints,
//! although nothing is wrong and nobody has to act. This context drops that one; every other
//! global error is logged as before (and counted).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

#[derive(Debug, Clone, Default)]
pub struct EofReader {
    errors: Arc<AtomicUsize>,
}

impl EofReader {
    /// Global errors logged so far (partition ends not counted).
    pub fn errors_logged(&self) -> usize {
        self.errors.load(Ordering::Relaxed)
    }
}

impl ClientContext for EofReader {
    fn error(&self, error: KafkaError, reason: &str) {
        // The callback gets it as a global error code, the poll as `PartitionEOF(p)`.
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            return;
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(target: "librdkafka", "librdkafka: Global error: {error}: {reason}");
    }
}

impl ConsumerContext for EofReader {}
