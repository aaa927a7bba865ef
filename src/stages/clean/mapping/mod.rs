//! The mapping engine: raw JSON bytes → a typed [`Record`] in schema order, or a
//! [`MappingError`] saying which field is wrong and why. Pure: no I/O, no clock.
//!
//! [`Mapper::new`] compiles `[clean]` against the schema once (`plan`), and is also the
//! start-up check: every contradiction is a [`ConfigError`](crate::settings::ConfigError)
//! naming the key (`clean.fields.wins.min`). Per record ([`Mapper::map`], here), fields read
//! from raw JSON come first, in schema order (`coerce`), then derived fields (`derive`),
//! then the checks (`required`, `min`/`max`, `allowed`) apply to every value (`check`).
//!
//! Lineage fields (`source`, `trace_id`, `source_topic`, `source_partition`,
//! `source_offset`, `fetched_at`) are filled from [`Lineage`], never from the raw JSON
//! (`lineage`).
mod check;
mod coerce;
mod derive;
mod lineage;
mod members;
mod nested;
mod plan;

use serde_json::Value as Json;

use self::coerce::convert;
use self::derive::derive;
use self::lineage::lineage_value;
use self::members::{Members, Picked};
use self::nested::{convert_any, At, Ctx};
use self::plan::{Plan, Source};
use crate::record::{FieldType, Record, Value};

pub use self::coerce::parse_rfc3339_ms;
pub use self::lineage::{Lineage, LINEAGE_FIELDS};
pub use self::plan::camel_case;

/// Why a raw record cannot be mapped; the dead-letter header `etl.error.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The bytes are not JSON (or not UTF-8).
    InvalidJson,
    /// Valid JSON, but not an object.
    NotAnObject,
    /// A required field is missing or null.
    MissingRequired,
    /// A value of the wrong JSON type that no allowed coercion converts.
    Type,
    /// A number outside `min`/`max` or the range of the schema type.
    OutOfRange,
    /// A value not in `allowed`.
    NotAllowed,
}

impl ErrorKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::NotAnObject => "not_an_object",
            ErrorKind::MissingRequired => "missing_required",
            ErrorKind::Type => "type",
            ErrorKind::OutOfRange => "out_of_range",
            ErrorKind::NotAllowed => "not_allowed",
        }
    }
}

/// A record that cannot be mapped (poison). `field` and `kind` are those of the first
/// problem; `message` lists every problem of the record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct MappingError {
    /// The schema field at fault; `None` when the whole record is (`invalid_json`, `not_an_object`).
    pub field: Option<String>,
    pub kind: ErrorKind,
    pub message: String,
}

/// A mapped record and its message key.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub record: Record,
    /// The `key_field` value as text; `None` when no `key_field` is configured.
    pub key: Option<String>,
}

/// A compiled mapping. Build once with [`Mapper::new`], then [`map`](Mapper::map) each record.
#[derive(Debug, Clone)]
pub struct Mapper {
    plans: Vec<Plan>,
    /// Indexes of the derived fields, computed after every other field.
    derived: Vec<usize>,
    /// Index of `key_field`.
    key: Option<usize>,
    /// The raw record's members the plans read.
    members: Members,
}

fn is_numeric(t: &FieldType) -> bool {
    matches!(
        t,
        FieldType::Int | FieldType::Long | FieldType::Float | FieldType::Double
    )
}

fn is_integer(t: &FieldType) -> bool {
    matches!(t, FieldType::Int | FieldType::Long)
}

/// The values of one record so far, and what went wrong.
struct Values {
    values: Vec<Value>,
    /// Fields whose own value failed (a derivation from them is not attempted).
    failed: Vec<bool>,
    errors: Vec<MappingError>,
}

impl Mapper {
    /// Maps one raw message value. Never panics on input.
    pub fn map(&self, raw: &[u8], lineage: &Lineage<'_>) -> Result<Mapped, MappingError> {
        let members = match self.members.parse(raw) {
            Ok(Picked::Object(members)) => members,
            Ok(Picked::NotAnObject(ty)) => {
                return Err(MappingError {
                    field: None,
                    kind: ErrorKind::NotAnObject,
                    message: format!("the raw record is a JSON {ty}, not an object"),
                })
            }
            Err(e) => {
                return Err(MappingError {
                    field: None,
                    kind: ErrorKind::InvalidJson,
                    message: format!("not valid JSON: {e}"),
                })
            }
        };
        let mut v = self.read(raw, &members, lineage);
        self.derive_all(&mut v);
        if let Some(e) = first_listing_all(&v.errors) {
            return Err(e);
        }
        let key = self.key.map(|k| key_text(&v.values[k]));
        let record = Record {
            fields: self
                .plans
                .iter()
                .zip(v.values)
                .map(|(p, v)| (p.name.clone(), v))
                .collect(),
        };
        Ok(Mapped { record, key })
    }

    /// Every field that is not derived, in schema order; derived ones are null for now.
    fn read(&self, raw: &[u8], members: &[Option<Json>], lineage: &Lineage<'_>) -> Values {
        let mut v = Values {
            values: Vec::with_capacity(self.plans.len()),
            failed: vec![false; self.plans.len()],
            errors: Vec::new(),
        };
        for (i, p) in self.plans.iter().enumerate() {
            let got = match &p.source {
                Source::Raw { from, path, coerce } => match self.members.lookup(members, i, path) {
                    None | Some(Json::Null) => Ok(None),
                    Some(j) if p.ty.is_flat() => convert(j, &p.ty, *coerce).map(Some),
                    Some(j) => {
                        let cx = Ctx {
                            raw,
                            coerce: *coerce,
                        };
                        convert_any(j, &p.ty, &cx, &At::Root { from, path }).map(Some)
                    }
                },
                Source::Lineage(l) => Ok(lineage_value(*l, &p.ty, lineage)),
                Source::Derived { .. } | Source::Null => Ok(None),
            };
            let resolved = match got {
                // Computed by `derive_all`, once every input is known.
                Ok(_) if matches!(p.source, Source::Derived { .. }) => Ok(Value::Null),
                Ok(x) => p.resolve(x),
                Err((kind, msg)) => Err(MappingError {
                    field: Some(p.name.to_string()),
                    kind,
                    message: format!("`{}`: {msg}", p.name),
                }),
            };
            match resolved {
                Ok(x) => v.values.push(x),
                Err(e) => {
                    v.failed[i] = true;
                    v.errors.push(e);
                    v.values.push(Value::Null);
                }
            }
        }
        v
    }

    /// Computes the derived fields from the values read.
    fn derive_all(&self, v: &mut Values) {
        for &i in &self.derived {
            let p = &self.plans[i];
            let Source::Derived { kind, args } = &p.source else {
                continue;
            };
            if args.iter().any(|&a| v.failed[a]) {
                continue; // the argument's own error says it all
            }
            let got = derive(*kind, args.iter().map(|&a| &v.values[a]), &p.ty)
                .and_then(|x| p.resolve(x).map_err(|e| (e.kind, e.message)));
            match got {
                Ok(x) => v.values[i] = x,
                Err((kind, msg)) => v.errors.push(MappingError {
                    field: Some(p.name.to_string()),
                    kind,
                    message: if msg.starts_with('`') {
                        msg
                    } else {
                        format!("`{}`: {msg}", p.name)
                    },
                }),
            }
        }
    }
}

/// The first error, its message listing every error of the record.
fn first_listing_all(errors: &[MappingError]) -> Option<MappingError> {
    let mut e = errors.first()?.clone();
    if errors.len() > 1 {
        e.message = errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
    }
    Some(e)
}

fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Long(l) => l.to_string(),
        other => format!("{other:?}"), // unreachable: key_field is checked at start-up
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_nested;
