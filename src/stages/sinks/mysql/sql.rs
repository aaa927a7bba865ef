//! Rendering SQL text: quoted identifiers, records as row tuples of escaped literals, and
//! the multi-row `INSERT ... ON DUPLICATE KEY UPDATE` statements cut under the row and byte
//! limits ([`Statements`]).

use super::bound::BoundRow;
use super::layout::{Column, Layout, Source};
use super::param::{datetime_millis, lookup, param, push_param, Param};
use crate::record::{Record, Value};
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
