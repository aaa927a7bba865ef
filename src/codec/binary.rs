//! The Avro binary datum of a record, written and read directly from a [`RecordSchema`] (no
//! intermediate value tree), and the read plan that resolves a writer schema into the reader
//! schema once, so decoding old data costs no more than decoding current data.
//!
//! Two paths, one format: flat records (every field boolean, int, long, float, double,
//! string or timestamp-millis, plain or `["null", T]`) go through the tight loops below,
//! unchanged since before nested types; every other type goes through [`encode_any`] and the
//! [`Node`](super::resolve::Node) tree of `resolve`. Tests hold both byte for byte to
//! apache-avro.
//!
//! A union value is its branch's value: the encoder takes the first branch of the value's
//! own type (for a record, the first record branch that has every field of the value), else
//! the first the value can be promoted into.
use std::sync::Arc;

use super::resolve::{self, Node, Phys, RecordNode};
use super::CodecError;
use crate::record::{Decimal, FieldSchema, FieldType, Name, Record, RecordSchema, Value};

/// Appends the Avro binary datum of `record` under `schema` to `out`.
///
/// Fields are taken by name (fast when the record lists them in schema order); a field the
/// record lacks takes the schema default, a field the schema lacks is an error, and values
/// are widened only along Avro's promotions (int→long/float/double, long→float/double,
/// float→double) and between long and timestamp-millis.
pub(crate) fn encode_datum(
    schema: &RecordSchema,
    record: &Record,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let mut matched = 0usize;
    for (i, field) in schema.fields.iter().enumerate() {
        let value = match record.fields.get(i) {
            Some((n, v)) if **n == *field.name => Some(v),
            _ => record.get(&field.name),
        };
        let value = match value {
            Some(v) => {
                matched += 1;
                v
            }
            None => match &field.default {
                Some(d) => d,
                None => {
                    return Err(CodecError::encode(
                        &field.name,
                        "missing from the record and the schema has no default",
                    ))
                }
            },
        };
        encode_value(field, value, out)?;
    }
    if matched != record.fields.len() {
        let extra = record
            .fields
            .iter()
            .map(|(n, _)| n)
            .find(|n| schema.field(n).is_none());
        return Err(match extra {
            Some(n) => CodecError::encode(n, format!("not a field of schema {}", schema.name)),
            None => CodecError::encode("?", "the record lists a field more than once".to_string()),
        });
    }
    Ok(())
}

fn encode_value(field: &FieldSchema, value: &Value, out: &mut Vec<u8>) -> Result<(), CodecError> {
    if value.is_null() {
        if field.nullable {
            out.push(0); // union branch 0: null
            return Ok(());
        }
        return Err(CodecError::encode(&field.name, "null in a required field"));
    }
    if field.nullable {
        out.push(2); // union branch 1, zigzag-encoded
    }
    match (&field.ty, value) {
        (FieldType::Boolean, Value::Boolean(b)) => out.push(*b as u8),
        (FieldType::Int, Value::Int(i)) => write_long(out, *i as i64),
        (FieldType::Long | FieldType::TimestampMillis, Value::Int(i)) => write_long(out, *i as i64),
        (
            FieldType::Long | FieldType::TimestampMillis,
            Value::Long(l) | Value::TimestampMillis(l),
        ) => write_long(out, *l),
        (FieldType::Float, Value::Float(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (FieldType::Float, Value::Int(i)) => out.extend_from_slice(&(*i as f32).to_le_bytes()),
        (FieldType::Float, Value::Long(l)) => out.extend_from_slice(&(*l as f32).to_le_bytes()),
        (FieldType::Double, Value::Double(d)) => out.extend_from_slice(&d.to_le_bytes()),
        (FieldType::Double, Value::Float(f)) => out.extend_from_slice(&(*f as f64).to_le_bytes()),
        (FieldType::Double, Value::Int(i)) => out.extend_from_slice(&(*i as f64).to_le_bytes()),
        (FieldType::Double, Value::Long(l)) => out.extend_from_slice(&(*l as f64).to_le_bytes()),
        (FieldType::String, Value::String(s)) => {
            write_long(out, s.len() as i64);
            out.extend_from_slice(s.as_bytes());
        }
        (ty, v) => return encode_any(ty, v, out).map_err(|e| within(e, &field.name)),
    }
    Ok(())
}

/// `e` of a part of `field` (an item, an entry, a nested field) named from `field` down.
fn within(e: CodecError, field: &str) -> CodecError {
    match e {
        CodecError::Encode {
            field: inner,
            message,
        } => CodecError::Encode {
            field: match inner.as_bytes().first() {
                None => field.to_string(),
                Some(b'[') => format!("{field}{inner}"),
                Some(_) => format!("{field}.{inner}"),
            },
            message,
        },
        e => e,
    }
}

/// Writes `v` as `ty`, any Avro type (the general path). Errors name the part of the value
/// relative to it (`""` for the value itself, `[3]`, `["k"]`, `x.y`).
pub(crate) fn encode_any(ty: &FieldType, v: &Value, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let unfit = || {
        CodecError::encode(
            "",
            format!(
                "value {} does not fit type {}",
                short(v),
                resolve::label(ty)
            ),
        )
    };
    match (ty, v) {
        (FieldType::Null, Value::Null) => {}
        (FieldType::Boolean, Value::Boolean(b)) => out.push(*b as u8),
        (FieldType::Int, Value::Int(i))
        | (FieldType::Date, Value::Date(i) | Value::Int(i))
        | (FieldType::TimeMillis, Value::TimeMillis(i) | Value::Int(i)) => {
            write_long(out, *i as i64)
        }
        (
            FieldType::Long
            | FieldType::TimestampMillis
            | FieldType::TimeMicros
            | FieldType::TimestampMicros
            | FieldType::TimestampNanos
            | FieldType::LocalTimestampMillis
            | FieldType::LocalTimestampMicros
            | FieldType::LocalTimestampNanos,
            Value::Int(i),
        ) => write_long(out, *i as i64),
        (FieldType::Long | FieldType::TimestampMillis, Value::Long(l) | Value::TimestampMillis(l))
        | (FieldType::TimeMicros, Value::TimeMicros(l) | Value::Long(l))
        | (FieldType::TimestampMicros, Value::TimestampMicros(l) | Value::Long(l))
        | (FieldType::TimestampNanos, Value::TimestampNanos(l) | Value::Long(l))
        | (FieldType::LocalTimestampMillis, Value::LocalTimestampMillis(l) | Value::Long(l))
        | (FieldType::LocalTimestampMicros, Value::LocalTimestampMicros(l) | Value::Long(l))
        | (FieldType::LocalTimestampNanos, Value::LocalTimestampNanos(l) | Value::Long(l)) => {
            write_long(out, *l)
        }
        (FieldType::Float, Value::Float(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (FieldType::Float, Value::Int(i)) => out.extend_from_slice(&(*i as f32).to_le_bytes()),
        (FieldType::Float, Value::Long(l)) => out.extend_from_slice(&(*l as f32).to_le_bytes()),
        (FieldType::Double, Value::Double(d)) => out.extend_from_slice(&d.to_le_bytes()),
        (FieldType::Double, Value::Float(f)) => out.extend_from_slice(&(*f as f64).to_le_bytes()),
        (FieldType::Double, Value::Int(i)) => out.extend_from_slice(&(*i as f64).to_le_bytes()),
        (FieldType::Double, Value::Long(l)) => out.extend_from_slice(&(*l as f64).to_le_bytes()),
        (FieldType::String, Value::String(s)) => write_bytes(out, s.as_bytes()),
        (FieldType::Bytes, Value::Bytes(b)) => write_bytes(out, b),
        (FieldType::Uuid, Value::Uuid(u)) => {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            write_bytes(out, u.hyphenated().encode_lower(&mut buf).as_bytes())
        }
        (FieldType::Fixed(f), Value::Fixed(b)) => {
            if b.len() != f.size {
                return Err(CodecError::encode(
                    "",
                    format!("{} bytes for fixed {} of {} bytes", b.len(), f.name, f.size),
                ));
            }
            out.extend_from_slice(b)
        }
        (FieldType::Enum(e), Value::Enum(sym)) => match e.symbols.iter().position(|s| s == sym) {
            Some(i) => write_long(out, i as i64),
            None => {
                return Err(CodecError::encode(
                    "",
                    format!("`{sym}` is not a symbol of enum {}", e.name),
                ))
            }
        },
        (
            FieldType::Decimal {
                precision,
                scale,
                fixed,
            },
            Value::Decimal(d),
        ) => encode_decimal(*precision, *scale, fixed.as_ref().map(|f| f.size), d, out)?,
        (FieldType::Array(items), Value::Array(vs)) => {
            if !vs.is_empty() {
                write_long(out, vs.len() as i64);
                for (i, x) in vs.iter().enumerate() {
                    encode_any(items, x, out).map_err(|e| within(e, &format!("[{i}]")))?;
                }
            }
            out.push(0);
        }
        (FieldType::Map(values), Value::Map(entries)) => {
            if !entries.is_empty() {
                write_long(out, entries.len() as i64);
                for (k, x) in entries {
                    write_bytes(out, k.as_bytes());
                    encode_any(values, x, out).map_err(|e| within(e, &format!("[{k:?}]")))?;
                }
            }
            out.push(0);
        }
        (FieldType::Record(rs), Value::Record(r)) => encode_datum(rs, r, out)?,
        (FieldType::Union(branches), v) => match pick_branch(branches, v) {
            Some(i) => {
                write_long(out, i as i64);
                encode_any(&branches[i], v, out)?;
            }
            None => {
                return Err(CodecError::encode(
                    "",
                    format!(
                        "value {} fits no branch of the union {}",
                        short(v),
                        resolve::label(ty)
                    ),
                ))
            }
        },
        _ => return Err(unfit()),
    }
    Ok(())
}

/// The value for messages: its kind and, for scalars, the value.
fn short(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Map(_) | Value::Record(_) | Value::Bytes(_) | Value::Fixed(_) => {
            v.kind().to_string()
        }
        v => format!("{v:?}"),
    }
}

fn encode_decimal(
    precision: u32,
    scale: u32,
    fixed: Option<usize>,
    d: &Decimal,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    if d.scale() != scale {
        return Err(CodecError::encode(
            "",
            format!(
                "decimal {d} has scale {}, the schema's decimal({precision},{scale}) {scale}",
                d.scale()
            ),
        ));
    }
    if d.precision() > precision as usize {
        return Err(CodecError::encode(
            "",
            format!("decimal {d} has more digits than the schema's precision {precision}"),
        ));
    }
    let b = d.unscaled_bytes();
    match fixed {
        None => write_bytes(out, b),
        Some(size) if b.len() <= size => {
            let pad = if b[0] & 0x80 != 0 { 0xff } else { 0 };
            out.extend(std::iter::repeat_n(pad, size - b.len()));
            out.extend_from_slice(b);
        }
        Some(size) => {
            return Err(CodecError::encode(
                "",
                format!("decimal {d} does not fit {size} bytes"),
            ))
        }
    }
    Ok(())
}

/// The union branch `v` is written as: the first of the value's own type, else the first it
/// can be promoted into.
fn pick_branch(branches: &[FieldType], v: &Value) -> Option<usize> {
    let own = |b: &FieldType| match (b, v) {
        (FieldType::Record(rs), Value::Record(r)) => r.fields.iter().all(|(n, _)| rs.field(n).is_some()),
        (FieldType::Enum(e), Value::Enum(s)) => e.symbols.contains(s),
        (FieldType::Fixed(f), Value::Fixed(b)) => f.size == b.len(),
        (FieldType::Decimal { scale, .. }, Value::Decimal(d)) => *scale == d.scale(),
        (b, v) => b.avro_name() == v.kind(),
    };
    branches.iter().position(own).or_else(|| {
        branches.iter().position(|b| {
            matches!(
                (b, v),
                (
                    FieldType::Long | FieldType::Float | FieldType::Double,
                    Value::Int(_)
                ) | (FieldType::Float | FieldType::Double, Value::Long(_))
                    | (FieldType::Double, Value::Float(_))
                    | (FieldType::Long, Value::TimestampMillis(_))
                    | (FieldType::TimestampMillis, Value::Long(_))
            )
        })
    })
}

#[inline]
fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

#[inline]
pub(crate) fn write_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// How to read each writer field into the reader schema, computed once per writer schema.
#[derive(Debug)]
pub(crate) struct ReadPlan {
    pub(crate) writer: Arc<RecordSchema>,
    steps: Vec<Step>,
    /// Reader-order values to start from: the defaults of reader-only fields (placeholders
    /// elsewhere). Empty when writer and reader have the same fields in the same order.
    template: Vec<Value>,
    /// The reader's field names, shared by every decoded record.
    names: Vec<Name>,
    /// The general path, for a writer or reader that is not flat (`steps` is then empty).
    general: Option<RecordNode>,
}

#[derive(Debug)]
struct Step {
    ty: FieldType,
    nullable: bool,
    /// Reader position and type, or `None` to skip a writer-only field.
    target: Option<(usize, FieldType)>,
}

impl ReadPlan {
    /// The plan for data written and read with the same schema.
    pub(crate) fn identity(schema: Arc<RecordSchema>) -> ReadPlan {
        if !schema.is_flat() {
            // A schema always resolves into itself; should it not, `new` says why at decode.
            return Self::new(schema.clone(), schema.clone()).unwrap_or_else(|_| ReadPlan {
                names: Vec::new(),
                writer: schema,
                steps: Vec::new(),
                template: Vec::new(),
                general: None,
            });
        }
        let steps = schema
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| Step {
                ty: f.ty.clone(),
                nullable: f.nullable,
                target: Some((i, f.ty.clone())),
            })
            .collect();
        ReadPlan {
            names: schema
                .fields
                .iter()
                .map(|f| Name::from(f.name.as_str()))
                .collect(),
            writer: schema,
            steps,
            template: Vec::new(),
            general: None,
        }
    }

    /// The plan for data written with `writer`, read as `reader`.
    pub(crate) fn new(
        writer: Arc<RecordSchema>,
        reader: Arc<RecordSchema>,
    ) -> Result<ReadPlan, CodecError> {
        let node = resolve::plan_record(&writer, &reader).map_err(|reason| {
            CodecError::Incompatible {
                writer: writer.name.clone(),
                writer_fingerprint: writer.fingerprint(),
                reader: reader.name.clone(),
                reason,
            }
        })?;
        if !(writer.is_flat() && reader.is_flat()) {
            return Ok(ReadPlan {
                names: node.names.clone(),
                writer,
                steps: Vec::new(),
                template: Vec::new(),
                general: Some(node),
            });
        }
        let identity = writer.fields.len() == reader.fields.len()
            && writer
                .fields
                .iter()
                .zip(&reader.fields)
                .all(|(w, r)| w.name == r.name && w.ty == r.ty && w.nullable == r.nullable);
        let steps = writer
            .fields
            .iter()
            .zip(&node.steps)
            .map(|(w, (target, _))| Step {
                ty: w.ty.clone(),
                nullable: w.nullable,
                target: target.map(|i| (i, reader.fields[i].ty.clone())),
            })
            .collect();
        Ok(ReadPlan {
            template: if identity { Vec::new() } else { node.template },
            names: node.names,
            writer,
            steps,
            general: None,
        })
    }

    /// Decodes one datum (the bytes after the framing header); all of `bytes` must be used.
    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<Record, CodecError> {
        let mut r = Cursor { buf: bytes, pos: 0 };
        let names = &self.names;
        let mut fields: Vec<(Name, Value)>;
        if let Some(node) = &self.general {
            fields = match read_record(&mut r, node) {
                Ok(rec) => rec.fields,
                Err(Fail { path, message }) => {
                    return Err(malformed(&join_path(&path), &r, message))
                }
            };
        } else if self.template.is_empty() {
            fields = Vec::with_capacity(names.len());
            for (step, name) in self.steps.iter().zip(names) {
                let v = read_field(&mut r, step).map_err(|m| malformed(name, &r, m))?;
                fields.push((name.clone(), v));
            }
        } else {
            let mut values = self.template.clone();
            for (step, w) in self.steps.iter().zip(&self.writer.fields) {
                let v = read_field(&mut r, step).map_err(|m| malformed(&w.name, &r, m))?;
                if let Some((i, _)) = step.target {
                    values[i] = v;
                }
            }
            fields = names.iter().cloned().zip(values).collect();
        }
        if r.pos != bytes.len() {
            return Err(CodecError::Malformed {
                message: format!(
                    "{} bytes left over after the last field of {} ({} bytes read); \
                     the data was not written with this schema",
                    bytes.len() - r.pos,
                    self.writer.name,
                    r.pos
                ),
            });
        }
        Ok(Record { fields })
    }
}

/// A decode failure on the general path: the path to the failing part, outermost first
/// (`["a", ".b", "[2]"]`), and what is wrong.
struct Fail {
    path: Vec<String>,
    message: &'static str,
}

impl From<&'static str> for Fail {
    fn from(message: &'static str) -> Fail {
        Fail {
            path: Vec::new(),
            message,
        }
    }
}

/// `["a", "b", "[2]"]` as `a.b[2]`.
fn join_path(parts: &[String]) -> String {
    let mut out = String::new();
    for p in parts {
        if !out.is_empty() && !p.starts_with('[') {
            out.push('.');
        }
        out.push_str(p);
    }
    out
}

fn at(mut f: Fail, part: String) -> Fail {
    f.path.insert(0, part);
    f
}

fn read_record(r: &mut Cursor<'_>, node: &RecordNode) -> Result<Record, Fail> {
    let mut values = if node.template.is_empty() {
        vec![Value::Null; node.names.len()]
    } else {
        node.template.clone()
    };
    for ((target, step), wname) in node.steps.iter().zip(&node.writer_names) {
        let v = read_node(r, step).map_err(|f| at(f, wname.clone()))?;
        if let Some(i) = target {
            values[*i] = v;
        }
    }
    Ok(Record {
        fields: node.names.iter().cloned().zip(values).collect(),
    })
}

/// Items of an array or entries of a map, block by block; `each` reads one.
fn read_blocks(
    r: &mut Cursor<'_>,
    mut each: impl FnMut(&mut Cursor<'_>, usize) -> Result<(), Fail>,
) -> Result<(), Fail> {
    let mut i = 0usize;
    loop {
        let count = r.read_long()?;
        if count == 0 {
            return Ok(());
        }
        let count = if count < 0 {
            // A negative count is followed by the block's size in bytes.
            r.read_long()?;
            count.checked_neg().ok_or("block count out of range")?
        } else {
            count
        };
        for _ in 0..count {
            each(r, i)?;
            i += 1;
        }
    }
}

fn read_node(r: &mut Cursor<'_>, node: &Node) -> Result<Value, Fail> {
    Ok(match node {
        Node::Leaf { writer, reader } => read_leaf(r, *writer, reader)?,
        Node::Enum(symbols) => {
            let i = r.read_long()?;
            let s = usize::try_from(i)
                .ok()
                .and_then(|i| symbols.get(i))
                .ok_or("enum index out of range")?;
            Value::Enum(s.to_string())
        }
        Node::Array(items) => {
            let mut out = Vec::new();
            read_blocks(r, |r, i| {
                out.push(read_node(r, items).map_err(|f| at(f, format!("[{i}]")))?);
                Ok(())
            })?;
            Value::Array(out)
        }
        Node::Map(values) => {
            let mut out = Vec::new();
            read_blocks(r, |r, _| {
                let k = std::str::from_utf8(r.take_len()?)
                    .map_err(|_| "map key is not valid UTF-8")?
                    .to_string();
                let v = read_node(r, values).map_err(|f| at(f, format!("[{k:?}]")))?;
                out.push((k, v));
                Ok(())
            })?;
            Value::Map(out)
        }
        Node::Record(rn) => Value::Record(read_record(r, rn)?),
        Node::Union(branches) => {
            let i = r.read_long()?;
            let b = usize::try_from(i)
                .ok()
                .and_then(|i| branches.get(i))
                .ok_or("union branch index out of range")?;
            read_node(r, b)?
        }
    })
}

/// A writer leaf read and turned into the reader's type (`resolve::plan` allowed the pair).
fn read_leaf(r: &mut Cursor<'_>, writer: Phys, reader: &FieldType) -> Result<Value, Fail> {
    let int = |l: i64| i32::try_from(l).map_err(|_| "int out of 32-bit range");
    Ok(match writer {
        Phys::Null => Value::Null,
        Phys::Boolean => match r.take(1)?[0] {
            0 => Value::Boolean(false),
            1 => Value::Boolean(true),
            _ => return Err("boolean byte is neither 0 nor 1".into()),
        },
        Phys::Int | Phys::Long => {
            let l = r.read_long()?;
            let l = if writer == Phys::Int {
                int(l)? as i64
            } else {
                l
            };
            match reader {
                FieldType::Int => Value::Int(int(l)?),
                FieldType::Date => Value::Date(int(l)?),
                FieldType::TimeMillis => Value::TimeMillis(int(l)?),
                FieldType::Long => Value::Long(l),
                FieldType::TimestampMillis => Value::TimestampMillis(l),
                FieldType::TimeMicros => Value::TimeMicros(l),
                FieldType::TimestampMicros => Value::TimestampMicros(l),
                FieldType::TimestampNanos => Value::TimestampNanos(l),
                FieldType::LocalTimestampMillis => Value::LocalTimestampMillis(l),
                FieldType::LocalTimestampMicros => Value::LocalTimestampMicros(l),
                FieldType::LocalTimestampNanos => Value::LocalTimestampNanos(l),
                FieldType::Float => Value::Float(l as f32),
                _ => Value::Double(l as f64),
            }
        }
        Phys::Float => {
            let b = r.take(4)?;
            let f = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            match reader {
                FieldType::Float => Value::Float(f),
                _ => Value::Double(f as f64),
            }
        }
        Phys::Double => {
            let b = r.take(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Value::Double(f64::from_le_bytes(a))
        }
        Phys::Bytes | Phys::String | Phys::Fixed(_) => {
            let b = match writer {
                Phys::Fixed(n) => r.take(n)?,
                _ => r.take_len()?,
            };
            let text = || std::str::from_utf8(b).map_err(|_| "string is not valid UTF-8");
            match reader {
                FieldType::String => Value::String(text()?.to_string()),
                FieldType::Uuid => Value::Uuid(
                    uuid::Uuid::try_parse(text()?).map_err(|_| "string is not a uuid")?,
                ),
                FieldType::Decimal { scale, .. } => Value::Decimal(Decimal::from_be_bytes(b, *scale)),
                FieldType::Fixed(_) => Value::Fixed(b.to_vec()),
                _ => Value::Bytes(b.to_vec()),
            }
        }
    })
}

fn malformed(field: &str, r: &Cursor<'_>, message: &'static str) -> CodecError {
    CodecError::Malformed {
        message: format!(
            "field `{field}`: {message} (at byte {} of {})",
            r.pos,
            r.buf.len()
        ),
    }
}

fn read_field(r: &mut Cursor<'_>, step: &Step) -> Result<Value, &'static str> {
    if step.nullable {
        match r.read_long()? {
            // check_can_read only lets a nullable writer field into a nullable reader field.
            0 => return Ok(Value::Null),
            1 => {}
            _ => return Err("union branch index is neither 0 (null) nor 1"),
        }
    }
    let v = match step.ty {
        FieldType::Boolean => match r.take(1)?[0] {
            0 => Value::Boolean(false),
            1 => Value::Boolean(true),
            _ => return Err("boolean byte is neither 0 nor 1"),
        },
        FieldType::Int => {
            let l = r.read_long()?;
            Value::Int(i32::try_from(l).map_err(|_| "int out of 32-bit range")?)
        }
        FieldType::Long => Value::Long(r.read_long()?),
        FieldType::TimestampMillis => Value::TimestampMillis(r.read_long()?),
        FieldType::Float => {
            let b = r.take(4)?;
            Value::Float(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
        FieldType::Double => {
            let b = r.take(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Value::Double(f64::from_le_bytes(a))
        }
        FieldType::String => {
            let len = r.read_long()?;
            let len = usize::try_from(len).map_err(|_| "negative string length")?;
            let b = r.take(len)?;
            Value::String(
                std::str::from_utf8(b)
                    .map_err(|_| "string is not valid UTF-8")?
                    .to_string(),
            )
        }
        // Flat plans hold only the types above (ReadPlan::new sends the rest to `general`).
        _ => return Err("not a flat type"),
    };
    Ok(match &step.target {
        Some((_, rt)) if *rt != step.ty => promote(v, rt),
        _ => v,
    })
}

fn promote(v: Value, to: &FieldType) -> Value {
    match (v, to) {
        (Value::Int(i), FieldType::Long) => Value::Long(i as i64),
        (Value::Int(i), FieldType::TimestampMillis) => Value::TimestampMillis(i as i64),
        (Value::Int(i), FieldType::Float) => Value::Float(i as f32),
        (Value::Int(i), FieldType::Double) => Value::Double(i as f64),
        (Value::Long(l), FieldType::TimestampMillis) => Value::TimestampMillis(l),
        (Value::TimestampMillis(l), FieldType::Long) => Value::Long(l),
        (Value::Long(l) | Value::TimestampMillis(l), FieldType::Float) => Value::Float(l as f32),
        (Value::Long(l) | Value::TimestampMillis(l), FieldType::Double) => Value::Double(l as f64),
        (Value::Float(f), FieldType::Double) => Value::Double(f as f64),
        (v, _) => v,
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or("truncated: the data ends inside this field")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// A length-prefixed byte string (bytes, string, map key).
    #[inline]
    fn take_len(&mut self) -> Result<&'a [u8], &'static str> {
        let len = self.read_long()?;
        let len = usize::try_from(len).map_err(|_| "negative string length")?;
        self.take(len)
    }

    #[inline]
    fn read_long(&mut self) -> Result<i64, &'static str> {
        let mut z: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or("truncated: the data ends inside this field")?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err("variable-length integer overflows 64 bits");
            }
            z |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }
}
