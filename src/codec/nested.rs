//! The general path of the binary datum: every Avro type outside the flat set, written by
//! [`encode_any`] and read by following a [`Node`] tree of `resolve`. Slower than the flat
//! loops of `binary` (a value tree, a path kept for messages), and only taken by schemas
//! that need it.
//!
//! A union value is its branch's value: the encoder takes the first branch of the value's
//! own type (for a record, the first record branch that has every field of the value), else
//! the first the value can be promoted into.
use super::binary::{encode_datum, write_flat, write_long, Cursor};
use super::resolve::{self, Node, Phys, RecordNode};
use super::CodecError;
use crate::record::{Decimal, FieldType, Record, Value};

/// `e` of a part of `field` (an item, an entry, a nested field) named from `field` down.
pub(crate) fn within(e: CodecError, field: &str) -> CodecError {
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
    if write_flat(ty, v, out) {
        return Ok(());
    }
    match (ty, v) {
        (FieldType::Null, Value::Null) => {}
        (FieldType::Date, Value::Date(i) | Value::Int(i))
        | (FieldType::TimeMillis, Value::TimeMillis(i) | Value::Int(i)) => {
            write_long(out, *i as i64)
        }
        // Every long-based logical type takes an int or a long.
        (t, Value::Int(i)) if resolve::phys(t) == Some(Phys::Long) => write_long(out, *i as i64),
        (t, Value::Long(l)) if resolve::phys(t) == Some(Phys::Long) => write_long(out, *l),
        (FieldType::TimeMicros, Value::TimeMicros(l))
        | (FieldType::TimestampMicros, Value::TimestampMicros(l))
        | (FieldType::TimestampNanos, Value::TimestampNanos(l))
        | (FieldType::LocalTimestampMillis, Value::LocalTimestampMillis(l))
        | (FieldType::LocalTimestampMicros, Value::LocalTimestampMicros(l))
        | (FieldType::LocalTimestampNanos, Value::LocalTimestampNanos(l)) => write_long(out, *l),
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
        (FieldType::Record(rs), Value::Record(r)) => {
            r.fields.iter().all(|(n, _)| rs.field(n).is_some())
        }
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

/// A decode failure on the general path: the path to the failing part, outermost first
/// (`["a", ".b", "[2]"]`), and what is wrong.
pub(crate) struct Fail {
    pub(crate) path: Vec<String>,
    pub(crate) message: &'static str,
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
pub(crate) fn join_path(parts: &[String]) -> String {
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

pub(crate) fn read_record(r: &mut Cursor<'_>, node: &RecordNode) -> Result<Record, Fail> {
    let mut values = if node.template.is_empty() {
        vec![Value::Null; node.names.len()]
    } else {
        node.template.clone()
    };
    for ((target, step), wname) in node.steps.iter().zip(&node.writer_names) {
        match target {
            Some(i) => values[*i] = read_node(r, step).map_err(|f| at(f, wname.clone()))?,
            // A writer-only field: checked as reading it would, nothing built.
            None => skip_node(r, step).map_err(|f| at(f, wname.clone()))?,
        }
    }
    Ok(Record {
        fields: node.names.iter().cloned().zip(values).collect(),
    })
}

/// How many items an array or map may have beyond one per byte of data left.
const MAX_EMPTY_ITEMS: i64 = 1 << 20;

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
        // More items than bytes left is only possible for items of zero bytes (null, an
        // empty record); bound those so that a corrupt count cannot spin for ever.
        if count > r.remaining() as i64 && (i as i64).saturating_add(count) > MAX_EMPTY_ITEMS {
            return Err("block count larger than the data left".into());
        }
        for _ in 0..count {
            each(r, i)?;
            i += 1;
        }
    }
}

/// The item of `items` at the index read next (an enum symbol, a union branch).
fn indexed<'n, T>(r: &mut Cursor<'_>, items: &'n [T], what: &'static str) -> Result<&'n T, Fail> {
    let i = r.read_long()?;
    Ok(usize::try_from(i)
        .ok()
        .and_then(|i| items.get(i))
        .ok_or(what)?)
}

fn read_node(r: &mut Cursor<'_>, node: &Node) -> Result<Value, Fail> {
    Ok(match node {
        Node::Leaf { writer, reader } => read_leaf(r, *writer, reader)?,
        Node::Enum(symbols) => {
            Value::Enum(indexed(r, symbols, "enum index out of range")?.to_string())
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
            let branch = indexed(r, branches, "union branch index out of range")?;
            read_node(r, branch)?
        }
    })
}

/// Reads past a value of `node` as [`read_node`] would read it — the same checks (union and
/// enum indexes, UTF-8, uuids, block counts) and the same errors — without building it: a
/// field the reader does not keep costs no allocation.
pub(crate) fn skip_node(r: &mut Cursor<'_>, node: &Node) -> Result<(), Fail> {
    match node {
        Node::Leaf { writer, reader } => match writer {
            Phys::Bytes | Phys::String | Phys::Fixed(_) => {
                let b = match writer {
                    Phys::Fixed(n) => r.take(*n)?,
                    _ => r.take_len()?,
                };
                if matches!(reader, FieldType::String | FieldType::Uuid) {
                    let text = std::str::from_utf8(b).map_err(|_| "string is not valid UTF-8")?;
                    if *reader == FieldType::Uuid {
                        uuid::Uuid::try_parse(text).map_err(|_| "string is not a uuid")?;
                    }
                }
            }
            // Numbers, booleans and null build nothing on the heap.
            _ => {
                read_leaf(r, *writer, reader)?;
            }
        },
        Node::Enum(symbols) => {
            indexed(r, symbols, "enum index out of range")?;
        }
        Node::Array(items) => {
            read_blocks(r, |r, i| {
                skip_node(r, items).map_err(|f| at(f, format!("[{i}]")))
            })?;
        }
        Node::Map(values) => {
            read_blocks(r, |r, _| {
                let k =
                    std::str::from_utf8(r.take_len()?).map_err(|_| "map key is not valid UTF-8")?;
                skip_node(r, values).map_err(|f| at(f, format!("[{k:?}]")))
            })?;
        }
        Node::Record(rn) => {
            for ((_, step), wname) in rn.steps.iter().zip(&rn.writer_names) {
                skip_node(r, step).map_err(|f| at(f, wname.clone()))?;
            }
        }
        Node::Union(branches) => {
            let branch = indexed(r, branches, "union branch index out of range")?;
            skip_node(r, branch)?;
        }
    }
    Ok(())
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
                FieldType::Uuid => {
                    Value::Uuid(uuid::Uuid::try_parse(text()?).map_err(|_| "string is not a uuid")?)
                }
                FieldType::Decimal { scale, .. } => {
                    Value::Decimal(Decimal::from_be_bytes(b, *scale))
                }
                FieldType::Fixed(_) => Value::Fixed(b.to_vec()),
                _ => Value::Bytes(b.to_vec()),
            }
        }
    })
}
