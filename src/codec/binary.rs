//! The Avro binary datum of a record, written and read directly from a [`RecordSchema`] (no
//! intermediate value tree), and the read plan that resolves a writer schema into the reader
//! schema once, so decoding old data costs no more than decoding current data.
//!
//! Two paths, one format: flat records (every field boolean, int, long, float, double,
//! string or timestamp-millis, plain or `["null", T]`) go through the tight loops below,
//! unchanged since before nested types; every other type goes through `nested`. Tests hold both byte for byte to
//! apache-avro.
use std::sync::Arc;

use super::nested::{encode_any, join_path, read_record, within, Fail};
use super::resolve::{self, RecordNode};
use super::CodecError;
use crate::record::{FieldSchema, FieldType, Name, Record, RecordSchema, Value};

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
        if !matches!(field.ty, FieldType::Union(_) | FieldType::Null) {
            return Err(CodecError::encode(&field.name, "null in a required field"));
        }
    }
    if field.nullable {
        out.push(2); // union branch 1, zigzag-encoded
    }
    if write_flat(&field.ty, value, out) {
        return Ok(());
    }
    encode_any(&field.ty, value, out).map_err(|e| within(e, &field.name))
}

/// Writes a value of a flat type, widened along Avro's promotions; `false` (nothing written)
/// when `(ty, value)` is not such a pair. Always inlined: it is the per-field body of the
/// flat encoder's hot loop, as it was before the general path split it out.
#[inline(always)]
pub(crate) fn write_flat(ty: &FieldType, value: &Value, out: &mut Vec<u8>) -> bool {
    match (ty, value) {
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
        _ => return false,
    }
    true
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
    /// The writer schema is the reader schema (same canonical form): the datum is already
    /// the reader's encoding.
    pub(crate) own: bool,
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
                own: true,
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
            own: true,
        }
    }

    /// The plan for data written with `writer`, read as `reader`.
    pub(crate) fn new(
        writer: Arc<RecordSchema>,
        reader: Arc<RecordSchema>,
    ) -> Result<ReadPlan, CodecError> {
        let node =
            resolve::plan_record(&writer, &reader).map_err(|reason| CodecError::Incompatible {
                writer: writer.name.clone(),
                writer_fingerprint: writer.fingerprint(),
                reader: reader.name.clone(),
                reason,
            })?;
        // The canonical form leaves logical types out: compare them too.
        let own = writer.fingerprint() == reader.fingerprint() && same_types(&writer, &reader);
        if !(writer.is_flat() && reader.is_flat()) {
            return Ok(ReadPlan {
                names: node.names.clone(),
                writer,
                steps: Vec::new(),
                template: Vec::new(),
                general: Some(node),
                own,
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
            own,
        })
    }

    /// Whether the plan takes the flat fast path.
    #[cfg(test)]
    pub(crate) fn is_flat(&self) -> bool {
        self.general.is_none()
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
                match step.target {
                    Some((i, _)) => {
                        values[i] =
                            read_field(&mut r, step).map_err(|m| malformed(&w.name, &r, m))?
                    }
                    None => skip_field(&mut r, step).map_err(|m| malformed(&w.name, &r, m))?,
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

fn malformed(field: &str, r: &Cursor<'_>, message: &'static str) -> CodecError {
    CodecError::Malformed {
        message: format!(
            "field `{field}`: {message} (at byte {} of {})",
            r.pos,
            r.buf.len()
        ),
    }
}

/// Whether two records have the same fields with the same types, logical types included
/// (docs, defaults and the schema text aside).
pub(crate) fn same_types(a: &RecordSchema, b: &RecordSchema) -> bool {
    fn ty(a: &FieldType, b: &FieldType) -> bool {
        match (a, b) {
            (FieldType::Record(x), FieldType::Record(y)) => same_types(x, y),
            (FieldType::Array(x), FieldType::Array(y)) | (FieldType::Map(x), FieldType::Map(y)) => {
                ty(x, y)
            }
            (FieldType::Union(x), FieldType::Union(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| ty(x, y))
            }
            _ => a == b,
        }
    }
    a.name == b.name
        && a.fields.len() == b.fields.len()
        && a.fields
            .iter()
            .zip(&b.fields)
            .all(|(x, y)| x.name == y.name && x.nullable == y.nullable && ty(&x.ty, &y.ty))
}

/// Reads past a writer-only field with the checks of [`read_field`], building nothing.
fn skip_field(r: &mut Cursor<'_>, step: &Step) -> Result<(), &'static str> {
    if step.ty != FieldType::String {
        return read_field(r, step).map(drop);
    }
    if step.nullable {
        match r.read_long()? {
            0 => return Ok(()),
            1 => {}
            _ => return Err("union branch index is neither 0 (null) nor 1"),
        }
    }
    std::str::from_utf8(r.take_len()?).map_err(|_| "string is not valid UTF-8")?;
    Ok(())
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

pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or("truncated: the data ends inside this field")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// A length-prefixed byte string (bytes, string, map key).
    #[inline]
    pub(crate) fn take_len(&mut self) -> Result<&'a [u8], &'static str> {
        let len = self.read_long()?;
        let len = usize::try_from(len).map_err(|_| "negative string length")?;
        self.take(len)
    }

    #[inline]
    pub(crate) fn read_long(&mut self) -> Result<i64, &'static str> {
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
