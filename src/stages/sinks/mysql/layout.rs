//! The target table's layout: its columns in insert order (the key first, then the schema's
//! fields, then the lineage columns), where each column's value comes from, and the SQL type
//! it is created with.
use super::server::Flavor;
use super::types::{sql_type, type_name};
use crate::record::{FieldSchema, FieldType, RecordSchema};
use crate::settings::ConfigError;
use crate::stages::sinks::{lineage, SinkError};

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The Kafka message key (UTF-8), column `_key`.
    KafkaKey,
    /// A schema field (by name).
    Field(String),
    TraceId,
    SourceTopic,
    SourcePartition,
    SourceOffset,
    LoadedAt,
}

/// One column of the target table.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub ty: FieldType,
    pub nullable: bool,
    pub source: Source,
    /// The full SQL type written in `CREATE TABLE` / `ADD COLUMN`.
    pub create_type: String,
    pub doc: Option<String>,
}

/// The target table: columns in insert order, the primary key first.
#[derive(Debug, Clone)]
pub struct Layout {
    pub table: String,
    pub columns: Vec<Column>,
}

impl Layout {
    /// The layout for a schema. Fails (naming the key) when `key_field` is not a usable key.
    pub fn new(
        schema: &RecordSchema,
        table: &str,
        key_field: Option<&str>,
        string_length: u32,
        flavor: Flavor,
    ) -> Result<Layout, SinkError> {
        for f in &schema.fields {
            if lineage::ALL.contains(&f.name.as_str()) {
                return Err(SinkError::Schema(format!(
                    "schema field `{}` has the name of a lineage column; rename the field",
                    f.name
                )));
            }
        }
        let mut columns = Vec::with_capacity(schema.fields.len() + 6);
        columns.push(key_column(schema, key_field, string_length, flavor)?);
        for f in &schema.fields {
            if Some(f.name.as_str()) == key_field {
                continue;
            }
            let null = if f.nullable { "NULL" } else { "NOT NULL" };
            let Some(sql) = sql_type(&f.ty) else {
                return Err(SinkError::Schema(format!(
                    "field `{}` is of type {}: the MySQL sink does not write nested types yet \
                     (issue 20, phase 2)",
                    f.name,
                    type_name(&f.ty)
                )));
            };
            columns.push(Column {
                name: f.name.clone(),
                ty: f.ty.clone(),
                nullable: f.nullable,
                source: Source::Field(f.name.clone()),
                create_type: format!("{sql} {null}"),
                doc: f.doc.clone(),
            });
        }
        columns.extend(lineage_columns());
        Ok(Layout {
            table: table.to_string(),
            columns,
        })
    }

    pub fn key(&self) -> &Column {
        &self.columns[0]
    }
}

/// The primary key column: the Kafka key (`key_field` unset) or the named schema field.
fn key_column(
    schema: &RecordSchema,
    key_field: Option<&str>,
    string_length: u32,
    flavor: Flavor,
) -> Result<Column, SinkError> {
    let coll = flavor.key_collation();
    let Some(k) = key_field else {
        return Ok(Column {
            name: lineage::KEY.into(),
            ty: FieldType::String,
            nullable: false,
            source: Source::KafkaKey,
            create_type: format!("VARCHAR(255) CHARACTER SET utf8mb4 COLLATE {coll} NOT NULL"),
            doc: Some("Kafka message key".into()),
        });
    };
    let f = schema
        .field(k)
        .ok_or_else(|| key_error(format!("`{k}` is not a field of schema {}", schema.name)))?;
    let t = key_type(f, string_length, coll)?;
    if f.nullable {
        return Err(key_error(format!(
            "`{k}` is nullable; a key field must not be"
        )));
    }
    Ok(Column {
        name: f.name.clone(),
        ty: f.ty.clone(),
        nullable: false,
        source: Source::Field(f.name.clone()),
        create_type: format!("{t} NOT NULL"),
        doc: f.doc.clone(),
    })
}

/// The SQL type of a key field's column (without `NOT NULL`); only strings, ints, longs and
/// timestamps can be keys.
fn key_type(f: &FieldSchema, string_length: u32, coll: &str) -> Result<String, SinkError> {
    let key_len = string_length.min(768); // 3072-byte InnoDB key / 4 bytes per character
    match f.ty {
        FieldType::String => Ok(format!(
            "VARCHAR({key_len}) CHARACTER SET utf8mb4 COLLATE {coll}"
        )),
        FieldType::Int | FieldType::Long | FieldType::TimestampMillis => {
            sql_type(&f.ty).ok_or_else(|| key_error(format!("`{}` has no column type", f.name)))
        }
        _ => Err(key_error(format!(
            "`{}` is a {}; a key must be a string, int, long or timestamp",
            f.name,
            type_name(&f.ty)
        ))),
    }
}

fn key_error(message: String) -> SinkError {
    SinkError::Config(ConfigError::key("sink.key_field", message))
}

/// The lineage columns, after the record's own.
fn lineage_columns() -> [Column; 5] {
    let lin = |name: &str, ty: FieldType, nullable, source, t: &str, doc: &str| Column {
        name: name.into(),
        ty,
        nullable,
        source,
        create_type: t.into(),
        doc: Some(doc.into()),
    };
    [
        lin(
            lineage::TRACE_ID,
            FieldType::String,
            true,
            Source::TraceId,
            "CHAR(32) CHARACTER SET ascii NULL",
            "W3C trace id (traceparent header, else the record's trace_id)",
        ),
        lin(
            lineage::SOURCE_TOPIC,
            FieldType::String,
            false,
            Source::SourceTopic,
            "VARCHAR(249) CHARACTER SET ascii NOT NULL",
            "Kafka topic the row was read from",
        ),
        lin(
            lineage::SOURCE_PARTITION,
            FieldType::Int,
            false,
            Source::SourcePartition,
            "INT NOT NULL",
            "Kafka partition the row was read from",
        ),
        lin(
            lineage::SOURCE_OFFSET,
            FieldType::Long,
            false,
            Source::SourceOffset,
            "BIGINT NOT NULL",
            "Kafka offset the row was read from",
        ),
        lin(
            lineage::LOADED_AT,
            FieldType::TimestampMillis,
            false,
            Source::LoadedAt,
            "DATETIME(3) NOT NULL",
            "When the sink wrote the row (UTC)",
        ),
    ]
}
