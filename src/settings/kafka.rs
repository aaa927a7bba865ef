//! The pipeline's identity (name, instance) and the Kafka connection every client shares.
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret, SecretRef};

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
    /// Schema registry URL (Confluent REST API, without credentials); when set, Avro is
    /// framed in the Confluent wire format.
    #[serde(default)]
    pub schema_registry_url: Option<String>,
    /// User for the schema registry's basic auth (with `kafka.schema_registry_password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_registry_user: Option<String>,
    /// Password for the schema registry's basic auth (a secret: env or file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_registry_password: Option<SecretRef>,
    /// PEM file of the CA that signed an `https://` registry's certificate, trusted besides the
    /// bundled Mozilla roots (a private CA); read at start-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_registry_ca: Option<std::path::PathBuf>,
    /// Compatibility level `etl-pipe topics apply` sets on the subject of each Avro topic
    /// (`<topic>-value`) when a registry is configured: NONE, BACKWARD, BACKWARD_TRANSITIVE,
    /// FORWARD, FORWARD_TRANSITIVE, FULL or FULL_TRANSITIVE.
    #[serde(default)]
    pub schema_registry_compatibility: Compatibility,
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
    /// Secrets (`sasl.password`, `ssl.key.password`, …) only as `{ env = "VAR" }` or
    /// `{ file = "/path" }`. Options etl-pipe sets for its guarantees are refused here.
    #[serde(default)]
    pub client_options: BTreeMap<String, ClientOption>,
}

/// A schema registry compatibility level (the Confluent names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    None,
    /// New schemas read data written with the previous one (Confluent's default).
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Compatibility {
    /// The name the registry's `/config` API takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::None => "NONE",
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        }
    }
}

/// One librdkafka option: a plain value, or a secret read from the environment or a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ClientOption {
    Value(String),
    Secret(SecretRef),
}

impl<'de> Deserialize<'de> for ClientOption {
    /// Strings, numbers and booleans are taken as their text (librdkafka options are strings,
    /// but `fetch.wait.max.ms = 50` in TOML is a number); a table is a secret reference.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
            F(f64),
            B(bool),
            Secret(SecretRef),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::S(s) => ClientOption::Value(s),
            Raw::I(i) => ClientOption::Value(i.to_string()),
            Raw::F(f) => ClientOption::Value(f.to_string()),
            Raw::B(b) => ClientOption::Value(b.to_string()),
            Raw::Secret(r) => ClientOption::Secret(r),
        })
    }
}

impl ClientOption {
    /// The value to hand to librdkafka (a secret resolved now). The error names the key only.
    pub fn resolve(&self, key: &str) -> Result<String, ConfigError> {
        match self {
            ClientOption::Value(v) => Ok(v.clone()),
            ClientOption::Secret(r) => r
                .resolve(&format!("kafka.client_options.{key}"))
                .map(|s| s.expose().to_string()),
        }
    }

    /// The plain value, if this is not a secret.
    pub fn value(&self) -> Option<&str> {
        match self {
            ClientOption::Value(v) => Some(v),
            ClientOption::Secret(_) => None,
        }
    }
}

/// Whether a librdkafka option holds a credential (it must come from the environment or a file).
pub fn is_sensitive_option(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || matches!(
            k.as_str(),
            "sasl.jaas.config" | "ssl.key.pem" | "sasl.oauthbearer.config" | "ssl_key.pem"
        )
}

/// Options etl-pipe sets itself because its guarantees depend on them, with what to use instead.
pub const RESERVED_CLIENT_OPTIONS: &[(&str, &str)] = &[
    ("bootstrap.servers", "set kafka.brokers"),
    (
        "transactional.id",
        "derived from pipeline.name and the instance id",
    ),
    ("group.id", "derived from pipeline.name and the stage"),
    (
        "enable.auto.commit",
        "offsets move only after the work is durable",
    ),
    (
        "enable.auto.offset.store",
        "offsets move only after the work is durable",
    ),
    ("isolation.level", "stages read committed data only"),
    (
        "enable.idempotence",
        "producers are idempotent for exactly-once",
    ),
    ("acks", "producers wait for all in-sync replicas"),
    ("transaction.timeout.ms", "set kafka.transaction_timeout"),
    ("session.timeout.ms", "set kafka.session_timeout"),
    ("enable.partition.eof", "set per reader by etl-pipe"),
];

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
    /// Resolves every secret option now, so a missing variable or file fails at start-up
    /// naming the key (never the value).
    pub fn check_secrets(&self) -> Result<(), ConfigError> {
        if let Some(p) = &self.schema_registry_password {
            p.resolve("kafka.schema_registry_password")?;
        }
        for (k, v) in &self.client_options {
            v.resolve(k)?;
        }
        Ok(())
    }

    /// Where each secret option comes from and whether it is set (for `config check`).
    pub fn secret_status(&self) -> Vec<String> {
        let registry = self
            .schema_registry_password
            .iter()
            .map(|p| p.describe("kafka.schema_registry_password"));
        let options = self.client_options.iter().filter_map(|(k, v)| match v {
            ClientOption::Secret(r) => Some(r.describe(&format!("kafka.client_options.{k}"))),
            ClientOption::Value(_) => None,
        });
        registry.chain(options).collect()
    }

    /// The schema registry's basic-auth credentials, the password resolved now (the error
    /// names the key, never the value). `None` without `kafka.schema_registry_user`.
    pub fn schema_registry_auth(&self) -> Result<Option<(String, Secret)>, ConfigError> {
        match (&self.schema_registry_user, &self.schema_registry_password) {
            (Some(user), Some(p)) => Ok(Some((
                user.clone(),
                p.resolve("kafka.schema_registry_password")?,
            ))),
            _ => Ok(None),
        }
    }

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
        self.validate_registry()?;
        for (k, v) in &self.client_options {
            let key = format!("kafka.client_options.{k}");
            if let Some((_, instead)) = RESERVED_CLIENT_OPTIONS.iter().find(|(r, _)| r == k) {
                return Err(ConfigError::key(
                    key,
                    format!("is set by etl-pipe itself and cannot be overridden here ({instead})"),
                ));
            }
            match v {
                ClientOption::Value(_) if is_sensitive_option(k) => {
                    return Err(ConfigError::key(key, super::secret::INLINE_SECRET))
                }
                ClientOption::Secret(r) => r.validate(&key)?,
                ClientOption::Value(_) => {}
            }
        }
        Ok(())
    }
}

impl KafkaConfig {
    /// The registry URL is http(s) and carries no credentials (they would be printed by
    /// `config check` and land in config files); user and password come as a pair, and only
    /// with a URL.
    fn validate_registry(&self) -> Result<(), ConfigError> {
        const URL: &str = "kafka.schema_registry_url";
        if let Some(url) = &self.schema_registry_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::key(URL, "must be an http:// or https:// URL"));
            }
            // The authority ends at the first '/', '?' or '#' after the scheme; an '@' in it
            // means `user[:password]@host`. The URL itself is not repeated: it holds a secret.
            let rest = url.split_once("://").map(|(_, r)| r).unwrap_or_default();
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if authority.contains('@') {
                return Err(ConfigError::key(
                    URL,
                    "must not carry credentials (the URL is not repeated here); put the user in \
                     kafka.schema_registry_user and the password in \
                     kafka.schema_registry_password (env or file)",
                ));
            }
        }
        match (&self.schema_registry_user, &self.schema_registry_password) {
            (Some(_), None) => {
                return Err(ConfigError::key(
                    "kafka.schema_registry_password",
                    "is required with kafka.schema_registry_user (give `{ env = \"VAR\" }` or `{ file = \"/path\" }`)",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::key(
                    "kafka.schema_registry_user",
                    "is required with kafka.schema_registry_password",
                ))
            }
            (Some(user), Some(p)) => {
                if user.is_empty() || user.contains(':') {
                    return Err(ConfigError::key(
                        "kafka.schema_registry_user",
                        "must be non-empty and without ':' (basic auth)",
                    ));
                }
                p.validate("kafka.schema_registry_password")?;
                if self.schema_registry_url.is_none() {
                    return Err(ConfigError::key(
                        "kafka.schema_registry_user",
                        "is set but kafka.schema_registry_url is not",
                    ));
                }
            }
            (None, None) => {}
        }
        if self.schema_registry_ca.is_some()
            && !self
                .schema_registry_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
        {
            return Err(ConfigError::key(
                "kafka.schema_registry_ca",
                "is only used with an https:// kafka.schema_registry_url",
            ));
        }
        Ok(())
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            schema_registry_url: None,
            schema_registry_user: None,
            schema_registry_password: None,
            schema_registry_ca: None,
            schema_registry_compatibility: Compatibility::default(),
            transaction_timeout: default_txn_timeout(),
            session_timeout: default_session_timeout(),
            client_options: BTreeMap::new(),
        }
    }
}
