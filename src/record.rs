//! The typed record that cleaned and scored messages decode to, and the record schema
//! (parsed from `schemas/*.avsc`) that the codec, the clean mapping, the score stage and the
//! sinks share. Dynamic on purpose: which fields exist comes from the schema and the config.
use std::sync::Arc;

use serde::Serialize;

/// One field value, in the Avro types the pipeline uses.
///
/// A union value is the value of its branch (untagged): `["null", T]` holds `Null` or a `T`
/// value, and the encoder picks the branch of any union from the value (see
/// `codec::binary`). Logical types have their own variants so that a sink knows a date from
/// an int.
#[derive(Debug, Clone, PartialEq)]
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
    /// Avro `bytes`.
    Bytes(Vec<u8>),
    /// Avro `fixed`: exactly the schema's size.
    Fixed(Vec<u8>),
    /// Avro `enum`: the symbol.
    Enum(String),
    /// Avro `array`.
    Array(Vec<Value>),
    /// Avro `map`: entries in the order written (no hashing on the decode path).
    Map(Vec<(String, Value)>),
    /// A nested Avro `record`.
    Record(Record),
    /// `int`/`date`: days since the Unix epoch.
    Date(i32),
    /// `int`/`time-millis`: milliseconds after midnight.
    TimeMillis(i32),
    /// `long`/`time-micros`: microseconds after midnight.
    TimeMicros(i64),
    /// `long`/`timestamp-micros`: microseconds since the Unix epoch, UTC.
    TimestampMicros(i64),
    /// `long`/`timestamp-nanos`: nanoseconds since the Unix epoch, UTC.
    TimestampNanos(i64),
    /// `long`/`local-timestamp-millis`: milliseconds since 1970-01-01T00:00 in local time
    /// (no time zone).
    LocalTimestampMillis(i64),
    /// `long`/`local-timestamp-micros`.
    LocalTimestampMicros(i64),
    /// `long`/`local-timestamp-nanos`.
    LocalTimestampNanos(i64),
    /// `bytes` or `fixed` with logicalType `decimal`.
    Decimal(Decimal),
    /// `string`/`uuid`.
    Uuid(uuid::Uuid),
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
            // Logical types as their Avro number (days, ms/µs/ns), consistent within a field.
            Value::Date(v) | Value::TimeMillis(v) => Some(*v as f64),
            Value::TimeMicros(v)
            | Value::TimestampMicros(v)
            | Value::TimestampNanos(v)
            | Value::LocalTimestampMillis(v)
            | Value::LocalTimestampMicros(v)
            | Value::LocalTimestampNanos(v) => Some(*v as f64),
            // The exact text parsed: the nearest double.
            Value::Decimal(d) => d.to_string().parse().ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the value's kind, for messages (`array`, `decimal`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Boolean(_) => "boolean",
            Value::Int(_) => "int",
            Value::Long(_) => "long",
            Value::Float(_) => "float",
            Value::Double(_) => "double",
            Value::String(_) => "string",
            Value::TimestampMillis(_) => "timestamp-millis",
            Value::Bytes(_) => "bytes",
            Value::Fixed(_) => "fixed",
            Value::Enum(_) => "enum",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Record(_) => "record",
            Value::Date(_) => "date",
            Value::TimeMillis(_) => "time-millis",
            Value::TimeMicros(_) => "time-micros",
            Value::TimestampMicros(_) => "timestamp-micros",
            Value::TimestampNanos(_) => "timestamp-nanos",
            Value::LocalTimestampMillis(_) => "local-timestamp-millis",
            Value::LocalTimestampMicros(_) => "local-timestamp-micros",
            Value::LocalTimestampNanos(_) => "local-timestamp-nanos",
            Value::Decimal(_) => "decimal",
            Value::Uuid(_) => "uuid",
        }
    }
}

/// JSON shape of a value: numbers, strings, `null`, arrays; records and maps as objects;
/// bytes and fixed as arrays of byte values; decimals and uuids as strings.
impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Value::Null => s.serialize_unit(),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::Int(v) | Value::Date(v) | Value::TimeMillis(v) => s.serialize_i32(*v),
            Value::Long(v)
            | Value::TimestampMillis(v)
            | Value::TimeMicros(v)
            | Value::TimestampMicros(v)
            | Value::TimestampNanos(v)
            | Value::LocalTimestampMillis(v)
            | Value::LocalTimestampMicros(v)
            | Value::LocalTimestampNanos(v) => s.serialize_i64(*v),
            Value::Float(v) => s.serialize_f32(*v),
            Value::Double(v) => s.serialize_f64(*v),
            Value::String(v) | Value::Enum(v) => s.serialize_str(v),
            Value::Bytes(b) | Value::Fixed(b) => b.serialize(s),
            Value::Array(items) => items.serialize(s),
            Value::Map(entries) => {
                let mut m = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
            Value::Record(r) => {
                let mut m = s.serialize_map(Some(r.fields.len()))?;
                for (k, v) in &r.fields {
                    m.serialize_entry(&**k, v)?;
                }
                m.end()
            }
            Value::Decimal(d) => s.collect_str(d),
            Value::Uuid(u) => s.collect_str(u),
        }
    }
}

/// An Avro decimal: the unscaled integer as minimal big-endian two's complement (the bytes
/// Avro writes) and the scale. Arbitrary precision, as `bytes` decimals are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decimal {
    unscaled: Vec<u8>,
    scale: u32,
}

impl Decimal {
    /// `unscaled × 10^-scale`.
    pub fn new(unscaled: i128, scale: u32) -> Decimal {
        Decimal::from_be_bytes(&unscaled.to_be_bytes(), scale)
    }

    /// From big-endian two's complement bytes (any sign extension; empty is zero).
    pub fn from_be_bytes(bytes: &[u8], scale: u32) -> Decimal {
        let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
        let pad = if negative { 0xff } else { 0x00 };
        let mut start = 0;
        // Drop a leading byte while the next one still carries the sign.
        while start + 1 < bytes.len()
            && bytes[start] == pad
            && (bytes[start + 1] & 0x80 != 0) == negative
        {
            start += 1;
        }
        let unscaled = if bytes.is_empty() {
            vec![0]
        } else {
            bytes[start..].to_vec()
        };
        Decimal { unscaled, scale }
    }

    /// The unscaled integer, minimal big-endian two's complement.
    pub fn unscaled_bytes(&self) -> &[u8] {
        &self.unscaled
    }

    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// The unscaled integer when it fits an i128 (precision up to 38 always does).
    pub fn unscaled_i128(&self) -> Option<i128> {
        if self.unscaled.len() > 16 {
            return None;
        }
        let negative = self.unscaled[0] & 0x80 != 0;
        let mut buf = [if negative { 0xff } else { 0 }; 16];
        buf[16 - self.unscaled.len()..].copy_from_slice(&self.unscaled);
        Some(i128::from_be_bytes(buf))
    }

    /// The unscaled integer's decimal digits and whether it is negative.
    fn digits(&self) -> (bool, String) {
        let negative = self.unscaled[0] & 0x80 != 0;
        // Magnitude, big endian: two's complement negated for negative numbers.
        let mut mag: Vec<u8> = self.unscaled.clone();
        if negative {
            let mut carry = true;
            for b in mag.iter_mut().rev() {
                *b = !*b;
                if carry {
                    let (v, c) = b.overflowing_add(1);
                    *b = v;
                    carry = c;
                }
            }
        }
        let mut digits = Vec::new();
        while mag.iter().any(|&b| b != 0) {
            let mut rem = 0u32;
            for b in mag.iter_mut() {
                let cur = (rem << 8) | *b as u32;
                *b = (cur / 10) as u8;
                rem = cur % 10;
            }
            digits.push(b'0' + rem as u8);
        }
        if digits.is_empty() {
            digits.push(b'0');
        }
        digits.reverse();
        (negative, String::from_utf8(digits).unwrap_or_default())
    }

    /// How many decimal digits the unscaled integer has (its precision).
    pub fn precision(&self) -> usize {
        self.digits().1.len()
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (negative, digits) = self.digits();
        let scale = self.scale as usize;
        if negative {
            f.write_str("-")?;
        }
        if scale == 0 {
            return f.write_str(&digits);
        }
        if digits.len() <= scale {
            write!(f, "0.{}{}", "0".repeat(scale - digits.len()), digits)
        } else {
            let (int, frac) = digits.split_at(digits.len() - scale);
            write!(f, "{int}.{frac}")
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

/// The type of a schema field (after removing a `["null", T]` union, see
/// [`FieldSchema::nullable`]): the Avro 1.12 types, logical types as their own variants.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    Boolean,
    Int,
    Long,
    Float,
    Double,
    String,
    TimestampMillis,
    /// `null` (as a branch of a general union).
    Null,
    Bytes,
    Fixed(FixedType),
    Enum(Arc<EnumType>),
    /// `array` of the item type.
    Array(Box<FieldType>),
    /// `map` from string to the value type.
    Map(Box<FieldType>),
    /// A nested record.
    Record(Arc<RecordSchema>),
    /// Any union other than `["null", T]`, branches in schema order.
    Union(Vec<FieldType>),
    Date,
    TimeMillis,
    TimeMicros,
    TimestampMicros,
    TimestampNanos,
    LocalTimestampMillis,
    LocalTimestampMicros,
    LocalTimestampNanos,
    /// `decimal` on `bytes` (`fixed` `None`) or on a `fixed`.
    Decimal {
        precision: u32,
        scale: u32,
        fixed: Option<FixedType>,
    },
    /// `string`/`uuid`.
    Uuid,
}

/// A named `fixed` type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedType {
    /// Full name.
    pub name: String,
    /// Full names.
    pub aliases: Vec<String>,
    pub size: usize,
}

/// A named `enum` type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumType {
    /// Full name.
    pub name: String,
    /// Full names.
    pub aliases: Vec<String>,
    pub symbols: Vec<String>,
    /// The symbol a reader uses for a writer symbol it does not know.
    pub default: Option<String>,
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
            FieldType::Null => "null",
            FieldType::Bytes => "bytes",
            FieldType::Fixed(_) => "fixed",
            FieldType::Enum(_) => "enum",
            FieldType::Array(_) => "array",
            FieldType::Map(_) => "map",
            FieldType::Record(_) => "record",
            FieldType::Union(_) => "union",
            FieldType::Date => "date",
            FieldType::TimeMillis => "time-millis",
            FieldType::TimeMicros => "time-micros",
            FieldType::TimestampMicros => "timestamp-micros",
            FieldType::TimestampNanos => "timestamp-nanos",
            FieldType::LocalTimestampMillis => "local-timestamp-millis",
            FieldType::LocalTimestampMicros => "local-timestamp-micros",
            FieldType::LocalTimestampNanos => "local-timestamp-nanos",
            FieldType::Decimal { .. } => "decimal",
            FieldType::Uuid => "uuid",
        }
    }

    /// `true` for the types the pipeline carried before issue 20 (boolean, int, long, float,
    /// double, string, timestamp-millis): the ones every stage handles today, and the ones
    /// the codec's flat fast path reads and writes.
    pub fn is_flat(&self) -> bool {
        matches!(
            self,
            FieldType::Boolean
                | FieldType::Int
                | FieldType::Long
                | FieldType::Float
                | FieldType::Double
                | FieldType::String
                | FieldType::TimestampMillis
        )
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
    /// The field's `aliases` (names a reader also matches a writer's field by).
    pub aliases: Vec<String>,
}

/// An Avro record schema: the shape of cleaned and scored records, and of the records
/// nested in them.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordSchema {
    /// Full name (`namespace.name`).
    pub name: String,
    /// The record's `aliases`, as full names.
    pub aliases: Vec<String>,
    pub fields: Vec<FieldSchema>,
    /// The schema text as written in the `.avsc` file (canonical form is derived from it); for
    /// a nested record, its own definition as JSON.
    pub source: String,
}

impl RecordSchema {
    pub fn field(&self, name: &str) -> Option<&FieldSchema> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// `true` when every field is of a [flat](FieldType::is_flat) type, plain or
    /// `["null", T]`: the records every stage handles today.
    pub fn is_flat(&self) -> bool {
        self.fields.iter().all(|f| f.ty.is_flat())
    }

    /// The first field of a type outside the flat set: what a stage that cannot handle nested
    /// data yet names in its error.
    pub fn first_nested_field(&self) -> Option<&FieldSchema> {
        self.fields.iter().find(|f| !f.ty.is_flat())
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
