//! `etl-pipe replay`: move a stage's consumer-group position (and, for `sink-mysql`, the
//! offsets table it really resumes from) to the earliest or latest offset, given offsets, a
//! point in time, or a shift. Dry run by default; refuses while the group has live members.
use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{Config, TopicRole};

const TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("consumer group `{group}` has {members} live member(s) ({clients}); stop every instance of the stage, then replay (an instance killed without a clean shutdown stays a member until its session times out: `kafka.session_timeout`, 45 s by default)")]
    LiveMembers {
        group: String,
        members: usize,
        clients: String,
    },
    #[error(transparent)]
    Metadata(#[from] crate::kafka::MetadataError),
    #[error("{0}")]
    Invalid(String),
    #[error("mysql offsets table: {0}")]
    Mysql(String),
}

/// A stage that can be replayed, with the consumer group and topic it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    Clean,
    Score,
    SinkMysql,
    SinkMongo,
}

impl Stage {
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Clean => "clean",
            Stage::Score => "score",
            Stage::SinkMysql => "sink-mysql",
            Stage::SinkMongo => "sink-mongo",
        }
    }
    pub fn input(&self) -> TopicRole {
        match self {
            Stage::Clean => TopicRole::Raw,
            Stage::Score => TopicRole::Cleaned,
            Stage::SinkMysql | Stage::SinkMongo => TopicRole::Scored,
        }
    }
}

/// Where to move to.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Earliest,
    Latest,
    /// partition → offset
    Offsets(BTreeMap<i32, i64>),
    /// Milliseconds since the epoch: the first offset at or after this time.
    Timestamp(i64),
    /// Relative to the current position (negative = back).
    ShiftBy(i64),
}

/// Parses `0:100,1:250`.
pub fn parse_offsets(s: &str) -> Result<BTreeMap<i32, i64>, ReplayError> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (p, o) = part
            .split_once(':')
            .ok_or_else(|| ReplayError::Invalid(format!("`{part}`: expected PARTITION:OFFSET")))?;
        let p: i32 = p
            .parse()
            .map_err(|_| ReplayError::Invalid(format!("`{part}`: partition is not a number")))?;
        let o: i64 = o
            .parse()
            .map_err(|_| ReplayError::Invalid(format!("`{part}`: offset is not a number")))?;
        if p < 0 || o < 0 {
            return Err(ReplayError::Invalid(format!(
                "`{part}`: partition and offset must be >= 0"
            )));
        }
        out.insert(p, o);
    }
    if out.is_empty() {
        return Err(ReplayError::Invalid(
            "--to-offset needs at least one PARTITION:OFFSET".into(),
        ));
    }
    Ok(out)
}

/// Parses an RFC 3339 time (`2026-11-28T10:00:00Z`) or a date (`2026-11-28`, midnight UTC).
pub fn parse_datetime(s: &str) -> Result<i64, ReplayError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(ReplayError::Invalid(format!(
        "`{s}` is not a time: use RFC 3339 like 2026-11-28T10:00:00Z, or a date like 2026-11-28"
    )))
}

/// One partition of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    pub partition: i32,
    /// The position the stage resumes from today (`None` = no committed position: it starts at `low`).
    pub current: Option<i64>,
    pub target: i64,
    pub low: i64,
    pub high: i64,
}

impl PartitionPlan {
    /// Records from the target to the end of the partition: what the stage will (re)process.
    pub fn to_process(&self) -> i64 {
        (self.high - self.target).max(0)
    }
    /// Records processed before that will be processed again (positive) or skipped (negative).
    pub fn delta(&self) -> i64 {
        self.current.unwrap_or(self.low) - self.target
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub stage: Stage,
    pub group: String,
    pub topic: String,
    pub partitions: Vec<PartitionPlan>,
}

fn consumer(cfg: &Config, group: &str) -> Result<BaseConsumer, ReplayError> {
    let mut c = crate::kafka::consumer_config(&cfg.kafka, group);
    c.set("enable.partition.eof", "false");
    Ok(c.create()?)
}

/// Refuses while the group has members (a running stage would overwrite the new position).
pub fn check_no_live_members(consumer: &BaseConsumer, group: &str) -> Result<(), ReplayError> {
    let groups = consumer.fetch_group_list(Some(group), TIMEOUT)?;
    for g in groups.groups() {
        if g.name() == group && !g.members().is_empty() {
            let clients: Vec<String> = g
                .members()
                .iter()
                .map(|m| format!("{}@{}", m.client_id(), m.client_host()))
                .collect();
            return Err(ReplayError::LiveMembers {
                group: group.into(),
                members: g.members().len(),
                clients: clients.join(", "),
            });
        }
    }
    Ok(())
}

/// Works out, per partition, the current and target offsets. `current_override` supplies the
/// positions a stage really resumes from when they are not Kafka's (the sink-mysql offsets table).
pub fn plan(
    cfg: &Config,
    stage: Stage,
    target: &Target,
    only_partitions: Option<&[i32]>,
    current_override: Option<&BTreeMap<i32, i64>>,
) -> Result<Plan, ReplayError> {
    let group = cfg.pipeline.group_id(stage.name());
    let topic = cfg.topics.name(stage.input());
    let consumer = consumer(cfg, &group)?;
    let all = crate::kafka::partitions(consumer.client(), &topic, TIMEOUT)?;
    let partitions = select_partitions(&topic, all, only_partitions, target)?;

    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(&topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, TIMEOUT)?;
    let times = if let Target::Timestamp(ms) = target {
        let mut q = TopicPartitionList::new();
        for p in &partitions {
            q.add_partition_offset(&topic, *p, Offset::Offset(*ms))?;
        }
        Some(consumer.offsets_for_times(q, TIMEOUT)?)
    } else {
        None
    };

    let mut out = Vec::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(&topic, p, TIMEOUT)?;
        let current = match current_override {
            Some(m) => m.get(&p).copied(),
            None => committed
                .find_partition(&topic, p)
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0),
        };
        let target_offset = match target {
            Target::Earliest => low,
            Target::Latest => high,
            Target::Offsets(m) => m.get(&p).copied().unwrap_or(low),
            Target::ShiftBy(n) => current.unwrap_or(low).saturating_add(*n),
            Target::Timestamp(_) => times
                .as_ref()
                .and_then(|t| t.find_partition(&topic, p))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                // No record at or after that time: nothing to reprocess.
                .unwrap_or(high),
        };
        out.push(PartitionPlan {
            partition: p,
            current,
            target: target_offset.clamp(low, high),
            low,
            high,
        });
    }
    Ok(Plan {
        stage,
        group,
        topic,
        partitions: out,
    })
}

/// The plan as a table a person reads.
pub fn render(plan: &Plan) -> String {
    let mut s = format!(
        "stage {} · group {} · topic {}\n{:>9} {:>12} {:>12} {:>12} {:>12} {:>14}\n",
        plan.stage.name(),
        plan.group,
        plan.topic,
        "partition",
        "current",
        "target",
        "log start",
        "log end",
        "to process"
    );
    let mut total = 0;
    for p in &plan.partitions {
        total += p.to_process();
        s.push_str(&format!(
            "{:>9} {:>12} {:>12} {:>12} {:>12} {:>14}\n",
            p.partition,
            p.current
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            p.target,
            p.low,
            p.high,
            p.to_process()
        ));
    }
    s.push_str(&format!(
        "total records the stage will process from the new position: {total}\n"
    ));
    s
}

/// The partitions a plan covers: all, or those of `--partition`, or those `--to-offset` names.
fn select_partitions(
    topic: &str,
    mut partitions: Vec<i32>,
    only_partitions: Option<&[i32]>,
    target: &Target,
) -> Result<Vec<i32>, ReplayError> {
    if let Some(only) = only_partitions {
        for p in only {
            if !partitions.contains(p) {
                return Err(ReplayError::Invalid(format!(
                    "topic {topic} has no partition {p}"
                )));
            }
        }
        partitions.retain(|p| only.contains(p));
    }
    if let Target::Offsets(m) = target {
        for p in m.keys() {
            if !partitions.contains(p) {
                return Err(ReplayError::Invalid(format!(
                    "--to-offset names partition {p}, which is not replayed here"
                )));
            }
        }
        partitions.retain(|p| m.contains_key(p));
    }
    Ok(partitions)
}

/// Moves the Kafka group offsets to the plan's targets. Fails if the group came alive meanwhile.
pub fn execute_kafka(cfg: &Config, plan: &Plan) -> Result<(), ReplayError> {
    let consumer = consumer(cfg, &plan.group)?;
    check_no_live_members(&consumer, &plan.group)?;
    let mut tpl = TopicPartitionList::new();
    for p in &plan.partitions {
        tpl.add_partition_offset(&plan.topic, p.partition, Offset::Offset(p.target))?;
    }
    consumer.commit(&tpl, CommitMode::Sync)?;
    Ok(())
}

/// Checks for live members before planning (so a dry run says it too).
pub fn preflight(cfg: &Config, stage: Stage) -> Result<(), ReplayError> {
    let group = cfg.pipeline.group_id(stage.name());
    let consumer = consumer(cfg, &group)?;
    check_no_live_members(&consumer, &group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_and_times() {
        let m = parse_offsets("0:10, 2:5").unwrap();
        assert_eq!(m.get(&0), Some(&10));
        assert_eq!(m.get(&2), Some(&5));
        assert!(parse_offsets("x").is_err());
        assert!(parse_offsets("0:-1").is_err());
        assert_eq!(parse_datetime("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(parse_datetime("1970-01-02").unwrap(), 86_400_000);
        assert!(parse_datetime("yesterday").is_err());
    }

    #[test]
    fn plan_counts() {
        let p = PartitionPlan {
            partition: 0,
            current: Some(80),
            target: 50,
            low: 10,
            high: 100,
        };
        assert_eq!(p.to_process(), 50);
        assert_eq!(p.delta(), 30);
    }
}
