use super::*;
use crate::config::Config;
use crate::record::RecordSchema;
use crate::stages::clean::config::{CleanConfig, Derive, FieldMapping, Scalar};

const SCHEMA: &str = "schemas/league_entry.cleaned.avsc";

fn schema() -> RecordSchema {
    crate::codec::load_schema(SCHEMA).unwrap()
}

/// The `[clean]` section of `config/demo.toml`.
fn demo() -> CleanConfig {
    let text = std::fs::read_to_string("config/demo.toml").unwrap();
    let cfg = Config::from_toml_with_env(&text, "demo.toml", &[]).unwrap();
    cfg.clean.unwrap()
}

fn demo_mapper() -> Mapper {
    Mapper::new(&schema(), &demo()).unwrap()
}

fn lineage() -> Lineage<'static> {
    Lineage {
        source: "league-api",
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        topic: "etl.raw",
        partition: 2,
        offset: 41,
        fetched_at_ms: Some(1_764_000_000_123),
    }
}

const GOOD: &str = r#"{"summonerId":"abc","summonerName":"Faker","queueType":"RANKED_SOLO_5x5","tier":"DIAMOND","rank":"I","leaguePoints":75,"wins":120,"losses":100,"veteran":false,"inactive":false,"freshBlood":true,"hotStreak":false}"#;

fn with(field: &str, value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
    let o = v.as_object_mut().unwrap();
    if value == "<absent>" {
        o.remove(field);
    } else {
        o.insert(field.into(), serde_json::from_str(value).unwrap());
    }
    v.to_string()
}

fn map(raw: &str) -> Result<Mapped, MappingError> {
    demo_mapper().map(raw.as_bytes(), &lineage())
}

fn err(raw: &str) -> MappingError {
    map(raw).unwrap_err()
}

fn cfg_err(mutate: impl FnOnce(&mut CleanConfig)) -> String {
    let mut c = demo();
    mutate(&mut c);
    Mapper::new(&schema(), &c).unwrap_err().to_string()
}

fn entry<'a>(c: &'a mut CleanConfig, name: &str) -> &'a mut FieldMapping {
    c.fields.entry(name.into()).or_default()
}

#[test]
fn good_record_maps_to_every_field_in_schema_order() {
    let m = map(GOOD).unwrap();
    assert_eq!(m.key.as_deref(), Some("abc"));
    let expected: Vec<(&str, Value)> = vec![
        ("summoner_id", Value::String("abc".into())),
        ("summoner_name", Value::String("Faker".into())),
        ("queue_type", Value::String("RANKED_SOLO_5x5".into())),
        ("tier", Value::String("DIAMOND".into())),
        ("rank", Value::String("I".into())),
        ("league_points", Value::Int(75)),
        ("wins", Value::Int(120)),
        ("losses", Value::Int(100)),
        ("veteran", Value::Boolean(false)),
        ("inactive", Value::Boolean(false)),
        ("fresh_blood", Value::Boolean(true)),
        ("hot_streak", Value::Boolean(false)),
        ("mini_series", Value::Null),
        ("games", Value::Int(220)),
        ("win_rate", Value::Double(120.0 / 220.0)),
        ("source", Value::String("league-api".into())),
        (
            "trace_id",
            Value::String("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        ),
        ("source_topic", Value::String("etl.raw".into())),
        ("source_partition", Value::Int(2)),
        ("source_offset", Value::Long(41)),
        ("fetched_at", Value::TimestampMillis(1_764_000_000_123)),
    ];
    let got: Vec<(&str, Value)> = m
        .record
        .fields
        .iter()
        .map(|(n, v)| (&**n, v.clone()))
        .collect();
    assert_eq!(got, expected);
    // And the codec accepts it.
    let codec = crate::codec::Codec::new(schema(), crate::codec::Framing::SingleObject);
    assert_eq!(
        codec.decode(&codec.encode(&m.record).unwrap()).unwrap(),
        m.record
    );
}

#[test]
fn numeric_strings_and_integral_floats_are_coerced() {
    let m = map(&with("wins", r#""12""#)).unwrap();
    assert_eq!(m.record.get("wins"), Some(&Value::Int(12)));
    assert_eq!(m.record.get("games"), Some(&Value::Int(112)));
    let m = map(&with("wins", r#"" 12 ""#)).unwrap();
    assert_eq!(m.record.get("wins"), Some(&Value::Int(12)));
    let m = map(&with("wins", "12.0")).unwrap();
    assert_eq!(m.record.get("wins"), Some(&Value::Int(12)));
    let m = map(&with("veteran", r#""TRUE""#)).unwrap();
    assert_eq!(m.record.get("veteran"), Some(&Value::Boolean(true)));
    let m = map(&with("veteran", "0")).unwrap();
    assert_eq!(m.record.get("veteran"), Some(&Value::Boolean(false)));
    let m = map(&with("summonerName", "42")).unwrap();
    assert_eq!(
        m.record.get("summoner_name"),
        Some(&Value::String("42".into()))
    );
}

#[test]
fn uncoercible_values_are_type_errors() {
    let e = err(&with("wins", r#""many""#));
    assert_eq!(e.kind, ErrorKind::Type);
    assert_eq!(e.field.as_deref(), Some("wins"));
    assert!(e.message.contains("\"many\""), "{e}");
    assert_eq!(err(&with("wins", "12.5")).kind, ErrorKind::Type);
    assert_eq!(err(&with("wins", "true")).kind, ErrorKind::Type);
    assert_eq!(err(&with("wins", "[1]")).kind, ErrorKind::Type);
    assert_eq!(err(&with("veteran", r#""yes""#)).kind, ErrorKind::Type);
    assert_eq!(err(&with("veteran", "2")).kind, ErrorKind::Type);
    assert_eq!(err(&with("summonerId", "{}")).kind, ErrorKind::Type);
}

#[test]
fn coerce_off_requires_the_exact_json_type() {
    let mut c = demo();
    entry(&mut c, "wins").coerce = Some(false);
    let m = Mapper::new(&schema(), &c).unwrap();
    let e = m
        .map(with("wins", r#""12""#).as_bytes(), &lineage())
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Type);
    assert!(e.message.contains("coerce is off"), "{e}");
    assert!(m.map(with("wins", "12.0").as_bytes(), &lineage()).is_err());
    assert!(m.map(GOOD.as_bytes(), &lineage()).is_ok());
}

#[test]
fn whole_record_errors() {
    let e = err("{not json");
    assert_eq!((e.kind, e.field), (ErrorKind::InvalidJson, None));
    assert_eq!(err("").kind, ErrorKind::InvalidJson);
    assert_eq!(
        demo_mapper()
            .map(&[0xff, 0xfe], &lineage())
            .unwrap_err()
            .kind,
        ErrorKind::InvalidJson
    );
    for raw in ["[1,2]", "\"abc\"", "42", "null"] {
        let e = err(raw);
        assert_eq!(e.kind, ErrorKind::NotAnObject, "{raw}");
        assert!(e.message.contains("not an object"), "{e}");
    }
}

#[test]
fn missing_required_and_missing_nullable() {
    let e = err(&with("summonerId", "<absent>"));
    assert_eq!(e.kind, ErrorKind::MissingRequired);
    assert_eq!(e.field.as_deref(), Some("summoner_id"));
    assert!(e.message.contains("summonerId"), "{e}");
    assert_eq!(err(&with("wins", "null")).kind, ErrorKind::MissingRequired);
    let m = map(&with("summonerName", "<absent>")).unwrap();
    assert_eq!(m.record.get("summoner_name"), Some(&Value::Null));
    let m = map(&with("veteran", "null")).unwrap();
    assert_eq!(m.record.get("veteran"), Some(&Value::Null));
}

#[test]
fn ranges_and_allowed_values() {
    let e = err(&with("wins", "-1"));
    assert_eq!(e.kind, ErrorKind::OutOfRange);
    assert!(e.message.contains("minimum 0"), "{e}");
    let e = err(&with("wins", "30000000000"));
    assert_eq!(e.kind, ErrorKind::OutOfRange);
    assert!(e.message.contains("does not fit in an int"), "{e}");
    let e = err(&with("tier", r#""WOOD""#));
    assert_eq!(e.kind, ErrorKind::NotAllowed);
    assert!(e.message.contains("\"WOOD\""), "{e}");
}

#[test]
fn ratio_is_null_without_games_and_sum_overflow_fails() {
    let raw = with("wins", "0");
    let raw = {
        let mut v: serde_json::Value = serde_json::from_str(&raw).unwrap();
        v["losses"] = 0.into();
        v.to_string()
    };
    let m = map(&raw).unwrap();
    assert_eq!(m.record.get("games"), Some(&Value::Int(0)));
    assert_eq!(m.record.get("win_rate"), Some(&Value::Null));

    let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
    v["wins"] = 2_000_000_000.into();
    v["losses"] = 2_000_000_000.into();
    let e = err(&v.to_string());
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::OutOfRange, Some("games"))
    );
}

#[test]
fn every_problem_is_listed_the_first_one_names_kind_and_field() {
    let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
    v["wins"] = "many".into();
    v["tier"] = "WOOD".into();
    v.as_object_mut().unwrap().remove("queueType");
    let e = err(&v.to_string());
    assert_eq!(e.field.as_deref(), Some("queue_type"));
    assert_eq!(e.kind, ErrorKind::MissingRequired);
    assert!(
        e.message.contains("`wins`") && e.message.contains("`tier`"),
        "{e}"
    );
    // A derived field whose input failed adds no second error.
    assert!(!e.message.contains("`games`"), "{e}");
}

#[test]
fn lineage_without_trace_or_time() {
    let mut l = lineage();
    l.trace_id = None;
    let m = demo_mapper().map(GOOD.as_bytes(), &l).unwrap();
    assert_eq!(m.record.get("trace_id"), Some(&Value::Null));
    l.fetched_at_ms = None;
    let e = demo_mapper().map(GOOD.as_bytes(), &l).unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::MissingRequired, Some("fetched_at"))
    );
}

#[test]
fn defaults_dotted_paths_and_derivations() {
    let mut c = demo();
    *entry(&mut c, "league_points") = FieldMapping {
        from: Some("stats.lp".into()),
        default: Some(Scalar::Int(0)),
        ..Default::default()
    };
    *entry(&mut c, "summoner_name") = FieldMapping {
        derive: Some(Derive::Lowercase),
        args: vec!["summoner_id".into()],
        ..Default::default()
    };
    *entry(&mut c, "rank") = FieldMapping {
        from: Some("rank".into()),
        default: Some(Scalar::String("IV".into())),
        ..Default::default()
    };
    let m = Mapper::new(&schema(), &c).unwrap();
    let raw = with("stats", r#"{"lp": "33"}"#);
    let got = m.map(raw.as_bytes(), &lineage()).unwrap().record;
    assert_eq!(got.get("league_points"), Some(&Value::Int(33)));
    let raw = with("summonerId", r#""AbC""#);
    let got = m.map(raw.as_bytes(), &lineage()).unwrap().record;
    assert_eq!(got.get("league_points"), Some(&Value::Int(0)));
    assert_eq!(got.get("summoner_name"), Some(&Value::String("abc".into())));
    let got = m
        .map(with("rank", "null").as_bytes(), &lineage())
        .unwrap()
        .record;
    assert_eq!(got.get("rank"), Some(&Value::String("IV".into())));
}

#[test]
fn auto_map_reads_camel_case_names() {
    assert_eq!(camel_case("league_points"), "leaguePoints");
    assert_eq!(camel_case("summoner_id"), "summonerId");
    assert_eq!(camel_case("wins"), "wins");
    assert_eq!(camel_case("_x"), "x");
    let c = CleanConfig {
        fields: demo()
            .fields
            .into_iter()
            .filter(|(_, m)| m.derive.is_some())
            .collect(),
        ..Default::default()
    };
    let m = Mapper::new(&schema(), &c).unwrap();
    let got = m.map(GOOD.as_bytes(), &lineage()).unwrap();
    assert_eq!(got, map(GOOD).map(|m| Mapped { key: None, ..m }).unwrap());
}

type Mutation = Box<dyn FnOnce(&mut CleanConfig)>;

#[test]
fn config_contradictions_name_the_key() {
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "clean.fields.winz",
            Box::new(|c| {
                entry(c, "winz").from = Some("wins".into());
            }),
        ),
        (
            "clean.fields.trace_id",
            Box::new(|c| {
                entry(c, "trace_id");
            }),
        ),
        (
            "clean.fields.tier.min",
            Box::new(|c| entry(c, "tier").min = Some(0.0)),
        ),
        (
            "clean.fields.wins.min",
            Box::new(|c| {
                entry(c, "wins").min = Some(10.0);
                entry(c, "wins").max = Some(5.0);
            }),
        ),
        (
            "clean.fields.wins.required",
            Box::new(|c| {
                entry(c, "wins").required = Some(true);
                entry(c, "wins").default = Some(Scalar::Int(0));
            }),
        ),
        (
            "clean.fields.wins.required",
            Box::new(|c| entry(c, "wins").required = Some(false)),
        ),
        (
            "clean.fields.wins.default",
            Box::new(|c| entry(c, "wins").default = Some(Scalar::String("x".into()))),
        ),
        (
            "clean.fields.wins.default",
            Box::new(|c| entry(c, "wins").default = Some(Scalar::Int(-5))),
        ),
        (
            "clean.fields.tier.allowed",
            Box::new(|c| entry(c, "tier").allowed = Some(vec![Scalar::Int(1)])),
        ),
        (
            "clean.fields.tier.allowed",
            Box::new(|c| entry(c, "tier").allowed = Some(vec![])),
        ),
        (
            "clean.fields.games.derive",
            Box::new(|c| {
                entry(c, "games").derive = Some(Derive::Ratio);
            }),
        ),
        (
            "clean.fields.games.args",
            Box::new(|c| entry(c, "games").args = vec!["wins".into(), "nope".into()]),
        ),
        (
            "clean.fields.games.args",
            Box::new(|c| entry(c, "games").args = vec!["win_rate".into()]),
        ),
        (
            "clean.fields.win_rate.args",
            Box::new(|c| entry(c, "win_rate").args = vec!["wins".into()]),
        ),
        (
            "clean.fields.games.derive",
            Box::new(|c| {
                entry(c, "games").derive = Some(Derive::Uppercase);
                entry(c, "games").args = vec!["tier".into()];
            }),
        ),
        (
            "clean.fields.games.from",
            Box::new(|c| entry(c, "games").from = Some("games".into())),
        ),
        (
            "clean.fields.games.coerce",
            Box::new(|c| entry(c, "games").coerce = Some(true)),
        ),
        (
            "clean.fields.wins.args",
            Box::new(|c| entry(c, "wins").args = vec!["losses".into()]),
        ),
        (
            "clean.fields.wins.from",
            Box::new(|c| entry(c, "wins").from = Some("a..b".into())),
        ),
        (
            "clean.fields.rank",
            Box::new(|c| {
                c.fields.remove("rank");
            }),
        ),
        (
            "clean.key_field",
            Box::new(|c| c.key_field = Some("summoner_name".into())),
        ),
        (
            "clean.key_field",
            Box::new(|c| c.key_field = Some("nope".into())),
        ),
    ];
    for (key, mutate) in cases {
        let e = cfg_err(mutate);
        assert!(e.contains(&format!("`{key}`")), "expected {key}: {e}");
    }
}

#[test]
fn ratio_into_a_non_nullable_field_needs_a_default() {
    let s = RecordSchema::parse(
        r#"{"type":"record","name":"R","fields":[
            {"name":"a","type":"int"},{"name":"b","type":"int"},{"name":"r","type":"double"}]}"#,
    )
    .unwrap();
    let mut c = CleanConfig::default();
    entry(&mut c, "r").derive = Some(Derive::Ratio);
    entry(&mut c, "r").args = vec!["a".into(), "b".into()];
    let e = Mapper::new(&s, &c).unwrap_err().to_string();
    assert!(e.contains("clean.fields.r.derive"), "{e}");
    entry(&mut c, "r").default = Some(Scalar::Float(0.0));
    let m = Mapper::new(&s, &c).unwrap();
    let got = m.map(br#"{"a":0,"b":0}"#, &lineage()).unwrap().record;
    assert_eq!(got.get("r"), Some(&Value::Double(0.0)));
}

#[test]
fn lineage_fields_of_the_wrong_type_are_refused() {
    let s = RecordSchema::parse(
        r#"{"type":"record","name":"R","fields":[{"name":"source_offset","type":"string"}]}"#,
    )
    .unwrap();
    let e = Mapper::new(&s, &CleanConfig::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("clean.schema") && e.contains("source_offset"),
        "{e}"
    );
}

#[test]
fn settings_and_schema_file_are_checked() {
    let t = Duration::from_secs(60);
    let c = CleanConfig {
        batch_size: 0,
        ..Default::default()
    };
    assert!(c
        .validate(t)
        .unwrap_err()
        .to_string()
        .contains("clean.batch_size"));
    let c = CleanConfig {
        batch_max_age: Duration::from_secs(40),
        ..Default::default()
    };
    assert!(c
        .validate(t)
        .unwrap_err()
        .to_string()
        .contains("clean.batch_max_age"));
    let c = CleanConfig {
        schema: "schemas/nope.avsc".into(),
        ..Default::default()
    };
    assert!(c
        .validate(t)
        .unwrap_err()
        .to_string()
        .contains("clean.schema"));
    CleanConfig::default().validate(t).unwrap();
}

#[test]
fn toml_sections_parse_and_round_trip() {
    let text = r#"
[clean]
batch_max_age = "250ms"
[clean.fields.wins]
from = "stats.wins"
min = 0
allowed = [1, 2, 3]
[clean.fields.games]
derive = "sum"
args = ["wins", "losses"]
"#;
    let cfg = Config::from_toml_with_env(text, "t.toml", &[]).unwrap();
    let c = cfg.clean.clone().unwrap();
    assert_eq!(c.batch_max_age, Duration::from_millis(250));
    assert_eq!(c.fields["wins"].min, Some(0.0));
    assert_eq!(c.fields["games"].derive, Some(Derive::Sum));
    let again = Config::from_toml_with_env(&cfg.to_toml(), "again.toml", &[]).unwrap();
    assert_eq!(again.clean, cfg.clean);

    let e = Config::from_toml_with_env("[clean.fields.wins]\nmin = \"x\"\n", "t", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("clean.fields.wins.min"), "{e}");
    let e = Config::from_toml_with_env("[clean.fields.wins]\nminimum = 1\n", "t", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("minimum"), "{e}");
    let env = vec![(
        "ETL__CLEAN__FIELDS__WINS__MIN".to_string(),
        "-3".to_string(),
    )];
    let cfg = Config::from_toml_with_env("", "t", &env).unwrap();
    assert_eq!(cfg.clean.unwrap().fields["wins"].min, Some(-3.0));
}

use std::time::Duration;
