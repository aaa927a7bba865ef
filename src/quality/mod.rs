//! Data-quality statistics for a window of records: missing and type-error ratios per
//! field ([`missing`]), PSI against a baseline ([`psi`](mod@psi)), VIF of the numeric fields
//! ([`vif`]), the per-window accumulator and its report ([`window`]), the PASS / WARN /
//! FAIL decision with its thresholds ([`decision`]), and the `etl-pipe profile` command
//! ([`profile`], [`html`]), and the page of `etl-pipe quality report` ([`timeline`]).
//!
//! Everything here is streaming: an accumulator takes one row at a time through the
//! [`FieldView`] trait (implemented for [`Record`] and JSON objects; `profile` adds CSV
//! rows), keeps O(fields²) state, and reports on demand. Reports never contain NaN:
//! a figure that cannot be computed is `null` with a status saying why, and an infinite
//! VIF is the string `"inf"`.
//!
//! The score stage uses it like this:
//!
//! ```
//! use etl_pipe::quality::{Baseline, BaselineBuilder, FieldKind, FieldSpec, QualityConfig, WindowStats};
//! use etl_pipe::record::{Record, Value};
//!
//! let cfg = QualityConfig::default();
//! let specs = vec![FieldSpec::new("points", FieldKind::Numeric), FieldSpec::new("tier", FieldKind::Categorical)];
//! let rec = |p: i64, t: &str| Record { fields: vec![("points".into(), Value::Long(p)), ("tier".into(), Value::String(t.into()))] };
//!
//! // Baseline from a reference sample (persist it with serde_json; load it at start-up).
//! let mut b = BaselineBuilder::new(specs.clone(), &cfg);
//! for i in 0..1000 { b.push(&rec(i % 100, if i % 3 == 0 { "GOLD" } else { "SILVER" })); }
//! let baseline: Baseline = b.build();
//!
//! // One accumulator per partition window: push each record, report, reset.
//! let mut w = WindowStats::new(specs, Some(&baseline));
//! for i in 0..500 { w.push(&rec(i % 100, if i % 3 == 0 { "GOLD" } else { "SILVER" })); }
//! let report = w.report(&cfg);
//! assert_eq!(report.decision, etl_pipe::quality::Decision::Pass);
//! let json = serde_json::to_string(&report).unwrap();
//! assert!(!json.contains("NaN"));
//! w.reset();
//! ```
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::record::{FieldSchema, FieldType, Record, Value};

pub mod decision;
pub mod html;
pub mod missing;
pub mod profile;
pub mod psi;
pub mod timeline;
pub mod trailing;
pub mod vif;
pub mod window;

pub use decision::{Decision, FieldThresholds, Metric, QualityConfig, Reason};
pub use psi::{psi, Baseline, BaselineBuilder, BaselineField, FieldBaseline};
pub use trailing::{Trailing, TrailingVerdict};
pub use vif::{CoMoments, Vif, VifOutcome};
pub use window::{
    Distribution, FieldReport, Figure, PsiStatus, QualityReport, VifStatus, VifSummary, WindowStats,
};

/// How a field is analysed: numbers (PSI over quantile bins, VIF) or categories (PSI over
/// category frequencies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    Numeric,
    Categorical,
}

impl FieldKind {
    /// The kind of a declared schema type: booleans and strings are categorical, every
    /// number (timestamps included) is numeric; `None` for the types the quality report does
    /// not profile yet.
    pub fn of_type(ty: &FieldType) -> Option<FieldKind> {
        match ty {
            FieldType::Boolean | FieldType::String => Some(FieldKind::Categorical),
            FieldType::Int
            | FieldType::Long
            | FieldType::Float
            | FieldType::Double
            | FieldType::TimestampMillis => Some(FieldKind::Numeric),
            // phase 2 (issue 20): leaves of nested records by path, enums as categories,
            // decimals and the other logical types as numbers, arrays by length.
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            FieldKind::Numeric => "numeric",
            FieldKind::Categorical => "categorical",
        }
    }
}

/// A field to analyse: its name and kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    pub name: String,
    pub kind: FieldKind,
}

impl FieldSpec {
    pub fn new(name: impl Into<String>, kind: FieldKind) -> Self {
        Self {
            name: name.into(),
            kind,
        }
    }

    /// The spec of a schema field (kind from its declared type), or why it cannot be
    /// profiled (a type outside the flat set), naming the field.
    pub fn from_schema(field: &FieldSchema) -> Result<Self, String> {
        match FieldKind::of_type(&field.ty) {
            Some(kind) => Ok(Self::new(field.name.clone(), kind)),
            None => Err(format!(
                "field `{}` is of type {}, which the quality report cannot profile yet \
                 (nested types: issue 20, phase 2)",
                field.name,
                field.ty.avro_name()
            )),
        }
    }
}

/// One field of one row, as the accumulators see it: borrowed, never copied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    /// The row does not have the field.
    Absent,
    /// The field is present and null.
    Null,
    Number(f64),
    /// Text: a string value or a CSV cell. An empty or all-blank text counts as missing.
    Text(&'a str),
    Bool(bool),
    /// Anything else (a JSON array or object): a type error for every kind.
    Other,
}

impl<'a> Cell<'a> {
    /// The cell of a JSON value (`None` = absent).
    pub fn from_json(v: Option<&'a serde_json::Value>) -> Self {
        match v {
            None => Cell::Absent,
            Some(serde_json::Value::Null) => Cell::Null,
            Some(serde_json::Value::Bool(b)) => Cell::Bool(*b),
            Some(serde_json::Value::Number(n)) => n.as_f64().map_or(Cell::Other, Cell::Number),
            Some(serde_json::Value::String(s)) => Cell::Text(s),
            Some(_) => Cell::Other,
        }
    }

    /// The cell of a record value (`None` = absent).
    pub fn from_value(v: Option<&'a Value>) -> Self {
        match v {
            None => Cell::Absent,
            Some(Value::Null) => Cell::Null,
            Some(Value::Boolean(b)) => Cell::Bool(*b),
            Some(Value::String(s)) => Cell::Text(s),
            // phase 2 (issue 20): leaves of nested values by path, arrays by length; until
            // then a nested value is `Other` (a type error), and `FieldSpec::from_schema`
            // keeps nested fields out of the report.
            Some(other) => other.as_f64().map_or(Cell::Other, Cell::Number),
        }
    }
}

/// What a cell means for a field of a given kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Classified<'a> {
    /// Absent, null, or empty/blank text.
    Missing,
    /// Present but not of the field's kind (see [`classify`]).
    TypeError,
    /// A finite number (numeric fields).
    Number(f64),
    /// A category label (categorical fields).
    Category(Cow<'a, str>),
}

/// Sorts a cell into missing / type error / value for a field of `kind`.
///
/// - Missing: absent, null, or text that is empty after trimming (a CSV empty cell).
/// - Numeric fields take finite numbers and text that parses as a finite number
///   (`" 12.5 "`, `"1e3"`); booleans, other text, NaN/±inf, arrays and objects are type errors.
/// - Categorical fields take text (trimmed), booleans (`"true"`/`"false"`) and numbers
///   (their shortest decimal form, `3.0` → `"3"`); arrays and objects are type errors.
pub fn classify<'a>(cell: Cell<'a>, kind: FieldKind) -> Classified<'a> {
    match (cell, kind) {
        (Cell::Absent | Cell::Null, _) => Classified::Missing,
        (Cell::Text(s), _) if s.trim().is_empty() => Classified::Missing,
        (Cell::Other, _) => Classified::TypeError,
        (Cell::Number(x), FieldKind::Numeric) => {
            if x.is_finite() {
                Classified::Number(x)
            } else {
                Classified::TypeError
            }
        }
        (Cell::Text(s), FieldKind::Numeric) => match parse_number(s) {
            Some(x) => Classified::Number(x),
            None => Classified::TypeError,
        },
        (Cell::Bool(_), FieldKind::Numeric) => Classified::TypeError,
        (Cell::Text(s), FieldKind::Categorical) => Classified::Category(Cow::Borrowed(s.trim())),
        (Cell::Bool(b), FieldKind::Categorical) => {
            Classified::Category(Cow::Borrowed(if b { "true" } else { "false" }))
        }
        (Cell::Number(x), FieldKind::Categorical) => {
            Classified::Category(Cow::Owned(x.to_string()))
        }
    }
}

/// A finite number written as text, or `None`. Accepts what Rust's `f64` parser accepts
/// after trimming blanks, except `nan`/`inf` spellings.
pub fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

/// A row as the accumulators see it: the cell of each field they track.
pub trait FieldView {
    /// The cell of the field at `index` in the accumulator's field list, named `name`.
    /// Name-keyed rows ignore the index; positional rows (CSV) ignore the name.
    fn cell(&self, index: usize, name: &str) -> Cell<'_>;
}

impl FieldView for Record {
    fn cell(&self, _index: usize, name: &str) -> Cell<'_> {
        Cell::from_value(self.get(name))
    }
}

impl FieldView for serde_json::Map<String, serde_json::Value> {
    fn cell(&self, _index: usize, name: &str) -> Cell<'_> {
        Cell::from_json(self.get(name))
    }
}

/// Cells given positionally, in the accumulator's field order (tests, adapters).
impl<'c> FieldView for [Cell<'c>] {
    fn cell(&self, index: usize, _name: &str) -> Cell<'_> {
        self.get(index).copied().unwrap_or(Cell::Absent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nested_field_cannot_be_profiled_yet_and_says_which() {
        let f = |ty| FieldSchema {
            name: "mini_series".into(),
            ty,
            nullable: true,
            doc: None,
            default: None,
            aliases: Vec::new(),
        };
        assert_eq!(
            FieldSpec::from_schema(&f(FieldType::Long)).unwrap().kind,
            FieldKind::Numeric
        );
        let e = FieldSpec::from_schema(&f(FieldType::Map(Box::new(FieldType::Int)))).unwrap_err();
        assert!(e.contains("`mini_series`") && e.contains("map"), "{e}");
    }

    #[test]
    fn classify_follows_the_documented_rules() {
        use Classified as C;
        let n = FieldKind::Numeric;
        let c = FieldKind::Categorical;
        assert_eq!(classify(Cell::Absent, n), C::Missing);
        assert_eq!(classify(Cell::Null, c), C::Missing);
        assert_eq!(classify(Cell::Text("  "), n), C::Missing);
        assert_eq!(classify(Cell::Text(" 1e3 "), n), C::Number(1000.0));
        assert_eq!(classify(Cell::Text("abc"), n), C::TypeError);
        assert_eq!(classify(Cell::Text("NaN"), n), C::TypeError);
        assert_eq!(classify(Cell::Number(f64::NAN), n), C::TypeError);
        assert_eq!(classify(Cell::Bool(true), n), C::TypeError);
        assert_eq!(classify(Cell::Other, c), C::TypeError);
        assert_eq!(classify(Cell::Number(3.0), c), C::Category("3".into()));
        assert_eq!(classify(Cell::Bool(false), c), C::Category("false".into()));
        assert_eq!(
            classify(Cell::Text(" GOLD "), c),
            C::Category("GOLD".into())
        );
    }

    #[test]
    fn record_and_json_views_agree() {
        let rec = Record {
            fields: vec![
                ("a".into(), Value::Int(3)),
                ("b".into(), Value::Null),
                ("c".into(), Value::String("x".into())),
            ],
        };
        let json: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"a": 3, "b": null, "c": "x"}"#).unwrap();
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            assert_eq!(rec.cell(i, name), json.cell(i, name), "{name}");
        }
        assert_eq!(rec.cell(0, "d"), Cell::Absent);
    }
}
