//! The driver's bookkeeping: per partition, the records buffered for its next batch, whether
//! a batch is in flight, and the offsets written and committed; across partitions, the
//! number of batches in flight, the stopping flag and the first fatal error.
use std::collections::HashMap;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::super::{SinkError, SinkMessage};
use super::Outcome;

/// A finished batch, sent back from its writer task to the poll thread.
pub(super) struct Completion {
    pub(super) partition: i32,
    pub(super) epoch: u64,
    pub(super) records: usize,
    pub(super) started: Instant,
    pub(super) result: Result<Outcome, SinkError>,
}

/// One assigned partition.
#[derive(Default)]
pub(super) struct PartState {
    pub(super) epoch: u64,
    pub(super) buf: Vec<SinkMessage>,
    /// Key and payload bytes in `buf`.
    pub(super) bytes: usize,
    pub(super) first_at: Option<Instant>,
    /// When the latest record of the partition was polled (idle partitions store their
    /// position past transaction markers).
    pub(super) last_record_at: Option<Instant>,
    pub(super) inflight: bool,
    /// When its last batch finished (the `wait` phase runs from here to the next dispatch).
    pub(super) done_at: Option<Instant>,
    pub(super) paused: bool,
    /// Start offsets could not be read (shutdown came first): its records are ignored.
    pub(super) blocked: bool,
    pub(super) expected: Option<i64>,
    /// The last next_offset written.
    pub(super) written: Option<i64>,
    /// The last offset committed to Kafka (a synchronous commit that succeeded, an
    /// asynchronous one that was sent).
    pub(super) committed: Option<i64>,
    /// Cancelled when the partition is taken away: its batch in flight stops at once
    /// (retries included) instead of writing after the new owner.
    pub(super) revoked: CancellationToken,
}

impl PartState {
    /// The latest written offset when Kafka does not have it yet (a new batch, or a commit
    /// that failed: retried with the newest offset, never an older one).
    pub(super) fn uncommitted(&self) -> Option<i64> {
        self.written.filter(|w| self.committed != Some(*w))
    }

    /// The buffer holds a whole batch (by records or by bytes).
    pub(super) fn full(&self, batch_size: usize, batch_max_bytes: usize) -> bool {
        self.buf.len() >= batch_size || self.bytes >= batch_max_bytes
    }
}

/// Everything the poll thread and the rebalance callback share (behind one lock).
#[derive(Default)]
pub(super) struct State {
    pub(super) parts: HashMap<i32, PartState>,
    pub(super) next_epoch: u64,
    pub(super) inflight: usize,
    pub(super) stopping: bool,
    pub(super) fatal: Option<SinkError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_commit_is_retried_with_the_latest_written_offset() {
        // Written, never committed (or its commit failed): the latest written offset is due.
        let mut ps = PartState {
            written: Some(50),
            ..Default::default()
        };
        assert_eq!(ps.uncommitted(), Some(50));
        // Committed: nothing due.
        ps.committed = Some(50);
        assert_eq!(ps.uncommitted(), None);
        // A newer batch written after a commit failed for an older one: the newer offset.
        ps.written = Some(80);
        assert_eq!(ps.uncommitted(), Some(80));
    }

    #[test]
    fn a_batch_is_full_by_records_or_by_bytes() {
        let mut ps = PartState::default();
        assert!(!ps.full(2, 100));
        ps.bytes = 100;
        assert!(ps.full(2, 100));
        ps.bytes = 0;
        ps.buf = (0..2)
            .map(|i| SinkMessage {
                partition: 0,
                offset: i,
                key: None,
                payload: None,
                headers: None,
            })
            .collect();
        assert!(ps.full(2, 100));
    }
}
