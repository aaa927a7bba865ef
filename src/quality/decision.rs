//! The PASS / WARN / FAIL decision for a window, and its thresholds (`[quality]` in the
//! config).
//!
//! Rule, per field and metric: value ≥ fail threshold → FAIL, else value ≥ warn
//! threshold → WARN, else PASS. A threshold of `inf` turns that level off. The window's
//! decision is the worst of its fields'; every WARN/FAIL comes with a [`Reason`].
//! Metrics: missing ratio, type-error ratio, PSI (when computed), VIF (when computed;
//! an infinite VIF is ≥ every finite threshold). Constant fields, "not enough data" and
//! missing baselines are reported but do not change the decision. An empty window is WARN.
//!
//! Per-field overrides live under `[quality.fields.<name>]` with the same threshold keys.
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::settings::ConfigError;

/// The outcome for a window or a field. Ordered: PASS < WARN < FAIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Decision {
    Pass,
    Warn,
    Fail,
}

impl Decision {
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Pass => "PASS",
            Decision::Warn => "WARN",
            Decision::Fail => "FAIL",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a threshold applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    MissingRatio,
    TypeErrorRatio,
    Psi,
    Vif,
    /// The window itself (empty window).
    Rows,
}

impl Metric {
    pub fn label(&self) -> &'static str {
        match self {
            Metric::MissingRatio => "missing ratio",
            Metric::TypeErrorRatio => "type-error ratio",
            Metric::Psi => "PSI",
            Metric::Vif => "VIF",
            Metric::Rows => "rows",
        }
    }
}

/// Why a window is not PASS.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    /// The field, or `null` for a window-level reason.
    pub field: Option<String>,
    pub metric: Metric,
    pub level: Decision,
    /// The measured value (`"inf"` for an infinite VIF).
    pub value: super::Figure,
    /// The threshold it reached.
    pub threshold: f64,
    /// One readable line, e.g. `rank: PSI 0.31 >= 0.25 (FAIL)`.
    pub message: String,
}

/// The worst level among `reasons` (PASS when there are none).
pub fn worst(reasons: &[Reason]) -> Decision {
    reasons
        .iter()
        .map(|r| r.level)
        .max()
        .unwrap_or(Decision::Pass)
}

/// Thresholds, PSI binning and baseline sampling (`[quality]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityConfig {
    /// Missing ratio (null or absent) at which a field WARNs; `inf` = off (the default).
    #[serde(default = "default_off")]
    pub missing_warn: f64,
    /// Missing ratio at which a field FAILs (the original project stopped at 20 %).
    #[serde(default = "default_missing_fail")]
    pub missing_fail: f64,
    /// Type-error ratio (values not of the field's type) at which a field WARNs.
    #[serde(default = "default_type_error_warn")]
    pub type_error_warn: f64,
    /// Type-error ratio at which a field FAILs.
    #[serde(default = "default_type_error_fail")]
    pub type_error_fail: f64,
    /// PSI at which a field WARNs (moderate shift).
    #[serde(default = "default_psi_warn")]
    pub psi_warn: f64,
    /// PSI at which a field FAILs (significant shift).
    #[serde(default = "default_psi_fail")]
    pub psi_fail: f64,
    /// VIF at which a numeric field WARNs.
    #[serde(default = "default_vif_warn")]
    pub vif_warn: f64,
    /// VIF at which a numeric field FAILs (perfect collinearity, VIF = inf, always reaches it).
    #[serde(default = "default_vif_fail")]
    pub vif_fail: f64,
    /// PSI bins per numeric field: the baseline's quantiles at 1/bins, 2/bins, ….
    #[serde(default = "default_bins")]
    pub bins: usize,
    /// Floor for a bin's proportion in PSI, so empty bins give a large but finite term.
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
    /// Values per numeric field kept (reservoir sample) to estimate the baseline's quantiles.
    #[serde(default = "default_baseline_sample")]
    pub baseline_sample: usize,
    /// Categories per categorical field kept in a baseline (most frequent); the rest, and
    /// categories never seen in the baseline, share one "other" bucket.
    #[serde(default = "default_max_categories")]
    pub max_categories: usize,
    /// Per-field threshold overrides: `[quality.fields.<name>]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, FieldThresholds>,
}

/// Per-field overrides; anything left out comes from `[quality]`. `inf` turns a level off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldThresholds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_warn: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_fail: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_error_warn: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_error_fail: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi_warn: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi_fail: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vif_warn: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vif_fail: Option<f64>,
}

fn default_off() -> f64 {
    f64::INFINITY
}
fn default_missing_fail() -> f64 {
    0.20
}
fn default_type_error_warn() -> f64 {
    0.01
}
fn default_type_error_fail() -> f64 {
    0.20
}
fn default_psi_warn() -> f64 {
    0.10
}
fn default_psi_fail() -> f64 {
    0.25
}
fn default_vif_warn() -> f64 {
    5.0
}
fn default_vif_fail() -> f64 {
    10.0
}
fn default_bins() -> usize {
    10
}
fn default_epsilon() -> f64 {
    1e-4
}
fn default_baseline_sample() -> usize {
    50_000
}
fn default_max_categories() -> usize {
    100
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            missing_warn: default_off(),
            missing_fail: default_missing_fail(),
            type_error_warn: default_type_error_warn(),
            type_error_fail: default_type_error_fail(),
            psi_warn: default_psi_warn(),
            psi_fail: default_psi_fail(),
            vif_warn: default_vif_warn(),
            vif_fail: default_vif_fail(),
            bins: default_bins(),
            epsilon: default_epsilon(),
            baseline_sample: default_baseline_sample(),
            max_categories: default_max_categories(),
            fields: BTreeMap::new(),
        }
    }
}

/// The WARN and FAIL thresholds of one metric for one field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub warn: f64,
    pub fail: f64,
}

impl Thresholds {
    /// The level `value` reaches (thresholds of `inf` never trigger).
    pub fn judge(&self, value: f64) -> Option<(Decision, f64)> {
        if self.fail.is_finite() && value >= self.fail {
            Some((Decision::Fail, self.fail))
        } else if self.warn.is_finite() && value >= self.warn {
            Some((Decision::Warn, self.warn))
        } else {
            None
        }
    }
}

impl QualityConfig {
    /// The thresholds of `metric` for `field`, overrides applied.
    pub fn thresholds(&self, field: &str, metric: Metric) -> Thresholds {
        let o = self.fields.get(field);
        let pick = |global: f64, over: fn(&FieldThresholds) -> Option<f64>| {
            o.and_then(over).unwrap_or(global)
        };
        match metric {
            Metric::MissingRatio => Thresholds {
                warn: pick(self.missing_warn, |f| f.missing_warn),
                fail: pick(self.missing_fail, |f| f.missing_fail),
            },
            Metric::TypeErrorRatio => Thresholds {
                warn: pick(self.type_error_warn, |f| f.type_error_warn),
                fail: pick(self.type_error_fail, |f| f.type_error_fail),
            },
            Metric::Psi => Thresholds {
                warn: pick(self.psi_warn, |f| f.psi_warn),
                fail: pick(self.psi_fail, |f| f.psi_fail),
            },
            Metric::Vif => Thresholds {
                warn: pick(self.vif_warn, |f| f.vif_warn),
                fail: pick(self.vif_fail, |f| f.vif_fail),
            },
            Metric::Rows => Thresholds {
                warn: f64::INFINITY,
                fail: f64::INFINITY,
            },
        }
    }

    /// A reason when `value` of `metric` reaches a threshold for `field`.
    pub fn judge(&self, field: &str, metric: Metric, value: f64) -> Option<Reason> {
        Self::judge_with(self.thresholds(field, metric), field, metric, value)
    }

    /// [`judge`](Self::judge) with the field's thresholds looked up already.
    pub fn judge_with(
        limits: Thresholds,
        field: &str,
        metric: Metric,
        value: f64,
    ) -> Option<Reason> {
        let (level, threshold) = limits.judge(value)?;
        let shown = if value.is_infinite() {
            "inf".to_string()
        } else {
            format!("{value:.4}")
        };
        Some(Reason {
            field: Some(field.to_string()),
            metric,
            level,
            value: super::Figure(value),
            threshold,
            message: format!(
                "{field}: {} {shown} >= {threshold} ({level})",
                metric.label()
            ),
        })
    }

    /// Rejects impossible thresholds and settings, naming the key (`quality.*`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let pairs = [
            ("missing", self.missing_warn, self.missing_fail, true),
            (
                "type_error",
                self.type_error_warn,
                self.type_error_fail,
                true,
            ),
            ("psi", self.psi_warn, self.psi_fail, false),
            ("vif", self.vif_warn, self.vif_fail, false),
        ];
        for (name, warn, fail, is_ratio) in pairs {
            check_pair(&format!("quality.{name}"), warn, fail, is_ratio)?;
        }
        if !(2..=1000).contains(&self.bins) {
            return Err(ConfigError::key(
                "quality.bins",
                "must be between 2 and 1000",
            ));
        }
        if !(self.epsilon > 0.0 && self.epsilon <= 0.01) {
            return Err(ConfigError::key(
                "quality.epsilon",
                "must be > 0 and <= 0.01 (it floors bin proportions in PSI)",
            ));
        }
        if self.baseline_sample < 100 || self.baseline_sample < self.bins {
            return Err(ConfigError::key(
                "quality.baseline_sample",
                "must be at least 100 and at least `quality.bins`",
            ));
        }
        if self.max_categories == 0 {
            return Err(ConfigError::key(
                "quality.max_categories",
                "must be at least 1",
            ));
        }
        for (field, o) in &self.fields {
            if field.is_empty() {
                return Err(ConfigError::key(
                    "quality.fields",
                    "field names must not be empty",
                ));
            }
            for (name, metric, is_ratio) in [
                ("missing", Metric::MissingRatio, true),
                ("type_error", Metric::TypeErrorRatio, true),
                ("psi", Metric::Psi, false),
                ("vif", Metric::Vif, false),
            ] {
                let t = self.thresholds(field, metric);
                let overridden = match metric {
                    Metric::MissingRatio => o.missing_warn.or(o.missing_fail),
                    Metric::TypeErrorRatio => o.type_error_warn.or(o.type_error_fail),
                    Metric::Psi => o.psi_warn.or(o.psi_fail),
                    _ => o.vif_warn.or(o.vif_fail),
                };
                if overridden.is_some() {
                    check_pair(
                        &format!("quality.fields.{field}.{name}"),
                        t.warn,
                        t.fail,
                        is_ratio,
                    )?;
                }
            }
        }
        Ok(())
    }
}

fn check_pair(prefix: &str, warn: f64, fail: f64, is_ratio: bool) -> Result<(), ConfigError> {
    for (suffix, v) in [("warn", warn), ("fail", fail)] {
        let key = format!("{prefix}_{suffix}");
        if v.is_nan() || v < 0.0 {
            return Err(ConfigError::key(
                key,
                "must be a number >= 0 (or inf to turn it off)",
            ));
        }
        if is_ratio && v.is_finite() && v > 1.0 {
            return Err(ConfigError::key(
                key,
                "is a ratio: must be <= 1 (or inf to turn it off)",
            ));
        }
    }
    if warn.is_finite() && fail.is_finite() && warn > fail {
        return Err(ConfigError::key(
            format!("{prefix}_warn"),
            format!("must not exceed {prefix}_fail ({warn} > {fail})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_issue() {
        let c = QualityConfig::default();
        c.validate().unwrap();
        assert_eq!(c.thresholds("x", Metric::MissingRatio).fail, 0.20);
        assert_eq!(
            c.thresholds("x", Metric::Psi),
            Thresholds {
                warn: 0.10,
                fail: 0.25
            }
        );
        assert_eq!(
            c.thresholds("x", Metric::Vif),
            Thresholds {
                warn: 5.0,
                fail: 10.0
            }
        );
    }

    #[test]
    fn levels_and_boundaries() {
        let c = QualityConfig::default();
        assert!(c.judge("x", Metric::MissingRatio, 0.19).is_none());
        let r = c.judge("x", Metric::MissingRatio, 0.20).unwrap();
        assert_eq!(r.level, Decision::Fail);
        assert_eq!(r.message, "x: missing ratio 0.2000 >= 0.2 (FAIL)");
        assert_eq!(
            c.judge("x", Metric::Psi, 0.1).unwrap().level,
            Decision::Warn
        );
        assert_eq!(
            c.judge("x", Metric::Psi, 0.25).unwrap().level,
            Decision::Fail
        );
        assert_eq!(
            c.judge("x", Metric::Vif, 5.0).unwrap().level,
            Decision::Warn
        );
        let r = c.judge("x", Metric::Vif, f64::INFINITY).unwrap();
        assert_eq!((r.level, r.threshold), (Decision::Fail, 10.0));
        assert!(r.message.contains("VIF inf"), "{}", r.message);
        assert!(Decision::Fail > Decision::Warn && Decision::Warn > Decision::Pass);
    }

    #[test]
    fn per_field_overrides_and_inf_turns_a_level_off() {
        let c: QualityConfig =
            toml::from_str("psi_fail = 0.3\n[fields.rank]\npsi_warn = 0.2\nvif_fail = inf\n")
                .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.thresholds("rank", Metric::Psi),
            Thresholds {
                warn: 0.2,
                fail: 0.3
            }
        );
        assert_eq!(
            c.thresholds("other", Metric::Psi),
            Thresholds {
                warn: 0.1,
                fail: 0.3
            }
        );
        let r = c.judge("rank", Metric::Vif, f64::INFINITY).unwrap();
        assert_eq!(r.level, Decision::Warn);
        assert!(c.judge("rank", Metric::Psi, 0.15).is_none());
    }

    #[test]
    fn bad_settings_name_the_key() {
        let bad = |t: &str| {
            let c: QualityConfig = toml::from_str(t).unwrap();
            c.validate().unwrap_err().to_string()
        };
        assert!(bad("psi_warn = 0.3\n").contains("quality.psi_warn"));
        assert!(bad("missing_fail = 1.5\n").contains("quality.missing_fail"));
        assert!(bad("vif_fail = nan\n").contains("quality.vif_fail"));
        assert!(bad("bins = 1\n").contains("quality.bins"));
        assert!(bad("epsilon = 0.0\n").contains("quality.epsilon"));
        assert!(bad("[fields.a]\nvif_warn = 20.0\n").contains("quality.fields.a.vif_warn"));
        assert!(toml::from_str::<QualityConfig>("psi_wran = 1.0\n").is_err());
    }
}
