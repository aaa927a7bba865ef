//! Topic names by role, their partitions, replication, retention and cleanup policy.
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Delete or compact, as Kafka's `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    Delete,
    Compact,
}

impl CleanupPolicy {
    pub fn as_kafka(&self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
        }
    }
}

/// Per-topic overrides; anything left out comes from the topic's role and `[topics]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicOverride {
    /// Topic name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Partition count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Replication factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
    /// Retention (`retention.ms`); "forever" keeps everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// `delete` or `compact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_policy: Option<CleanupPolicy>,
}

/// The roles a topic plays in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRole {
    Raw,
    Cleaned,
    Scored,
    DeadLetter,
    Quarantine,
    Quality,
    Logs,
    ExtractState,
    /// Compacted store of the score stage's baseline (one record per pipeline).
    ScoreBaseline,
}

impl TopicRole {
    pub const ALL: [TopicRole; 9] = [
        TopicRole::Raw,
        TopicRole::Cleaned,
        TopicRole::Scored,
        TopicRole::DeadLetter,
        TopicRole::Quarantine,
        TopicRole::Quality,
        TopicRole::Logs,
        TopicRole::ExtractState,
        TopicRole::ScoreBaseline,
    ];

    /// The roles whose values are Avro records (cleaned and scored): their subjects
    /// (`<topic>-value`) are the ones in the schema registry.
    pub const AVRO: [TopicRole; 2] = [TopicRole::Cleaned, TopicRole::Scored];

    /// The config key of the role under `[topics]`.
    pub fn key(&self) -> &'static str {
        match self {
            TopicRole::Raw => "raw",
            TopicRole::Cleaned => "cleaned",
            TopicRole::Scored => "scored",
            TopicRole::DeadLetter => "dead_letter",
            TopicRole::Quarantine => "quarantine",
            TopicRole::Quality => "quality",
            TopicRole::Logs => "logs",
            TopicRole::ExtractState => "extract_state",
            TopicRole::ScoreBaseline => "score_baseline",
        }
    }

    /// The default name's part after `<pipeline.name>.`.
    fn default_suffix(&self) -> &'static str {
        match self {
            TopicRole::Raw => "raw",
            TopicRole::Cleaned => "cleaned",
            TopicRole::Scored => "scored",
            TopicRole::DeadLetter => "dead-letter",
            TopicRole::Quarantine => "quarantine",
            TopicRole::Quality => "quality",
            TopicRole::Logs => "logs",
            TopicRole::ExtractState => "extract-state",
            TopicRole::ScoreBaseline => "score-baseline",
        }
    }
}

/// A fully resolved topic specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub role: TopicRole,
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// `None` = keep forever (`retention.ms=-1`).
    pub retention: Option<Duration>,
    pub cleanup_policy: CleanupPolicy,
}

impl TopicSpec {
    pub fn retention_ms(&self) -> i64 {
        self.retention.map(|d| d.as_millis() as i64).unwrap_or(-1)
    }
}

/// The default names' prefix when no pipeline name is known (the default `pipeline.name`).
pub const DEFAULT_PREFIX: &str = "etl-pipe";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// The default names' prefix: `pipeline.name`, set when the config is assembled (topics
    /// default to `<pipeline.name>.<role>`, so two pipelines never share topics by accident).
    #[serde(skip)]
    pub prefix: Option<String>,
    /// Default partition count of data topics.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Default replication factor (1 on the local single broker, 3 in production).
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Default retention of data topics.
    #[serde(default = "default_retention")]
    pub retention: String,
    #[serde(default)]
    pub raw: TopicOverride,
    #[serde(default)]
    pub cleaned: TopicOverride,
    #[serde(default)]
    pub scored: TopicOverride,
    #[serde(default)]
    pub dead_letter: TopicOverride,
    #[serde(default)]
    pub quarantine: TopicOverride,
    #[serde(default)]
    pub quality: TopicOverride,
    #[serde(default)]
    pub logs: TopicOverride,
    /// Compacted topic holding the extractor's checkpoints.
    #[serde(default)]
    pub extract_state: TopicOverride,
    /// Compacted topic holding the score stage's baseline (built from the first records).
    #[serde(default)]
    pub score_baseline: TopicOverride,
}

fn default_partitions() -> i32 {
    3
}
fn default_replication() -> i32 {
    1
}
fn default_retention() -> String {
    "7days".into()
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            prefix: None,
            partitions: default_partitions(),
            replication_factor: default_replication(),
            retention: default_retention(),
            raw: Default::default(),
            cleaned: Default::default(),
            scored: Default::default(),
            dead_letter: Default::default(),
            quarantine: Default::default(),
            quality: Default::default(),
            logs: Default::default(),
            extract_state: Default::default(),
            score_baseline: Default::default(),
        }
    }
}

fn parse_retention(key: &str, s: &str) -> Result<Option<Duration>, ConfigError> {
    if s.eq_ignore_ascii_case("forever") || s == "-1" {
        return Ok(None);
    }
    humantime::parse_duration(s).map(Some).map_err(|e| {
        ConfigError::key(
            key,
            format!("`{s}` is not a duration ({e}); use e.g. \"7days\" or \"forever\""),
        )
    })
}

impl TopicsConfig {
    fn override_for(&self, role: TopicRole) -> &TopicOverride {
        match role {
            TopicRole::Raw => &self.raw,
            TopicRole::Cleaned => &self.cleaned,
            TopicRole::Scored => &self.scored,
            TopicRole::DeadLetter => &self.dead_letter,
            TopicRole::Quarantine => &self.quarantine,
            TopicRole::Quality => &self.quality,
            TopicRole::Logs => &self.logs,
            TopicRole::ExtractState => &self.extract_state,
            TopicRole::ScoreBaseline => &self.score_baseline,
        }
    }

    /// Names the topic of a role (benchmarks and tests give every run its own topics).
    pub fn set_name(&mut self, role: TopicRole, name: String) {
        let o = match role {
            TopicRole::Raw => &mut self.raw,
            TopicRole::Cleaned => &mut self.cleaned,
            TopicRole::Scored => &mut self.scored,
            TopicRole::DeadLetter => &mut self.dead_letter,
            TopicRole::Quarantine => &mut self.quarantine,
            TopicRole::Quality => &mut self.quality,
            TopicRole::Logs => &mut self.logs,
            TopicRole::ExtractState => &mut self.extract_state,
            TopicRole::ScoreBaseline => &mut self.score_baseline,
        };
        o.name = Some(name);
    }

    /// The topic name of a role.
    pub fn name(&self, role: TopicRole) -> String {
        self.override_for(role).name.clone().unwrap_or_else(|| {
            format!(
                "{}.{}",
                self.prefix.as_deref().unwrap_or(DEFAULT_PREFIX),
                role.default_suffix()
            )
        })
    }

    /// The resolved spec of a role (call after `validate`, which checks the retention strings).
    pub fn spec(&self, role: TopicRole) -> Result<TopicSpec, ConfigError> {
        let o = self.override_for(role);
        let key = format!("topics.{}", role.key());
        let (default_retention, default_policy, default_partitions) = match role {
            // Dead letters and quarantine are evidence: keep them longer than data.
            TopicRole::DeadLetter | TopicRole::Quarantine => (
                Some(Duration::from_secs(30 * 86_400)),
                CleanupPolicy::Delete,
                self.partitions,
            ),
            // Checkpoints: the latest value per key, kept forever.
            TopicRole::ExtractState | TopicRole::ScoreBaseline => (None, CleanupPolicy::Compact, 1),
            _ => (
                parse_retention("topics.retention", &self.retention)?,
                CleanupPolicy::Delete,
                self.partitions,
            ),
        };
        let retention = match &o.retention {
            Some(s) => parse_retention(&format!("{key}.retention"), s)?,
            None => default_retention,
        };
        Ok(TopicSpec {
            role,
            name: self.name(role),
            partitions: o.partitions.unwrap_or(default_partitions),
            replication_factor: o.replication_factor.unwrap_or(self.replication_factor),
            retention,
            cleanup_policy: o.cleanup_policy.unwrap_or(default_policy),
        })
    }

    /// Every topic of the pipeline, resolved.
    pub fn all(&self) -> Result<Vec<TopicSpec>, ConfigError> {
        TopicRole::ALL.iter().map(|r| self.spec(*r)).collect()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.partitions < 1 {
            return Err(ConfigError::key("topics.partitions", "must be at least 1"));
        }
        if self.replication_factor < 1 {
            return Err(ConfigError::key(
                "topics.replication_factor",
                "must be at least 1",
            ));
        }
        let specs = self.all()?;
        let mut seen: BTreeMap<String, &'static str> = BTreeMap::new();
        for s in &specs {
            let key = format!("topics.{}", s.role.key());
            if s.partitions < 1 {
                return Err(ConfigError::key(
                    format!("{key}.partitions"),
                    "must be at least 1",
                ));
            }
            if s.replication_factor < 1 {
                return Err(ConfigError::key(
                    format!("{key}.replication_factor"),
                    "must be at least 1",
                ));
            }
            if s.name.is_empty()
                || s.name.len() > 249
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(ConfigError::key(
                    format!("{key}.name"),
                    format!("`{}` is not a valid Kafka topic name (letters, digits, '.', '_', '-'; at most 249)", s.name),
                ));
            }
            if let Some(other) = seen.insert(s.name.clone(), s.role.key()) {
                return Err(ConfigError::key(
                    format!("{key}.name"),
                    format!(
                        "`{}` is also the name of topics.{other}; each role needs its own topic",
                        s.name
                    ),
                ));
            }
        }
        Ok(())
    }
}
