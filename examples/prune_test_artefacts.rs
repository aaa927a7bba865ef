//! Removes what earlier test runs left in the local stack: topics, MySQL databases and tables,
//! offsets rows, MongoDB databases and collections named by the tests' `unique()` helper
//! (`<name>_<pid>_<n>_<random>`, or with `-`) whose test process is gone. Passing tests clean up
//! after themselves where they can (e2e, bench-e2e); failed, killed and many smaller tests do
//! not, and the stack is shared by every run on the machine, so without this each CI run adds
//! ~60 topics and a few databases for good.
//!
//! Run by the test command (`scripts/test.sh`) before the tests; by hand:
//! `cargo run --example prune_test_artefacts`. Addresses: `ETL_TEST_KAFKA`, `ETL_TEST_MYSQL`,
//! `ETL_TEST_MONGO` (as the tests). Names of a still-running process are kept; anything else
//! (demo and bench runs, the `etl` table of a user) never matches. A store that cannot be
//! reached is reported and skipped: the tests themselves fail clearly on that.
use std::time::Duration;

use etl_pipe::config::KafkaConfig;
use mongodb::bson::doc;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

/// Highest pid Linux hands out (`/proc/sys/kernel/pid_max` at most 2^22).
const PID_MAX: u64 = 1 << 22;

/// The pid in a test-generated name, if the name is one: the part before the first `.`, split
/// at `_` and `-`, ends with three numbers (pid, counter, random) after a non-numeric part.
fn test_pid(name: &str) -> Option<u64> {
    let stem = name.split('.').next()?;
    let parts: Vec<&str> = stem.split(['_', '-']).collect();
    if parts.len() < 4 {
        return None;
    }
    let tail = &parts[parts.len() - 3..];
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !tail.iter().all(|s| numeric(s)) || numeric(parts[parts.len() - 4]) {
        return None;
    }
    let pid: u64 = tail[0].parse().ok()?;
    (pid > 0 && pid <= PID_MAX).then_some(pid)
}

/// A test artefact whose process is gone.
fn stale(name: &str) -> bool {
    test_pid(name).is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.into())
}

async fn kafka() -> anyhow::Result<usize> {
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
        .filter(|n| stale(n))
        .collect();
    for chunk in names.chunks(200) {
        etl_pipe::kafka::topics::delete(&cfg, chunk).await?;
    }
    Ok(names.len())
}

async fn mysql() -> anyhow::Result<usize> {
    let base = env("ETL_TEST_MYSQL", "mysql://etl:etl@127.0.0.1:3306");
    let pool = sqlx::MySqlPool::connect(&format!("{base}/mysql")).await?;
    let mut n = 0;
    let dbs: Vec<String> =
        sqlx::query_scalar("SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata")
            .fetch_all(&pool)
            .await?;
    for db in dbs.iter().filter(|d| stale(d)) {
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
        if stale(table) {
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
            for g in groups.iter().filter(|g| stale(g)) {
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

async fn mongo() -> anyhow::Result<usize> {
    let client =
        mongodb::Client::with_uri_str(env("ETL_TEST_MONGO", "mongodb://127.0.0.1:27017")).await?;
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await?;
    let mut n = 0;
    for db in client.list_database_names().await? {
        if stale(&db) {
            client.database(&db).drop().await?;
            n += 1;
            continue;
        }
        let d = client.database(&db);
        for c in d.list_collection_names().await? {
            if stale(&c) {
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
    report("kafka topics", kafka().await);
    report("mysql databases and tables", mysql().await);
    report("mongodb databases and collections", mongo().await);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_test_names_match() {
        assert_eq!(test_pid("x_malformed_24135_21_8044.raw"), Some(24135));
        assert_eq!(test_pid("e2e-28460-0-24527.scored"), Some(28460));
        assert_eq!(test_pid("league_entry_e2e_28460_0_24527"), Some(28460));
        assert_eq!(test_pid("sink_docerr_11914_1_94788"), Some(11914));
        assert_eq!(test_pid("bench-half-20261128-233839.raw"), None);
        assert_eq!(test_pid("league_entry_demo_20261128_231641"), None);
        assert_eq!(test_pid("etl"), None);
        assert_eq!(test_pid("a_1_2"), None);
        // Four numbers: the first is not a pid position.
        assert_eq!(test_pid("run_1_2_3_4"), None);
        // Not a pid (above pid_max).
        assert_eq!(test_pid("x_99999999_1_2"), None);
    }
}
