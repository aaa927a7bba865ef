//! The Avro → MySQL type mapping: the column type the sink creates for each Avro type, and
//! the types an existing column may have instead.
use crate::record::FieldType;

/// The column type the sink creates for an Avro type (not a key: see `layout::key_type`).
/// Strings are `LONGTEXT`, which holds any string an Avro record can carry: a `VARCHAR(n)`
/// would reject (error 1406) what sink-mongo stores, and the two sinks would hold different
/// records.
/// `None` for the types the sink cannot write yet.
pub fn sql_type(ty: &FieldType) -> Option<String> {
    Some(match ty {
        FieldType::Boolean => "BOOLEAN".into(),
        FieldType::Int => "INT".into(),
        FieldType::Long => "BIGINT".into(),
        FieldType::Float => "FLOAT".into(),
        FieldType::Double => "DOUBLE".into(),
        FieldType::String => "LONGTEXT".into(),
        FieldType::TimestampMillis => "DATETIME(3)".into(),
        // phase 2 (issue 20): JSON columns for nested values, DECIMAL(p,s), timestamps with
        // their precision, uuid as text.
        _ => return None,
    })
}

/// The `information_schema.COLUMNS.DATA_TYPE`s an existing column may have for an Avro type.
pub fn accepted_types(ty: &FieldType) -> &'static [&'static str] {
    match ty {
        FieldType::Boolean => &["tinyint", "smallint", "mediumint", "int", "bigint", "bit"],
        FieldType::Int => &["int", "bigint", "decimal"],
        FieldType::Long => &["bigint", "decimal"],
        FieldType::Float => &["float", "double", "decimal"],
        FieldType::Double => &["double", "decimal"],
        FieldType::String => &[
            "varchar",
            "char",
            "tinytext",
            "text",
            "mediumtext",
            "longtext",
        ],
        FieldType::TimestampMillis => &["datetime", "timestamp"],
        // phase 2 (issue 20): the columns nested and logical types may land in.
        _ => &[],
    }
}

/// The Avro name of a type, for error messages.
pub(super) fn type_name(ty: &FieldType) -> &'static str {
    ty.avro_name()
}
