//! The rebalance callback: on assignment, ask the writer where each new partition starts and
//! assign it there before any record of it is fetched; on revocation, let the partitions'
//! batches in flight finish (bounded), commit them, and drop what is buffered.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::commit::{commit_written, Commit};
use super::context::{Driver, SinkContext};
use super::state::{PartState, State};
use super::BatchWriter;
use crate::stages::sinks::{metric, SinkError};

impl<W: BatchWriter> ConsumerContext for SinkContext<W> {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let parts: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.on_assign(consumer, tpl, &parts, cooperative)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.on_revoke(consumer, tpl, &parts, cooperative)
            }
            other => {
                tracing::error!(error = ?other, "rebalance error; dropping the assignment");
                let _ = consumer.unassign();
                self.queues().clear();
                let mut st = self.lock();
                for (_, ps) in st.parts.drain() {
                    ps.revoked.cancel();
                }
            }
        }
    }
}

impl<W: BatchWriter> SinkContext<W> {
    fn on_assign(
        &self,
        consumer: &Driver<W>,
        tpl: &mut TopicPartitionList,
        parts: &[i32],
        cooperative: bool,
    ) {
        let starts = self.read_start_offsets(parts);
        let mut st = self.lock();
        let mut blocked = false;
        let mut expected: HashMap<i32, i64> = HashMap::new();
        match starts {
            Ok(Some(map)) => {
                self.set_start_offsets(tpl, parts, &map);
                expected = map;
            }
            Ok(None) => {}
            Err(e) => {
                blocked = true;
                if !matches!(e, SinkError::Stopped) {
                    st.fatal.get_or_insert(e);
                }
            }
        }
        // Before the assignment starts fetching: records fetched earlier would sit in the
        // consumer's queue, ahead of the partition's own.
        self.split(parts);
        let r = if cooperative {
            consumer.incremental_assign(tpl)
        } else {
            consumer.assign(tpl)
        };
        if let Err(e) = r {
            st.fatal.get_or_insert(SinkError::Fatal {
                what: "assigning partitions",
                message: e.to_string(),
            });
        }
        add_partitions(&mut st, parts, blocked, &expected);
        if blocked || st.stopping {
            let _ = consumer.pause(tpl);
        }
        let starts: Vec<String> = parts
            .iter()
            .map(|p| match expected.get(p) {
                Some(o) => format!("{p}@{o}"),
                None => format!("{p}@start"),
            })
            .collect();
        tracing::info!(topic = %self.topic, partitions = ?starts, "partitions assigned");
        metrics::gauge!(metric::ASSIGNED_PARTITIONS).set(st.parts.len() as f64);
    }

    /// Asks the writer where the new partitions start (retried until the hard stop).
    fn read_start_offsets(&self, parts: &[i32]) -> Result<Option<HashMap<i32, i64>>, SinkError> {
        if parts.is_empty() {
            return Ok(None);
        }
        let writer = self.writer.clone();
        let topic = self.topic.clone();
        let p = parts.to_vec();
        self.handle.block_on(super::super::retry(
            "reading stored offsets",
            self.retry_max_backoff,
            &self.stop,
            || writer.start_offsets(&topic, &p),
        ))
    }

    /// Points each partition of the assignment at its stored offset (absent: the beginning).
    fn set_start_offsets(
        &self,
        tpl: &mut TopicPartitionList,
        parts: &[i32],
        map: &HashMap<i32, i64>,
    ) {
        for &p in parts {
            let off = map
                .get(&p)
                .map(|o| Offset::Offset(*o))
                .unwrap_or(Offset::Beginning);
            if let Err(e) = tpl.set_partition_offset(&self.topic, p, off) {
                tracing::error!(partition = p, error = %e, "cannot set start offset");
            }
        }
    }

    fn on_revoke(
        &self,
        consumer: &Driver<W>,
        tpl: &TopicPartitionList,
        parts: &[i32],
        cooperative: bool,
    ) {
        // Let the batches in flight for these partitions finish, so their new owner starts
        // where they end (a batch that outlives this wait is still safe: see Outcome::Fenced).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let busy = {
                let st = self.lock();
                parts
                    .iter()
                    .any(|p| st.parts.get(p).is_some_and(|ps| ps.inflight))
            };
            if !busy || Instant::now() >= deadline {
                break;
            }
            let next = {
                let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
                rx.recv_timeout(Duration::from_millis(100))
            };
            if let Ok(c) = next {
                let mut st = self.lock();
                self.complete(consumer, &mut st, c);
            }
        }
        let mut st = self.lock();
        if !consumer.assignment_lost() {
            commit_written(consumer, &self.topic, &mut st, parts, Commit::Latest);
        }
        {
            let mut queues = self.queues();
            for p in parts {
                queues.remove(p);
            }
        }
        for p in parts {
            if let Some(ps) = st.parts.remove(p) {
                if ps.inflight {
                    tracing::warn!(
                        partition = p,
                        "revoked while its batch is still being written: the batch is cancelled; the new owner writes it again"
                    );
                }
                // The batch's task may be retrying still: stop it, so it cannot write after the
                // new owner (and for Mongo overwrite newer documents).
                ps.revoked.cancel();
            }
        }
        let r = if cooperative {
            consumer.incremental_unassign(tpl)
        } else {
            consumer.unassign()
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "unassigning partitions");
        }
        tracing::info!(topic = %self.topic, partitions = ?parts, "partitions revoked");
        metrics::gauge!(metric::ASSIGNED_PARTITIONS).set(st.parts.len() as f64);
    }
}

/// Starts the state of newly assigned partitions, each under a new epoch (a completion of an
/// earlier assignment of the same partition is then ignored).
fn add_partitions(st: &mut State, parts: &[i32], blocked: bool, expected: &HashMap<i32, i64>) {
    for &p in parts {
        st.next_epoch += 1;
        let epoch = st.next_epoch;
        let old = st.parts.insert(
            p,
            PartState {
                epoch,
                blocked,
                expected: expected.get(&p).copied(),
                ..Default::default()
            },
        );
        if let Some(old) = old {
            old.revoked.cancel();
        }
    }
}
