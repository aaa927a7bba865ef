//! The lineage fields: the schema fields the stage fills itself from the message headers and
//! position (never from the raw JSON), the types they may have, and their values per message.
use crate::record::{FieldSchema, FieldType, RecordSchema, Value};
use crate::settings::ConfigError;

/// Schema fields the stage fills itself from headers and the message position.
pub const LINEAGE_FIELDS: [&str; 6] = [
    "source",
    "trace_id",
    "source_topic",
    "source_partition",
    "source_offset",
    "fetched_at",
];

/// Where a raw message came from: the values of the lineage fields.
#[derive(Debug, Clone, Copy)]
pub struct Lineage<'a> {
    /// `etl.source` header, or the configured fallback.
    pub source: &'a str,
    /// Trace id of the `traceparent` header, if valid.
    pub trace_id: Option<&'a str>,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// `etl.fetched_at` header (else the message timestamp), epoch milliseconds.
    pub fetched_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineageField {
    Source,
    TraceId,
    Topic,
    Partition,
    Offset,
    FetchedAt,
}

pub(super) fn lineage_field(name: &str) -> Option<LineageField> {
    Some(match name {
        "source" => LineageField::Source,
        "trace_id" => LineageField::TraceId,
        "source_topic" => LineageField::Topic,
        "source_partition" => LineageField::Partition,
        "source_offset" => LineageField::Offset,
        "fetched_at" => LineageField::FetchedAt,
        _ => return None,
    })
}

impl LineageField {
    /// Whether the stage can fill a field of type `ty` with this lineage value.
    fn fits(self, ty: &FieldType) -> bool {
        match self {
            LineageField::Source | LineageField::TraceId | LineageField::Topic => {
                *ty == FieldType::String
            }
            LineageField::Partition => matches!(ty, FieldType::Int | FieldType::Long),
            LineageField::Offset => *ty == FieldType::Long,
            LineageField::FetchedAt => matches!(ty, FieldType::TimestampMillis | FieldType::Long),
        }
    }

    /// What the stage fills the field with, for the message refusing another type.
    fn filled_with(self) -> &'static str {
        match self {
            LineageField::Source | LineageField::TraceId | LineageField::Topic => "a string",
            LineageField::Partition => "an int or long",
            LineageField::Offset => "a long",
            LineageField::FetchedAt => "a timestamp-millis (or long)",
        }
    }
}

/// Lineage fields present in the schema must have a type the stage can fill.
pub(super) fn check_lineage_types(schema: &RecordSchema) -> Result<(), ConfigError> {
    for f in &schema.fields {
        let Some(l) = lineage_field(&f.name) else {
            continue;
        };
        if !l.fits(&f.ty) {
            return Err(wrong_type(schema, f, l));
        }
    }
    Ok(())
}

fn wrong_type(schema: &RecordSchema, f: &FieldSchema, l: LineageField) -> ConfigError {
    ConfigError::key(
        "clean.schema",
        format!(
            "lineage field `{}` of schema {} is {}; the stage fills it with {}",
            f.name,
            schema.name,
            f.ty.avro_name(),
            l.filled_with()
        ),
    )
}

/// The value of a lineage field for one message; `None` when the message lacks it.
pub(super) fn lineage_value(l: LineageField, ty: &FieldType, lin: &Lineage<'_>) -> Option<Value> {
    Some(match l {
        LineageField::Source => Value::String(lin.source.to_string()),
        LineageField::TraceId => Value::String(lin.trace_id?.to_string()),
        LineageField::Topic => Value::String(lin.topic.to_string()),
        LineageField::Partition if *ty == FieldType::Long => Value::Long(lin.partition as i64),
        LineageField::Partition => Value::Int(lin.partition),
        LineageField::Offset => Value::Long(lin.offset),
        LineageField::FetchedAt if *ty == FieldType::Long => Value::Long(lin.fetched_at_ms?),
        LineageField::FetchedAt => Value::TimestampMillis(lin.fetched_at_ms?),
    })
}
