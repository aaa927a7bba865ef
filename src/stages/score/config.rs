//! The `[score]` config section: window size and age, the schemas read and written, which
//! fields are profiled, and where the PSI baseline comes from.
//!
//! [`ScoreConfig::validate`] (run by `Config::validate`, i.e. at start-up and by
//! `etl-pipe config check`) reads the schema files and the baseline file and fails naming the
//! key (`score.fields`, `score.schema_out`, ...). [`ScoreConfig::resolve`] is the same work
//! returning what the stage runs with, so what is validated is exactly what runs.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::load_schema;
use crate::quality::psi::psi_noise_rows;
use crate::quality::{Baseline, FieldSpec, QualityConfig};
use crate::record::{FieldType, RecordSchema};
use crate::settings::ConfigError;
use crate::stages::clean::{CleanConfig, Derive, LINEAGE_FIELDS};

/// Field of the output schema that receives the window id.
pub const WINDOW_FIELD: &str = "quality_window";
/// Field of the output schema that receives the window's decision.
pub const DECISION_FIELD: &str = "quality_decision";
/// Optional field of the output schema that receives the reasons of a WARN or FAIL.
pub const REASONS_FIELD: &str = "quality_reasons";

/// What the stage does with a record whose trailing window FAILs (`score.policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// To the quarantine topic (held, can be redriven).
    #[default]
    Quarantine,
    /// To scored anyway, marked FAIL with its reasons.
    Flag,
    /// Stop the stage; nothing past the record is committed.
    Halt,
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::Quarantine => "quarantine",
            Policy::Flag => "flag",
            Policy::Halt => "halt",
        })
    }
}

/// Largest window: every record of an open window is held in memory.
const MAX_WINDOW_RECORDS: usize = 1_000_000;
/// `key` set to `rows`, fewer than the `min` PSI needs.
fn too_few(key: &str, rows: usize, min: usize, quality: &QualityConfig) -> ConfigError {
    ConfigError::key(
        key,
        format!(
            "{rows} rows are too few for PSI over {} bins: an unchanged distribution reaches \
             quality.psi_fail ({}) by chance more often than once in a million windows; use at \
             least {min}",
            quality.bins, quality.psi_fail
        ),
    )
}

/// The default fewest records of a verdict when PSI asks for fewer (missing ratios of a few
/// dozen rows are noise too).
const MIN_VERDICT_RECORDS: usize = 100;
/// Smallest useful baseline (the PSI of a few dozen rows is noise).
const MIN_BASELINE_RECORDS: u64 = 100;

/// `[score]`: the score stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreConfig {
    /// The trailing window: each record is judged on the last this many decoded records of
    /// its input partition, itself included (missing and type-error ratios, PSI, and the VIF
    /// described under "Quality gate" in the README); until a partition has this many, on all
    /// of its records so far (from `min_window_records` on). Also the size, in offsets, of
    /// the blocks each report covers.
    #[serde(default = "default_window_records")]
    pub window_records: usize,
    /// The fewest decoded records a verdict rests on: a partition's first records wait until
    /// it has this many (not the whole window), and every record is also judged on the short
    /// trailing window of its last this many records, where a shift shows before it fills
    /// the long window. Unset: the smallest size at which PSI over `quality.bins` bins of an
    /// unchanged distribution stays under `quality.psi_fail` in 999 999 of a million windows
    /// (184 at 10 bins and 0.25; see README "Quality gate"), at least 100, at most
    /// `window_records`. Equal to `window_records`: one window only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_window_records: Option<usize>,
    /// What a FAIL record does: `quarantine` (to the quarantine topic), `flag` (to scored
    /// anyway, with `quality_decision = FAIL` and the reasons in `quality_reasons` and the
    /// headers) or `halt` (the stage stops with an error naming the window and the reasons;
    /// the offsets stay before the record, so a restart after a fix resumes there).
    #[serde(default)]
    pub policy: Policy,
    /// Most input messages read in one transaction.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest time a transaction stays open.
    #[serde(default = "default_batch_max_age", with = "humantime_serde")]
    pub batch_max_age: Duration,
    /// Avro schema (`.avsc`) of the input (cleaned) records.
    #[serde(default = "default_schema_in")]
    pub schema_in: PathBuf,
    /// Avro schema of the output (scored) records: every input field plus the nullable
    /// strings `quality_window` and `quality_decision` (and, when the schema has it,
    /// `quality_reasons`).
    #[serde(default = "default_schema_out")]
    pub schema_out: PathBuf,
    /// Fields to profile (missing ratio, PSI, VIF of the numeric ones), by path: `name`,
    /// `record.leaf` for a leaf of a nested record (a null parent counts as missing), and
    /// `len(path)` for the length of an array or map. Numbers, decimals, dates, times and
    /// timestamps are numeric; strings, booleans and enums categorical. Default: the input
    /// schema's fields without the lineage fields, the `[clean] key_field` and the fields
    /// `[clean]` derives as sums or copies (exact linear combinations make VIF infinite);
    /// non-nullable nested records as their leaves, arrays and maps by length; leaves of
    /// nullable records only when listed (a null parent would count as missing); bytes,
    /// fixed, uuids and general unions never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// A saved baseline (`etl-pipe profile REF --save-baseline FILE`). When set it is the
    /// baseline, and `baseline_from_first_records` is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<PathBuf>,
    /// Without `baseline`: build the baseline from the first N records the stage sees and
    /// store it in the `topics.score_baseline` topic, where restarts and other instances
    /// find it. 0 = no baseline (no PSI).
    #[serde(default = "default_baseline_from_first_records")]
    pub baseline_from_first_records: u64,
}

fn default_window_records() -> usize {
    1000
}
fn default_batch_size() -> usize {
    10_000
}
fn default_batch_max_age() -> Duration {
    Duration::from_millis(100)
}
fn default_schema_in() -> PathBuf {
    PathBuf::from("schemas/league_entry.cleaned.avsc")
}
fn default_schema_out() -> PathBuf {
    PathBuf::from("schemas/league_entry.scored.avsc")
}
fn default_baseline_from_first_records() -> u64 {
    2000
}

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            window_records: default_window_records(),
            min_window_records: None,
            policy: Policy::default(),
            batch_size: default_batch_size(),
            batch_max_age: default_batch_max_age(),
            schema_in: default_schema_in(),
            schema_out: default_schema_out(),
            fields: None,
            baseline: None,
            baseline_from_first_records: default_baseline_from_first_records(),
        }
    }
}

/// What the stage runs with, after the checks.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub schema_in: RecordSchema,
    pub schema_out: RecordSchema,
    pub specs: Vec<FieldSpec>,
    /// The loaded `score.baseline` file, if set.
    pub baseline: Option<Baseline>,
}

impl ScoreConfig {
    /// Checks the section against its schema files and baseline file (reads them).
    pub fn validate(
        &self,
        transaction_timeout: Duration,
        clean: &CleanConfig,
    ) -> Result<(), ConfigError> {
        self.resolve(transaction_timeout, clean).map(|_| ())
    }

    /// The fewest records a verdict rests on (`score.min_window_records`, or its default).
    pub fn min_window(&self, quality: &QualityConfig) -> usize {
        let derived = || self.psi_floor(quality).max(MIN_VERDICT_RECORDS);
        self.min_window_records
            .unwrap_or_else(derived)
            .min(self.window_records)
    }

    /// The fewest rows whose PSI stays under `quality.psi_fail` by chance (0 without PSI).
    fn psi_floor(&self, quality: &QualityConfig) -> usize {
        if self.baseline.is_none() && self.baseline_from_first_records == 0 {
            return 0;
        }
        psi_noise_rows(quality.bins, quality.psi_fail)
    }

    /// Both windows must be large enough for PSI: with fewer rows, the PSI of an unchanged
    /// distribution reaches `quality.psi_fail` by chance alone (see [`psi_noise_rows`]).
    /// Without a baseline there is no PSI and no such floor.
    pub fn validate_window(&self, quality: &QualityConfig) -> Result<(), ConfigError> {
        let min = self.psi_floor(quality);
        if let Some(m) = self.min_window_records {
            if m == 0 || m > self.window_records {
                return Err(ConfigError::key(
                    "score.min_window_records",
                    format!(
                        "{m}: must be between 1 and score.window_records ({})",
                        self.window_records
                    ),
                ));
            }
            if m < min {
                return Err(too_few("score.min_window_records", m, min, quality));
            }
        }
        if min == 0 {
            return Ok(());
        }
        if self.window_records < min {
            return Err(too_few(
                "score.window_records",
                self.window_records,
                min,
                quality,
            ));
        }
        Ok(())
    }

    /// The checks that read no file. `transaction_timeout` is `kafka.transaction_timeout`,
    /// which a transaction must stay well under.
    pub fn validate_settings(&self, transaction_timeout: Duration) -> Result<(), ConfigError> {
        if self.batch_size == 0 {
            return Err(ConfigError::key("score.batch_size", "must be at least 1"));
        }
        if self.batch_max_age.is_zero() {
            return Err(ConfigError::key(
                "score.batch_max_age",
                "must be more than 0 (e.g. \"100ms\")",
            ));
        }
        if self.batch_max_age * 2 > transaction_timeout {
            return Err(ConfigError::key(
                "score.batch_max_age",
                format!(
                    "{} is more than half of kafka.transaction_timeout ({}); a transaction \
                     could time out before it commits",
                    humantime::format_duration(self.batch_max_age),
                    humantime::format_duration(transaction_timeout)
                ),
            ));
        }
        if self.window_records == 0 || self.window_records > MAX_WINDOW_RECORDS {
            return Err(ConfigError::key(
                "score.window_records",
                format!(
                    "must be between 1 and {MAX_WINDOW_RECORDS} (the records of an open window \
                     are held in memory), got {}",
                    self.window_records
                ),
            ));
        }
        if self.baseline.is_none()
            && self.baseline_from_first_records != 0
            && self.baseline_from_first_records < MIN_BASELINE_RECORDS
        {
            return Err(ConfigError::key(
                "score.baseline_from_first_records",
                format!(
                    "{} records are too few for a baseline (PSI of a few dozen rows is noise); \
                     use at least {MIN_BASELINE_RECORDS}, or 0 for no baseline",
                    self.baseline_from_first_records
                ),
            ));
        }
        if let Some(fields) = &self.fields {
            if fields.is_empty() {
                return Err(ConfigError::key(
                    "score.fields",
                    "must name at least one field (leave it out for the default)",
                ));
            }
        }
        Ok(())
    }

    /// Validates everything and loads the schemas, the field specs and the baseline file.
    /// `clean` is the clean stage's mapping: its key and linear derived fields are not profiled.
    pub fn resolve(
        &self,
        transaction_timeout: Duration,
        clean: &CleanConfig,
    ) -> Result<Resolved, ConfigError> {
        self.validate_settings(transaction_timeout)?;
        let schema_in = load_at("score.schema_in", &self.schema_in)?;
        let schema_out = load_at("score.schema_out", &self.schema_out)?;
        check_out_schema(&schema_in, &schema_out)?;
        let specs = self.field_specs(clean, &schema_in)?;
        let baseline = match &self.baseline {
            Some(p) => Some(
                Baseline::load(p).map_err(|e| ConfigError::key("score.baseline", e.to_string()))?,
            ),
            None => None,
        };
        if let Some(b) = &baseline {
            if !specs.iter().any(|s| b.field(&s.name).is_some()) {
                return Err(ConfigError::key(
                    "score.baseline",
                    format!(
                        "the baseline has none of the profiled fields ({}); it has: {}",
                        names(&specs),
                        b.fields
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        Ok(Resolved {
            schema_in,
            schema_out,
            specs,
            baseline,
        })
    }

    /// The profiled fields: `fields`, or the default described on the key.
    fn field_specs(
        &self,
        clean: &CleanConfig,
        schema: &RecordSchema,
    ) -> Result<Vec<FieldSpec>, ConfigError> {
        match &self.fields {
            Some(list) => {
                let mut seen = HashSet::new();
                let mut specs = Vec::with_capacity(list.len());
                for name in list {
                    if !seen.insert(name.as_str()) {
                        return Err(ConfigError::key(
                            "score.fields",
                            format!("`{name}` is listed twice"),
                        ));
                    }
                    specs.push(FieldSpec::from_path(schema, name).map_err(|e| {
                        ConfigError::key(
                            "score.fields",
                            format!("{e} ({})", self.schema_in.display()),
                        )
                    })?);
                }
                Ok(specs)
            }
            None => {
                let linear: Vec<&str> = clean
                    .fields
                    .iter()
                    .filter(|(_, m)| matches!(m.derive, Some(Derive::Sum | Derive::Copy)))
                    .map(|(n, _)| n.as_str())
                    .collect();
                let specs = FieldSpec::leaves(schema, |f| {
                    !LINEAGE_FIELDS.contains(&f.name.as_str())
                        && clean.key_field.as_deref() != Some(f.name.as_str())
                        && !linear.contains(&f.name.as_str())
                        && f.name != WINDOW_FIELD
                        && f.name != DECISION_FIELD
                        && f.name != REASONS_FIELD
                });
                if specs.is_empty() {
                    return Err(ConfigError::key(
                        "score.fields",
                        format!(
                            "{} has no data fields to profile by default; list them",
                            self.schema_in.display()
                        ),
                    ));
                }
                Ok(specs)
            }
        }
    }
}

fn names(specs: &[FieldSpec]) -> String {
    specs
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn load_at(key: &str, path: &Path) -> Result<RecordSchema, ConfigError> {
    load_schema(path).map_err(|e| ConfigError::key(key, e.to_string()))
}

/// The output schema must carry every input field with the same type, the two quality
/// fields as strings, and defaults for anything else (the stage fills nothing else).
fn check_out_schema(input: &RecordSchema, out: &RecordSchema) -> Result<(), ConfigError> {
    let err = |m: String| ConfigError::key("score.schema_out", m);
    for f in &input.fields {
        let Some(o) = out.field(&f.name) else {
            return Err(err(format!(
                "has no field `{}` of the input schema; scored records carry every input field",
                f.name
            )));
        };
        if o.ty != f.ty || (f.nullable && !o.nullable) {
            return Err(err(format!(
                "field `{}` is {:?}{} but {:?}{} in the input schema",
                f.name,
                o.ty,
                if o.nullable { " (nullable)" } else { "" },
                f.ty,
                if f.nullable { " (nullable)" } else { "" },
            )));
        }
    }
    if let Some(f) = out.field(REASONS_FIELD) {
        if f.ty != FieldType::String || !f.nullable {
            return Err(err(format!(
                "field `{REASONS_FIELD}` must be a nullable string"
            )));
        }
    }
    for name in [WINDOW_FIELD, DECISION_FIELD] {
        match out.field(name) {
            Some(f) if f.ty == FieldType::String => {}
            Some(_) => return Err(err(format!("field `{name}` must be a string"))),
            None => {
                return Err(err(format!(
                    "has no field `{name}` (a nullable string the stage fills)"
                )))
            }
        }
    }
    for f in &out.fields {
        if input.field(&f.name).is_none()
            && f.name != WINDOW_FIELD
            && f.name != DECISION_FIELD
            && f.default.is_none()
            && !f.nullable
        {
            return Err(err(format!(
                "field `{}` is not in the input schema and has no default",
                f.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn resolve(cfg: &Config) -> Result<Resolved, ConfigError> {
        cfg.score.clone().unwrap().resolve(
            cfg.kafka.transaction_timeout,
            &cfg.clean.clone().unwrap_or_default(),
        )
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, "test.toml", &[])
    }

    fn root(p: &str) -> String {
        format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))
    }

    fn section(extra: &str) -> String {
        format!(
            "[score]\nschema_in = \"{}\"\nschema_out = \"{}\"\n{extra}",
            root("schemas/league_entry.cleaned.avsc"),
            root("schemas/league_entry.scored.avsc")
        )
    }

    #[test]
    fn defaults_profile_the_data_fields() {
        let cfg = load(&section("")).unwrap();
        let score = cfg.score.clone().unwrap();
        assert_eq!(score.window_records, 1000);
        let r = resolve(&cfg).unwrap();
        let names: Vec<&str> = r.specs.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"league_points"), "{names:?}");
        assert!(names.contains(&"summoner_name"), "{names:?}");
        for lineage in LINEAGE_FIELDS {
            assert!(!names.contains(&lineage), "{names:?}");
        }
        assert!(r.baseline.is_none());
    }

    #[test]
    fn clean_key_and_derived_sums_are_left_out_by_default() {
        let text = format!(
            "{}\n[clean]\nschema = \"{}\"\nkey_field = \"summoner_id\"\n[clean.fields.games]\nderive = \"sum\"\nargs = [\"wins\", \"losses\"]\n",
            section(""),
            root("schemas/league_entry.cleaned.avsc")
        );
        let cfg = load(&text).unwrap();
        let r = resolve(&cfg).unwrap();
        let names: Vec<&str> = r.specs.iter().map(|s| s.name.as_str()).collect();
        assert!(!names.contains(&"summoner_id"), "{names:?}");
        assert!(!names.contains(&"games"), "{names:?}");
        assert!(names.contains(&"wins"), "{names:?}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("window_records = 0", "score.window_records"),
            ("window_records = 50", "score.window_records"),
            ("policy = \"drop\"", "score.policy"),
            (
                "baseline_from_first_records = 10",
                "score.baseline_from_first_records",
            ),
            ("fields = []", "score.fields"),
            ("batch_size = 0", "score.batch_size"),
            ("batch_max_age = \"40s\"", "score.batch_max_age"),
            ("fields = [\"nope\"]", "score.fields"),
            ("fields = [\"wins\", \"wins\"]", "score.fields"),
            ("baseline = \"/nonexistent/base.json\"", "score.baseline"),
            ("colour = \"red\"", "colour"),
        ];
        for (line, key) in cases {
            let err = load(&section(line)).unwrap_err().to_string();
            assert!(err.contains(key), "{line}: {err}");
        }
        let err = load("[score]\nschema_in = \"/nonexistent.avsc\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("score.schema_in"), "{err}");
    }

    #[test]
    fn output_schema_must_have_the_quality_fields() {
        // The cleaned schema as output lacks quality_window.
        let text = format!(
            "[score]\nschema_in = \"{0}\"\nschema_out = \"{0}\"\n",
            root("schemas/league_entry.cleaned.avsc")
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("score.schema_out"), "{err}");
        assert!(err.contains("quality_window"), "{err}");
        // The scored schema as input: the cleaned output lacks its quality fields.
        let text = format!(
            "[score]\nschema_in = \"{}\"\nschema_out = \"{}\"\n",
            root("schemas/league_entry.scored.avsc"),
            root("schemas/league_entry.cleaned.avsc")
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("score.schema_out"), "{err}");
    }
}
