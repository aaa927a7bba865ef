//! Reading raw JSON into the schema types outside the flat set: nested records (fields by
//! name, recursively, with the null/missing rules of the schema), arrays, maps, enums, general
//! unions, bytes, fixed, decimals, uuids and the logical time types. Flat leaves inside take
//! the same conversions as top-level fields (`coerce`).
//!
//! A problem names the JSON path of the value (`miniSeries.wins`, `players[2].name`); the
//! path is a chain of references on the stack, written out only when there is an error.
//! Decimals are exact: a JSON number with a fraction is read again as text from the raw bytes
//! (serde_json holds it as an f64), never converted through f64.
use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::Value as Json;

use super::coerce::{convert, integer, show, type_error, ConvError};
use super::plan::camel_case;
use super::ErrorKind;
use crate::record::{Decimal, EnumType, FieldType, FixedType, Record, RecordSchema, Value};

/// Where a value sits in the raw record.
#[derive(Clone, Copy)]
pub(super) enum At<'a> {
    /// The field's `from`: a raw key, or the dotted `path` when the record has no such key.
    Root {
        from: &'a str,
        path: &'a [String],
    },
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl At<'_> {
    /// The JSON path as messages show it: `miniSeries.wins`, `players[2].name`.
    pub(super) fn render(&self) -> String {
        match self {
            At::Root { from, .. } => from.to_string(),
            At::Key(parent, k) => format!("{}.{k}", parent.render()),
            At::Index(parent, i) => format!("{}[{i}]", parent.render()),
        }
    }

    /// A problem at this place: the message with the path, unless it is the field's own value
    /// (the caller names the field).
    fn fail(&self, (kind, msg): ConvError) -> ConvError {
        match self {
            At::Root { .. } => (kind, msg),
            _ => (kind, format!("at `{}`: {msg}", self.render())),
        }
    }
}

/// What the conversion of one field needs besides the value.
pub(super) struct Ctx<'a> {
    /// The raw record (for the exact text of decimal numbers).
    pub(super) raw: &'a [u8],
    pub(super) coerce: bool,
}

/// Converts `j` to `ty` (any type), errors naming the path below the field.
pub(super) fn convert_any(
    j: &Json,
    ty: &FieldType,
    cx: &Ctx<'_>,
    at: &At<'_>,
) -> Result<Value, ConvError> {
    match ty {
        t if t.is_flat() => convert(j, t, cx.coerce).map_err(|e| at.fail(e)),
        FieldType::Null => match j {
            Json::Null => Ok(Value::Null),
            _ => Err(at.fail(shape_error(j, ty))),
        },
        FieldType::Record(rs) => record(j, ty, rs, cx, at),
        FieldType::Array(item) => match j {
            Json::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, x)| convert_any(x, item, cx, &At::Index(at, i)))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            _ => Err(at.fail(shape_error(j, ty))),
        },
        FieldType::Map(v) => match j {
            Json::Object(o) => o
                .iter()
                .map(|(k, x)| Ok((k.clone(), convert_any(x, v, cx, &At::Key(at, k))?)))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Map),
            _ => Err(at.fail(shape_error(j, ty))),
        },
        FieldType::Enum(e) => enum_symbol(j, e).map_err(|e| at.fail(e)),
        FieldType::Union(branches) => union(j, branches, cx, at),
        FieldType::Bytes => bytes(j, ty).map(Value::Bytes).map_err(|e| at.fail(e)),
        FieldType::Fixed(f) => fixed(j, ty, f).map(Value::Fixed).map_err(|e| at.fail(e)),
        FieldType::Decimal {
            precision,
            scale,
            fixed,
        } => decimal(j, *precision, *scale, fixed.as_ref(), cx, at).map_err(|e| at.fail(e)),
        FieldType::Uuid => match j {
            Json::String(s) => uuid::Uuid::parse_str(s.trim())
                .map(Value::Uuid)
                .map_err(|_| at.fail((ErrorKind::Type, format!("{} is not a UUID", show(j))))),
            _ => Err(at.fail(shape_error(j, ty))),
        },
        _ => time(j, ty, cx.coerce).map_err(|e| at.fail(e)),
    }
}

/// A JSON object → a record of `rs`: each field by its name (or its camelCase), missing or
/// null fields take the schema default, else null when nullable, else fail.
fn record(
    j: &Json,
    ty: &FieldType,
    rs: &RecordSchema,
    cx: &Ctx<'_>,
    at: &At<'_>,
) -> Result<Value, ConvError> {
    let Json::Object(o) = j else {
        return Err(at.fail(shape_error(j, ty)));
    };
    let mut fields = Vec::with_capacity(rs.fields.len());
    for f in &rs.fields {
        let found = o.get_key_value(&f.name).or_else(|| {
            let camel = camel_case(&f.name);
            o.get_key_value(&camel)
        });
        let value = match found {
            Some((k, x)) if !x.is_null() => convert_any(x, &f.ty, cx, &At::Key(at, k))?,
            _ => match &f.default {
                Some(d) => d.clone(),
                None if f.nullable || accepts_null(&f.ty) => Value::Null,
                None => {
                    return Err(At::Key(at, &f.name).fail((
                        ErrorKind::MissingRequired,
                        format!(
                            "required ({} of record {}, not nullable, no default), but missing \
                             or null",
                            f.ty.avro_name(),
                            rs.name
                        ),
                    )))
                }
            },
        };
        fields.push((f.name.as_str().into(), value));
    }
    Ok(Value::Record(Record { fields }))
}

/// A JSON value of a kind no coercion turns into `ty` (no hint about `coerce`).
fn shape_error(j: &Json, ty: &FieldType) -> ConvError {
    type_error(j, ty, true)
}

fn accepts_null(ty: &FieldType) -> bool {
    match ty {
        FieldType::Null => true,
        FieldType::Union(b) => b.contains(&FieldType::Null),
        _ => false,
    }
}

/// A general union: null to a `null` branch; else the first branch that takes the value as
/// it is, then (with `coerce`) the first that converts it. With one non-null branch its own
/// error is the error (it names the deepest path).
fn union(j: &Json, branches: &[FieldType], cx: &Ctx<'_>, at: &At<'_>) -> Result<Value, ConvError> {
    if j.is_null() && branches.contains(&FieldType::Null) {
        return Ok(Value::Null);
    }
    let others: Vec<&FieldType> = branches.iter().filter(|b| **b != FieldType::Null).collect();
    if let [only] = others.as_slice() {
        return convert_any(j, only, cx, at);
    }
    let strict = Ctx {
        raw: cx.raw,
        coerce: false,
    };
    for b in &others {
        if let Ok(v) = convert_any(j, b, &strict, at) {
            return Ok(v);
        }
    }
    if cx.coerce {
        for b in &others {
            if let Ok(v) = convert_any(j, b, cx, at) {
                return Ok(v);
            }
        }
    }
    let names: Vec<&str> = branches.iter().map(FieldType::avro_name).collect();
    Err(at.fail((
        ErrorKind::Type,
        format!(
            "{} (a JSON {}) matches no branch of the union [{}]",
            show(j),
            super::coerce::json_type(j),
            names.join(", ")
        ),
    )))
}

fn enum_symbol(j: &Json, e: &EnumType) -> Result<Value, ConvError> {
    match j {
        Json::String(s) if e.symbols.iter().any(|x| x == s) => Ok(Value::Enum(s.clone())),
        Json::String(_) => Err((
            ErrorKind::Type,
            format!(
                "{} is not a symbol of enum {} ({})",
                show(j),
                e.name,
                e.symbols.join(", ")
            ),
        )),
        _ => Err((
            ErrorKind::Type,
            format!(
                "{} is a JSON {}, not an enum symbol",
                show(j),
                super::coerce::json_type(j)
            ),
        )),
    }
}

/// Bytes as Avro's JSON encoding writes them (a string of code points 0–255), or an array of
/// byte values.
fn bytes(j: &Json, ty: &FieldType) -> Result<Vec<u8>, ConvError> {
    let bad = || {
        (
            ErrorKind::Type,
            format!(
                "{} is not {} (a string of code points 0-255, or an array of byte values)",
                show(j),
                ty.avro_name()
            ),
        )
    };
    match j {
        Json::String(s) => s
            .chars()
            .map(|c| u8::try_from(u32::from(c)).map_err(|_| bad()))
            .collect(),
        Json::Array(items) => items
            .iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|b| u8::try_from(b).ok())
                    .ok_or_else(bad)
            })
            .collect(),
        _ => Err(shape_error(j, ty)),
    }
}

fn fixed(j: &Json, ty: &FieldType, f: &FixedType) -> Result<Vec<u8>, ConvError> {
    let b = bytes(j, ty)?;
    if b.len() != f.size {
        return Err((
            ErrorKind::Type,
            format!(
                "{} is {} bytes, fixed {} has {}",
                show(j),
                b.len(),
                f.name,
                f.size
            ),
        ));
    }
    Ok(b)
}

/// A decimal from a JSON string or number, exactly: more fractional digits than `scale`
/// (other than trailing zeros) or more digits than `precision` fail.
fn decimal(
    j: &Json,
    precision: u32,
    scale: u32,
    fixed: Option<&FixedType>,
    cx: &Ctx<'_>,
    at: &At<'_>,
) -> Result<Value, ConvError> {
    let text = match j {
        Json::String(s) => s.trim().to_string(),
        Json::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Json::Number(_) => number_text(cx.raw, at).ok_or_else(|| {
            (
                ErrorKind::Type,
                format!("{} could not be read exactly; give it as a string", show(j)),
            )
        })?,
        _ => {
            return Err(shape_error(
                j,
                &FieldType::Decimal {
                    precision,
                    scale,
                    fixed: None,
                },
            ))
        }
    };
    let unscaled = parse_decimal(&text, scale).map_err(|why| {
        let kind = match why {
            DecimalError::Syntax => ErrorKind::Type,
            _ => ErrorKind::OutOfRange,
        };
        let msg = match why {
            DecimalError::Syntax => format!("{} is not a decimal number", show(j)),
            DecimalError::Scale => format!(
                "{} has more decimal places than the scale {scale} of decimal({precision},{scale})",
                show(j)
            ),
            DecimalError::Overflow => {
                format!("{} does not fit in decimal({precision},{scale})", show(j))
            }
        };
        (kind, msg)
    })?;
    let digits = unscaled
        .unsigned_abs()
        .checked_ilog10()
        .map_or(1, |d| d + 1);
    if digits > precision {
        return Err((
            ErrorKind::OutOfRange,
            format!(
                "{} has {digits} digits, more than the precision of decimal({precision},{scale})",
                show(j)
            ),
        ));
    }
    let d = Decimal::new(unscaled, scale);
    if let Some(f) = fixed {
        if d.unscaled_bytes().len() > f.size {
            return Err((
                ErrorKind::OutOfRange,
                format!(
                    "{} does not fit in fixed {} ({} bytes)",
                    show(j),
                    f.name,
                    f.size
                ),
            ));
        }
    }
    Ok(Value::Decimal(d))
}

#[derive(Debug, PartialEq)]
pub(super) enum DecimalError {
    Syntax,
    /// Non-zero digits past the scale.
    Scale,
    Overflow,
}

/// Decimal text (`-12.50`, `1.2e3`) → the unscaled integer at `scale`.
pub(super) fn parse_decimal(text: &str, scale: u32) -> Result<i128, DecimalError> {
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (
            &rest[..i],
            rest[i + 1..]
                .parse::<i32>()
                .map_err(|_| DecimalError::Syntax)?,
        ),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(DecimalError::Syntax);
    }
    let digits: String = int.chars().chain(frac.chars()).collect();
    let digits = digits.trim_start_matches('0');
    // value = digits × 10^shift at the target scale
    let shift = i64::from(exp) - frac.len() as i64 + i64::from(scale);
    let kept = if shift >= 0 {
        digits
    } else {
        let cut = usize::try_from(-shift)
            .unwrap_or(usize::MAX)
            .min(digits.len());
        let (kept, dropped) = digits.split_at(digits.len() - cut);
        if dropped.bytes().any(|b| b != b'0') {
            return Err(DecimalError::Scale);
        }
        kept
    };
    if kept.is_empty() {
        return Ok(0);
    }
    let mut v: i128 = kept.parse().map_err(|_| DecimalError::Overflow)?;
    if shift > 0 {
        let factor = u32::try_from(shift)
            .ok()
            .and_then(|s| 10i128.checked_pow(s))
            .ok_or(DecimalError::Overflow)?;
        v = v.checked_mul(factor).ok_or(DecimalError::Overflow)?;
    }
    Ok(if negative { -v } else { v })
}

/// The text of the number at `at` in the raw record, read again with serde_json's raw values.
fn number_text(raw: &[u8], at: &At<'_>) -> Option<String> {
    enum Step<'s> {
        Key(&'s str),
        Index(usize),
    }
    fn steps<'s>(at: &At<'s>, top: &HashMap<String, &RawValue>, out: &mut Vec<Step<'s>>) {
        match *at {
            At::Root { from, path } => {
                if top.contains_key(from) {
                    out.push(Step::Key(from));
                } else {
                    out.extend(path.iter().map(|p| Step::Key(p.as_str())));
                }
            }
            At::Key(parent, k) => {
                steps(parent, top, out);
                out.push(Step::Key(k));
            }
            At::Index(parent, i) => {
                steps(parent, top, out);
                out.push(Step::Index(i));
            }
        }
    }
    let text = std::str::from_utf8(raw).ok()?;
    let top: HashMap<String, &RawValue> = serde_json::from_str(text).ok()?;
    let mut path = Vec::new();
    steps(at, &top, &mut path);
    let mut path = path.into_iter();
    let mut cur: &RawValue = match path.next()? {
        Step::Key(k) => top.get(k).copied()?,
        Step::Index(_) => return None,
    };
    for step in path {
        cur = match step {
            Step::Key(k) => {
                let m: HashMap<String, &RawValue> = serde_json::from_str(cur.get()).ok()?;
                m.get(k).copied()?
            }
            Step::Index(i) => {
                let v: Vec<&RawValue> = serde_json::from_str(cur.get()).ok()?;
                v.get(i).copied()?
            }
        };
    }
    Some(cur.get().trim().to_string())
}

/// The logical time types: the text form (RFC 3339 for timestamps, a date, a time of day,
/// a local date-time without offset) or a whole number in the type's unit (as for
/// `timestamp-millis`: JSON numbers always, numeric strings with `coerce`).
fn time(j: &Json, ty: &FieldType, coerce: bool) -> Result<Value, ConvError> {
    use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike};
    let rfc3339 = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
    let local = |s: &str| {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
            .ok()
            .map(|t| t.and_utc())
    };
    let of_day = |s: &str, per_sec: i64| {
        NaiveTime::parse_from_str(s, "%H:%M:%S%.f").ok().map(|t| {
            i64::from(t.num_seconds_from_midnight()) * per_sec
                + i64::from(t.nanosecond()) / (1_000_000_000 / per_sec)
        })
    };
    let (parsed, form): (Option<i64>, &str) = match j {
        Json::String(s) => {
            let s = s.trim();
            match ty {
                FieldType::Date => (
                    NaiveDate::parse_from_str(s, "%Y-%m-%d")
                        .ok()
                        .map(|d| (d - chrono::DateTime::UNIX_EPOCH.date_naive()).num_days()),
                    "a date (YYYY-MM-DD)",
                ),
                FieldType::TimeMillis => (of_day(s, 1_000), "a time of day (HH:MM:SS[.fff])"),
                FieldType::TimeMicros => {
                    (of_day(s, 1_000_000), "a time of day (HH:MM:SS[.ffffff])")
                }
                FieldType::TimestampMicros => {
                    (rfc3339(s).map(|t| t.timestamp_micros()), "an RFC 3339 time")
                }
                FieldType::TimestampNanos => (
                    rfc3339(s).and_then(|t| t.timestamp_nanos_opt()),
                    "an RFC 3339 time",
                ),
                FieldType::LocalTimestampMillis => (
                    local(s).map(|t| t.timestamp_millis()),
                    "a local date-time (YYYY-MM-DDTHH:MM:SS[.fff])",
                ),
                FieldType::LocalTimestampMicros => (
                    local(s).map(|t| t.timestamp_micros()),
                    "a local date-time (YYYY-MM-DDTHH:MM:SS[.ffffff])",
                ),
                FieldType::LocalTimestampNanos => (
                    local(s).and_then(|t| t.timestamp_nanos_opt()),
                    "a local date-time (YYYY-MM-DDTHH:MM:SS[.fffffffff])",
                ),
                _ => return Err(type_error(j, ty, coerce)),
            }
        }
        Json::Number(_) => (None, ""),
        _ => return Err(type_error(j, ty, coerce)),
    };
    let n = match (parsed, j) {
        (Some(n), _) => n,
        (None, Json::Number(_)) => integer(j, ty, coerce)?,
        (None, Json::String(s)) if coerce && s.trim().parse::<i64>().is_ok() => {
            integer(j, ty, coerce)?
        }
        (None, _) => {
            return Err((
                ErrorKind::Type,
                format!(
                    "{} is not {form}{}",
                    show(j),
                    if coerce { " or a whole number" } else { "" }
                ),
            ))
        }
    };
    // `below`: the end of the type's range (a time of day), if any
    let int = |below: Option<i64>| {
        i32::try_from(n)
            .ok()
            .filter(|v| below.is_none_or(|b| (0..b).contains(&i64::from(*v))))
            .ok_or_else(|| {
                (
                    ErrorKind::OutOfRange,
                    format!("{} is out of range for {}", show(j), ty.avro_name()),
                )
            })
    };
    Ok(match ty {
        FieldType::Date => Value::Date(int(None)?),
        FieldType::TimeMillis => Value::TimeMillis(int(Some(86_400_000))?),
        FieldType::TimeMicros => {
            if !(0..86_400_000_000).contains(&n) {
                return Err((
                    ErrorKind::OutOfRange,
                    format!("{} is out of range for time-micros", show(j)),
                ));
            }
            Value::TimeMicros(n)
        }
        FieldType::TimestampMicros => Value::TimestampMicros(n),
        FieldType::TimestampNanos => Value::TimestampNanos(n),
        FieldType::LocalTimestampMillis => Value::LocalTimestampMillis(n),
        FieldType::LocalTimestampMicros => Value::LocalTimestampMicros(n),
        FieldType::LocalTimestampNanos => Value::LocalTimestampNanos(n),
        _ => return Err(type_error(j, ty, coerce)),
    })
}
