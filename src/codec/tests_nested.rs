//! Conformance of the full Avro 1.12 type system (issue 20): round trips of every type in
//! both framings, byte identity with apache-avro (the independent reference) both ways,
//! canonical form and fingerprint of a nested schema, and errors that name the nested field.
//! Resolution is in `tests_resolve`.
use std::sync::Arc;

use apache_avro::types::Value as AValue;

use super::tests::{apache_value, flip_some, to_apache, xorshift};
use super::*;
use crate::record::{Decimal, FieldType, Value};

const NESTED: &str = include_str!("../../tests/fixtures/nested_entry.avsc");

pub(super) fn nested() -> RecordSchema {
    RecordSchema::parse(NESTED).unwrap()
}

pub(super) fn rec(fields: Vec<(&str, Value)>) -> Record {
    Record {
        fields: fields.into_iter().map(|(n, v)| (n.into(), v)).collect(),
    }
}

pub(super) fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn uuid(i: u128) -> Value {
    Value::Uuid(uuid::Uuid::from_u128(
        0x550e_8400_e29b_41d4_a716_4466_5544_0000 + i,
    ))
}

fn series(progress: &str) -> Value {
    Value::Record(rec(vec![
        ("progress", s(progress)),
        ("target", Value::Int(3)),
        ("wins", Value::Int(1)),
        ("losses", Value::Int(-1)),
    ]))
}

/// A nested record; `i` varies every value, `single_map` keeps maps to one entry (apache-avro
/// writes a map in HashMap order, so byte identity needs one entry).
pub(super) fn nested_record(i: i64, single_map: bool) -> Record {
    let player = |n: i64, tier: Value, series_v: Value| {
        Value::Record(rec(vec![
            ("name", s(&format!("player-{n} 플레이어"))),
            ("puuid", uuid(n as u128)),
            ("tier", tier),
            ("series", series_v),
        ]))
    };
    let mut counts = vec![("games".to_string(), Value::Long(i * 1_000_003))];
    let mut samples = vec![(
        "psi".to_string(),
        Value::Array(vec![Value::Double(0.5), Value::Double(-1e300)]),
    )];
    if !single_map {
        counts.push(("wins".into(), Value::Long(-i)));
        samples.push(("empty".into(), Value::Array(vec![])));
    }
    rec(vec![
        ("id", uuid(i as u128)),
        (
            "region",
            Value::Enum(["EUW", "NA", "KR"][(i % 3) as usize].into()),
        ),
        (
            "score",
            Value::Decimal(Decimal::new(-12_345 - i as i128, 2)),
        ),
        (
            "prize",
            Value::Decimal(Decimal::new(
                99_999_999_999_999 * (1 - 2 * (i % 2)) as i128,
                4,
            )),
        ),
        (
            "hash",
            Value::Fixed((0..16).map(|b| (b * 17 + i) as u8).collect()),
        ),
        ("raw", Value::Bytes(vec![0, 0xff, i as u8, 0x80])),
        ("tags", Value::Array(vec![s("a"), s(""), s("naïve 東京")])),
        ("counts", Value::Map(counts)),
        (
            "mini_series",
            if i % 2 == 0 {
                series("WL-")
            } else {
                Value::Null
            },
        ),
        (
            "players",
            Value::Array(vec![
                player(i, Value::Enum("GOLD".into()), Value::Null),
                player(i + 1, Value::Null, series("LLW")),
            ]),
        ),
        (
            "choice",
            match i % 4 {
                0 => s("text"),
                1 => Value::Long(i64::MIN + i),
                2 => Value::Fixed(vec![7; 16]),
                _ => Value::Null,
            },
        ),
        ("samples", Value::Map(samples)),
        ("day", Value::Date(20_000 + i as i32)),
        ("at_ms", Value::TimeMillis(86_399_999)),
        ("at_us", Value::TimeMicros(86_399_999_999)),
        ("ts_ms", Value::TimestampMillis(1_735_689_600_000 + i)),
        ("ts_us", Value::TimestampMicros(-1_735_689_600_000_000 - i)),
        ("local_ms", Value::LocalTimestampMillis(i)),
        ("local_us", Value::LocalTimestampMicros(i64::MAX - i)),
        (
            "flag",
            if i % 3 == 0 {
                Value::Null
            } else {
                Value::Boolean(i % 3 == 1)
            },
        ),
        ("ratio", Value::Float(0.25)),
    ])
}

#[test]
fn the_fixture_parses_into_every_type() {
    let schema = nested();
    let ty = |n: &str| schema.field(n).unwrap().ty.clone();
    assert_eq!(ty("id"), FieldType::Uuid);
    assert!(matches!(ty("region"), FieldType::Enum(e) if e.default.as_deref() == Some("EUW")));
    assert!(matches!(
        ty("score"),
        FieldType::Decimal {
            precision: 10,
            scale: 2,
            fixed: None
        }
    ));
    assert!(matches!(
        ty("prize"),
        FieldType::Decimal { precision: 18, scale: 4, fixed: Some(f) } if f.size == 8 && f.name == "etl.test.Money"
    ));
    assert!(matches!(ty("hash"), FieldType::Fixed(f) if f.size == 16));
    assert!(schema.field("mini_series").unwrap().nullable);
    let FieldType::Array(players) = ty("players") else {
        panic!("players")
    };
    let FieldType::Record(player) = *players else {
        panic!("player")
    };
    assert_eq!(player.name, "etl.test.Player");
    // `MiniSeries` referenced by name is the record defined earlier.
    let series = &player.field("series").unwrap().ty;
    assert!(
        matches!(series, FieldType::Record(r) if r.name == "etl.test.MiniSeries" && r.fields.len() == 4)
    );
    assert!(matches!(ty("choice"), FieldType::Union(b) if b.len() == 4));
    assert_eq!(ty("local_us"), FieldType::LocalTimestampMicros);
    assert!(!schema.is_flat());
    assert_eq!(schema.first_nested_field().unwrap().name, "id");
}

#[test]
fn flat_schemas_keep_the_fast_path() {
    // The demo schemas before `mini_series` (issue 20): flat.
    let cleaned = Arc::new(load_schema("schemas/history/league_entry.cleaned.v1.avsc").unwrap());
    let scored = Arc::new(load_schema("schemas/history/league_entry.scored.v2.avsc").unwrap());
    assert!(binary::ReadPlan::identity(cleaned.clone()).is_flat());
    assert!(binary::ReadPlan::new(cleaned.clone(), scored)
        .unwrap()
        .is_flat());
    assert!(!binary::ReadPlan::identity(Arc::new(nested())).is_flat());
    assert!(
        !binary::ReadPlan::new(Arc::new(nested()), Arc::new(nested()))
            .unwrap()
            .is_flat()
    );
}

#[test]
fn nested_records_round_trip_in_both_framings() {
    for framing in [Framing::SingleObject, Framing::Confluent { schema_id: 9 }] {
        let codec = Codec::new(nested(), framing);
        for i in 0..12 {
            let r = nested_record(i, false);
            let bytes = codec.encode(&r).unwrap();
            assert_eq!(codec.decode(&bytes).unwrap(), r, "{framing:?} {i}");
        }
    }
}

#[test]
fn nested_datum_is_byte_identical_to_apache_avro_and_it_reads_ours() {
    let schema = nested();
    let reference = apache_avro::Schema::parse_str(NESTED).unwrap();
    for i in 0..12 {
        let r = nested_record(i, true);
        let theirs = apache_avro::to_avro_datum(&reference, to_apache(&schema, &r)).unwrap();
        let mut ours = Vec::new();
        binary::encode_datum(&schema, &r, &mut ours).unwrap();
        assert_eq!(ours, theirs, "datum {i}");
        // And with maps of many entries, apache-avro reads what we wrote.
        let r = nested_record(i, false);
        let mut ours = Vec::new();
        binary::encode_datum(&schema, &r, &mut ours).unwrap();
        let read = apache_avro::from_avro_datum(&reference, &mut ours.as_slice(), None).unwrap();
        assert_eq!(read, to_apache(&schema, &r), "read {i}");
        // We read what apache-avro wrote.
        let r = nested_record(i, true);
        let plan = binary::ReadPlan::identity(Arc::new(schema.clone()));
        assert_eq!(plan.decode(&theirs_of(&reference, &schema, &r)).unwrap(), r);
    }
}

fn theirs_of(reference: &apache_avro::Schema, schema: &RecordSchema, r: &Record) -> Vec<u8> {
    apache_avro::to_avro_datum(reference, to_apache(schema, r)).unwrap()
}

#[test]
fn every_logical_type_round_trips_at_its_edges() {
    let schema = RecordSchema::parse(
        r#"{"type":"record","name":"L","fields":[
        {"name":"d","type":{"type":"int","logicalType":"date"}},
        {"name":"tn","type":{"type":"long","logicalType":"timestamp-nanos"}},
        {"name":"ln","type":{"type":"long","logicalType":"local-timestamp-nanos"}},
        {"name":"big","type":{"type":"bytes","logicalType":"decimal","precision":40,"scale":0}},
        {"name":"neg","type":{"type":"fixed","name":"F3","size":3,"logicalType":"decimal","precision":6,"scale":6}}]}"#,
    )
    .unwrap();
    let reference = apache_avro::Schema::parse_str(&schema.source).unwrap();
    let codec = Codec::new(schema.clone(), Framing::SingleObject);
    // 10^39: past i128's 38 digits, arbitrary precision as bytes decimals are.
    let big = Decimal::from_be_bytes(
        &[
            0x02, 0xf0, 0x50, 0xfe, 0x93, 0x8_9, 0x43, 0xac, 0xc4, 0x5f, 0x65, 0x56, 0x80, 0, 0, 0,
            0,
        ],
        0,
    );
    for (d, t, neg) in [
        (i32::MIN, i64::MIN, Decimal::new(-1, 6)),
        (0, 0, Decimal::new(0, 6)),
        (i32::MAX, i64::MAX, Decimal::new(-999_999, 6)),
    ] {
        let r = rec(vec![
            ("d", Value::Date(d)),
            ("tn", Value::TimestampNanos(t)),
            ("ln", Value::LocalTimestampNanos(t)),
            ("big", Value::Decimal(big.clone())),
            ("neg", Value::Decimal(neg)),
        ]);
        let bytes = codec.encode(&r).unwrap();
        assert_eq!(codec.decode(&bytes).unwrap(), r);
        assert_eq!(&bytes[10..], &theirs_of(&reference, &schema, &r)[..]);
    }
    assert_eq!(big.to_string(), "1000000000000000000000000000000000000000");
    assert_eq!(Decimal::new(-5, 3).to_string(), "-0.005");
    assert_eq!(Decimal::new(123_456, 2).to_string(), "1234.56");
    assert_eq!(
        Decimal::from_be_bytes(&[0xff, 0xff, 0x85], 0).unscaled_bytes(),
        &[0x85]
    );
}

#[test]
fn encode_errors_name_the_nested_field() {
    let codec = Codec::new(nested(), Framing::SingleObject);
    let check = |r: Record, field: &str, what: &str| {
        let e = codec.encode(&r).unwrap_err();
        assert!(!e.is_retriable());
        let m = e.to_string();
        assert!(m.contains(&format!("`{field}`")) && m.contains(what), "{m}");
    };
    let mut r = nested_record(1, false);
    let Some(Value::Array(players)) = r.get("players").cloned() else {
        panic!()
    };
    let mut players = players;
    if let Value::Record(p) = &mut players[1] {
        p.set("name", Value::Null);
    }
    r.set("players", Value::Array(players));
    check(r, "players[1].name", "null in a required field");
    let mut r = nested_record(1, false);
    r.set("region", Value::Enum("MARS".into()));
    check(r, "region", "not a symbol");
    let mut r = nested_record(1, false);
    r.set("hash", Value::Fixed(vec![1, 2]));
    check(r, "hash", "2 bytes");
    let mut r = nested_record(1, false);
    r.set("score", Value::Decimal(Decimal::new(1, 3)));
    check(r, "score", "scale");
    let mut r = nested_record(1, false);
    r.set("score", Value::Decimal(Decimal::new(12_345_678_901, 2)));
    check(r, "score", "precision");
    let mut r = nested_record(1, false);
    r.set("choice", Value::Double(1.0));
    check(r, "choice", "no branch");
    let mut r = nested_record(1, false);
    r.set("counts", Value::Map(vec![("x".into(), s("y"))]));
    check(r, "counts[\"x\"]", "does not fit");
}

#[test]
fn nested_garbage_never_panics_and_names_the_field() {
    let codec = Codec::new(nested(), Framing::SingleObject);
    let good = codec.encode(&nested_record(2, false)).unwrap();
    for cut in 10..good.len() {
        let e = codec.decode(&good[..cut]).unwrap_err();
        assert!(!e.is_retriable());
        assert!(e.to_string().contains("field `"), "cut {cut}: {e}");
    }
    let mut next = xorshift(0x2545_F491_4F6C_DD1D);
    for _ in 0..20_000 {
        let mut bytes = good.clone();
        flip_some(&mut bytes, &mut next);
        if let Err(e) = codec.decode(&bytes) {
            assert!(!e.is_retriable());
        }
    }
}

#[test]
fn canonical_form_and_fingerprint_of_a_nested_schema() {
    use apache_avro::rabin::Rabin;
    // The specification's rules by hand: full names, logical types and their attributes
    // stripped, a named type written once then by name, attribute order name/type/fields.
    let text = r#"{"type":"record","name":"R","namespace":"n","doc":"x","fields":[
        {"name":"a","type":{"type":"array","items":{"type":"long","logicalType":"timestamp-micros"}}},
        {"name":"d","type":{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}},
        {"name":"f","type":{"type":"fixed","name":"F","size":2,"aliases":["G"]}},
        {"name":"g","type":["null","F"],"default":null},
        {"name":"e","type":{"type":"enum","name":"E","namespace":"m","symbols":["A","B"],"default":"A"}},
        {"name":"u","type":{"type":"string","logicalType":"uuid"}},
        {"name":"m","type":{"type":"map","values":{"type":"record","name":"In","fields":[{"name":"x","type":"int","order":"descending"}]}}}]}"#;
    let ours = RecordSchema::parse(text).unwrap();
    assert_eq!(
        ours.canonical_form(),
        r#"{"name":"n.R","type":"record","fields":[{"name":"a","type":{"type":"array","items":"long"}},{"name":"d","type":"bytes"},{"name":"f","type":{"name":"n.F","type":"fixed","size":2}},{"name":"g","type":["null","n.F"]},{"name":"e","type":{"name":"m.E","type":"enum","symbols":["A","B"]}},{"name":"u","type":"string"},{"name":"m","type":{"type":"map","values":{"name":"n.In","type":"record","fields":[{"name":"x","type":"int"}]}}}]}"#
    );
    // apache-avro agrees once its logical-type attributes are gone (AVRO-4004), on this
    // schema and on the fixture.
    for text in [text, NESTED] {
        let ours = RecordSchema::parse(text).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(text).unwrap();
        strip_logical(&mut json);
        let reference = apache_avro::Schema::parse(&json).unwrap();
        assert_eq!(ours.canonical_form(), reference.canonical_form());
        assert_eq!(
            ours.fingerprint().to_le_bytes().to_vec(),
            reference.fingerprint::<Rabin>().bytes
        );
    }
}

fn strip_logical(j: &mut serde_json::Value) {
    match j {
        serde_json::Value::Object(o) => {
            for k in ["logicalType", "precision", "scale"] {
                o.remove(k);
            }
            o.values_mut().for_each(strip_logical);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_logical),
        _ => {}
    }
}

#[test]
fn unsupported_schemas_are_refused_naming_the_field() {
    let one = |t: &str| {
        RecordSchema::parse(&format!(
            r#"{{"type":"record","name":"R","fields":[{{"name":"f","type":{t}}}]}}"#
        ))
        .unwrap_err()
        .to_string()
    };
    let e = one(r#"{"type":"fixed","name":"U","size":16,"logicalType":"uuid"}"#);
    assert!(e.contains("field `f`") && e.contains("uuid"), "{e}");
    let e = one(r#"{"type":"fixed","name":"D","size":12,"logicalType":"duration"}"#);
    assert!(e.contains("field `f`") && e.contains("duration"), "{e}");
    let e =
        one(r#"{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"]}]}"#);
    assert!(e.contains("recursive") && e.contains("f.next"), "{e}");
}

#[test]
fn corrupt_block_counts_are_poison_not_a_spin() {
    let schema = RecordSchema::parse(
        r#"{"type":"record","name":"A","fields":[{"name":"n","type":{"type":"array","items":"null"}}]}"#,
    )
    .unwrap();
    let codec = Codec::new(schema, Framing::Confluent { schema_id: 1 });
    let framed = |datum: &[u8]| [&[0u8, 0, 0, 0, 1][..], datum].concat();
    // Ten nulls: two bytes, more items than bytes, and fine.
    let ten = codec.decode(&framed(&[20, 0])).unwrap();
    assert_eq!(ten.get("n"), Some(&Value::Array(vec![Value::Null; 10])));
    // 2^62 nulls: refused at once.
    let huge = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40, 0];
    let e = codec.decode(&framed(&huge)).unwrap_err().to_string();
    assert!(e.contains("field `n`") && e.contains("block count"), "{e}");
}

#[test]
fn a_decimal_fixed_referenced_by_name_is_the_decimal() {
    let schema = RecordSchema::parse(
        r#"{"type":"record","name":"M","fields":[
        {"name":"a","type":{"type":"fixed","name":"Money","size":4,"logicalType":"decimal","precision":6,"scale":2}},
        {"name":"b","type":"Money"}]}"#,
    )
    .unwrap();
    assert_eq!(schema.fields[0].ty, schema.fields[1].ty);
    // apache-avro 0.20 parses this but cannot write it ("Unresolved schema reference:
    // Money"): the bytes are checked by hand, sign-extended to the fixed's 4 bytes.
    let r = rec(vec![
        ("a", Value::Decimal(Decimal::new(-123_456, 2))),
        ("b", Value::Decimal(Decimal::new(7, 2))),
    ]);
    let codec = Codec::new(schema.clone(), Framing::SingleObject);
    let bytes = codec.encode(&r).unwrap();
    assert_eq!(codec.decode(&bytes).unwrap(), r);
    assert_eq!(&bytes[10..], &[0xff, 0xfe, 0x1d, 0xc0, 0, 0, 0, 7]);
}

#[test]
fn apache_value_helper_picks_the_union_branch_by_kind() {
    // The test helper's own branch choice, so a mistake there cannot hide one in the codec.
    let ty = FieldType::Union(vec![FieldType::Null, FieldType::Long]);
    assert_eq!(
        apache_value(&ty, &Value::Long(1)),
        AValue::Union(1, Box::new(AValue::Long(1)))
    );
}
