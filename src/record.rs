//! The typed record that cleaned and scored messages decode to, and the record schema
//! (parsed from `schemas/*.avsc`) that the codec, the clean mapping, the score stage and the
//! sinks share. Dynamic on purpose: which fields exist comes from the schema and the config.
use serde::Serialize;

/// One field value, in the Avro types the pipeline uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Boolean(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    String(String),
    /// Avro `long` with logicalType `timestamp-millis`: milliseconds since the Unix epoch, UTC.
    TimestampMillis(i64),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as f64 for numeric fields (statistics); `None` for null and non-numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(v) => Some(*v as f64),
            Value::Long(v) | Value::TimestampMillis(v) => Some(*v as f64),
            Value::Float(v) => Some(*v as f64),
            Value::Double(v) => Some(*v),
            Value::Boolean(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// A record: field values in schema order.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Record {
    /// Field names are shared (`Arc<str>`): a decoder or mapper hands out the schema's names
    /// without an allocation per field and record.
    pub fields: Vec<(Name, Value)>,
}

/// A field name as records carry it.
pub type Name = std::sync::Arc<str>;

impl Record {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of a field, if the record has it.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v)
    }

    /// [`Record::set`] with a shared name: appending it costs no allocation.
    pub fn set_shared(&mut self, name: &Name, value: Value) {
        match self.fields.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.fields.push((name.clone(), value)),
        }
    }

    /// Sets a field, replacing its value if present, appending otherwise.
    pub fn set(&mut self, name: &str, value: Value) {
        match self.fields.iter_mut().find(|(n, _)| &**n == name) {
            Some((_, v)) => *v = value,
            None => self.fields.push((name.into(), value)),
        }
    }
}

/// The primitive type of a schema field (after removing a `["null", T]` union).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    Boolean,
    Int,
    Long,
    Float,
    Double,
    String,
    TimestampMillis,
}

impl FieldType {
    /// The type as an Avro schema names it (`timestamp-millis` for the logical type): the one
    /// spelling every message about a field's type uses.
    pub fn avro_name(&self) -> &'static str {
        match self {
            FieldType::Boolean => "boolean",
            FieldType::Int => "int",
            FieldType::Long => "long",
            FieldType::Float => "float",
            FieldType::Double => "double",
            FieldType::String => "string",
            FieldType::TimestampMillis => "timestamp-millis",
        }
    }
}

/// One field of a record schema.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSchema {
    pub name: String,
    pub ty: FieldType,
    /// Declared as `["null", T]`.
    pub nullable: bool,
    /// The field's `doc`, if any.
    pub doc: Option<String>,
    /// The schema default, if any.
    pub default: Option<Value>,
}

/// A flat Avro record schema: the shape of cleaned and scored records.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordSchema {
    /// Full name (`namespace.name`).
    pub name: String,
    pub fields: Vec<FieldSchema>,
    /// The schema text as written in the `.avsc` file (canonical form is derived from it).
    pub source: String,
}

impl RecordSchema {
    pub fn field(&self, name: &str) -> Option<&FieldSchema> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The field names in schema order, comma separated (for messages naming what a schema has).
    pub fn field_names(&self) -> String {
        self.fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
