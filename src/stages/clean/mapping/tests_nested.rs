//! Nested JSON into nested schema types: paths, records, arrays, maps, enums, unions,
//! decimals, uuids, bytes and the logical time types, and the paths errors name.
use super::*;
use crate::record::{Decimal, RecordSchema};
use crate::stages::clean::config::{CleanConfig, FieldMapping};

/// A schema with one field of every kind the mapping reads from nested JSON.
const SCHEMA: &str = r#"{"type": "record", "name": "Match", "namespace": "t", "fields": [
  {"name": "id", "type": "string"},
  {"name": "progress", "type": ["null", "string"], "default": null},
  {"name": "mini_series", "type": ["null", {"type": "record", "name": "MiniSeries", "fields": [
    {"name": "target", "type": "int"},
    {"name": "wins", "type": "int"},
    {"name": "losses", "type": "int", "default": 0},
    {"name": "progress", "type": ["null", "string"], "default": null}]}], "default": null},
  {"name": "players", "type": ["null", {"type": "array", "items": {"type": "record", "name": "Player",
    "fields": [{"name": "name", "type": "string"},
               {"name": "champion_id", "type": "long"},
               {"name": "role", "type": {"type": "enum", "name": "Role",
                 "symbols": ["TOP", "JUNGLE", "MID", "BOT", "SUPPORT"]}}]}}], "default": null},
  {"name": "tags", "type": ["null", {"type": "array", "items": "string"}], "default": null},
  {"name": "scores", "type": ["null", {"type": "map", "values": "double"}], "default": null},
  {"name": "price", "type": ["null", {"type": "bytes", "logicalType": "decimal",
    "precision": 6, "scale": 2}], "default": null},
  {"name": "big", "type": ["null", {"type": "fixed", "name": "Big", "size": 16,
    "logicalType": "decimal", "precision": 30, "scale": 10}], "default": null},
  {"name": "match_id", "type": ["null", {"type": "string", "logicalType": "uuid"}], "default": null},
  {"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}], "default": null},
  {"name": "clock", "type": ["null", {"type": "int", "logicalType": "time-millis"}], "default": null},
  {"name": "clock_us", "type": ["null", {"type": "long", "logicalType": "time-micros"}], "default": null},
  {"name": "at_us", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}], "default": null},
  {"name": "at_ns", "type": ["null", {"type": "long", "logicalType": "timestamp-nanos"}], "default": null},
  {"name": "local_ms", "type": ["null", {"type": "long", "logicalType": "local-timestamp-millis"}], "default": null},
  {"name": "blob", "type": ["null", "bytes"], "default": null},
  {"name": "either", "type": ["null", "int", "string"], "default": null}
]}"#;

fn schema() -> RecordSchema {
    RecordSchema::parse(SCHEMA).unwrap()
}

fn config(coerce: bool) -> CleanConfig {
    let mut c = CleanConfig {
        coerce,
        ..CleanConfig::default()
    };
    c.fields.insert(
        "progress".into(),
        FieldMapping {
            from: Some("miniSeries.progress".into()),
            ..Default::default()
        },
    );
    c
}

fn lineage() -> Lineage<'static> {
    Lineage {
        source: "t",
        trace_id: None,
        topic: "t.raw",
        partition: 0,
        offset: 0,
        fetched_at_ms: None,
    }
}

fn map_with(coerce: bool, raw: &str) -> Result<Record, MappingError> {
    let m = Mapper::new(&schema(), &config(coerce)).unwrap();
    m.map(raw.as_bytes(), &lineage()).map(|m| m.record)
}

fn map(raw: &str) -> Result<Record, MappingError> {
    map_with(true, raw)
}

/// The record of `{"id": "m1", <extra>}`.
fn one(extra: &str) -> Record {
    map(&format!(r#"{{"id": "m1", {extra}}}"#)).unwrap()
}

fn fail(extra: &str) -> MappingError {
    map(&format!(r#"{{"id": "m1", {extra}}}"#)).unwrap_err()
}

fn rec(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(Record {
        fields: fields.into_iter().map(|(n, v)| (n.into(), v)).collect(),
    })
}

#[test]
fn a_nested_schema_is_accepted_and_absent_nested_fields_take_their_defaults() {
    let r = map(r#"{"id": "m1"}"#).unwrap();
    assert_eq!(r.get("mini_series"), Some(&Value::Null));
    assert_eq!(r.get("players"), Some(&Value::Null));
    assert_eq!(r.get("tags"), Some(&Value::Null));
    assert_eq!(r.get("either"), Some(&Value::Null));
    assert_eq!(r.get("progress"), Some(&Value::Null));
}

#[test]
fn a_sub_object_becomes_a_record_its_fields_by_name_with_coercions_and_defaults() {
    let r = one(r#""miniSeries": {"target": 3, "wins": "1", "progress": "WNN", "extra": 1}"#);
    assert_eq!(
        r.get("mini_series"),
        Some(&rec(vec![
            ("target", Value::Int(3)),
            ("wins", Value::Int(1)),
            ("losses", Value::Int(0)),
            ("progress", Value::String("WNN".into())),
        ]))
    );
    // A dotted path reads one leaf of the same object.
    assert_eq!(r.get("progress"), Some(&Value::String("WNN".into())));
    // And the codec writes and reads it back.
    let codec = crate::codec::Codec::new(schema(), crate::codec::Framing::SingleObject);
    assert_eq!(codec.decode(&codec.encode(&r).unwrap()).unwrap(), r);
}

#[test]
fn arrays_of_objects_and_of_scalars_and_maps() {
    let r = one(
        r#""players": [{"name": "Faker", "championId": 7, "role": "MID"},
                       {"name": "Keria", "champion_id": "412", "role": "SUPPORT"}],
           "tags": ["a", 1], "scores": {"kda": 4.5, "cs": 9}"#,
    );
    assert_eq!(
        r.get("players"),
        Some(&Value::Array(vec![
            rec(vec![
                ("name", Value::String("Faker".into())),
                ("champion_id", Value::Long(7)),
                ("role", Value::Enum("MID".into())),
            ]),
            rec(vec![
                ("name", Value::String("Keria".into())),
                ("champion_id", Value::Long(412)),
                ("role", Value::Enum("SUPPORT".into())),
            ]),
        ]))
    );
    assert_eq!(
        r.get("tags"),
        Some(&Value::Array(vec![
            Value::String("a".into()),
            Value::String("1".into())
        ]))
    );
    assert_eq!(
        r.get("scores"),
        Some(&Value::Map(vec![
            ("kda".into(), Value::Double(4.5)),
            ("cs".into(), Value::Double(9.0)),
        ])),
        "entries in the raw order"
    );
}

#[test]
fn type_errors_name_the_full_path_and_the_field() {
    let e = fail(r#""miniSeries": {"target": 3, "wins": "x"}"#);
    assert_eq!(e.kind, ErrorKind::Type);
    assert_eq!(e.field.as_deref(), Some("mini_series"));
    assert_eq!(
        e.message,
        "`mini_series`: at `miniSeries.wins`: \"x\" is not a number (the field is int)"
    );
    let e = fail(
        r#""players": [{"name": "a", "championId": 1, "role": "MID"},
                       {"name": "b", "championId": 2, "role": "MID"},
                       {"name": {"first": "c"}, "championId": 3, "role": "MID"}]"#,
    );
    assert_eq!(e.field.as_deref(), Some("players"));
    assert_eq!(
        e.message,
        "`players`: at `players[2].name`: {\"first\":\"c\"} is a JSON object, not a string"
    );
    let e = map_with(
        false,
        r#"{"id": "m1", "players": [{"name": 5, "championId": 3, "role": "MID"}]}"#,
    )
    .unwrap_err();
    assert!(
        e.message.contains("`players[0].name`") && e.message.contains("coerce is off"),
        "{e}"
    );
    // The field's own value: no path beyond the field.
    let e = fail(r#""miniSeries": "WNN""#);
    assert_eq!(
        e.message,
        "`mini_series`: \"WNN\" is a JSON string, not a record"
    );
    let e = fail(r#""tags": ["a", {"b": 1}]"#);
    assert!(
        e.message
            .contains("at `tags[1]`: {\"b\":1} is a JSON object"),
        "{e}"
    );
    let e = fail(r#""scores": {"kda": "high"}"#);
    assert!(
        e.message
            .contains("at `scores.kda`: \"high\" is not a number"),
        "{e}"
    );
}

#[test]
fn missing_or_null_nested_fields_follow_the_schema() {
    // Not nullable, no default: the path and missing_required.
    let e = fail(r#""miniSeries": {"target": 3, "wins": null}"#);
    assert_eq!(e.kind, ErrorKind::MissingRequired);
    assert!(e.message.contains("at `miniSeries.wins`: required"), "{e}");
    let e = fail(r#""players": [{"name": "a", "role": "MID"}]"#);
    assert_eq!(e.kind, ErrorKind::MissingRequired);
    assert!(e.message.contains("`players[0].champion_id`"), "{e}");
    // Default and nullable.
    let r = one(r#""miniSeries": {"target": 3, "wins": 0, "losses": null, "progress": null}"#);
    assert_eq!(
        r.get("mini_series"),
        Some(&rec(vec![
            ("target", Value::Int(3)),
            ("wins", Value::Int(0)),
            ("losses", Value::Int(0)),
            ("progress", Value::Null),
        ]))
    );
    // A null array item of a non-null item type is a type error.
    assert_eq!(fail(r#""tags": ["a", null]"#).kind, ErrorKind::Type);
}

#[test]
fn enums_take_only_their_symbols() {
    let e = fail(r#""players": [{"name": "a", "championId": 1, "role": "ADC"}]"#);
    assert_eq!(e.kind, ErrorKind::Type);
    assert!(
        e.message.contains("at `players[0].role`: \"ADC\" is not a symbol of enum t.Role (TOP, JUNGLE, MID, BOT, SUPPORT)"),
        "{e}"
    );
    let e = fail(r#""players": [{"name": "a", "championId": 1, "role": 2}]"#);
    assert!(e.message.contains("not an enum symbol"), "{e}");
}

#[test]
fn decimals_are_exact_from_numbers_and_strings() {
    let price = |raw: &str| one(&format!(r#""price": {raw}"#)).get("price").cloned();
    let d = |u: i128| Some(Value::Decimal(Decimal::new(u, 2)));
    assert_eq!(price("12.5"), d(1250));
    assert_eq!(price("\"-0.07\""), d(-7));
    assert_eq!(price("3"), d(300));
    assert_eq!(price("1.2e2"), d(12000));
    assert_eq!(price("\"1.230000\""), d(123));
    // 0.29 is 0.28999999999999998002 as an f64: read from the text, not the float.
    assert_eq!(price("0.29"), d(29));
    // More places than the scale, more digits than the precision, not a number.
    let e = fail(r#""price": 1.005"#);
    assert_eq!(e.kind, ErrorKind::OutOfRange);
    assert!(
        e.message
            .contains("more decimal places than the scale 2 of decimal(6,2)"),
        "{e}"
    );
    let e = fail(r#""price": "10000.00""#);
    assert_eq!(e.kind, ErrorKind::OutOfRange);
    assert!(e.message.contains("more than the precision"), "{e}");
    let e = fail(r#""price": "12,5""#);
    assert_eq!(e.kind, ErrorKind::Type);
    assert!(e.message.contains("is not a decimal number"), "{e}");
    assert_eq!(fail(r#""price": true"#).kind, ErrorKind::Type);
    // A fixed decimal with 20 digits, beyond f64's 17.
    let big = one(r#""big": 12345678901234567890.1234567891"#);
    assert_eq!(
        big.get("big"),
        Some(&Value::Decimal(Decimal::new(
            123_456_789_012_345_678_901_234_567_891,
            10
        )))
    );
    // Inside an array, the number text is found by its path too.
    let codec = crate::codec::Codec::new(schema(), crate::codec::Framing::SingleObject);
    assert_eq!(codec.decode(&codec.encode(&big).unwrap()).unwrap(), big);
}

#[test]
fn decimal_text_parsing() {
    use super::nested::parse_decimal;
    assert_eq!(parse_decimal("0", 2), Ok(0));
    assert_eq!(parse_decimal("-1.50", 2), Ok(-150));
    assert_eq!(parse_decimal("+.5", 1), Ok(5));
    assert_eq!(parse_decimal("5.", 0), Ok(5));
    assert_eq!(parse_decimal("1E-2", 2), Ok(1));
    assert_eq!(parse_decimal("000123.4500", 2), Ok(12345));
    assert!(parse_decimal("1e-3", 2).is_err());
    assert!(parse_decimal("1e40", 0).is_err());
    for bad in ["", ".", "-", "1.2.3", "1e", "0x10", "NaN", "1 2"] {
        assert!(parse_decimal(bad, 2).is_err(), "{bad}");
    }
}

#[test]
fn uuids_are_validated() {
    let r = one(r#""matchId": "67e55044-10b1-426f-9247-bb680e5fe0c8""#);
    assert_eq!(
        r.get("match_id"),
        Some(&Value::Uuid(
            uuid::Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap()
        ))
    );
    let e = fail(r#""matchId": "67e55044-10b1-426f""#);
    assert_eq!(e.kind, ErrorKind::Type);
    assert!(e.message.contains("is not a UUID"), "{e}");
    assert_eq!(fail(r#""matchId": 7"#).kind, ErrorKind::Type);
}

#[test]
fn logical_time_types_from_text_or_whole_numbers() {
    let r = one(
        r#""day": "1970-01-11", "clock": "01:00:00.250", "clockUs": "00:00:01.000002",
           "atUs": "1970-01-01T00:00:01.5+00:00", "atNs": 7, "localMs": "1970-01-01T00:00:02""#,
    );
    assert_eq!(r.get("day"), Some(&Value::Date(10)));
    assert_eq!(r.get("clock"), Some(&Value::TimeMillis(3_600_250)));
    assert_eq!(r.get("clock_us"), Some(&Value::TimeMicros(1_000_002)));
    assert_eq!(r.get("at_us"), Some(&Value::TimestampMicros(1_500_000)));
    assert_eq!(r.get("at_ns"), Some(&Value::TimestampNanos(7)));
    assert_eq!(r.get("local_ms"), Some(&Value::LocalTimestampMillis(2_000)));
    assert_eq!(one(r#""day": -1"#).get("day"), Some(&Value::Date(-1)));
    assert_eq!(one(r#""day": "3""#).get("day"), Some(&Value::Date(3)));
    let e = fail(r#""day": "11/01/1970""#);
    assert_eq!(e.kind, ErrorKind::Type);
    assert!(
        e.message
            .contains("is not a date (YYYY-MM-DD) or a whole number"),
        "{e}"
    );
    let e = fail(r#""clock": 86400000"#);
    assert_eq!(e.kind, ErrorKind::OutOfRange);
    assert_eq!(fail(r#""atUs": 1.5"#).kind, ErrorKind::Type);
    // Without coerce a numeric string is not a time.
    let e = map_with(false, r#"{"id": "m1", "day": "3"}"#).unwrap_err();
    assert!(e.message.contains("is not a date (YYYY-MM-DD)"), "{e}");
}

#[test]
fn bytes_and_general_unions() {
    let r = one(r#""blob": "a\u00ff", "either": 5"#);
    assert_eq!(r.get("blob"), Some(&Value::Bytes(vec![b'a', 0xff])));
    assert_eq!(r.get("either"), Some(&Value::Int(5)));
    assert_eq!(
        one(r#""blob": [1, 2]"#).get("blob"),
        Some(&Value::Bytes(vec![1, 2]))
    );
    assert_eq!(
        one(r#""either": "5""#).get("either"),
        Some(&Value::String("5".into())),
        "the branch taking the value as it is wins over a coercion"
    );
    assert_eq!(fail(r#""blob": "\u0100""#).kind, ErrorKind::Type);
    let e = fail(r#""either": [1]"#);
    assert!(
        e.message
            .contains("matches no branch of the union [null, int, string]"),
        "{e}"
    );
}
