//! Bounded reads of topics for the operator commands (`trace`, `status`): from the first
//! record at a time (or the start) to the end now (or the first record at a time), with a
//! read_committed consumer that joins no group.
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The time bounds of a scan (ms since the epoch).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bounds {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

/// A consumer for assigned reads (its group id is only a name: nothing is committed).
pub fn reader(cfg: &Config, what: &str) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
    let mut cc =
        crate::kafka::consumer_config(&cfg.kafka, &format!("{}.{what}", cfg.pipeline.name));
    cc.set("enable.partition.eof", "false");
    cc.create()
}

/// Reads `topic`'s `partitions` from the first record at `since` to the end now (or the first
/// record at `until`), calling `f` for each message; returns how many were read.
pub fn scan(
    c: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    b: Bounds,
    progress: bool,
    f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, rdkafka::error::KafkaError> {
    let mut ranges = Vec::new();
    for &p in partitions {
        let (low, high) = c.fetch_watermarks(topic, p, TIMEOUT)?;
        let start = at_time(c, topic, p, b.since_ms, low)?;
        let end = match b.until_ms {
            Some(u) => at_time(c, topic, p, Some(u), high)?.min(high),
            None => high,
        };
        ranges.push((p, start, end));
    }
    read_ranges(c, topic, &ranges, progress, f)
}

/// The last `n` offsets of each of `partitions` (fewer where the partition holds fewer).
pub fn tail(
    c: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    n: i64,
    f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, rdkafka::error::KafkaError> {
    let mut ranges = Vec::new();
    for &p in partitions {
        let (low, high) = c.fetch_watermarks(topic, p, TIMEOUT)?;
        ranges.push((p, (high - n).max(low), high));
    }
    read_ranges(c, topic, &ranges, false, f)
}

/// Reads each (partition, start, end) range; the last offsets may be transaction markers,
/// which no poll returns: a partition whose position reached its end is done.
fn read_ranges(
    c: &BaseConsumer,
    topic: &str,
    ranges: &[(i32, i64, i64)],
    progress: bool,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, rdkafka::error::KafkaError> {
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::BTreeMap::new();
    for &(p, start, end) in ranges {
        if start < end {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            ends.insert(p, end);
        }
    }
    if ends.is_empty() {
        return Ok(0);
    }
    let total: i64 = ends.values().sum::<i64>();
    c.assign(&tpl)?;
    let mut n = 0u64;
    let mut idle = 0;
    while !ends.is_empty() && idle < 50 {
        match c.poll(Duration::from_millis(200)) {
            None => {
                idle += 1;
                if let Ok(pos) = c.position() {
                    for e in pos.elements() {
                        if let (Offset::Offset(o), Some(end)) =
                            (e.offset(), ends.get(&e.partition()))
                        {
                            if o >= *end {
                                ends.remove(&e.partition());
                            }
                        }
                    }
                }
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(m)) => {
                idle = 0;
                let end = ends.get(&m.partition()).copied().unwrap_or(0);
                if m.offset() < end {
                    n += 1;
                    f(&m);
                    if progress && n % 50_000 == 0 {
                        eprintln!("  … {topic}: {n} messages read (≤ {total} offsets)");
                    }
                }
                if m.offset() + 1 >= end {
                    ends.remove(&m.partition());
                }
            }
        }
    }
    c.unassign()?;
    Ok(n)
}

/// The first offset at or after `ms`, `default` without a time (or past the end).
fn at_time(
    c: &BaseConsumer,
    topic: &str,
    p: i32,
    ms: Option<i64>,
    default: i64,
) -> Result<i64, rdkafka::error::KafkaError> {
    let Some(ms) = ms else { return Ok(default) };
    let mut q = TopicPartitionList::new();
    q.add_partition_offset(topic, p, Offset::Offset(ms))?;
    let r = c.offsets_for_times(q, TIMEOUT)?;
    Ok(match r.find_partition(topic, p).map(|e| e.offset()) {
        Some(Offset::Offset(o)) => o,
        _ => c.fetch_watermarks(topic, p, TIMEOUT)?.1,
    })
}
