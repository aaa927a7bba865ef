//! `replay` and `redrive` against the real broker, through the binary as a user runs them.
mod common;

use std::process::{Command, Output};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use etl_pipe::config::TopicRole;
use etl_pipe::kafka::{self, headers as h};

fn etl_pipe(envs: &[(String, String)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_etl-pipe"))
        .args(args)
        .envs(envs.iter().map(|(a, b)| (a, b)))
        .env("ETL__KAFKA__BROKERS", common::kafka_brokers())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn env_for(cfg: &etl_pipe::config::Config) -> Vec<(String, String)> {
    let mut v = vec![("ETL__PIPELINE__NAME".to_string(), cfg.pipeline.name.clone())];
    for role in TopicRole::ALL {
        v.push((
            format!("ETL__TOPICS__{}__NAME", role.key().to_uppercase()),
            cfg.topics.name(role),
        ));
    }
    v
}

async fn produce(topic: &str, partition: i32, n: usize) {
    let producer: FutureProducer = kafka::producer_config(&common::kafka_config())
        .create()
        .unwrap();
    for i in 0..n {
        producer
            .send(
                FutureRecord::to(topic)
                    .partition(partition)
                    .key(&format!("k{i}"))
                    .payload("x"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = kafka::consumer_config(&common::kafka_config(), group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    (0..partitions)
        .map(|p| {
            got.find_partition(topic, p)
                .unwrap()
                .offset()
                .to_raw()
                .unwrap_or(-1)
        })
        .collect()
}

#[tokio::test]
async fn replay_moves_group_offsets_dry_run_first_and_refuses_live_groups() {
    let cfg = common::test_config("replay");
    let topic = cfg.topics.name(TopicRole::Raw);
    let group = cfg.pipeline.group_id("clean");
    common::create_topic(&topic, 2).await;
    produce(&topic, 0, 10).await;
    produce(&topic, 1, 20).await;
    // The stage has processed everything: committed at the ends.
    {
        let c: BaseConsumer = kafka::consumer_config(&cfg.kafka, &group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(10))
            .unwrap();
        tpl.add_partition_offset(&topic, 1, Offset::Offset(20))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
    }
    let env = env_for(&cfg);

    let dry = etl_pipe(&env, &["replay", "--stage", "clean", "--to-earliest"]);
    let out = text(&dry);
    assert!(dry.status.success(), "{out}");
    assert!(
        out.contains("total records the stage will process from the new position: 30"),
        "{out}"
    );
    assert!(out.contains("dry run"), "{out}");
    assert_eq!(
        committed(&group, &topic, 2),
        vec![10, 20],
        "a dry run changes nothing"
    );

    let run = etl_pipe(
        &env,
        &["replay", "--stage", "clean", "--to-earliest", "--execute"],
    );
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(committed(&group, &topic, 2), vec![0, 0]);

    let run = etl_pipe(
        &env,
        &[
            "replay",
            "--stage",
            "clean",
            "--to-offset",
            "1:15",
            "--execute",
        ],
    );
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(
        committed(&group, &topic, 2),
        vec![0, 15],
        "other partitions are left alone"
    );

    let run = etl_pipe(
        &env,
        &["replay", "--stage", "clean", "--shift-by", "3", "--execute"],
    );
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(committed(&group, &topic, 2), vec![3, 18]);

    let run = etl_pipe(
        &env,
        &[
            "replay",
            "--stage",
            "clean",
            "--to-datetime",
            "2999-01-01",
            "--execute",
        ],
    );
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(
        committed(&group, &topic, 2),
        vec![10, 20],
        "no record after the time: to the end"
    );

    // A live member: refuse, name the group.
    let live: StreamConsumer = kafka::consumer_config(&cfg.kafka, &group).create().unwrap();
    live.subscribe(&[&topic]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while live.assignment().unwrap().count() == 0 && tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(200), live.recv()).await;
    }
    let refused = etl_pipe(
        &env,
        &["replay", "--stage", "clean", "--to-earliest", "--execute"],
    );
    let out = text(&refused);
    assert!(!refused.status.success(), "{out}");
    assert!(out.contains("live member") && out.contains(&group), "{out}");
    assert_eq!(committed(&group, &topic, 2), vec![10, 20]);
}

#[tokio::test]
async fn redrive_sends_back_by_filter_and_stops_at_max_attempts() {
    let cfg = common::test_config("redrive");
    let raw = cfg.topics.name(TopicRole::Raw);
    let dlq = cfg.topics.name(TopicRole::DeadLetter);
    common::create_topic(&raw, 1).await;
    common::create_topic(&dlq, 1).await;
    let producer: FutureProducer = kafka::producer_config(&cfg.kafka).create().unwrap();
    let send = |key: &'static str, kind: &'static str, attempts: u32, source: bool| {
        let raw = raw.clone();
        let dlq = dlq.clone();
        let producer = producer.clone();
        async move {
            let dl = h::DeadLetter {
                stage: "clean",
                kind,
                message: "bad",
                source: if source {
                    Some((raw.as_str(), 0, 7))
                } else {
                    None
                },
            };
            let mut headers = OwnedHeaders::new().insert(Header {
                key: h::TRACEPARENT,
                value: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            });
            if attempts > 1 {
                headers = headers.insert(Header {
                    key: h::ATTEMPTS,
                    value: Some(&(attempts - 1).to_string()),
                });
            }
            // Build the envelope the way a stage does, from the record's own headers.
            let tmp = FutureRecord::to(&dlq)
                .key(key)
                .payload("{\"x\":1}")
                .headers(headers);
            let owned = tmp.headers.clone().unwrap();
            let borrowed = owned.as_borrowed();
            let env = dl.headers(Some(borrowed));
            producer
                .send(
                    FutureRecord::to(&dlq)
                        .key(key)
                        .payload("{\"x\":1}")
                        .headers(env),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    };
    send("a", "mapping", 1, true).await;
    send("b", "mapping", 1, true).await;
    send("c", "invalid_json", 1, true).await;
    send("d", "mapping", 3, true).await; // already tried 3 times
    send("e", "mapping", 1, false).await; // never was in Kafka

    let env = env_for(&cfg);
    let dry = etl_pipe(
        &env,
        &[
            "redrive",
            "--from",
            "dead-letter",
            "--kind",
            "mapping",
            "--dry-run",
        ],
    );
    let out = text(&dry);
    assert!(dry.status.success(), "{out}");
    assert!(out.contains("would send 2"), "{out}");
    assert!(
        out.contains("1 filtered out, 1 at max attempts, 1 without a source topic"),
        "{out}"
    );

    let run = etl_pipe(
        &env,
        &["redrive", "--from", "dead-letter", "--kind", "mapping"],
    );
    assert!(run.status.success(), "{}", text(&run));

    let c: StreamConsumer = kafka::consumer_config(&cfg.kafka, &common::unique("check"))
        .create()
        .unwrap();
    c.subscribe(&[&raw]).unwrap();
    let mut got = Vec::new();
    while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(8), c.recv()).await {
        let hs = m.headers().unwrap();
        assert_eq!(h::get_str(hs, h::ATTEMPTS), Some("1"));
        assert_eq!(
            h::get_str(hs, h::TRACEPARENT),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert!(
            h::get_str(hs, h::ERROR_KIND).is_none(),
            "the error envelope is not sent back"
        );
        assert_eq!(m.payload(), Some(&b"{\"x\":1}"[..]));
        got.push(String::from_utf8(m.key().unwrap().to_vec()).unwrap());
        if got.len() == 2 {
            // Keep reading briefly to catch extras.
            if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(2), c.recv()).await {
                got.push(String::from_utf8(m.key().unwrap().to_vec()).unwrap());
            }
            break;
        }
    }
    got.sort();
    assert_eq!(got, vec!["a", "b"]);
    c.unsubscribe();
}
