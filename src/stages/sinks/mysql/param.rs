//! A record's values checked against their columns ([`Param`]: one place for every type rule —
//! nullability, integer ranges, NaN, dates, JSON) and written as SQL literals for the text
//! protocol ([`push_param`]); the binary protocol encodes the same `Param`s (`bound.rs`).
use std::fmt::Write as _;

use super::json;
use super::layout::Column;
use super::types::type_name;
use crate::record::{FieldType, Record, Value};

/// A string literal. Safe because the session's sql_mode is ours (backslash escapes on, no
/// NO_BACKSLASH_ESCAPES) and the connection charset is utf8mb4, where no multibyte character
/// contains the bytes of `'` or `\`; NUL is escaped too.
fn push_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 8);
    out.push('\'');
    // The runs between special characters are copied whole (the special ones are ASCII, so
    // the cuts fall on character boundaries).
    let mut rest = s;
    while let Some(at) = rest.bytes().position(|b| matches!(b, b'\'' | b'\\' | 0)) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'\'' => "\\'",
            b'\\' => "\\\\",
            _ => "\\0",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push('\'');
}

/// An integer in decimal (`itoa`: no formatting machinery per value).
fn push_int(out: &mut String, i: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(i));
}

/// A column's value, checked against the column's type, before either protocol writes it
/// (text: [`push_param`]; binary: `bound.rs`).
pub(super) enum Param<'v> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f32),
    Double(f64),
    Str(&'v str),
    /// With 3 (`DATETIME(3)`) or 6 (`DATETIME(6)`) fractional digits.
    DateTime(chrono::NaiveDateTime, usize),
    Date(chrono::NaiveDate),
    /// With 3 or 6 fractional digits.
    Time(chrono::NaiveTime, usize),
    Decimal(&'v crate::record::Decimal),
    Uuid(&'v uuid::Uuid),
    Bytes(&'v [u8]),
    Json(&'v Value),
}

/// `millis` after the epoch (UTC) for a `DATETIME(3)` column.
pub(super) fn datetime_millis(millis: i64) -> Result<Param<'static>, String> {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|dt| Param::DateTime(dt.naive_utc(), 3))
        .ok_or_else(|| format!("timestamp {millis} ms is outside any date"))
}

/// `micros` after the epoch (UTC) for a `DATETIME(6)` column.
fn datetime_micros(micros: i64) -> Result<Param<'static>, String> {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|dt| Param::DateTime(dt.naive_utc(), 6))
        .ok_or_else(|| format!("timestamp {micros} µs is outside any date"))
}

/// Writes a checked value as a SQL literal.
pub(super) fn push_param(out: &mut String, p: &Param<'_>) -> Result<(), String> {
    match p {
        Param::Null => out.push_str("NULL"),
        Param::Bool(b) => out.push(if *b { '1' } else { '0' }),
        Param::Int(i) => push_int(out, *i),
        Param::Float(f) => {
            let _ = write!(out, "{f:e}");
        }
        Param::Double(f) => {
            let _ = write!(out, "{f:e}");
        }
        Param::Str(s) => push_string(out, s),
        Param::DateTime(dt, digits) => push_datetime_at(out, dt, *digits),
        Param::Date(d) => {
            let _ = write!(out, "'{}'", d.format("%Y-%m-%d"));
        }
        Param::Time(t, 3) => {
            let _ = write!(out, "'{}'", t.format("%H:%M:%S%.3f"));
        }
        Param::Time(t, _) => {
            let _ = write!(out, "'{}'", t.format("%H:%M:%S%.6f"));
        }
        // An exact numeric literal: MySQL reads it as DECIMAL, no float on the way.
        Param::Decimal(d) => {
            let _ = write!(out, "{d}");
        }
        Param::Uuid(u) => {
            let _ = write!(out, "'{}'", u.hyphenated());
        }
        Param::Bytes(b) => {
            out.reserve(b.len() * 2 + 3);
            out.push_str("X'");
            for byte in *b {
                let _ = write!(out, "{byte:02x}");
            }
            out.push('\'');
        }
        Param::Json(v) => json::push_json(out, v)?,
    }
    Ok(())
}

/// `'YYYY-MM-DD hh:mm:ss.fff'` (3 digits) or `.ffffff` (6).
#[inline]
fn push_datetime_at(out: &mut String, dt: &chrono::NaiveDateTime, digits: usize) {
    use chrono::{Datelike, Timelike};
    let frac = if digits == 3 {
        dt.nanosecond() / 1_000_000
    } else {
        dt.nanosecond() / 1_000
    };
    let year = dt.year();
    if !(0..=9999).contains(&year) {
        let _ = write!(
            out,
            "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:0digits$}'",
            year,
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            frac
        );
        return;
    }
    // Digit by digit: `write!` with seven arguments was a sixth of sink-mysql's rendering,
    // and chrono's `format` parses its pattern on every call, 7 % of sink-mysql's CPU (perf,
    // issue #18); the tests below compare with chrono's format.
    let mut buf = [0u8; 28];
    let mut put = |at: usize, value: u32, width: usize| {
        let mut v = value;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(1, year as u32, 4);
    put(6, dt.month(), 2);
    put(9, dt.day(), 2);
    put(12, dt.hour(), 2);
    put(15, dt.minute(), 2);
    put(18, dt.second(), 2);
    put(21, frac, digits);
    let end = 21 + digits;
    for (at, c) in [
        (0, b'\''),
        (5, b'-'),
        (8, b'-'),
        (11, b' '),
        (14, b':'),
        (17, b':'),
        (20, b'.'),
        (end, b'\''),
    ] {
        buf[at] = c;
    }
    out.push_str(std::str::from_utf8(&buf[..=end]).unwrap_or_default());
}

/// A field inside nested records (`Source::Path`); null when a record on the way is null.
pub(super) fn lookup<'r>(record: &'r Record, path: &[String]) -> &'r Value {
    static NULL: Value = Value::Null;
    let mut fields = record;
    for (i, name) in path.iter().enumerate() {
        match fields.get(name) {
            Some(v) if i + 1 == path.len() => return v,
            Some(Value::Record(r)) => fields = r,
            _ => return &NULL,
        }
    }
    &NULL
}

/// Checks a value against its column: the value to write, or why the record cannot be a row.
pub(super) fn param<'v>(col: &Column, v: &'v Value) -> Result<Param<'v>, String> {
    let bad = |what: &str| format!("field `{}` ({}) holds {what}", col.name, type_name(&col.ty));
    Ok(match (&col.ty, v) {
        (_, Value::Null) => {
            if !col.nullable {
                return Err(format!("field `{}` is null but not nullable", col.name));
            }
            Param::Null
        }
        (FieldType::Boolean, Value::Boolean(b)) => Param::Bool(*b),
        (FieldType::Int | FieldType::Long, Value::Int(i)) => Param::Int(i64::from(*i)),
        (FieldType::Long, Value::Long(i) | Value::TimestampMillis(i)) => Param::Int(*i),
        (FieldType::Int, Value::Long(i)) => {
            if i32::try_from(*i).is_err() {
                return Err(bad(&format!("{i}, out of range for an int")));
            }
            Param::Int(*i)
        }
        (FieldType::Float | FieldType::Double, Value::Float(f)) => {
            if !f.is_finite() {
                return Err(bad(&format!("{f}, which MySQL cannot store")));
            }
            Param::Float(*f)
        }
        (FieldType::Float | FieldType::Double, Value::Double(f)) => {
            if !f.is_finite() {
                return Err(bad(&format!("{f}, which MySQL cannot store")));
            }
            Param::Double(*f)
        }
        (FieldType::Float | FieldType::Double, Value::Int(i)) => Param::Int(i64::from(*i)),
        (FieldType::Double, Value::Long(i)) => Param::Int(*i),
        (FieldType::String, Value::String(s)) => Param::Str(s),
        (FieldType::TimestampMillis, Value::TimestampMillis(ms) | Value::Long(ms)) => {
            datetime_millis(*ms).map_err(|e| bad(&e))?
        }
        // Past here: the types of issue 20, after the flat ones so that their path is as it was.
        (
            FieldType::TimestampMicros | FieldType::LocalTimestampMicros,
            Value::TimestampMicros(us) | Value::LocalTimestampMicros(us),
        ) => datetime_micros(*us).map_err(|e| bad(&e))?,
        // Nanoseconds are cut to the microseconds DATETIME(6) keeps (toward the past).
        (
            FieldType::TimestampNanos | FieldType::LocalTimestampNanos,
            Value::TimestampNanos(ns) | Value::LocalTimestampNanos(ns),
        ) => datetime_micros(ns.div_euclid(1000)).map_err(|e| bad(&e))?,
        (
            FieldType::LocalTimestampMillis,
            Value::LocalTimestampMillis(ms) | Value::TimestampMillis(ms),
        ) => datetime_millis(*ms).map_err(|e| bad(&e))?,
        (FieldType::Date, Value::Date(days)) => {
            Param::Date(json::date(*days).map_err(|e| bad(&e))?)
        }
        (FieldType::TimeMillis, Value::TimeMillis(ms)) => Param::Time(
            json::time(i64::from(*ms) * 1_000_000).map_err(|e| bad(&e))?,
            3,
        ),
        (FieldType::TimeMicros, Value::TimeMicros(us)) => {
            Param::Time(json::time(us.saturating_mul(1000)).map_err(|e| bad(&e))?, 6)
        }
        (FieldType::Decimal { .. }, Value::Decimal(d)) => Param::Decimal(d),
        (FieldType::Uuid, Value::Uuid(u)) => Param::Uuid(u),
        (FieldType::Enum(_), Value::Enum(s)) => Param::Str(s),
        (FieldType::Bytes | FieldType::Fixed(_), Value::Bytes(b) | Value::Fixed(b)) => {
            Param::Bytes(b)
        }
        (
            FieldType::Array(_) | FieldType::Map(_) | FieldType::Record(_) | FieldType::Union(_),
            v,
        ) => Param::Json(v),
        (_, other) => {
            return Err(bad(&format!("a value of another type ({other:?})")));
        }
    })
}

#[cfg(test)]
mod tests {
    fn assert_renders_as_chrono(ms: i64) {
        let mut out = String::new();
        super::push_param(&mut out, &super::datetime_millis(ms).unwrap()).unwrap();
        let dt = chrono::DateTime::from_timestamp_millis(ms).unwrap();
        let want = format!("'{}'", dt.format("%Y-%m-%d %H:%M:%S%.3f"));
        assert_eq!(out, want, "{ms}");
    }

    #[test]
    fn datetimes_render_as_chrono_formats_them() {
        for ms in [
            0,
            1_700_000_000_123,
            -1_234_567,
            253_402_300_799_999,
            951_782_400_999,
        ] {
            assert_renders_as_chrono(ms);
        }
    }

    #[test]
    fn datetimes_and_strings_render_as_the_formatting_machinery_did() {
        let mut x: u64 = 3;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 1
        };
        for _ in 0..20_000 {
            // Any instant from year 0 to 9999, and a few outside (the write! path).
            let ms = (next() % 315_537_897_600_000) as i64 - 62_167_219_200_000;
            assert_renders_as_chrono(ms);
            let us = ms * 1000 + (next() % 1000) as i64;
            let mut out = String::new();
            super::push_param(&mut out, &super::datetime_micros(us).unwrap()).unwrap();
            let dt = chrono::DateTime::from_timestamp_micros(us).unwrap();
            assert_eq!(
                out,
                format!("'{}'", dt.format("%Y-%m-%d %H:%M:%S%.6f")),
                "{us}"
            );
        }
        // The character-by-character escaping the run-by-run one replaced.
        let reference = |s: &str| {
            let mut out = String::from("'");
            for c in s.chars() {
                match c {
                    '\'' => out.push_str("\\'"),
                    '\\' => out.push_str("\\\\"),
                    '\0' => out.push_str("\\0"),
                    c => out.push(c),
                }
            }
            out.push('\'');
            out
        };
        let alphabet = ['a', '\'', '\\', '\0', 'é', '€', '😀', ' ', 'Z', '"'];
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let mut out = String::new();
            super::push_string(&mut out, &s);
            assert_eq!(out, reference(&s), "{s:?}");
        }
        let mut out = String::new();
        super::push_int(&mut out, i64::MIN);
        super::push_int(&mut out, -7i32);
        assert_eq!(out, format!("{}{}", i64::MIN, -7));
    }
}
