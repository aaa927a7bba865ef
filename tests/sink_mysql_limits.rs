//! sink-mysql's error sorting against the real MariaDB for a server-wide limit:
//! `max_prepared_stmt_count` is a global, so this test has a binary of its own (the other
//! sink tests run in parallel inside theirs, and test binaries run one after another).
mod common;

use etl_pipe::stages::sinks::mysql::{self, ErrorClass};

/// Puts the server's `max_prepared_stmt_count` back when dropped, even if the test fails.
struct Restore(u64);

impl Drop for Restore {
    fn drop(&mut self) {
        let value = self.0;
        // Drop cannot await: a runtime of its own on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let pool = sqlx::MySqlPool::connect(&format!("{}/mysql", common::mysql_url_base()))
                    .await
                    .unwrap();
                sqlx::raw_sql(&format!("SET GLOBAL max_prepared_stmt_count = {value}"))
                    .execute(&pool)
                    .await
                    .unwrap();
            })
        })
        .join();
    }
}

/// Error 1461 (the server's prepared statements are all taken) used to be fatal with only the
/// server's text. It clears once other clients close theirs, so the sink retries it, and the
/// message says what to raise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_prepared_statement_count_is_retried_with_a_hint() {
    let (_db, pool) = common::mysql_db("sink_limits").await;
    let before: u64 = sqlx::query_scalar("SELECT @@GLOBAL.max_prepared_stmt_count")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::raw_sql("SET GLOBAL max_prepared_stmt_count = 0")
        .execute(&pool)
        .await
        .unwrap();
    let _restore = Restore(before);

    // A statement no connection has prepared yet.
    let err = sqlx::query("SELECT ? + 41")
        .bind(1i64)
        .execute(&pool)
        .await
        .expect_err("no prepared statement may be created");
    let (class, message) = mysql::classify(&err);
    assert!(message.starts_with("MySQL error 1461"), "{message}");
    assert_eq!(class, ErrorClass::Retriable, "{message}");
    assert!(
        message.contains("raise max_prepared_stmt_count"),
        "the message says what to do: {message}"
    );
}
