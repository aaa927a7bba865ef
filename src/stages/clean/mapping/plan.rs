//! Compiling `[clean]` against the schema ([`Mapper::new`]): one [`Plan`] per schema field —
//! where its value comes from (raw JSON, a derivation, lineage, always null) and what it must
//! satisfy. This is also the start-up check: every contradiction is a [`ConfigError`] naming
//! its key (`clean.fields.wins.min`).
use super::check::check_value;
use super::coerce::parse_rfc3339_ms;
use super::derive::check_derive;
use super::lineage::{check_lineage_types, lineage_field, LineageField};
use super::{is_numeric, Mapper};
use crate::record::{FieldSchema, FieldType, Name, RecordSchema, Value};
use crate::settings::ConfigError;
use crate::stages::clean::config::{CleanConfig, Derive, FieldMapping, Scalar};

/// Where a field's value comes from.
#[derive(Debug, Clone)]
pub(super) enum Source {
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

/// How one schema field is filled and checked.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// Shared with every record mapped (no allocation per field and record).
    pub(super) name: Name,
    pub(super) ty: FieldType,
    pub(super) source: Source,
    pub(super) required: bool,
    pub(super) default: Option<Value>,
    pub(super) min: Option<f64>,
    pub(super) max: Option<f64>,
    pub(super) allowed: Option<Vec<Value>>,
}

impl Plan {
    /// A field without a mapping entry: no default, range or enum.
    fn unmapped(f: &FieldSchema, source: Source, required: bool) -> Plan {
        Plan {
            name: f.name.as_str().into(),
            ty: f.ty.clone(),
            source,
            required,
            default: None,
            min: None,
            max: None,
            allowed: None,
        }
    }
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

impl Mapper {
    /// Compiles the mapping of `cfg` for `schema`; every contradiction fails naming its key.
    pub fn new(schema: &RecordSchema, cfg: &CleanConfig) -> Result<Mapper, ConfigError> {
        check_entries(schema, cfg)?;
        check_lineage_types(schema)?;
        let mut plans = Vec::with_capacity(schema.fields.len());
        let mut derived = Vec::new();
        for (i, f) in schema.fields.iter().enumerate() {
            let plan = plan_field(schema, cfg, i, f)?;
            if matches!(plan.source, Source::Derived { .. }) {
                derived.push(i);
            }
            plans.push(plan);
        }
        let key = key_index(schema, cfg)?;
        Ok(Mapper {
            members: super::members::Members::new(&plans),
            plans,
            derived,
            key,
        })
    }
}

/// Every `[clean.fields.X]` names a schema field that is not a lineage field.
fn check_entries(schema: &RecordSchema, cfg: &CleanConfig) -> Result<(), ConfigError> {
    for name in cfg.fields.keys() {
        let key = format!("clean.fields.{name}");
        if schema.field(name).is_none() {
            return Err(ConfigError::key(
                key,
                format!(
                    "`{name}` is not a field of schema {} ({}); its fields are: {}",
                    schema.name,
                    cfg.schema.display(),
                    schema.field_names()
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
    Ok(())
}

/// The plan of schema field `i` (`f`).
fn plan_field(
    schema: &RecordSchema,
    cfg: &CleanConfig,
    i: usize,
    f: &FieldSchema,
) -> Result<Plan, ConfigError> {
    let key = format!("clean.fields.{}", f.name);
    if let Some(l) = lineage_field(&f.name) {
        return Ok(Plan::unmapped(f, Source::Lineage(l), !f.nullable));
    }
    let m = match cfg.fields.get(&f.name) {
        Some(m) => m.clone(),
        None if cfg.auto_map => FieldMapping::default(),
        None if f.nullable => return Ok(Plan::unmapped(f, Source::Null, false)),
        None => {
            let message = format!(
                "schema field `{}` ({}, not nullable) has no mapping and \
                 clean.auto_map is false; add [{key}] with `from`, `derive` or `default`",
                f.name,
                f.ty.avro_name()
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
        (Some(kind), None) => derived_source(schema, cfg, i, *kind, &m, &key)?,
        (None, from) => raw_source(cfg, f, from.as_deref(), &m, &key)?,
    };
    check_range(f, &m, &key)?;
    let allowed = allowed_values(f, &m, &key)?;
    let default = default_value(f, &m, &allowed, &key)?;
    let required = is_required(f, &m, default.is_some(), &key)?;
    Ok(Plan {
        name: f.name.as_str().into(),
        ty: f.ty.clone(),
        source,
        required,
        default,
        min: m.min,
        max: m.max,
        allowed,
    })
}

/// `derive` + `args`: the arguments are other schema fields, none of them derived.
fn derived_source(
    schema: &RecordSchema,
    cfg: &CleanConfig,
    i: usize,
    kind: Derive,
    m: &FieldMapping,
    key: &str,
) -> Result<Source, ConfigError> {
    if m.coerce.is_some() {
        return Err(ConfigError::key(
            format!("{key}.coerce"),
            "only applies to fields read from raw JSON, not to derived ones",
        ));
    }
    let mut args = Vec::with_capacity(m.args.len());
    for a in &m.args {
        let Some(j) = schema.fields.iter().position(|f| f.name == *a) else {
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
    check_derive(schema, &schema.fields[i], kind, &args, m, key)?;
    Ok(Source::Derived { kind, args })
}

/// `from` (default: the camelCase name), a raw key or a dotted path.
fn raw_source(
    cfg: &CleanConfig,
    f: &FieldSchema,
    from: Option<&str>,
    m: &FieldMapping,
    key: &str,
) -> Result<Source, ConfigError> {
    if !m.args.is_empty() {
        return Err(ConfigError::key(
            format!("{key}.args"),
            "is only used with `derive`",
        ));
    }
    let from = from.map_or_else(|| camel_case(&f.name), str::to_string);
    let path: Vec<String> = from.split('.').map(str::to_string).collect();
    if from.is_empty() || path.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::key(
            format!("{key}.from"),
            format!("`{from}` is not a field name or a dotted path (a.b)"),
        ));
    }
    Ok(Source::Raw {
        from,
        path,
        coerce: m.coerce.unwrap_or(cfg.coerce),
    })
}

/// `min` and `max`: finite, on a numeric field, in order.
fn check_range(f: &FieldSchema, m: &FieldMapping, key: &str) -> Result<(), ConfigError> {
    for (k, v) in [("min", m.min), ("max", m.max)] {
        let Some(v) = v else {
            continue;
        };
        if !is_numeric(&f.ty) {
            return Err(ConfigError::key(
                format!("{key}.{k}"),
                format!(
                    "only numeric fields have a range; `{}` is {}",
                    f.name,
                    f.ty.avro_name()
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
    if let (Some(lo), Some(hi)) = (m.min, m.max) {
        if lo > hi {
            return Err(ConfigError::key(
                format!("{key}.min"),
                format!("{lo} is greater than max {hi}"),
            ));
        }
    }
    Ok(())
}

/// `allowed`, each literal in the field's type.
fn allowed_values(
    f: &FieldSchema,
    m: &FieldMapping,
    key: &str,
) -> Result<Option<Vec<Value>>, ConfigError> {
    match &m.allowed {
        None => Ok(None),
        Some(list) if list.is_empty() => Err(ConfigError::key(
            format!("{key}.allowed"),
            "is empty: no value could pass; leave it out to allow any value",
        )),
        Some(list) => list
            .iter()
            .map(|s| scalar_value(s, &f.ty))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
            .map_err(|e| ConfigError::key(format!("{key}.allowed"), e)),
    }
}

/// `default`, in the field's type and passing the field's own checks.
fn default_value(
    f: &FieldSchema,
    m: &FieldMapping,
    allowed: &Option<Vec<Value>>,
    key: &str,
) -> Result<Option<Value>, ConfigError> {
    let Some(s) = &m.default else {
        return Ok(None);
    };
    let v = scalar_value(s, &f.ty).map_err(|e| ConfigError::key(format!("{key}.default"), e))?;
    if let Err((_, msg)) = check_value(&f.name, &v, m.min, m.max, allowed) {
        return Err(ConfigError::key(format!("{key}.default"), msg));
    }
    Ok(Some(v))
}

/// `required`: given, or implied by a non-nullable field without a default.
fn is_required(
    f: &FieldSchema,
    m: &FieldMapping,
    has_default: bool,
    key: &str,
) -> Result<bool, ConfigError> {
    match m.required {
        Some(true) if has_default => Err(ConfigError::key(
            format!("{key}.required"),
            "`required = true` contradicts `default` (a default is never needed \
             for a required field); keep one of them",
        )),
        Some(false) if !takes_null(f) && !has_default => Err(ConfigError::key(
            format!("{key}.required"),
            format!(
                "`{}` is not nullable in the schema, so a record without it cannot \
                 be written; give a `default` or leave `required` out",
                f.name
            ),
        )),
        Some(r) => Ok(r),
        None => Ok(!takes_null(f) && !has_default),
    }
}

/// `["null", T]`, or a general union with a `null` branch.
fn takes_null(f: &FieldSchema) -> bool {
    f.nullable || matches!(&f.ty, FieldType::Union(b) if b.contains(&FieldType::Null))
}

/// `key_field`: a non-nullable string, int or long schema field.
fn key_index(schema: &RecordSchema, cfg: &CleanConfig) -> Result<Option<usize>, ConfigError> {
    let Some(k) = &cfg.key_field else {
        return Ok(None);
    };
    let Some(f) = schema.field(k) else {
        return Err(ConfigError::key(
            "clean.key_field",
            format!(
                "`{k}` is not a field of schema {}; its fields are: {}",
                schema.name,
                schema.field_names()
            ),
        ));
    };
    if f.nullable || !matches!(f.ty, FieldType::String | FieldType::Int | FieldType::Long) {
        return Err(ConfigError::key(
            "clean.key_field",
            format!(
                "`{k}` must be a non-nullable string, int or long field to be the \
                 message key (it is {}{})",
                if f.nullable { "nullable " } else { "" },
                f.ty.avro_name()
            ),
        ));
    }
    Ok(schema.fields.iter().position(|f| f.name == *k))
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
                ty.avro_name()
            ))
        }
    };
    Ok(v)
}
