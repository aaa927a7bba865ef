//! Typed configuration: one TOML file, every key overridable from the environment,
//! defaults for everything a local run needs, and `validate()` run at start-up.
//!
//! Environment overrides: `ETL__SECTION__KEY=value` sets `section.key` (double
//! underscores separate levels, names are lower-cased). The value is read as a TOML
//! literal when it parses as one (`6`, `true`, `"x"`, `[1, 2]`), else as a string.
//!
//! Secrets are never written in the file: a secret key holds `{ env = "VAR" }` or
//! `{ file = "/run/secrets/x" }` and is resolved at start-up; [`Secret`] never prints
//! its value.
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "ETL__";

/// A config problem, always naming the key (or file) it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
    #[error("environment variable {var} (overrides `{key}`): {message}")]
    Env {
        var: String,
        key: String,
        message: String,
    },
}

impl ConfigError {
    pub fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole pipeline configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name and instance of this pipeline: used in consumer group ids, transactional ids and logs.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Kafka connection and client settings shared by all stages.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Topic names and their settings (`etl-pipe topics apply`).
    #[serde(default)]
    pub topics: TopicsConfig,
    /// MySQL / MariaDB connection for `sink-mysql`.
    #[serde(default)]
    pub mysql: MysqlConfig,
    /// MongoDB (or FerretDB) connection for `sink-mongo`.
    #[serde(default)]
    pub mongo: MongoConfig,
    /// Data-quality thresholds and PSI settings (score stage and `etl-pipe profile`).
    #[serde(default)]
    pub quality: crate::quality::QualityConfig,
    /// Batching, target table/collection and schema of `sink-mysql` and `sink-mongo`.
    #[serde(default)]
    pub sink: crate::stages::sinks::SinkConfig,
    /// The clean stage: schema, raw → schema field mapping, batching. When present it is
    /// checked against its schema file at load; `etl-pipe clean` without it uses the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean: Option<crate::stages::clean::CleanConfig>,
    /// The score stage: windows, schemas, profiled fields, baseline. When present it is
    /// checked against its schema files at load; `etl-pipe score` without it uses the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<crate::stages::score::ScoreConfig>,
    /// Logs, the logs topic, metrics and the health server (`crate::observability`).
    #[serde(default)]
    pub observability: crate::observability::ObservabilityConfig,
    /// The HTTP source of `extract`.
    #[serde(default)]
    pub extract: crate::stages::extract::config::ExtractConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Pipeline name; prefixes consumer groups (`<name>.<stage>`) and transactional ids.
    #[serde(default = "default_pipeline_name")]
    pub name: String,
    /// This process's instance id (defaults to hostname-pid); must be unique per running stage
    /// instance because it forms the transactional id.
    #[serde(default)]
    pub instance: Option<String>,
}

fn default_pipeline_name() -> String {
    "etl-pipe".into()
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            name: default_pipeline_name(),
            instance: None,
        }
    }
}

impl PipelineConfig {
    /// The consumer group of a stage: `<pipeline>.<stage>`.
    pub fn group_id(&self, stage: &str) -> String {
        format!("{}.{}", self.name, stage)
    }

    /// The instance id: configured, or `<hostname>-<pid>`.
    pub fn instance_id(&self) -> String {
        self.instance.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "host".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Schema registry URL; when set, Avro is framed in the Confluent wire format.
    #[serde(default)]
    pub schema_registry_url: Option<String>,
    /// Transaction timeout of the exactly-once stages.
    #[serde(default = "default_txn_timeout", with = "humantime_serde")]
    pub transaction_timeout: Duration,
    /// How long a consumer that stopped heartbeating (a killed instance) keeps its partitions
    /// before the group hands them to the others: the failover time after a crash (a clean
    /// shutdown leaves at once). Brokers refuse values under `group.min.session.timeout.ms`
    /// (6 s by default).
    #[serde(default = "default_session_timeout", with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Raw librdkafka options applied to every client (e.g. `security.protocol`). Numbers and
    /// booleans are taken as their text (`ETL__KAFKA__CLIENT_OPTIONS__fetch.wait.max.ms=50`).
    #[serde(default, deserialize_with = "scalar_strings")]
    pub client_options: BTreeMap<String, String>,
}

/// A map of strings that also takes numbers and booleans, as their text: librdkafka options
/// are strings, but `fetch.wait.max.ms = 50` in TOML (or an env override) is a number.
fn scalar_strings<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        F(f64),
        B(bool),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::S(s) => s,
                Scalar::I(i) => i.to_string(),
                Scalar::F(f) => f.to_string(),
                Scalar::B(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(45)
}
fn default_txn_timeout() -> Duration {
    Duration::from_secs(60)
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            schema_registry_url: None,
            transaction_timeout: default_txn_timeout(),
            session_timeout: default_session_timeout(),
            client_options: BTreeMap::new(),
        }
    }
}

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

    fn default_name(&self) -> &'static str {
        match self {
            TopicRole::Raw => "etl.raw",
            TopicRole::Cleaned => "etl.cleaned",
            TopicRole::Scored => "etl.scored",
            TopicRole::DeadLetter => "etl.dead-letter",
            TopicRole::Quarantine => "etl.quarantine",
            TopicRole::Quality => "etl.quality",
            TopicRole::Logs => "etl.logs",
            TopicRole::ExtractState => "etl.extract-state",
            TopicRole::ScoreBaseline => "etl.score-baseline",
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
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

    /// The topic name of a role.
    pub fn name(&self, role: TopicRole) -> String {
        self.override_for(role)
            .name
            .clone()
            .unwrap_or_else(|| role.default_name().to_string())
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

    fn validate(&self) -> Result<(), ConfigError> {
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

/// Where a secret comes from: an environment variable or a file. Never the config file itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Path of a file holding the secret (trailing newline trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl SecretRef {
    pub fn from_env(var: &str) -> Self {
        Self {
            env: Some(var.into()),
            file: None,
        }
    }

    /// Checks the reference itself (exactly one source).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        match (&self.env, &self.file) {
            (Some(_), Some(_)) => Err(ConfigError::key(
                key,
                "give either `env` or `file`, not both",
            )),
            (None, None) => Err(ConfigError::key(
                key,
                "needs `env = \"VAR\"` or `file = \"/path\"`",
            )),
            _ => Ok(()),
        }
    }

    /// Reads the secret. The error names the key and the source, never a value.
    pub fn resolve(&self, key: &str) -> Result<Secret, ConfigError> {
        self.validate(key)?;
        if let Some(var) = &self.env {
            return std::env::var(var).map(Secret).map_err(|_| {
                ConfigError::key(key, format!("environment variable {var} is not set"))
            });
        }
        if let Some(path) = &self.file {
            return std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| {
                    ConfigError::key(
                        key,
                        format!("cannot read secret file {}: {e}", path.display()),
                    )
                });
        }
        Err(ConfigError::key(key, "no source"))
    }

    /// A description safe to print: where the secret comes from, and whether it is available.
    pub fn describe(&self, key: &str) -> String {
        let source = match (&self.env, &self.file) {
            (Some(v), _) => format!("env {v}"),
            (_, Some(p)) => format!("file {}", p.display()),
            _ => "no source".into(),
        };
        match self.resolve(key) {
            Ok(_) => format!("{key}: set (from {source})"),
            Err(_) => format!("{key}: NOT SET (from {source})"),
        }
    }
}

/// A resolved secret. Its `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The value itself: only for putting it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// Host of the MySQL / MariaDB server.
    #[serde(default = "default_mysql_host")]
    pub host: String,
    /// Port.
    #[serde(default = "default_mysql_port")]
    pub port: u16,
    /// User name.
    #[serde(default = "default_mysql_user")]
    pub user: String,
    /// Password (a secret: env or file).
    #[serde(default = "default_mysql_password")]
    pub password: SecretRef,
    /// Database (schema) name.
    #[serde(default = "default_mysql_database")]
    pub database: String,
}

fn default_mysql_host() -> String {
    "127.0.0.1".into()
}
fn default_mysql_port() -> u16 {
    3306
}
fn default_mysql_user() -> String {
    "etl".into()
}
fn default_mysql_password() -> SecretRef {
    SecretRef::from_env("ETL_MYSQL_PASSWORD")
}
fn default_mysql_database() -> String {
    "etl".into()
}

impl Default for MysqlConfig {
    fn default() -> Self {
        Self {
            host: default_mysql_host(),
            port: default_mysql_port(),
            user: default_mysql_user(),
            password: default_mysql_password(),
            database: default_mysql_database(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// Connection string without credentials (e.g. `mongodb://127.0.0.1:27017`).
    #[serde(default = "default_mongo_uri")]
    pub uri: String,
    /// Optional password secret; the user goes in `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// Optional user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Database name.
    #[serde(default = "default_mongo_database")]
    pub database: String,
}

fn default_mongo_uri() -> String {
    "mongodb://127.0.0.1:27017".into()
}
fn default_mongo_database() -> String {
    "etl".into()
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            uri: default_mongo_uri(),
            password: None,
            user: None,
            database: default_mongo_database(),
        }
    }
}

impl Config {
    /// Loads the file (if any), applies `ETL__*` environment overrides, deserializes and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        let label = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(none)".into());
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Self::from_toml_with_env(&text, &label, &env)
    }

    /// Parses config text with the given environment overrides (testable without touching the process env).
    pub fn from_toml_with_env(
        text: &str,
        label: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut root: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: label.to_string(),
                    message: e.to_string(),
                })?;
        for (var, value) in env {
            apply_env_override(&mut root, var, value)?;
        }
        let cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Key {
                    key: if key == "." {
                        "(top level)".into()
                    } else {
                        key
                    },
                    message: e.into_inner().to_string(),
                }
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects contradictions, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.pipeline.name.is_empty()
            || !self
                .pipeline
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(ConfigError::key(
                "pipeline.name",
                "must be non-empty letters, digits, '.', '_' or '-'",
            ));
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(ConfigError::key(
                "kafka.brokers",
                "must name at least one broker",
            ));
        }
        if self.kafka.transaction_timeout < Duration::from_secs(1) {
            return Err(ConfigError::key(
                "kafka.transaction_timeout",
                "must be at least 1s",
            ));
        }
        if self.kafka.session_timeout < Duration::from_secs(1)
            || self.kafka.session_timeout > Duration::from_secs(3600)
        {
            return Err(ConfigError::key(
                "kafka.session_timeout",
                "must be between 1s and 1h (brokers refuse less than group.min.session.timeout.ms, 6s by default)",
            ));
        }
        if let Some(url) = &self.kafka.schema_registry_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::key(
                    "kafka.schema_registry_url",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        for k in self.kafka.client_options.keys() {
            if matches!(
                k.as_str(),
                "bootstrap.servers" | "transactional.id" | "group.id" | "enable.auto.commit"
            ) {
                return Err(ConfigError::key(
                    format!("kafka.client_options.{k}"),
                    "is set by etl-pipe itself and cannot be overridden here",
                ));
            }
        }
        self.topics.validate()?;
        self.quality.validate()?;
        self.observability.validate()?;
        self.mysql.password.validate("mysql.password")?;
        if self.mysql.database.is_empty()
            || !self
                .mysql
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(ConfigError::key(
                "mysql.database",
                "must be letters, digits or '_'",
            ));
        }
        if !self.mongo.uri.starts_with("mongodb://")
            && !self.mongo.uri.starts_with("mongodb+srv://")
        {
            return Err(ConfigError::key(
                "mongo.uri",
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        if self.mongo.uri.contains('@') {
            return Err(ConfigError::key(
                "mongo.uri",
                "must not carry credentials; put the user in mongo.user and the password in mongo.password (env or file)",
            ));
        }
        self.sink.validate()?;
        if let Some(p) = &self.mongo.password {
            p.validate("mongo.password")?;
            if self.mongo.user.is_none() {
                return Err(ConfigError::key(
                    "mongo.user",
                    "is required when mongo.password is set",
                ));
            }
        }
        if let Some(clean) = &self.clean {
            clean.validate(self.kafka.transaction_timeout)?;
        }
        if let Some(score) = &self.score {
            score.validate(self)?;
        }
        self.extract.validate()?;
        Ok(())
    }

    /// The effective config as TOML. Secrets appear only as their source (`env`/`file`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }

    /// One line per secret: where it comes from and whether it is set. Never the value.
    pub fn secret_status(&self) -> Vec<String> {
        let mut v = vec![self.mysql.password.describe("mysql.password")];
        if let Some(p) = &self.mongo.password {
            v.push(p.describe("mongo.password"));
        }
        v.extend(self.extract.secret_status());
        v
    }
}

fn apply_env_override(root: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let key = path.join(".");
    if path.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::Env {
            var: var.into(),
            key,
            message: "empty key segment".into(),
        });
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let mut table = root;
    for seg in &path[..path.len() - 1] {
        let entry = table
            .entry(seg.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::Env {
                    var: var.into(),
                    key: key.clone(),
                    message: format!("`{seg}` is not a table in the config"),
                })
            }
        };
    }
    table.insert(path[path.len() - 1].clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Config::from_toml_with_env(text, "test.toml", &env)
    }

    #[test]
    fn empty_config_has_working_defaults() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.topics.name(TopicRole::Raw), "etl.raw");
        assert_eq!(
            c.topics
                .spec(TopicRole::ExtractState)
                .unwrap()
                .cleanup_policy,
            CleanupPolicy::Compact
        );
        assert_eq!(c.topics.all().unwrap().len(), 9);
    }

    #[test]
    fn client_options_take_numbers_as_text() {
        let c = load(
            "[kafka.client_options]\n\"fetch.wait.max.ms\" = 50\n\"enable.sasl\" = true\n",
            &[("ETL__KAFKA__CLIENT_OPTIONS__queued.min.messages", "10000")],
        )
        .unwrap();
        let o = &c.kafka.client_options;
        assert_eq!(o["fetch.wait.max.ms"], "50");
        assert_eq!(o["enable.sasl"], "true");
        assert_eq!(o["queued.min.messages"], "10000");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load("[mysql]\nhots = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("mysql"), "{err}");
        assert!(err.contains("hots"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = load("[topics]\npartitions = \"many\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("topics.partitions"), "{err}");
    }

    #[test]
    fn env_overrides_nested_keys_with_types() {
        let c = load(
            "[topics]\npartitions = 3\n",
            &[
                ("ETL__TOPICS__PARTITIONS", "6"),
                ("ETL__TOPICS__RAW__NAME", "x.raw"),
            ],
        )
        .unwrap();
        assert_eq!(c.topics.partitions, 6);
        assert_eq!(c.topics.name(TopicRole::Raw), "x.raw");
    }

    #[test]
    fn contradiction_names_key() {
        let err = load("[topics.cleaned]\nname = \"etl.raw\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("topics.cleaned.name"), "{err}");
        let err = load("[topics]\nretention = \"soon\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("topics.retention"), "{err}");
    }

    #[test]
    fn secrets_never_print_their_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
        let c = load(
            "[mysql]\npassword = { env = \"SOME_VAR_THAT_IS_NOT_SET_42\" }\n",
            &[],
        )
        .unwrap();
        assert!(!c.to_toml().contains("hunter2"));
        let err = c
            .mysql
            .password
            .resolve("mysql.password")
            .unwrap_err()
            .to_string();
        assert!(err.contains("SOME_VAR_THAT_IS_NOT_SET_42"), "{err}");
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let r = SecretRef {
            env: None,
            file: Some(p),
        };
        assert_eq!(r.resolve("k").unwrap().expose(), "s3cret");
    }

    #[test]
    fn credentials_in_mongo_uri_are_rejected() {
        let err = load("[mongo]\nuri = \"mongodb://u:p@h\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("mongo.uri"), "{err}");
        assert!(!err.contains("u:p"), "{err}");
    }
}
