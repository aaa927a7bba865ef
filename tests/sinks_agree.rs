//! The two sinks land the same records (issue 17, item 6): strings as long as the scored
//! schema allows — a 300-character name, a 5 000-character one, long texts in other string
//! fields — are stored whole by sink-mysql as by sink-mongo, so MySQL and MongoDB hold the
//! same keys. Real MariaDB and FerretDB.
mod common;
mod sink_support;

use std::collections::BTreeSet;

use mongodb::bson::{doc, Document};

use etl_pipe::record::Value;
use sink_support::*;

const TABLE: &str = "league_entry";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sinks_store_over_long_strings_and_hold_the_same_keys() {
    let (db, pool) = common::mysql_db("sinks_agree").await;
    let mongo = common::mongo_db("sinks_agree").await;
    let mut cfg = config("sinks_agree", &db, 100);
    cfg.mongo.database = mongo.name().to_string();
    topics(&cfg, 1).await;
    let s = schema();
    let long_name = "ñ".repeat(300);
    let very_long = "x".repeat(5000);
    let mut msgs = Vec::new();
    for i in 0..60 {
        let key = format!("k{i}");
        let mut r = record(&key, i);
        match i {
            7 => r.set("summoner_name", Value::String(long_name.clone())),
            8 => r.set("summoner_name", Value::String(very_long.clone())),
            9 => r.set("tier", Value::String(long_name.clone())),
            10 => r.set("quality_window", Value::String(very_long.clone())),
            _ => {}
        }
        msgs.push((0, key, encode(&s, &r)));
    }
    produce(&cfg, &msgs).await;
    let my = spawn_mysql(&cfg, &s, codec(&s));
    let mo = spawn_mongo(&cfg, &s, codec(&s));
    let rows = |pool: sqlx::MySqlPool| async move {
        sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {TABLE}"))
            .fetch_one(&pool)
            .await
            .unwrap_or(-1)
    };
    let docs = |db: mongodb::Database| async move {
        db.collection::<Document>(TABLE)
            .count_documents(doc! {})
            .await
            .map(|n| n as i64)
            .unwrap_or(-1)
    };
    let in_mysql = wait_for(60, || rows(pool.clone())).await;
    let in_mongo = wait_for(60, || docs(mongo.clone())).await;
    stop(my).await.unwrap();
    stop(mo).await.unwrap();

    // `_key` is VARBINARY (the Kafka key's bytes).
    let mysql_keys: BTreeSet<String> =
        sqlx::query_scalar::<_, Vec<u8>>(&format!("SELECT _key FROM {TABLE}"))
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|k| String::from_utf8(k).unwrap())
            .collect();
    let mut mongo_keys = BTreeSet::new();
    let mut cursor = mongo
        .collection::<Document>(TABLE)
        .find(doc! {})
        .await
        .unwrap();
    while cursor.advance().await.unwrap() {
        let d = cursor.deserialize_current().unwrap();
        mongo_keys.insert(d.get_str("_id").unwrap().to_string());
    }
    assert_eq!(
        mysql_keys, mongo_keys,
        "MySQL {in_mysql} rows, MongoDB {in_mongo} documents"
    );
    assert_eq!(mysql_keys.len(), 60);
    let name: String = sqlx::query_scalar(&format!(
        "SELECT summoner_name FROM {TABLE} WHERE _key = 'k8'"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(name, very_long, "stored whole");
    let tier: String = sqlx::query_scalar(&format!("SELECT tier FROM {TABLE} WHERE _key = 'k9'"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tier, long_name);
}
