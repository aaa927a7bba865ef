//! Derived fields (`derive = "sum" | "ratio" | "copy" | "lowercase" | "uppercase"`): the
//! start-up check that the arguments can produce the field's type, and the computation per
//! record, once every argument's value is known.
use super::check::show_value;
use super::coerce::ConvError;
use super::{is_integer, is_numeric, ErrorKind};
use crate::record::{FieldSchema, FieldType, RecordSchema, Value};
use crate::settings::ConfigError;
use crate::stages::clean::config::{Derive, FieldMapping};

/// Checks a `derive` entry: its number of arguments, their types against the field's, and
/// that a `ratio` (null when a + b = 0) has somewhere to go.
pub(super) fn check_derive(
    schema: &RecordSchema,
    f: &FieldSchema,
    kind: Derive,
    args: &[usize],
    m: &FieldMapping,
    key: &str,
) -> Result<(), ConfigError> {
    check_arity(kind, args, key)?;
    let arg_types: Vec<&FieldType> = args.iter().map(|&a| &schema.fields[a].ty).collect();
    if !derivable(kind, &arg_types, &f.ty) {
        let described = args
            .iter()
            .map(|&a| {
                let s = &schema.fields[a];
                format!("`{}` ({})", s.name, s.ty.avro_name())
            })
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ConfigError::key(
            format!("{key}.derive"),
            format!(
                "`{}` of {} cannot be produced as {} (the schema type of `{}`)",
                kind.as_str(),
                described,
                f.ty.avro_name(),
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

fn check_arity(kind: Derive, args: &[usize], key: &str) -> Result<(), ConfigError> {
    let arity_ok = match kind {
        Derive::Sum => !args.is_empty(),
        Derive::Ratio => args.len() == 2,
        Derive::Copy | Derive::Lowercase | Derive::Uppercase => args.len() == 1,
    };
    if arity_ok {
        return Ok(());
    }
    Err(ConfigError::key(
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
    ))
}

/// Whether `kind` of arguments of `arg_types` can be written as `target` without loss.
fn derivable(kind: Derive, arg_types: &[&FieldType], target: &FieldType) -> bool {
    match kind {
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
    }
}

/// Computes a derived value; `Ok(None)` when an argument is null (or a ratio's denominator is 0).
pub(super) fn derive<'a>(
    kind: Derive,
    mut args: impl Iterator<Item = &'a Value>,
    ty: &FieldType,
) -> Result<Option<Value>, ConvError> {
    let args: Vec<&Value> = args.by_ref().collect();
    if args.iter().any(|v| v.is_null()) {
        return Ok(None);
    }
    Ok(Some(match kind {
        Derive::Sum => sum(&args, ty)?,
        Derive::Ratio => {
            let (Some(a), Some(b)) = (args[0].as_f64(), args[1].as_f64()) else {
                return Ok(None);
            };
            let denom = a + b;
            if denom == 0.0 {
                return Ok(None);
            }
            to_float(a / denom, ty).ok_or_else(|| overflow(ty))?
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

fn overflow(ty: &FieldType) -> ConvError {
    (
        ErrorKind::OutOfRange,
        format!("the sum does not fit in a {}", ty.avro_name()),
    )
}

/// `sum`: exact (checked) in an int or long field, floating-point otherwise.
fn sum(args: &[&Value], ty: &FieldType) -> Result<Value, ConvError> {
    match ty {
        FieldType::Int | FieldType::Long => {
            let mut total: i64 = 0;
            for a in args {
                let x = match a {
                    Value::Int(i) => *i as i64,
                    Value::Long(l) => *l,
                    _ => return Err(overflow(ty)),
                };
                total = total.checked_add(x).ok_or_else(|| overflow(ty))?;
            }
            if *ty == FieldType::Int {
                Ok(Value::Int(i32::try_from(total).map_err(|_| overflow(ty))?))
            } else {
                Ok(Value::Long(total))
            }
        }
        _ => {
            let total: f64 = args.iter().filter_map(|a| a.as_f64()).sum();
            to_float(total, ty).ok_or_else(|| overflow(ty))
        }
    }
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
