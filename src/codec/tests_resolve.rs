//! Schema resolution of the full type system (issue 20) by the Avro 1.12 rules: promotions,
//! added, removed and aliased fields, enum defaults, union branch matching both ways. Each
//! case is also resolved by apache-avro where it implements the rule (it has no aliases).
use super::tests::to_apache;
use super::tests_nested::{nested, nested_record, rec, s};
use super::*;
use crate::record::{Decimal, Value};

/// Writes `value` (field `f`) with a writer schema of field type `w` and reads it with
/// reader field type `r`; also asks apache-avro to resolve the same bytes when `apache`.
fn resolve_one(w: &str, r: &str, value: Value, apache: bool) -> Result<Value, String> {
    let schema = |t: &str| {
        RecordSchema::parse(&format!(
            r#"{{"type":"record","name":"R","fields":[{{"name":"f","type":{t}}}]}}"#
        ))
        .unwrap()
    };
    let (ws, rs) = (schema(w), schema(r));
    let writer = Codec::new(ws.clone(), Framing::SingleObject);
    let reader = Codec::new(rs.clone(), Framing::SingleObject);
    reader
        .add_writer_schema(ws.clone())
        .map_err(|e| e.to_string())?;
    let bytes = writer.encode(&rec(vec![("f", value)])).unwrap();
    let got = reader.decode(&bytes).map_err(|e| e.to_string())?;
    let got = got.get("f").cloned().unwrap();
    if apache {
        let wa = apache_avro::Schema::parse_str(&ws.source).unwrap();
        let ra = apache_avro::Schema::parse_str(&rs.source).unwrap();
        let theirs = apache_avro::from_avro_datum(&wa, &mut &bytes[10..], Some(&ra)).unwrap();
        assert_eq!(
            theirs,
            to_apache(&rs, &rec(vec![("f", got.clone())])),
            "apache-avro resolves {w} → {r} the same way"
        );
    }
    Ok(got)
}

#[test]
fn promotions() {
    let cases: Vec<(&str, &str, Value, Value)> = vec![
        (r#""int""#, r#""long""#, Value::Int(-7), Value::Long(-7)),
        (
            r#""int""#,
            r#""float""#,
            Value::Int(1 << 24),
            Value::Float(16_777_216.0),
        ),
        (
            r#""int""#,
            r#""double""#,
            Value::Int(i32::MIN),
            Value::Double(i32::MIN as f64),
        ),
        (r#""long""#, r#""float""#, Value::Long(3), Value::Float(3.0)),
        (
            r#""long""#,
            r#""double""#,
            Value::Long(-(1 << 52)),
            Value::Double(-(2f64.powi(52))),
        ),
        (
            r#""float""#,
            r#""double""#,
            Value::Float(0.1),
            Value::Double(0.1f32 as f64),
        ),
        (
            r#""string""#,
            r#""bytes""#,
            s("héllo"),
            Value::Bytes("héllo".as_bytes().to_vec()),
        ),
        (
            r#""bytes""#,
            r#""string""#,
            Value::Bytes(b"ok".to_vec()),
            s("ok"),
        ),
        (
            r#"{"type":"array","items":"int"}"#,
            r#"{"type":"array","items":"double"}"#,
            Value::Array(vec![Value::Int(1), Value::Int(-2)]),
            Value::Array(vec![Value::Double(1.0), Value::Double(-2.0)]),
        ),
        (
            r#"{"type":"map","values":"float"}"#,
            r#"{"type":"map","values":"double"}"#,
            Value::Map(vec![("k".into(), Value::Float(1.5))]),
            Value::Map(vec![("k".into(), Value::Double(1.5))]),
        ),
    ];
    for (w, r, v, expected) in cases {
        assert_eq!(resolve_one(w, r, v, true).unwrap(), expected, "{w} → {r}");
    }
    for (w, r) in [
        (r#""long""#, r#""int""#),
        (r#""double""#, r#""float""#),
        (r#""string""#, r#""int""#),
        (r#""boolean""#, r#""int""#),
    ] {
        let e = resolve_one(w, r, Value::Null, false).unwrap_err();
        assert!(
            e.contains("field `f`") && e.contains("cannot be read as"),
            "{w} → {r}: {e}"
        );
    }
}

const V1: &str = r#"{"type":"record","name":"Entry","namespace":"etl.v1","fields":[
  {"name":"id","type":"string"},
  {"name":"old_name","type":"string"},
  {"name":"gone","type":{"type":"array","items":{"type":"record","name":"Gone","fields":[{"name":"x","type":"int"}]}}},
  {"name":"tier","type":{"type":"enum","name":"Tier","symbols":["IRON","GOLD","MASTER"]}},
  {"name":"stats","type":{"type":"record","name":"Stats","fields":[{"name":"wins","type":"int"}]}}
]}"#;

const V2: &str = r#"{"type":"record","name":"Entry2","namespace":"etl.v2","aliases":["etl.v1.Entry"],"fields":[
  {"name":"id","type":"string"},
  {"name":"new_name","aliases":["old_name"],"type":"string"},
  {"name":"tier","type":{"type":"enum","name":"Tier","symbols":["IRON","GOLD","UNRANKED"],"default":"UNRANKED"}},
  {"name":"stats","type":{"type":"record","name":"Stats","fields":[
    {"name":"wins","type":"long"},
    {"name":"streak","type":{"type":"array","items":"int"},"default":[1,2]},
    {"name":"series","type":["null",{"type":"record","name":"S","fields":[{"name":"p","type":"string"}]}],"default":null}]}},
  {"name":"added","type":{"type":"map","values":"string"},"default":{"k":"v"}}
]}"#;

#[test]
fn fields_added_removed_aliased_and_enum_defaults() {
    let v1 = RecordSchema::parse(V1).unwrap();
    let v2 = RecordSchema::parse(V2).unwrap();
    let writer = Codec::new(v1.clone(), Framing::SingleObject);
    let reader = Codec::new(v2.clone(), Framing::SingleObject);
    reader.add_writer_schema(v1).unwrap();
    let stats = |wins| Value::Record(rec(vec![("wins", Value::Int(wins))]));
    let old = |tier: &str| {
        rec(vec![
            ("id", s("a")),
            ("old_name", s("Faker")),
            (
                "gone",
                Value::Array(vec![Value::Record(rec(vec![("x", Value::Int(1))]))]),
            ),
            ("tier", Value::Enum(tier.into())),
            ("stats", stats(12)),
        ])
    };
    let read = |tier: &str| reader.decode(&writer.encode(&old(tier)).unwrap()).unwrap();
    let expected = |tier: &str| {
        rec(vec![
            ("id", s("a")),
            ("new_name", s("Faker")),
            ("tier", Value::Enum(tier.into())),
            (
                "stats",
                Value::Record(rec(vec![
                    ("wins", Value::Long(12)),
                    ("streak", Value::Array(vec![Value::Int(1), Value::Int(2)])),
                    ("series", Value::Null),
                ])),
            ),
            ("added", Value::Map(vec![("k".into(), s("v"))])),
        ])
    };
    assert_eq!(read("GOLD"), expected("GOLD"));
    // MASTER is not a v2 symbol: the reader enum's default.
    assert_eq!(read("MASTER"), expected("UNRANKED"));
}

#[test]
fn resolution_refusals_name_the_field() {
    let v1 = RecordSchema::parse(V1).unwrap();
    let no_default = RecordSchema::parse(&V2.replace(r#","default":"UNRANKED""#, "")).unwrap();
    let e = check_can_read(&v1, &no_default).unwrap_err();
    assert!(
        e.contains("`tier`") && e.contains("MASTER") && e.contains("no default"),
        "{e}"
    );
    let required = RecordSchema::parse(&V2.replace(r#","default":[1,2]"#, "")).unwrap();
    let e = check_can_read(&v1, &required).unwrap_err();
    assert!(
        e.contains("`stats.streak`") && e.contains("no default"),
        "{e}"
    );
    let renamed = RecordSchema::parse(&V2.replace(r#","aliases":["etl.v1.Entry"]"#, "")).unwrap();
    let e = check_can_read(&v1, &renamed).unwrap_err();
    assert!(e.contains("record names differ"), "{e}");
    let e = resolve_one(
        r#"{"type":"bytes","logicalType":"decimal","precision":5,"scale":2}"#,
        r#"{"type":"bytes","logicalType":"decimal","precision":5,"scale":3}"#,
        Value::Decimal(Decimal::new(1, 2)),
        false,
    )
    .unwrap_err();
    assert!(
        e.contains("field `f`") && e.contains("precision and scale"),
        "{e}"
    );
    let e = resolve_one(
        r#"{"type":"fixed","name":"A","size":4}"#,
        r#"{"type":"fixed","name":"A","size":5}"#,
        Value::Fixed(vec![0; 4]),
        false,
    )
    .unwrap_err();
    assert!(e.contains("field `f`"), "{e}");
}

#[test]
fn union_branch_matching() {
    // Writer union into reader union: each writer branch to the reader's branch of its own
    // type, else the first it promotes into (int → long here).
    let w = r#"["null","int","string"]"#;
    let r = r#"["null","string","long"]"#;
    assert_eq!(
        resolve_one(w, r, Value::Int(5), true).unwrap(),
        Value::Long(5)
    );
    assert_eq!(resolve_one(w, r, s("x"), true).unwrap(), s("x"));
    assert_eq!(resolve_one(w, r, Value::Null, true).unwrap(), Value::Null);
    // The exact branch wins over an earlier promotable one.
    assert_eq!(
        resolve_one(r#""long""#, r#"["double","long"]"#, Value::Long(3), true).unwrap(),
        Value::Long(3)
    );
    // A reader union from a writer non-union.
    assert_eq!(
        resolve_one(
            r#""int""#,
            r#"["null","string","long"]"#,
            Value::Int(-1),
            true
        )
        .unwrap(),
        Value::Long(-1)
    );
    let rec_w = r#"{"type":"record","name":"P","fields":[{"name":"a","type":"int"}]}"#;
    let rec_r = r#"["null",{"type":"record","name":"Q","aliases":["P"],"fields":[{"name":"a","type":"long"}]}]"#;
    assert_eq!(
        resolve_one(
            rec_w,
            rec_r,
            Value::Record(rec(vec![("a", Value::Int(2))])),
            false
        )
        .unwrap(),
        Value::Record(rec(vec![("a", Value::Long(2))]))
    );
    // A writer union into a reader non-union: every branch must be readable.
    assert_eq!(
        resolve_one(r#"["int","long"]"#, r#""double""#, Value::Long(9), true).unwrap(),
        Value::Double(9.0)
    );
    let e = resolve_one(r#"["null","int"]"#, r#""int""#, Value::Int(1), false).unwrap_err();
    assert!(e.contains("field `f`") && e.contains("nullable"), "{e}");
    let e = resolve_one(
        r#""boolean""#,
        r#"["null","string"]"#,
        Value::Boolean(true),
        false,
    )
    .unwrap_err();
    assert!(e.contains("field `f`") && e.contains("no branch"), "{e}");
}

#[test]
fn nested_writer_resolves_into_flat_reader_and_back() {
    // A flat reader of a nested writer skips the nested fields.
    let nested_writer = nested();
    let flat = RecordSchema::parse(
        r#"{"type":"record","name":"MatchEntry","namespace":"etl.test","fields":[
        {"name":"ratio","type":"double"},{"name":"ts_ms","type":"long"},
        {"name":"extra","type":["null","string"],"default":null}]}"#,
    )
    .unwrap();
    let reader = Codec::new(flat, Framing::SingleObject);
    reader.add_writer_schema(nested_writer.clone()).unwrap();
    let r = nested_record(4, false);
    let bytes = Codec::new(nested_writer, Framing::SingleObject)
        .encode(&r)
        .unwrap();
    assert_eq!(
        reader.decode(&bytes).unwrap(),
        rec(vec![
            ("ratio", Value::Double(0.25)),
            ("ts_ms", Value::Long(1_735_689_600_004)),
            ("extra", Value::Null),
        ])
    );
}
