//! The schemas in `schemas/` stay readable: the scored schema reads cleaned data, and each
//! current schema reads data written with every earlier version kept in `schemas/history/`
//! (`<name>.v<N>.avsc`). Checked twice, by apache-avro (the independent reference: its
//! compatibility check and its schema resolution) and by our codec, on real datums.
//! An incompatible edit of a schema fails here.
use std::path::Path;

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value as AValue;
use etl_pipe::codec::{check_can_read, load_schema, load_schema_dir, Codec, Framing};
use etl_pipe::record::{FieldType, Record, RecordSchema, Value};

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");

fn current_schemas() -> Vec<(String, RecordSchema)> {
    load_schema_dir(SCHEMAS).unwrap()
}

fn history_of(file: &str) -> Vec<(String, RecordSchema)> {
    let stem = file.trim_end_matches(".avsc");
    load_schema_dir(Path::new(SCHEMAS).join("history"))
        .unwrap()
        .into_iter()
        .filter(|(name, _)| {
            name.strip_prefix(stem)
                .and_then(|rest| rest.strip_prefix(".v"))
                .and_then(|rest| rest.strip_suffix(".avsc"))
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .collect()
}

/// A record with a value for every field (`seed` varies them), or with every nullable
/// field null.
fn sample(schema: &RecordSchema, seed: i32, nulls: bool) -> Record {
    let mut r = Record::new();
    for f in &schema.fields {
        let v = if nulls && f.nullable {
            Value::Null
        } else {
            match f.ty {
                FieldType::Boolean => Value::Boolean(seed % 2 == 0),
                FieldType::Int => Value::Int(seed * 31 - 7),
                FieldType::Long => Value::Long(seed as i64 * 1_000_000_007),
                FieldType::Float => Value::Float(seed as f32 / 4.0),
                FieldType::Double => Value::Double(seed as f64 / 3.0),
                FieldType::String => Value::String(format!("{}-{seed}-ü✓", f.name)),
                FieldType::TimestampMillis => {
                    Value::TimestampMillis(1_700_000_000_000 + seed as i64)
                }
                // A nested record (the league's `mini_series`): its fields sampled alike.
                FieldType::Record(ref nested) => Value::Record(sample(nested, seed, nulls)),
                ref other => panic!("field `{}`: no sample for {other:?}", f.name),
            }
        };
        r.set(&f.name, v);
    }
    r
}

fn reference(schema: &RecordSchema) -> apache_avro::Schema {
    apache_avro::Schema::parse_str(&schema.source).unwrap()
}

/// Asserts that `reader` reads `writer` data: by both checkers, and on datums decoded by
/// our codec (single-object) and by apache-avro's resolution.
fn assert_reads(writer: &RecordSchema, reader: &RecordSchema, what: &str) {
    SchemaCompatibility::can_read(&reference(writer), &reference(reader))
        .unwrap_or_else(|e| panic!("{what}: apache-avro says incompatible: {e}"));
    check_can_read(writer, reader).unwrap_or_else(|e| panic!("{what}: {e}"));

    let w = Codec::new(writer.clone(), Framing::SingleObject);
    let r = Codec::new(reader.clone(), Framing::SingleObject);
    r.add_writer_schema(writer.clone()).unwrap();
    for (seed, nulls) in [(1, false), (2, true), (-5, false)] {
        let written = sample(writer, seed, nulls);
        let bytes = w.encode(&written).unwrap();
        let read = r.decode(&bytes).unwrap();
        let names: Vec<_> = read.fields.iter().map(|(n, _)| n.to_string()).collect();
        let expected: Vec<_> = reader.fields.iter().map(|f| f.name.clone()).collect();
        assert_eq!(names, expected, "{what}: fields in reader order");
        for f in &reader.fields {
            let got = read.get(&f.name).unwrap();
            match written.get(&f.name) {
                Some(v) if v.as_f64().is_some() => {
                    assert_eq!(got.as_f64(), v.as_f64(), "{what}: {}", f.name)
                }
                Some(v) => assert_eq!(got, v, "{what}: {}", f.name),
                None => assert_eq!(
                    Some(got),
                    f.default.as_ref(),
                    "{what}: default of {}",
                    f.name
                ),
            }
        }
        // apache-avro resolves the same datum into the reader schema.
        let datum = &bytes[10..];
        let resolved = apache_avro::from_avro_datum(
            &reference(writer),
            &mut &datum[..],
            Some(&reference(reader)),
        )
        .unwrap_or_else(|e| panic!("{what}: apache-avro cannot resolve: {e}"));
        let AValue::Record(fields) = resolved else {
            panic!("{what}: not a record")
        };
        assert_eq!(fields.len(), reader.fields.len(), "{what}");
    }
}

#[test]
fn every_schema_has_a_history_and_reads_all_of_it() {
    let current = current_schemas();
    assert!(current.len() >= 2, "schemas/*.avsc: {current:?}");
    for (file, schema) in &current {
        let history = history_of(file);
        assert!(
            !history.is_empty(),
            "{file}: keep its versions in schemas/history/ as {}.v<N>.avsc",
            file.trim_end_matches(".avsc")
        );
        for (old_file, old) in &history {
            assert_reads(
                old,
                schema,
                &format!("{file} reading data written with {old_file}"),
            );
        }
    }
}

#[test]
fn the_latest_history_version_is_the_current_schema() {
    // A schema edit comes with its new history file, so the next edit is checked against it.
    for (file, schema) in current_schemas() {
        let history = history_of(&file);
        let latest = history
            .iter()
            .max_by_key(|(name, _)| {
                name.rsplit(".v")
                    .next()
                    .and_then(|n| n.trim_end_matches(".avsc").parse::<u32>().ok())
            })
            .unwrap();
        assert_eq!(
            latest.1.canonical_form(),
            schema.canonical_form(),
            "{file} changed: copy it to schemas/history/ as the next version"
        );
    }
}

#[test]
fn scored_reads_cleaned() {
    let cleaned = load_schema(format!("{SCHEMAS}/league_entry.cleaned.avsc")).unwrap();
    let scored = load_schema(format!("{SCHEMAS}/league_entry.scored.avsc")).unwrap();
    assert_reads(&cleaned, &scored, "scored reading cleaned");
    // The added quality fields come out as their defaults (null).
    let r = Codec::new(scored.clone(), Framing::SingleObject);
    r.add_writer_schema(cleaned.clone()).unwrap();
    let bytes = Codec::new(cleaned.clone(), Framing::SingleObject)
        .encode(&sample(&cleaned, 3, false))
        .unwrap();
    let read = r.decode(&bytes).unwrap();
    assert_eq!(read.get("quality_window"), Some(&Value::Null));
    assert_eq!(read.get("quality_decision"), Some(&Value::Null));
}

#[test]
fn an_incompatible_edit_is_caught_by_both_checkers() {
    let (_, v1) = history_of("league_entry.cleaned.avsc").remove(0);
    let text = std::fs::read_to_string(format!("{SCHEMAS}/league_entry.cleaned.avsc")).unwrap();
    // A new required field without a default: old data cannot fill it.
    let broken = text.replacen(
        r#""fields": ["#,
        r#""fields": [
    {"name": "region", "type": "string"},"#,
        1,
    );
    let broken = RecordSchema::parse(&broken).unwrap();
    assert!(SchemaCompatibility::can_read(&reference(&v1), &reference(&broken)).is_err());
    let e = check_can_read(&v1, &broken).unwrap_err();
    assert!(e.contains("region"), "{e}");
    // A type change that is not a promotion.
    let narrowed = RecordSchema::parse(&text.replace(
        r#""name": "source_offset", "type": "long""#,
        r#""name": "source_offset", "type": "int""#,
    ))
    .unwrap();
    assert!(SchemaCompatibility::can_read(&reference(&v1), &reference(&narrowed)).is_err());
    assert!(check_can_read(&v1, &narrowed).is_err());
}
