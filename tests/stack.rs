//! The crates we build on, proven against the real local servers: rdkafka transactions
//! with a read_committed consumer, sqlx transactions on MariaDB, the mongodb driver on FerretDB.
mod common;

use std::time::Duration;

use futures::StreamExt;
use mongodb::bson::{doc, Document};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::Message;

use etl_pipe::kafka;

async fn read_all(topic: &str, expect_at_least: usize) -> Vec<String> {
    let consumer: StreamConsumer =
        kafka::consumer_config(&common::kafka_config(), &common::unique("g"))
            .create()
            .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut stream = consumer.stream();
    loop {
        // After the expected count, keep reading briefly to catch anything extra.
        let wait = if out.len() >= expect_at_least {
            Duration::from_secs(2)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(Ok(m))) => out.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap()),
            Ok(Some(Err(e))) => panic!("consume error: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    out
}

#[tokio::test]
async fn kafka_produce_and_consume() {
    let topic = common::unique("stack_plain");
    common::create_topic(&topic, 1).await;
    let producer: FutureProducer = kafka::producer_config(&common::kafka_config())
        .create()
        .unwrap();
    for i in 0..10 {
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&format!("k{i}"))
                    .payload(&format!("v{i}")),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let got = read_all(&topic, 10).await;
    assert_eq!(got, (0..10).map(|i| format!("v{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn kafka_read_committed_sees_only_committed_transactions() {
    let topic = common::unique("stack_txn");
    common::create_topic(&topic, 1).await;
    let producer: FutureProducer =
        kafka::transactional_producer_config(&common::kafka_config(), &common::unique("txn"))
            .create()
            .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();

    producer.begin_transaction().unwrap();
    for i in 0..3 {
        producer
            .send(
                FutureRecord::<(), _>::to(&topic).payload(&format!("committed-{i}")),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    producer
        .commit_transaction(Duration::from_secs(30))
        .unwrap();

    producer.begin_transaction().unwrap();
    for i in 0..3 {
        producer
            .send(
                FutureRecord::<(), _>::to(&topic).payload(&format!("aborted-{i}")),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    producer.abort_transaction(Duration::from_secs(30)).unwrap();

    producer.begin_transaction().unwrap();
    producer
        .send(
            FutureRecord::<(), _>::to(&topic).payload("committed-3"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    producer
        .commit_transaction(Duration::from_secs(30))
        .unwrap();

    let got = read_all(&topic, 4).await;
    assert_eq!(
        got,
        vec!["committed-0", "committed-1", "committed-2", "committed-3"]
    );
}

#[tokio::test]
async fn mariadb_commit_and_rollback() {
    let (_db, pool) = common::mysql_db("stack_sql").await;
    sqlx::query("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB")
        .execute(&pool)
        .await
        .unwrap();

    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO t VALUES (1, 'kept'), (2, 'kept')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO t VALUES (3, 'gone')")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE t SET v = 'changed' WHERE id = 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let rows: Vec<(i32, String)> = sqlx::query_as("SELECT id, v FROM t ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows, vec![(1, "kept".to_string()), (2, "kept".to_string())]);
}

#[tokio::test]
async fn ferretdb_unordered_insert_many_with_duplicate_and_update_upserts() {
    let db = common::mongo_db("stack_mongo").await;
    let coll = db.collection::<Document>("entries");
    coll.insert_one(doc! {"_id": "b", "n": 0}).await.unwrap();

    // Unordered insert_many: the duplicate `b` fails, every other document lands.
    let res = coll
        .insert_many(vec![
            doc! {"_id": "a", "n": 1},
            doc! {"_id": "b", "n": 2},
            doc! {"_id": "c", "n": 3},
        ])
        .ordered(false)
        .await;
    let err = res.expect_err("duplicate key must be reported");
    match *err.kind {
        mongodb::error::ErrorKind::InsertMany(ref e) => {
            let we = e.write_errors.as_ref().expect("write errors");
            assert_eq!(we.len(), 1);
            assert_eq!(we[0].index, 1);
            assert_eq!(we[0].code, 11000);
        }
        ref other => panic!("unexpected error kind: {other:?}"),
    }
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 3);

    // The `update` command with several upsert statements: one update, two inserts.
    let reply = db
        .run_command(doc! {
            "update": "entries",
            "ordered": false,
            "updates": [
                {"q": {"_id": "a"}, "u": {"$set": {"n": 10}}, "upsert": true},
                {"q": {"_id": "d"}, "u": {"$set": {"n": 4}}, "upsert": true},
                {"q": {"_id": "e"}, "u": {"$set": {"n": 5}}, "upsert": true},
            ],
        })
        .await
        .unwrap();
    assert_eq!(
        reply
            .get_i32("n")
            .unwrap_or_else(|_| reply.get_i64("n").unwrap() as i32),
        3
    );
    assert_eq!(reply.get_array("upserted").unwrap().len(), 2);
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 5);
    let a = coll.find_one(doc! {"_id": "a"}).await.unwrap().unwrap();
    assert_eq!(a.get_i32("n").unwrap(), 10);
}

/// Counts the global errors librdkafka reports through the client context (what the default
/// context logs at ERROR as `librdkafka: Global error: …`).
#[derive(Default, Clone)]
struct CountingContext(std::sync::Arc<std::sync::atomic::AtomicUsize>);
impl rdkafka::ClientContext for CountingContext {
    fn error(&self, _: rdkafka::error::KafkaError, _: &str) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
impl rdkafka::consumer::ConsumerContext for CountingContext {}

/// Reads `topic` partition 0 to its end with `enable.partition.eof`, through a consumer with
/// context `ctx`; returns the records read.
fn read_to_eof<C: rdkafka::consumer::ConsumerContext + 'static>(topic: &str, ctx: C) -> usize {
    use rdkafka::consumer::BaseConsumer;
    let c: BaseConsumer<C> = kafka::consumer_config(&common::kafka_config(), &common::unique("g"))
        .set("enable.partition.eof", "true")
        .create_with_context(ctx)
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut n = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(std::time::Instant::now() < deadline, "no partition end");
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => n += 1,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => panic!("{e}"),
            None => {}
        }
    }
    // Serve the callbacks that follow the end.
    let _ = c.poll(Duration::from_millis(300));
    n
}

/// Issue #19 item 4: reading extract's checkpoints to their end logged
/// `librdkafka: Global error: PartitionEOF` at ERROR on every start. librdkafka reports the
/// end to the error callback too; the checkpoint reader's context (`kafka::reader::EofReader`)
/// drops exactly that.
#[tokio::test]
async fn a_partition_end_is_no_global_error_for_the_checkpoint_reader() {
    let topic = common::unique("stack_eof");
    common::create_topic(&topic, 1).await;
    let producer: FutureProducer = kafka::producer_config(&common::kafka_config())
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&topic).key("k").payload("v"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let plain = CountingContext::default();
    assert_eq!(read_to_eof(&topic, plain.clone()), 1);
    assert!(
        plain.0.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "librdkafka reports the partition end as a global error (the cause)"
    );
    let reader = kafka::reader::EofReader::default();
    assert_eq!(read_to_eof(&topic, reader.clone()), 1);
    assert_eq!(reader.errors_logged(), 0, "the reader logs no global error");
}
