//! Rendering SQL text: quoted identifiers, records as row tuples of escaped literals, and
//! the multi-row `INSERT ... ON DUPLICATE KEY UPDATE` statements cut under the row and byte
//! limits ([`Statements`]).
use std::fmt::Write as _;

use super::bound::BoundRow;
use super::json;
use super::layout::{Column, Layout, Source};
use super::types::type_name;
use crate::record::{FieldType, Record, Value};
use crate::stages::sinks::{Rejected, SinkMessage, SinkMysqlConfig};

/// The most bound parameters one prepared statement may hold; text statements have no such
/// limit, but keeping under it leaves the prepared protocol open.
const MAX_PLACEHOLDERS: usize = 65_535;

impl Layout {
    /// `INSERT INTO t (cols) VALUES ` — rows follow.
    pub(super) fn insert_prefix(&self) -> String {
        let cols: Vec<String> = self.columns.iter().map(|c| ident(&c.name)).collect();
        format!(
            "INSERT INTO {} ({}) VALUES ",
            ident(&self.table),
            cols.join(",")
        )
    }

    /// The `ON DUPLICATE KEY UPDATE` tail: every column but the key takes the new value, or,
    /// with a `version` column, only when the new row's version is the same or newer
    /// (`c = IF(VALUES(v) >= v, VALUES(c), c)`). MySQL and MariaDB assign left to right and
    /// later expressions see earlier assignments, so the version column is assigned last:
    /// every condition compares with the stored version.
    pub(super) fn upsert_suffix(&self, alias: bool, version: Option<&str>) -> String {
        let new = |n: &str| {
            if alias {
                format!("new.{n}")
            } else {
                format!("VALUES({n})")
            }
        };
        let version = version
            .and_then(|v| self.columns[1..].iter().find(|c| c.name == v))
            .map(|c| ident(&c.name));
        let mut columns: Vec<&Column> = self.columns[1..].iter().collect();
        if let Some(v) = &version {
            columns.sort_by_key(|c| ident(&c.name) == *v);
        }
        let sets: Vec<String> = columns
            .iter()
            .map(|c| {
                let n = ident(&c.name);
                match &version {
                    Some(v) => format!("{n}=IF({}>={v},{},{n})", new(v), new(&n)),
                    None => format!("{n}={}", new(&n)),
                }
            })
            .collect();
        format!(
            "{} ON DUPLICATE KEY UPDATE {}",
            if alias { " AS new" } else { "" },
            sets.join(",")
        )
    }
}

/// A quoted identifier.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

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
fn datetime_millis(millis: i64) -> Result<Param<'static>, String> {
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
fn lookup<'r>(record: &'r Record, path: &[String]) -> &'r Value {
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
fn param<'v>(col: &Column, v: &'v Value) -> Result<Param<'v>, String> {
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

/// The per-row context that is not in the record.
pub struct RowContext<'a> {
    pub topic: &'a str,
    pub loaded_at_millis: i64,
}

/// One row ready for a statement, with the index of its message in the batch.
#[derive(Debug, Clone)]
pub struct Row {
    pub index: usize,
    pub body: RowBody,
}

/// A row in the form of the sink's statement protocol (`sink.mysql.protocol`).
#[derive(Debug, Clone)]
pub enum RowBody {
    /// `(v1,v2,...)`: SQL literals.
    Text(String),
    /// The values to bind to the row's placeholders.
    Bound(BoundRow),
}

impl Row {
    /// About the bytes the row adds to a statement (its share of `max_allowed_packet`).
    pub fn bytes(&self) -> usize {
        match &self.body {
            RowBody::Text(t) => t.len() + 1,
            RowBody::Bound(b) => b.bytes(),
        }
    }
}

/// Hands a record's values to `emit` in column order, or says why it cannot be a row.
pub(super) fn row_params(
    layout: &Layout,
    ctx: &RowContext<'_>,
    msg: &SinkMessage,
    record: &Record,
    mut emit: impl FnMut(Param<'_>) -> Result<(), String>,
) -> Result<(), Rejected> {
    let reject = |kind, message| Rejected {
        index: 0,
        kind,
        message,
    };
    let invalid = |message| reject("invalid_record", message);
    let mut next = 0;
    for col in &layout.columns {
        match &col.source {
            Source::KafkaKey => {
                let k = msg
                    .key_str()
                    .map_err(|e| reject("missing_key", e.to_string()))?;
                emit(Param::Str(k)).map_err(invalid)?;
            }
            Source::Field(name) => {
                // Columns follow the schema's field order, and so do a decoded record's
                // fields: look where the last one was found first (a search by name for
                // every column was a tenth of the rendering).
                let v = match record.fields.get(next) {
                    Some((n, v)) if **n == **name => {
                        next += 1;
                        v
                    }
                    _ => match record.fields.iter().position(|(n, _)| **n == **name) {
                        Some(at) => {
                            next = at + 1;
                            &record.fields[at].1
                        }
                        None => &Value::Null,
                    },
                };
                emit(param(col, v).map_err(invalid)?).map_err(invalid)?;
            }
            Source::Path(path) => {
                emit(param(col, lookup(record, path)).map_err(invalid)?).map_err(invalid)?;
            }
            Source::TraceId => match msg.trace_id(Some(record)) {
                Some(t) => emit(Param::Str(&t)).map_err(invalid)?,
                None => emit(Param::Null).map_err(invalid)?,
            },
            Source::SourceTopic => emit(Param::Str(ctx.topic)).map_err(invalid)?,
            Source::SourcePartition => {
                emit(Param::Int(i64::from(msg.partition))).map_err(invalid)?
            }
            Source::SourceOffset => emit(Param::Int(msg.offset)).map_err(invalid)?,
            Source::LoadedAt => {
                emit(datetime_millis(ctx.loaded_at_millis).map_err(invalid)?).map_err(invalid)?
            }
        }
    }
    Ok(())
}

/// Renders a record as a row tuple of SQL literals, or says why it cannot be a row.
pub fn render_row(
    layout: &Layout,
    ctx: &RowContext<'_>,
    msg: &SinkMessage,
    record: &Record,
    out: &mut String,
) -> Result<(), Rejected> {
    out.push('(');
    let mut first = true;
    row_params(layout, ctx, msg, record, |p| {
        if !first {
            out.push(',');
        }
        first = false;
        push_param(out, &p)
    })?;
    out.push(')');
    Ok(())
}

/// The statement text around the rows, and how many rows and bytes one statement may hold.
pub(super) struct Statements {
    insert_prefix: String,
    upsert_suffix: String,
    /// `(?,?,...)`: one bound row.
    row_placeholders: String,
    pub(super) max_rows: usize,
    pub(super) max_bytes: usize,
}

impl Statements {
    /// The statements for a layout: the upsert form, and limits from the configuration, the
    /// server's `max_allowed_packet` and the placeholder limit.
    pub(super) fn new(
        layout: &Layout,
        alias: bool,
        version: Option<&str>,
        packet: i64,
        cfg: &SinkMysqlConfig,
    ) -> Statements {
        let insert_prefix = layout.insert_prefix();
        let upsert_suffix = layout.upsert_suffix(alias, version);
        let overhead = insert_prefix.len() + upsert_suffix.len() + 1024;
        let max_bytes = cfg
            .max_statement_bytes
            .min(
                usize::try_from(packet)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(overhead),
            )
            .saturating_sub(insert_prefix.len() + upsert_suffix.len())
            .max(1024);
        let max_rows = cfg
            .rows_per_statement
            .min(MAX_PLACEHOLDERS / layout.columns.len())
            .max(1);
        let row_placeholders = format!("({})", vec!["?"; layout.columns.len()].join(","));
        Statements {
            insert_prefix,
            upsert_suffix,
            row_placeholders,
            max_rows,
            max_bytes,
        }
    }

    /// The statement for `rows`: text rows as their literals, bound rows as placeholders.
    pub(super) fn statement(&self, rows: &[Row]) -> String {
        let len: usize = rows
            .iter()
            .map(|r| match &r.body {
                RowBody::Text(t) => t.len() + 1,
                RowBody::Bound(_) => self.row_placeholders.len() + 1,
            })
            .sum();
        let mut s =
            String::with_capacity(self.insert_prefix.len() + len + self.upsert_suffix.len());
        s.push_str(&self.insert_prefix);
        for (i, r) in rows.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(match &r.body {
                RowBody::Text(t) => t,
                RowBody::Bound(_) => &self.row_placeholders,
            });
        }
        s.push_str(&self.upsert_suffix);
        s
    }

    /// Cuts rows into statements under the row and byte limits.
    pub(super) fn chunks<'a>(&self, rows: &'a [Row]) -> Vec<&'a [Row]> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut bytes = 0;
        for (i, r) in rows.iter().enumerate() {
            let n = i - start;
            if n > 0 && (n >= self.max_rows || bytes + r.bytes() > self.max_bytes) {
                out.push(&rows[start..i]);
                start = i;
                bytes = 0;
            }
            bytes += r.bytes();
        }
        if start < rows.len() {
            out.push(&rows[start..]);
        }
        out
    }
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

    use super::super::server::Flavor;
    use super::super::tests::schema;
    use super::*;

    #[test]
    fn upsert_form() {
        let l = Layout::new(&schema(), "t", None, 255, Flavor::MariaDb).unwrap();
        assert!(l
            .upsert_suffix(false, None)
            .starts_with(" ON DUPLICATE KEY UPDATE `summoner_id`=VALUES(`summoner_id`)"));
        assert!(l
            .upsert_suffix(true, None)
            .starts_with(" AS new ON DUPLICATE KEY UPDATE `summoner_id`=new.`summoner_id`"));
    }

    #[test]
    fn the_versioned_upsert_keeps_newer_rows_in_both_flavours() {
        let l = Layout::new(&schema(), "t", None, 255, Flavor::MariaDb).unwrap();
        let values = l.upsert_suffix(false, Some("fetched_at"));
        assert!(values.starts_with(
            " ON DUPLICATE KEY UPDATE `summoner_id`=IF(VALUES(`fetched_at`)>=`fetched_at`,VALUES(`summoner_id`),`summoner_id`),"
        ), "{values}");
        // The version column is assigned last, after every column that compares with it.
        assert!(values.ends_with(
            ",`fetched_at`=IF(VALUES(`fetched_at`)>=`fetched_at`,VALUES(`fetched_at`),`fetched_at`)"
        ), "{values}");
        assert!(values.contains(
            "`_loaded_at`=IF(VALUES(`fetched_at`)>=`fetched_at`,VALUES(`_loaded_at`),`_loaded_at`)"
        ));
        assert_eq!(values.matches("IF(").count(), l.columns.len() - 1);
        let alias = l.upsert_suffix(true, Some("fetched_at"));
        assert!(alias.starts_with(
            " AS new ON DUPLICATE KEY UPDATE `summoner_id`=IF(new.`fetched_at`>=`fetched_at`,new.`summoner_id`,`summoner_id`),"
        ), "{alias}");
        assert!(
            alias.ends_with(
                ",`fetched_at`=IF(new.`fetched_at`>=`fetched_at`,new.`fetched_at`,`fetched_at`)"
            ),
            "{alias}"
        );
    }

    #[test]
    fn rows_render_as_safe_literals() {
        let l = Layout::new(&schema(), "t", None, 255, Flavor::MariaDb).unwrap();
        let msg = SinkMessage {
            partition: 2,
            offset: 7,
            key: Some(b"k'1".to_vec()),
            payload: None,
            headers: None,
        };
        let mut r = Record::new();
        r.set("summoner_id", Value::String("a'b\\c".into()));
        r.set("wins", Value::Int(3));
        r.set("win_rate", Value::Null);
        r.set("fetched_at", Value::TimestampMillis(1_700_000_000_123));
        let ctx = RowContext {
            topic: "s",
            loaded_at_millis: 0,
        };
        let mut out = String::new();
        render_row(&l, &ctx, &msg, &r, &mut out).unwrap();
        assert_eq!(
            out,
            r"('k\'1','a\'b\\c',3,NULL,'2023-11-14 22:13:20.123',NULL,'s',2,7,'1970-01-01 00:00:00.000')"
        );
        r.set("win_rate", Value::Double(f64::NAN));
        let e = render_row(&l, &ctx, &msg, &r, &mut String::new()).unwrap_err();
        assert_eq!(e.kind, "invalid_record");
        r.set("win_rate", Value::Double(0.5));
        let no_key = SinkMessage { key: None, ..msg };
        let e = render_row(&l, &ctx, &no_key, &r, &mut String::new()).unwrap_err();
        assert_eq!(e.kind, "missing_key");
    }
}
