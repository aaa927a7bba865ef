//! Nested values as the text of a `JSON` column, written straight into the SQL string literal
//! (escaped as it goes: no intermediate JSON string per value).
//!
//! Records and maps are objects, arrays arrays, numbers numbers; decimals are strings (MySQL's
//! JSON type parses numbers as doubles, which would lose digits), as are uuids and enum
//! symbols. Dates, times and timestamps are ISO 8601 strings (`2024-05-01`, `13:45:00.250`,
//! `2024-05-01T13:45:00.250Z`; local timestamps without the `Z`), bytes and fixed lowercase
//! hex (`UNHEX()` reads them back). NaN and ±Infinity have no JSON form: the record is rejected.

use crate::record::Value;

/// Appends to a SQL string literal: the characters a literal must escape under the session's
/// sql_mode (see `param::push_string`).
struct Literal<'a>(&'a mut String);

impl std::fmt::Write for Literal<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            match c {
                '\'' => self.0.push_str("\\'"),
                '\\' => self.0.push_str("\\\\"),
                '\0' => self.0.push_str("\\0"),
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

/// `'<json>'`: the value as a quoted SQL literal of its JSON text.
pub(super) fn push_json(out: &mut String, v: &Value) -> Result<(), String> {
    out.push('\'');
    write_json(&mut Literal(out), v)?;
    out.push('\'');
    Ok(())
}

fn json_string<W: std::fmt::Write>(w: &mut W, s: &str) {
    let _ = w.write_char('"');
    for c in s.chars() {
        let _ = match c {
            '"' => w.write_str("\\\""),
            '\\' => w.write_str("\\\\"),
            '\n' => w.write_str("\\n"),
            '\r' => w.write_str("\\r"),
            '\t' => w.write_str("\\t"),
            c if (c as u32) < 0x20 => write!(w, "\\u{:04x}", c as u32),
            c => w.write_char(c),
        };
    }
    let _ = w.write_char('"');
}

/// Writes a value's JSON text.
pub(super) fn write_json<W: std::fmt::Write>(w: &mut W, v: &Value) -> Result<(), String> {
    match v {
        Value::Null => {
            let _ = w.write_str("null");
        }
        Value::Boolean(b) => {
            let _ = w.write_str(if *b { "true" } else { "false" });
        }
        Value::Int(i) => {
            let _ = write!(w, "{i}");
        }
        Value::Long(i) => {
            let _ = write!(w, "{i}");
        }
        Value::Float(f) if f.is_finite() => {
            let _ = write!(w, "{f:?}");
        }
        Value::Double(f) if f.is_finite() => {
            let _ = write!(w, "{f:?}");
        }
        Value::Float(_) | Value::Double(_) => {
            return Err(format!("{v:?}, which JSON cannot hold"));
        }
        Value::String(s) | Value::Enum(s) => json_string(w, s),
        Value::Bytes(b) | Value::Fixed(b) => {
            let _ = w.write_char('"');
            for byte in b {
                let _ = write!(w, "{byte:02x}");
            }
            let _ = w.write_char('"');
        }
        Value::Decimal(d) => {
            let _ = write!(w, "\"{d}\"");
        }
        Value::Uuid(u) => {
            let _ = write!(w, "\"{}\"", u.hyphenated());
        }
        Value::Date(days) => {
            let d = date(*days)?;
            let _ = write!(w, "\"{}\"", d.format("%Y-%m-%d"));
        }
        Value::TimeMillis(ms) => {
            let t = time(i64::from(*ms) * 1_000_000)?;
            let _ = write!(w, "\"{}\"", t.format("%H:%M:%S%.3f"));
        }
        Value::TimeMicros(us) => {
            let t = time(us.saturating_mul(1000))?;
            let _ = write!(w, "\"{}\"", t.format("%H:%M:%S%.6f"));
        }
        Value::TimestampMillis(ms) | Value::LocalTimestampMillis(ms) => {
            write_timestamp(w, chrono::DateTime::from_timestamp_millis(*ms), "%.3f", v)?
        }
        Value::TimestampMicros(us) | Value::LocalTimestampMicros(us) => {
            write_timestamp(w, chrono::DateTime::from_timestamp_micros(*us), "%.6f", v)?
        }
        Value::TimestampNanos(ns) | Value::LocalTimestampNanos(ns) => {
            let t = chrono::DateTime::from_timestamp_nanos(*ns);
            write_timestamp(w, Some(t), "%.9f", v)?
        }
        Value::Array(items) => {
            let _ = w.write_char('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    let _ = w.write_char(',');
                }
                write_json(w, item)?;
            }
            let _ = w.write_char(']');
        }
        Value::Map(entries) => write_object(w, entries.iter().map(|(k, v)| (k.as_str(), v)))?,
        Value::Record(r) => write_object(w, r.fields.iter().map(|(k, v)| (&**k, v)))?,
    }
    Ok(())
}

/// A timestamp as an ISO 8601 string: `Z` for UTC ones, nothing for local ones.
fn write_timestamp<W: std::fmt::Write>(
    w: &mut W,
    t: Option<chrono::DateTime<chrono::Utc>>,
    fraction: &str,
    v: &Value,
) -> Result<(), String> {
    let t = t.ok_or_else(|| format!("{v:?} is outside any date"))?;
    let utc = matches!(
        v,
        Value::TimestampMillis(_) | Value::TimestampMicros(_) | Value::TimestampNanos(_)
    );
    let z = if utc { "Z" } else { "" };
    let _ = write!(
        w,
        "\"{}{}{z}\"",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.format(fraction)
    );
    Ok(())
}

/// Records and maps: `{"k":v,...}`.
fn write_object<'a, W: std::fmt::Write>(
    w: &mut W,
    entries: impl Iterator<Item = (&'a str, &'a Value)>,
) -> Result<(), String> {
    let _ = w.write_char('{');
    for (i, (k, item)) in entries.enumerate() {
        if i > 0 {
            let _ = w.write_char(',');
        }
        json_string(w, k);
        let _ = w.write_char(':');
        write_json(w, item)?;
    }
    let _ = w.write_char('}');
    Ok(())
}

/// The day `days` after 1970-01-01.
pub(super) fn date(days: i32) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|epoch| epoch.checked_add_signed(chrono::TimeDelta::days(i64::from(days))))
        .ok_or_else(|| format!("date {days} days from 1970-01-01 is outside any date"))
}

/// The time of day `nanos` after midnight (a time-millis/micros value must be within a day).
pub(super) fn time(nanos: i64) -> Result<chrono::NaiveTime, String> {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    u32::try_from(secs)
        .ok()
        .and_then(|s| chrono::NaiveTime::from_num_seconds_from_midnight_opt(s, frac as u32))
        .filter(|_| nanos >= 0)
        .ok_or_else(|| format!("time {nanos} ns after midnight is not within a day"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Decimal, Record};

    fn json(v: &Value) -> String {
        let mut s = String::new();
        write_json(&mut s, v).unwrap();
        s
    }

    #[test]
    fn nested_values_are_json_every_leaf_readable() {
        let mut inner = Record::new();
        inner.set("progress", Value::String("W\"L\n'".into()));
        inner.set("when", Value::TimestampMicros(1_700_000_000_123_456));
        let v = Value::Map(vec![
            ("r".into(), Value::Record(inner)),
            (
                "a".into(),
                Value::Array(vec![
                    Value::Int(1),
                    Value::Double(0.5),
                    Value::Float(0.1),
                    Value::Null,
                    Value::Boolean(true),
                ]),
            ),
            ("d".into(), Value::Decimal(Decimal::new(-12_345, 2))),
            ("b".into(), Value::Bytes(vec![0, 0xff, 0x10])),
            (
                "u".into(),
                Value::Uuid(uuid::Uuid::from_u128(
                    0x550e_8400_e29b_41d4_a716_4466_5544_0000,
                )),
            ),
            ("day".into(), Value::Date(19_000)),
            ("t".into(), Value::TimeMillis(45_296_789)),
            ("l".into(), Value::LocalTimestampMillis(0)),
            ("e".into(), Value::Enum("GOLD".into())),
        ]);
        let text = json(&v);
        assert_eq!(
            text,
            r#"{"r":{"progress":"W\"L\n'","when":"2023-11-14T22:13:20.123456Z"},"a":[1,0.5,0.1,null,true],"d":"-123.45","b":"00ff10","u":"550e8400-e29b-41d4-a716-446655440000","day":"2022-01-08","t":"12:34:56.789","l":"1970-01-01T00:00:00.000","e":"GOLD"}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["r"]["progress"], "W\"L\n'");
        assert!(write_json(&mut String::new(), &Value::Double(f64::NAN)).is_err());
        assert!(write_json(&mut String::new(), &Value::TimeMillis(86_400_000)).is_err());
        assert!(write_json(&mut String::new(), &Value::TimeMillis(-1)).is_err());
    }

    #[test]
    fn the_literal_escapes_what_sql_must() {
        let mut out = String::new();
        push_json(
            &mut out,
            &Value::Array(vec![Value::String("a'b\\c\0".into())]),
        )
        .unwrap();
        // JSON escapes the backslash and NUL first, SQL then escapes JSON's backslashes.
        assert_eq!(out, r#"'["a\'b\\\\c\\u0000"]'"#);
    }
}
