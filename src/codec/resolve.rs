//! Avro 1.12 schema resolution: how data written with a writer schema is read as the reader
//! schema, worked out once per schema pair into a [`Node`] tree that the decoder follows.
//!
//! The rules are the specification's: records matched by unqualified name or a reader alias,
//! fields by name or reader field alias (writer-only fields skipped, reader-only fields take
//! their default), enums by name with the reader's default for an unknown symbol, fixed by
//! name and size, decimals by precision and scale, the promotions int→long/float/double,
//! long→float/double, float→double and string↔bytes, other logical types resolved on their
//! underlying type. A reader union takes the first branch of the writer's type (same type
//! and name), else the first it can be promoted to (as Java Avro). Resolution is checked for
//! every branch a writer union can hold, so a plan never fails on data it accepted: a
//! nullable writer field into a required reader field is refused up front, as Confluent's
//! BACKWARD check does, rather than per record as the specification allows.
//!
//! apache-avro 0.20 resolves per value (`Value::resolve`): it matches fields by name only
//! (no aliases) and union branches by value, so it cannot be the resolver here; the tests
//! hold this module to apache-avro's answers where those agree with the specification.
use std::sync::Arc;

use super::schema::full_type;
use crate::record::{EnumType, FieldSchema, FieldType, Name, RecordSchema, Value};

/// How to read one writer value as the reader's type.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// A writer primitive (or fixed), converted to the reader type.
    Leaf {
        writer: Phys,
        reader: FieldType,
    },
    /// A writer enum: the reader symbol of each writer index (the reader's default for a
    /// symbol it does not have).
    Enum(Vec<Arc<str>>),
    Array(Box<Node>),
    Map(Box<Node>),
    Record(Arc<RecordNode>),
    /// A writer union: the node of each branch.
    Union(Vec<Node>),
}

/// The physical type of a writer leaf: what its bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phys {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Fixed(usize),
}

/// A writer record read as a reader record.
#[derive(Debug)]
pub(crate) struct RecordNode {
    /// Per writer field in writer order: its reader position (`None`: skipped) and node.
    pub(crate) steps: Vec<(Option<usize>, Node)>,
    /// Writer field names, for messages.
    pub(crate) writer_names: Vec<String>,
    /// Reader-order values to start from: defaults of reader-only fields.
    pub(crate) template: Vec<Value>,
    /// Reader field names.
    pub(crate) names: Vec<Name>,
}

/// The underlying type of a leaf (a logical type's, a decimal's); `None` for the rest.
pub(crate) fn phys(t: &FieldType) -> Option<Phys> {
    Some(match t {
        FieldType::Null => Phys::Null,
        FieldType::Boolean => Phys::Boolean,
        FieldType::Int | FieldType::Date | FieldType::TimeMillis => Phys::Int,
        FieldType::Long
        | FieldType::TimestampMillis
        | FieldType::TimeMicros
        | FieldType::TimestampMicros
        | FieldType::TimestampNanos
        | FieldType::LocalTimestampMillis
        | FieldType::LocalTimestampMicros
        | FieldType::LocalTimestampNanos => Phys::Long,
        FieldType::Float => Phys::Float,
        FieldType::Double => Phys::Double,
        FieldType::Bytes | FieldType::Decimal { fixed: None, .. } => Phys::Bytes,
        FieldType::String | FieldType::Uuid => Phys::String,
        FieldType::Fixed(f) | FieldType::Decimal { fixed: Some(f), .. } => Phys::Fixed(f.size),
        FieldType::Enum(_)
        | FieldType::Array(_)
        | FieldType::Map(_)
        | FieldType::Record(_)
        | FieldType::Union(_) => return None,
    })
}

/// The name and aliases of a named type.
fn named(t: &FieldType) -> Option<(&str, &[String])> {
    match t {
        FieldType::Record(r) => Some((&r.name, &r.aliases)),
        FieldType::Enum(e) => Some((&e.name, &e.aliases)),
        FieldType::Fixed(f) | FieldType::Decimal { fixed: Some(f), .. } => {
            Some((&f.name, &f.aliases))
        }
        _ => None,
    }
}

/// Named types match by unqualified name, or when a reader alias is the writer's full name.
fn names_match(writer: &str, reader: &str, reader_aliases: &[String]) -> bool {
    unqualified(writer) == unqualified(reader) || reader_aliases.iter().any(|a| a == writer)
}

fn unqualified(n: &str) -> &str {
    n.rsplit('.').next().unwrap_or(n)
}

/// A type as messages spell it: `["null", long]`, `record etl.Address`, `array<int>`.
pub(crate) fn label(t: &FieldType) -> String {
    match t {
        FieldType::Union(b) => format!(
            "[{}]",
            b.iter()
                .map(|t| match t {
                    FieldType::Null => "\"null\"".to_string(),
                    t => label(t),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        FieldType::Array(i) => format!("array<{}>", label(i)),
        FieldType::Map(v) => format!("map<{}>", label(v)),
        FieldType::Record(r) => format!("record {}", r.name),
        FieldType::Enum(e) => format!("enum {}", e.name),
        FieldType::Fixed(f) => format!("fixed {} ({} bytes)", f.name, f.size),
        FieldType::Decimal {
            precision, scale, ..
        } => format!("decimal({precision},{scale})"),
        t => t.avro_name().to_string(),
    }
}

/// The first union branch a writer type goes to: the same type (and name), else the first
/// it resolves into.
fn pick_branch(writer: &FieldType, branches: &[FieldType]) -> Option<(usize, Node)> {
    let same = branches.iter().position(|b| {
        std::mem::discriminant(b) == std::mem::discriminant(writer)
            && match (named(writer), named(b)) {
                (Some((w, _)), Some((r, aliases))) => names_match(w, r, aliases),
                _ => true,
            }
    });
    if let Some(i) = same {
        if let Ok(node) = plan(writer, &branches[i]) {
            return Some((i, node));
        }
    }
    branches
        .iter()
        .enumerate()
        .find_map(|(i, b)| plan(writer, b).ok().map(|n| (i, n)))
}

/// The node reading `writer` data as `reader`, or why it cannot (the path of the failing
/// part is added by the caller).
pub(crate) fn plan(writer: &FieldType, reader: &FieldType) -> Result<Node, String> {
    if let FieldType::Union(ws) = writer {
        let mut nodes = Vec::with_capacity(ws.len());
        let mut null_refused = false;
        for w in ws {
            match plan(w, reader) {
                Ok(n) => nodes.push(n),
                // Said only when every other branch is readable: a type change is the news.
                Err(_) if *w == FieldType::Null => null_refused = true,
                Err(e) => return Err(e),
            }
        }
        if null_refused {
            return Err(format!(
                "nullable in the writer schema ({}) but the reader's {} has no null",
                label(writer),
                label(reader)
            ));
        }
        return Ok(Node::Union(nodes));
    }
    if let FieldType::Union(rs) = reader {
        return pick_branch(writer, rs).map(|(_, n)| n).ok_or_else(|| {
            format!(
                "writer type {} matches no branch of the reader's {}",
                label(writer),
                label(reader)
            )
        });
    }
    let mismatch = || {
        format!(
            "writer type {} cannot be read as {}",
            label(writer),
            label(reader)
        )
    };
    if let (Some((w, _)), Some((r, aliases))) = (named(writer), named(reader)) {
        if !names_match(w, r, aliases) {
            return Err(format!(
                "{} (names differ: writer `{w}`, reader `{r}`)",
                mismatch()
            ));
        }
    }
    match (writer, reader) {
        (FieldType::Record(w), FieldType::Record(r)) => {
            plan_record(w, r).map(|n| Node::Record(Arc::new(n)))
        }
        (FieldType::Enum(w), FieldType::Enum(r)) => plan_enum(w, r).map(Node::Enum),
        (FieldType::Array(w), FieldType::Array(r)) => plan(w, r)
            .map(|n| Node::Array(Box::new(n)))
            .map_err(|e| format!("array items: {e}")),
        (FieldType::Map(w), FieldType::Map(r)) => plan(w, r)
            .map(|n| Node::Map(Box::new(n)))
            .map_err(|e| format!("map values: {e}")),
        (
            FieldType::Decimal {
                precision: wp,
                scale: ws,
                ..
            },
            FieldType::Decimal {
                precision: rp,
                scale: rs,
                ..
            },
        ) if (wp, ws) != (rp, rs) => Err(format!(
            "{} (a decimal is read only with its own precision and scale)",
            mismatch()
        )),
        (w, r) => {
            let (Some(wp), Some(rp)) = (phys(w), phys(r)) else {
                return Err(mismatch());
            };
            use Phys::*;
            let ok = matches!(
                (wp, rp),
                (Null, Null)
                    | (Boolean, Boolean)
                    | (Int, Int | Long | Float | Double)
                    | (Long, Long | Float | Double)
                    | (Float, Float | Double)
                    | (Double, Double)
                    | (Bytes | String, Bytes | String)
            ) || matches!((wp, rp), (Fixed(a), Fixed(b)) if a == b);
            if !ok {
                return Err(mismatch());
            }
            Ok(Node::Leaf {
                writer: wp,
                reader: r.clone(),
            })
        }
    }
}

fn plan_enum(w: &EnumType, r: &EnumType) -> Result<Vec<Arc<str>>, String> {
    w.symbols
        .iter()
        .map(|s| {
            let sym = if r.symbols.contains(s) {
                s
            } else {
                r.default.as_ref().ok_or_else(|| {
                    format!(
                        "enum {}: writer symbol `{s}` is not in the reader's symbols and the reader enum has no default",
                        r.name
                    )
                })?
            };
            Ok(Arc::from(sym.as_str()))
        })
        .collect()
}

/// The writer field a reader field reads: the one of its name, else of one of its aliases.
pub(crate) fn writer_field<'a>(
    writer: &'a RecordSchema,
    reader_field: &FieldSchema,
) -> Option<(usize, &'a FieldSchema)> {
    writer
        .fields
        .iter()
        .position(|w| w.name == reader_field.name)
        .or_else(|| {
            writer
                .fields
                .iter()
                .position(|w| reader_field.aliases.contains(&w.name))
        })
        .map(|i| (i, &writer.fields[i]))
}

/// The plan of a writer record read as a reader record; errors name the field (`a.b`).
pub(crate) fn plan_record(
    writer: &RecordSchema,
    reader: &RecordSchema,
) -> Result<RecordNode, String> {
    if !names_match(&writer.name, &reader.name, &reader.aliases) {
        return Err(format!(
            "record names differ: writer `{}`, reader `{}`",
            writer.name, reader.name
        ));
    }
    let mut target: Vec<Option<usize>> = vec![None; writer.fields.len()];
    let mut template = Vec::with_capacity(reader.fields.len());
    for (ri, rf) in reader.fields.iter().enumerate() {
        match writer_field(writer, rf) {
            Some((wi, _)) => {
                target[wi] = Some(ri);
                template.push(Value::Null);
            }
            None => match &rf.default {
                Some(d) => template.push(d.clone()),
                None => {
                    return Err(format!(
                        "field `{}` is not in the writer schema and has no default",
                        rf.name
                    ))
                }
            },
        }
    }
    let mut steps = Vec::with_capacity(writer.fields.len());
    for (wf, t) in writer.fields.iter().zip(target) {
        let wt = full_type(wf);
        let node = match t {
            Some(ri) => {
                let rf = &reader.fields[ri];
                plan(&wt, &full_type(rf)).map_err(|e| nest(&rf.name, e))?
            }
            // Skipped: read as itself and dropped.
            None => plan(&wt, &wt).map_err(|e| nest(&wf.name, e))?,
        };
        steps.push((t, node));
    }
    Ok(RecordNode {
        steps,
        writer_names: writer.fields.iter().map(|f| f.name.clone()).collect(),
        template,
        names: reader
            .fields
            .iter()
            .map(|f| Name::from(f.name.as_str()))
            .collect(),
    })
}

/// `field `a`: why`, or with the nested path when `why` already names a field.
fn nest(field: &str, why: String) -> String {
    match why.strip_prefix("field `") {
        Some(rest) => format!("field `{field}.{rest}"),
        None => format!("field `{field}`: {why}"),
    }
}
