//! The per-window accumulator ([`WindowStats`]) and its report ([`QualityReport`]).
//!
//! Push rows one at a time (any [`FieldView`]: a [`crate::record::Record`], a JSON
//! object, a CSV row), then [`WindowStats::report`] whenever a window closes and
//! [`WindowStats::reset`] to start the next one. Memory is O(k²) for k fields (plus the
//! baseline's buckets), independent of the number of rows.
//!
//! JSON shape of a report (no NaN anywhere; see `docs/notes/quality.md`):
//! `{"rows", "decision", "reasons": [...], "fields": [{"name", "kind", "missing",
//! "missing_ratio", "type_errors", "type_error_ratio", "mean", "std", "min", "max",
//! "psi", "psi_status", "vif", "vif_status", "decision"}], "vif": {"status", "fields",
//! "rows_used", "needed"}, "baseline_rows", "notes": [...]}`. `psi` is a number or
//! `null` (with `psi_status` saying why); `vif` is a number, the string `"inf"`, or
//! `null` (with `vif_status`). `profile` adds `distribution` to a field with a PSI (see
//! [`Distribution`]); the score stage's reports leave it out.
use serde::{Deserialize, Serialize, Serializer};

use super::missing::FieldCounts;
use super::psi::PsiCounter;
use super::vif::{CoMoments, Vif, VifOutcome};
use super::{
    classify, Baseline, Classified, Decision, FieldKind, FieldSpec, FieldView, Metric,
    QualityConfig, Reason,
};

/// A number in a report: finite as a JSON number, ±infinity as `"inf"` / `"-inf"`,
/// NaN (never produced) as `null`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure(pub f64);

impl Serialize for Figure {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_finite() {
            s.serialize_f64(v)
        } else if v == f64::INFINITY {
            s.serialize_str("inf")
        } else if v == f64::NEG_INFINITY {
            s.serialize_str("-inf")
        } else {
            s.serialize_none()
        }
    }
}

/// Why a field's PSI is or is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PsiStatus {
    Ok,
    /// No baseline was given at all.
    NoBaseline,
    /// The baseline does not have this field.
    NotInBaseline,
    /// The baseline has the field with the other kind (numeric vs categorical).
    KindMismatch,
    /// The baseline has the field but no valid values for it.
    BaselineEmpty,
    /// The window has no valid values for the field.
    NoData,
}

/// Why a field's VIF is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VifStatus {
    Ok,
    /// Perfectly collinear with other fields (`vif` is `"inf"`).
    Infinite,
    /// No variance in the complete rows (`vif` is `null`).
    Constant,
    /// A categorical field.
    NotNumeric,
    /// Fewer complete rows than numeric fields + 1.
    NotEnoughData,
    /// Fewer than two numeric fields.
    NotApplicable,
}

/// The VIF computation of the window as a whole.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VifSummary {
    /// `ok`, `not_enough_data` or `not_applicable`.
    pub status: VifStatus,
    /// Numeric fields in the computation.
    pub fields: usize,
    /// Complete rows (every numeric field valid) the VIFs are computed from.
    pub rows_used: u64,
    /// Complete rows needed (numeric fields + 1).
    pub needed: u64,
}

/// The figures and decision of one field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldReport {
    pub name: String,
    pub kind: FieldKind,
    pub missing: u64,
    pub missing_ratio: f64,
    pub type_errors: u64,
    pub type_error_ratio: f64,
    /// Mean, sample standard deviation, minimum and maximum of the valid values
    /// (numeric fields; `null` otherwise or when there are too few values).
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub psi: Option<f64>,
    pub psi_status: PsiStatus,
    pub vif: Option<Figure>,
    pub vif_status: VifStatus,
    pub decision: Decision,
    /// The baseline's and the window's share of values per PSI bucket (`profile` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
}

/// A field's values per PSI bucket, in the baseline and in the window: what its PSI is
/// computed from, kept so a reader can see where the mass moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// One label per bucket: a numeric bin `(a, b]` from the baseline's quantile edges, or a
    /// category (the last one is `other`: the baseline's rarer categories and unseen ones).
    pub buckets: Vec<String>,
    /// The baseline's proportion in each bucket.
    pub baseline: Vec<f64>,
    /// The window's proportion in each bucket (all 0 when the window has no values).
    pub window: Vec<f64>,
}

/// The quality report of one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityReport {
    pub rows: u64,
    pub decision: Decision,
    /// Every WARN and FAIL, worst first.
    pub reasons: Vec<Reason>,
    pub fields: Vec<FieldReport>,
    pub vif: VifSummary,
    /// Rows of the baseline PSI is measured against (`null` without a baseline).
    pub baseline_rows: Option<u64>,
    /// Things worth knowing that do not change the decision.
    pub notes: Vec<String>,
}

impl QualityReport {
    /// Compact JSON (what the score stage publishes to the quality topic).
    pub fn to_json(&self) -> String {
        // Every number is finite or a Figure, so serialisation cannot fail; keep a
        // valid JSON fallback anyway rather than panicking.
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
    }
}

/// Accumulates the quality statistics of one window.
#[derive(Debug, Clone)]
pub struct WindowStats {
    specs: Vec<FieldSpec>,
    counts: Vec<FieldCounts>,
    psi: Vec<Result<PsiCounter, PsiStatus>>,
    /// Position of each field in the VIF vector (numeric fields only).
    vif_pos: Vec<Option<usize>>,
    vif: CoMoments,
    row: Vec<f64>,
    rows: u64,
    baseline_rows: Option<u64>,
}

impl WindowStats {
    /// An accumulator for these fields, measuring PSI against `baseline` when given.
    /// Every numeric field takes part in the VIF.
    pub fn new(specs: Vec<FieldSpec>, baseline: Option<&Baseline>) -> Self {
        let psi = specs
            .iter()
            .map(|s| {
                let b = baseline.ok_or(PsiStatus::NoBaseline)?;
                let f = b.field(&s.name).ok_or(PsiStatus::NotInBaseline)?;
                if f.dist.kind() != s.kind {
                    return Err(PsiStatus::KindMismatch);
                }
                PsiCounter::new(f).ok_or(PsiStatus::BaselineEmpty)
            })
            .collect();
        let mut next = 0;
        let vif_pos: Vec<Option<usize>> = specs
            .iter()
            .map(|s| {
                (s.kind == FieldKind::Numeric).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        Self {
            counts: vec![FieldCounts::default(); specs.len()],
            specs,
            psi,
            vif_pos,
            vif: CoMoments::new(next),
            row: vec![0.0; next],
            rows: 0,
            baseline_rows: baseline.map(|b| b.rows),
        }
    }

    pub fn specs(&self) -> &[FieldSpec] {
        &self.specs
    }

    /// Rows pushed since creation or the last reset.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Forgets the window's rows (keeps the fields and the baseline).
    pub fn reset(&mut self) {
        self.counts
            .iter_mut()
            .for_each(|c| *c = FieldCounts::default());
        for p in self.psi.iter_mut().flatten() {
            p.reset();
        }
        self.vif.reset();
        self.rows = 0;
    }

    /// Adds one row.
    pub fn push<V: FieldView + ?Sized>(&mut self, row: &V) {
        self.push_cells(|i, spec| (classify(row.cell(i, &spec.name), spec.kind), None));
    }

    /// [`WindowStats::push`] of a row classified already: `cell(i, spec)` gives field `i`'s
    /// value and, when the caller found it with the same baseline, its PSI bucket (the
    /// trailing window's rows: no second classification or category look-up).
    pub(crate) fn push_cells<'a>(
        &mut self,
        mut cell: impl FnMut(usize, &FieldSpec) -> (Classified<'a>, Option<u32>),
    ) {
        self.rows += 1;
        // Only rows whose numeric fields are all valid enter the VIF (listwise deletion);
        // gaps in categorical fields do not matter to it.
        let mut complete = true;
        for i in 0..self.specs.len() {
            let (value, bucket) = cell(i, &self.specs[i]);
            let numeric = self.specs[i].kind == FieldKind::Numeric;
            let c = &mut self.counts[i];
            c.rows += 1;
            let psi = self.psi[i].as_mut().ok();
            match value {
                Classified::Missing => {
                    c.missing += 1;
                    complete &= !numeric;
                }
                Classified::TypeError => {
                    c.type_errors += 1;
                    complete &= !numeric;
                }
                Classified::Number(x) => {
                    c.moments.push(x);
                    match (psi, bucket) {
                        (Some(p), Some(b)) => p.add_to_bucket(b as usize),
                        (Some(p), None) => p.add_number(x),
                        (None, _) => {}
                    }
                    if let Some(pos) = self.vif_pos[i] {
                        self.row[pos] = x;
                    }
                }
                Classified::Category(s) => match (psi, bucket) {
                    (Some(p), Some(b)) => p.add_to_bucket(b as usize),
                    (Some(p), None) => p.add_category(&s),
                    (None, _) => {}
                },
            }
        }
        if complete {
            self.vif.push(&self.row);
        }
    }

    /// Each field's baseline and window proportions per PSI bucket (`None` for a field
    /// without PSI).
    pub fn distributions(&self) -> Vec<Option<Distribution>> {
        self.psi
            .iter()
            .map(|p| p.as_ref().ok().map(PsiCounter::distribution))
            .collect()
    }

    /// The figures and the decision for the rows pushed so far.
    pub fn report(&self, cfg: &QualityConfig) -> QualityReport {
        let vif = self.vif.vif();
        let summary = self.vif_summary(&vif);
        let mut reasons = Vec::new();
        let mut notes = Vec::new();
        let mut fields = Vec::with_capacity(self.specs.len());
        for i in 0..self.specs.len() {
            let (field, mine) = self.field_report(i, cfg, &vif);
            if field.vif_status == VifStatus::Constant {
                notes.push(format!("{}: constant in the rows used for VIF", field.name));
            }
            reasons.extend(mine);
            fields.push(field);
        }
        if self.rows == 0 {
            reasons.push(Reason {
                field: None,
                metric: Metric::Rows,
                level: Decision::Warn,
                value: Figure(0.0),
                threshold: 0.0,
                message: "the window has no rows".into(),
            });
        }
        if self.baseline_rows.is_none() {
            notes.push("PSI needs a baseline; none given".into());
        }
        match summary.status {
            VifStatus::NotEnoughData => notes.push(format!(
                "VIF: not enough data: {} complete rows, at least {} needed for {} numeric fields",
                summary.rows_used, summary.needed, summary.fields
            )),
            VifStatus::NotApplicable => notes.push(format!(
                "VIF: needs at least two numeric fields ({} here)",
                summary.fields
            )),
            _ => {}
        }
        reasons.sort_by_key(|r| std::cmp::Reverse(r.level));
        QualityReport {
            rows: self.rows,
            decision: super::decision::worst(&reasons),
            reasons,
            fields,
            vif: summary,
            baseline_rows: self.baseline_rows,
            notes,
        }
    }

    fn vif_summary(&self, vif: &VifOutcome) -> VifSummary {
        let k = self.vif.k();
        VifSummary {
            status: match vif {
                VifOutcome::Computed(_) => VifStatus::Ok,
                VifOutcome::NotEnoughData { .. } => VifStatus::NotEnoughData,
                VifOutcome::NotApplicable => VifStatus::NotApplicable,
            },
            fields: k,
            rows_used: self.vif.n(),
            needed: k as u64 + 1,
        }
    }

    /// The figures of field `i`, and its WARN and FAIL reasons.
    fn field_report(
        &self,
        i: usize,
        cfg: &QualityConfig,
        vif: &VifOutcome,
    ) -> (FieldReport, Vec<Reason>) {
        let spec = &self.specs[i];
        let c = &self.counts[i];
        let numeric = spec.kind == FieldKind::Numeric;
        let (psi, psi_status) = match &self.psi[i] {
            Ok(p) => match p.psi(cfg.epsilon) {
                Some(v) => (Some(v), PsiStatus::Ok),
                None => (None, PsiStatus::NoData),
            },
            Err(status) => (None, *status),
        };
        let (vif_fig, vif_status) = match (self.vif_pos[i], vif) {
            (None, _) => (None, VifStatus::NotNumeric),
            (Some(p), VifOutcome::Computed(v)) => match v.get(p) {
                Some(Vif::Value(x)) => (Some(*x), VifStatus::Ok),
                Some(Vif::Infinite) => (Some(f64::INFINITY), VifStatus::Infinite),
                _ => (None, VifStatus::Constant),
            },
            (Some(_), VifOutcome::NotEnoughData { .. }) => (None, VifStatus::NotEnoughData),
            (Some(_), VifOutcome::NotApplicable) => (None, VifStatus::NotApplicable),
        };
        let mut mine: Vec<Reason> = Vec::new();
        if self.rows > 0 {
            mine.extend(cfg.judge(&spec.name, Metric::MissingRatio, c.missing_ratio()));
            mine.extend(cfg.judge(&spec.name, Metric::TypeErrorRatio, c.type_error_ratio()));
        }
        if let Some(v) = psi {
            mine.extend(cfg.judge(&spec.name, Metric::Psi, v));
        }
        if let Some(v) = vif_fig {
            mine.extend(cfg.judge(&spec.name, Metric::Vif, v));
        }
        let decision = mine.iter().map(|r| r.level).max().unwrap_or(Decision::Pass);
        let field = FieldReport {
            name: spec.name.clone(),
            kind: spec.kind,
            missing: c.missing,
            missing_ratio: c.missing_ratio(),
            type_errors: c.type_errors,
            type_error_ratio: c.type_error_ratio(),
            mean: numeric.then(|| c.moments.mean()).flatten(),
            std: numeric.then(|| c.moments.std()).flatten(),
            min: numeric.then(|| c.moments.min()).flatten(),
            max: numeric.then(|| c.moments.max()).flatten(),
            psi,
            psi_status,
            vif: vif_fig.map(Figure),
            vif_status,
            decision,
            distribution: None,
        };
        (field, mine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::{BaselineBuilder, Cell};
    use crate::record::{Record, Value};

    fn rec(x: Option<f64>, y: Value, tier: &str) -> Record {
        let mut r = Record::new();
        if let Some(x) = x {
            r.set("x", Value::Double(x));
        }
        r.set("y", y);
        r.set("tier", Value::String(tier.into()));
        r
    }

    fn specs() -> Vec<FieldSpec> {
        vec![
            FieldSpec::new("x", FieldKind::Numeric),
            FieldSpec::new("y", FieldKind::Numeric),
            FieldSpec::new("tier", FieldKind::Categorical),
        ]
    }

    #[test]
    fn counts_missing_and_type_errors_and_uses_complete_rows_for_vif() {
        let mut w = WindowStats::new(specs(), None);
        for i in 0..100 {
            let x = (i % 4 != 0).then_some(i as f64); // 25 % absent
            let y = if i % 10 == 0 {
                Value::String("n/a".into()) // 10 % type errors
            } else {
                Value::Long((i * i % 17) as i64)
            };
            w.push(&rec(x, y, if i % 2 == 0 { "A" } else { "B" }));
        }
        let r = w.report(&QualityConfig::default());
        assert_eq!(r.rows, 100);
        let x = &r.fields[0];
        assert_eq!((x.missing, x.missing_ratio), (25, 0.25));
        assert_eq!(x.decision, Decision::Fail);
        let y = &r.fields[1];
        assert_eq!((y.type_errors, y.type_error_ratio), (10, 0.1));
        assert_eq!(y.decision, Decision::Warn);
        // Rows with x present and y valid: i % 4 != 0 and i % 10 != 0 → 100 − 25 − 10 + 5.
        assert_eq!(r.vif.rows_used, 70);
        assert_eq!(r.fields[2].vif_status, VifStatus::NotNumeric);
        assert_eq!(r.fields[2].psi_status, PsiStatus::NoBaseline);
        assert_eq!(r.decision, Decision::Fail);
        assert_eq!(r.reasons[0].level, Decision::Fail);
        assert_eq!(
            r.reasons[0].message,
            "x: missing ratio 0.2500 >= 0.2 (FAIL)"
        );
        assert!(
            r.notes.iter().any(|n| n.contains("baseline")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn json_has_no_nan_and_spells_infinite_vif() {
        let mut w = WindowStats::new(specs(), None);
        for i in 0..50 {
            let x = i as f64;
            w.push(&rec(Some(x), Value::Double(2.0 * x), "A"));
        }
        let r = w.report(&QualityConfig::default());
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["fields"][0]["vif"], "inf");
        assert_eq!(json["fields"][0]["vif_status"], "infinite");
        assert_eq!(json["fields"][0]["psi"], serde_json::Value::Null);
        assert_eq!(json["fields"][2]["vif"], serde_json::Value::Null);
        assert_eq!(json["decision"], "FAIL");
        assert_eq!(json["reasons"][0]["value"], "inf");
        assert_eq!(json["vif"]["status"], "ok");
        assert!(!r.to_json().contains("NaN"));
    }

    #[test]
    fn empty_and_tiny_windows_are_explicit() {
        let mut w = WindowStats::new(specs(), None);
        let r = w.report(&QualityConfig::default());
        assert_eq!(r.decision, Decision::Warn);
        assert_eq!(r.reasons[0].metric, Metric::Rows);
        assert_eq!(r.vif.status, VifStatus::NotEnoughData);
        assert!(!r.to_json().contains("NaN"));
        w.push(&rec(Some(1.0), Value::Int(2), "A"));
        w.push(&rec(Some(2.0), Value::Int(1), "A"));
        let r = w.report(&QualityConfig::default());
        assert_eq!(r.decision, Decision::Pass);
        assert_eq!(r.fields[0].vif_status, VifStatus::NotEnoughData);
        assert!(
            r.notes.iter().any(|n| n.contains("not enough data")),
            "{:?}",
            r.notes
        );
        w.reset();
        assert_eq!(w.rows(), 0);
        assert_eq!(w.report(&QualityConfig::default()).fields[0].missing, 0);
    }

    #[test]
    fn psi_against_a_baseline_and_missing_baseline_fields() {
        let cfg = QualityConfig::default();
        let mut b = BaselineBuilder::new(
            vec![
                FieldSpec::new("x", FieldKind::Numeric),
                FieldSpec::new("tier", FieldKind::Numeric),
            ],
            &cfg,
        );
        for i in 0..1000 {
            b.push(&[Cell::Number(i as f64), Cell::Number(1.0)][..]);
        }
        let base = b.build();
        let mut w = WindowStats::new(specs(), Some(&base));
        for i in 0..1000 {
            // Same distribution for x.
            w.push(&rec(Some(((i * 7) % 1000) as f64), Value::Int(i), "A"));
        }
        let r = w.report(&cfg);
        assert_eq!(r.fields[0].psi, Some(0.0));
        assert_eq!(r.fields[1].psi_status, PsiStatus::NotInBaseline);
        assert_eq!(r.fields[2].psi_status, PsiStatus::KindMismatch);
        assert_eq!(r.baseline_rows, Some(1000));
        // Shift x above the baseline's range: every value in the top bin → FAIL.
        w.reset();
        for i in 0..100 {
            w.push(&rec(Some(5000.0 + i as f64), Value::Int(i), "A"));
        }
        let r = w.report(&cfg);
        assert!(r.fields[0].psi.unwrap() > 0.25);
        assert_eq!(r.fields[0].decision, Decision::Fail);
    }
}
