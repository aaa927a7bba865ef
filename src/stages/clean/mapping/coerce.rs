//! Reading one field of a raw record: finding the JSON value (by name or dotted path) and
//! converting it to the schema type, with the coercions `coerce` allows (numeric strings,
//! integral floats, `"true"`/`0`/`1` booleans, RFC 3339 or epoch-millisecond times). A value
//! that does not convert is a [`ConvError`] whose message shows it.
use serde_json::Value as Json;

use super::ErrorKind;
use crate::record::{FieldType, Value};

/// The kind and the message of one field's problem (the field name is added by the caller).
pub(super) type ConvError = (ErrorKind, String);

/// RFC 3339 text → epoch milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

pub(super) fn json_type(j: &Json) -> &'static str {
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
pub(super) fn show(j: &Json) -> String {
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

pub(super) fn type_error(j: &Json, ty: &FieldType, coerce: bool) -> ConvError {
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
            ty.avro_name()
        ),
    )
}

/// A string that does not parse as a number, for a numeric field.
fn not_a_number(j: &Json, ty: &FieldType) -> ConvError {
    (
        ErrorKind::Type,
        format!(
            "{} is not a number (the field is {})",
            show(j),
            ty.avro_name()
        ),
    )
}

fn does_not_fit(j: &Json, ty: &FieldType) -> ConvError {
    (
        ErrorKind::OutOfRange,
        format!("{} does not fit in a {}", show(j), ty.avro_name()),
    )
}

/// A whole number given as a float (a JSON number or a parsed string) → i64.
fn integral(x: f64, j: &Json, ty: &FieldType) -> Result<i64, ConvError> {
    if x.fract() != 0.0 || !x.is_finite() {
        return Err((
            ErrorKind::Type,
            format!(
                "{} is not a whole number (the field is {})",
                show(j),
                ty.avro_name()
            ),
        ));
    }
    if x < i64::MIN as f64 || x >= i64::MAX as f64 {
        return Err(does_not_fit(j, ty));
    }
    Ok(x as i64)
}

/// An integral value of a JSON number or (with coerce) numeric string.
pub(super) fn integer(j: &Json, ty: &FieldType, coerce: bool) -> Result<i64, ConvError> {
    match j {
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if n.is_u64() {
                Err(does_not_fit(j, ty))
            } else if coerce {
                integral(n.as_f64().unwrap_or(f64::NAN), j, ty)
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
                Ok(x) if x.is_finite() => integral(x, j, ty),
                _ => Err(not_a_number(j, ty)),
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
            _ => Err(not_a_number(j, ty)),
        },
        _ => Err(type_error(j, ty, coerce)),
    }
}

fn boolean(j: &Json, ty: &FieldType, coerce: bool) -> Result<Value, ConvError> {
    match j {
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
    }
}

fn timestamp(j: &Json, ty: &FieldType, coerce: bool) -> Result<Value, ConvError> {
    match j {
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
    }
}

/// Converts one JSON value to the field type, with the allowed coercions.
pub(super) fn convert(j: &Json, ty: &FieldType, coerce: bool) -> Result<Value, ConvError> {
    match ty {
        FieldType::Boolean => boolean(j, ty, coerce),
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
        FieldType::TimestampMillis => timestamp(j, ty, coerce),
        // The other types are read by `nested::convert_any`.
        _ => Err(type_error(j, ty, coerce)),
    }
}
