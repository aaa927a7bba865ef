//! The records of the nested conformance test (`tests/conformance.rs`): the fixture
//! `tests/fixtures/nested_entry.avsc` filled with edge values and varied ones.
use etl_pipe::record::{Record, Value};

/// The nested fixture of issue 20: every Avro 1.12 type the codec carries.
pub const NESTED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/nested_entry.avsc"
);

/// splitmix64 of `(i, salt)`: varied but reproducible values.
pub fn mix(i: usize, salt: u64) -> u64 {
    let mut z = (i as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(salt.wrapping_mul(0xd1b5_4a32_d192_ed03))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A value of `mix` in `-m..m` (`m` > 0).
pub fn signed(i: usize, salt: u64, m: i64) -> i64 {
    (mix(i, salt) % (2 * m as u64)) as i64 - m
}

/// Record `i` of the nested fixture. The first few records hold the edge values (extreme
/// decimals of full precision, two's complement byte boundaries, the first and last instant
/// Python's datetime has, i64/i32 extremes, infinities, -0.0, subnormals, NaN among the
/// doubles); the rest vary by `mix`. Empty and non-empty arrays and maps, null and set
/// nullable records, every branch of the `choice` union in turn, micros not a multiple of
/// 1000.
pub fn nested(i: usize) -> Record {
    use etl_pipe::record::Decimal;
    let rec = |fields: Vec<(&str, Value)>| Record {
        fields: fields.into_iter().map(|(n, v)| (n.into(), v)).collect(),
    };
    let s = |v: &str| Value::String(v.into());
    let bytes = |n: usize, salt: u64| -> Vec<u8> {
        (0..n)
            .map(|k| (mix(i * 1000 + k, salt) & 0xff) as u8)
            .collect()
    };
    let pick = |edges: &[i64], other: i64| edges.get(i).copied().unwrap_or(other);
    // Micros never a multiple of 1000 past the edges.
    let odd_us = |us: i64| if us % 1000 == 0 { us + 7 } else { us };

    let id = match i {
        0 => uuid::Uuid::nil(),
        1 => uuid::Uuid::from_u128(u128::MAX),
        _ => uuid::Uuid::from_u128(((mix(i, 1) as u128) << 64) | mix(i, 2) as u128),
    };
    // decimal(10, 2) on bytes: the 10-digit extremes and two's complement boundaries.
    let score = pick(
        &[
            9_999_999_999,
            -9_999_999_999,
            0,
            -1,
            1,
            127,
            128,
            -128,
            -129,
            255,
            -32_768,
            -12_347,
        ],
        signed(i, 3, 10_000_000_000),
    );
    // decimal(18, 4) on fixed(8): the 18-digit extremes.
    let prize = pick(
        &[
            999_999_999_999_999_999,
            -999_999_999_999_999_999,
            0,
            -1,
            1,
            -10_000,
            i64::from(i32::MIN),
        ],
        signed(i, 4, 1_000_000_000_000_000_000),
    );
    let hash = match i {
        0 => vec![0; 16],
        1 => vec![0xff; 16],
        _ => bytes(16, 5),
    };
    let raw = match i % 5 {
        0 => vec![],
        1 => vec![0],
        2 => vec![0xff, 0, b'\'', b'\\', b'"', 0x80],
        // A length of more than one varint byte.
        3 => bytes(300, 6),
        _ => bytes(1 + (mix(i, 7) % 40) as usize, 8),
    };
    let tags = match i % 4 {
        0 => vec![],
        1 => vec![s("")],
        2 => vec![
            s("a"),
            s("it's \"quoted\" \\ too"),
            s("名前 ünï"),
            s("emoji 🎮\n\t"),
        ],
        // A block count of more than one varint byte.
        _ => (0..100).map(|k| s(&format!("t{i}.{k}"))).collect(),
    };
    let counts = match i % 3 {
        0 => vec![],
        1 => vec![
            (String::new(), Value::Long(i64::MIN)),
            ("max".into(), Value::Long(i64::MAX)),
            ("ключ 🔑".into(), Value::Long(-1)),
        ],
        _ => (0..70)
            .map(|k| (format!("k{k}"), Value::Long(mix(i * 100 + k, 9) as i64)))
            .collect(),
    };
    let series = |k: usize| {
        rec(vec![
            ("progress", s(["WL-", "", "LLWWW"][k % 3])),
            (
                "target",
                Value::Int(if k == 1 { i32::MAX } else { 3 + k as i32 }),
            ),
            (
                "wins",
                Value::Int(if k == 1 { i32::MIN } else { k as i32 % 3 }),
            ),
            ("losses", Value::Int(-(k as i32))),
        ])
    };
    let mini_series = if i % 3 == 0 {
        Value::Null
    } else {
        Value::Record(series(i))
    };
    let player = |k: usize| {
        Value::Record(rec(vec![
            ("name", s(&format!("player {k} 플레이어"))),
            (
                "puuid",
                Value::Uuid(uuid::Uuid::from_u128(mix(i * 10 + k, 10) as u128)),
            ),
            (
                "tier",
                match (i + k) % 4 {
                    0 => Value::Null,
                    t => Value::Enum(["IRON", "GOLD", "DIAMOND"][t - 1].into()),
                },
            ),
            (
                "series",
                if (i + k) % 2 == 0 {
                    Value::Null
                } else {
                    Value::Record(series(i + k))
                },
            ),
        ]))
    };
    let players = match i % 4 {
        0 => vec![],
        1 => vec![player(0)],
        2 => (0..3).map(player).collect(),
        _ => (0..2).map(player).collect(),
    };
    // Every branch of ["string", "long", "Hash16", "null"] in turn.
    let choice = match i % 4 {
        0 if i % 8 == 0 => s(""),
        0 => s(&format!("choice {i}")),
        1 if i == 1 => Value::Long(i64::MIN),
        1 => Value::Long(mix(i, 11) as i64),
        2 => Value::Fixed(bytes(16, 12)),
        _ => Value::Null,
    };
    let doubles = |n: usize, salt: u64| -> Vec<Value> {
        (0..n)
            .map(|k| {
                let (a, b) = (mix(i * 100 + k, salt) as i64, mix(i * 100 + k, salt + 1));
                Value::Double(a as f64 / (b | 1) as f64 * 1e-3)
            })
            .collect()
    };
    let samples = match i % 4 {
        0 => vec![],
        1 => vec![("empty".to_string(), Value::Array(vec![]))],
        2 => vec![
            (
                "edges".to_string(),
                Value::Array(
                    [
                        0.5,
                        0.1,
                        -1e300,
                        -0.0,
                        f64::INFINITY,
                        f64::NEG_INFINITY,
                        5e-324,
                        f64::MAX,
                        f64::MIN_POSITIVE,
                        f64::NAN,
                    ]
                    .into_iter()
                    .map(Value::Double)
                    .collect(),
                ),
            ),
            ("x".to_string(), Value::Array(doubles(5, 13))),
        ],
        _ => (0..4)
            .map(|k| (format!("s{k}"), Value::Array(doubles(k * 3, 15 + k as u64))))
            .collect(),
    };
    // 0001-01-01 and 9999-12-31, Python's first and last date.
    let day = pick(
        &[-719_162, 2_932_896, 0, -1],
        19_000 + signed(i, 16, 40_000),
    ) as i32;
    let at_ms = pick(&[0, 86_399_999, 1], (mix(i, 17) % 86_400_000) as i64) as i32;
    let at_us = pick(
        &[0, 86_399_999_999, 1],
        odd_us((mix(i, 18) % 86_400_000_000) as i64),
    );
    // 0001-01-01T00:00:00 and 9999-12-31T23:59:59.999(999), Python's first and last instant.
    let (first_ms, last_ms) = (-62_135_596_800_000i64, 253_402_300_799_999i64);
    let (first_us, last_us) = (first_ms * 1000, last_ms * 1000 + 999);
    let ts_ms = pick(
        &[first_ms, last_ms, 0, -1, -1001],
        1_700_000_000_123 + signed(i, 19, 1_000_000_000_000),
    );
    let ts_us = pick(
        &[first_us, last_us, -1, 1, -999_999],
        odd_us(1_700_000_000_123_456 + signed(i, 20, 1_000_000_000_000_000)),
    );
    let local_ms = pick(
        &[last_ms, first_ms, -1, 0, 999],
        1_600_000_000_000 + signed(i, 21, 1_000_000_000_000),
    );
    let local_us = pick(
        &[last_us, first_us, 1, -1, -1_000_001],
        odd_us(1_600_000_000_000_000 + signed(i, 22, 1_000_000_000_000_000)),
    );
    let flag = match i % 3 {
        0 => Value::Null,
        1 => Value::Boolean(true),
        _ => Value::Boolean(false),
    };
    let ratios = [
        0.1f32,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-45,
        -3.4e38,
    ];
    let ratio = ratios
        .get(i)
        .copied()
        .unwrap_or(signed(i, 23, 1 << 40) as f32 / 3.0e6);

    rec(vec![
        ("id", Value::Uuid(id)),
        ("region", Value::Enum(["EUW", "NA", "KR"][i % 3].into())),
        ("score", Value::Decimal(Decimal::new(score as i128, 2))),
        ("prize", Value::Decimal(Decimal::new(prize as i128, 4))),
        ("hash", Value::Fixed(hash)),
        ("raw", Value::Bytes(raw)),
        ("tags", Value::Array(tags)),
        ("counts", Value::Map(counts)),
        ("mini_series", mini_series),
        ("players", Value::Array(players)),
        ("choice", choice),
        ("samples", Value::Map(samples)),
        ("day", Value::Date(day)),
        ("at_ms", Value::TimeMillis(at_ms)),
        ("at_us", Value::TimeMicros(at_us)),
        ("ts_ms", Value::TimestampMillis(ts_ms)),
        ("ts_us", Value::TimestampMicros(ts_us)),
        ("local_ms", Value::LocalTimestampMillis(local_ms)),
        ("local_us", Value::LocalTimestampMicros(local_us)),
        ("flag", flag),
        ("ratio", Value::Float(ratio)),
    ])
}

/// The key a nested record is produced with (by etl-pipe and by Python): its `id`.
pub fn nested_key(r: &Record) -> String {
    match r.get("id") {
        Some(Value::Uuid(u)) => u.hyphenated().to_string(),
        other => panic!("nested record without a uuid id: {other:?}"),
    }
}
