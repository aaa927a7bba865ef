//! Parsing `.avsc` text into the shared [`RecordSchema`], its Parsing Canonical Form and
//! CRC-64-AVRO (Rabin) fingerprint, and the resolution rules between a writer and a reader
//! schema. apache-avro parses and validates the text (names, types, logical types, defaults)
//! and computes the canonical form; this module turns its tree into [`FieldType`]s, which
//! cover every Avro 1.12 type. The top level must be a record. Refused, with an error naming
//! the field: recursive types (a record that contains itself), `uuid` on `fixed` and
//! `duration` (apache-avro 0.20 drops their `fixed` name and size from the schema it writes,
//! so their canonical form would be wrong).
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use apache_avro::schema::{Name, RecordField, Schema as Avro};
use serde_json::Value as Json;

use super::resolve::{self, Phys};
use super::CodecError;
use crate::record::{
    Decimal, EnumType, FieldSchema, FieldType, FixedType, Record, RecordSchema, Value,
};

impl RecordSchema {
    /// Parses the text of an `.avsc` file.
    ///
    /// ```
    /// use etl_pipe::record::RecordSchema;
    /// let s = RecordSchema::parse(r#"{"type":"record","name":"E","namespace":"etl",
    ///     "fields":[{"name":"id","type":"string"},
    ///               {"name":"n","type":["null","int"],"default":null}]}"#).unwrap();
    /// assert_eq!(s.name, "etl.E");
    /// assert!(s.field("n").unwrap().nullable);
    /// ```
    pub fn parse(avsc: &str) -> Result<RecordSchema, CodecError> {
        let json: Json = serde_json::from_str(avsc)
            .map_err(|e| CodecError::schema(None, format!("not valid JSON: {e}")))?;
        let obj = json.as_object().ok_or_else(|| {
            CodecError::schema(
                None,
                "the top level must be a record object ({\"type\": \"record\", ...})",
            )
        })?;
        match obj.get("type").and_then(Json::as_str) {
            Some("record") => {}
            Some(other) => {
                return Err(CodecError::schema(
                    None,
                    format!("top-level type `{other}` is not supported; only `record` is"),
                ))
            }
            None => return Err(CodecError::schema(None, "top-level `type` is missing")),
        }
        for f in obj
            .get("fields")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(l) = lossy_fixed(f) {
                return Err(CodecError::schema(
                    f.get("name").and_then(Json::as_str),
                    format!(
                        "logical type `{l}` on `fixed` is not supported (apache-avro 0.20 \
                         loses the fixed's name and size); use string/uuid, or a fixed \
                         without the logical type"
                    ),
                ));
            }
        }
        let avro = Avro::parse(&json)
            .map_err(|e| CodecError::schema(failing_field(obj).as_deref(), e.to_string()))?;
        let Avro::Record(_) = &avro else {
            return Err(CodecError::schema(None, "the top level must be a record"));
        };
        let mut names = Names::default();
        let ty = names.convert(&avro, &None, "")?;
        let FieldType::Record(record) = ty else {
            return Err(CodecError::schema(None, "the top level must be a record"));
        };
        let mut record = Arc::unwrap_or_clone(record);
        record.source = avsc.to_string();
        Ok(record)
    }

    /// The schema's Avro Parsing Canonical Form: what fingerprints and registries compare.
    ///
    /// apache-avro computes it from the schema with its logical-type attributes removed: the
    /// specification's [STRIP] rule drops them (`timestamp-millis` is `"long"`), while
    /// apache-avro 0.20 leaves `{"type":"long"}` and keeps decimal `precision`/`scale`
    /// (AVRO-4004); Java Avro, the reference, agrees with the specification.
    pub fn canonical_form(&self) -> String {
        match self.physical() {
            Ok(schema) => schema.canonical_form(),
            Err(json) => json,
        }
    }

    /// CRC-64-AVRO (Rabin) fingerprint of the Parsing Canonical Form, as used by Avro
    /// single-object encoding.
    pub fn fingerprint(&self) -> u64 {
        use apache_avro::rabin::Rabin;
        match self.physical() {
            Ok(schema) => {
                let fp = schema.fingerprint::<Rabin>().bytes;
                let mut le = [0u8; 8];
                le.copy_from_slice(&fp[..8]);
                u64::from_le_bytes(le)
            }
            Err(json) => rabin64(json.as_bytes()),
        }
    }

    /// The schema as apache-avro parses it with logical types reduced to their underlying
    /// types, or (not reachable for a schema this module built) the JSON it refused.
    fn physical(&self) -> Result<Avro, String> {
        let json = physical_json(
            &FieldType::Record(Arc::new(self.clone())),
            &mut HashSet::new(),
        );
        Avro::parse(&json).map_err(|_| json.to_string())
    }

    /// The record name without its namespace.
    pub fn simple_name(&self) -> &str {
        unqualified(&self.name)
    }
}

/// The field apache-avro refuses a record for (its errors do not always say): the first
/// field whose prefix of the field list no longer parses. Only run on an error.
fn failing_field(record: &serde_json::Map<String, Json>) -> Option<String> {
    let fields = record.get("fields")?.as_array()?;
    (1..=fields.len()).find_map(|n| {
        let mut prefix = record.clone();
        prefix.insert("fields".into(), Json::Array(fields[..n].to_vec()));
        Avro::parse(&Json::Object(prefix)).err().map(|_| {
            fields[n - 1]
                .get("name")
                .and_then(Json::as_str)
                .map_or_else(|| format!("#{}", n - 1), str::to_string)
        })
    })
}

fn unqualified(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// `uuid` or `duration` on a `fixed` anywhere in `json`: apache-avro 0.20 loses the fixed's
/// name and size for those.
fn lossy_fixed(json: &Json) -> Option<&str> {
    match json {
        Json::Object(o) => {
            let logical = o.get("logicalType").and_then(Json::as_str);
            match (o.get("type").and_then(Json::as_str), logical) {
                (Some("fixed"), Some(l @ ("uuid" | "duration"))) => Some(l),
                _ => o.values().find_map(lossy_fixed),
            }
        }
        Json::Array(items) => items.iter().find_map(lossy_fixed),
        _ => None,
    }
}

/// The named types met so far while converting one schema (a later reference by name is
/// the same type), and the records being converted (a reference to one is recursion).
#[derive(Default)]
struct Names {
    defined: HashMap<String, FieldType>,
    open: HashSet<String>,
}

impl Names {
    /// `path` is the field path for messages (`a.b`), empty at the top.
    fn convert(
        &mut self,
        s: &Avro,
        ns: &Option<String>,
        path: &str,
    ) -> Result<FieldType, CodecError> {
        let field = (!path.is_empty()).then_some(path);
        let full = |n: &Name| n.fully_qualified_name(ns).fullname(None);
        let aliases = |a: &Option<Vec<apache_avro::schema::Alias>>, own_ns: &Option<String>| {
            a.iter()
                .flatten()
                .map(|a| a.fully_qualified_name(own_ns).fullname(None))
                .collect::<Vec<_>>()
        };
        let fixed = |f: &apache_avro::schema::FixedSchema| {
            let name = f.name.fully_qualified_name(ns);
            FixedType {
                name: name.fullname(None),
                aliases: aliases(&f.aliases, &name.namespace),
                size: f.size,
            }
        };
        let ty = match s {
            Avro::Null => FieldType::Null,
            Avro::Boolean => FieldType::Boolean,
            Avro::Int => FieldType::Int,
            Avro::Long => FieldType::Long,
            Avro::Float => FieldType::Float,
            Avro::Double => FieldType::Double,
            Avro::Bytes => FieldType::Bytes,
            Avro::String => FieldType::String,
            Avro::Uuid => FieldType::Uuid,
            Avro::Date => FieldType::Date,
            Avro::TimeMillis => FieldType::TimeMillis,
            Avro::TimeMicros => FieldType::TimeMicros,
            Avro::TimestampMillis => FieldType::TimestampMillis,
            Avro::TimestampMicros => FieldType::TimestampMicros,
            Avro::TimestampNanos => FieldType::TimestampNanos,
            Avro::LocalTimestampMillis => FieldType::LocalTimestampMillis,
            Avro::LocalTimestampMicros => FieldType::LocalTimestampMicros,
            Avro::LocalTimestampNanos => FieldType::LocalTimestampNanos,
            Avro::Array(a) => FieldType::Array(Box::new(self.convert(&a.items, ns, path)?)),
            Avro::Map(m) => FieldType::Map(Box::new(self.convert(&m.types, ns, path)?)),
            Avro::Union(u) => FieldType::Union(
                u.variants()
                    .iter()
                    .map(|b| self.convert(b, ns, path))
                    .collect::<Result<_, _>>()?,
            ),
            Avro::Decimal(d) => {
                let fixed = match &*d.inner {
                    Avro::Fixed(f) => Some(fixed(f)),
                    _ => None,
                };
                let ty = FieldType::Decimal {
                    precision: d.precision as u32,
                    scale: d.scale as u32,
                    fixed: fixed.clone(),
                };
                // A later reference to the fixed's name is the decimal.
                if let Some(f) = fixed {
                    self.defined.insert(f.name, ty.clone());
                }
                ty
            }
            Avro::Fixed(f) => {
                let f = fixed(f);
                self.defined
                    .insert(f.name.clone(), FieldType::Fixed(f.clone()));
                FieldType::Fixed(f)
            }
            Avro::Enum(e) => {
                let name = e.name.fully_qualified_name(ns);
                let ty = FieldType::Enum(Arc::new(EnumType {
                    name: name.fullname(None),
                    aliases: aliases(&e.aliases, &name.namespace),
                    symbols: e.symbols.clone(),
                    default: e.default.clone(),
                }));
                self.defined.insert(name.fullname(None), ty.clone());
                ty
            }
            Avro::Record(r) => {
                let name = r.name.fully_qualified_name(ns);
                let full_name = name.fullname(None);
                self.open.insert(full_name.clone());
                let mut fields = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    fields.push(self.field(f, &name.namespace, path)?);
                }
                self.open.remove(&full_name);
                let record = RecordSchema {
                    name: full_name.clone(),
                    aliases: aliases(&r.aliases, &name.namespace),
                    fields,
                    source: serde_json::to_string(s).unwrap_or_default(),
                };
                let ty = FieldType::Record(Arc::new(record));
                self.defined.insert(full_name, ty.clone());
                ty
            }
            Avro::Ref { name } => {
                let full_name = full(name);
                if self.open.contains(&full_name) {
                    return Err(CodecError::schema(
                        field,
                        format!("recursive type `{full_name}` is not supported"),
                    ));
                }
                match self.defined.get(&full_name) {
                    Some(t) => t.clone(),
                    None => {
                        return Err(CodecError::schema(
                            field,
                            format!("unknown type `{full_name}`"),
                        ))
                    }
                }
            }
            Avro::Duration | Avro::BigDecimal => {
                return Err(CodecError::schema(
                    field,
                    format!(
                        "type {} is not supported",
                        serde_json::to_string(s).unwrap_or_default()
                    ),
                ))
            }
        };
        Ok(ty)
    }

    fn field(
        &mut self,
        f: &RecordField,
        ns: &Option<String>,
        parent: &str,
    ) -> Result<FieldSchema, CodecError> {
        let path = if parent.is_empty() {
            f.name.clone()
        } else {
            format!("{parent}.{}", f.name)
        };
        let ty = self.convert(&f.schema, ns, &path)?;
        let (ty, nullable) = match ty {
            FieldType::Union(mut branches)
                if branches.len() == 2 && branches[0] == FieldType::Null =>
            {
                (branches.pop().unwrap_or(FieldType::Null), true)
            }
            t => (t, false),
        };
        let default = match &f.default {
            None => None,
            Some(d) => {
                let full = if nullable {
                    FieldType::Union(vec![FieldType::Null, ty.clone()])
                } else {
                    ty.clone()
                };
                Some(default_value(&full, d).ok_or_else(|| {
                    CodecError::schema(
                        Some(&path),
                        format!("default {d} does not match the field type"),
                    )
                })?)
            }
        };
        Ok(FieldSchema {
            name: f.name.clone(),
            ty,
            nullable,
            doc: f.doc.clone(),
            default,
            aliases: f.aliases.clone().unwrap_or_default(),
        })
    }
}

/// A default value from its JSON form (the specification's table: bytes and fixed as
/// strings of code points 0-255, a union's default matching one of its branches).
pub(crate) fn default_value(ty: &FieldType, d: &Json) -> Option<Value> {
    let latin1 =
        |s: &str| -> Option<Vec<u8>> { s.chars().map(|c| u8::try_from(c as u32).ok()).collect() };
    let int = || d.as_i64().and_then(|i| i32::try_from(i).ok());
    Some(match ty {
        FieldType::Null => d.is_null().then_some(Value::Null)?,
        FieldType::Boolean => Value::Boolean(d.as_bool()?),
        FieldType::Int => Value::Int(int()?),
        FieldType::Date => Value::Date(int()?),
        FieldType::TimeMillis => Value::TimeMillis(int()?),
        FieldType::Long => Value::Long(d.as_i64()?),
        FieldType::TimestampMillis => Value::TimestampMillis(d.as_i64()?),
        FieldType::TimeMicros => Value::TimeMicros(d.as_i64()?),
        FieldType::TimestampMicros => Value::TimestampMicros(d.as_i64()?),
        FieldType::TimestampNanos => Value::TimestampNanos(d.as_i64()?),
        FieldType::LocalTimestampMillis => Value::LocalTimestampMillis(d.as_i64()?),
        FieldType::LocalTimestampMicros => Value::LocalTimestampMicros(d.as_i64()?),
        FieldType::LocalTimestampNanos => Value::LocalTimestampNanos(d.as_i64()?),
        FieldType::Float => Value::Float(d.as_f64()? as f32),
        FieldType::Double => Value::Double(d.as_f64()?),
        FieldType::String => Value::String(d.as_str()?.to_string()),
        FieldType::Uuid => Value::Uuid(uuid::Uuid::parse_str(d.as_str()?).ok()?),
        FieldType::Bytes => Value::Bytes(latin1(d.as_str()?)?),
        FieldType::Fixed(f) => {
            let b = latin1(d.as_str()?)?;
            (b.len() == f.size).then_some(Value::Fixed(b))?
        }
        FieldType::Decimal { scale, fixed, .. } => {
            let b = latin1(d.as_str()?)?;
            if fixed.as_ref().is_some_and(|f| f.size != b.len()) {
                return None;
            }
            Value::Decimal(Decimal::from_be_bytes(&b, *scale))
        }
        FieldType::Enum(e) => {
            let s = d.as_str()?;
            e.symbols
                .iter()
                .any(|x| x == s)
                .then(|| Value::Enum(s.into()))?
        }
        FieldType::Array(items) => Value::Array(
            d.as_array()?
                .iter()
                .map(|x| default_value(items, x))
                .collect::<Option<_>>()?,
        ),
        FieldType::Map(values) => Value::Map(
            d.as_object()?
                .iter()
                .map(|(k, x)| Some((k.clone(), default_value(values, x)?)))
                .collect::<Option<_>>()?,
        ),
        FieldType::Record(r) => {
            let o = d.as_object()?;
            let mut rec = Record::new();
            for f in &r.fields {
                let v = match o.get(&f.name) {
                    Some(x) => default_value(&full_type(f), x)?,
                    None => f.default.clone()?,
                };
                rec.set(&f.name, v);
            }
            Value::Record(rec)
        }
        FieldType::Union(branches) => branches.iter().find_map(|b| default_value(b, d))?,
    })
}

/// The field's type with `nullable` put back as the union `["null", T]`.
pub(crate) fn full_type(f: &FieldSchema) -> FieldType {
    if f.nullable {
        FieldType::Union(vec![FieldType::Null, f.ty.clone()])
    } else {
        f.ty.clone()
    }
}

/// The schema as JSON with logical types reduced to their underlying types (what the
/// canonical form keeps), each named type defined at its first use.
fn physical_json(ty: &FieldType, defined: &mut HashSet<String>) -> Json {
    use serde_json::json;
    let named = |name: &str, body: &dyn Fn() -> Json, defined: &mut HashSet<String>| {
        if defined.insert(name.to_string()) {
            body()
        } else {
            json!(name)
        }
    };
    let leaf = match resolve::phys(ty) {
        Some(Phys::Null) => Some("null"),
        Some(Phys::Boolean) => Some("boolean"),
        Some(Phys::Int) => Some("int"),
        Some(Phys::Long) => Some("long"),
        Some(Phys::Float) => Some("float"),
        Some(Phys::Double) => Some("double"),
        Some(Phys::Bytes) => Some("bytes"),
        Some(Phys::String) => Some("string"),
        Some(Phys::Fixed(_)) | None => None,
    };
    if let Some(name) = leaf {
        return json!(name);
    }
    match ty {
        FieldType::Fixed(f) | FieldType::Decimal { fixed: Some(f), .. } => named(
            &f.name,
            &|| json!({"type": "fixed", "name": f.name, "size": f.size}),
            defined,
        ),
        FieldType::Enum(e) => named(
            &e.name,
            &|| json!({"type": "enum", "name": e.name, "symbols": e.symbols}),
            defined,
        ),
        FieldType::Array(items) => json!({"type": "array", "items": physical_json(items, defined)}),
        FieldType::Map(values) => json!({"type": "map", "values": physical_json(values, defined)}),
        FieldType::Union(branches) => {
            Json::Array(branches.iter().map(|b| physical_json(b, defined)).collect())
        }
        FieldType::Record(r) => {
            if !defined.insert(r.name.clone()) {
                return json!(r.name);
            }
            let fields: Vec<Json> = r
                .fields
                .iter()
                .map(|f| json!({"name": f.name, "type": physical_json(&full_type(f), defined)}))
                .collect();
            json!({"type": "record", "name": r.name, "fields": fields})
        }
        // Leaves: written above.
        _ => json!(ty.avro_name()),
    }
}

/// Reads and parses an `.avsc` file.
pub fn load_schema(path: impl AsRef<Path>) -> Result<RecordSchema, CodecError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| CodecError::SchemaFile {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    RecordSchema::parse(&text).map_err(|e| CodecError::SchemaFile {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Loads every `*.avsc` file of a directory (e.g. `schemas/history/`), sorted by file name.
pub fn load_schema_dir(dir: impl AsRef<Path>) -> Result<Vec<(String, RecordSchema)>, CodecError> {
    let dir = dir.as_ref();
    let read_err = |e: std::io::Error| CodecError::SchemaFile {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.extension().is_some_and(|e| e == "avsc") {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            load_schema(&p).map(|s| (name, s))
        })
        .collect()
}

/// Why a reader schema cannot read data written with a writer schema, or `Ok` when it can,
/// by Avro 1.12 schema resolution (see `codec::resolve`: fields by name or alias, writer-only
/// fields skipped, reader-only fields need a default, promotions, enum defaults, union
/// branches). A nullable writer field read into a required reader field is refused, as
/// Confluent's BACKWARD check does: one null would make the record unreadable.
pub fn check_can_read(writer: &RecordSchema, reader: &RecordSchema) -> Result<(), String> {
    resolve::plan_record(writer, reader).map(|_| ())
}

/// What makes `new` incompatible with the registered `old` under a registry compatibility
/// `level`, one line per field, phrased as the change made (`field `x` added without a
/// default`). BACKWARD: `new` must read `old`'s data; FORWARD: `old` must read `new`'s; FULL
/// (and NONE or an unknown level, for want of better): both.
pub(crate) fn incompatibilities(
    old: &RecordSchema,
    new: &RecordSchema,
    level: &str,
) -> Vec<String> {
    let level = level.to_ascii_uppercase();
    let backward = !level.starts_with("FORWARD");
    let forward = !level.starts_with("BACKWARD");
    let mut out = Vec::new();
    if old.simple_name() != new.simple_name() {
        out.push(format!(
            "record name changed from `{}` to `{}`",
            old.name, new.name
        ));
    }
    let reads = |w: &FieldSchema, r: &FieldSchema| resolve::plan(&full_type(w), &full_type(r));
    for nf in &new.fields {
        match resolve::writer_field(old, nf) {
            None if backward && nf.default.is_none() => out.push(format!(
                "field `{}` added without a default (old data has no value for it)",
                nf.name
            )),
            None => {}
            Some((_, of)) => {
                let (o, n) = (type_label(of), type_label(nf));
                // Per direction: whether it is checked, writer, reader, and what to say.
                let directions = [
                    (
                        backward,
                        of,
                        nf,
                        "made required",
                        "old data may hold null",
                        "the new schema cannot read old data",
                    ),
                    (
                        forward,
                        nf,
                        of,
                        "made nullable",
                        "the registered version cannot read null",
                        "the registered version cannot read new data",
                    ),
                ];
                let problem = directions.into_iter().filter(|d| d.0).find_map(
                    |(_, w, r, null_change, null_why, cannot)| match reads(w, r) {
                        Ok(_) => None,
                        Err(e) if e.starts_with("nullable in the writer") => Some(format!(
                            "field `{}` {null_change} (was {o}): {null_why}",
                            nf.name
                        )),
                        Err(e) => Some(format!(
                            "field `{}` changed from {o} to {n}: {cannot} ({e})",
                            nf.name
                        )),
                    },
                );
                out.extend(problem);
            }
        }
    }
    if forward {
        for of in &old.fields {
            if resolve::writer_field(new, of).is_none() && of.default.is_none() {
                out.push(format!(
                    "field `{}` removed, and the registered version has no default for it",
                    of.name
                ));
            }
        }
    }
    out
}

pub(crate) fn type_label(f: &FieldSchema) -> String {
    resolve::label(&full_type(f))
}

/// CRC-64-AVRO, the Rabin fingerprint of the Avro specification.
pub(crate) fn rabin64(data: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
            }
            *slot = fp;
        }
        t
    });
    let mut fp = EMPTY;
    for &b in data {
        fp = (fp >> 8) ^ table[((fp ^ b as u64) & 0xff) as usize];
    }
    fp
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEANED: &str = include_str!("../../schemas/league_entry.cleaned.avsc");
    const SCORED: &str = include_str!("../../schemas/league_entry.scored.avsc");

    fn err(avsc: &str) -> String {
        RecordSchema::parse(avsc).unwrap_err().to_string()
    }

    fn one_field(ty: &str) -> String {
        format!(r#"{{"type":"record","name":"R","fields":[{{"name":"f","type":{ty}}}]}}"#)
    }

    #[test]
    fn parses_the_league_schemas() {
        let s = RecordSchema::parse(CLEANED).unwrap();
        assert_eq!(s.name, "etl.league.LeagueEntry");
        assert_eq!(s.fields.len(), 21);
        let id = s.field("summoner_id").unwrap();
        assert_eq!(
            (id.ty.clone(), id.nullable, id.default.clone()),
            (FieldType::String, false, None)
        );
        let name = s.field("summoner_name").unwrap();
        assert!(name.nullable);
        assert_eq!(name.default, Some(Value::Null));
        assert_eq!(
            s.field("fetched_at").unwrap().ty,
            FieldType::TimestampMillis
        );
        assert_eq!(s.field("source_offset").unwrap().ty, FieldType::Long);
        assert_eq!(s.field("win_rate").unwrap().ty, FieldType::Double);
        assert!(s.field("wins").unwrap().doc.is_some());
        let scored = RecordSchema::parse(SCORED).unwrap();
        assert_eq!(scored.fields.len(), 24);
        assert_eq!(&scored.fields[..21], &s.fields[..]);
    }

    #[test]
    fn canonical_form_and_fingerprint_match_apache_avro() {
        use apache_avro::rabin::Rabin;
        let plain = one_field(r#"["null","float"]"#);
        let ours = RecordSchema::parse(&plain).unwrap();
        let reference = apache_avro::Schema::parse_str(&plain).unwrap();
        assert_eq!(ours.canonical_form(), reference.canonical_form());
        let fp = reference.fingerprint::<Rabin>().bytes;
        assert_eq!(ours.fingerprint().to_le_bytes().to_vec(), fp);
        // apache-avro 0.20 leaves a logical type as {"type":"long"} in the canonical form
        // (AVRO-4004); the specification's [PRIMITIVES] rule, and Java Avro, write "long".
        for text in [CLEANED, SCORED] {
            let ours = RecordSchema::parse(text).unwrap();
            let reference = apache_avro::Schema::parse_str(text).unwrap();
            assert_eq!(
                ours.canonical_form(),
                reference
                    .canonical_form()
                    .replace(r#"{"type":"long"}"#, r#""long""#)
            );
        }
    }

    #[test]
    fn fingerprints_match_java_avro() {
        // Java Avro 1.12.0 SchemaNormalization.parsingFingerprint64 of the v1 files (the
        // reference implementation; see docs/notes/codec.md for the snippet).
        let v1 = |t: &str| RecordSchema::parse(t).unwrap().fingerprint();
        assert_eq!(
            v1(include_str!(
                "../../schemas/history/league_entry.cleaned.v1.avsc"
            )),
            0x70a8_b781_e94d_6523
        );
        assert_eq!(
            v1(include_str!(
                "../../schemas/history/league_entry.scored.v1.avsc"
            )),
            0x17eb_bb5c_225d_1c58
        );
    }

    #[test]
    fn rabin_of_the_spec_examples() {
        // Fingerprints of the primitive schemas, from the Avro test suite.
        assert_eq!(rabin64(br#""int""#), 0x7275_d51a_3f39_5c8f);
    }

    #[test]
    fn every_type_is_accepted() {
        for t in [
            r#"{"type":"array","items":"int"}"#,
            r#""bytes""#,
            r#"["null","int","string"]"#,
            r#"["int","null"]"#,
            r#"{"type":"int","logicalType":"date"}"#,
            r#"["null",{"type":"record","name":"N","fields":[]}]"#,
            r#"{"type":"map","values":{"type":"enum","name":"E","symbols":["A"]}}"#,
        ] {
            let s = RecordSchema::parse(&one_field(t)).unwrap();
            assert!(!s.is_flat(), "{t}");
        }
        // An invalid logical type is ignored, as the specification says.
        let s = RecordSchema::parse(&one_field(
            r#"{"type":"bytes","logicalType":"decimal","precision":2,"scale":3}"#,
        ))
        .unwrap();
        assert_eq!(s.fields[0].ty, FieldType::Bytes);
    }

    #[test]
    fn refused_schemas_name_the_field() {
        let e = err(&one_field(r#""nope""#));
        assert!(e.contains("field `f`") && e.contains("nope"), "{e}");
        let e = err(&one_field(
            r#"{"type":"enum","name":"E","symbols":["A"],"default":"B"}"#,
        ));
        assert!(e.contains("field `f`") && e.contains("B"), "{e}");
        let e = err(r#"{"type":"enum","name":"E","symbols":["A"]}"#);
        assert!(e.contains("enum"), "{e}");
        let e = err("{not json");
        assert!(e.contains("JSON"), "{e}");
    }

    #[test]
    fn bad_defaults_and_duplicates_are_refused() {
        let e = err(
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":["null","int"],"default":"x"}]}"#,
        );
        assert!(e.contains("field `f`"), "{e}");
        let e = err(
            r#"{"type":"record","name":"R","fields":[{"name":"g","type":"int"},{"name":"f","type":"int","default":"x"}]}"#,
        );
        assert!(e.contains("field `f`"), "{e}");
        let e = err(
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":"int"},{"name":"f","type":"long"}]}"#,
        );
        assert!(e.contains("Duplicate field name f"), "{e}");
        let ok = RecordSchema::parse(
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":"int","default":7},
                {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"},"default":0},
                {"name":"n","type":["null","int"],"default":3},
                {"name":"b","type":"bytes","default":"\u00ff\u0000"}]}"#,
        )
        .unwrap();
        assert_eq!(ok.fields[0].default, Some(Value::Int(7)));
        assert_eq!(ok.fields[1].default, Some(Value::TimestampMillis(0)));
        // Avro 1.12 (AVRO-3649): a union's default may match any branch, not only the first.
        assert_eq!(ok.fields[2].default, Some(Value::Int(3)));
        assert_eq!(ok.fields[3].default, Some(Value::Bytes(vec![0xff, 0])));
    }

    #[test]
    fn incompatibilities_name_the_change_per_level() {
        let old = RecordSchema::parse(&one_field(r#"["null","int"]"#)).unwrap();
        let required = RecordSchema::parse(&one_field(r#""int""#)).unwrap();
        let text = RecordSchema::parse(&one_field(r#""string""#)).unwrap();
        let added = RecordSchema::parse(
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":["null","int"]},
               {"name":"g","type":{"type":"array","items":"int"}}]}"#,
        )
        .unwrap();
        let one = |old, new, level| incompatibilities(old, new, level).join("; ");
        let m = one(&old, &required, "BACKWARD");
        assert!(m.contains("field `f` made required"), "{m}");
        assert_eq!(one(&required, &old, "BACKWARD"), "");
        let m = one(&required, &old, "FORWARD");
        assert!(m.contains("field `f` made nullable"), "{m}");
        let m = one(&old, &text, "FULL");
        assert!(
            m.contains("field `f` changed from") && m.contains("string"),
            "{m}"
        );
        let m = one(&old, &added, "BACKWARD_TRANSITIVE");
        assert!(m.contains("field `g` added without a default"), "{m}");
        assert_eq!(one(&old, &added, "FORWARD"), "");
        let m = one(&added, &old, "FORWARD");
        assert!(m.contains("field `g` removed"), "{m}");
    }

    #[test]
    fn resolution_rules() {
        let cleaned = RecordSchema::parse(CLEANED).unwrap();
        let scored = RecordSchema::parse(SCORED).unwrap();
        assert_eq!(check_can_read(&cleaned, &scored), Ok(()));
        // Dropping a field is fine for the reader of old data.
        assert_eq!(check_can_read(&scored, &cleaned), Ok(()));
        let required_added = RecordSchema::parse(
            &SCORED
                .replace(
                    r#""name": "quality_decision", "type": ["null", "string"]"#,
                    r#""name": "quality_decision", "type": "string""#,
                )
                .replace(
                    r#"otherwise FAIL records go to quarantine).", "default": null"#,
                    r#"otherwise FAIL records go to quarantine).""#,
                ),
        )
        .unwrap();
        let e = check_can_read(&cleaned, &required_added).unwrap_err();
        assert!(
            e.contains("quality_decision") && e.contains("no default"),
            "{e}"
        );
        let narrowed = RecordSchema::parse(&CLEANED.replace(
            r#""name": "source_offset", "type": "long""#,
            r#""name": "source_offset", "type": "int""#,
        ))
        .unwrap();
        let e = check_can_read(&cleaned, &narrowed).unwrap_err();
        assert!(e.contains("source_offset"), "{e}");
        assert_eq!(check_can_read(&narrowed, &cleaned), Ok(()));
    }
}
