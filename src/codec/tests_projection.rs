//! The score stage's short cut: a datum written with the reader's own schema
//! ([`Codec::own_datum`]), decoded with only some fields ([`Codec::projection`]) and written
//! out as the prefix of a longer schema ([`Codec::extension_of`]). Same values, same bytes,
//! same errors as the whole decode and encode.
use super::tests::{flip_some, league_record, xorshift};
use super::tests_nested::{nested, nested_record, rec, s};
use super::*;
use crate::record::Value;

const KEEP: [&str; 4] = ["id", "mini_series", "players", "ratio"];

fn keep(name: &str) -> bool {
    KEEP.contains(&name)
}

/// `schema` with three nullable strings appended (as the scored schema extends cleaned).
fn extended(schema: &RecordSchema) -> RecordSchema {
    let mut j: serde_json::Value = serde_json::from_str(&schema.source).unwrap();
    for name in ["quality_window", "quality_decision", "quality_reasons"] {
        j["fields"].as_array_mut().unwrap().push(serde_json::json!(
            {"name": name, "type": ["null", "string"], "default": null}
        ));
    }
    RecordSchema::parse(&j.to_string()).unwrap()
}

#[test]
fn own_datum_is_found_only_for_the_codecs_own_schema() {
    let codec = Codec::new(nested(), Framing::SingleObject);
    let bytes = codec.encode(&nested_record(1, false)).unwrap();
    assert_eq!(codec.own_datum(&bytes), Some(&bytes[10..]));
    // Another writer schema (single-object and a registry id), or broken framing: none.
    let other = Codec::new(extended(&nested()), Framing::Confluent { schema_id: 8 });
    let theirs = Codec::new(extended(&nested()), Framing::SingleObject)
        .encode(&nested_record(1, false))
        .unwrap();
    assert_eq!(codec.own_datum(&theirs), None);
    let by_id = other.encode(&nested_record(1, false)).unwrap();
    codec.add_schema_id(8, extended(&nested())).unwrap();
    assert_eq!(codec.own_datum(&by_id), None);
    assert_eq!(codec.own_datum(&bytes[..5]), None);
    assert_eq!(codec.own_datum(b""), None);
    // Confluent framing: the codec's own id, and another id registered with its schema.
    let conf = Codec::new(nested(), Framing::Confluent { schema_id: 3 });
    let b3 = conf.encode(&nested_record(2, false)).unwrap();
    assert_eq!(conf.own_datum(&b3), Some(&b3[5..]));
    conf.add_schema_id(4, nested()).unwrap();
    let mut b4 = b3.clone();
    b4[4] = 4;
    assert_eq!(conf.own_datum(&b4), Some(&b4[5..]));
    assert_eq!(
        conf.own_datum(&by_id),
        None,
        "id 8 is not known to this codec"
    );
}

#[test]
fn projection_reads_the_kept_fields_as_the_whole_decode_does() {
    let codec = Codec::new(nested(), Framing::SingleObject);
    let projection = codec.projection(keep).unwrap();
    for i in 0..50 {
        let full = nested_record(i, i % 2 == 0);
        let bytes = codec.encode(&full).unwrap();
        let decoded = codec.decode(&bytes).unwrap();
        let kept = projection.decode(codec.own_datum(&bytes).unwrap()).unwrap();
        let expected: Vec<_> = decoded
            .fields
            .iter()
            .filter(|(n, _)| keep(n))
            .cloned()
            .collect();
        assert_eq!(kept.fields, expected, "record {i}");
        assert_eq!(kept.fields.len(), KEEP.len());
    }
}

#[test]
fn projection_refuses_what_the_whole_decode_refuses_with_the_same_error() {
    let codec = Codec::new(nested(), Framing::SingleObject);
    let projection = codec.projection(keep).unwrap();
    let good = codec.encode(&nested_record(3, false)).unwrap();
    let same = |bytes: &[u8], what: &str| {
        let whole = codec.decode(bytes).map(drop).map_err(|e| e.to_string());
        let part = projection
            .decode(&bytes[10..])
            .map(drop)
            .map_err(|e| e.to_string());
        assert_eq!(whole, part, "{what}");
        whole.is_err()
    };
    let mut refused = 0;
    for cut in 10..good.len() {
        refused += same(&good[..cut], &format!("cut at {cut}")) as usize;
    }
    assert_eq!(refused, good.len() - 10, "every truncation is refused");
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
    let mut flipped = 0;
    for n in 0..20_000 {
        let mut bytes = good.clone();
        flip_some(&mut bytes, &mut next);
        flipped += same(&bytes, &format!("flip {n}")) as usize;
    }
    // Many flips land in skipped fields: they are checked there too.
    assert!(flipped > 5_000, "{flipped} of 20 000 flips refused");
    // Bad UTF-8 in a skipped string (an item of `tags`).
    let mut r = nested_record(4, false);
    r.set("tags", Value::Array(vec![s("XQZJ")]));
    let mut bytes = codec.encode(&r).unwrap();
    let at = bytes.windows(4).position(|w| w == b"XQZJ").unwrap();
    bytes[at] = 0xFF;
    assert!(same(&bytes, "bad UTF-8 in a skipped field"));
    assert!(codec
        .decode(&bytes)
        .unwrap_err()
        .to_string()
        .contains("UTF-8"));
}

/// The demo's cleaned schema (a nullable nested record among flat fields): copyable.
fn cleaned() -> RecordSchema {
    RecordSchema::parse(include_str!("../../schemas/league_entry.cleaned.avsc")).unwrap()
}

#[test]
fn extension_writes_the_same_bytes_as_the_whole_encode() {
    let prefix = Codec::new(cleaned(), Framing::SingleObject);
    let longer = extended(&cleaned());
    for framing in [Framing::SingleObject, Framing::Confluent { schema_id: 9 }] {
        let out = Codec::new(longer.clone(), framing);
        let ext = out.extension_of(prefix.schema()).expect("an extension");
        for i in 0..20 {
            let mut full = league_record(i);
            if i % 3 == 0 {
                full.set(
                    "mini_series",
                    Value::Record(rec(vec![
                        ("progress", s("WLN")),
                        ("target", Value::Int(3)),
                        ("wins", Value::Int(1)),
                        ("losses", Value::Int(1)),
                    ])),
                );
            }
            let bytes = prefix.encode(&full).unwrap();
            let quality = rec(vec![
                ("quality_window", s(&format!("t/0/{i}-{}", i + 999))),
                ("quality_decision", s("WARN")),
                (
                    "quality_reasons",
                    if i % 2 == 0 { Value::Null } else { s("x: PSI") },
                ),
            ]);
            for (n, v) in &quality.fields {
                full.set(n, v.clone());
            }
            let appended = ext
                .encode(prefix.own_datum(&bytes).unwrap(), &quality)
                .unwrap();
            assert_eq!(
                appended,
                out.encode(&full).unwrap(),
                "record {i}, {framing:?}"
            );
            assert_eq!(
                out.decode(&appended).unwrap(),
                out.decode(&out.encode(&full).unwrap()).unwrap()
            );
        }
        // A field the longer schema does not have is refused, as the whole encode refuses it.
        let e = ext
            .encode(&[], &rec(vec![("nope", Value::Null)]))
            .unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
    // Not an extension: the same schema, a shorter one, a field changed — nor a prefix
    // with decimals, uuids or general unions (the nested fixture): copying their datum would
    // skip the encoder's precision check, uuid normalisation and branch choice.
    let nested_out = Codec::new(extended(&nested()), Framing::SingleObject);
    assert!(nested_out
        .extension_of(Codec::new(nested(), Framing::SingleObject).schema())
        .is_none());
    assert!(prefix.extension_of(prefix.schema()).is_none());
    let out = Codec::new(longer.clone(), Framing::SingleObject);
    assert!(prefix.extension_of(out.schema()).is_none());
    let mut changed = longer.clone();
    changed.fields[1].nullable = !changed.fields[1].nullable;
    assert!(Codec::new(changed, Framing::SingleObject)
        .extension_of(prefix.schema())
        .is_none());
}

#[test]
fn a_writer_differing_only_in_logical_types_is_not_own() {
    // Same canonical form (logical types are not part of it), other types: resolved, not
    // taken as the reader's own.
    let mut j: serde_json::Value =
        serde_json::from_str(include_str!("../../schemas/league_entry.cleaned.avsc")).unwrap();
    let fields = j["fields"].as_array_mut().unwrap();
    let at = fields
        .iter()
        .position(|f| f["name"] == "fetched_at")
        .unwrap();
    fields[at]["type"] = serde_json::json!("long");
    let writer = RecordSchema::parse(&j.to_string()).unwrap();
    assert_eq!(writer.fingerprint(), cleaned().fingerprint());
    let codec = Codec::new(cleaned(), Framing::Confluent { schema_id: 1 });
    codec.add_schema_id(2, writer).unwrap();
    let mut bytes = codec.encode(&league_record(1)).unwrap();
    assert!(codec.own_datum(&bytes).is_some());
    bytes[4] = 2;
    assert_eq!(codec.own_datum(&bytes), None);
    assert!(codec.decode(&bytes).is_ok(), "still read by resolution");
}
