//! A record as a MongoDB document: `_id` from the key, every field of the record as BSON,
//! then the lineage fields; and the [`Upsert`] that carries it, encoded, to the server.
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{self, Binary, Bson, Decimal128, Document, RawBson, RawDocumentBuf};

use crate::record::{FieldType, Record, RecordSchema, Value};
use crate::stages::sinks::MongoDecimals;
use crate::stages::sinks::{lineage, Rejected, SinkMessage};

/// Bytes of statements per command: the 16 MiB BSON limit less room for the command itself.
const MAX_COMMAND_BYTES: usize = 16 * 1024 * 1024 - 64 * 1024;

/// Decimal128 holds 34 significant digits.
pub const MAX_DECIMAL128_PRECISION: u32 = 34;

/// A record value as BSON: ints stay 32-bit, longs 64-bit; records and maps are
/// subdocuments, arrays arrays; decimals `Decimal128` (or their exact text, per `decimals`); dates and timestamps BSON dates
/// (milliseconds: finer digits are cut toward the past); times of day the Avro integer (ms or
/// µs after midnight); uuids binary subtype 4, bytes and fixed binary subtype 0; enums strings.
/// A value BSON cannot hold (a decimal beyond 34 digits) is an error naming `field`.
pub fn to_bson(field: &str, v: &Value, decimals: MongoDecimals) -> Result<Bson, Rejected> {
    Ok(match v {
        Value::Null => Bson::Null,
        Value::Boolean(b) => Bson::Boolean(*b),
        Value::Int(i) => Bson::Int32(*i),
        Value::Long(i) => Bson::Int64(*i),
        Value::Float(f) => Bson::Double(*f as f64),
        Value::Double(f) => Bson::Double(*f),
        Value::String(s) => Bson::String(s.clone()),
        Value::TimestampMillis(ms) => Bson::DateTime(bson::DateTime::from_millis(*ms)),
        Value::LocalTimestampMillis(ms) => Bson::DateTime(bson::DateTime::from_millis(*ms)),
        Value::TimestampMicros(us) | Value::LocalTimestampMicros(us) => {
            Bson::DateTime(bson::DateTime::from_millis(us.div_euclid(1_000)))
        }
        Value::TimestampNanos(ns) | Value::LocalTimestampNanos(ns) => {
            Bson::DateTime(bson::DateTime::from_millis(ns.div_euclid(1_000_000)))
        }
        Value::Date(days) => {
            Bson::DateTime(bson::DateTime::from_millis(i64::from(*days) * 86_400_000))
        }
        Value::TimeMillis(ms) => Bson::Int32(*ms),
        Value::TimeMicros(us) => Bson::Int64(*us),
        Value::Enum(s) => Bson::String(s.clone()),
        Value::Uuid(u) => Bson::Binary(Binary {
            subtype: BinarySubtype::Uuid,
            bytes: u.as_bytes().to_vec(),
        }),
        Value::Bytes(b) | Value::Fixed(b) => Bson::Binary(Binary {
            subtype: BinarySubtype::Generic,
            bytes: b.clone(),
        }),
        Value::Decimal(d) if decimals == MongoDecimals::String => Bson::String(d.to_string()),
        Value::Decimal(d) => Bson::Decimal128(decimal128(d).ok_or_else(|| Rejected {
            index: 0,
            kind: "invalid_record",
            message: format!(
                "field `{field}` holds the decimal {d}, more than the \
                 {MAX_DECIMAL128_PRECISION} digits of a Decimal128"
            ),
        })?),
        Value::Array(items) => Bson::Array(
            items
                .iter()
                .map(|item| to_bson(field, item, decimals))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(entries) => {
            let mut d = Document::new();
            for (k, item) in entries {
                d.insert(k.clone(), to_bson(field, item, decimals)?);
            }
            Bson::Document(d)
        }
        Value::Record(r) => {
            let mut d = Document::new();
            for (k, item) in &r.fields {
                d.insert(&**k, to_bson(field, item, decimals)?);
            }
            Bson::Document(d)
        }
    })
}

/// A decimal as IEEE 754-2008 decimal128 (binary integer decimal, the encoding BSON uses):
/// sign, exponent `-scale` biased by 6176, and the unscaled integer as the coefficient.
/// `None` beyond 34 digits.
pub fn decimal128(d: &crate::record::Decimal) -> Option<Decimal128> {
    let unscaled = d.unscaled_i128()?;
    let coefficient = unscaled.unsigned_abs();
    if coefficient >= 10u128.pow(MAX_DECIMAL128_PRECISION) {
        return None;
    }
    let exponent = 6176u128.checked_sub(u128::from(d.scale()))?;
    let bits = (u128::from(unscaled < 0) << 127) | (exponent << 113) | coefficient;
    Some(Decimal128::from_bytes(bits.to_le_bytes()))
}

/// The schema's types this sink cannot store as configured, found at start-up and named by
/// their path: with `sink.mongo.decimals = "decimal128"`, decimals of more than 34 digits (a
/// `Decimal128` would round them) and any decimal when the server has no Decimal128
/// (`server_decimal128` false: FerretDB 1.24 drops the connection on one, so the sink would
/// retry for ever). With `"string"` every decimal is stored as its exact text.
pub fn check_schema(
    schema: &RecordSchema,
    server_decimal128: bool,
    decimals: MongoDecimals,
) -> Result<(), String> {
    let decimal128 = decimals == MongoDecimals::Decimal128;
    fn walk(path: &str, ty: &FieldType, decimal128: bool, server: bool) -> Result<(), String> {
        match ty {
            FieldType::Decimal { .. } if decimal128 && !server => Err(format!(
                "field `{path}` is a decimal: this server (FerretDB) cannot store Decimal128 \
                 (it drops the connection); set sink.mongo.decimals = \"string\" to store \
                 decimals as their exact text, or use MongoDB"
            )),
            FieldType::Decimal {
                precision, scale, ..
            } if decimal128 && *precision > MAX_DECIMAL128_PRECISION => Err(format!(
                "field `{path}` is decimal({precision},{scale}): a MongoDB Decimal128 holds at \
                 most {MAX_DECIMAL128_PRECISION} digits; set sink.mongo.decimals = \"string\" \
                 to store them as their exact text"
            )),
            FieldType::Array(t) | FieldType::Map(t) => walk(path, t, decimal128, server),
            FieldType::Union(branches) => branches
                .iter()
                .try_for_each(|t| walk(path, t, decimal128, server)),
            FieldType::Record(r) => r
                .fields
                .iter()
                .try_for_each(|f| walk(&format!("{path}.{}", f.name), &f.ty, decimal128, server)),
            _ => Ok(()),
        }
    }
    schema
        .fields
        .iter()
        .try_for_each(|f| walk(&f.name, &f.ty, decimal128, server_decimal128))
}

/// Where and how a record becomes a document: its `_id` (the key field, or the message key
/// when `None`), decimals, and the lineage the sink adds.
pub struct Target<'a> {
    pub key_field: Option<&'a str>,
    pub decimals: MongoDecimals,
    pub topic: &'a str,
    pub loaded_at: bson::DateTime,
}

/// The document of a record: `_id`, every field of the record, then the lineage fields.
pub fn document(
    t: &Target<'_>,
    msg: &SinkMessage,
    record: &Record,
) -> Result<(Bson, Document), Rejected> {
    let id = document_id(t, msg, record)?;
    let mut d = Document::new();
    d.insert("_id", id.clone());
    for (name, v) in &record.fields {
        d.insert(&**name, to_bson(name, v, t.decimals)?);
    }
    for (k, v) in lineage_fields(t, msg, record) {
        d.insert(k, v);
    }
    Ok((id, d))
}

/// The `_id` of a record's document: its key field's value, or the message key.
fn document_id(t: &Target<'_>, msg: &SinkMessage, record: &Record) -> Result<Bson, Rejected> {
    Ok(match t.key_field {
        None => Bson::String(
            msg.key_str()
                .map_err(|e| Rejected {
                    index: 0,
                    kind: "missing_key",
                    message: e.to_string(),
                })?
                .to_string(),
        ),
        Some(k) => match record.get(k) {
            None | Some(Value::Null) => {
                return Err(Rejected {
                    index: 0,
                    kind: "missing_key",
                    message: format!("key field `{k}` is null or missing"),
                })
            }
            Some(v) => to_bson(k, v, t.decimals)?,
        },
    })
}

/// The lineage fields, in the document's order.
fn lineage_fields(t: &Target<'_>, msg: &SinkMessage, record: &Record) -> [(&'static str, Bson); 5] {
    [
        (
            lineage::TRACE_ID,
            msg.trace_id(Some(record))
                .map(Bson::String)
                .unwrap_or(Bson::Null),
        ),
        (lineage::SOURCE_TOPIC, Bson::String(t.topic.to_string())),
        (lineage::SOURCE_PARTITION, Bson::Int32(msg.partition)),
        (lineage::SOURCE_OFFSET, Bson::Int64(msg.offset)),
        (lineage::LOADED_AT, Bson::DateTime(t.loaded_at)),
    ]
}

/// The names the document sets itself: a record field of one of these names is replaced.
const RESERVED: [&str; 6] = [
    "_id",
    lineage::TRACE_ID,
    lineage::SOURCE_TOPIC,
    lineage::SOURCE_PARTITION,
    lineage::SOURCE_OFFSET,
    lineage::LOADED_AT,
];

/// [`document`] encoded as BSON as it is built: no `Document` (an index map with a heap
/// string and enum per field) between the record and the bytes. The same document, field
/// for field (unit test); a record with a field of a [`RESERVED`] name takes the `Document`
/// path, whose inserts replace it.
pub fn raw_document(
    t: &Target<'_>,
    msg: &SinkMessage,
    record: &Record,
) -> Result<(Bson, RawDocumentBuf), Rejected> {
    let reserved = |n: &str| n.starts_with('_') && RESERVED.contains(&n);
    let encode_err = |e: String| Rejected {
        index: 0,
        kind: "mongo_write",
        message: format!("the document cannot be encoded as BSON: {e}"),
    };
    if record.fields.iter().any(|(n, _)| reserved(n)) {
        let (id, d) = document(t, msg, record)?;
        let raw = RawDocumentBuf::from_document(&d).map_err(|e| encode_err(e.to_string()))?;
        return Ok((id, raw));
    }
    let id = document_id(t, msg, record)?;
    let raw = |b: Bson| RawBson::try_from(b).map_err(|e| encode_err(e.to_string()));
    let mut out = RawDocumentBuf::new();
    out.append("_id", raw(id.clone())?);
    for (name, v) in &record.fields {
        out.append(&**name, raw(to_bson(name, v, t.decimals)?)?);
    }
    for (k, v) in lineage_fields(t, msg, record) {
        out.append(k, raw(v)?);
    }
    Ok((id, out))
}

/// One upsert to send: the message's index in its batch, `_id`, the document and its size.
/// The document is kept as encoded BSON: a `Document` (one heap string and enum per field)
/// takes several times the memory, and a batch holds thousands of them.
pub(super) struct Upsert {
    pub(super) index: usize,
    pub(super) id: Bson,
    pub(super) doc: RawDocumentBuf,
    pub(super) bytes: usize,
    /// The record's `sink.version_field` value as stored in the document (`None`: no
    /// version check).
    pub(super) version: Option<Bson>,
}

/// A version as a number to compare: timestamps as epoch milliseconds, ints as they are.
pub(super) fn version_number(v: &Bson) -> Option<i64> {
    match v {
        Bson::DateTime(d) => Some(d.timestamp_millis()),
        Bson::Int64(i) => Some(*i),
        Bson::Int32(i) => Some(i64::from(*i)),
        _ => None,
    }
}

impl Upsert {
    /// The upsert of one decoded record: its document encoded as BSON.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        key_field: Option<&str>,
        version_field: Option<&str>,
        decimals: MongoDecimals,
        topic: &str,
        loaded_at: bson::DateTime,
        index: usize,
        m: &SinkMessage,
        decoded: Result<Record, Rejected>,
    ) -> Result<Upsert, Rejected> {
        let reject = |message: String| Rejected {
            index,
            kind: "mongo_write",
            message,
        };
        let (id, doc) = decoded.and_then(|r| {
            let t = Target {
                key_field,
                decimals,
                topic,
                loaded_at,
            };
            raw_document(&t, m, &r).map_err(|mut e| {
                e.index = index;
                e
            })
        })?;
        let version = match version_field {
            None => None,
            Some(f) => match doc
                .get(f)
                .ok()
                .flatten()
                .and_then(|v| Bson::try_from(v.to_raw_bson()).ok())
            {
                Some(v) if version_number(&v).is_some() => Some(v),
                other => {
                    return Err(Rejected {
                        index,
                        kind: "invalid_record",
                        message: format!("version field `{f}` holds {other:?}, not a version"),
                    })
                }
            },
        };
        let bytes = doc.as_bytes().len();
        if bytes > MAX_COMMAND_BYTES {
            return Err(reject(format!(
                "the document is {bytes} bytes, above the 16 MiB limit"
            )));
        }
        Ok(Upsert {
            index,
            id,
            doc,
            bytes,
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Decimal;
    const D128: MongoDecimals = MongoDecimals::Decimal128;

    fn tgt(key_field: Option<&str>, decimals: MongoDecimals, at: bson::DateTime) -> Target<'_> {
        Target {
            key_field,
            decimals,
            topic: "t",
            loaded_at: at,
        }
    }

    fn message(partition: i32, offset: i64, key: &[u8]) -> SinkMessage {
        SinkMessage {
            partition,
            offset,
            key: Some(key.to_vec()),
            payload: None,
            headers: None,
        }
    }

    #[test]
    fn the_raw_document_is_the_document() {
        let msg = message(2, 11, b"k2");
        let mut r = Record::new();
        r.set("wins", Value::Int(3));
        r.set("name", Value::String("Fàker".into()));
        r.set("at", Value::TimestampMillis(5));
        r.set("gone", Value::Null);
        r.set(
            "series",
            Value::Record(Record {
                fields: vec![
                    ("progress".into(), Value::String("WL".into())),
                    ("wins".into(), Value::Int(1)),
                ],
            }),
        );
        r.set(
            "tags",
            Value::Array(vec![Value::String("a".into()), Value::Long(2)]),
        );
        let at = bson::DateTime::from_millis(7);
        for key in [None, Some("name")] {
            let (id, d) = document(&tgt(key, D128, at), &msg, &r).unwrap();
            let (raw_id, raw) = raw_document(&tgt(key, D128, at), &msg, &r).unwrap();
            assert_eq!(raw_id, id);
            assert_eq!(raw.to_document().unwrap(), d);
            assert_eq!(
                raw.as_bytes(),
                RawDocumentBuf::from_document(&d).unwrap().as_bytes()
            );
        }
        // A record field with a name the document sets itself is replaced, as by `document`.
        r.set(lineage::SOURCE_OFFSET, Value::String("mine".into()));
        let (_, d) = document(&tgt(None, D128, at), &msg, &r).unwrap();
        let (_, raw) = raw_document(&tgt(None, D128, at), &msg, &r).unwrap();
        assert_eq!(raw.to_document().unwrap(), d);
        assert_eq!(d.get_i64(lineage::SOURCE_OFFSET).unwrap(), 11);
    }

    #[test]
    fn documents_carry_every_field_and_lineage() {
        let msg = message(1, 9, b"k1");
        let mut r = Record::new();
        r.set("wins", Value::Int(3));
        r.set("fetched_at", Value::TimestampMillis(5));
        r.set("summoner_name", Value::Null);
        let (id, d) = document(&tgt(None, D128, bson::DateTime::from_millis(0)), &msg, &r).unwrap();
        assert_eq!(id, Bson::String("k1".into()));
        assert_eq!(d.get_i32("wins").unwrap(), 3);
        assert_eq!(d.get_datetime("fetched_at").unwrap().timestamp_millis(), 5);
        assert!(d.get("summoner_name").unwrap().as_null().is_some());
        assert_eq!(d.get_i64(lineage::SOURCE_OFFSET).unwrap(), 9);
        assert_eq!(d.get_i32(lineage::SOURCE_PARTITION).unwrap(), 1);
        assert_eq!(d.keys().next().unwrap(), "_id");
        let e = document(&tgt(Some("nope"), D128, bson::DateTime::now()), &msg, &r).unwrap_err();
        assert_eq!(e.kind, "missing_key");
    }

    #[test]
    fn nested_values_are_subdocuments_arrays_and_typed_leaves() {
        let msg = message(0, 1, b"k");
        let mut series = Record::new();
        series.set("wins", Value::Int(2));
        series.set("progress", Value::String("WL-".into()));
        let u = uuid::Uuid::from_u128(0x550e_8400_e29b_41d4_a716_4466_5544_0000);
        let mut r = Record::new();
        r.set("mini_series", Value::Record(series));
        r.set(
            "tags",
            Value::Array(vec![Value::String("a".into()), Value::Null]),
        );
        r.set("counts", Value::Map(vec![("games".into(), Value::Long(7))]));
        r.set("score", Value::Decimal(Decimal::new(-12_345, 2)));
        r.set("id", Value::Uuid(u));
        r.set("raw", Value::Bytes(vec![0, 0xff]));
        r.set("region", Value::Enum("EUW".into()));
        r.set("day", Value::Date(1));
        r.set("ts_us", Value::TimestampMicros(1_700_000_000_123_999));
        r.set("ts_ns", Value::TimestampNanos(-1));
        r.set("at_us", Value::TimeMicros(5));
        let (_, d) = document(&tgt(None, D128, bson::DateTime::from_millis(0)), &msg, &r).unwrap();
        let s = d.get_document("mini_series").unwrap();
        assert_eq!(s.get_i32("wins").unwrap(), 2);
        assert_eq!(s.get_str("progress").unwrap(), "WL-");
        let tags = d.get_array("tags").unwrap();
        assert_eq!(tags[0], Bson::String("a".into()));
        assert_eq!(tags[1], Bson::Null);
        assert_eq!(
            d.get_document("counts").unwrap().get_i64("games").unwrap(),
            7
        );
        assert_eq!(d.get_str("region").unwrap(), "EUW");
        assert_eq!(
            d.get("score").unwrap(),
            &Bson::Decimal128("-123.45".parse().unwrap())
        );
        let id = d.get_binary_generic("raw").unwrap();
        assert_eq!(id, &vec![0, 0xff]);
        match d.get("id").unwrap() {
            Bson::Binary(b) => {
                assert_eq!(b.subtype, BinarySubtype::Uuid);
                assert_eq!(b.bytes, u.as_bytes().to_vec());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            d.get_datetime("day").unwrap().timestamp_millis(),
            86_400_000
        );
        // Micros and nanos are cut to milliseconds toward the past.
        assert_eq!(
            d.get_datetime("ts_us").unwrap().timestamp_millis(),
            1_700_000_000_123
        );
        assert_eq!(d.get_datetime("ts_ns").unwrap().timestamp_millis(), -1);
        assert_eq!(d.get_i64("at_us").unwrap(), 5);
        // The whole document encodes.
        RawDocumentBuf::from_document(&d).unwrap();
    }

    #[test]
    fn decimals_are_decimal128_up_to_34_digits() {
        for (unscaled, scale) in [
            (0i128, 0u32),
            (1, 0),
            (-1, 0),
            (123_456_789_012_345_678, 4),
            (-99_999_999_999_999, 4),
            (10i128.pow(34) - 1, 10),
            (-(10i128.pow(34) - 1), 34),
            (5, 30),
        ] {
            let d = Decimal::new(unscaled, scale);
            let want: Decimal128 = d.to_string().parse().unwrap();
            assert_eq!(decimal128(&d), Some(want), "{d}");
        }
        assert_eq!(decimal128(&Decimal::new(10i128.pow(34), 2)), None);
        let msg = message(0, 1, b"k");
        let mut r = Record::new();
        r.set("big", Value::Decimal(Decimal::new(10i128.pow(35), 0)));
        let e = document(&tgt(None, D128, bson::DateTime::from_millis(0)), &msg, &r).unwrap_err();
        assert_eq!(e.kind, "invalid_record");
        assert!(e.message.contains("`big`"), "{}", e.message);
    }

    #[test]
    fn decimals_as_strings_are_their_exact_text_at_any_precision() {
        let msg = message(0, 1, b"k");
        let mut r = Record::new();
        r.set("score", Value::Decimal(Decimal::new(-12_345, 2)));
        r.set("big", Value::Decimal(Decimal::new(10i128.pow(35) + 7, 3)));
        r.set(
            "list",
            Value::Array(vec![Value::Decimal(Decimal::new(5, 4))]),
        );
        let s = MongoDecimals::String;
        let (_, d) = document(&tgt(None, s, bson::DateTime::from_millis(0)), &msg, &r).unwrap();
        assert_eq!(d.get_str("score").unwrap(), "-123.45");
        assert_eq!(
            d.get_str("big").unwrap(),
            "100000000000000000000000000000000.007"
        );
        assert_eq!(
            d.get_array("list").unwrap()[0],
            Bson::String("0.0005".into())
        );
    }

    #[test]
    fn a_decimal_beyond_decimal128_fails_at_start_naming_its_path() {
        let nested = crate::codec::load_schema(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/nested_entry.avsc"
        ))
        .unwrap();
        check_schema(&nested, true, D128).unwrap();
        let e = check_schema(&nested, false, D128).unwrap_err();
        assert!(e.contains("`score`") && e.contains("FerretDB"), "{e}");
        assert!(e.contains("sink.mongo.decimals"), "{e}");
        check_schema(&nested, false, MongoDecimals::String).unwrap();
        let s = RecordSchema::parse(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"record",
            "name":"A","fields":[{"name":"b","type":{"type":"array","items":{"type":"bytes",
            "logicalType":"decimal","precision":40,"scale":2}}}]}}]}"#,
        )
        .unwrap();
        let e = check_schema(&s, true, D128).unwrap_err();
        assert!(e.contains("`a.b`") && e.contains("decimal(40,2)"), "{e}");
        check_schema(&s, true, MongoDecimals::String).unwrap();
    }
}
