//! Avro messages through the real local Kafka: what a clean stage writes (both framings,
//! the cleaned schema) a score stage reads with the scored schema, and a garbage message in
//! the same topic is a poison error, not a crash.
mod common;

use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

use etl_pipe::codec::{load_schema, load_schema_dir, Codec, Framing};
use etl_pipe::kafka;
use etl_pipe::record::{Record, Value};

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");

fn entry(i: i32) -> Record {
    let mut r = Record::new();
    r.set("summoner_id", Value::String(format!("s{i}")));
    r.set("summoner_name", Value::String(format!("名前 {i}")));
    r.set("queue_type", Value::String("RANKED_SOLO_5x5".into()));
    r.set("tier", Value::String("GOLD".into()));
    r.set("rank", Value::String("IV".into()));
    r.set("league_points", Value::Int(i));
    r.set("wins", Value::Int(10));
    r.set("losses", Value::Int(i));
    r.set("veteran", Value::Null);
    r.set("inactive", Value::Boolean(false));
    r.set("fresh_blood", Value::Null);
    r.set("hot_streak", Value::Boolean(true));
    r.set("games", Value::Int(10 + i));
    r.set("win_rate", Value::Double(10.0 / (10 + i) as f64));
    r.set("source", Value::String("league-v4".into()));
    r.set("trace_id", Value::Null);
    r.set("source_topic", Value::String("etl.raw".into()));
    r.set("source_partition", Value::Int(0));
    r.set("source_offset", Value::Long(i as i64));
    r.set("fetched_at", Value::TimestampMillis(1_735_689_600_000));
    r
}

#[tokio::test]
async fn cleaned_messages_through_kafka_decode_as_scored() {
    let mut config = common::test_config("codec_kafka");
    let topic = config.topics.name(etl_pipe::config::TopicRole::Cleaned);
    common::create_topic(&topic, 1).await;
    config.kafka.schema_registry_url = None;

    let cleaned = load_schema(format!("{SCHEMAS}/league_entry.cleaned.avsc")).unwrap();
    let scored = load_schema(format!("{SCHEMAS}/league_entry.scored.avsc")).unwrap();
    // Without a registry, a writer gives single-object framing.
    let single = Codec::writer(&config.kafka, cleaned.clone(), &topic)
        .await
        .unwrap();
    assert_eq!(single.framing(), Framing::SingleObject);
    let confluent = Codec::new(cleaned.clone(), Framing::Confluent { schema_id: 5 });

    let producer: FutureProducer = kafka::producer_config(&config.kafka).create().unwrap();
    let mut sent = Vec::new();
    for i in 0..20 {
        let r = entry(i);
        let codec = if i % 2 == 0 { &single } else { &confluent };
        let payload = codec.encode(&r).unwrap();
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&format!("s{i}"))
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        sent.push(r);
    }
    producer
        .send(
            FutureRecord::to(&topic)
                .key("bad")
                .payload(b"{\"not\": \"avro\"}".as_slice()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    // The score stage's reader: scored schema, knows every cleaned version and id 5.
    let reader = Codec::new(scored.clone(), Framing::SingleObject);
    for (_, old) in load_schema_dir(format!("{SCHEMAS}/history")).unwrap() {
        reader.add_writer_schema(old).unwrap();
    }
    reader.add_schema_id(5, cleaned.clone()).unwrap();

    let consumer: StreamConsumer = kafka::consumer_config(&config.kafka, &common::unique("g"))
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut stream = consumer.stream();
    let mut decoded = Vec::new();
    let mut poison = Vec::new();
    while decoded.len() + poison.len() < 21 {
        let m = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("messages within 30s")
            .unwrap()
            .unwrap();
        match reader.decode_async(m.payload().unwrap_or_default()).await {
            Ok(r) => decoded.push(r),
            Err(e) => {
                assert!(!e.is_retriable(), "{e}");
                poison.push((e.kind(), e.to_string()));
            }
        }
    }
    assert_eq!(decoded.len(), 20);
    for (r, original) in decoded.iter().zip(&sent) {
        assert_eq!(r.fields.len(), scored.fields.len());
        for (name, v) in &original.fields {
            assert_eq!(r.get(name), Some(v), "{name}");
        }
        assert_eq!(r.get("quality_decision"), Some(&Value::Null));
    }
    assert_eq!(poison.len(), 1);
    assert_eq!(poison[0].0, "avro-malformed");
    assert!(poison[0].1.contains("0x7b"), "{}", poison[0].1);
}
