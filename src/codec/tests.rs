//! Codec tests: round trips of every type, byte identity with apache-avro (the independent
//! reference), both framings, resolution of older writers, and that bad input is a poison
//! error with a readable message, never a panic.
use std::sync::Arc;

use apache_avro::types::Value as AValue;

use super::*;
use crate::config::Config;
use crate::record::{FieldType, Value};

const CLEANED: &str = include_str!("../../schemas/league_entry.cleaned.avsc");
const SCORED: &str = include_str!("../../schemas/league_entry.scored.avsc");

/// Every supported type, plain and nullable.
const ALL_TYPES: &str = r#"{"type":"record","name":"AllTypes","namespace":"etl.test","fields":[
  {"name":"b","type":"boolean"}, {"name":"nb","type":["null","boolean"],"default":null},
  {"name":"i","type":"int"}, {"name":"ni","type":["null","int"],"default":null},
  {"name":"l","type":"long"}, {"name":"nl","type":["null","long"],"default":null},
  {"name":"f","type":"float"}, {"name":"nf","type":["null","float"],"default":null},
  {"name":"d","type":"double"}, {"name":"nd","type":["null","double"],"default":null},
  {"name":"s","type":"string"}, {"name":"ns","type":["null","string"],"default":null},
  {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"nt","type":["null",{"type":"long","logicalType":"timestamp-millis"}],"default":null}
]}"#;

fn cleaned() -> RecordSchema {
    RecordSchema::parse(CLEANED).unwrap()
}

fn scored() -> RecordSchema {
    RecordSchema::parse(SCORED).unwrap()
}

fn rec(fields: Vec<(&str, Value)>) -> Record {
    Record {
        fields: fields.into_iter().map(|(n, v)| (n.into(), v)).collect(),
    }
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

pub(crate) fn league_record(i: i64) -> Record {
    let wins = 10 + (i % 300) as i32;
    let losses = 7 + (i % 200) as i32;
    rec(vec![
        ("summoner_id", s(&format!("sid-{i:08}-Xq3vPz0tLmN8aBcD"))),
        ("summoner_name", s("Fàker 페이커 🐉")),
        ("queue_type", s("RANKED_SOLO_5x5")),
        ("tier", s("DIAMOND")),
        ("rank", s("II")),
        ("league_points", Value::Int((i % 100) as i32)),
        ("wins", Value::Int(wins)),
        ("losses", Value::Int(losses)),
        ("veteran", Value::Boolean(i % 2 == 0)),
        ("inactive", Value::Null),
        ("fresh_blood", Value::Boolean(false)),
        ("hot_streak", Value::Boolean(true)),
        ("mini_series", Value::Null),
        ("games", Value::Int(wins + losses)),
        (
            "win_rate",
            Value::Double(wins as f64 / (wins + losses) as f64),
        ),
        ("source", s("league-v4")),
        ("trace_id", s("4bf92f3577b34da6a3ce929d0e0e4736")),
        ("source_topic", s("etl.raw")),
        ("source_partition", Value::Int((i % 3) as i32)),
        ("source_offset", Value::Long(1_000_000_000 + i)),
        ("fetched_at", Value::TimestampMillis(1_735_689_600_000 + i)),
    ])
}

fn all_types_records() -> Vec<Record> {
    let full = rec(vec![
        ("b", Value::Boolean(true)),
        ("nb", Value::Boolean(false)),
        ("i", Value::Int(i32::MIN)),
        ("ni", Value::Int(i32::MAX)),
        ("l", Value::Long(i64::MIN)),
        ("nl", Value::Long(i64::MAX)),
        ("f", Value::Float(-0.0)),
        ("nf", Value::Float(f32::INFINITY)),
        ("d", Value::Double(f64::MIN_POSITIVE)),
        ("nd", Value::Double(-1.5e300)),
        ("s", s("")),
        ("ns", s("naïve café — 東京 — e\u{301} — 🇫🇷 — \u{0}")),
        ("t", Value::TimestampMillis(-1)),
        ("nt", Value::TimestampMillis(253_402_300_799_999)),
    ]);
    let nulls = rec(vec![
        ("b", Value::Boolean(false)),
        ("nb", Value::Null),
        ("i", Value::Int(0)),
        ("ni", Value::Null),
        ("l", Value::Long(-64)),
        ("nl", Value::Null),
        ("f", Value::Float(1.25)),
        ("nf", Value::Null),
        ("d", Value::Double(0.1)),
        ("nd", Value::Null),
        ("s", s("x".repeat(300).as_str())),
        ("ns", Value::Null),
        ("t", Value::TimestampMillis(0)),
        ("nt", Value::Null),
    ]);
    vec![full, nulls]
}

/// The record as apache-avro's generic value, for the reference encoder.
pub(crate) fn to_apache(schema: &RecordSchema, r: &Record) -> AValue {
    apache_value(
        &FieldType::Record(Arc::new(schema.clone())),
        &Value::Record(r.clone()),
    )
}

/// A value of `ty` as apache-avro's generic value. Union branches are chosen here by the
/// value's kind, independently of the codec's own choice.
pub(crate) fn apache_value(ty: &FieldType, v: &Value) -> AValue {
    match (ty, v) {
        (FieldType::Union(branches), v) => {
            let i = branches
                .iter()
                .position(|b| match (b, v) {
                    (FieldType::Record(rs), Value::Record(r)) => {
                        r.fields.iter().all(|(n, _)| rs.field(n).is_some())
                    }
                    (FieldType::Fixed(f), Value::Fixed(b)) => f.size == b.len(),
                    (b, v) => b.avro_name() == v.kind(),
                })
                .unwrap_or_else(|| panic!("no branch of {ty:?} for {v:?}"));
            AValue::Union(i as u32, Box::new(apache_value(&branches[i], v)))
        }
        (FieldType::Record(rs), Value::Record(r)) => AValue::Record(
            rs.fields
                .iter()
                .map(|f| {
                    let v = r
                        .get(&f.name)
                        .cloned()
                        .or_else(|| f.default.clone())
                        .unwrap_or(Value::Null);
                    (f.name.clone(), apache_value(&schema::full_type(f), &v))
                })
                .collect(),
        ),
        (FieldType::Enum(e), Value::Enum(s)) => AValue::Enum(
            e.symbols.iter().position(|x| x == s).unwrap() as u32,
            s.clone(),
        ),
        (FieldType::Array(items), Value::Array(vs)) => {
            AValue::Array(vs.iter().map(|x| apache_value(items, x)).collect())
        }
        (FieldType::Map(values), Value::Map(es)) => AValue::Map(
            es.iter()
                .map(|(k, x)| (k.clone(), apache_value(values, x)))
                .collect(),
        ),
        (FieldType::Long, Value::Int(i)) => AValue::Long(*i as i64),
        (FieldType::Long, Value::TimestampMillis(t)) => AValue::Long(*t),
        (_, v) => match v.clone() {
            Value::Null => AValue::Null,
            Value::Boolean(b) => AValue::Boolean(b),
            Value::Int(i) => AValue::Int(i),
            Value::Long(l) => AValue::Long(l),
            Value::Float(x) => AValue::Float(x),
            Value::Double(x) => AValue::Double(x),
            Value::String(s) => AValue::String(s),
            Value::TimestampMillis(t) => AValue::TimestampMillis(t),
            Value::Bytes(b) => AValue::Bytes(b),
            Value::Fixed(b) => AValue::Fixed(b.len(), b),
            Value::Date(d) => AValue::Date(d),
            Value::TimeMillis(t) => AValue::TimeMillis(t),
            Value::TimeMicros(t) => AValue::TimeMicros(t),
            Value::TimestampMicros(t) => AValue::TimestampMicros(t),
            Value::TimestampNanos(t) => AValue::TimestampNanos(t),
            Value::LocalTimestampMillis(t) => AValue::LocalTimestampMillis(t),
            Value::LocalTimestampMicros(t) => AValue::LocalTimestampMicros(t),
            Value::LocalTimestampNanos(t) => AValue::LocalTimestampNanos(t),
            Value::Decimal(d) => AValue::Decimal(apache_avro::Decimal::from(d.unscaled_bytes())),
            Value::Uuid(u) => AValue::Uuid(u),
            other => panic!("{other:?} does not fit {ty:?}"),
        },
    }
}

#[test]
fn round_trips_every_type_and_null_in_both_framings() {
    let schema = RecordSchema::parse(ALL_TYPES).unwrap();
    for framing in [Framing::SingleObject, Framing::Confluent { schema_id: 7 }] {
        let codec = Codec::new(schema.clone(), framing);
        for r in all_types_records() {
            let bytes = codec.encode(&r).unwrap();
            assert_eq!(codec.decode(&bytes).unwrap(), r, "{framing:?}");
        }
    }
    let codec = Codec::new(cleaned(), Framing::SingleObject);
    let r = league_record(42);
    assert_eq!(codec.decode(&codec.encode(&r).unwrap()).unwrap(), r);
}

#[test]
fn datum_is_byte_identical_to_apache_avro_and_it_reads_ours() {
    let cases: Vec<(RecordSchema, Record)> = all_types_records()
        .into_iter()
        .map(|r| (RecordSchema::parse(ALL_TYPES).unwrap(), r))
        .chain((0..50).map(|i| (cleaned(), league_record(i * 7919))))
        .collect();
    for (schema, r) in cases {
        let reference = apache_avro::Schema::parse_str(&schema.source).unwrap();
        let theirs = apache_avro::to_avro_datum(&reference, to_apache(&schema, &r)).unwrap();
        let mut ours = Vec::new();
        binary::encode_datum(&schema, &r, &mut ours).unwrap();
        assert_eq!(ours, theirs, "datum of {r:?}");
        let read = apache_avro::from_avro_datum(&reference, &mut ours.as_slice(), None).unwrap();
        assert_eq!(read, to_apache(&schema, &r));
    }
}

#[test]
fn single_object_header_is_the_one_apache_avro_reads() {
    // A schema without logical types: apache-avro 0.20 fingerprints those differently from
    // the specification and Java Avro (AVRO-4004, see schema.rs).
    let schema = RecordSchema::parse(&ALL_TYPES.replace(
        r#"{"type":"long","logicalType":"timestamp-millis"}"#,
        r#""long""#,
    ))
    .unwrap();
    let reference = apache_avro::Schema::parse_str(&schema.source).unwrap();
    let codec = Codec::new(schema.clone(), Framing::SingleObject);
    for mut r in all_types_records() {
        for (_, v) in r.fields.iter_mut() {
            if let Value::TimestampMillis(t) = v {
                *v = Value::Long(*t);
            }
        }
        let bytes = codec.encode(&r).unwrap();
        assert_eq!(&bytes[..2], &[0xC3, 0x01]);
        let reader = apache_avro::GenericSingleObjectReader::new(reference.clone()).unwrap();
        let read = reader.read_value(&mut bytes.as_slice()).unwrap();
        assert_eq!(read, to_apache(&schema, &r));
    }
}

#[test]
fn confluent_framing_is_magic_zero_and_big_endian_id() {
    let codec = Codec::new(
        cleaned(),
        Framing::Confluent {
            schema_id: 0x0102_0304,
        },
    );
    let r = league_record(5);
    let bytes = codec.encode(&r).unwrap();
    assert_eq!(&bytes[..5], &[0x00, 0x01, 0x02, 0x03, 0x04]);
    let mut datum = Vec::new();
    binary::encode_datum(codec.schema(), &r, &mut datum).unwrap();
    assert_eq!(&bytes[5..], &datum[..]);
}

#[test]
fn decoders_accept_both_framings() {
    let single = Codec::new(cleaned(), Framing::SingleObject);
    let confluent = Codec::new(cleaned(), Framing::Confluent { schema_id: 11 });
    let r = league_record(9);
    // A Confluent-configured reader reads single-object data with no registry call.
    assert_eq!(confluent.decode(&single.encode(&r).unwrap()).unwrap(), r);
    // A single-object reader reads Confluent data once it knows the id.
    let framed = confluent.encode(&r).unwrap();
    let e = single.decode(&framed).unwrap_err();
    assert!(!e.is_retriable());
    assert!(e.to_string().contains("schema id 11"), "{e}");
    single.add_schema_id(11, cleaned()).unwrap();
    assert_eq!(single.decode(&framed).unwrap(), r);
}

#[test]
fn scored_reader_resolves_cleaned_writer_in_both_framings() {
    let writer = Codec::new(cleaned(), Framing::SingleObject);
    let reader = Codec::new(scored(), Framing::Confluent { schema_id: 2 });
    let r = league_record(1);
    let bytes = writer.encode(&r).unwrap();
    let e = reader.decode(&bytes).unwrap_err();
    assert!(matches!(e, CodecError::UnknownFingerprint { .. }), "{e}");
    assert!(e.to_string().contains("schemas/history"), "{e}");
    reader.add_writer_schema(cleaned()).unwrap();
    let read = reader.decode(&bytes).unwrap();
    let names: Vec<&str> = read.fields.iter().map(|(n, _)| &**n).collect();
    let scored = scored();
    let expected: Vec<&str> = scored.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, expected, "fields in reader order");
    assert_eq!(read.get("quality_window"), Some(&Value::Null));
    assert_eq!(read.get("quality_decision"), Some(&Value::Null));
    for (n, v) in &r.fields {
        assert_eq!(read.get(n), Some(v), "{n}");
    }
    // The same through a registry id.
    let confluent_writer = Codec::new(cleaned(), Framing::Confluent { schema_id: 1 });
    reader.add_schema_id(1, cleaned()).unwrap();
    assert_eq!(
        reader
            .decode(&confluent_writer.encode(&r).unwrap())
            .unwrap(),
        read
    );
}

#[test]
fn resolution_skips_removed_fields_reorders_and_promotes() {
    let writer = RecordSchema::parse(
        r#"{"type":"record","name":"E","fields":[
        {"name":"gone","type":"string"}, {"name":"n","type":"int"},
        {"name":"x","type":["null","float"],"default":null}, {"name":"ts","type":"long"}]}"#,
    )
    .unwrap();
    let reader = RecordSchema::parse(
        r#"{"type":"record","name":"E","namespace":"other","fields":[
        {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"x","type":["null","double"],"default":null},
        {"name":"n","type":["null","long"],"default":null},
        {"name":"added","type":"string","default":"dflt"}]}"#,
    )
    .unwrap();
    let w = Codec::new(writer.clone(), Framing::SingleObject);
    let r = Codec::new(reader, Framing::SingleObject);
    r.add_writer_schema(writer).unwrap();
    let bytes = w
        .encode(&rec(vec![
            ("gone", s("bye")),
            ("n", Value::Int(-3)),
            ("x", Value::Float(0.5)),
            ("ts", Value::Long(1000)),
        ]))
        .unwrap();
    assert_eq!(
        r.decode(&bytes).unwrap(),
        rec(vec![
            ("ts", Value::TimestampMillis(1000)),
            ("x", Value::Double(0.5)),
            ("n", Value::Long(-3)),
            ("added", s("dflt")),
        ])
    );
}

#[test]
fn incompatible_writer_is_refused_when_added() {
    let codec = Codec::new(scored(), Framing::SingleObject);
    let narrowed = RecordSchema::parse(&CLEANED.replace(
        r#""name": "wins", "type": "int""#,
        r#""name": "wins", "type": "string""#,
    ))
    .unwrap();
    let e = codec.add_writer_schema(narrowed).unwrap_err();
    assert!(matches!(e, CodecError::Incompatible { .. }));
    assert!(e.to_string().contains("`wins`"), "{e}");
}

#[test]
fn encode_fills_defaults_and_takes_fields_in_any_order() {
    let codec = Codec::new(scored(), Framing::SingleObject);
    let r = league_record(8);
    let mut shuffled = r.clone();
    shuffled.fields.reverse();
    let a = codec.encode(&r).unwrap();
    assert_eq!(codec.encode(&shuffled).unwrap(), a);
    let back = codec.decode(&a).unwrap();
    assert_eq!(back.get("quality_decision"), Some(&Value::Null));
    // Lossless widening into wider fields.
    let mut widened = r.clone();
    widened.set("source_offset", Value::Int(5));
    widened.set("fetched_at", Value::Long(7));
    let back = codec.decode(&codec.encode(&widened).unwrap()).unwrap();
    assert_eq!(back.get("source_offset"), Some(&Value::Long(5)));
    assert_eq!(back.get("fetched_at"), Some(&Value::TimestampMillis(7)));
}

#[test]
fn encode_errors_name_the_field_and_are_poison() {
    let codec = Codec::new(cleaned(), Framing::SingleObject);
    let check = |r: Record, field: &str, what: &str| {
        let mut buf = vec![1, 2, 3];
        let e = codec.encode_into(&r, &mut buf).unwrap_err();
        assert_eq!(buf, vec![1, 2, 3], "buffer untouched on error");
        assert!(!e.is_retriable());
        assert_eq!(e.kind(), "avro-encode");
        let m = e.to_string();
        assert!(m.contains(&format!("`{field}`")) && m.contains(what), "{m}");
    };
    let mut r = league_record(1);
    r.fields.retain(|(n, _)| &**n != "summoner_id");
    check(r, "summoner_id", "no default");
    let mut r = league_record(1);
    r.set("tier", Value::Null);
    check(r, "tier", "null in a required field");
    let mut r = league_record(1);
    r.set("wins", s("12"));
    check(r, "wins", "does not fit");
    let mut r = league_record(1);
    r.set("league_points", Value::Long(5));
    check(r, "league_points", "does not fit");
    let mut r = league_record(1);
    r.set("surprise", Value::Int(1));
    check(r, "surprise", "not a field");
}

fn poison(codec: &Codec, bytes: &[u8]) -> String {
    let e = codec.decode(bytes).unwrap_err();
    assert!(!e.is_retriable(), "{e}");
    e.to_string()
}

#[test]
fn garbage_is_poison_with_a_readable_message() {
    let codec = Codec::new(cleaned(), Framing::SingleObject);
    assert!(poison(&codec, b"").contains("empty"));
    let m = poison(&codec, br#"{"summonerId":"x"}"#);
    assert!(m.contains("0x7b") && m.contains("framing"), "{m}");
    let m = poison(&codec, &[0xC3, 0x01, 1, 2, 3]);
    assert!(m.contains("truncated") && m.contains("fingerprint"), "{m}");
    let m = poison(&codec, &[0x00, 0, 0]);
    assert!(m.contains("truncated") && m.contains("schema id"), "{m}");
    let m = poison(&codec, &[0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0]);
    assert!(
        m.contains("unknown writer schema") && m.contains("0x0807060504030201"),
        "{m}"
    );
    let m = poison(&codec, &[0x00, 0, 0, 0, 9, 0]);
    assert!(
        m.contains("schema id 9") && m.contains("no schema registry"),
        "{m}"
    );
}

#[test]
fn every_truncation_is_poison_naming_a_field() {
    let codec = Codec::new(cleaned(), Framing::SingleObject);
    let bytes = codec.encode(&league_record(77)).unwrap();
    for cut in 0..bytes.len() {
        let m = poison(&codec, &bytes[..cut]);
        assert!(
            m.contains("truncated") || m.contains("empty"),
            "cut {cut}: {m}"
        );
        if cut > 10 {
            assert!(m.contains("field `"), "cut {cut}: {m}");
        }
    }
    let mut long = bytes.clone();
    long.push(0);
    let m = poison(&codec, &long);
    assert!(m.contains("1 bytes left over"), "{m}");
}

#[test]
fn corrupt_datums_are_poison() {
    let schema = RecordSchema::parse(
        r#"{"type":"record","name":"C","fields":[{"name":"u","type":["null","string"],"default":null},
           {"name":"b","type":"boolean"},{"name":"i","type":"int"},{"name":"s","type":"string"}]}"#,
    )
    .unwrap();
    let codec = Codec::new(schema, Framing::Confluent { schema_id: 1 });
    let framed = |datum: &[u8]| [&[0u8, 0, 0, 0, 1][..], datum].concat();
    let ok = framed(&[2, 4, b'h', b'i', 1, 2, 4, b'o', b'k']);
    assert_eq!(codec.decode(&ok).unwrap().get("s"), Some(&s("ok")));
    let cases: [(&[u8], &str); 6] = [
        (&[4, 1, 2, 0], "union branch"),
        (&[0, 7, 2, 0], "boolean byte"),
        (&[0, 1, 0xff, 0xff, 0xff, 0xff, 0x7f, 0], "32-bit"),
        (&[0, 1, 2, 1], "negative string length"),
        (&[0, 1, 2, 4, 0xff, 0xfe], "UTF-8"),
        (
            &[
                0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ],
            "overflows",
        ),
    ];
    for (datum, what) in cases {
        let m = poison(&codec, &framed(datum));
        assert!(m.contains(what), "{datum:?}: {m}");
    }
}

#[test]
fn random_bytes_never_panic() {
    let codec = Codec::new(scored(), Framing::SingleObject);
    codec.add_schema_id(3, cleaned()).unwrap();
    let good = codec.encode(&league_record(1)).unwrap();
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
    for round in 0..20_000 {
        let mut bytes = if round % 2 == 0 {
            good.clone()
        } else {
            let mut b = vec![0, 0, 0, 0, 3];
            b.extend_from_slice(&good[10..]);
            b
        };
        // Flip a few bytes of the datum, keeping the header, or cut it.
        flip_some(&mut bytes, &mut next);
        if next() % 3 == 0 {
            bytes.truncate((next() as usize) % bytes.len());
        }
        if let Err(e) = codec.decode(&bytes) {
            assert!(!e.is_retriable());
        }
    }
}

#[test]
fn error_classification() {
    assert!(CodecError::SchemaNotCached { id: 1 }.is_retriable());
    let registry = |status, retriable| CodecError::Registry {
        operation: "GET x".into(),
        status,
        message: "m".into(),
        retriable,
    };
    assert!(registry(None, true).is_retriable());
    assert!(!registry(Some(409), false).is_retriable());
    assert_eq!(
        CodecError::UnknownSchemaId {
            id: 1,
            reason: "r".into()
        }
        .kind(),
        "avro-unknown-schema"
    );
}

#[test]
fn registry_url_credentials_stay_out_of_messages() {
    let r = registry::Registry::new("https://user:s3cret@registry.example:8081/").unwrap();
    let debug = format!("{r:?}");
    assert!(
        debug.contains("registry.example") && !debug.contains("s3cret"),
        "{debug}"
    );
}

#[tokio::test]
async fn registry_unreachable_is_retriable_and_hides_credentials() {
    // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    let mut config = Config::default();
    config.kafka.schema_registry_url = Some("http://etl:s3cret@127.0.0.1:9".into());
    let e = Codec::writer(&config.kafka, cleaned(), "etl.cleaned")
        .await
        .unwrap_err();
    assert!(e.is_retriable(), "{e}");
    let m = e.to_string();
    assert!(
        m.contains("etl.cleaned-value") && m.contains("unreachable"),
        "{m}"
    );
    assert!(!m.contains("s3cret"), "{m}");
}

#[test]
fn shared_across_threads() {
    let codec = Arc::new(Codec::new(cleaned(), Framing::SingleObject));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let c = codec.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    let r = league_record(t * 1000 + i);
                    assert_eq!(c.decode(&c.encode(&r).unwrap()).unwrap(), r);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        codec.schema().field("fetched_at").unwrap().ty,
        FieldType::TimestampMillis
    );
}

/// A seeded xorshift generator: the same "random" bytes on every run.
pub(crate) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// Sets one to four bytes after the 10-byte framing header to random values.
pub(crate) fn flip_some(bytes: &mut [u8], next: &mut impl FnMut() -> u64) {
    for _ in 0..(1 + next() % 4) {
        let i = 10 + (next() as usize) % (bytes.len() - 10);
        bytes[i] = next() as u8;
    }
}
