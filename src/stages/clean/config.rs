//! The `[clean]` config section: which schema cleaned records have, how raw JSON fields map
//! onto it (`[clean.fields.<schema field>]`), and how records are batched into transactions.
//!
//! The mapping is checked against the schema by [`CleanConfig::validate`] (run by
//! `Config::validate`, i.e. at start-up and by `etl-pipe config check`): every contradiction
//! fails naming the key, e.g. `clean.fields.wins.min`. The checks live in
//! [`Mapper::new`](super::mapping::Mapper::new) so that what is validated is exactly what runs.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::mapping::Mapper;
use crate::codec::load_schema;
use crate::record::RecordSchema;
use crate::settings::ConfigError;

/// `[clean]`: the clean stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanConfig {
    /// Avro schema (`.avsc`) of cleaned records; a relative path is read from the working
    /// directory.
    #[serde(default = "default_schema")]
    pub schema: PathBuf,
    /// Lineage `source` of raw messages without an `etl.source` header. Default: the raw
    /// topic's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
    /// Most raw records in one transaction.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long a transaction collects records before it commits: the stage's added latency.
    #[serde(default = "default_batch_max_age", with = "humantime_serde")]
    pub batch_max_age: Duration,
    /// Schema field whose value becomes the cleaned message's key (string, int or long, not
    /// nullable). Default: keep the raw message's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_field: Option<String>,
    /// Schema fields without a `[clean.fields.<name>]` entry read the raw field of the same
    /// name in camelCase (`league_points` ← `leaguePoints`). When false, such fields are null
    /// (nullable fields only; any other field must have an entry).
    #[serde(default = "default_true")]
    pub auto_map: bool,
    /// Default `coerce` of fields that do not set it.
    #[serde(default = "default_true")]
    pub coerce: bool,
    /// The mapping, one entry per schema field (`[clean.fields.wins]`). Lineage fields are
    /// filled by the stage and cannot be mapped.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldMapping>,
}

fn default_schema() -> PathBuf {
    PathBuf::from("schemas/league_entry.cleaned.avsc")
}
// Amortises each transaction's fixed cost when catching up (figures: docs/notes/clean.md).
fn default_batch_size() -> usize {
    10_000
}
fn default_batch_max_age() -> Duration {
    Duration::from_millis(100)
}
fn default_true() -> bool {
    true
}

impl Default for CleanConfig {
    fn default() -> Self {
        Self {
            schema: default_schema(),
            source_name: None,
            batch_size: default_batch_size(),
            batch_max_age: default_batch_max_age(),
            key_field: None,
            auto_map: true,
            coerce: true,
            fields: BTreeMap::new(),
        }
    }
}

/// `[clean.fields.<schema field>]`: where one schema field comes from and what it must satisfy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// Raw JSON field feeding this field; `a.b` reads field `b` of object `a` (a raw key that
    /// itself contains the dot wins). Default: the camelCase of the schema field's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Allow lossless conversions between JSON types (see `docs/notes/clean.md`): "12" → 12,
    /// 12.0 → 12, 12 → "12", "true" → true, 0/1 → false/true. Default: `clean.coerce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coerce: Option<bool>,
    /// A record without a value (missing or JSON null) is dead-lettered. Default: true when
    /// the schema field is not nullable and there is no `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Smallest allowed value (numeric fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest allowed value (numeric fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The only values allowed (an enum), in the field's type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Scalar>>,
    /// Value used when the raw record has none (missing or null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Scalar>,
    /// Compute the field from other (non-derived) schema fields instead of reading raw JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive: Option<Derive>,
    /// The schema fields `derive` reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

/// The fixed set of derivations. Each reads schema fields of the same record (after
/// mapping); a null argument gives null.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Derive {
    /// `a + b + ...` (numeric; an integer target fails the record on overflow).
    Sum,
    /// `a / (a + b)` as a double; null (or `default`) when `a + b = 0`.
    Ratio,
    /// The value of another field.
    Copy,
    /// Another string field, lower-cased.
    Lowercase,
    /// Another string field, upper-cased.
    Uppercase,
}

impl Derive {
    pub fn as_str(&self) -> &'static str {
        match self {
            Derive::Sum => "sum",
            Derive::Ratio => "ratio",
            Derive::Copy => "copy",
            Derive::Lowercase => "lowercase",
            Derive::Uppercase => "uppercase",
        }
    }
}

/// A literal in the config (`default`, `allowed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::String(s) => write!(f, "{s:?}"),
        }
    }
}

impl CleanConfig {
    /// Loads the schema file, naming `clean.schema` when it cannot be had.
    pub fn load_schema(&self) -> Result<RecordSchema, ConfigError> {
        load_schema_at(&self.schema)
    }

    /// Checks the section on its own and against its schema (reads the schema file).
    /// `transaction_timeout` is `kafka.transaction_timeout`, which a batch must stay well under.
    pub fn validate(&self, transaction_timeout: Duration) -> Result<(), ConfigError> {
        self.validate_settings(transaction_timeout)?;
        let schema = self.load_schema()?;
        Mapper::new(&schema, self).map(|_| ())
    }

    /// The checks that need no schema.
    pub fn validate_settings(&self, transaction_timeout: Duration) -> Result<(), ConfigError> {
        if self.batch_size == 0 {
            return Err(ConfigError::key("clean.batch_size", "must be at least 1"));
        }
        if self.batch_max_age.is_zero() {
            return Err(ConfigError::key(
                "clean.batch_max_age",
                "must be more than 0 (e.g. \"100ms\")",
            ));
        }
        if self.batch_max_age * 2 > transaction_timeout {
            return Err(ConfigError::key(
                "clean.batch_max_age",
                format!(
                    "{} is more than half of kafka.transaction_timeout ({}); a transaction \
                     could time out before it commits",
                    humantime::format_duration(self.batch_max_age),
                    humantime::format_duration(transaction_timeout)
                ),
            ));
        }
        if let Some(s) = &self.source_name {
            if s.trim().is_empty() {
                return Err(ConfigError::key(
                    "clean.source_name",
                    "must not be empty (leave it out to use the raw topic's name)",
                ));
            }
        }
        Ok(())
    }
}

fn load_schema_at(path: &Path) -> Result<RecordSchema, ConfigError> {
    load_schema(path).map_err(|e| ConfigError::key("clean.schema", e.to_string()))
}
