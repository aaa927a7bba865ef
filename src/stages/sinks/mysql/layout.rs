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
    /// A field of a nested record spread over columns (`sink.mysql.flatten`): the field names
    /// from the top-level field down; null when a record on the way is null.
    Path(Vec<String>),
    TraceId,
    SourceTopic,
    SourcePartition,
    SourceOffset,
    LoadedAt,
}

impl Source {
    /// The column holds a record field (not lineage).
    pub fn is_field(&self) -> bool {
        matches!(self, Source::Field(_) | Source::Path(_))
    }
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
    /// The layout for a schema, nested records as `JSON` columns. Fails (naming the key) when
    /// `key_field` is not a usable key, or (naming the field) when a type has no column.
    pub fn new(
        schema: &RecordSchema,
        table: &str,
        key_field: Option<&str>,
        string_length: u32,
        flavor: Flavor,
    ) -> Result<Layout, SinkError> {
        Layout::with_flatten(schema, table, key_field, string_length, flavor, &[])
    }

    /// [`Layout::new`] with the nested records named in `flatten` (`sink.mysql.flatten`: field
    /// names, dotted paths for records inside flattened ones) spread over one column per
    /// field, named `<field>_<subfield>`.
    pub fn with_flatten(
        schema: &RecordSchema,
        table: &str,
        key_field: Option<&str>,
        string_length: u32,
        flavor: Flavor,
        flatten: &[String],
    ) -> Result<Layout, SinkError> {
        for f in &schema.fields {
            if lineage::ALL.contains(&f.name.as_str()) {
                return Err(SinkError::Schema(format!(
                    "schema field `{}` has the name of a lineage column; rename the field",
                    f.name
                )));
            }
        }
        check_flatten(schema, key_field, flatten)?;
        let mut columns = Vec::with_capacity(schema.fields.len() + 6);
        columns.push(key_column(schema, key_field, string_length, flavor)?);
        for f in &schema.fields {
            if Some(f.name.as_str()) == key_field {
                continue;
            }
            field_columns(f, &[], false, flatten, &mut columns)?;
        }
        columns.extend(lineage_columns());
        let mut seen = std::collections::HashSet::new();
        for c in &columns {
            // MySQL column names are case-insensitive and at most 64 characters.
            if c.name.chars().count() > 64 {
                return Err(flatten_error(format!(
                    "column `{}` would be longer than MySQL's 64 characters",
                    c.name
                )));
            }
            if !seen.insert(c.name.to_lowercase()) {
                return Err(flatten_error(format!(
                    "two columns would be named `{}`; rename a field or flatten less",
                    c.name
                )));
            }
        }
        Ok(Layout {
            table: table.to_string(),
            columns,
        })
    }

    pub fn key(&self) -> &Column {
        &self.columns[0]
    }
}

/// The column(s) of field `f` found at `path` inside the record: one, or one per subfield
/// when `f` is a record listed in `flatten` (recursively). `parent_nullable`: an enclosing
/// flattened record may be null, so every column under it may be.
fn field_columns(
    f: &FieldSchema,
    path: &[String],
    parent_nullable: bool,
    flatten: &[String],
    out: &mut Vec<Column>,
) -> Result<(), SinkError> {
    let mut path = path.to_vec();
    path.push(f.name.clone());
    let nullable = parent_nullable
        || f.nullable
        || matches!(&f.ty, FieldType::Union(b) if b.contains(&FieldType::Null));
    if let FieldType::Record(r) = &f.ty {
        if flatten.contains(&path.join(".")) {
            for sub in &r.fields {
                field_columns(sub, &path, nullable, flatten, out)?;
            }
            return Ok(());
        }
    }
    let sql = sql_type(&f.ty).map_err(|e| {
        SinkError::Schema(format!(
            "field `{}` ({}): {e}; the MySQL sink cannot write it",
            path.join("."),
            type_name(&f.ty)
        ))
    })?;
    let null = if nullable { "NULL" } else { "NOT NULL" };
    let source = if path.len() == 1 {
        Source::Field(f.name.clone())
    } else {
        Source::Path(path.clone())
    };
    out.push(Column {
        name: path.join("_"),
        ty: f.ty.clone(),
        nullable,
        source,
        create_type: format!("{sql} {null}"),
        doc: f.doc.clone(),
    });
    Ok(())
}

/// Every `sink.mysql.flatten` entry names a record field (`a`, or `a.b` inside a flattened
/// `a`) and not the key.
fn check_flatten(
    schema: &RecordSchema,
    key_field: Option<&str>,
    flatten: &[String],
) -> Result<(), SinkError> {
    for entry in flatten {
        let mut fields = &schema.fields;
        let parts: Vec<&str> = entry.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let at = parts[..=i].join(".");
            if i > 0 && !flatten.contains(&parts[..i].join(".")) {
                return Err(flatten_error(format!(
                    "`{entry}`: `{}` must be flattened too",
                    parts[..i].join(".")
                )));
            }
            let f = fields.iter().find(|f| f.name == *part).ok_or_else(|| {
                flatten_error(format!("`{at}` is not a field of schema {}", schema.name))
            })?;
            if i == 0 && Some(f.name.as_str()) == key_field {
                return Err(flatten_error(format!("`{at}` is the key field")));
            }
            match &f.ty {
                FieldType::Record(r) => fields = &r.fields,
                other => {
                    return Err(flatten_error(format!(
                        "`{at}` is a {}; only records can be flattened",
                        type_name(other)
                    )))
                }
            }
        }
    }
    Ok(())
}

fn flatten_error(message: String) -> SinkError {
    SinkError::Config(ConfigError::key("sink.mysql.flatten", message))
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
        FieldType::Int | FieldType::Long | FieldType::TimestampMillis | FieldType::Uuid => {
            sql_type(&f.ty).map_err(|e| key_error(format!("`{}`: {e}", f.name)))
        }
        _ => Err(key_error(format!(
            "`{}` is a {}; a key must be a string, int, long, timestamp-millis or uuid",
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
