//! The mapping engine: raw JSON bytes → a typed [`Record`] in schema order, or a
//! [`MappingError`] saying which field is wrong and why. Pure: no I/O, no clock.
//!
//! [`Mapper::new`] compiles `[clean]` against the schema once, and is also the start-up check:
//! every contradiction is a [`ConfigError`] naming the key (`clean.fields.wins.min`). Per
//! record, fields read from raw JSON come first (in schema order), then derived fields, then
//! the checks (`required`, `min`/`max`, `allowed`) apply to every value.
//!
//! Lineage fields (`source`, `trace_id`, `source_topic`, `source_partition`,
//! `source_offset`, `fetched_at`) are filled from [`Lineage`], never from the raw JSON.
use serde_json::Value as Json;

use super::config::{CleanConfig, Derive, FieldMapping, Scalar};
use crate::record::{FieldType, Record, RecordSchema, Value};
use crate::settings::ConfigError;

/// Schema fields the stage fills itself from headers and the message position.
pub const LINEAGE_FIELDS: [&str; 6] = [
    "source",
    "trace_id",
    "source_topic",
    "source_partition",
    "source_offset",
    "fetched_at",
];

/// Where a raw message came from: the values of the lineage fields.
#[derive(Debug, Clone, Copy)]
pub struct Lineage<'a> {
    /// `etl.source` header, or the configured fallback.
    pub source: &'a str,
    /// Trace id of the `traceparent` header, if valid.
    pub trace_id: Option<&'a str>,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// `etl.fetched_at` header (else the message timestamp), epoch milliseconds.
    pub fetched_at_ms: Option<i64>,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineageField {
    Source,
    TraceId,
    Topic,
    Partition,
    Offset,
    FetchedAt,
}

#[derive(Debug, Clone)]
enum Source {
    Raw {
        from: String,
        path: Vec<String>,
        coerce: bool,
    },
    Derived {
        kind: Derive,
        args: Vec<usize>,
    },
    Lineage(LineageField),
    /// `auto_map = false` and no entry: always null (nullable fields only).
    Null,
}

#[derive(Debug, Clone)]
struct Plan {
    name: String,
    ty: FieldType,
    source: Source,
    required: bool,
    default: Option<Value>,
    min: Option<f64>,
    max: Option<f64>,
    allowed: Option<Vec<Value>>,
}

/// A compiled mapping. Build once with [`Mapper::new`], then [`map`](Mapper::map) each record.
#[derive(Debug, Clone)]
pub struct Mapper {
    plans: Vec<Plan>,
    derived: Vec<usize>,
    key: Option<usize>,
}

fn type_name(t: &FieldType) -> &'static str {
    match t {
        FieldType::Boolean => "boolean",
        FieldType::Int => "int",
        FieldType::Long => "long",
        FieldType::Float => "float",
        FieldType::Double => "double",
        FieldType::String => "string",
        FieldType::TimestampMillis => "timestamp-millis",
    }
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

/// `league_points` → `leaguePoints`.
pub fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn lineage_field(name: &str) -> Option<LineageField> {
    Some(match name {
        "source" => LineageField::Source,
        "trace_id" => LineageField::TraceId,
        "source_topic" => LineageField::Topic,
        "source_partition" => LineageField::Partition,
        "source_offset" => LineageField::Offset,
        "fetched_at" => LineageField::FetchedAt,
        _ => return None,
    })
}

/// Converts a config literal to a value of `ty`, strictly (only int → float/double widening).
fn scalar_value(s: &Scalar, ty: &FieldType) -> Result<Value, String> {
    let v = match (ty, s) {
        (FieldType::Boolean, Scalar::Bool(b)) => Value::Boolean(*b),
        (FieldType::Int, Scalar::Int(i)) => {
            Value::Int(i32::try_from(*i).map_err(|_| format!("{i} does not fit in an int"))?)
        }
        (FieldType::Long, Scalar::Int(i)) => Value::Long(*i),
        (FieldType::Float, Scalar::Int(i)) => Value::Float(*i as f32),
        (FieldType::Float, Scalar::Float(x)) if x.is_finite() && x.abs() <= f32::MAX as f64 => {
            Value::Float(*x as f32)
        }
        (FieldType::Double, Scalar::Int(i)) => Value::Double(*i as f64),
        (FieldType::Double, Scalar::Float(x)) if x.is_finite() => Value::Double(*x),
        (FieldType::String, Scalar::String(s)) => Value::String(s.clone()),
        (FieldType::TimestampMillis, Scalar::Int(i)) => Value::TimestampMillis(*i),
        (FieldType::TimestampMillis, Scalar::String(s)) => Value::TimestampMillis(
            parse_rfc3339_ms(s).ok_or_else(|| format!("{s:?} is not an RFC 3339 time"))?,
        ),
        _ => {
            return Err(format!(
                "{s} is not a {} (the schema type of the field)",
                type_name(ty)
            ))
        }
    };
    Ok(v)
}

/// RFC 3339 text → epoch milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

impl Mapper {
    /// Compiles the mapping of `cfg` for `schema`; every contradiction fails naming its key.
    pub fn new(schema: &RecordSchema, cfg: &CleanConfig) -> Result<Mapper, ConfigError> {
        let field_list = || {
            schema
                .fields
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for name in cfg.fields.keys() {
            let key = format!("clean.fields.{name}");
            if schema.field(name).is_none() {
                return Err(ConfigError::key(
                    key,
                    format!(
                        "`{name}` is not a field of schema {} ({}); its fields are: {}",
                        schema.name,
                        cfg.schema.display(),
                        field_list()
                    ),
                ));
            }
            if lineage_field(name).is_some() {
                return Err(ConfigError::key(
                    key,
                    format!(
                        "`{name}` is a lineage field, filled by the stage from the message \
                         headers and position; remove this entry"
                    ),
                ));
            }
        }

        // Lineage fields present in the schema must have a type the stage can fill.
        for f in &schema.fields {
            let Some(l) = lineage_field(&f.name) else {
                continue;
            };
            let ok = match l {
                LineageField::Source | LineageField::TraceId | LineageField::Topic => {
                    f.ty == FieldType::String
                }
                LineageField::Partition => is_integer(&f.ty),
                LineageField::Offset => f.ty == FieldType::Long,
                LineageField::FetchedAt => {
                    matches!(f.ty, FieldType::TimestampMillis | FieldType::Long)
                }
            };
            if !ok {
                return Err(ConfigError::key(
                    "clean.schema",
                    format!(
                        "lineage field `{}` of schema {} is {}; the stage fills it with {}",
                        f.name,
                        schema.name,
                        type_name(&f.ty),
                        match l {
                            LineageField::Source | LineageField::TraceId | LineageField::Topic =>
                                "a string",
                            LineageField::Partition => "an int or long",
                            LineageField::Offset => "a long",
                            LineageField::FetchedAt => "a timestamp-millis (or long)",
                        }
                    ),
                ));
            }
        }

        let index = |n: &str| schema.fields.iter().position(|f| f.name == n);
        let mut plans = Vec::with_capacity(schema.fields.len());
        let mut derived = Vec::new();
        for (i, f) in schema.fields.iter().enumerate() {
            let key = format!("clean.fields.{}", f.name);
            if let Some(l) = lineage_field(&f.name) {
                plans.push(Plan {
                    name: f.name.clone(),
                    ty: f.ty.clone(),
                    source: Source::Lineage(l),
                    required: !f.nullable,
                    default: None,
                    min: None,
                    max: None,
                    allowed: None,
                });
                continue;
            }
            let m = match cfg.fields.get(&f.name) {
                Some(m) => m.clone(),
                None if cfg.auto_map => FieldMapping::default(),
                None if f.nullable => {
                    plans.push(Plan {
                        name: f.name.clone(),
                        ty: f.ty.clone(),
                        source: Source::Null,
                        required: false,
                        default: None,
                        min: None,
                        max: None,
                        allowed: None,
                    });
                    continue;
                }
                None => {
                    let message = format!(
                        "schema field `{}` ({}, not nullable) has no mapping and \
                         clean.auto_map is false; add [{key}] with `from`, `derive` or `default`",
                        f.name,
                        type_name(&f.ty)
                    );
                    return Err(ConfigError::key(key, message));
                }
            };

            let source = match (&m.derive, &m.from) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::key(
                        format!("{key}.from"),
                        "give either `from` or `derive`, not both",
                    ))
                }
                (Some(kind), None) => {
                    if m.coerce.is_some() {
                        return Err(ConfigError::key(
                            format!("{key}.coerce"),
                            "only applies to fields read from raw JSON, not to derived ones",
                        ));
                    }
                    let mut args = Vec::with_capacity(m.args.len());
                    for a in &m.args {
                        let Some(j) = index(a) else {
                            return Err(ConfigError::key(
                                format!("{key}.args"),
                                format!("`{a}` is not a field of schema {}", schema.name),
                            ));
                        };
                        if j == i {
                            return Err(ConfigError::key(
                                format!("{key}.args"),
                                format!("`{a}` cannot be derived from itself"),
                            ));
                        }
                        if cfg.fields.get(a).is_some_and(|e| e.derive.is_some()) {
                            return Err(ConfigError::key(
                                format!("{key}.args"),
                                format!(
                                    "`{a}` is derived itself; derive only from fields read \
                                     from raw JSON or lineage fields"
                                ),
                            ));
                        }
                        args.push(j);
                    }
                    check_derive(schema, f, *kind, &args, &m, &key)?;
                    derived.push(i);
                    Source::Derived { kind: *kind, args }
                }
                (None, from) => {
                    if !m.args.is_empty() {
                        return Err(ConfigError::key(
                            format!("{key}.args"),
                            "is only used with `derive`",
                        ));
                    }
                    let from = from.clone().unwrap_or_else(|| camel_case(&f.name));
                    let path: Vec<String> = from.split('.').map(str::to_string).collect();
                    if from.is_empty() || path.iter().any(|p| p.is_empty()) {
                        return Err(ConfigError::key(
                            format!("{key}.from"),
                            format!("`{from}` is not a field name or a dotted path (a.b)"),
                        ));
                    }
                    Source::Raw {
                        from,
                        path,
                        coerce: m.coerce.unwrap_or(cfg.coerce),
                    }
                }
            };

            for (k, v) in [("min", m.min), ("max", m.max)] {
                if let Some(v) = v {
                    if !is_numeric(&f.ty) {
                        return Err(ConfigError::key(
                            format!("{key}.{k}"),
                            format!(
                                "only numeric fields have a range; `{}` is {}",
                                f.name,
                                type_name(&f.ty)
                            ),
                        ));
                    }
                    if !v.is_finite() {
                        return Err(ConfigError::key(
                            format!("{key}.{k}"),
                            "must be a finite number",
                        ));
                    }
                }
            }
            if let (Some(lo), Some(hi)) = (m.min, m.max) {
                if lo > hi {
                    return Err(ConfigError::key(
                        format!("{key}.min"),
                        format!("{lo} is greater than max {hi}"),
                    ));
                }
            }
            let allowed = match &m.allowed {
                None => None,
                Some(list) if list.is_empty() => {
                    return Err(ConfigError::key(
                        format!("{key}.allowed"),
                        "is empty: no value could pass; leave it out to allow any value",
                    ))
                }
                Some(list) => Some(
                    list.iter()
                        .map(|s| scalar_value(s, &f.ty))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| ConfigError::key(format!("{key}.allowed"), e))?,
                ),
            };
            let default = match &m.default {
                None => None,
                Some(s) => {
                    let v = scalar_value(s, &f.ty)
                        .map_err(|e| ConfigError::key(format!("{key}.default"), e))?;
                    if let Err((_, msg)) = check_value(&f.name, &v, m.min, m.max, &allowed) {
                        return Err(ConfigError::key(format!("{key}.default"), msg));
                    }
                    Some(v)
                }
            };
            let required = match m.required {
                Some(true) if default.is_some() => {
                    return Err(ConfigError::key(
                        format!("{key}.required"),
                        "`required = true` contradicts `default` (a default is never needed \
                         for a required field); keep one of them",
                    ))
                }
                Some(false) if !f.nullable && default.is_none() => {
                    return Err(ConfigError::key(
                        format!("{key}.required"),
                        format!(
                            "`{}` is not nullable in the schema, so a record without it cannot \
                             be written; give a `default` or leave `required` out",
                            f.name
                        ),
                    ))
                }
                Some(r) => r,
                None => !f.nullable && default.is_none(),
            };
            plans.push(Plan {
                name: f.name.clone(),
                ty: f.ty.clone(),
                source,
                required,
                default,
                min: m.min,
                max: m.max,
                allowed,
            });
        }

        let key = match &cfg.key_field {
            None => None,
            Some(k) => {
                let Some(f) = schema.field(k) else {
                    return Err(ConfigError::key(
                        "clean.key_field",
                        format!(
                            "`{k}` is not a field of schema {}; its fields are: {}",
                            schema.name,
                            field_list()
                        ),
                    ));
                };
                if f.nullable
                    || !matches!(f.ty, FieldType::String | FieldType::Int | FieldType::Long)
                {
                    return Err(ConfigError::key(
                        "clean.key_field",
                        format!(
                            "`{k}` must be a non-nullable string, int or long field to be the \
                             message key (it is {}{})",
                            if f.nullable { "nullable " } else { "" },
                            type_name(&f.ty)
                        ),
                    ));
                }
                index(k)
            }
        };
        Ok(Mapper {
            plans,
            derived,
            key,
        })
    }

    /// Maps one raw message value. Never panics on input.
    pub fn map(&self, raw: &[u8], lineage: &Lineage<'_>) -> Result<Mapped, MappingError> {
        let json: Json = serde_json::from_slice(raw).map_err(|e| MappingError {
            field: None,
            kind: ErrorKind::InvalidJson,
            message: format!("not valid JSON: {e}"),
        })?;
        let Json::Object(obj) = &json else {
            return Err(MappingError {
                field: None,
                kind: ErrorKind::NotAnObject,
                message: format!(
                    "the raw record is a JSON {}, not an object",
                    json_type(&json)
                ),
            });
        };

        let mut values: Vec<Value> = Vec::with_capacity(self.plans.len());
        let mut failed = vec![false; self.plans.len()];
        let mut errors: Vec<MappingError> = Vec::new();
        for (i, p) in self.plans.iter().enumerate() {
            let got = match &p.source {
                Source::Raw { from, path, coerce } => match lookup(obj, from, path) {
                    None | Some(Json::Null) => Ok(None),
                    Some(j) => convert(j, &p.ty, *coerce).map(Some),
                },
                Source::Lineage(l) => Ok(lineage_value(*l, &p.ty, lineage)),
                Source::Derived { .. } | Source::Null => Ok(None),
            };
            let resolved = match got {
                Ok(v) => {
                    if matches!(p.source, Source::Derived { .. }) {
                        Ok(Value::Null) // computed below, once every input is known
                    } else {
                        self.resolve(p, v)
                    }
                }
                Err((kind, msg)) => Err(MappingError {
                    field: Some(p.name.clone()),
                    kind,
                    message: format!("`{}`: {msg}", p.name),
                }),
            };
            match resolved {
                Ok(v) => values.push(v),
                Err(e) => {
                    failed[i] = true;
                    errors.push(e);
                    values.push(Value::Null);
                }
            }
        }
        for &i in &self.derived {
            let p = &self.plans[i];
            let Source::Derived { kind, args } = &p.source else {
                continue;
            };
            if args.iter().any(|&a| failed[a]) {
                continue; // the argument's own error says it all
            }
            let v = derive(*kind, args.iter().map(|&a| &values[a]), &p.ty)
                .and_then(|v| self.resolve(p, v).map_err(|e| (e.kind, e.message)));
            match v {
                Ok(v) => values[i] = v,
                Err((kind, msg)) => errors.push(MappingError {
                    field: Some(p.name.clone()),
                    kind,
                    message: if msg.starts_with('`') {
                        msg
                    } else {
                        format!("`{}`: {msg}", p.name)
                    },
                }),
            }
        }
        if let Some(first) = errors.first() {
            let mut e = first.clone();
            if errors.len() > 1 {
                e.message = errors
                    .iter()
                    .map(|e| e.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
            }
            return Err(e);
        }
        let key = self.key.map(|k| match &values[k] {
            Value::String(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Long(l) => l.to_string(),
            other => format!("{other:?}"), // unreachable: key_field is checked at start-up
        });
        let record = Record {
            fields: self
                .plans
                .iter()
                .zip(values)
                .map(|(p, v)| (p.name.clone(), v))
                .collect(),
        };
        Ok(Mapped { record, key })
    }

    /// A value or its absence → the field's value: default, null, or `missing_required`;
    /// then the range and enum checks.
    fn resolve(&self, p: &Plan, v: Option<Value>) -> Result<Value, MappingError> {
        let v = match v {
            Some(v) => v,
            None => {
                if let Some(d) = &p.default {
                    return Ok(d.clone());
                }
                if p.required {
                    let message = match &p.source {
                        Source::Raw { from, .. } => {
                            format!("`{}`: required, but raw field `{from}` is missing or null", p.name)
                        }
                        Source::Lineage(LineageField::TraceId) => format!(
                            "`{}`: required, but the message has no valid traceparent header",
                            p.name
                        ),
                        Source::Lineage(LineageField::FetchedAt) => format!(
                            "`{}`: required, but the message has neither an etl.fetched_at header nor a timestamp",
                            p.name
                        ),
                        _ => format!("`{}`: required, but it has no value", p.name),
                    };
                    return Err(MappingError {
                        field: Some(p.name.clone()),
                        kind: ErrorKind::MissingRequired,
                        message,
                    });
                }
                return Ok(Value::Null);
            }
        };
        check_value(&p.name, &v, p.min, p.max, &p.allowed).map_err(|(kind, message)| {
            MappingError {
                field: Some(p.name.clone()),
                kind,
                message,
            }
        })?;
        Ok(v)
    }
}

fn check_derive(
    schema: &RecordSchema,
    f: &crate::record::FieldSchema,
    kind: Derive,
    args: &[usize],
    m: &FieldMapping,
    key: &str,
) -> Result<(), ConfigError> {
    let arity_ok = match kind {
        Derive::Sum => !args.is_empty(),
        Derive::Ratio => args.len() == 2,
        Derive::Copy | Derive::Lowercase | Derive::Uppercase => args.len() == 1,
    };
    if !arity_ok {
        return Err(ConfigError::key(
            format!("{key}.args"),
            format!(
                "`derive = \"{}\"` takes {}; got {}",
                kind.as_str(),
                match kind {
                    Derive::Sum => "one or more fields",
                    Derive::Ratio => "exactly two fields [a, b] (a / (a + b))",
                    _ => "exactly one field",
                },
                args.len()
            ),
        ));
    }
    let arg_types: Vec<&FieldType> = args.iter().map(|&a| &schema.fields[a].ty).collect();
    let describe = || {
        args.iter()
            .map(|&a| {
                let s = &schema.fields[a];
                format!("`{}` ({})", s.name, type_name(&s.ty))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let target = &f.ty;
    let ok = match kind {
        Derive::Sum => {
            arg_types.iter().all(|t| is_numeric(t))
                && match target {
                    FieldType::Int => arg_types.iter().all(|t| **t == FieldType::Int),
                    FieldType::Long => arg_types.iter().all(|t| is_integer(t)),
                    FieldType::Float | FieldType::Double => true,
                    _ => false,
                }
        }
        Derive::Ratio => {
            arg_types.iter().all(|t| is_numeric(t))
                && matches!(target, FieldType::Float | FieldType::Double)
        }
        Derive::Copy => {
            let a = arg_types[0];
            a == target
                || matches!(
                    (a, target),
                    (
                        FieldType::Int,
                        FieldType::Long | FieldType::Float | FieldType::Double
                    ) | (FieldType::Long, FieldType::Double)
                        | (FieldType::Float, FieldType::Double)
                        | (FieldType::Long, FieldType::TimestampMillis)
                        | (FieldType::TimestampMillis, FieldType::Long)
                        | (_, FieldType::String)
                )
        }
        Derive::Lowercase | Derive::Uppercase => {
            *arg_types[0] == FieldType::String && *target == FieldType::String
        }
    };
    if !ok {
        return Err(ConfigError::key(
            format!("{key}.derive"),
            format!(
                "`{}` of {} cannot be produced as {} (the schema type of `{}`)",
                kind.as_str(),
                describe(),
                type_name(target),
                f.name
            ),
        ));
    }
    if kind == Derive::Ratio && !f.nullable && m.default.is_none() {
        return Err(ConfigError::key(
            format!("{key}.derive"),
            format!(
                "`ratio` is null when a + b = 0, but `{}` is not nullable in the schema; \
                 give a `default`",
                f.name
            ),
        ));
    }
    Ok(())
}

fn lineage_value(l: LineageField, ty: &FieldType, lin: &Lineage<'_>) -> Option<Value> {
    Some(match l {
        LineageField::Source => Value::String(lin.source.to_string()),
        LineageField::TraceId => Value::String(lin.trace_id?.to_string()),
        LineageField::Topic => Value::String(lin.topic.to_string()),
        LineageField::Partition if *ty == FieldType::Long => Value::Long(lin.partition as i64),
        LineageField::Partition => Value::Int(lin.partition),
        LineageField::Offset => Value::Long(lin.offset),
        LineageField::FetchedAt if *ty == FieldType::Long => Value::Long(lin.fetched_at_ms?),
        LineageField::FetchedAt => Value::TimestampMillis(lin.fetched_at_ms?),
    })
}

fn lookup<'a>(
    obj: &'a serde_json::Map<String, Json>,
    from: &str,
    path: &[String],
) -> Option<&'a Json> {
    if let Some(v) = obj.get(from) {
        return Some(v);
    }
    if path.len() < 2 {
        return None;
    }
    let mut cur = obj.get(&path[0])?;
    for seg in &path[1..] {
        cur = cur.as_object()?.get(seg)?;
    }
    Some(cur)
}

fn json_type(j: &Json) -> &'static str {
    match j {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// The value as shown in an error message (JSON text, at most ~60 characters).
fn show(j: &Json) -> String {
    let s = j.to_string();
    if s.len() <= 60 {
        return s;
    }
    let mut end = 57;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

type ConvError = (ErrorKind, String);

fn type_error(j: &Json, ty: &FieldType, coerce: bool) -> ConvError {
    let hint = if !coerce && matches!(j, Json::String(_) | Json::Number(_) | Json::Bool(_)) {
        " (coerce is off for this field)"
    } else {
        ""
    };
    (
        ErrorKind::Type,
        format!(
            "{} is a JSON {}, not {} {}{hint}",
            show(j),
            json_type(j),
            if matches!(ty, FieldType::Int) {
                "an"
            } else {
                "a"
            },
            type_name(ty)
        ),
    )
}

/// An integral value of a JSON number or (with coerce) numeric string.
fn integer(j: &Json, ty: &FieldType, coerce: bool) -> Result<i64, ConvError> {
    let out_of_range = || {
        (
            ErrorKind::OutOfRange,
            format!("{} does not fit in a {}", show(j), type_name(ty)),
        )
    };
    let from_f64 = |x: f64| -> Result<i64, ConvError> {
        if x.fract() != 0.0 || !x.is_finite() {
            return Err((
                ErrorKind::Type,
                format!(
                    "{} is not a whole number (the field is {})",
                    show(j),
                    type_name(ty)
                ),
            ));
        }
        if x < i64::MIN as f64 || x >= i64::MAX as f64 {
            return Err(out_of_range());
        }
        Ok(x as i64)
    };
    match j {
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if n.is_u64() {
                Err(out_of_range())
            } else if coerce {
                from_f64(n.as_f64().unwrap_or(f64::NAN))
            } else {
                Err(type_error(j, ty, coerce))
            }
        }
        Json::String(s) if coerce => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                return Ok(i);
            }
            match t.parse::<f64>() {
                Ok(x) if x.is_finite() => from_f64(x),
                _ => Err((
                    ErrorKind::Type,
                    format!(
                        "{} is not a number (the field is {})",
                        show(j),
                        type_name(ty)
                    ),
                )),
            }
        }
        _ => Err(type_error(j, ty, coerce)),
    }
}

fn float(j: &Json, ty: &FieldType, coerce: bool) -> Result<f64, ConvError> {
    match j {
        Json::Number(n) => n.as_f64().ok_or_else(|| type_error(j, ty, coerce)),
        Json::String(s) if coerce => match s.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => Err((
                ErrorKind::Type,
                format!(
                    "{} is not a number (the field is {})",
                    show(j),
                    type_name(ty)
                ),
            )),
        },
        _ => Err(type_error(j, ty, coerce)),
    }
}

/// Converts one JSON value to the field type, with the allowed coercions.
fn convert(j: &Json, ty: &FieldType, coerce: bool) -> Result<Value, ConvError> {
    match ty {
        FieldType::Boolean => match j {
            Json::Bool(b) => Ok(Value::Boolean(*b)),
            Json::String(s) if coerce => {
                let t = s.trim();
                if t.eq_ignore_ascii_case("true") {
                    Ok(Value::Boolean(true))
                } else if t.eq_ignore_ascii_case("false") {
                    Ok(Value::Boolean(false))
                } else {
                    Err(type_error(j, ty, coerce))
                }
            }
            Json::Number(n) if coerce => match n.as_i64() {
                Some(0) => Ok(Value::Boolean(false)),
                Some(1) => Ok(Value::Boolean(true)),
                _ => Err(type_error(j, ty, coerce)),
            },
            _ => Err(type_error(j, ty, coerce)),
        },
        FieldType::Int => {
            let i = integer(j, ty, coerce)?;
            i32::try_from(i).map(Value::Int).map_err(|_| {
                (
                    ErrorKind::OutOfRange,
                    format!("{} does not fit in an int", show(j)),
                )
            })
        }
        FieldType::Long => integer(j, ty, coerce).map(Value::Long),
        FieldType::Float => {
            let x = float(j, ty, coerce)?;
            if x.abs() > f32::MAX as f64 {
                return Err((
                    ErrorKind::OutOfRange,
                    format!("{} does not fit in a float", show(j)),
                ));
            }
            Ok(Value::Float(x as f32))
        }
        FieldType::Double => float(j, ty, coerce).map(Value::Double),
        FieldType::String => match j {
            Json::String(s) => Ok(Value::String(s.clone())),
            Json::Number(n) if coerce => Ok(Value::String(n.to_string())),
            Json::Bool(b) if coerce => Ok(Value::String(b.to_string())),
            _ => Err(type_error(j, ty, coerce)),
        },
        FieldType::TimestampMillis => match j {
            Json::Number(_) => integer(j, ty, coerce).map(Value::TimestampMillis),
            Json::String(s) => match parse_rfc3339_ms(s) {
                Some(ms) => Ok(Value::TimestampMillis(ms)),
                None if coerce && s.trim().parse::<i64>().is_ok() => {
                    integer(j, ty, coerce).map(Value::TimestampMillis)
                }
                None => Err((
                    ErrorKind::Type,
                    format!(
                        "{} is not an RFC 3339 time{}",
                        show(j),
                        if coerce { " or epoch milliseconds" } else { "" }
                    ),
                )),
            },
            _ => Err(type_error(j, ty, coerce)),
        },
    }
}

fn check_value(
    name: &str,
    v: &Value,
    min: Option<f64>,
    max: Option<f64>,
    allowed: &Option<Vec<Value>>,
) -> Result<(), ConvError> {
    if let Some(x) = v.as_f64() {
        if let Some(lo) = min {
            if x < lo {
                return Err((
                    ErrorKind::OutOfRange,
                    format!("`{name}`: {} is below the minimum {lo}", show_value(v)),
                ));
            }
        }
        if let Some(hi) = max {
            if x > hi {
                return Err((
                    ErrorKind::OutOfRange,
                    format!("`{name}`: {} is above the maximum {hi}", show_value(v)),
                ));
            }
        }
    }
    if let Some(list) = allowed {
        if !v.is_null() && !list.contains(v) {
            return Err((
                ErrorKind::NotAllowed,
                format!(
                    "`{name}`: {} is not one of the allowed values [{}]",
                    show_value(v),
                    list.iter().map(show_value).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn show_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Long(i) | Value::TimestampMillis(i) => i.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Double(x) => x.to_string(),
        Value::String(s) => show(&Json::String(s.clone())),
    }
}

/// Computes a derived value; `Ok(None)` when an argument is null (or a ratio's denominator is 0).
fn derive<'a>(
    kind: Derive,
    mut args: impl Iterator<Item = &'a Value>,
    ty: &FieldType,
) -> Result<Option<Value>, ConvError> {
    let args: Vec<&Value> = args.by_ref().collect();
    if args.iter().any(|v| v.is_null()) {
        return Ok(None);
    }
    let overflow = || {
        (
            ErrorKind::OutOfRange,
            format!("the sum does not fit in a {}", type_name(ty)),
        )
    };
    Ok(Some(match kind {
        Derive::Sum => match ty {
            FieldType::Int | FieldType::Long => {
                let mut total: i64 = 0;
                for a in &args {
                    let x = match a {
                        Value::Int(i) => *i as i64,
                        Value::Long(l) => *l,
                        _ => return Err(overflow()),
                    };
                    total = total.checked_add(x).ok_or_else(overflow)?;
                }
                if *ty == FieldType::Int {
                    Value::Int(i32::try_from(total).map_err(|_| overflow())?)
                } else {
                    Value::Long(total)
                }
            }
            _ => {
                let total: f64 = args.iter().filter_map(|a| a.as_f64()).sum();
                to_float(total, ty).ok_or_else(overflow)?
            }
        },
        Derive::Ratio => {
            let (Some(a), Some(b)) = (args[0].as_f64(), args[1].as_f64()) else {
                return Ok(None);
            };
            let denom = a + b;
            if denom == 0.0 {
                return Ok(None);
            }
            to_float(a / denom, ty).ok_or_else(overflow)?
        }
        Derive::Copy => widen(args[0], ty),
        Derive::Lowercase => match args[0] {
            Value::String(s) => Value::String(s.to_lowercase()),
            other => other.clone(),
        },
        Derive::Uppercase => match args[0] {
            Value::String(s) => Value::String(s.to_uppercase()),
            other => other.clone(),
        },
    }))
}

fn to_float(x: f64, ty: &FieldType) -> Option<Value> {
    match ty {
        FieldType::Float if x.abs() <= f32::MAX as f64 => Some(Value::Float(x as f32)),
        FieldType::Double => Some(Value::Double(x)),
        _ => None,
    }
}

/// `copy`: the value in the target type (widening only; checked at start-up).
fn widen(v: &Value, ty: &FieldType) -> Value {
    match (v, ty) {
        (Value::Int(i), FieldType::Long) => Value::Long(*i as i64),
        (Value::Int(i), FieldType::Float) => Value::Float(*i as f32),
        (Value::Int(i), FieldType::Double) => Value::Double(*i as f64),
        (Value::Long(l), FieldType::Double) => Value::Double(*l as f64),
        (Value::Float(x), FieldType::Double) => Value::Double(*x as f64),
        (Value::Long(l), FieldType::TimestampMillis) => Value::TimestampMillis(*l),
        (Value::TimestampMillis(l), FieldType::Long) => Value::Long(*l),
        (Value::String(_), FieldType::String) => v.clone(),
        (other, FieldType::String) => Value::String(show_value(other)),
        (other, _) => other.clone(),
    }
}

#[cfg(test)]
mod tests;
