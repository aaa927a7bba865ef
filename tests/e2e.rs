//! The whole pipeline end to end, every stage a separate process: the sample API with faults
//! (429s, 5xx, malformed records, missing fields, a drift) → extract → clean → score →
//! sink-mysql + sink-mongo. Two stages are killed with SIGKILL mid-run and restarted. Every
//! source record must end up exactly once in MySQL/Mongo, the dead letters or the quarantine.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use mongodb::bson::{doc, Document};
use rdkafka::Message;

use etl_pipe::config::TopicRole;
use etl_pipe::tooling::local::run::{self, Crash};
use etl_pipe::tooling::local::tally;
use etl_pipe::tooling::local::{LocalPipeline, SourceOptions};
use etl_pipe::tooling::sample_api::data::{Dataset, Expected};

/// key, name, wins, losses, trace id, source topic, sink source topic, quality decision
type RowCheck = (
    String,
    Option<String>,
    i32,
    i32,
    Option<String>,
    String,
    String,
    Option<String>,
);
/// key, name, wins, losses, league points, trace id, partition, offset, quality window
type RowSnapshot = (
    String,
    Option<String>,
    i32,
    i32,
    i32,
    Option<String>,
    i32,
    i64,
    Option<String>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_lands_exactly_once_through_faults_and_crashes() {
    common::require_kafka();
    if std::env::var("ETL_MYSQL_PASSWORD").is_err() {
        // The local stack's password (deploy/local/stack.sh), for this process and the stages.
        std::env::set_var("ETL_MYSQL_PASSWORD", "etl");
    }
    let records = 12_000;
    let mut source = SourceOptions::with_faults(records);
    // Slow enough that the crashes happen mid-run.
    source.api_rate_limit = Some(12);
    source.extract_rate_limit = 20.0;
    let run_id = common::unique("e2e").replace('_', "-");
    let dir = tempfile::tempdir().unwrap();
    let mut p = LocalPipeline::prepare(
        Path::new(env!("CARGO_BIN_EXE_etl-pipe")),
        Path::new("config/demo.toml"),
        dir.path(),
        &run_id,
        source.clone(),
        &[],
    )
    .unwrap();
    let crashes = [
        Crash {
            stage: "clean".into(),
            after_rows: 1_500,
        },
        Crash {
            stage: "sink-mysql".into(),
            after_rows: 4_000,
        },
    ];
    let o = match run::run(&mut p, &crashes, Duration::from_secs(300), true).await {
        Ok(o) => o,
        Err(e) => panic!("run failed: {e}\n(logs kept in {})", dir.keep().display()),
    };
    eprintln!("{}", run::render(&p, &o));
    let cfg = p.cfg.clone();
    assert_eq!(
        o.crashes.len(),
        2,
        "both crashes happened mid-run: {:?}",
        o.crashes
    );

    // What the source served, entry by entry.
    let mut ds = Dataset::new(records, source.page_size, source.seed);
    ds.queues = vec!["RANKED_SOLO_5x5".into()];
    ds.tiers = source.tiers.clone();
    ds.divisions = source.divisions.clone();
    ds.malformed_rate = source.malformed_rate;
    ds.missing_rate = source.missing_rate;
    ds.drift_after_pages = source.drift_after_pages;
    let mut poison: BTreeMap<String, u64> = BTreeMap::new();
    let mut keys: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..records {
        match ds.expected(i) {
            Expected::Poison { kind } => *poison.entry(kind.to_string()).or_default() += 1,
            Expected::Record { key } => {
                keys.insert(key, i);
            }
        }
    }
    assert!(!poison.is_empty() && keys.len() as u64 + poison.values().sum::<u64>() == records);

    // Extract: every poison record dead-lettered with its reason, every other one in raw once.
    let extract_dl = o.dead_letters.kinds_of("extract");
    assert_eq!(extract_dl, poison, "extract dead letters by reason");
    assert_eq!(
        o.topics["raw"].records,
        keys.len() as u64,
        "raw holds each good record once"
    );

    // Counts along the way: a duplicate anywhere would show here.
    let dl_clean = o.dead_letters.count_stage("clean");
    let dl_score = o.dead_letters.count_stage("score");
    assert_eq!(
        o.topics["cleaned"].records,
        o.topics["raw"].records - dl_clean
    );
    assert_eq!(
        o.topics["scored"].records + o.quarantine.total(),
        o.topics["cleaned"].records - dl_score
    );
    assert_eq!(
        o.mysql_rows, o.topics["scored"].records,
        "one row per scored record"
    );
    assert_eq!(o.mongo_docs, o.mysql_rows, "one document per row");
    // sink-mongo (never killed) measured fetch → durable write for at least every document.
    // (sink-mysql was killed and restarted: its new histogram holds only what the new
    // process wrote, possibly nothing.)
    let mongo_hist = &o.commit_latency["sink-mongo"];
    assert!(
        mongo_hist.count() >= o.mongo_docs,
        "sink-mongo fetch→commit samples {} < documents {}",
        mongo_hist.count(),
        o.mongo_docs
    );
    let p50 = mongo_hist.quantile(0.5).unwrap();
    assert!(p50 > 0.0 && p50 < 600.0, "p50 {p50} s");
    // Every stage's /readyz answered 200 while records flowed (Kafka, partitions, database).
    assert!(
        o.ready.values().all(|ok| *ok) && o.ready.len() == 4,
        "readiness per stage: {:?}",
        o.ready
    );
    assert_eq!(
        o.dead_letters.count_stage("sink-mysql") + o.dead_letters.count_stage("sink-mongo"),
        0
    );
    // The exactly-once loops export where their thread spends its time (the restarted clean's
    // since its restart); fed a few hundred records a second, score's mostly waits for input.
    for stage in ["clean", "score"] {
        let phases = o.loop_phases.get(stage);
        assert!(
            phases
                .and_then(|p| p.get("process"))
                .is_some_and(|s| *s > 0.0)
                && phases.and_then(|p| p.get("poll")).is_some_and(|s| *s > 0.0),
            "{stage}: etl_loop_phase_microseconds_total per phase: {:?}",
            o.loop_phases
        );
    }
    let score = &o.loop_phases["score"];
    assert!(
        score["poll"] > score["process"],
        "score's loop waited for input longer than it worked: {score:?}"
    );

    // Keys: rows ∪ dead letters ∪ quarantine is exactly the set of good source keys, disjoint.
    let pool = tally::mysql_pool(&cfg).await.unwrap();
    let rows: Vec<RowCheck> =
        sqlx::query_as(&format!(
            "SELECT summoner_id, summoner_name, wins, losses, `_trace_id`, source_topic, `_source_topic`, quality_decision FROM `{}`",
            o.table
        ))
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for r in &rows {
        assert!(seen.insert(r.0.clone()), "row key {} twice", r.0);
    }
    let failed_keys = |f: &tally::Failed, stages: &[&str]| -> Vec<String> {
        let _ = stages;
        f.keys.iter().flatten().cloned().collect()
    };
    let dl_keys: Vec<String> = {
        let mut v = Vec::new();
        tally::scan(&cfg, &cfg.topics.name(TopicRole::DeadLetter), |m| {
            let stage = m
                .headers()
                .and_then(|h| {
                    etl_pipe::kafka::headers::get_str(h, etl_pipe::kafka::headers::ERROR_STAGE)
                })
                .unwrap_or("");
            if stage != "extract" {
                v.push(String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned());
            }
        })
        .unwrap();
        v
    };
    for k in dl_keys.iter().chain(failed_keys(&o.quarantine, &[]).iter()) {
        assert!(
            seen.insert(k.clone()),
            "key {k} is in two places (or twice in a failure topic)"
        );
    }
    let expected: BTreeSet<String> = keys.keys().cloned().collect();
    assert_eq!(
        seen.len(),
        expected.len(),
        "every good record accounted for once"
    );
    assert_eq!(seen, expected);

    // The drift was caught: windows passed and failed, the failed ones are quarantined.
    assert!(
        o.windows.iter().any(|w| w.decision == "FAIL"),
        "a drifted window failed"
    );
    assert!(
        o.windows.iter().any(|w| w.decision != "FAIL"),
        "stable windows passed"
    );
    assert!(o.quarantine.total() > 0);

    // Values and lineage on a sample of rows, against what the API served.
    let coll = tally::mongo_collection(&cfg).await.unwrap();
    for r in rows.iter().step_by((rows.len() / 25).max(1)) {
        let i = keys[&r.0];
        let served: serde_json::Value = serde_json::from_str(&ds.entry_json(i)).unwrap();
        assert_eq!(
            r.2 as i64,
            served["wins"].as_i64().unwrap(),
            "wins of {}",
            r.0
        );
        assert_eq!(
            r.3 as i64,
            served["losses"].as_i64().unwrap(),
            "losses of {}",
            r.0
        );
        if let Some(name) = served.get("summonerName").and_then(|n| n.as_str()) {
            assert_eq!(r.1.as_deref(), Some(name));
        }
        let trace = r.4.as_deref().expect("trace id on the row");
        assert_eq!(trace.len(), 32);
        assert_eq!(r.5, cfg.topics.name(TopicRole::Raw), "source topic lineage");
        assert_eq!(
            r.6,
            cfg.topics.name(TopicRole::Scored),
            "sink source topic lineage"
        );
        assert!(matches!(r.7.as_deref(), Some("PASS") | Some("WARN")));
        let d: Document = coll
            .find_one(doc! {"_id": &r.0})
            .await
            .unwrap()
            .expect("document");
        assert_eq!(d.get_i32("wins").unwrap() as i64, r.2 as i64);
        let doc_trace = d
            .get_str("_trace_id")
            .or_else(|_| d.get_str("trace_id"))
            .unwrap();
        assert_eq!(doc_trace, trace, "the same trace id in MySQL and MongoDB");
    }

    // Nested data (issue 20): every entry the API served with a `miniSeries` has it as a JSON
    // column in MySQL and as a subdocument in MongoDB, field for field; the others null.
    let series: Vec<(String, Option<String>)> = sqlx::query_as(&format!(
        "SELECT summoner_id, CAST(mini_series AS CHAR) FROM `{}`",
        o.table
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut docs: BTreeMap<String, Document> = BTreeMap::new();
    let mut cursor = coll
        .find(doc! {})
        .projection(doc! {"mini_series": 1})
        .await
        .unwrap();
    while let Some(d) = futures::StreamExt::next(&mut cursor).await {
        let d = d.unwrap();
        docs.insert(d.get_str("_id").unwrap().to_string(), d);
    }
    let mut with_series = 0;
    for (key, json) in &series {
        let served: serde_json::Value = serde_json::from_str(&ds.entry_json(keys[key])).unwrap();
        let want = served.get("miniSeries");
        let d = &docs[key];
        match (want, json) {
            (None, None) => assert_eq!(
                d.get("mini_series"),
                Some(&mongodb::bson::Bson::Null),
                "{key}"
            ),
            (Some(w), Some(j)) => {
                with_series += 1;
                let row: serde_json::Value = serde_json::from_str(j).unwrap();
                assert_eq!(&row, w, "MySQL mini_series of {key}");
                let sub = d.get_document("mini_series").expect("a subdocument");
                let sub: serde_json::Value =
                    mongodb::bson::Bson::Document(sub.clone()).into_relaxed_extjson();
                assert_eq!(&sub, w, "MongoDB mini_series of {key}");
            }
            _ => panic!("{key}: the API served miniSeries {want:?}, MySQL holds {json:?}"),
        }
    }
    assert!(with_series > 0, "no entry with a miniSeries reached MySQL");
    let docs_with_series = coll
        .count_documents(doc! {"mini_series.progress": {"$exists": true}})
        .await
        .unwrap();
    assert_eq!(docs_with_series, with_series as u64);

    // Replay sink-mysql from the earliest offset over what it already wrote: the same rows.
    let snapshot = || {
        let pool = pool.clone();
        let table = o.table.clone();
        async move {
            let rows: Vec<RowSnapshot> =
                sqlx::query_as(&format!(
                    "SELECT summoner_id, summoner_name, wins, losses, league_points, `_trace_id`, \
                     `_source_partition`, `_source_offset`, quality_window FROM `{table}` ORDER BY summoner_id"
                ))
                .fetch_all(&pool)
                .await
                .unwrap();
            rows
        }
    };
    let before = snapshot().await;
    let stage = etl_pipe::ops::replay::Stage::SinkMysql;
    let stored_before = etl_pipe::ops::replay_mysql::current(&cfg, stage)
        .await
        .unwrap()
        .unwrap();
    // The instance killed mid-run stays a group member until its session times out (45 s):
    // replay refuses until then, as it would for an operator.
    let replay_deadline = std::time::Instant::now() + Duration::from_secs(90);
    let (replay, out) = loop {
        let replay = std::process::Command::new(env!("CARGO_BIN_EXE_etl-pipe"))
            .args([
                "replay",
                "--stage",
                "sink-mysql",
                "--to-earliest",
                "--execute",
            ])
            .envs(p.env.iter().map(|(a, b)| (a, b)))
            .env("ETL_CONFIG", &p.base_config)
            .output()
            .unwrap();
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&replay.stdout),
            String::from_utf8_lossy(&replay.stderr)
        );
        if replay.status.success()
            || !out.contains("live member")
            || std::time::Instant::now() > replay_deadline
        {
            break (replay, out);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert!(replay.status.success(), "{out}");
    let moved = etl_pipe::ops::replay_mysql::current(&cfg, stage)
        .await
        .unwrap()
        .unwrap();
    assert!(
        moved.values().all(|o| *o == 0),
        "offsets table moved to the start: {moved:?}\n{out}"
    );
    p.start("sink-mysql", &[]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let now = etl_pipe::ops::replay_mysql::current(&cfg, stage)
            .await
            .unwrap()
            .unwrap();
        if now == stored_before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replayed sink did not catch up: {now:?} vs {stored_before:?}"
        );
        p.check_alive("sink-mysql").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    p.stop_all(Duration::from_secs(30));
    let after = snapshot().await;
    assert_eq!(before.len(), after.len());
    assert!(
        before == after,
        "a replay over written records leaves the same rows"
    );
    // Passed: remove the run's topics, table and collection (a failed run keeps them).
    p.cleanup().await.unwrap();
}
