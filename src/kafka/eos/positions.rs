//! Committing the consumer's positions when caught up: the position steps over transaction
//! markers and aborted records, which no message reports, so without this the committed offset
//! of an idle partition stays one short of its end and the group's lag reads 1.
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::engine::{Engine, Txn};
use super::failure::Failure;
use super::Transform;

impl<T: Transform> Engine<T> {
    /// Caught up: commits, in a transaction of its own, the consumer's position of every
    /// partition where it is past the committed offset. The position steps over transaction
    /// markers and aborted records, which no message reports, so without this the committed
    /// offset of an idle partition stays one short of its end and the group's lag reads 1.
    /// Partitions whose records the transform still holds are left alone (`held_from`).
    /// The position is only trusted outside a failed transaction: a rewind's seek resets it.
    pub(super) fn commit_positions<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), Failure> {
        if self.txn != Txn::Idle || self.rewind_pending {
            return Ok(());
        }
        let positions = consumer
            .position()
            .map_err(|e| Failure::Abort(format!("consumer position: {e}")))?;
        let mut ahead: Vec<(String, i32, i64)> = Vec::new();
        let mut unknown = TopicPartitionList::new();
        for e in positions.elements() {
            let Offset::Offset(at) = e.offset() else {
                continue; // nothing consumed since the assignment or the last seek
            };
            let key = (e.topic().to_string(), e.partition());
            match self.committed.get(&key) {
                Some(c) if at <= *c => {}
                Some(_) => ahead.push((key.0, key.1, at)),
                None => {
                    unknown.add_partition(e.topic(), e.partition());
                    ahead.push((key.0, key.1, at));
                }
            }
        }
        if unknown.count() > 0 {
            // Once per assigned partition: what the group committed before this instance.
            let got = consumer
                .committed_offsets(unknown, self.timing.call)
                .map_err(|e| Failure::Abort(format!("committed offsets: {e}")))?;
            for e in got.elements() {
                let c = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                };
                self.committed
                    .insert((e.topic().to_string(), e.partition()), c);
            }
        }
        ahead.retain(|(t, p, at)| {
            self.committed.get(&(t.clone(), *p)).is_some_and(|c| at > c)
                && self.transform.held_from(t, *p).is_none()
        });
        if ahead.is_empty() {
            return Ok(());
        }
        for (t, p, at) in ahead {
            match self
                .positions
                .iter_mut()
                .find(|(pt, pp, _)| *pp == p && *pt == t)
            {
                Some(pos) => pos.2 = at,
                None => self.positions.push((t, p, at)),
            }
        }
        self.begin()?;
        self.commit(consumer)
    }
}
