//! `sink-mongo` against the real local stack (FerretDB): whole documents with lineage,
//! per-document errors to dead-letter, offsets committed after the write, graceful shutdown.
mod common;
mod sink_support;

use std::time::Duration;

use mongodb::bson::{doc, Bson, Document};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use etl_pipe::config::{Config, TopicRole};
use etl_pipe::record::Value;
use etl_pipe::stages::sinks::mongo;
use sink_support::*;

const COLL: &str = "league_entry";

async fn count(db: &mongodb::Database) -> i64 {
    db.collection::<Document>(COLL)
        .count_documents(doc! {})
        .await
        .map(|n| n as i64)
        .unwrap_or(-1)
}

/// The consumer group's committed offsets on the scored topic.
fn committed(cfg: &Config, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer =
        etl_pipe::kafka::consumer_config(&cfg.kafka, &cfg.pipeline.group_id(mongo::STAGE))
            .create()
            .unwrap();
    let mut tpl = TopicPartitionList::new();
    let topic = cfg.topics.name(TopicRole::Scored);
    for p in 0..partitions {
        tpl.add_partition(&topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_whole_documents_with_lineage_and_commits_offsets() {
    let db = common::mongo_db("sink_docs").await;
    let cfg = config("sink_docs", db.name(), 40);
    topics(&cfg, 2).await;
    let s = schema();
    let mut msgs = spread(&s, 100, 2);
    // Key k3 again, later in its partition: the document is its last version.
    let mut r = record("k3", 999);
    r.set("tier", Value::String("MASTER".into()));
    msgs.push((1, "k3".into(), encode(&s, &r)));
    produce(&cfg, &msgs).await;
    let task = spawn_mongo(&cfg, &s, codec(&s));
    assert_eq!(wait_for(100, || count(&db)).await, 100);
    stop(task).await.unwrap();

    let d = db
        .collection::<Document>(COLL)
        .find_one(doc! {"_id": "k3"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.get_i32("league_points").unwrap(), 999);
    assert_eq!(d.get_str("tier").unwrap(), "MASTER");
    assert_eq!(d.get_str("summoner_name").unwrap(), "Näme k3 🙂");
    assert_eq!(d.get_i64("source_offset").unwrap(), 1_234_567_890_123);
    assert_eq!(
        d.get_datetime("fetched_at").unwrap().timestamp_millis(),
        1_700_000_000_123
    );
    assert_eq!(d.get("fresh_blood"), Some(&Bson::Null));
    assert_eq!(d.get_f64("win_rate").unwrap(), 0.6);
    assert_eq!(d.get_str("_trace_id").unwrap(), TRACE);
    assert_eq!(
        d.get_str("_source_topic").unwrap(),
        cfg.topics.name(TopicRole::Scored)
    );
    assert_eq!(d.get_i32("_source_partition").unwrap(), 1);
    assert_eq!(d.get_i64("_source_offset").unwrap(), 50);
    assert!(d.get_datetime("_loaded_at").is_ok());
    // Every schema field plus _id and five lineage fields.
    assert_eq!(d.len(), s.fields.len() + 6, "{d:?}");
    // Offsets were committed after the writes.
    assert_eq!(committed(&cfg, 2), vec![50, 51]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_documents_go_to_dead_letter_and_the_rest_is_written() {
    let db = common::mongo_db("sink_docerr").await;
    let cfg = config("sink_docerr", db.name(), 100);
    topics(&cfg, 1).await;
    // A unique index on another field: a second summoner with the same name is rejected.
    db.run_command(doc! {
        "createIndexes": COLL,
        "indexes": [{"key": {"summoner_name": 1}, "name": "uniq_name", "unique": true}],
    })
    .await
    .unwrap();
    let s = schema();
    let c = etl_pipe::codec::Codec::new(s.clone(), etl_pipe::codec::Framing::SingleObject);
    let mut msgs = Vec::new();
    for i in 0..20 {
        let key = format!("k{i}");
        let mut r = record(&key, i);
        if i == 12 {
            r.set("summoner_name", Value::String("Näme k5 🙂".into()));
        }
        msgs.push((0, key, c.encode(&r).unwrap()));
    }
    msgs.push((0, "junk".into(), b"nope".to_vec()));
    produce(&cfg, &msgs).await;
    let task = spawn_mongo(&cfg, &s, codec(&s));
    assert_eq!(wait_for(19, || count(&db)).await, 19);
    let dls = dead_letters(&cfg, 2).await;
    stop(task).await.unwrap();
    assert_eq!(dls.len(), 2, "{dls:?}");
    let dup = dls
        .iter()
        .find(|d| d.key.as_deref() == Some("k12"))
        .unwrap();
    assert_eq!(dup.header("etl.error.kind"), Some("mongo_write"));
    assert_eq!(dup.header("etl.error.stage"), Some("sink-mongo"));
    assert!(
        dup.header("etl.error.message").unwrap().contains("11000"),
        "{dup:?}"
    );
    let junk = dls
        .iter()
        .find(|d| d.key.as_deref() == Some("junk"))
        .unwrap();
    assert_eq!(junk.header("etl.error.kind"), Some("decode"));
    assert_eq!(committed(&cfg, 1), vec![21]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_writes_and_commits_the_batch_in_hand() {
    let db = common::mongo_db("sink_mgrace").await;
    let mut cfg = config("sink_mgrace", db.name(), 10_000);
    cfg.sink.batch_max_age = Duration::from_secs(3600);
    topics(&cfg, 1).await;
    let s = schema();
    let task = spawn_mongo(&cfg, &s, codec(&s));
    produce(&cfg, &spread(&s, 30, 1)).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(count(&db).await, 0);
    stop(task).await.unwrap();
    assert_eq!(count(&db).await, 30);
    assert_eq!(committed(&cfg, 1), vec![30]);
    // A restart finds nothing to do: the offsets were committed.
    let task = spawn_mongo(&cfg, &s, codec(&s));
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop(task).await.unwrap();
    assert_eq!(count(&db).await, 30);
}

/// Batches are cut at `sink.batch_max_bytes` too: with a one-hour age and a record count far
/// above the input, only the byte bound writes anything before shutdown, and no batch holds
/// more records than fit in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_cut_at_the_byte_bound() {
    let db = common::mongo_db("sink_mbytes").await;
    let mut cfg = config("sink_mbytes", db.name(), 100_000);
    cfg.sink.batch_max_age = Duration::from_secs(3600);
    let s = schema();
    let msgs = spread(&s, 600, 1);
    let size = |(_, k, v): &(i32, String, Vec<u8>)| k.len() + v.len();
    let smallest = msgs.iter().map(size).min().unwrap();
    cfg.sink.batch_max_bytes = smallest * 40;
    // A batch is cut once its bytes reach the bound: at most this many records.
    let most = cfg.sink.batch_max_bytes.div_ceil(smallest);
    topics(&cfg, 1).await;
    produce(&cfg, &msgs).await;
    let task = spawn_mongo(&cfg, &s, codec(&s));
    // Everything but the last, partial batch is written while the sink runs.
    let written = wait_for(600 - most as i64, || async {
        let n = count(&db).await;
        if n >= 600 - most as i64 {
            600 - most as i64
        } else {
            n
        }
    })
    .await;
    assert_eq!(written, 600 - most as i64, "batches were not cut by bytes");
    stop(task).await.unwrap();
    assert_eq!(count(&db).await, 600);
    // One batch, one `_loaded_at` (set when the batch is prepared; batches of a partition are
    // written one after another, each taking milliseconds).
    let mut per_batch: std::collections::HashMap<i64, usize> = Default::default();
    let mut cursor = db.collection::<Document>(COLL).find(doc! {}).await.unwrap();
    while cursor.advance().await.unwrap() {
        let d = cursor.deserialize_current().unwrap();
        let at = d.get_datetime("_loaded_at").unwrap().timestamp_millis();
        *per_batch.entry(at).or_default() += 1;
    }
    let biggest = per_batch.values().copied().max().unwrap();
    assert!(
        biggest <= most,
        "a batch of {biggest} records; the byte bound allows {most}: {per_batch:?}"
    );
    assert!(per_batch.len() >= 600 / most, "{per_batch:?}");
}

/// `league_points` of every document, by `_id`.
async fn points(db: &mongodb::Database) -> std::collections::BTreeMap<String, i32> {
    let mut out = std::collections::BTreeMap::new();
    let mut cursor = db.collection::<Document>(COLL).find(doc! {}).await.unwrap();
    while cursor.advance().await.unwrap() {
        let d = cursor.deserialize_current().unwrap();
        out.insert(
            d.get_str("_id").unwrap().to_string(),
            d.get_i32("league_points").unwrap(),
        );
    }
    out
}

/// Issue #16 item 2 (Mongo): an older version (by `fetched_at`) never replaces a newer
/// document, in a later batch or in the same one; an equal version read later does; a
/// replay of everything leaves the same documents and sends no dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_version_never_replaces_a_newer_document() {
    let db = common::mongo_db("sink_mnewer").await;
    let cfg = config("sink_mnewer", db.name(), 7);
    topics(&cfg, 1).await;
    let s = schema();
    let (t1, t2) = (1_700_000_000_000, 1_700_000_100_000);
    let mut msgs = Vec::new();
    for i in 0..10 {
        let k = format!("k{i}");
        msgs.push((0, k.clone(), encode(&s, &versioned(&k, 2, t2))));
    }
    for i in 0..10 {
        let k = format!("k{i}");
        msgs.push((0, k.clone(), encode(&s, &versioned(&k, 1, t1))));
    }
    msgs.push((0, "k5".into(), encode(&s, &versioned("k5", 3, t2))));
    // In one batch (offsets 21..27): k20 newer first, then older.
    msgs.push((0, "k20".into(), encode(&s, &versioned("k20", 2, t2))));
    msgs.push((0, "k20".into(), encode(&s, &versioned("k20", 1, t1))));
    produce(&cfg, &msgs).await;
    let task = spawn_mongo(&cfg, &s, codec(&s));
    assert_eq!(wait_for(11, || count(&db)).await, 11);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop(task).await.unwrap();
    assert_eq!(committed(&cfg, 1), vec![23]);
    let want: std::collections::BTreeMap<String, i32> = (0..10)
        .map(|i| (format!("k{i}"), if i == 5 { 3 } else { 2 }))
        .chain([("k20".to_string(), 2)])
        .collect();
    assert_eq!(points(&db).await, want);
    assert!(
        dead_letters(&cfg, 0).await.is_empty(),
        "stale versions are skipped, not dead letters"
    );
}

/// Issue #16 item 1: a partition moves to another instance while its old owner's batch is
/// stuck (the old owner cannot reach the database); when the old owner reaches it again, its
/// stale batch must not overwrite what the new owner wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_partitions_stale_batch_never_overwrites_the_new_owner() {
    let db = common::mongo_db("sink_mmove").await;
    let cfg_b = config("sink_mmove", db.name(), 10);
    let proxy = Proxy::start(common::mongo_uri().trim_start_matches("mongodb://")).await;
    let mut cfg_a = cfg_b.clone();
    cfg_a.mongo.uri = format!("mongodb://127.0.0.1:{}/?directConnection=true", proxy.port);
    topics(&cfg_b, 2).await;
    let s = schema();
    let (t1, t2) = (1_700_000_000_000, 1_700_000_100_000);
    let batch = |version: i32, at: i64| -> Vec<(i32, String, Vec<u8>)> {
        (0..20)
            .map(|i| {
                let k = format!("k{i}");
                (i % 2, k.clone(), encode(&s, &versioned(&k, version, at)))
            })
            .collect()
    };
    let a = spawn_mongo(&cfg_a, &s, codec(&s));
    tokio::time::sleep(Duration::from_secs(7)).await; // A connected and owns both partitions
    proxy.set_up(false);
    produce(&cfg_b, &batch(1, t1)).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // A's batches are stuck, retrying
    let b = spawn_mongo(&cfg_b, &s, codec(&s));
    tokio::time::sleep(Duration::from_secs(3)).await;
    produce(&cfg_b, &batch(2, t2)).await;
    // B gets one partition once A gives up waiting on its batch (30 s), and writes version 2.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let p = points(&db).await;
        if p.values().filter(|v| **v == 2).count() >= 10 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never wrote its partition: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    proxy.set_up(true);
    // A reaches the database again: its own partition catches up to version 2; the stale
    // batch of the partition it lost must not land.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while points(&db).await.values().filter(|v| **v == 2).count() < 20 {
        if tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(15)).await; // room for a stale write to land
    stop(b).await.unwrap();
    stop(a).await.unwrap();
    let p = points(&db).await;
    let stale: Vec<_> = p.iter().filter(|(_, v)| **v != 2).collect();
    assert_eq!(p.len(), 20, "{p:?}");
    assert!(
        stale.is_empty(),
        "stale versions overwrote newer ones: {stale:?}"
    );
}

/// Issue #16 item 10: a transaction's commit marker takes the offset after its last record;
/// once a partition is idle the sink commits the position past it, so lag reads 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_transactional_topic_reads_lag_zero() {
    let db = common::mongo_db("sink_lag").await;
    let cfg = config("sink_lag", db.name(), 40);
    topics(&cfg, 3).await;
    let s = schema();
    produce_in_transactions(&cfg, &spread(&s, 90, 3), 30).await;
    let task = spawn_mongo(&cfg, &s, codec(&s));
    assert_eq!(wait_for(90, || count(&db)).await, 90);
    let ends = wait_caught_up(&cfg, mongo::STAGE, 3, Duration::from_secs(10)).await;
    stop(task).await.unwrap();
    for (p, (hi, committed)) in ends.iter().enumerate() {
        assert!(
            *hi > 30,
            "partition {p}: 30 records and their markers, end {hi}"
        );
        assert_eq!(committed, hi, "partition {p}: the group's committed offset");
    }
    assert_eq!(status_lag(&cfg, mongo::STAGE), Some(0));
    assert_eq!(count(&db).await, 90, "every record once");
}

/// `_source_offset` of every document, by `_id`.
async fn source_offsets(db: &mongodb::Database) -> std::collections::BTreeMap<String, i64> {
    let mut out = std::collections::BTreeMap::new();
    let mut cursor = db.collection::<Document>(COLL).find(doc! {}).await.unwrap();
    while cursor.advance().await.unwrap() {
        let d = cursor.deserialize_current().unwrap();
        out.insert(
            d.get_str("_id").unwrap().to_string(),
            d.get_i64("_source_offset").unwrap(),
        );
    }
    out
}

/// A replay of a whole batch (every key already stored, so every document goes through the
/// `update` command) is written. FerretDB 1.24 holds one backend connection per statement of
/// an `update` command until the command ends (50 on PostgreSQL): a 300-statement command
/// waited for ever for a connection it held itself, and sink-mongo hung after every restart
/// (the cluster end-to-end test). The sink now caps the statements per command on FerretDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_of_stored_keys_is_written_in_one_go() {
    let db = common::mongo_db("sink_mreplay").await;
    let mut cfg = config("sink_mreplay", db.name(), 300);
    cfg.sink.mongo.write_timeout = Duration::from_secs(20);
    topics(&cfg, 1).await;
    let s = schema();
    let first = spread(&s, 300, 1);
    produce(&cfg, &first).await;
    let task = spawn_mongo(&cfg, &s, codec(&s));
    assert_eq!(wait_for(300, || count(&db)).await, 300);
    // The same 300 keys and versions again (what a replay after a crash delivers).
    produce(&cfg, &first).await;
    let mut done = false;
    for _ in 0..60 {
        if source_offsets(&db).await.values().all(|o| *o >= 300) {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop(task).await.unwrap();
    assert!(
        done,
        "the replayed batch was not written within 30 s: {} of 300 documents from the second round",
        source_offsets(&db)
            .await
            .values()
            .filter(|o| **o >= 300)
            .count()
    );
    assert_eq!(count(&db).await, 300);
    assert_eq!(committed(&cfg, 1), vec![600]);
    assert!(dead_letters(&cfg, 0).await.is_empty());
}

/// `_loaded_at` (ms) of every document, by `_id`.
async fn loaded_at(db: &mongodb::Database) -> std::collections::BTreeMap<String, i64> {
    let mut out = std::collections::BTreeMap::new();
    let mut cursor = db.collection::<Document>(COLL).find(doc! {}).await.unwrap();
    while cursor.advance().await.unwrap() {
        let d = cursor.deserialize_current().unwrap();
        out.insert(
            d.get_str("_id").unwrap().to_string(),
            d.get_datetime("_loaded_at").unwrap().timestamp_millis(),
        );
    }
    out
}

/// A replay of messages already written (the group's offsets moved back, as after a crash
/// between the write and the offset commit) writes nothing again: the stored documents come
/// from the very same messages. Before, every replayed document went through an `update`
/// statement — on FerretDB a scan of the collection each — and a replay of a few thousand
/// documents stalled sink-mongo for minutes (the cluster end-to-end test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_messages_already_stored_are_not_written_again() {
    let db = common::mongo_db("sink_mexact").await;
    let cfg = config("sink_mexact", db.name(), 500);
    topics(&cfg, 2).await;
    let s = schema();
    produce(&cfg, &spread(&s, 2_000, 2)).await;
    let task = spawn_mongo(&cfg, &s, codec(&s));
    assert_eq!(wait_for(2_000, || count(&db)).await, 2_000);
    stop(task).await.unwrap();
    assert_eq!(committed(&cfg, 2), vec![1_000, 1_000]);
    let before = loaded_at(&db).await;

    // Back to the start, as if the offsets had never been committed.
    let c: BaseConsumer =
        etl_pipe::kafka::consumer_config(&cfg.kafka, &cfg.pipeline.group_id(mongo::STAGE))
            .create()
            .unwrap();
    let mut tpl = TopicPartitionList::new();
    let topic = cfg.topics.name(TopicRole::Scored);
    for p in 0..2 {
        tpl.add_partition_offset(&topic, p, Offset::Offset(0))
            .unwrap();
    }
    // The stopped sink's member may not have left the group yet: the broker refuses a commit
    // from outside the group (UnknownMemberId) until it has.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while let Err(e) = c.commit(&tpl, rdkafka::consumer::CommitMode::Sync) {
        assert!(
            std::time::Instant::now() < deadline,
            "committing offset 0: {e}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(c);
    assert_eq!(committed(&cfg, 2), vec![0, 0]);

    let task = spawn_mongo(&cfg, &s, codec(&s));
    let mut caught_up = false;
    for _ in 0..120 {
        if committed(&cfg, 2) == vec![1_000, 1_000] {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop(task).await.unwrap();
    assert!(
        caught_up,
        "the replay was not committed: {:?}",
        committed(&cfg, 2)
    );
    let after = loaded_at(&db).await;
    let rewritten = before
        .iter()
        .filter(|(k, t)| after.get(*k) != Some(t))
        .count();
    assert_eq!(rewritten, 0, "documents written again by the replay");
    assert_eq!(after.len(), 2_000);
    assert!(dead_letters(&cfg, 0).await.is_empty());
}

/// FerretDB 1.24 (the test stack's server) drops the connection on a Decimal128, so with the
/// default `sink.mongo.decimals = "decimal128"` the sink refuses the schema at start, naming the
/// field and the setting; with `"string"` decimals land as their exact text. The Decimal128
/// encoding itself is checked against bson's parser in the unit tests of `document.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_records_are_subdocuments_arrays_decimals_dates_and_uuids() {
    use etl_pipe::stages::sinks::MongoDecimals;
    use mongodb::bson::spec::BinarySubtype;
    let db = common::mongo_db("sink_nested").await;
    let mut cfg = config("sink_nested", db.name(), 10);
    cfg.sink.version_field = "ts_ms".into();
    topics(&cfg, 1).await;
    let s = nested_schema();
    produce(&cfg, &nested_messages(4)).await;

    assert_eq!(cfg.sink.mongo.decimals, MongoDecimals::Decimal128);
    let refused = tokio::time::timeout(Duration::from_secs(60), spawn_mongo(&cfg, &s, codec(&s)).0)
        .await
        .expect("the sink stops at start")
        .expect("sink task")
        .expect_err("Decimal128 on FerretDB is refused at start");
    let e = refused.to_string();
    assert!(
        e.contains("`score`") && e.contains("sink.mongo.decimals"),
        "{e}"
    );

    cfg.sink.mongo.decimals = MongoDecimals::String;
    let task = spawn_mongo(&cfg, &s, codec(&s));
    let n = || async {
        db.collection::<Document>("match_entry")
            .count_documents(doc! {})
            .await
            .map(|n| n as i64)
            .unwrap_or(-1)
    };
    assert_eq!(wait_for(4, n).await, 4);
    stop(task).await.unwrap();

    let coll = db.collection::<Document>("match_entry");
    let d = coll.find_one(doc! {"_id": "n2"}).await.unwrap().unwrap();
    let series = d.get_document("mini_series").unwrap();
    assert_eq!(series.get_str("progress").unwrap(), "WL-");
    assert_eq!(series.get_i32("wins").unwrap(), 1);
    let players = d.get_array("players").unwrap();
    let p0 = players[0].as_document().unwrap();
    assert_eq!(p0.get_str("tier").unwrap(), "GOLD");
    assert_eq!(p0.get("series"), Some(&Bson::Null));
    match p0.get("puuid").unwrap() {
        Bson::Binary(b) => {
            assert_eq!(b.subtype, BinarySubtype::Uuid);
            assert_eq!(b.bytes, nested_id(1002).as_bytes().to_vec());
        }
        other => panic!("puuid is {other:?}"),
    }
    let tags: Vec<&str> = d
        .get_array("tags")
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags, ["a", "it's \"quoted\" \\ too"]);
    assert_eq!(
        d.get_document("counts").unwrap().get_i64("games").unwrap(),
        7
    );
    let psi = d.get_document("samples").unwrap().get_array("psi").unwrap();
    assert_eq!(psi[1], Bson::Double(-1e300));
    assert_eq!(d.get_str("score").unwrap(), "-123.47");
    assert_eq!(d.get_str("prize").unwrap(), "9999999999.9999");
    match d.get("id").unwrap() {
        Bson::Binary(b) => {
            assert_eq!(b.subtype, BinarySubtype::Uuid);
            assert_eq!(b.bytes, nested_id(2).as_bytes().to_vec());
        }
        other => panic!("id is {other:?}"),
    }
    assert_eq!(
        d.get_binary_generic("raw").unwrap(),
        &vec![0, 0xff, b'\'', b'\\']
    );
    assert_eq!(d.get_binary_generic("hash").unwrap().len(), 16);
    assert_eq!(d.get_str("region").unwrap(), "NA");
    assert_eq!(d.get_i64("choice").unwrap(), 42);
    // 2022-01-08 as midnight UTC; timestamps as dates (micros cut to millis).
    assert_eq!(
        d.get_datetime("day").unwrap().timestamp_millis(),
        19_000 * 86_400_000
    );
    for f in ["ts_ms", "ts_us", "local_ms", "local_us"] {
        assert_eq!(
            d.get_datetime(f).unwrap().timestamp_millis(),
            1_700_000_000_123,
            "{f}"
        );
    }
    assert_eq!(d.get_i32("at_ms").unwrap(), 45_296_789);
    assert_eq!(d.get_i64("at_us").unwrap(), 45_296_789_012);
    assert_eq!(d.get("flag"), Some(&Bson::Null));
    assert_eq!(d.get_f64("ratio").unwrap(), 0.25);
    // An odd record's mini_series is null; documents are queryable by a subdocument's field.
    let odd = coll.find_one(doc! {"_id": "n1"}).await.unwrap().unwrap();
    assert_eq!(odd.get("mini_series"), Some(&Bson::Null));
    let with_series = coll
        .count_documents(doc! {"mini_series.progress": "WL-"})
        .await
        .unwrap();
    assert_eq!(with_series, 2);
}
