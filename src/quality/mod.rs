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

use crate::record::{FieldSchema, FieldType, Record, RecordSchema, Value};

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
    /// The kind of a declared leaf type: booleans, strings and enums are categorical; every
    /// number is numeric, and so are decimals, dates, times and timestamps (as their Avro
    /// number: days, ms, µs or ns). `None` for what has no kind of its own: records (their
    /// leaves are profiled by path), arrays and maps (by length, `len(path)`), bytes, fixed,
    /// uuids (identifiers, not categories) and general unions.
    pub fn of_type(ty: &FieldType) -> Option<FieldKind> {
        match ty {
            FieldType::Boolean | FieldType::String | FieldType::Enum(_) => {
                Some(FieldKind::Categorical)
            }
            FieldType::Int
            | FieldType::Long
            | FieldType::Float
            | FieldType::Double
            | FieldType::TimestampMillis
            | FieldType::TimestampMicros
            | FieldType::TimestampNanos
            | FieldType::LocalTimestampMillis
            | FieldType::LocalTimestampMicros
            | FieldType::LocalTimestampNanos
            | FieldType::Date
            | FieldType::TimeMillis
            | FieldType::TimeMicros
            | FieldType::Decimal { .. } => Some(FieldKind::Numeric),
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

    /// The top-level field the spec reads (`a` of `a.b` and of `len(a.b)`).
    pub fn top_level(&self) -> &str {
        let path = match Path::of(&self.name) {
            Path::Name(p) | Path::Nested(p) | Path::Len(p) => p,
        };
        path.split('.').next().unwrap_or(path)
    }

    /// The spec of a top-level schema field (kind from its declared type), or why it cannot
    /// be profiled, naming the field.
    pub fn from_schema(field: &FieldSchema) -> Result<Self, String> {
        kind_at(&field.name, &field.ty).map(|kind| Self::new(field.name.clone(), kind))
    }

    /// The spec of a field path of `schema`: `name`, `record.leaf` through nested records
    /// (nullable ones too: a null parent makes the leaf missing), or `len(path)` for the
    /// length of an array or map. Errors name the path and what is wrong with it.
    pub fn from_path(schema: &RecordSchema, path: &str) -> Result<Self, String> {
        if let Some(inner) = path.strip_prefix("len(").and_then(|p| p.strip_suffix(')')) {
            return match type_at(schema, inner)? {
                FieldType::Array(_) | FieldType::Map(_) => Ok(Self::new(path, FieldKind::Numeric)),
                other => Err(format!(
                    "`{path}`: `{inner}` is {}, not an array or map (len() takes those)",
                    other.avro_name()
                )),
            };
        }
        kind_at(path, type_at(schema, path)?).map(|kind| Self::new(path, kind))
    }

    /// The default profiled leaves of `schema`, in schema order: each top-level field that
    /// `keep` accepts, as itself when it has a kind, as `len(path)` when it is an array or a
    /// map, and through non-nullable nested records as their leaves (`record.leaf`, by the
    /// same rules). Leaves under a nullable record are left out (a null parent would count as
    /// missing and take the row out of the VIF; list them in `score.fields` to profile them),
    /// and so are bytes, fixed, uuids and general unions.
    pub fn leaves(schema: &RecordSchema, keep: impl Fn(&FieldSchema) -> bool) -> Vec<Self> {
        fn walk<'f>(
            prefix: &str,
            fields: impl Iterator<Item = &'f FieldSchema>,
            out: &mut Vec<FieldSpec>,
        ) {
            for f in fields {
                let path = format!("{prefix}{}", f.name);
                match &f.ty {
                    FieldType::Record(r) if !f.nullable => {
                        walk(&format!("{path}."), r.fields.iter(), out)
                    }
                    FieldType::Array(_) | FieldType::Map(_) => {
                        out.push(FieldSpec::new(format!("len({path})"), FieldKind::Numeric))
                    }
                    ty => {
                        if let Some(kind) = FieldKind::of_type(ty) {
                            out.push(FieldSpec::new(path, kind));
                        }
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk("", schema.fields.iter().filter(|f| keep(f)), &mut out);
        out
    }
}

/// The kind of the leaf at `path` of type `ty`, or why it has none.
fn kind_at(path: &str, ty: &FieldType) -> Result<FieldKind, String> {
    FieldKind::of_type(ty).ok_or_else(|| match ty {
        FieldType::Record(_) => {
            format!("`{path}` is a record: profile its leaves (`{path}.<field>`)")
        }
        FieldType::Array(_) | FieldType::Map(_) => format!(
            "`{path}` is {}: profile its length as `len({path})`",
            ty.avro_name()
        ),
        _ => format!(
            "`{path}` is of type {}, which the quality report cannot profile (numbers, \
             decimals, dates, times, timestamps, strings, booleans and enums can be)",
            ty.avro_name()
        ),
    })
}

/// The declared type at a dotted path of `schema` (`mini_series.wins`), through nested
/// records; an error names the path and the step that does not exist.
fn type_at<'s>(schema: &'s RecordSchema, path: &str) -> Result<&'s FieldType, String> {
    let mut record = schema;
    let mut steps = path.split('.').peekable();
    while let Some(step) = steps.next() {
        let Some(f) = record.field(step) else {
            return Err(format!(
                "`{path}`: `{step}` is not a field of {}; its fields are: {}",
                record.name,
                record.field_names()
            ));
        };
        if steps.peek().is_none() {
            return Ok(&f.ty);
        }
        match &f.ty {
            FieldType::Record(r) => record = r,
            other => {
                return Err(format!(
                    "`{path}`: `{step}` is {}, not a record",
                    other.avro_name()
                ))
            }
        }
    }
    Err(format!("`{path}` is not a field path"))
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
            Some(Value::String(s) | Value::Enum(s)) => Cell::Text(s),
            // A record, array or map where a leaf is expected is a type error.
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

/// A field path of a row (see [`FieldSpec::from_path`]): a plain name, `a.b` through nested
/// objects, or `len(path)`. Avro names hold no `.` or `(`, so a plain name is looked up at
/// once.
enum Path<'n> {
    Name(&'n str),
    Nested(&'n str),
    Len(&'n str),
}

impl<'n> Path<'n> {
    fn of(name: &'n str) -> Self {
        match name.strip_prefix("len(").and_then(|p| p.strip_suffix(')')) {
            Some(inner) => Path::Len(inner),
            None if name.contains('.') => Path::Nested(name),
            None => Path::Name(name),
        }
    }
}

/// The value at a dotted path of a record: through nested records and maps; a null or
/// absent step makes the whole path absent or null.
fn value_at<'r>(record: &'r Record, path: &str) -> Option<&'r Value> {
    let mut steps = path.split('.');
    let mut v = record.get(steps.next()?)?;
    for step in steps {
        v = match v {
            Value::Record(r) => r.get(step)?,
            Value::Map(entries) => &entries.iter().find(|(k, _)| k.as_str() == step)?.1,
            Value::Null => return Some(v),
            _ => return None,
        };
    }
    Some(v)
}

fn json_at<'j>(
    object: &'j serde_json::Map<String, serde_json::Value>,
    path: &str,
) -> Option<&'j serde_json::Value> {
    let mut steps = path.split('.');
    let mut v = object.get(steps.next()?)?;
    for step in steps {
        v = match v {
            serde_json::Value::Object(o) => o.get(step)?,
            serde_json::Value::Null => return Some(v),
            _ => return None,
        };
    }
    Some(v)
}

impl FieldView for Record {
    fn cell(&self, _index: usize, name: &str) -> Cell<'_> {
        match Path::of(name) {
            Path::Name(n) => Cell::from_value(self.get(n)),
            Path::Nested(p) => Cell::from_value(value_at(self, p)),
            Path::Len(p) => match value_at(self, p) {
                Some(Value::Array(items)) => Cell::Number(items.len() as f64),
                Some(Value::Map(entries)) => Cell::Number(entries.len() as f64),
                other => Cell::from_value(other),
            },
        }
    }
}

impl FieldView for serde_json::Map<String, serde_json::Value> {
    fn cell(&self, _index: usize, name: &str) -> Cell<'_> {
        match Path::of(name) {
            Path::Name(n) => Cell::from_json(self.get(n)),
            Path::Nested(p) => Cell::from_json(json_at(self, p)),
            Path::Len(p) => match json_at(self, p) {
                Some(serde_json::Value::Array(items)) => Cell::Number(items.len() as f64),
                Some(serde_json::Value::Object(o)) => Cell::Number(o.len() as f64),
                other => Cell::from_json(other),
            },
        }
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

    fn nested() -> RecordSchema {
        crate::codec::load_schema(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/nested_entry.avsc"
        ))
        .unwrap()
    }

    #[test]
    fn field_paths_reach_nested_leaves_and_lengths_and_errors_name_the_path() {
        let s = nested();
        let spec = |p: &str| FieldSpec::from_path(&s, p);
        assert_eq!(spec("mini_series.wins").unwrap().kind, FieldKind::Numeric);
        assert_eq!(
            spec("mini_series.progress").unwrap().kind,
            FieldKind::Categorical
        );
        assert_eq!(spec("region").unwrap().kind, FieldKind::Categorical);
        for p in [
            "score", "prize", "day", "at_ms", "ts_us", "local_us", "ratio",
        ] {
            assert_eq!(spec(p).unwrap().kind, FieldKind::Numeric, "{p}");
        }
        assert_eq!(spec("len(players)").unwrap().kind, FieldKind::Numeric);
        assert_eq!(spec("len(counts)").unwrap().kind, FieldKind::Numeric);
        let err = |p: &str| spec(p).unwrap_err();
        let e = err("mini_series");
        assert!(
            e.contains("`mini_series` is a record") && e.contains("mini_series.<field>"),
            "{e}"
        );
        let e = err("players");
        assert!(e.contains("len(players)"), "{e}");
        let e = err("mini_series.nope");
        assert!(
            e.contains("`nope` is not a field of") && e.contains("progress"),
            "{e}"
        );
        let e = err("tags.x");
        assert!(e.contains("`tags` is array, not a record"), "{e}");
        let e = err("len(region)");
        assert!(e.contains("not an array or map"), "{e}");
        let e = err("id");
        assert!(e.contains("`id`") && e.contains("uuid"), "{e}");
    }

    #[test]
    fn default_leaves_go_through_non_nullable_records_and_count_arrays() {
        let s = RecordSchema::parse(
            r#"{"type":"record","name":"R","fields":[
            {"name":"a","type":"long"},
            {"name":"inner","type":{"type":"record","name":"I","fields":[
                {"name":"x","type":"double"},
                {"name":"deep","type":{"type":"record","name":"D","fields":[
                    {"name":"e","type":{"type":"enum","name":"E","symbols":["P","Q"]}}]}},
                {"name":"maybe","type":["null",{"type":"record","name":"M","fields":[
                    {"name":"m","type":"int"}]}],"default":null}]}},
            {"name":"list","type":{"type":"array","items":"int"}},
            {"name":"blob","type":"bytes"},
            {"name":"skip","type":"int"}]}"#,
        )
        .unwrap();
        let names: Vec<String> = FieldSpec::leaves(&s, |f| f.name != "skip")
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["a", "inner.x", "inner.deep.e", "len(list)"]);
    }

    #[test]
    fn records_give_nested_leaves_lengths_and_null_parents_as_missing() {
        let mut series = Record::new();
        series.set("wins", Value::Int(2));
        series.set("tier", Value::Enum("GOLD".into()));
        let mut r = Record::new();
        r.set("mini_series", Value::Record(series));
        r.set("other", Value::Null);
        r.set("list", Value::Array(vec![Value::Int(1), Value::Int(2)]));
        r.set("counts", Value::Map(vec![("k".into(), Value::Long(1))]));
        r.set(
            "score",
            Value::Decimal(crate::record::Decimal::new(-12_345, 2)),
        );
        r.set("day", Value::Date(19_000));
        assert_eq!(r.cell(0, "mini_series.wins"), Cell::Number(2.0));
        assert_eq!(r.cell(0, "mini_series.tier"), Cell::Text("GOLD"));
        assert_eq!(r.cell(0, "mini_series.nope"), Cell::Absent);
        assert_eq!(r.cell(0, "other.wins"), Cell::Null);
        assert_eq!(r.cell(0, "counts.k"), Cell::Number(1.0));
        assert_eq!(r.cell(0, "len(list)"), Cell::Number(2.0));
        assert_eq!(r.cell(0, "len(counts)"), Cell::Number(1.0));
        assert_eq!(r.cell(0, "len(other)"), Cell::Null);
        assert_eq!(r.cell(0, "score"), Cell::Number(-123.45));
        assert_eq!(r.cell(0, "day"), Cell::Number(19_000.0));
        // A record where a leaf is expected is a type error.
        assert_eq!(
            classify(r.cell(0, "mini_series"), FieldKind::Numeric),
            Classified::TypeError
        );
        // JSON objects by the same paths.
        let json: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"mini_series": {"wins": 2, "tier": "GOLD"}, "other": null, "list": [1, 2]}"#,
        )
        .unwrap();
        for p in [
            "mini_series.wins",
            "mini_series.tier",
            "other.wins",
            "len(list)",
            "nope.x",
        ] {
            assert_eq!(r.cell(0, p), json.cell(0, p), "{p}");
        }
    }

    #[test]
    fn nested_leaves_get_psi_missing_and_vif_in_a_window() {
        let s = nested();
        let specs: Vec<FieldSpec> = [
            "mini_series.wins",
            "mini_series.losses",
            "len(players)",
            "region",
        ]
        .iter()
        .map(|p| FieldSpec::from_path(&s, p).unwrap())
        .collect();
        let row = |i: i64| {
            let mut series = Record::new();
            series.set("wins", Value::Int((i % 3) as i32));
            series.set("losses", Value::Int((i % 5) as i32));
            let mut r = Record::new();
            r.set(
                "mini_series",
                if i % 10 == 0 {
                    Value::Null
                } else {
                    Value::Record(series)
                },
            );
            r.set("players", Value::Array(vec![Value::Null; (i % 4) as usize]));
            r.set(
                "region",
                Value::Enum(["EUW", "NA"][(i % 2) as usize].into()),
            );
            r
        };
        let cfg = QualityConfig::default();
        let mut b = BaselineBuilder::new(specs.clone(), &cfg);
        (0..1000).for_each(|i| b.push(&row(i)));
        let baseline = b.build();
        let mut w = WindowStats::new(specs, Some(&baseline));
        (0..500).for_each(|i| w.push(&row(i)));
        let report = w.report(&cfg);
        let f = |name: &str| report.fields.iter().find(|f| f.name == name).unwrap();
        assert_eq!(f("mini_series.wins").missing_ratio, 0.1);
        assert_eq!(f("len(players)").missing_ratio, 0.0);
        for name in ["mini_series.wins", "len(players)", "region"] {
            assert!(f(name).psi.is_some(), "{name}: {:?}", f(name));
        }
        assert!(
            f("mini_series.losses").vif.is_some(),
            "{:?}",
            f("mini_series.losses")
        );
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
