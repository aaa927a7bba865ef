//! `sink-mysql` against the real local stack: rows, types, lineage, offsets, dead letters,
//! schema checks and evolution, group splitting, graceful shutdown.
mod common;
mod sink_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{MySqlPool, Row};

use etl_pipe::config::TopicRole;
use etl_pipe::record::Value;
use etl_pipe::stages::sinks::mysql::{self, Flavor, Layout};
use etl_pipe::stages::sinks::{SinkError, StatementProtocol};
use sink_support::*;

const TABLE: &str = "league_entry";

async fn count(pool: &MySqlPool) -> i64 {
    sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {TABLE}"))
        .fetch_one(pool)
        .await
        .unwrap_or(-1)
}

async fn offsets(pool: &MySqlPool, group: &str) -> HashMap<i32, i64> {
    sqlx::query_as::<_, (i32, i64)>(
        "SELECT partition_id, next_offset FROM etl_offsets WHERE consumer_group = ?",
    )
    .bind(group)
    .fetch_all(pool)
    .await
    .unwrap_or_default() // not created yet
    .into_iter()
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_typed_rows_with_lineage_and_offsets() {
    let (db, pool) = common::mysql_db("sink_rows").await;
    let cfg = config("sink_rows", &db, 40);
    topics(&cfg, 3).await;
    let s = schema();
    produce(&cfg, &spread(&s, 300, 3)).await;
    let task = spawn_mysql(&cfg, &s, codec(&s));
    assert_eq!(wait_for(300, || count(&pool)).await, 300);
    stop(task).await.unwrap();

    // Types from the documented mapping.
    let types: HashMap<String, String> = sqlx::query_as::<_, (String, String)>(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_TYPE AS CHAR) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(TABLE)
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(types["_key"], "varchar(255)");
    assert_eq!(types["wins"], "int(11)");
    assert_eq!(types["source_offset"], "bigint(20)");
    assert_eq!(types["win_rate"], "double");
    assert_eq!(types["veteran"], "tinyint(1)");
    assert_eq!(types["fetched_at"], "datetime(3)");
    assert_eq!(types["summoner_name"], "longtext");
    assert_eq!(types["_source_offset"], "bigint(20)");
    assert_eq!(types["_loaded_at"], "datetime(3)");

    let row = sqlx::query(&format!(
        "SELECT summoner_name, league_points, source_offset, win_rate, veteran, fresh_blood, \
         CAST(fetched_at AS CHAR), _trace_id, _source_topic, _source_partition, _source_offset, \
         TIMESTAMPDIFF(SECOND, _loaded_at, UTC_TIMESTAMP()) FROM {TABLE} WHERE _key = 'k7'"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), "Näme k7 🙂");
    assert_eq!(row.get::<i32, _>(1), 7);
    assert_eq!(row.get::<i64, _>(2), 1_234_567_890_123);
    assert_eq!(row.get::<f64, _>(3), 0.6);
    assert!(row.get::<bool, _>(4));
    assert_eq!(row.get::<Option<bool>, _>(5), None);
    assert_eq!(row.get::<String, _>(6), "2023-11-14 22:13:20.123");
    assert_eq!(row.get::<String, _>(7), TRACE);
    assert_eq!(row.get::<String, _>(8), cfg.topics.name(TopicRole::Scored));
    assert_eq!(row.get::<i32, _>(9), 1); // k7 -> 7 % 3
    assert_eq!(row.get::<i64, _>(10), 2); // third message of partition 1
    assert!(row.get::<i64, _>(11).abs() < 120);

    // The offsets table holds the next offset of every partition.
    let group = cfg.pipeline.group_id(mysql::STAGE);
    assert_eq!(
        offsets(&pool, &group).await,
        HashMap::from([(0, 100), (1, 100), (2, 100)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_mysql_rejects_go_to_dead_letter_and_the_rest_commits() {
    rows_mysql_rejects(StatementProtocol::Binary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_mysql_rejects_go_to_dead_letter_and_the_rest_commits_in_text_statements() {
    rows_mysql_rejects(StatementProtocol::Text).await;
}

/// Rows MySQL rejects (too long, out of range) among good ones, found by splitting the
/// statements: in bound statements of a few shapes, or in text ones.
async fn rows_mysql_rejects(protocol: StatementProtocol) {
    let test = match protocol {
        StatementProtocol::Binary => "sink_bad",
        StatementProtocol::Text => "sink_bad_text",
    };
    let (db, pool) = common::mysql_db(test).await;
    let mut cfg = config(test, &db, 500);
    cfg.sink.mysql.protocol = protocol;
    topics(&cfg, 1).await;
    let s = schema();
    // An existing table with a short `tier` and a small `league_points`.
    let layout = Layout::new(&s, TABLE, None, 255, Flavor::MariaDb).unwrap();
    mysql::ensure_table(&pool, &layout).await.unwrap();
    sqlx::query(&format!(
        "ALTER TABLE {TABLE} MODIFY tier VARCHAR(8) NOT NULL, MODIFY league_points DECIMAL(4,0) NOT NULL"
    ))
    .execute(&pool)
    .await
    .unwrap();

    let c = etl_pipe::codec::Codec::new(s.clone(), etl_pipe::codec::Framing::SingleObject);
    let mut msgs = Vec::new();
    for i in 0..200 {
        let key = format!("k{i}");
        let mut r = record(&key, i);
        if i == 17 || i == 150 {
            r.set("tier", Value::String("GRANDMASTER-X".into())); // 1406 too long
        }
        if i == 99 {
            r.set("league_points", Value::Int(123_456)); // 1264 out of range
        }
        msgs.push((0, key, c.encode(&r).unwrap()));
    }
    msgs.push((0, "garbage".into(), b"\xff\x00not a record".to_vec()));
    produce(&cfg, &msgs).await;

    let task = spawn_mysql(&cfg, &s, codec(&s));
    assert_eq!(wait_for(197, || count(&pool)).await, 197);
    let group = cfg.pipeline.group_id(mysql::STAGE);
    assert_eq!(
        wait_for(201, || async {
            offsets(&pool, &group).await.get(&0).copied().unwrap_or(0)
        })
        .await,
        201
    );
    stop(task).await.unwrap();

    let dls = dead_letters(&cfg, 4).await;
    assert_eq!(dls.len(), 4, "{dls:?}");
    let by_key: HashMap<&str, &Dl> = dls.iter().map(|d| (d.key.as_deref().unwrap(), d)).collect();
    for k in ["k17", "k150"] {
        let d = by_key[k];
        assert_eq!(d.header("etl.error.kind"), Some("mysql_data"));
        assert_eq!(d.header("etl.error.stage"), Some("sink-mysql"));
        let m = d.header("etl.error.message").unwrap();
        assert!(m.contains("1406") && m.contains("tier"), "{m}");
        assert_eq!(d.header("traceparent"), Some(traceparent().as_str()));
    }
    assert!(by_key["k99"]
        .header("etl.error.message")
        .unwrap()
        .contains("1264"));
    assert_eq!(by_key["k99"].header("etl.source.offset"), Some("99"));
    assert_eq!(by_key["garbage"].header("etl.error.kind"), Some("decode"));
    assert_eq!(by_key["garbage"].payload, b"\xff\x00not a record");
    let missing: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM {TABLE} WHERE _key IN ('k17','k99','k150')"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(missing, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatching_table_fails_at_start_with_a_clear_error() {
    let (db, pool) = common::mysql_db("sink_mismatch").await;
    let cfg = config("sink_mismatch", &db, 10);
    topics(&cfg, 1).await;
    let s = schema();
    let layout = Layout::new(&s, TABLE, None, 255, Flavor::MariaDb).unwrap();
    mysql::ensure_table(&pool, &layout).await.unwrap();
    sqlx::query(&format!(
        "ALTER TABLE {TABLE} MODIFY wins VARCHAR(10) NOT NULL"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let err = mysql::run_with(
        &cfg.common(),
        &cfg.sink,
        &cfg.mysql,
        s.clone(),
        codec(&s),
        Default::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SinkError::Schema(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("column `wins` is varchar(10)"), "{msg}");
    assert!(msg.contains("INT, BIGINT"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_nullable_field_adds_its_column() {
    let (db, pool) = common::mysql_db("sink_evolve").await;
    let cfg = config("sink_evolve", &db, 10);
    topics(&cfg, 1).await;
    let v1 = schema();
    produce(&cfg, &spread(&v1, 5, 1)).await;
    let task = spawn_mysql(&cfg, &v1, codec(&v1));
    assert_eq!(wait_for(5, || count(&pool)).await, 5);
    stop(task).await.unwrap();

    let v2 = schema_with("region");
    let mut r = record("k100", 1);
    r.set("region", Value::String("EUW".into()));
    produce(&cfg, &[(0, "k100".into(), encode(&v2, &r))]).await;
    let task = spawn_mysql(&cfg, &v2, codec(&v2));
    assert_eq!(wait_for(6, || count(&pool)).await, 6);
    stop(task).await.unwrap();
    let regions: Vec<(String, Option<String>)> = sqlx::query_as(&format!(
        "SELECT CAST(_key AS CHAR), region FROM {TABLE} ORDER BY _key"
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(regions[0], ("k0".to_string(), None));
    assert!(regions.contains(&("k100".to_string(), Some("EUW".to_string()))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_the_partitions_and_write_everything_once() {
    let (db, pool) = common::mysql_db("sink_group").await;
    let cfg = config("sink_group", &db, 25);
    topics(&cfg, 4).await;
    let s = schema();
    let a = Arc::new(Counting {
        inner: codec(&s),
        n: AtomicUsize::new(0),
    });
    let b = Arc::new(Counting {
        inner: codec(&s),
        n: AtomicUsize::new(0),
    });
    let ta = spawn_mysql(&cfg, &s, a.clone());
    let tb = spawn_mysql(&cfg, &s, b.clone());
    // Let both join before data arrives.
    tokio::time::sleep(Duration::from_secs(6)).await;
    produce(&cfg, &spread(&s, 800, 4)).await;
    assert_eq!(wait_for(800, || count(&pool)).await, 800);
    stop(ta).await.unwrap();
    stop(tb).await.unwrap();
    let (na, nb) = (a.n.load(Ordering::SeqCst), b.n.load(Ordering::SeqCst));
    assert!(na > 0 && nb > 0, "both instances work: {na} + {nb}");
    assert_eq!(na + nb, 800, "each record decoded once: {na} + {nb}");
    let group = cfg.pipeline.group_id(mysql::STAGE);
    assert_eq!(
        offsets(&pool, &group).await,
        HashMap::from([(0, 200), (1, 200), (2, 200), (3, 200)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_commits_the_batch_in_hand() {
    let (db, pool) = common::mysql_db("sink_graceful").await;
    let mut cfg = config("sink_graceful", &db, 10_000);
    cfg.sink.batch_max_age = Duration::from_secs(3600);
    topics(&cfg, 2).await;
    let s = schema();
    let task = spawn_mysql(&cfg, &s, codec(&s));
    produce(&cfg, &spread(&s, 50, 2)).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        count(&pool).await,
        0,
        "nothing written before the batch is due"
    );
    stop(task).await.unwrap();
    assert_eq!(count(&pool).await, 50);
    let group = cfg.pipeline.group_id(mysql::STAGE);
    assert_eq!(
        offsets(&pool, &group).await,
        HashMap::from([(0, 25), (1, 25)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_resume_from_the_offsets_table_not_from_kafka() {
    let (db, pool) = common::mysql_db("sink_resume").await;
    let cfg = config("sink_resume", &db, 10);
    topics(&cfg, 1).await;
    let s = schema();
    produce(&cfg, &spread(&s, 30, 1)).await;
    let task = spawn_mysql(&cfg, &s, codec(&s));
    assert_eq!(wait_for(30, || count(&pool)).await, 30);
    stop(task).await.unwrap();
    // Rewind the stored offset as `replay` would: the next run rewrites from there (the same
    // rows, upserted), whatever Kafka's committed offset says.
    let group = cfg.pipeline.group_id(mysql::STAGE);
    sqlx::query("UPDATE etl_offsets SET next_offset = 20 WHERE consumer_group = ?")
        .bind(&group)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(&format!("DELETE FROM {TABLE} WHERE _source_offset >= 20"))
        .execute(&pool)
        .await
        .unwrap();
    let task = spawn_mysql(&cfg, &s, codec(&s));
    assert_eq!(wait_for(30, || count(&pool)).await, 30);
    stop(task).await.unwrap();
    assert_eq!(offsets(&pool, &group).await, HashMap::from([(0, 30)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_are_retried_without_losing_or_reordering_rows() {
    let (db, pool) = common::mysql_db("sink_kill").await;
    let mut cfg = config("sink_kill", &db, 50);
    cfg.sink.retry_max_backoff = Duration::from_millis(200);
    topics(&cfg, 3).await;
    let s = schema();
    let c = etl_pipe::codec::Codec::new(s.clone(), etl_pipe::codec::Framing::SingleObject);
    // 500 keys, 6 versions each; a key always goes to the same partition, versions in order.
    let msgs: Vec<(i32, String, Vec<u8>)> = (0..3000)
        .map(|i| {
            let k = i % 500;
            let key = format!("k{k}");
            (k % 3, key.clone(), c.encode(&record(&key, i)).unwrap())
        })
        .collect();
    produce(&cfg, &msgs).await;
    let admin = MySqlPool::connect(&format!("{}/mysql", common::mysql_url_base()))
        .await
        .unwrap();
    let task = spawn_mysql(&cfg, &s, codec(&s));
    // Kill every connection to the test database, again and again, while the sink works.
    let mut kills = 0;
    for _ in 0..30 {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
        )
        .bind(&db)
        .fetch_all(&admin)
        .await
        .unwrap();
        for id in ids {
            if sqlx::query(&format!("KILL {id}"))
                .execute(&admin)
                .await
                .is_ok()
            {
                kills += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(kills > 0);
    let group = cfg.pipeline.group_id(mysql::STAGE);
    let total = wait_for(3000, || async {
        let o = offsets(&pool, &group).await;
        o.values().sum::<i64>()
    })
    .await;
    assert_eq!(
        total, 3000,
        "every offset written once the connections stay up"
    );
    stop(task).await.unwrap();
    assert_eq!(count(&pool).await, 500);
    // Each key holds its last version: nothing reordered, nothing lost.
    let wrong: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM {TABLE} WHERE league_points <> 2500 + CAST(SUBSTRING(_key, 2) AS SIGNED)"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0);
    assert!(dead_letters(&cfg, 0).await.is_empty());
}

/// Starts `etl-pipe sink-mysql` with the test's config.
fn spawn_binary(config_path: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_etl-pipe"))
        .arg("--config")
        .arg(config_path)
        .arg("sink-mysql")
        .env("ETL_MYSQL_PASSWORD", "etl")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("starting etl-pipe")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_sigkill_and_restart() {
    let (db, pool) = common::mysql_db("sink_sigkill").await;
    let mut cfg = config("sink_sigkill", &db, 200);
    cfg.sink.schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/league_entry.scored.avsc"
    )
    .into();
    // A killed member holds its partitions until its session times out: keep that short.
    cfg.kafka.session_timeout = Duration::from_secs(6);
    topics(&cfg, 3).await;
    let s = schema();
    let c = etl_pipe::codec::Codec::new(s.clone(), etl_pipe::codec::Framing::SingleObject);
    // 2000 keys, 10 versions each, a key always on the same partition, versions in order.
    let msgs: Vec<(i32, String, Vec<u8>)> = (0..20_000)
        .map(|i| {
            let k = i % 2000;
            let key = format!("k{k}");
            (k % 3, key.clone(), c.encode(&record(&key, i)).unwrap())
        })
        .collect();
    produce(&cfg, &msgs).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etl-pipe.toml");
    std::fs::write(&path, cfg.to_toml()).unwrap();
    let group = cfg.pipeline.group_id(mysql::STAGE);

    // Kill the sink with SIGKILL once it has committed past a (random) point: mid-batch or
    // mid-commit, whatever it is doing then.
    let mut progress = Vec::new();
    for round in 0..4i64 {
        let mut child = spawn_binary(&path);
        let target = 2500 + round * 4000 + rand::random::<i64>() % 1500;
        wait_for(1, || async {
            let done = offsets(&pool, &group).await.values().sum::<i64>();
            i64::from(done >= target)
        })
        .await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        progress.push(offsets(&pool, &group).await.values().sum::<i64>());
    }
    // A last run to the end, stopped with SIGTERM (graceful).
    let mut child = spawn_binary(&path);
    let total = wait_for(20_000, || async {
        offsets(&pool, &group).await.values().sum::<i64>()
    })
    .await;
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(total, 20_000, "progress per run: {progress:?}");
    assert!(status.success(), "graceful stop exits 0: {status:?}");

    assert_eq!(
        offsets(&pool, &group).await,
        HashMap::from([(0, 6670), (1, 6670), (2, 6660)])
    );
    assert_eq!(count(&pool).await, 2000, "no missing and no extra rows");
    // Every key holds its last version, read from its last offset: nothing lost, nothing stale.
    let wrong: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM (SELECT league_points, _source_offset, \
         CAST(SUBSTRING(_key, 2) AS SIGNED) AS k FROM {TABLE}) t \
         WHERE league_points <> 18000 + k \
         OR _source_offset <> 9 * IF(k % 3 = 2, 666, 667) + FLOOR(k / 3)"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0);
    assert!(dead_letters(&cfg, 0).await.is_empty(), "no dead letters");
}

/// Waits (bounded) for a sink task to end by itself and returns its result.
async fn ends_by_itself(task: SinkTask, within: Duration) -> Result<(), SinkError> {
    match tokio::time::timeout(within, task.0).await {
        Ok(r) => r.expect("sink task"),
        Err(_) => {
            task.1.cancel();
            panic!(
                "the sink did not stop by itself within {within:?}: it went on (dead-lettering?)"
            );
        }
    }
}

/// Issue #16 item 6: a foreign key no row can meet is the table's fault, not the rows': the
/// stage stops with the error, no dead letters, offsets unmoved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_wide_error_stops_the_sink_instead_of_dead_lettering_the_stream() {
    let (db, pool) = common::mysql_db("sink_fk").await;
    let cfg = config("sink_fk", &db, 50);
    topics(&cfg, 1).await;
    let s = schema();
    let layout = Layout::new(&s, TABLE, None, 255, Flavor::MariaDb).unwrap();
    mysql::ensure_table(&pool, &layout).await.unwrap();
    sqlx::query(
        "CREATE TABLE tiers (tier VARCHAR(255) CHARACTER SET utf8mb4 PRIMARY KEY) ENGINE=InnoDB",
    )
    .execute(&pool)
    .await
    .unwrap();
    // A foreign key needs an indexable column (the sink creates LONGTEXT).
    sqlx::query(&format!(
        "ALTER TABLE {TABLE} MODIFY tier VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL, \
         ADD CONSTRAINT tier_fk FOREIGN KEY (tier) REFERENCES tiers (tier)"
    ))
    .execute(&pool)
    .await
    .unwrap();
    produce(&cfg, &spread(&s, 20, 1)).await;
    let task = spawn_mysql(&cfg, &s, codec(&s));
    let err = ends_by_itself(task, Duration::from_secs(40))
        .await
        .unwrap_err();
    assert!(!err.is_retriable(), "{err:?}");
    assert!(err.to_string().contains("1452"), "{err}");
    let group = cfg.pipeline.group_id(mysql::STAGE);
    assert!(offsets(&pool, &group).await.is_empty(), "offsets moved");
    assert_eq!(count(&pool).await, 0);
    assert!(dead_letters(&cfg, 0).await.is_empty(), "dead letters sent");
}

/// Issue #16 item 6: when more than `sink.max_rejected_share` of a batch is rejected (here
/// every row: `tier` is too short for all of them), the sink stops instead of dead-lettering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_mostly_rejected_stops_the_sink_with_offsets_unmoved() {
    let (db, pool) = common::mysql_db("sink_share").await;
    let cfg = config("sink_share", &db, 50);
    topics(&cfg, 1).await;
    let s = schema();
    let layout = Layout::new(&s, TABLE, None, 255, Flavor::MariaDb).unwrap();
    mysql::ensure_table(&pool, &layout).await.unwrap();
    sqlx::query(&format!(
        "ALTER TABLE {TABLE} MODIFY tier VARCHAR(2) NOT NULL"
    ))
    .execute(&pool)
    .await
    .unwrap();
    produce(&cfg, &spread(&s, 20, 1)).await;
    let task = spawn_mysql(&cfg, &s, codec(&s));
    let err = ends_by_itself(task, Duration::from_secs(40))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("sink.max_rejected_share"), "{msg}");
    assert!(msg.contains("1406"), "{msg}");
    let group = cfg.pipeline.group_id(mysql::STAGE);
    assert!(offsets(&pool, &group).await.is_empty(), "offsets moved");
    assert!(dead_letters(&cfg, 0).await.is_empty(), "dead letters sent");
}

/// Issue #16 item 8: a batch whose COMMIT side fails (here the offsets write, failed by a
/// trigger with a lock wait timeout while a flag row exists) is retried; its dead letters
/// still go out once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_sends_each_dead_letter_once() {
    let (db, pool) = common::mysql_db("sink_dlonce").await;
    let cfg = config("sink_dlonce", &db, 50);
    topics(&cfg, 1).await;
    let s = schema();
    let layout = Layout::new(&s, TABLE, None, 255, Flavor::MariaDb).unwrap();
    mysql::ensure_table(&pool, &layout).await.unwrap();
    mysql::ensure_offsets_table(&pool, "etl_offsets")
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER TABLE {TABLE} MODIFY tier VARCHAR(8) NOT NULL"
    ))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("CREATE TABLE fail_offsets (x INT)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO fail_offsets VALUES (1)")
        .execute(&pool)
        .await
        .unwrap();
    for (name, event) in [("fail_ins", "INSERT"), ("fail_upd", "UPDATE")] {
        // Only real offsets (>= 0) fail: the commit's offset write, not a placeholder row.
        sqlx::raw_sql(&format!(
            "CREATE TRIGGER {name} BEFORE {event} ON etl_offsets FOR EACH ROW \
             IF NEW.next_offset >= 0 AND EXISTS (SELECT 1 FROM fail_offsets) THEN \
             SIGNAL SQLSTATE 'HY000' SET MYSQL_ERRNO = 1205, MESSAGE_TEXT = 'test: offsets write fails'; \
             END IF"
        ))
        .execute(&pool)
        .await
        .unwrap();
    }
    let c = etl_pipe::codec::Codec::new(s.clone(), etl_pipe::codec::Framing::SingleObject);
    let msgs: Vec<(i32, String, Vec<u8>)> = (0..20)
        .map(|i| {
            let key = format!("k{i}");
            let mut r = record(&key, i);
            if i % 7 == 3 {
                r.set("tier", Value::String("GRANDMASTER-X".into())); // 1406: k3, k10, k17
            }
            (0, key, c.encode(&r).unwrap())
        })
        .collect();
    produce(&cfg, &msgs).await;
    let task = spawn_mysql(&cfg, &s, codec(&s));
    // The batch fails at its offsets write, again and again (backoff ≤ 1 s here).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let group = cfg.pipeline.group_id(mysql::STAGE);
    assert!(offsets(&pool, &group).await.is_empty());
    sqlx::query("DELETE FROM fail_offsets")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        wait_for(20, || async {
            offsets(&pool, &group).await.get(&0).copied().unwrap_or(0)
        })
        .await,
        20
    );
    stop(task).await.unwrap();
    assert_eq!(count(&pool).await, 17);
    let dls = dead_letters(&cfg, 3).await;
    let mut keys: Vec<String> = dls.iter().filter_map(|d| d.key.clone()).collect();
    keys.sort();
    assert_eq!(keys, vec!["k10", "k17", "k3"], "each dead letter once");
}

/// Issue #16 item 9: two owners of a partition that has no offsets row yet (both expect
/// "nothing stored") cannot both write: the second is fenced, the stored offset never goes
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_batch_of_a_partition_is_fenced_too() {
    use etl_pipe::stages::sinks::batch::{Batch, BatchWriter, Outcome};
    use etl_pipe::stages::sinks::{Decode, SinkMessage};

    let (db, pool) = common::mysql_db("sink_first").await;
    let cfg = config("sink_first", &db, 50);
    let s = schema();
    let decoder: Arc<dyn Decode> = codec(&s);
    let sink = Arc::new(
        mysql::MysqlSink::new(&cfg.common(), &cfg.sink, &cfg.mysql, &s, decoder, None)
            .await
            .unwrap(),
    );
    let topic: Arc<str> = "scored".into();
    let c = etl_pipe::codec::Codec::new(s.clone(), etl_pipe::codec::Framing::SingleObject);
    let batch = |partition: i32, n: i64, version: i32| Batch {
        topic: topic.clone(),
        partition,
        expected: None,
        messages: (0..n)
            .map(|o| SinkMessage {
                partition,
                offset: o,
                key: Some(format!("k{o}").into_bytes()),
                payload: Some(c.encode(&record(&format!("k{o}"), version)).unwrap()),
                headers: None,
            })
            .collect(),
    };
    // Row k0 exists (written through partition 1); the test then holds its lock so that both
    // owners' batches stop at their INSERT, after their offset check.
    let w = sink
        .write(batch(1, 1, 0), Default::default())
        .await
        .unwrap();
    assert!(matches!(w, Outcome::Written { .. }), "{w:?}");
    let mut hold = pool.begin().await.unwrap();
    sqlx::query(&format!(
        "SELECT * FROM {TABLE} WHERE _key = 'k0' FOR UPDATE"
    ))
    .execute(&mut *hold)
    .await
    .unwrap();
    let (a, b) = (sink.clone(), sink.clone());
    let first = tokio::spawn({
        let bt = batch(0, 10, 1);
        async move { a.write(bt, Default::default()).await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let second = tokio::spawn({
        let bt = batch(0, 5, 2);
        async move { b.write(bt, Default::default()).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    hold.commit().await.unwrap();
    let first = first.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    let stored = mysql::stored_offsets(&pool, "etl_offsets", sink.group(), "scored")
        .await
        .unwrap();
    assert!(
        matches!(
            first,
            Outcome::Written {
                next_offset: 10,
                ..
            }
        ),
        "first owner: {first:?}"
    );
    assert!(
        matches!(second, Outcome::Fenced { stored: Some(10) }),
        "second owner must be fenced, got {second:?}; stored offsets {stored:?}"
    );
    assert_eq!(stored.get(&0), Some(&10));
}

/// Issue #16 item 2: versions are ordered by the record's `fetched_at`: an older version read
/// after a newer one (a redrive, a replay) never replaces it; the same version read later
/// does (the last one in the stream wins, as before); a replay leaves identical rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_version_never_replaces_a_newer_row() {
    let (db, pool) = common::mysql_db("sink_newer").await;
    let cfg = config("sink_newer", &db, 7);
    topics(&cfg, 1).await;
    let s = schema();
    let (t1, t2) = (1_700_000_000_000, 1_700_000_100_000);
    let mut msgs = Vec::new();
    for i in 0..10 {
        let k = format!("k{i}");
        msgs.push((0, k.clone(), encode(&s, &versioned(&k, 2, t2))));
    }
    // Later in the stream: older versions of every key (a redrive of quarantined records)...
    for i in 0..10 {
        let k = format!("k{i}");
        msgs.push((0, k.clone(), encode(&s, &versioned(&k, 1, t1))));
    }
    // ...and the same version of k5 again, changed: the later one wins on equal versions.
    msgs.push((0, "k5".into(), encode(&s, &versioned("k5", 3, t2))));
    produce(&cfg, &msgs).await;
    let group = cfg.pipeline.group_id(mysql::STAGE);
    let task = spawn_mysql(&cfg, &s, codec(&s));
    assert_eq!(
        wait_for(21, || async {
            offsets(&pool, &group).await.get(&0).copied().unwrap_or(0)
        })
        .await,
        21
    );
    stop(task).await.unwrap();
    let rows = || async {
        sqlx::query_as::<_, (String, i32, String, i64)>(&format!(
            "SELECT CAST(_key AS CHAR), league_points, CAST(fetched_at AS CHAR), _source_offset \
             FROM {TABLE} ORDER BY _key"
        ))
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let before = rows().await;
    assert_eq!(before.len(), 10);
    for (k, points, fetched, _) in &before {
        let want = if k == "k5" { 3 } else { 2 };
        assert_eq!(*points, want, "{k}: {before:?}");
        assert_eq!(fetched, "2023-11-14 22:15:00.000", "{k}");
    }
    // Replay everything: identical rows.
    mysql::store_offsets(
        &pool,
        "etl_offsets",
        &group,
        &cfg.topics.name(TopicRole::Scored),
        [(0, 0)],
    )
    .await
    .unwrap();
    let task = spawn_mysql(&cfg, &s, codec(&s));
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        wait_for(21, || async {
            offsets(&pool, &group).await.get(&0).copied().unwrap_or(0)
        })
        .await,
        21
    );
    stop(task).await.unwrap();
    assert_eq!(rows().await, before);
}

/// Issue #16 item 10: a transaction's commit marker takes the offset after its last record;
/// once a partition is idle the sink stores and commits the position past it, so lag reads 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_transactional_topic_reads_lag_zero() {
    let (db, pool) = common::mysql_db("sink_lag").await;
    let cfg = config("sink_lag", &db, 40);
    topics(&cfg, 3).await;
    let s = schema();
    produce_in_transactions(&cfg, &spread(&s, 90, 3), 30).await;
    let task = spawn_mysql(&cfg, &s, codec(&s));
    assert_eq!(wait_for(90, || count(&pool)).await, 90);
    let ends = wait_caught_up(&cfg, mysql::STAGE, 3, Duration::from_secs(10)).await;
    let group = cfg.pipeline.group_id(mysql::STAGE);
    let stored = offsets(&pool, &group).await;
    stop(task).await.unwrap();
    for (p, (hi, committed)) in ends.iter().enumerate() {
        assert!(
            *hi > 30,
            "partition {p}: 30 records and their markers, end {hi}"
        );
        assert_eq!(committed, hi, "partition {p}: the group's committed offset");
        assert_eq!(
            stored.get(&(p as i32)),
            Some(hi),
            "partition {p}: the offsets table"
        );
    }
    assert_eq!(status_lag(&cfg, mysql::STAGE), Some(0));
    assert_eq!(count(&pool).await, 90, "every record once");
}

/// The column types of `table` as `information_schema` reports them.
async fn column_types(pool: &MySqlPool, table: &str) -> HashMap<String, String> {
    sqlx::query_as::<_, (String, String)>(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_TYPE AS CHAR) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Runs sink-mysql on `n` records of the nested fixture schema (versions by `ts_ms`, records
/// in `flatten` spread over columns) until table `match_entry` holds them; its config.
async fn write_nested(
    db: &str,
    pool: &MySqlPool,
    test: &str,
    flatten: &[String],
    n: i64,
    protocol: StatementProtocol,
) -> etl_pipe::config::Config {
    let mut cfg = config(test, db, 10);
    cfg.sink.mysql.protocol = protocol;
    cfg.sink.version_field = "ts_ms".into();
    cfg.sink.mysql.flatten = flatten.to_vec();
    topics(&cfg, 1).await;
    let s = nested_schema();
    produce(&cfg, &nested_messages(n)).await;
    let task = spawn_mysql(&cfg, &s, codec(&s));
    let rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM match_entry")
            .fetch_one(pool)
            .await
            .unwrap_or(-1)
    };
    assert_eq!(wait_for(n, rows).await, n);
    stop(task).await.unwrap();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_records_land_in_json_decimal_datetime6_and_uuid_columns() {
    nested_records_land(StatementProtocol::Binary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_records_land_the_same_in_text_statements() {
    nested_records_land(StatementProtocol::Text).await;
}

async fn nested_records_land(protocol: StatementProtocol) {
    let test = match protocol {
        StatementProtocol::Binary => "sink_nested",
        StatementProtocol::Text => "sink_nested_text",
    };
    let (db, pool) = common::mysql_db(test).await;
    let cfg = write_nested(&db, &pool, test, &[], 4, protocol).await;
    let s = nested_schema();

    let types = column_types(&pool, "match_entry").await;
    assert_eq!(types["id"], "char(36)");
    assert_eq!(types["region"], "varchar(255)");
    assert_eq!(types["score"], "decimal(10,2)");
    assert_eq!(types["prize"], "decimal(18,4)");
    assert_eq!(types["hash"], "binary(16)");
    assert_eq!(types["raw"], "longblob");
    // MariaDB's JSON is LONGTEXT with a JSON_VALID check.
    assert_eq!(types["mini_series"], "longtext");
    assert_eq!(types["day"], "date");
    assert_eq!(types["at_ms"], "time(3)");
    assert_eq!(types["at_us"], "time(6)");
    assert_eq!(types["ts_us"], "datetime(6)");
    assert_eq!(types["local_ms"], "datetime(3)");

    let row = sqlx::query(
        "SELECT id, region, CAST(score AS CHAR), CAST(prize AS CHAR), HEX(hash), HEX(raw), \
         CAST(tags AS CHAR), CAST(JSON_VALUE(mini_series, '$.progress') AS CHAR), \
         CAST(JSON_VALUE(mini_series, '$.wins') AS CHAR), CAST(JSON_VALUE(players, '$[0].puuid') AS CHAR), \
         CAST(JSON_VALUE(counts, '$.games') AS CHAR), CAST(choice AS CHAR), \
         CAST(JSON_VALUE(samples, '$.psi[1]') AS CHAR), CAST(day AS CHAR), CAST(at_ms AS CHAR), \
         CAST(at_us AS CHAR), CAST(ts_ms AS CHAR), CAST(ts_us AS CHAR), \
         CAST(local_us AS CHAR), flag, ratio, JSON_VALID(players) \
         FROM match_entry WHERE _key = 'n2'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), nested_id(2).to_string());
    assert_eq!(row.get::<String, _>(1), "NA");
    assert_eq!(row.get::<String, _>(2), "-123.47");
    assert_eq!(row.get::<String, _>(3), "9999999999.9999");
    assert_eq!(row.get::<String, _>(4), "000102030405060708090A0B0C0D0E0F");
    assert_eq!(row.get::<String, _>(5), "00FF275C");
    let tags: serde_json::Value = serde_json::from_str(&row.get::<String, _>(6)).unwrap();
    assert_eq!(tags, serde_json::json!(["a", "it's \"quoted\" \\ too"]));
    assert_eq!(row.get::<String, _>(7), "WL-");
    assert_eq!(row.get::<String, _>(8), "1");
    assert_eq!(row.get::<String, _>(9), nested_id(1002).to_string());
    assert_eq!(row.get::<String, _>(10), "7");
    assert_eq!(row.get::<String, _>(11), "42");
    assert_eq!(row.get::<String, _>(12).parse::<f64>().unwrap(), -1e300);
    assert_eq!(row.get::<String, _>(13), "2022-01-08");
    assert_eq!(row.get::<String, _>(14), "12:34:56.789");
    assert_eq!(row.get::<String, _>(15), "12:34:56.789012");
    assert_eq!(row.get::<String, _>(16), "2023-11-14 22:13:20.123");
    assert_eq!(row.get::<String, _>(17), "2023-11-14 22:13:20.123456");
    assert_eq!(row.get::<String, _>(18), "2023-11-14 22:13:20.123456");
    assert_eq!(row.get::<Option<bool>, _>(19), None);
    assert_eq!(row.get::<f32, _>(20), 0.25);
    assert_eq!(row.get::<i64, _>(21), 1);
    // An odd record's null `mini_series` is SQL NULL, not JSON null.
    let null: Option<String> =
        sqlx::query_scalar("SELECT CAST(mini_series AS CHAR) FROM match_entry WHERE _key = 'n1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(null, None);

    // Started again on the table it created, the sink finds it matches.
    let task = spawn_mysql(&cfg, &s, codec(&s));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!task.0.is_finished(), "the sink stopped on its own table");
    stop(task).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flattened_record_lands_one_column_per_field() {
    let (db, pool) = common::mysql_db("sink_flat").await;
    write_nested(
        &db,
        &pool,
        "sink_flat",
        &["mini_series".into()],
        2,
        StatementProtocol::Binary,
    )
    .await;
    let types = column_types(&pool, "match_entry").await;
    assert_eq!(types["mini_series_progress"], "longtext");
    assert_eq!(types["mini_series_wins"], "int(11)");
    assert!(!types.contains_key("mini_series"));
    type Row = (String, Option<String>, Option<i32>, Option<i32>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT CAST(_key AS CHAR), mini_series_progress, mini_series_target, mini_series_wins \
         FROM match_entry ORDER BY _key",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("n0".into(), Some("WL-".into()), Some(3), Some(1)),
            ("n1".into(), None, None, None),
        ]
    );
}

/// A database that stops answering — connections stay open and nothing comes back, as with a
/// hung server or a network dropping packets without a reset — is a retriable failure after
/// `sink.mysql.write_timeout`, not a sink waiting for ever: the hung connection is closed, a
/// new one writes the batch, every record lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_stops_answering_is_retried_after_the_write_timeout() {
    let (db, pool) = common::mysql_db("sink_stall").await;
    let proxy = Proxy::start("127.0.0.1:3306").await;
    let mut cfg = config("sink_stall", &db, 20);
    cfg.mysql.port = proxy.port;
    cfg.sink.mysql.write_timeout = Duration::from_secs(3);
    topics(&cfg, 1).await;
    let s = schema();
    let task = spawn_mysql(&cfg, &s, codec(&s));
    produce(&cfg, &spread(&s, 20, 1)).await;
    let rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM league_entry")
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
    };
    assert_eq!(
        wait_for(20, rows).await,
        20,
        "the first batch before the stall"
    );

    // The test holds the partition's offset row, so that the sink's next batch waits inside
    // its transaction (its `SELECT ... FOR UPDATE` sent, the answer to come).
    let group = cfg.pipeline.group_id(mysql::STAGE);
    let topic = cfg.topics.name(TopicRole::Scored);
    let mut holder = pool.begin().await.unwrap();
    sqlx::query(
        "SELECT next_offset FROM etl_offsets WHERE consumer_group = ? AND topic = ? \
         AND partition_id = 0 FOR UPDATE",
    )
    .bind(&group)
    .bind(&topic)
    .fetch_one(&mut *holder)
    .await
    .unwrap();
    let more: Vec<_> = (0..20)
        .map(|i| {
            let k = format!("s{i}");
            (0, k.clone(), encode(&s, &record(&k, i)))
        })
        .collect();
    produce(&cfg, &more).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Every connection the sink holds, the waiting one included, hangs for good from now: the
    // server's answer, once the lock is free, never reaches the sink.
    proxy.stall();
    holder.rollback().await.unwrap();
    // New connections get through again; the hung ones never answer.
    proxy.set_up(true);
    let t0 = std::time::Instant::now();
    let n = wait_for(40, rows).await;
    let took = t0.elapsed();
    let result = stop(task).await;
    assert_eq!(
        n, 40,
        "the batch on a hung connection was never retried (60 s): the sink waits for an answer \
         that does not come"
    );
    result.unwrap();
    let stored = mysql::stored_offsets(&pool, "etl_offsets", &group, &topic)
        .await
        .unwrap();
    assert_eq!(stored.values().sum::<i64>(), 40, "offsets with the rows");
    eprintln!("written {took:?} after new connections got through again");
}
