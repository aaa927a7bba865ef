//! Removes what earlier test runs left in the local stack: topics, MySQL databases and tables,
//! offsets rows, MongoDB databases and collections named by the tests' `unique()` helper
//! (`etltest_<prefix>_<start>_<pid>_<n>_<random>`, or with `-`) more than two hours after that
//! test process started (the CI limit is 90 minutes). Passing tests clean up after themselves
//! where they can (e2e, bench-e2e); failed, killed and many smaller tests do not, and the stack
//! is shared by every run on the machine, so without this each CI run adds ~60 topics and a
//! few databases for good.
//!
//! Run by the test command (`scripts/test.sh`) before the tests; by hand:
//! `cargo run --example prune_test_artefacts`. Addresses: `ETL_TEST_KAFKA`, `ETL_TEST_MYSQL`,
//! `ETL_TEST_MONGO` (as the tests). Only names with an `etltest` part followed by the four
//! numbers are touched: demo and bench runs, a user's tables and topics are not. Age, not pid
//! liveness, decides: a test run in another container sharing the stack has pids this one
//! cannot see. A store that cannot be reached is reported and skipped: the tests themselves
//! fail clearly on that.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etl_pipe::config::KafkaConfig;
use mongodb::bson::doc;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

/// The tests' marker (tests/common `unique()`).
const MARK: &str = "etltest";
/// Older than this, a test's artefact is left over (no test run lasts this long).
const MAX_AGE_SECS: u64 = 2 * 3600;

/// The start time (Unix seconds) in a test-made name, if it is one: the part before the first
/// `.`, split at `_` and `-`, has an `etltest` part, a prefix, then four numbers (start, pid,
/// counter, random) at the end.
fn test_start(name: &str) -> Option<u64> {
    let stem = name.split('.').next()?;
    let parts: Vec<&str> = stem.split(['_', '-']).collect();
    let mark = parts.iter().position(|p| *p == MARK)?;
    let after = &parts[mark + 1..];
    if after.len() < 5 {
        return None;
    }
    let numbers = &after[after.len() - 4..];
    let numeric = |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !numbers.iter().all(numeric) {
        return None;
    }
    numbers[0].parse().ok()
}

/// A test artefact older than [`MAX_AGE_SECS`].
fn stale(name: &str, now: u64) -> bool {
    test_start(name).is_some_and(|start| now.saturating_sub(start) > MAX_AGE_SECS)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.into())
}

async fn kafka(now: u64) -> anyhow::Result<usize> {
    let cfg = KafkaConfig {
        brokers: env("ETL_TEST_KAFKA", "127.0.0.1:9092"),
        ..Default::default()
    };
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .create()?;
    let md = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(15))?;
    let names: Vec<String> = md
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| stale(n, now))
        .collect();
    for chunk in names.chunks(200) {
        etl_pipe::kafka::topics::delete(&cfg, chunk).await?;
    }
    Ok(names.len())
}

async fn mysql(now: u64) -> anyhow::Result<usize> {
    let base = env("ETL_TEST_MYSQL", "mysql://etl:etl@127.0.0.1:3306");
    let pool = sqlx::MySqlPool::connect(&format!("{base}/mysql")).await?;
    let mut n = 0;
    let dbs: Vec<String> =
        sqlx::query_scalar("SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata")
            .fetch_all(&pool)
            .await?;
    for db in dbs.iter().filter(|d| stale(d, now)) {
        sqlx::query(&format!("DROP DATABASE IF EXISTS `{db}`"))
            .execute(&pool)
            .await?;
        n += 1;
    }
    // Runs of the whole pipeline (e2e) write into the shared database: their tables are
    // `<record>_<run id>` and their offsets rows carry the run's consumer group.
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(table_schema AS CHAR), CAST(table_name AS CHAR) \
         FROM information_schema.tables \
         WHERE table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')",
    )
    .fetch_all(&pool)
    .await?;
    for (schema, table) in &tables {
        if stale(table, now) {
            sqlx::query(&format!("DROP TABLE IF EXISTS `{schema}`.`{table}`"))
                .execute(&pool)
                .await?;
            n += 1;
        } else if table == "etl_offsets" {
            let groups: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT DISTINCT CAST(consumer_group AS CHAR) FROM `{schema}`.`{table}`"
            ))
            .fetch_all(&pool)
            .await?;
            for g in groups.iter().filter(|g| stale(g, now)) {
                sqlx::query(&format!(
                    "DELETE FROM `{schema}`.`{table}` WHERE consumer_group = ?"
                ))
                .bind(g)
                .execute(&pool)
                .await?;
            }
        }
    }
    pool.close().await;
    Ok(n)
}

async fn mongo(now: u64) -> anyhow::Result<usize> {
    let client =
        mongodb::Client::with_uri_str(env("ETL_TEST_MONGO", "mongodb://127.0.0.1:27017")).await?;
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await?;
    let mut n = 0;
    for db in client.list_database_names().await? {
        if stale(&db, now) {
            client.database(&db).drop().await?;
            n += 1;
            continue;
        }
        let d = client.database(&db);
        for c in d.list_collection_names().await? {
            if stale(&c, now) {
                d.collection::<mongodb::bson::Document>(&c).drop().await?;
                n += 1;
            }
        }
    }
    Ok(n)
}

#[tokio::main]
async fn main() {
    let report = |store: &str, r: anyhow::Result<usize>| match r {
        Ok(n) => println!("[prune] {store}: removed {n} left over by earlier test runs"),
        Err(e) => eprintln!("[prune] {store}: skipped ({e:#})"),
    };
    let now = now();
    report("kafka topics", kafka(now).await);
    report("mysql databases and tables", mysql(now).await);
    report("mongodb databases and collections", mongo(now).await);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_test_names_match() {
        let t = 1_764_375_000;
        assert_eq!(
            test_start("etltest_x_malformed_1764375000_24135_21_804.raw"),
            Some(t)
        );
        assert_eq!(
            test_start("etltest-e2e-1764375000-28460-0-245.scored"),
            Some(t)
        );
        assert_eq!(
            test_start("league_entry_etltest_e2e_1764375000_28460_0_245"),
            Some(t)
        );
        assert_eq!(
            test_start("etltest_sink_docs_1764375000_11914_1_94"),
            Some(t)
        );
        // Not made by the tests.
        assert_eq!(test_start("bench-half-20261128-233839.raw"), None);
        assert_eq!(test_start("league_entry_demo_20261128_231641"), None);
        assert_eq!(test_start("orders_2026_11_28_01"), None);
        assert_eq!(test_start("sink_docerr_11914_1_94788"), None);
        assert_eq!(test_start("etl"), None);
        // The marker needs a prefix and all four numbers.
        assert_eq!(test_start("etltest_1764375000_1_2_3"), None);
        assert_eq!(test_start("etltest_x_1764375000_1_2"), None);
        let name = "etltest_x_1764375000_24135_21_804";
        assert!(!stale(name, t + 60));
        assert!(!stale(name, t + MAX_AGE_SECS));
        assert!(stale(name, t + MAX_AGE_SECS + 1));
    }
}
