//! Consumer lag per assigned partition, as the `etl_consumer_lag{topic,partition}` gauge.
//!
//! Lag is measured from the consumer's *position* (the next offset the stage will process),
//! not from committed offsets: the exactly-once stages commit offsets inside Kafka
//! transactions and sink-mysql keeps them in MySQL, so a committed-offset lag would be wrong
//! for them. Two ways to feed it:
//!
//! - [`LagReporter::report`] / [`LagReporter::spawn`]: asks the broker for the watermarks of
//!   each assigned partition (blocking, one request per partition; run it every few seconds off
//!   the poll loop). Also keeps [`Health`]'s Kafka and partition checks up to date.
//! - [`LagReporter::record_statistics`]: from a consumer context's `stats()` callback when the
//!   consumer has `statistics.interval.ms` set; no extra requests.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::observability::names;
use crate::observability::server::Health;

/// The lag of one assigned partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// Next offset the consumer will read (its position, else its committed offset, else the
    /// partition's low watermark).
    pub position: i64,
    /// The partition's end (high watermark; last stable offset in statistics).
    pub end: i64,
    /// `end - position`, never negative.
    pub lag: i64,
}

/// Publishes lag gauges and remembers which partitions it published, so a revoked partition's
/// gauge drops to 0 instead of keeping its last value.
#[derive(Debug, Default)]
pub struct LagReporter {
    published: BTreeSet<(String, i32)>,
    health: Option<Health>,
}

impl LagReporter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Also report to `health`: assigned partitions, and whether Kafka answered.
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = Some(health);
        self
    }

    /// Measures and publishes the lag of every partition assigned to `consumer`. Blocking: up
    /// to `timeout` per partition.
    pub fn report<X, C>(
        &mut self,
        consumer: &C,
        timeout: Duration,
    ) -> KafkaResult<Vec<PartitionLag>>
    where
        X: ConsumerContext + 'static,
        C: Consumer<X>,
    {
        let result = measure(consumer, timeout);
        if let Some(h) = &self.health {
            match &result {
                Ok((assigned, lags)) => {
                    h.set_assigned_partitions(*assigned);
                    if !lags.is_empty() {
                        h.set_kafka_connected(true);
                    }
                }
                Err(_) => h.set_kafka_connected(false),
            }
        }
        let (_, lags) = result?;
        self.publish(&lags);
        Ok(lags)
    }

    /// Publishes lag from librdkafka statistics (call from `ConsumerContext::stats`).
    pub fn record_statistics(&mut self, stats: &Statistics) -> Vec<PartitionLag> {
        let mut lags = Vec::new();
        for (topic, t) in &stats.topics {
            for p in t.partitions.values() {
                // -1 is librdkafka's internal "unassigned" partition; `desired` = assigned.
                if p.partition < 0 || !p.desired {
                    continue;
                }
                let end = if p.ls_offset >= 0 {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                let position = if p.app_offset >= 0 {
                    p.app_offset
                } else {
                    p.committed_offset
                };
                if end < 0 || position < 0 {
                    continue;
                }
                lags.push(PartitionLag {
                    topic: topic.clone(),
                    partition: p.partition,
                    position,
                    end,
                    lag: (end - position).max(0),
                });
            }
        }
        self.publish(&lags);
        lags
    }

    fn publish(&mut self, lags: &[PartitionLag]) {
        let now: BTreeSet<(String, i32)> = lags
            .iter()
            .map(|l| (l.topic.clone(), l.partition))
            .collect();
        for (topic, partition) in self.published.difference(&now) {
            metrics::gauge!(names::CONSUMER_LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                .set(0.0);
        }
        for l in lags {
            metrics::gauge!(names::CONSUMER_LAG, "topic" => l.topic.clone(), "partition" => l.partition.to_string())
                .set(l.lag as f64);
        }
        self.published = now;
    }

    /// Runs [`LagReporter::report`] every `every` on its own thread until `shutdown` is
    /// cancelled. Errors are logged at debug and retried next round.
    pub fn spawn<X, C>(
        mut self,
        consumer: Arc<C>,
        every: Duration,
        timeout: Duration,
        shutdown: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>>
    where
        X: ConsumerContext + 'static,
        C: Consumer<X> + Send + Sync + 'static,
    {
        std::thread::Builder::new()
            .name("etl-lag".into())
            .spawn(move || {
                while !shutdown.is_cancelled() {
                    if let Err(e) = self.report(&*consumer, timeout) {
                        tracing::debug!(error = %e, "consumer lag not measured this round");
                    }
                    let start = Instant::now();
                    while start.elapsed() < every && !shutdown.is_cancelled() {
                        std::thread::sleep(Duration::from_millis(100).min(every));
                    }
                }
            })
    }
}

/// (assigned partition count, lag of each partition whose watermarks were fetched).
fn measure<X, C>(consumer: &C, timeout: Duration) -> KafkaResult<(usize, Vec<PartitionLag>)>
where
    X: ConsumerContext + 'static,
    C: Consumer<X>,
{
    let assignment = consumer.assignment()?;
    let assigned = assignment.count();
    if assigned == 0 {
        return Ok((0, Vec::new()));
    }
    let positions = consumer.position()?;
    let mut known: Vec<(String, i32, Option<i64>)> = positions
        .elements()
        .iter()
        .map(|e| {
            let pos = match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            };
            (e.topic().to_string(), e.partition(), pos)
        })
        .collect();
    // Nothing consumed yet on some partitions: fall back to the committed offsets.
    let mut unknown = TopicPartitionList::new();
    for (t, p, pos) in &known {
        if pos.is_none() {
            unknown.add_partition(t, *p);
        }
    }
    if unknown.count() > 0 {
        if let Ok(committed) = consumer.committed_offsets(unknown, timeout) {
            for (t, p, pos) in known.iter_mut() {
                if pos.is_none() {
                    if let Some(Offset::Offset(o)) =
                        committed.find_partition(t, *p).map(|e| e.offset())
                    {
                        if o >= 0 {
                            *pos = Some(o);
                        }
                    }
                }
            }
        }
    }
    let mut lags = Vec::with_capacity(known.len());
    for (topic, partition, pos) in known {
        let (low, high) = consumer.fetch_watermarks(&topic, partition, timeout)?;
        let position = pos.unwrap_or(low).max(low);
        lags.push(PartitionLag {
            topic,
            partition,
            position,
            end: high,
            lag: (high - position).max(0),
        });
    }
    Ok((assigned, lags))
}
