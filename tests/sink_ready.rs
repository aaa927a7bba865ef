//! `/readyz` of a sink tells the truth about its database (issue #16 item 7): the sink runs
//! in-process behind a TCP proxy to MariaDB that the test takes down (every connection closed,
//! new ones dropped, as when the server stops) and brings back. Its own test binary: the
//! health registry is process-wide.
mod common;
mod sink_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etl_pipe::observability::{health, Check};
use etl_pipe::stages::sinks::mysql;
use sink_support::*;

async fn ready(url: &str) -> u16 {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    match client.get(url).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

async fn wait_status(url: &str, want: u16, within: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if ready(url).await == want {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_a_database_outage_and_nothing_is_lost() {
    let (db, pool) = common::mysql_db("sink_ready").await;
    let proxy = Proxy::start("127.0.0.1:3306").await;
    let mut cfg = config("sink_ready", &db, 20);
    cfg.mysql.port = proxy.port;
    topics(&cfg, 2).await;
    let s = schema();
    health().require(Check::defaults_for(mysql::STAGE));
    let server = etl_pipe::observability::server::serve(
        "127.0.0.1:0".parse().unwrap(),
        health(),
        Default::default(),
    )
    .await
    .unwrap();
    let url = format!("http://{}/readyz", server.addr);
    let task = spawn_mysql(&cfg, &s, codec(&s));

    // A steady trickle of records all along: 10 a second.
    let produced = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let feeder = tokio::spawn({
        let (cfg, s, produced, done) = (cfg.clone(), s.clone(), produced.clone(), done.clone());
        async move {
            let mut i = 0usize;
            while !done.load(Ordering::SeqCst) {
                let k = format!("k{i}");
                produce(
                    &cfg,
                    &[((i % 2) as i32, k.clone(), encode(&s, &record(&k, i as i32)))],
                )
                .await;
                i += 1;
                produced.store(i, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    // A failed check stops the sink first: its poll thread would keep the runtime alive.
    let fail = |task: &SinkTask, what: &str| -> ! {
        task.1.cancel();
        done.store(true, Ordering::SeqCst);
        panic!("{what}");
    };
    if wait_status(&url, 200, Duration::from_secs(30))
        .await
        .is_none()
    {
        fail(&task, "never ready");
    }
    proxy.set_up(false);
    let down = wait_status(&url, 503, Duration::from_secs(20)).await;
    if down.is_none() {
        fail(
            &task,
            "/readyz stayed 200 for 20 s with the database unreachable",
        );
    }
    // It stays so while the database is away (the sink retries, nothing moves).
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if ready(&url).await != 503 {
            fail(
                &task,
                "/readyz turned 200 again while the database was still unreachable",
            );
        }
    }
    proxy.set_up(true);
    let up = wait_status(&url, 200, Duration::from_secs(30)).await;
    if up.is_none() {
        fail(
            &task,
            "/readyz did not come back within 30 s of the database",
        );
    }
    eprintln!("readyz: 503 after {down:?} of outage, 200 again {up:?} after recovery");
    done.store(true, Ordering::SeqCst);
    feeder.await.unwrap();
    let n = produced.load(Ordering::SeqCst) as i64;
    let group = cfg.pipeline.group_id(mysql::STAGE);
    let stored = wait_for(n, || async {
        mysql::stored_offsets(
            &pool,
            "etl_offsets",
            &group,
            &cfg.topics.name(etl_pipe::config::TopicRole::Scored),
        )
        .await
        .map(|m| m.values().sum::<i64>())
        .unwrap_or(0)
    })
    .await;
    stop(task).await.unwrap();
    assert_eq!(stored, n, "every record written");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM league_entry")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, n, "no record lost");
}
