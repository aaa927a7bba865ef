//! Avro encode/decode throughput of the candidates for `src/codec`, on the flat cleaned league
//! schema (`schemas/history/league_entry.cleaned.v1.avsc`, 20 fields: the demo's schema before
//! issue 20, and the codec's flat fast path), one thread; then `etl_pipe::codec::Codec` alone on
//! the demo's schema since issue 20 (`schemas/league_entry.cleaned.avsc`, with the nullable
//! nested record `mini_series`, set on every other record: the codec's general path). Prints
//! records/s and bytes per record; asserts nothing (figures vary with the machine and its load).
//!
//! `cargo bench --bench codec` (release). `CODEC_BENCH_RECORDS=100000` for a shorter run.
//!
//! Candidates, each doing what the pipeline needs (our dynamic `Record` in, bytes out, and
//! back), plus the typed-struct serde paths for reference, since crates publish those:
//! - hand-written: `etl_pipe::codec::Codec` (framing + datum over `RecordSchema`);
//! - apache-avro 0.20 `types::Value` (Record ↔ Value conversion included);
//! - apache-avro 0.20 serde with a typed struct (no conversion: the best case for it);
//! - serde_avro_fast 2 with our `Record` through serde (map in, map visitor out);
//! - serde_avro_fast 2 with a typed struct.
use std::fmt;
use std::hint::black_box;
use std::time::Instant;

use apache_avro::types::Value as AValue;
use etl_pipe::codec::{load_schema, Codec, Framing};
use etl_pipe::record::{FieldType, Record, RecordSchema, Value};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const DISTINCT: usize = 1_000;

fn league_record(i: usize) -> Record {
    let wins = 10 + (i % 300) as i32;
    let losses = 7 + (i % 200) as i32;
    let s = |v: String| Value::String(v);
    let mut r = Record::new();
    r.set(
        "summoner_id",
        s(format!("sid-{i:08}-Xq3vPz0tLmN8aBcDeF1gH2")),
    );
    r.set(
        "summoner_name",
        if i % 10 == 0 {
            Value::Null
        } else {
            s(format!("Player{i}"))
        },
    );
    r.set("queue_type", s("RANKED_SOLO_5x5".into()));
    r.set(
        "tier",
        s(["IRON", "GOLD", "DIAMOND", "MASTER"][i % 4].into()),
    );
    r.set("rank", s(["I", "II", "III", "IV"][i % 4].into()));
    r.set("league_points", Value::Int((i % 100) as i32));
    r.set("wins", Value::Int(wins));
    r.set("losses", Value::Int(losses));
    r.set("veteran", Value::Boolean(i % 2 == 0));
    r.set("inactive", Value::Boolean(false));
    r.set(
        "fresh_blood",
        if i % 7 == 0 {
            Value::Null
        } else {
            Value::Boolean(true)
        },
    );
    r.set("hot_streak", Value::Boolean(i % 3 == 0));
    r.set("games", Value::Int(wins + losses));
    r.set(
        "win_rate",
        Value::Double(wins as f64 / (wins + losses) as f64),
    );
    r.set("source", s("league-v4".into()));
    r.set(
        "trace_id",
        s(format!("{:032x}", i as u128 * 0x9E37_79B9_7F4A_7C15)),
    );
    r.set("source_topic", s("etl.raw".into()));
    r.set("source_partition", Value::Int((i % 6) as i32));
    r.set("source_offset", Value::Long(1_000_000 + i as i64));
    r.set(
        "fetched_at",
        Value::TimestampMillis(1_735_689_600_000 + i as i64),
    );
    r
}

#[derive(Serialize, Deserialize)]
struct LeagueEntry {
    summoner_id: String,
    summoner_name: Option<String>,
    queue_type: String,
    tier: String,
    rank: String,
    league_points: i32,
    wins: i32,
    losses: i32,
    veteran: Option<bool>,
    inactive: Option<bool>,
    fresh_blood: Option<bool>,
    hot_streak: Option<bool>,
    games: i32,
    win_rate: Option<f64>,
    source: String,
    trace_id: Option<String>,
    source_topic: String,
    source_partition: i32,
    source_offset: i64,
    fetched_at: i64,
}

impl LeagueEntry {
    fn from_record(r: &Record) -> LeagueEntry {
        let st = |n| r.get(n).and_then(Value::as_str).map(str::to_string);
        let int = |n| match r.get(n) {
            Some(Value::Int(i)) => *i,
            _ => 0,
        };
        let long = |n| match r.get(n) {
            Some(Value::Long(l) | Value::TimestampMillis(l)) => *l,
            _ => 0,
        };
        let b = |n| match r.get(n) {
            Some(Value::Boolean(b)) => Some(*b),
            _ => None,
        };
        LeagueEntry {
            summoner_id: st("summoner_id").unwrap_or_default(),
            summoner_name: st("summoner_name"),
            queue_type: st("queue_type").unwrap_or_default(),
            tier: st("tier").unwrap_or_default(),
            rank: st("rank").unwrap_or_default(),
            league_points: int("league_points"),
            wins: int("wins"),
            losses: int("losses"),
            veteran: b("veteran"),
            inactive: b("inactive"),
            fresh_blood: b("fresh_blood"),
            hot_streak: b("hot_streak"),
            games: int("games"),
            win_rate: match r.get("win_rate") {
                Some(Value::Double(d)) => Some(*d),
                _ => None,
            },
            source: st("source").unwrap_or_default(),
            trace_id: st("trace_id"),
            source_topic: st("source_topic").unwrap_or_default(),
            source_partition: int("source_partition"),
            source_offset: long("source_offset"),
            fetched_at: long("fetched_at"),
        }
    }
}

fn to_apache(schema: &RecordSchema, r: &Record) -> AValue {
    AValue::Record(
        schema
            .fields
            .iter()
            .zip(&r.fields)
            .map(|(f, (_, v))| {
                let inner = match v {
                    Value::Null => AValue::Null,
                    Value::Boolean(b) => AValue::Boolean(*b),
                    Value::Int(i) => AValue::Int(*i),
                    Value::Long(l) => AValue::Long(*l),
                    Value::Float(x) => AValue::Float(*x),
                    Value::Double(x) => AValue::Double(*x),
                    Value::String(s) => AValue::String(s.clone()),
                    Value::TimestampMillis(t) => AValue::TimestampMillis(*t),
                    // The benchmark's schema is the flat league entry.
                    other => panic!("flat schema only, not {}", other.kind()),
                };
                let v = match (f.nullable, inner) {
                    (true, AValue::Null) => AValue::Union(0, Box::new(AValue::Null)),
                    (true, v) => AValue::Union(1, Box::new(v)),
                    (false, v) => v,
                };
                (f.name.clone(), v)
            })
            .collect(),
    )
}

fn from_apache(v: AValue) -> Record {
    fn conv(v: AValue) -> Value {
        match v {
            AValue::Null => Value::Null,
            AValue::Boolean(b) => Value::Boolean(b),
            AValue::Int(i) => Value::Int(i),
            AValue::Long(l) => Value::Long(l),
            AValue::Float(x) => Value::Float(x),
            AValue::Double(x) => Value::Double(x),
            AValue::String(s) => Value::String(s),
            AValue::TimestampMillis(t) => Value::TimestampMillis(t),
            AValue::Union(_, b) => conv(*b),
            _ => Value::Null,
        }
    }
    match v {
        AValue::Record(fields) => Record {
            fields: fields
                .into_iter()
                .map(|(n, v)| (n.into(), conv(v)))
                .collect(),
        },
        _ => Record::new(),
    }
}

/// Our `Record` as a serde map, the way serde_avro_fast can take a dynamic record.
struct AsMap<'a>(&'a Record);

impl Serialize for AsMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.fields.len()))?;
        for (n, v) in &self.0.fields {
            m.serialize_entry(n, v)?;
        }
        m.end()
    }
}

/// A dynamic record read through serde; timestamp fields fixed up from the schema after.
struct DynRecord(Record);

impl<'de> Deserialize<'de> for DynRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RecVisitor;
        impl<'de> Visitor<'de> for RecVisitor {
            type Value = DynRecord;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a record")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DynRecord, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(20));
                while let Some((k, v)) = map.next_entry::<String, DynValue>()? {
                    fields.push((k.into(), v.0));
                }
                Ok(DynRecord(Record { fields }))
            }
        }
        d.deserialize_any(RecVisitor)
    }
}

struct DynValue(Value);

impl<'de> Deserialize<'de> for DynValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DynValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a primitive")
            }
            fn visit_unit<E>(self) -> Result<DynValue, E> {
                Ok(DynValue(Value::Null))
            }
            fn visit_none<E>(self) -> Result<DynValue, E> {
                Ok(DynValue(Value::Null))
            }
            fn visit_bool<E>(self, v: bool) -> Result<DynValue, E> {
                Ok(DynValue(Value::Boolean(v)))
            }
            fn visit_i32<E>(self, v: i32) -> Result<DynValue, E> {
                Ok(DynValue(Value::Int(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<DynValue, E> {
                Ok(DynValue(Value::Long(v)))
            }
            fn visit_f32<E>(self, v: f32) -> Result<DynValue, E> {
                Ok(DynValue(Value::Float(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<DynValue, E> {
                Ok(DynValue(Value::Double(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<DynValue, E> {
                Ok(DynValue(Value::String(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<DynValue, E> {
                Ok(DynValue(Value::String(v)))
            }
        }
        d.deserialize_any(V)
    }
}

fn fix_timestamps(schema: &RecordSchema, mut r: Record) -> Record {
    for (f, (_, v)) in schema.fields.iter().zip(r.fields.iter_mut()) {
        if f.ty == FieldType::TimestampMillis {
            if let Value::Long(l) = v {
                *v = Value::TimestampMillis(*l);
            }
        }
    }
    r
}

struct Figures {
    name: &'static str,
    encode: f64,
    decode: f64,
    bytes: f64,
}

/// Records/s of `f` over `n` calls: the best of three runs (the machine is shared).
fn rate(n: usize, mut f: impl FnMut(usize)) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                f(i);
            }
            n as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn main() {
    let n: usize = std::env::var("CODEC_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let schema = load_schema(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/history/league_entry.cleaned.v1.avsc"
    ))
    .expect("cleaned schema");
    let records: Vec<Record> = (0..DISTINCT).map(league_record).collect();
    let typed: Vec<LeagueEntry> = records.iter().map(LeagueEntry::from_record).collect();
    let apache_schema = apache_avro::Schema::parse_str(&schema.source).expect("apache-avro schema");
    let fast_schema: serde_avro_fast::Schema =
        schema.source.parse().expect("serde_avro_fast schema");

    let codec = Codec::new(schema.clone(), Framing::SingleObject);
    let framed: Vec<Vec<u8>> = records
        .iter()
        .map(|r| codec.encode(r).expect("encode"))
        .collect();
    // The datums all candidates must produce and read (framing stripped).
    let datums: Vec<Vec<u8>> = framed.iter().map(|b| b[10..].to_vec()).collect();
    let datum_bytes = datums.iter().map(Vec::len).sum::<usize>() as f64 / DISTINCT as f64;
    let framed_bytes = datum_bytes + 10.0;

    // Each candidate must produce the same datum before it is timed.
    for (i, r) in records.iter().enumerate() {
        let a = apache_avro::to_avro_datum(&apache_schema, to_apache(&schema, r)).expect("apache");
        assert_eq!(a, datums[i], "apache-avro Value datum differs");
        let mut b = Vec::new();
        apache_avro::write_avro_datum_ref(&apache_schema, &typed[i], &mut b).expect("apache serde");
        assert_eq!(b, datums[i], "apache-avro serde datum differs");
        let mut cfg = serde_avro_fast::ser::SerializerConfig::new(&fast_schema);
        let c = serde_avro_fast::to_datum_vec(&AsMap(r), &mut cfg).expect("fast dyn");
        assert_eq!(c, datums[i], "serde_avro_fast dynamic datum differs");
        let d = serde_avro_fast::to_datum_vec(&typed[i], &mut cfg).expect("fast typed");
        assert_eq!(d, datums[i], "serde_avro_fast typed datum differs");
        let back: DynRecord =
            serde_avro_fast::from_datum_slice(&datums[i], &fast_schema).expect("fast dyn decode");
        assert_eq!(&fix_timestamps(&schema, back.0), r);
        let back = from_apache(
            apache_avro::from_avro_datum(&apache_schema, &mut datums[i].as_slice(), None)
                .expect("apache decode"),
        );
        assert_eq!(&back, r);
    }

    let mut results = Vec::new();
    let mut buf = Vec::with_capacity(256);

    results.push(Figures {
        name: "hand-written Codec (framed)",
        encode: rate(n, |i| {
            buf.clear();
            codec
                .encode_into(&records[i % DISTINCT], &mut buf)
                .expect("encode");
            black_box(&buf);
        }),
        decode: rate(n, |i| {
            black_box(codec.decode(&framed[i % DISTINCT]).expect("decode"));
        }),
        bytes: framed_bytes,
    });
    results.push(Figures {
        name: "apache-avro Value (dynamic)",
        encode: rate(n, |i| {
            let v = to_apache(&schema, &records[i % DISTINCT]);
            black_box(apache_avro::to_avro_datum(&apache_schema, v).expect("encode"));
        }),
        decode: rate(n, |i| {
            let v = apache_avro::from_avro_datum(
                &apache_schema,
                &mut datums[i % DISTINCT].as_slice(),
                None,
            )
            .expect("decode");
            black_box(from_apache(v));
        }),
        bytes: datum_bytes,
    });
    results.push(Figures {
        name: "apache-avro serde (typed struct)",
        encode: rate(n, |i| {
            buf.clear();
            apache_avro::write_avro_datum_ref(&apache_schema, &typed[i % DISTINCT], &mut buf)
                .expect("encode");
            black_box(&buf);
        }),
        decode: rate(n, |i| {
            let v = apache_avro::from_avro_datum(
                &apache_schema,
                &mut datums[i % DISTINCT].as_slice(),
                None,
            )
            .expect("decode");
            black_box(apache_avro::from_value::<LeagueEntry>(&v).expect("typed"));
        }),
        bytes: datum_bytes,
    });
    let mut cfg = serde_avro_fast::ser::SerializerConfig::new(&fast_schema);
    results.push(Figures {
        name: "serde_avro_fast (dynamic Record)",
        encode: rate(n, |i| {
            buf.clear();
            let out = std::mem::take(&mut buf);
            buf = serde_avro_fast::to_datum(&AsMap(&records[i % DISTINCT]), out, &mut cfg)
                .expect("encode");
            black_box(&buf);
        }),
        decode: rate(n, |i| {
            let r: DynRecord =
                serde_avro_fast::from_datum_slice(&datums[i % DISTINCT], &fast_schema)
                    .expect("decode");
            black_box(fix_timestamps(&schema, r.0));
        }),
        bytes: datum_bytes,
    });
    results.push(Figures {
        name: "serde_avro_fast (typed struct)",
        encode: rate(n, |i| {
            buf.clear();
            let out = std::mem::take(&mut buf);
            buf = serde_avro_fast::to_datum(&typed[i % DISTINCT], out, &mut cfg).expect("encode");
            black_box(&buf);
        }),
        decode: rate(n, |i| {
            black_box(
                serde_avro_fast::from_datum_slice::<LeagueEntry>(
                    &datums[i % DISTINCT],
                    &fast_schema,
                )
                .expect("decode"),
            );
        }),
        bytes: datum_bytes,
    });

    println!(
        "codec bench: {} ({} fields), {n} records per run ({DISTINCT} distinct), best of 3, one thread",
        schema.name,
        schema.fields.len()
    );
    println!(
        "{:<36} {:>14} {:>14} {:>10}",
        "candidate", "encode rec/s", "decode rec/s", "bytes/rec"
    );
    for r in &results {
        println!(
            "{:<36} {:>14.0} {:>14.0} {:>10.1}",
            r.name, r.encode, r.decode, r.bytes
        );
    }
    println!("(bytes/rec: Avro datum; the framed ones add the 10-byte single-object header, Confluent adds 5)");
    nested(n, &records);
}

/// `etl_pipe::codec::Codec` on the demo's nested schema: the same records with `mini_series`
/// (a record on even records, null on odd ones), through the general path.
fn nested(n: usize, flat: &[Record]) {
    let schema = load_schema(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/league_entry.cleaned.avsc"
    ))
    .expect("the demo's cleaned schema");
    let records: Vec<Record> = flat
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut out = Record::new();
            for (name, v) in &r.fields {
                out.set(name, v.clone());
                if &**name == "hot_streak" {
                    let series = if i % 2 == 0 {
                        let mut m = Record::new();
                        m.set("target", Value::Int(3));
                        m.set("wins", Value::Int((i % 3) as i32));
                        m.set("losses", Value::Int((i % 2) as i32));
                        m.set("progress", Value::String("WLN".into()));
                        Value::Record(m)
                    } else {
                        Value::Null
                    };
                    out.set("mini_series", series);
                }
            }
            out
        })
        .collect();
    let codec = Codec::new(schema.clone(), Framing::SingleObject);
    let framed: Vec<Vec<u8>> = records
        .iter()
        .map(|r| codec.encode(r).expect("encode"))
        .collect();
    for (r, b) in records.iter().zip(&framed) {
        assert_eq!(&codec.decode(b).expect("decode"), r, "nested round trip");
    }
    let bytes = framed.iter().map(|b| b.len() - 10).sum::<usize>() as f64 / records.len() as f64;
    let encode = rate(n, |i| {
        black_box(codec.encode(&records[i % DISTINCT]).expect("encode"));
    });
    let decode = rate(n, |i| {
        black_box(codec.decode(&framed[i % DISTINCT]).expect("decode"));
    });
    println!(
        "\n{} with mini_series ({} fields, nested; the codec's general path)",
        schema.name,
        schema.fields.len()
    );
    println!(
        "{:<36} {:>14.0} {:>14.0} {:>10.1}",
        "etl_pipe::codec (general path)", encode, decode, bytes
    );
}
