//! The Avro → MySQL type mapping: the column type the sink creates for each Avro type, and
//! the types an existing column may have instead.
use crate::record::FieldType;

/// MySQL's largest `DECIMAL` precision and scale.
pub const MAX_DECIMAL_PRECISION: u32 = 65;
pub const MAX_DECIMAL_SCALE: u32 = 30;

/// `BINARY(n)` holds at most 255 bytes; a larger `fixed` is a `BLOB` (row size limit).
const MAX_BINARY: usize = 255;

/// The column type the sink creates for an Avro type (not a key: see `layout::key_type`), or
/// why the type cannot be a column.
///
/// Strings are `LONGTEXT` and bytes `LONGBLOB`, which hold anything an Avro record can carry:
/// a `VARCHAR(n)` would reject (error 1406) what sink-mongo stores, and the two sinks would
/// hold different records. Nested values (records, arrays, maps, unions of several types) are
/// `JSON` (on MariaDB an alias of `LONGTEXT` with a `JSON_VALID` check); a nested record can
/// be spread over columns instead (`sink.mysql.flatten`). Timestamps keep their precision:
/// millis `DATETIME(3)`, micros and nanos `DATETIME(6)` (MySQL has nothing finer: nanoseconds
/// are cut to microseconds).
pub fn sql_type(ty: &FieldType) -> Result<String, String> {
    Ok(match ty {
        FieldType::Boolean => "BOOLEAN".into(),
        FieldType::Int => "INT".into(),
        FieldType::Long => "BIGINT".into(),
        FieldType::Float => "FLOAT".into(),
        FieldType::Double => "DOUBLE".into(),
        FieldType::String => "LONGTEXT".into(),
        FieldType::TimestampMillis | FieldType::LocalTimestampMillis => "DATETIME(3)".into(),
        FieldType::TimestampMicros
        | FieldType::TimestampNanos
        | FieldType::LocalTimestampMicros
        | FieldType::LocalTimestampNanos => "DATETIME(6)".into(),
        FieldType::Date => "DATE".into(),
        FieldType::TimeMillis => "TIME(3)".into(),
        FieldType::TimeMicros => "TIME(6)".into(),
        FieldType::Decimal {
            precision, scale, ..
        } => {
            if *precision > MAX_DECIMAL_PRECISION || *scale > MAX_DECIMAL_SCALE {
                return Err(format!(
                    "decimal({precision},{scale}) does not fit MySQL's DECIMAL (precision at \
                     most {MAX_DECIMAL_PRECISION}, scale at most {MAX_DECIMAL_SCALE})"
                ));
            }
            format!("DECIMAL({precision},{scale})")
        }
        FieldType::Uuid => "CHAR(36) CHARACTER SET ascii".into(),
        // Symbols are [A-Za-z_][A-Za-z0-9_]*; not `ENUM(...)`: a symbol added to the schema
        // would need an ALTER before its first row.
        FieldType::Enum(e) => {
            let longest = e.symbols.iter().map(String::len).max().unwrap_or(1);
            if longest > 255 {
                return Err(format!(
                    "enum symbols longer than 255 characters ({longest})"
                ));
            }
            "VARCHAR(255) CHARACTER SET ascii".into()
        }
        FieldType::Bytes => "LONGBLOB".into(),
        FieldType::Fixed(f) if f.size <= MAX_BINARY => format!("BINARY({})", f.size),
        FieldType::Fixed(_) => "BLOB".into(),
        FieldType::Array(_) | FieldType::Map(_) | FieldType::Record(_) | FieldType::Union(_) => {
            "JSON".into()
        }
        FieldType::Null => return Err("a field of type null has nothing to store".into()),
    })
}

const TEXT: &[&str] = &[
    "varchar",
    "char",
    "tinytext",
    "text",
    "mediumtext",
    "longtext",
];
const BINARY: &[&str] = &[
    "binary",
    "varbinary",
    "tinyblob",
    "blob",
    "mediumblob",
    "longblob",
];

/// The `information_schema.COLUMNS.DATA_TYPE`s an existing column may have for an Avro type.
/// (MariaDB reports a `JSON` column as `longtext`.)
pub fn accepted_types(ty: &FieldType) -> &'static [&'static str] {
    match ty {
        FieldType::Boolean => &["tinyint", "smallint", "mediumint", "int", "bigint", "bit"],
        FieldType::Int => &["int", "bigint", "decimal"],
        FieldType::Long => &["bigint", "decimal"],
        FieldType::Float => &["float", "double", "decimal"],
        FieldType::Double => &["double", "decimal"],
        FieldType::String => TEXT,
        FieldType::TimestampMillis
        | FieldType::TimestampMicros
        | FieldType::TimestampNanos
        | FieldType::LocalTimestampMillis
        | FieldType::LocalTimestampMicros
        | FieldType::LocalTimestampNanos => &["datetime", "timestamp"],
        FieldType::Date => &["date", "datetime"],
        FieldType::TimeMillis | FieldType::TimeMicros => &["time"],
        FieldType::Decimal { .. } => &["decimal"],
        FieldType::Uuid => &["char", "varchar"],
        FieldType::Enum(_) => &["varchar", "char", "enum", "tinytext", "text"],
        FieldType::Bytes | FieldType::Fixed(_) => BINARY,
        FieldType::Array(_) | FieldType::Map(_) | FieldType::Record(_) | FieldType::Union(_) => {
            &["json", "longtext"]
        }
        FieldType::Null => &[],
    }
}

/// The fractional-second digits a column must keep for the type (`None`: not a time).
pub(super) fn fraction_digits(ty: &FieldType) -> Option<u32> {
    match ty {
        FieldType::TimestampMillis | FieldType::LocalTimestampMillis | FieldType::TimeMillis => {
            Some(3)
        }
        FieldType::TimestampMicros
        | FieldType::TimestampNanos
        | FieldType::LocalTimestampMicros
        | FieldType::LocalTimestampNanos
        | FieldType::TimeMicros => Some(6),
        _ => None,
    }
}

/// What an existing column's full type (`decimal(10,2)`, `datetime(6)`, `binary(16)`) lacks
/// for a field's type beyond its data type: too few fractional digits (MySQL rounds them away
/// silently), a decimal that cannot hold every value, a binary of the wrong size.
pub(super) fn column_type_problem(ty: &FieldType, column_type: &str) -> Option<String> {
    let args: Vec<u32> = column_type
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inside, _)| {
            inside
                .split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let lower = column_type.to_ascii_lowercase();
    match ty {
        // Unchecked for timestamp-millis, as before issue 20 (existing tables stay valid).
        FieldType::TimestampMillis => None,
        _ if fraction_digits(ty).is_some() => {
            let want = fraction_digits(ty).unwrap_or(0);
            let have = args.first().copied().unwrap_or(0);
            (have < want).then(|| format!("keeps {have} fractional digits, {want} are needed"))
        }
        FieldType::Decimal {
            precision, scale, ..
        } => {
            let (p, s) = (
                args.first().copied().unwrap_or(10),
                args.get(1).copied().unwrap_or(0),
            );
            (s != *scale || p < *precision)
                .then(|| format!("cannot hold every decimal({precision},{scale})"))
        }
        FieldType::Fixed(f) if lower.starts_with("binary") => {
            let n = args.first().copied().unwrap_or(1) as usize;
            (n != f.size).then(|| format!("is not {} bytes", f.size))
        }
        FieldType::Uuid => {
            let n = args.first().copied().unwrap_or(1);
            (n < 36).then(|| "is shorter than the 36 characters of a uuid".to_string())
        }
        _ => None,
    }
}

/// The Avro name of a type, for error messages.
pub(super) fn type_name(ty: &FieldType) -> &'static str {
    ty.avro_name()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::record::{EnumType, FixedType, RecordSchema};

    #[test]
    fn every_avro_type_has_a_column_and_accepts_what_it_creates() {
        let fixed = |size| {
            FieldType::Fixed(FixedType {
                name: "F".into(),
                aliases: vec![],
                size,
            })
        };
        let record = FieldType::Record(Arc::new(RecordSchema {
            name: "R".into(),
            aliases: vec![],
            fields: vec![],
            source: String::new(),
        }));
        let cases = [
            (FieldType::TimestampMicros, "DATETIME(6)"),
            (FieldType::TimestampNanos, "DATETIME(6)"),
            (FieldType::LocalTimestampMillis, "DATETIME(3)"),
            (FieldType::LocalTimestampMicros, "DATETIME(6)"),
            (FieldType::Date, "DATE"),
            (FieldType::TimeMillis, "TIME(3)"),
            (FieldType::TimeMicros, "TIME(6)"),
            (
                FieldType::Decimal {
                    precision: 10,
                    scale: 2,
                    fixed: None,
                },
                "DECIMAL(10,2)",
            ),
            (FieldType::Uuid, "CHAR(36) CHARACTER SET ascii"),
            (
                FieldType::Enum(Arc::new(EnumType {
                    name: "E".into(),
                    aliases: vec![],
                    symbols: vec!["A".into()],
                    default: None,
                })),
                "VARCHAR(255) CHARACTER SET ascii",
            ),
            (FieldType::Bytes, "LONGBLOB"),
            (fixed(16), "BINARY(16)"),
            (fixed(1000), "BLOB"),
            (FieldType::Array(Box::new(FieldType::Int)), "JSON"),
            (FieldType::Map(Box::new(FieldType::Int)), "JSON"),
            (record, "JSON"),
            (
                FieldType::Union(vec![FieldType::String, FieldType::Long]),
                "JSON",
            ),
        ];
        for (ty, want) in cases {
            let sql = sql_type(&ty).unwrap();
            assert_eq!(sql, want, "{ty:?}");
            // The data type MySQL reports for the created column is accepted (MariaDB: JSON
            // is longtext), and so is its full type.
            let data_type = sql
                .split(['(', ' '])
                .next()
                .unwrap()
                .to_ascii_lowercase()
                .replace("json", "longtext");
            assert!(
                accepted_types(&ty).contains(&data_type.as_str()),
                "{ty:?} {data_type}"
            );
            assert_eq!(
                column_type_problem(&ty, &sql.to_ascii_lowercase()),
                None,
                "{ty:?}"
            );
        }
    }

    #[test]
    fn what_mysql_cannot_hold_is_refused_or_flagged() {
        let dec = |precision, scale| FieldType::Decimal {
            precision,
            scale,
            fixed: None,
        };
        assert_eq!(sql_type(&dec(65, 30)).unwrap(), "DECIMAL(65,30)");
        let e = sql_type(&dec(66, 2)).unwrap_err();
        assert!(e.contains("decimal(66,2)") && e.contains("65"), "{e}");
        assert!(sql_type(&dec(40, 31)).is_err());
        assert!(column_type_problem(&dec(10, 2), "decimal(8,2)").is_some());
        assert!(column_type_problem(&dec(10, 2), "decimal(12,3)").is_some());
        assert!(column_type_problem(&dec(10, 2), "decimal(12,2)").is_none());
        let micros = FieldType::TimestampMicros;
        assert!(column_type_problem(&micros, "datetime(3)").is_some());
        assert!(column_type_problem(&micros, "datetime").is_some());
        assert!(column_type_problem(&micros, "timestamp(6)").is_none());
        assert!(column_type_problem(&FieldType::TimeMillis, "time").is_some());
        assert!(column_type_problem(&FieldType::Uuid, "char(32)").is_some());
    }
}
