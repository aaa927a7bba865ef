//! The benchmark's input: realistic scored league records, the fresh topics they go to, and
//! producing them (Avro, the real codec) round-robin over the partitions.
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::fatal;
use crate::codec::Codec;
use crate::config::{Config, TopicRole};
use crate::record::{Record, RecordSchema, Value};
use crate::stages::sinks::SinkError;

/// Whether record keys come in random order (`bench-sink --random-keys`, as the pipeline's
/// summoner ids do) instead of ascending with the record number; set once when a run starts.
static RANDOM_KEYS: AtomicBool = AtomicBool::new(false);

pub(super) fn set_random_keys(on: bool) {
    RANDOM_KEYS.store(on, Ordering::Relaxed);
}

/// Record `i`'s summoner id: unique per `i`; ascending with `i`, or led by a 64-bit mix of `i`
/// (splitmix64's finalizer, a bijection) so that consecutive records' keys land anywhere.
fn summoner_id(i: usize) -> String {
    if RANDOM_KEYS.load(Ordering::Relaxed) {
        let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        format!("{:016x}-summoner-{i:010}", z ^ (z >> 31))
    } else {
        format!("summoner-{i:010}-{:016x}", i * 2_654_435_761)
    }
}

/// A realistic scored league entry, varied by `i`.
pub fn league_record(schema: &RecordSchema, i: usize) -> Record {
    const TIERS: [&str; 6] = ["IRON", "BRONZE", "SILVER", "GOLD", "PLATINUM", "DIAMOND"];
    const RANKS: [&str; 4] = ["I", "II", "III", "IV"];
    let wins = (i * 7 % 300) as i32;
    let losses = (i * 11 % 280) as i32;
    let games = wins + losses;
    let mut r = Record::new();
    for f in &schema.fields {
        let v = match f.name.as_str() {
            "summoner_id" => Value::String(summoner_id(i)),
            "summoner_name" => Value::String(format!("Player {i}")),
            "queue_type" => Value::String("RANKED_SOLO_5x5".into()),
            "tier" => Value::String(TIERS[i % 6].into()),
            "rank" => Value::String(RANKS[i % 4].into()),
            "league_points" => Value::Int((i % 100) as i32),
            "wins" => Value::Int(wins),
            "losses" => Value::Int(losses),
            "veteran" => Value::Boolean(i % 3 == 0),
            "inactive" => Value::Boolean(false),
            "fresh_blood" => Value::Boolean(i % 5 == 0),
            "hot_streak" => Value::Boolean(i % 7 == 0),
            "games" => Value::Int(games),
            "win_rate" if games > 0 => Value::Double(wins as f64 / games as f64),
            "source" => Value::String("riot-league-v4".into()),
            "trace_id" => Value::String(format!("{:032x}", (i as u128) * 0x9E37_79B9_7F4A_7C15)),
            "source_topic" => Value::String("etl.raw".into()),
            "source_partition" => Value::Int((i % 3) as i32),
            "source_offset" => Value::Long(i as i64),
            "fetched_at" => Value::TimestampMillis(1_700_000_000_000 + i as i64),
            "quality_window" => Value::String(format!(
                "etl.cleaned/{}/{}-{}",
                i % 3,
                i / 1000 * 1000,
                i / 1000 * 1000 + 999
            )),
            "quality_decision" => Value::String("PASS".into()),
            _ => match (&f.ty, f.nullable) {
                (_, true) => Value::Null,
                (crate::record::FieldType::String, _) => Value::String(format!("v{i}")),
                (crate::record::FieldType::Int, _) => Value::Int(i as i32),
                (crate::record::FieldType::Long, _) => Value::Long(i as i64),
                (crate::record::FieldType::TimestampMillis, _) => Value::TimestampMillis(i as i64),
                (crate::record::FieldType::Boolean, _) => Value::Boolean(true),
                _ => Value::Double(i as f64),
            },
        };
        r.fields.push((f.name.as_str().into(), v));
    }
    r
}

/// The record's Kafka key: its `summoner_id`.
pub(super) fn key_of(r: &Record, i: usize) -> String {
    match r.get("summoner_id") {
        Some(Value::String(s)) => s.clone(),
        _ => format!("k{i}"),
    }
}

/// Record `j` as produced: its key, its Avro payload and a `traceparent` header.
pub(super) fn encoded(
    codec: &Codec,
    schema: &RecordSchema,
    j: usize,
) -> Result<(String, Vec<u8>, rdkafka::message::OwnedHeaders), SinkError> {
    let r = league_record(schema, j);
    let key = key_of(&r, j);
    let bytes = codec.encode(&r).map_err(|e| fatal("encoding", e))?;
    let tp = format!("00-{:032x}-{:016x}-01", (j as u128) + 1, j + 1);
    let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
        key: crate::kafka::headers::TRACEPARENT,
        value: Some(tp.as_str()),
    });
    Ok((key, bytes, headers))
}

/// Record `i` as the document sink-mongo writes (`_id` = its key, lineage from a message of
/// partition 0 at offset `i` of topic `bench`).
pub(super) fn league_document(
    schema: &RecordSchema,
    i: usize,
    loaded_at: mongodb::bson::DateTime,
) -> Result<(mongodb::bson::Bson, mongodb::bson::Document), SinkError> {
    let r = league_record(schema, i);
    let msg = crate::stages::sinks::SinkMessage {
        partition: 0,
        offset: i as i64,
        key: Some(key_of(&r, i).into_bytes()),
        payload: None,
        headers: None,
    };
    let target = crate::stages::sinks::mongo::Target {
        key_field: None,
        decimals: Default::default(),
        topic: "bench",
        loaded_at,
    };
    crate::stages::sinks::mongo::document(&target, &msg, &r)
        .map_err(|e| fatal("document", e.message))
}

/// Drops the MongoDB databases earlier runs left (`etl_bench_*` other than `db`: a run leaves
/// its own in place, FerretDB may still be writing it when the run ends). Each held ~800 MB
/// of FerretDB's SQLite files after a 1 M-record run.
pub(super) async fn drop_earlier_databases(cfg: &Config, db: &str) -> Result<(), SinkError> {
    let client = mongodb::Client::with_uri_str(&cfg.mongo.uri)
        .await
        .map_err(|e| fatal("mongo client", e))?;
    let names = client
        .list_database_names()
        .await
        .map_err(|e| fatal("listing the MongoDB databases", e))?;
    for name in names
        .iter()
        .filter(|n| n.starts_with("etl_bench_") && n.as_str() != db)
    {
        client
            .database(name)
            .drop()
            .await
            .map_err(|e| fatal("dropping an earlier bench database", e))?;
        println!("  (dropped MongoDB database {name}, left by an earlier run)");
    }
    Ok(())
}

/// Collection `name` of database `db` on the configured MongoDB.
pub(super) async fn bench_collection(
    cfg: &Config,
    db: &str,
    name: &str,
) -> Result<mongodb::Collection<mongodb::bson::Document>, SinkError> {
    let client = mongodb::Client::with_uri_str(&cfg.mongo.uri)
        .await
        .map_err(|e| fatal("mongo client", e))?;
    Ok(client.database(db).collection(name))
}

pub(super) async fn create_topics(cfg: &Config, partitions: i32) -> Result<(), SinkError> {
    let admin: AdminClient<DefaultClientContext> =
        crate::kafka::base_config(&cfg.kafka)
            .create()
            .map_err(|e| fatal("creating the admin client", e))?;
    let scored = cfg.topics.name(TopicRole::Scored);
    let dl = cfg.topics.name(TopicRole::DeadLetter);
    let topics = [
        NewTopic::new(&scored, partitions, TopicReplication::Fixed(1)),
        NewTopic::new(&dl, 1, TopicReplication::Fixed(1)),
    ];
    admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .map_err(|e| fatal("creating topics", e))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

pub(super) async fn delete_topics(cfg: &Config) {
    if let Ok(admin) =
        crate::kafka::base_config(&cfg.kafka).create::<AdminClient<DefaultClientContext>>()
    {
        let names = [
            cfg.topics.name(TopicRole::Scored),
            cfg.topics.name(TopicRole::DeadLetter),
        ];
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let _ = admin.delete_topics(&refs, &AdminOptions::new()).await;
    }
}

/// Produces `n` encoded records round-robin over the partitions; returns records/s.
pub(super) async fn produce(
    cfg: &Config,
    codec: &Codec,
    n: usize,
    partitions: i32,
) -> Result<f64, SinkError> {
    let producer: FutureProducer = crate::kafka::producer_config(&cfg.kafka)
        .create()
        .map_err(|e| fatal("creating the producer", e))?;
    let topic = cfg.topics.name(TopicRole::Scored);
    let schema = codec.schema().clone();
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + 20_000).min(n);
        let mut futs = Vec::with_capacity(end - i);
        for j in i..end {
            let (key, bytes, headers) = encoded(codec, &schema, j)?;
            let mut rec = FutureRecord::to(&topic)
                .partition((j as i32) % partitions)
                .key(key.as_bytes())
                .payload(&bytes)
                .headers(headers);
            // Enqueue now; wait for room when librdkafka's queue is full.
            loop {
                match producer.send_result(rec) {
                    Ok(f) => {
                        futs.push(f);
                        break;
                    }
                    Err((e, back)) => {
                        if e.rdkafka_error_code()
                            != Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        {
                            return Err(fatal("producing", e));
                        }
                        rec = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
        for f in futs {
            f.await
                .map_err(|e| fatal("producing", e))?
                .map_err(|(e, _)| fatal("producing", e))?;
        }
        i = end;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_keys_are_unique_and_out_of_order() {
        set_random_keys(true);
        let keys: Vec<String> = (0..10_000).map(summoner_id).collect();
        set_random_keys(false);
        let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        let ascending = keys.windows(2).filter(|w| w[0] < w[1]).count();
        // Random order: about half of the neighbours ascend; ascending keys: all of them.
        assert!(
            (4_000..6_000).contains(&ascending),
            "{ascending} of 9 999 ascend"
        );
        assert_eq!(summoner_id(7), "summoner-0000000007-00000004538453d7");
    }
}
