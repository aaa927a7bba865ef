//! The pipeline's identity (name, instance) and the Kafka connection every client shares.
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

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
    /// The name goes into group and transactional ids: letters, digits, '.', '_' or '-'.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(ConfigError::key(
                "pipeline.name",
                "must be non-empty letters, digits, '.', '_' or '-'",
            ));
        }
        Ok(())
    }

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

impl KafkaConfig {
    /// Rejects contradictions, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::key(
                "kafka.brokers",
                "must name at least one broker",
            ));
        }
        if self.transaction_timeout < Duration::from_secs(1) {
            return Err(ConfigError::key(
                "kafka.transaction_timeout",
                "must be at least 1s",
            ));
        }
        if self.session_timeout < Duration::from_secs(1)
            || self.session_timeout > Duration::from_secs(3600)
        {
            return Err(ConfigError::key(
                "kafka.session_timeout",
                "must be between 1s and 1h (brokers refuse less than group.min.session.timeout.ms, 6s by default)",
            ));
        }
        if let Some(url) = &self.schema_registry_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::key(
                    "kafka.schema_registry_url",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        for k in self.client_options.keys() {
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
        Ok(())
    }
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
