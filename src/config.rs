//! The whole configuration, assembled above the stages: one TOML file, every key overridable
//! from the environment, defaults for everything a local run needs, and `validate()` run at
//! start-up. The shared pieces live in [`crate::settings`]; each stage owns its config type,
//! and only this module (with the CLI, operations and tooling above it) sees them all.
//!
//! Environment overrides: `ETL__SECTION__KEY=value` sets `section.key` (double
//! underscores separate levels, names are lower-cased). The value is read as a TOML
//! literal when it parses as one (`6`, `true`, `"x"`, `[1, 2]`), else as a string.
//!
//! Secrets are never written in the file: a secret key holds `{ env = "VAR" }` or
//! `{ file = "/run/secrets/x" }` and is resolved at start-up; [`Secret`] never prints
//! its value.
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::settings::{
    CleanupPolicy, Common, Compatibility, ConfigError, KafkaConfig, PipelineConfig, Secret,
    SecretRef, TopicOverride, TopicRole, TopicSpec, TopicsConfig, ENV_PREFIX,
};
use crate::stages::sinks::{MongoConfig, MysqlConfig};

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
        let mut cfg: Config =
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
        cfg.topics.prefix = Some(cfg.pipeline.name.clone());
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects contradictions, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.pipeline.validate()?;
        self.kafka.validate()?;
        self.topics.validate()?;
        self.quality.validate()?;
        self.observability.validate()?;
        self.mysql.validate()?;
        self.mongo.validate()?;
        self.sink.validate()?;
        if let Some(clean) = &self.clean {
            clean.validate(self.kafka.transaction_timeout)?;
        }
        if let Some(score) = &self.score {
            score.validate(self.kafka.transaction_timeout, &self.clean_or_default())?;
            score.validate_window(&self.quality)?;
        }
        self.extract.validate()?;
        Ok(())
    }

    /// The settings every stage shares.
    pub fn common(&self) -> Common {
        Common {
            pipeline: self.pipeline.clone(),
            kafka: self.kafka.clone(),
            topics: self.topics.clone(),
        }
    }

    /// The clean stage's config, or its defaults when the file has no `[clean]`.
    pub fn clean_or_default(&self) -> crate::stages::clean::CleanConfig {
        self.clean.clone().unwrap_or_default()
    }

    /// The effective config as TOML. Secrets appear only as their source (`env`/`file`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }

    /// Resolves every secret reference of the file (for `config check`); the error names the
    /// first key whose variable or file is missing, never a value.
    pub fn check_secrets(&self) -> Result<(), ConfigError> {
        self.mysql.password.resolve("mysql.password")?;
        if let Some(p) = &self.mongo.password {
            p.resolve("mongo.password")?;
        }
        self.extract.check_secrets()?;
        self.kafka.check_secrets()
    }

    /// One line per secret: where it comes from and whether it is set. Never the value.
    pub fn secret_status(&self) -> Vec<String> {
        let mut v = vec![self.mysql.password.describe("mysql.password")];
        if let Some(p) = &self.mongo.password {
            v.push(p.describe("mongo.password"));
        }
        v.extend(self.extract.secret_status());
        v.extend(self.kafka.secret_status());
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
        assert_eq!(c.topics.name(TopicRole::Raw), "etl-pipe.raw");
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
        assert_eq!(o["fetch.wait.max.ms"].value(), Some("50"));
        assert_eq!(o["enable.sasl"].value(), Some("true"));
        assert_eq!(o["queued.min.messages"].value(), Some("10000"));
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
    fn topics_default_to_the_pipeline_name() {
        let a = load("[pipeline]\nname = \"leagues\"\n", &[]).unwrap();
        let b = load("", &[("ETL__PIPELINE__NAME", "ranked")]).unwrap();
        assert_eq!(a.topics.name(TopicRole::Raw), "leagues.raw");
        assert_eq!(a.topics.name(TopicRole::DeadLetter), "leagues.dead-letter");
        assert_eq!(b.topics.name(TopicRole::Scored), "ranked.scored");
        let c = load(
            "[pipeline]\nname = \"leagues\"\n[topics.raw]\nname = \"shared.raw\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.topics.name(TopicRole::Raw), "shared.raw");
        assert_eq!(c.topics.name(TopicRole::Cleaned), "leagues.cleaned");
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
        let err = load("[topics.cleaned]\nname = \"etl-pipe.raw\"\n", &[])
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

    #[test]
    fn credentials_in_registry_url_are_rejected_without_repeating_them() {
        for url in [
            "https://etl:s3cret@registry.example/apis/ccompat/v7",
            "http://etl@registry.example:8081",
        ] {
            let err = load(&format!("[kafka]\nschema_registry_url = \"{url}\"\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("kafka.schema_registry_url"), "{err}");
            assert!(err.contains("kafka.schema_registry_password"), "{err}");
            assert!(!err.contains("s3cret") && !err.contains("etl@"), "{err}");
        }
        // An '@' after the host is a path, not credentials.
        load(
            "[kafka]\nschema_registry_url = \"http://h:8081/a@b\"\n",
            &[],
        )
        .unwrap();
    }

    #[test]
    fn registry_password_is_a_listed_secret() {
        let text = "[kafka]\nschema_registry_url = \"https://r.example\"\n\
                    schema_registry_user = \"etl\"\n\
                    schema_registry_password = { env = \"ETL_TEST_UNSET_REGISTRY_PW_42\" }\n";
        let c = load(text, &[]).unwrap();
        let status = c.secret_status().join("\n");
        assert!(
            status.contains(
                "kafka.schema_registry_password: NOT SET (from env ETL_TEST_UNSET_REGISTRY_PW_42)"
            ),
            "{status}"
        );
        let err = c.kafka.check_secrets().unwrap_err().to_string();
        assert!(err.contains("kafka.schema_registry_password"), "{err}");
        assert!(c.to_toml().contains("ETL_TEST_UNSET_REGISTRY_PW_42"));
        // Inline, it is refused without being repeated.
        let err = load(
            "[kafka]\nschema_registry_url = \"https://r.example\"\nschema_registry_user = \"etl\"\nschema_registry_password = \"hunter2\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("kafka.schema_registry_password"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        // One without the other, or without a URL, names the missing key.
        let err = load(
            "[kafka]\nschema_registry_url = \"https://r.example\"\nschema_registry_user = \"etl\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("kafka.schema_registry_password"), "{err}");
        let err = load(
            "[kafka]\nschema_registry_user = \"etl\"\nschema_registry_password = { env = \"X\" }\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("kafka.schema_registry_url"), "{err}");
    }

    #[test]
    fn registry_compatibility_defaults_to_backward_and_is_checked() {
        assert_eq!(
            load("", &[]).unwrap().kafka.schema_registry_compatibility,
            Compatibility::Backward
        );
        let c = load(
            "",
            &[(
                "ETL__KAFKA__SCHEMA_REGISTRY_COMPATIBILITY",
                "FULL_TRANSITIVE",
            )],
        )
        .unwrap();
        assert_eq!(
            c.kafka.schema_registry_compatibility.as_str(),
            "FULL_TRANSITIVE"
        );
        let err = load(
            "[kafka]\nschema_registry_compatibility = \"backwards\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("kafka.schema_registry_compatibility"), "{err}");
        assert!(err.contains("BACKWARD"), "{err}");
    }
}
