//! `etl-pipe status`: what is in each topic and how far behind each stage is — the
//! command-line view of what Kafdrop shows.
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;

use crate::config::{Config, TopicRole};

const TIMEOUT: Duration = Duration::from_secs(10);

/// One topic's size.
#[derive(Debug, Clone)]
pub struct TopicStatus {
    pub role: TopicRole,
    pub name: String,
    pub partitions: usize,
    /// Sum over partitions of (end − start): retained records, transaction markers included.
    pub offsets: i64,
    pub exists: bool,
}

/// One stage's consumer group.
#[derive(Debug, Clone)]
pub struct GroupStatus {
    pub stage: &'static str,
    pub group: String,
    pub topic: String,
    pub members: usize,
    /// Sum over partitions of (end − committed); `None` when nothing was committed yet.
    pub lag: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub topics: Vec<TopicStatus>,
    pub groups: Vec<GroupStatus>,
}

/// The consuming stages, their group names and input topics.
pub const STAGES: [(&str, TopicRole); 4] = [
    ("clean", TopicRole::Raw),
    ("score", TopicRole::Cleaned),
    ("sink-mysql", TopicRole::Scored),
    ("sink-mongo", TopicRole::Scored),
];

pub fn collect(cfg: &Config) -> Result<Status, rdkafka::error::KafkaError> {
    let consumer: BaseConsumer =
        crate::kafka::consumer_config(&cfg.kafka, &format!("{}.status", cfg.pipeline.name))
            .create()?;
    let md = consumer.fetch_metadata(None, TIMEOUT)?;
    let mut topics = Vec::new();
    for role in TopicRole::ALL {
        let name = cfg.topics.name(role);
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none());
        let mut offsets = 0;
        let partitions = t.map(|t| t.partitions().len()).unwrap_or(0);
        if let Some(t) = t {
            for p in t.partitions() {
                let (lo, hi) = consumer.fetch_watermarks(&name, p.id(), TIMEOUT)?;
                offsets += hi - lo;
            }
        }
        topics.push(TopicStatus {
            role,
            name,
            partitions,
            offsets,
            exists: t.is_some(),
        });
    }
    let mut groups = Vec::new();
    for (stage, role) in STAGES {
        let group = cfg.pipeline.group_id(stage);
        let topic = cfg.topics.name(role);
        let members = consumer
            .fetch_group_list(Some(&group), TIMEOUT)?
            .groups()
            .iter()
            .find(|g| g.name() == group)
            .map(|g| g.members().len())
            .unwrap_or(0);
        let Some(t) = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
        else {
            groups.push(GroupStatus {
                stage,
                group,
                topic,
                members,
                lag: None,
            });
            continue;
        };
        let mut tpl = TopicPartitionList::new();
        for p in t.partitions() {
            tpl.add_partition(&topic, p.id());
        }
        let gc: BaseConsumer = crate::kafka::consumer_config(&cfg.kafka, &group).create()?;
        let committed = gc.committed_offsets(tpl, TIMEOUT)?;
        let mut lag = None;
        for p in t.partitions() {
            let (lo, hi) = consumer.fetch_watermarks(&topic, p.id(), TIMEOUT)?;
            let c = committed
                .find_partition(&topic, p.id())
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0);
            if let Some(c) = c {
                *lag.get_or_insert(0) += (hi - c.max(lo)).max(0);
            } else if hi > lo {
                *lag.get_or_insert(0) += hi - lo;
            }
        }
        groups.push(GroupStatus {
            stage,
            group,
            topic,
            members,
            lag,
        });
    }
    Ok(Status { topics, groups })
}

pub fn render(s: &Status) -> String {
    let mut out = String::from("TOPICS\n");
    out.push_str(&format!(
        "  {:<13} {:<34} {:>10} {:>12}\n",
        "role", "topic", "partitions", "offsets"
    ));
    for t in &s.topics {
        if t.exists {
            out.push_str(&format!(
                "  {:<13} {:<34} {:>10} {:>12}\n",
                t.role.key(),
                t.name,
                t.partitions,
                t.offsets
            ));
        } else {
            out.push_str(&format!(
                "  {:<13} {:<34} {:>10}\n",
                t.role.key(),
                t.name,
                "missing (run `etl-pipe topics apply`)"
            ));
        }
    }
    out.push_str("\nSTAGES (consumer groups)\n");
    out.push_str(&format!(
        "  {:<11} {:<36} {:>8} {:>10}\n",
        "stage", "group", "members", "lag"
    ));
    for g in &s.groups {
        out.push_str(&format!(
            "  {:<11} {:<36} {:>8} {:>10}\n",
            g.stage,
            g.group,
            g.members,
            g.lag.map(|l| l.to_string()).unwrap_or_else(|| "-".into())
        ));
    }
    out.push_str("\n(offsets include transaction markers, so lag may read 1 per partition on an idle transactional topic)\n");
    out
}
