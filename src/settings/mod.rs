//! Settings every part of the pipeline shares — the pipeline's name and instance, the Kafka
//! connection, topic names and roles, secrets — and the config error type. Nothing here
//! knows a stage: the stages own their config types, and [`crate::config::Config`] assembles
//! the whole file above them.
//!
//! Secrets are never written in the file: a secret key holds `{ env = "VAR" }` or
//! `{ file = "/run/secrets/x" }` and is resolved at start-up; [`Secret`] never prints
//! its value.
use std::path::PathBuf;

mod kafka;
mod secret;
mod topics;

pub use kafka::{
    is_sensitive_option, ClientOption, Compatibility, KafkaConfig, PipelineConfig,
    RESERVED_CLIENT_OPTIONS,
};
pub use secret::{Secret, SecretRef};
pub use topics::{CleanupPolicy, TopicOverride, TopicRole, TopicSpec, TopicsConfig};

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "ETL__";

/// The settings a stage shares with every other: who it is and where Kafka and its topics are.
#[derive(Debug, Clone, Default)]
pub struct Common {
    pub pipeline: PipelineConfig,
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
}

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
