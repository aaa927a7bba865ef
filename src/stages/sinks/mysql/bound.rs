//! The binary protocol (`sink.mysql.protocol = "binary"`): a row as the values bound to its
//! placeholders in a prepared multi-row upsert.
//!
//! Why: end to end, MariaDB spent about a quarter of its CPU parsing the text statements'
//! literals (perf, issue #18). A prepared statement is parsed once per connection and shape;
//! each execution sends the values in binary (integers and timestamps as fixed-width fields,
//! strings length-prefixed and unescaped).
//!
//! Statement shapes are kept few so that prepared statements stay few on the server (each
//! holds its parse tree): a statement holds `max_rows` rows or a power of two below that
//! ([`Statements::piece`]), so a connection prepares at most ~11 shapes whatever the batch
//! sizes, and sqlx's per-connection cache (100) keeps them all.
use std::sync::OnceLock;

use chrono::Datelike;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::mysql::{MySql, MySqlArguments, MySqlTypeInfo};
use sqlx::{Arguments as _, Encode, Type};

use super::json;
use super::param::Param;
use super::sql::{Row, RowBody, Statements};

/// One row's values in column order, already in the binary protocol's encoding (sqlx's own
/// encoders, run while the batch is prepared off the poll thread): binding a statement is
/// then a copy. Compact — each value is its [`Kind`] byte then its encoding, the length read
/// back from the encoding itself — so a row takes about the bytes of its SQL text.
#[derive(Debug, Clone, Default)]
pub struct BoundRow {
    data: Vec<u8>,
    values: usize,
}

/// The wire type of a value; `Null` has no bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Null,
    Bool,
    Int,
    Float,
    Double,
    Str,
    DateTime,
    Date,
    Time,
    Bytes,
}

const KINDS: [Kind; 10] = [
    Kind::Null,
    Kind::Bool,
    Kind::Int,
    Kind::Float,
    Kind::Double,
    Kind::Str,
    Kind::DateTime,
    Kind::Date,
    Kind::Time,
    Kind::Bytes,
];

/// The length of the value encoded at the start of `bytes` (the MySQL binary protocol's
/// formats: fixed-width numbers, temporal values led by their length byte, strings and bytes
/// led by a length-encoded integer).
fn encoded_len(kind: Kind, bytes: &[u8]) -> usize {
    let at = |i: usize| usize::from(bytes.get(i).copied().unwrap_or(0));
    match kind {
        Kind::Null => 0,
        Kind::Bool => 1,
        Kind::Float => 4,
        Kind::Int | Kind::Double => 8,
        Kind::DateTime | Kind::Date | Kind::Time => 1 + at(0),
        Kind::Str | Kind::Bytes => match at(0) {
            0xfc => 3 + (at(1) | at(2) << 8),
            0xfd => 4 + (at(1) | at(2) << 8 | at(3) << 16),
            0xfe => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&bytes[1..9]);
                9 + u64::from_le_bytes(n) as usize
            }
            n => 1 + n,
        },
    }
}

/// The type sent for each kind, in `Kind` order.
fn type_info(kind: Kind) -> &'static MySqlTypeInfo {
    static TYPES: OnceLock<[MySqlTypeInfo; 10]> = OnceLock::new();
    &TYPES.get_or_init(|| {
        [
            <i64 as Type<MySql>>::type_info(),
            <bool as Type<MySql>>::type_info(),
            <i64 as Type<MySql>>::type_info(),
            <f32 as Type<MySql>>::type_info(),
            <f64 as Type<MySql>>::type_info(),
            <&str as Type<MySql>>::type_info(),
            <chrono::NaiveDateTime as Type<MySql>>::type_info(),
            <chrono::NaiveDate as Type<MySql>>::type_info(),
            <chrono::NaiveTime as Type<MySql>>::type_info(),
            <&[u8] as Type<MySql>>::type_info(),
        ]
    })[kind as usize]
}

/// A value's encoded bytes with its type, bound as they are.
struct Encoded<'a> {
    bytes: &'a [u8],
    kind: Kind,
}

impl Type<MySql> for Encoded<'_> {
    fn type_info() -> MySqlTypeInfo {
        type_info(Kind::Str).clone()
    }
}

impl Encode<'_, MySql> for Encoded<'_> {
    fn encode_by_ref(&self, buf: &mut Vec<u8>) -> Result<IsNull, BoxDynError> {
        if self.kind == Kind::Null {
            return Ok(IsNull::Yes);
        }
        buf.extend_from_slice(self.bytes);
        Ok(IsNull::No)
    }

    fn produces(&self) -> Option<MySqlTypeInfo> {
        Some(type_info(self.kind).clone())
    }

    fn size_hint(&self) -> usize {
        self.bytes.len()
    }
}

/// The years a `DATE` / `DATETIME` holds.
fn check_year(year: i32) -> Result<(), String> {
    if (0..=9999).contains(&year) {
        Ok(())
    } else {
        Err(format!(
            "year {year} is outside what a MySQL DATE or DATETIME holds (0 to 9999)"
        ))
    }
}

impl BoundRow {
    pub(super) fn with_capacity(data_bytes: usize) -> BoundRow {
        BoundRow {
            data: Vec::with_capacity(data_bytes),
            values: 0,
        }
    }

    /// The bytes of the encoded values (the capacity hint for the next row).
    pub(super) fn data_len(&self) -> usize {
        self.data.len()
    }

    /// About the bytes the row takes in a COM_STMT_EXECUTE packet: the values (with the
    /// kind bytes, one per value) and two bytes of type for each.
    pub fn bytes(&self) -> usize {
        self.data.len() + self.values * 2
    }

    fn put<'q, T: Encode<'q, MySql>>(&mut self, kind: Kind, v: T) -> Result<(), String> {
        let at = self.data.len();
        self.values += 1;
        self.data.push(kind as u8);
        let null = v
            .encode_by_ref(&mut self.data)
            .map_err(|e| format!("cannot encode the value: {e}"))?;
        if null.is_null() {
            self.data.truncate(at);
            self.data.push(Kind::Null as u8);
        }
        Ok(())
    }

    /// Appends the next column's value.
    pub(super) fn push(&mut self, p: Param<'_>) -> Result<(), String> {
        match p {
            Param::Null => {
                self.values += 1;
                self.data.push(Kind::Null as u8);
                Ok(())
            }
            Param::Bool(b) => self.put(Kind::Bool, b),
            Param::Int(i) => self.put(Kind::Int, i),
            Param::Float(f) => self.put(Kind::Float, f),
            Param::Double(f) => self.put(Kind::Double, f),
            Param::Str(s) => self.put(Kind::Str, s),
            Param::DateTime(dt, _) => {
                check_year(dt.year())?;
                self.put(Kind::DateTime, dt)
            }
            Param::Date(d) => {
                check_year(d.year())?;
                self.put(Kind::Date, d)
            }
            Param::Time(t, _) => self.put(Kind::Time, t),
            // Exact decimal text: MySQL converts it to the DECIMAL column without a float.
            Param::Decimal(d) => self.put(Kind::Str, d.to_string().as_str()),
            Param::Uuid(u) => {
                let mut text = uuid::Uuid::encode_buffer();
                self.put(Kind::Str, &*u.hyphenated().encode_lower(&mut text))
            }
            Param::Json(v) => {
                let mut text = String::new();
                json::write_json(&mut text, v)?;
                self.put(Kind::Str, text.as_str())
            }
            Param::Bytes(b) => self.put(Kind::Bytes, b),
        }
    }

    /// Binds the row's values, in order.
    fn bind(&self, args: &mut MySqlArguments) -> Result<(), BoxDynError> {
        let mut rest = &self.data[..];
        while let Some((&k, tail)) = rest.split_first() {
            let kind = *KINDS
                .get(usize::from(k))
                .ok_or("a bound row holds an unknown kind")?;
            let len = encoded_len(kind, tail);
            let (bytes, next) = tail
                .split_at_checked(len)
                .ok_or("a bound row ends inside a value")?;
            args.add(Encoded { bytes, kind })?;
            rest = next;
        }
        Ok(())
    }
}

/// The arguments of a statement of bound rows; `None` for text rows.
pub(super) fn arguments(rows: &[Row], columns: usize) -> Result<Option<MySqlArguments>, String> {
    let mut args = MySqlArguments::default();
    let mut bytes = 0;
    for r in rows {
        match &r.body {
            RowBody::Bound(b) => bytes += b.data.len(),
            RowBody::Text(_) => return Ok(None),
        }
    }
    args.reserve(rows.len() * columns, bytes);
    for r in rows {
        if let RowBody::Bound(b) = &r.body {
            b.bind(&mut args).map_err(|e| e.to_string())?;
        }
    }
    Ok(Some(args))
}

impl Statements {
    /// How many of `n` rows the next statement takes: all of them for text rows; for bound
    /// rows `max_rows`, or the largest power of two up to `n` (few statement shapes).
    pub(super) fn piece(&self, rows: &[Row]) -> usize {
        let n = rows.len();
        match rows.first().map(|r| &r.body) {
            Some(RowBody::Bound(_)) if n < self.max_rows => 1 << n.ilog2(),
            Some(RowBody::Bound(_)) => self.max_rows,
            _ => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::Layout;
    use super::super::server::Flavor;
    use super::super::tests::schema;
    use super::*;
    use crate::stages::sinks::SinkMysqlConfig;

    fn rows(n: usize, bound: bool) -> Vec<Row> {
        (0..n)
            .map(|index| Row {
                index,
                body: if bound {
                    RowBody::Bound(BoundRow::default())
                } else {
                    RowBody::Text("(1)".into())
                },
            })
            .collect()
    }

    #[test]
    fn bound_statements_come_in_few_shapes() {
        let l = Layout::new(&schema(), "t", None, 255, Flavor::MariaDb).unwrap();
        let st = Statements::new(&l, false, None, 16 << 20, &SinkMysqlConfig::default());
        assert_eq!(st.max_rows, 1000);
        let mut shapes = std::collections::BTreeSet::new();
        for n in 1..=2500 {
            let all = rows(n, true);
            let mut rest = &all[..];
            while !rest.is_empty() {
                let take = st.piece(rest);
                assert!(take >= 1 && take <= rest.len());
                shapes.insert(take);
                rest = &rest[take..];
            }
            // Text rows go in one statement per chunk, whatever their number.
            assert_eq!(st.piece(&rows(n, false)), n);
        }
        // 1000 and the powers of two below it.
        assert_eq!(shapes.len(), 11, "{shapes:?}");
        assert_eq!(
            st.statement(&rows(2, true)).matches('?').count(),
            2 * l.columns.len()
        );
    }

    #[test]
    fn values_bind_as_sqlx_encodes_them() {
        let dt = chrono::DateTime::from_timestamp_millis(1_700_000_000_123)
            .unwrap()
            .naive_utc();
        let day = dt.date();
        let time = chrono::NaiveTime::from_hms_micro_opt(12, 34, 56, 789_012).unwrap();
        // Strings around each length-encoding boundary.
        let strings: Vec<String> = [0, 1, 250, 251, 65_535, 65_536, 16_777_216]
            .iter()
            .map(|n| "é".repeat(*n / 2) + &"x".repeat(*n % 2))
            .collect();
        let blob = vec![0xfeu8; 300];
        let mut row = BoundRow::default();
        let mut direct = MySqlArguments::default();
        row.push(Param::Null).unwrap();
        direct.add(None::<i64>).unwrap();
        row.push(Param::Bool(true)).unwrap();
        direct.add(true).unwrap();
        row.push(Param::Int(-7)).unwrap();
        direct.add(-7i64).unwrap();
        row.push(Param::Float(0.25)).unwrap();
        direct.add(0.25f32).unwrap();
        row.push(Param::Double(-1e300)).unwrap();
        direct.add(-1e300f64).unwrap();
        for s in &strings {
            row.push(Param::Str(s)).unwrap();
            direct.add(s.as_str()).unwrap();
        }
        row.push(Param::DateTime(dt, 3)).unwrap();
        direct.add(dt).unwrap();
        row.push(Param::Date(day)).unwrap();
        direct.add(day).unwrap();
        row.push(Param::Time(time, 6)).unwrap();
        direct.add(time).unwrap();
        row.push(Param::Bytes(&blob)).unwrap();
        direct.add(&blob[..]).unwrap();
        row.push(Param::Null).unwrap();
        direct.add(None::<i64>).unwrap();
        let mut bound = MySqlArguments::default();
        row.bind(&mut bound).unwrap();
        assert_eq!(format!("{bound:?}"), format!("{direct:?}"));
        let old = chrono::NaiveDate::from_ymd_opt(-1, 1, 1).unwrap();
        let e = row.push(Param::Date(old)).unwrap_err();
        assert!(e.contains("year -1"), "{e}");
    }
}
