//! The rebalance context: the consumer context shares the engine with the loop, so that the
//! revoke callback (run inside `poll`, on the loop's thread) commits the transaction in hand
//! before librdkafka gives the partitions up — or aborts it when the partitions are lost.
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::TopicPartitionList;

use super::engine::{describe, lock, Engine, Txn};
use super::failure::Failure;
use super::watchdog::Phase;
use super::Transform;

pub(super) struct Ctx<T: Transform> {
    pub(super) engine: Arc<Mutex<Engine<T>>>,
}

impl<T: Transform> ClientContext for Ctx<T> {}

impl<T: Transform> ConsumerContext for Ctx<T> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.revoke(consumer, tpl),
            Rebalance::Assign(tpl) => {
                let eng = lock(&self.engine);
                let assigned = partitions(tpl);
                tracing::info!(stage = eng.stage, partitions = %describe(&assigned), "partitions assigned");
            }
            Rebalance::Error(e) => {
                let eng = lock(&self.engine);
                tracing::warn!(stage = eng.stage, error = %e, "rebalance error");
            }
        }
    }
}

impl<T: Transform> Ctx<T> {
    /// Commits the transaction in hand (aborts it when the partitions are lost), then forgets
    /// the revoked partitions' positions and transform state.
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let revoked = partitions(tpl);
        let lost = consumer.assignment_lost();
        let mut eng = lock(&self.engine);
        tracing::info!(
            stage = eng.stage,
            partitions = %describe(&revoked),
            lost,
            "partitions revoked"
        );
        if eng.txn == Txn::Open && eng.fatal.is_none() {
            eng.watch.enter(Phase::Revoke);
            if lost {
                eng.fail(Failure::Abort(
                    "partitions lost (session timed out): the transaction in hand \
                     cannot be committed"
                        .into(),
                ));
            } else if let Err(f) = eng.commit(consumer) {
                eng.fail(f);
            }
        }
        eng.positions
            .retain(|(t, p, _)| !revoked.iter().any(|(rt, rp)| rt == t && rp == p));
        eng.committed
            .retain(|(t, p), _| !revoked.iter().any(|(rt, rp)| rt == t && rp == p));
        eng.transform.reset(&revoked);
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}
