//! Committing written offsets to Kafka: which offsets ([`Commit`]) and how a failed commit
//! is left to be retried.
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::context::Driver;
use super::state::State;
use super::BatchWriter;

/// Which offsets [`commit_written`] commits, and how.
#[derive(Clone, Copy)]
pub(super) enum Commit {
    /// The offsets written since the last commit ([`PartState::uncommitted`](super::state::PartState::uncommitted)).
    Pending(CommitMode),
    /// The latest written offset of each partition, synchronously, whether it was committed
    /// before or not (revocation, shutdown: also covers an asynchronous commit that was lost).
    Latest,
}

impl Commit {
    /// How a batch's offset is committed once the batch is written.
    pub(super) fn after_write<W: BatchWriter>() -> Commit {
        // Where Kafka holds the position (Mongo) the commit is synchronous (≈ 6 ms on
        // this thread): its failure is then known, and the offset is committed again
        // (retried by the poll loop) instead of lingering uncommitted. The
        // write is acknowledged either way: a commit that never lands only means the
        // batch is written again after a restart (the same documents). MySQL stores
        // its position itself; the Kafka commit is only for lag, asynchronous.
        if W::OFFSETS_IN_KAFKA {
            Commit::Pending(CommitMode::Sync)
        } else {
            Commit::Pending(CommitMode::Async)
        }
    }
}

/// Commits the written offsets of `parts` to Kafka. After a synchronous commit that fails the
/// offsets stay uncommitted: the poll loop tries again with the latest ones.
pub(super) fn commit_written<W: BatchWriter>(
    consumer: &Driver<W>,
    topic: &str,
    st: &mut State,
    parts: &[i32],
    how: Commit,
) {
    let mut tpl = TopicPartitionList::new();
    let mut sent = Vec::new();
    for p in parts {
        if let Some(ps) = st.parts.get(p) {
            let offset = match how {
                Commit::Pending(_) => ps.uncommitted(),
                Commit::Latest => ps.written,
            };
            if let Some(o) = offset {
                let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(o));
                sent.push((*p, o));
            }
        }
    }
    if tpl.count() == 0 {
        return;
    }
    let mode = match how {
        Commit::Pending(m) => m,
        Commit::Latest => CommitMode::Sync,
    };
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            for (p, o) in sent {
                if let Some(ps) = st.parts.get_mut(&p) {
                    ps.committed = Some(o);
                }
            }
        }
        // MySQL: only lag visibility suffers. Mongo: the records are written; until a commit
        // lands, a restart writes them again, the same documents (upserts by key).
        Err(e) => {
            tracing::warn!(error = %e, partitions = ?sent, "committing offsets to Kafka failed; will retry")
        }
    }
}
