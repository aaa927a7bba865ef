//! `etl-pipe trace` against a real run of the whole pipeline (sample API with faults and
//! drift → every stage → MySQL and FerretDB): a landed record found by its trace id, a
//! record clean dead-lettered, one MySQL refused (a CHECK constraint), a quarantined one — each
//! with its hops, its row/document or why there is none, and the outcome events in the logs
//! topic.
mod common;

use std::path::Path;
use std::time::Duration;

use rdkafka::message::Message;

use etl_pipe::config::TopicRole;
use etl_pipe::kafka::headers as h;
use etl_pipe::ops::trace::{self, Bounds};
use etl_pipe::tooling::local::run;
use etl_pipe::tooling::local::tally;
use etl_pipe::tooling::local::{LocalPipeline, SourceOptions};

/// (key, trace id) of the first message of `role` that `keep` accepts.
fn first(
    p: &LocalPipeline,
    role: TopicRole,
    keep: impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> bool,
) -> Option<(String, String)> {
    let mut out = None;
    tally::scan(&p.cfg, &p.cfg.topics.name(role), |m| {
        if out.is_none() && keep(m) {
            let tid = m
                .headers()
                .and_then(|hs| h::get_str(hs, h::TRACEPARENT))
                .and_then(etl_pipe::observability::trace::trace_id)
                .map(str::to_string);
            if let (Some(k), Some(t)) = (m.key(), tid) {
                out = Some((String::from_utf8_lossy(k).into_owned(), t));
            }
        }
    })
    .unwrap();
    out
}

/// The trace of a dead-lettered record, checked alike whichever stage refused it: hops `roles`
/// ending in the dead letter, whose reason starts with `stage` and contains `reason_has`; no
/// MySQL row ("dead-lettered: …"); the record's trace id; the `record <outcome>` event in the
/// logs topic. Returns the rendered trace for further messages.
fn assert_dead_lettered(
    j: &trace::Journey,
    tid: &str,
    roles: &[&str],
    stage: &str,
    reason_has: &str,
    outcome: &str,
) -> String {
    let text = trace::render(j);
    let got: Vec<&str> = j.hops.iter().map(|h| h.role).collect();
    assert_eq!(got, roles, "{text}");
    assert!(
        j.hops[roles.len() - 1]
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with(&format!("{stage} ")) && r.contains(reason_has)),
        "{text}"
    );
    assert!(!j.mysql.found, "{text}");
    assert!(
        j.mysql
            .note
            .as_deref()
            .is_some_and(|n| n.starts_with("dead-lettered")),
        "{text}"
    );
    assert!(j.trace_ids.iter().any(|t| t == tid), "{text}");
    let event = format!("record {outcome}");
    assert!(
        j.logs.iter().any(|e| e.message.starts_with(&event)),
        "the `{event}` event is in the logs topic: {text}"
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_and_status_tell_what_happened_to_records() {
    common::require_kafka();
    if std::env::var("ETL_MYSQL_PASSWORD").is_err() {
        std::env::set_var("ETL_MYSQL_PASSWORD", "etl");
    }
    let mut source = SourceOptions::with_faults(6_000);
    source.api_rate_limit = None;
    source.extract_rate_limit = 1_000.0;
    let run_id = common::unique("trace").replace('_', "-");
    let dir = tempfile::tempdir().unwrap();
    let mut p = LocalPipeline::prepare(
        Path::new(env!("CARGO_BIN_EXE_etl-pipe")),
        Path::new("config/demo.toml"),
        dir.path(),
        &run_id,
        source,
        &[],
    )
    .unwrap();
    // The run's table exists beforehand with a CHECK constraint MySQL enforces: it refuses
    // about one row in 256 (keys are hex), which sink-mysql dead-letters (`mysql_data`) while
    // sink-mongo stores the document — the "DB-rejected" record.
    let table = tally::mysql_table(&p.cfg).unwrap();
    {
        use etl_pipe::stages::sinks::mysql::{ensure_table, Flavor, Layout};
        let schema = etl_pipe::codec::load_schema(&p.cfg.sink.schema).unwrap();
        let layout = Layout::new(
            &schema,
            &table,
            p.cfg.sink.key_field.as_deref(),
            p.cfg.sink.mysql.string_length,
            Flavor::MariaDb,
        )
        .unwrap();
        let pool = tally::mysql_pool(&p.cfg).await.unwrap();
        ensure_table(&pool, &layout).await.unwrap();
        sqlx::query(&format!(
            "ALTER TABLE `{table}` ADD CONSTRAINT no_a7 CHECK (RIGHT(summoner_id, 2) <> 'a7')"
        ))
        .execute(&pool)
        .await
        .unwrap();
    }
    let o = match run::run(&mut p, &[], Duration::from_secs(240), false).await {
        Ok(o) => o,
        Err(e) => panic!("run failed: {e}\n(logs kept in {})", dir.keep().display()),
    };
    assert!(o.quarantine.total() > 0, "the drift quarantined a window");
    let cfg = p.cfg.clone();
    let all = Bounds::default();

    // A landed record, by its trace id (read from its MySQL row).
    let pool = tally::mysql_pool(&cfg).await.unwrap();
    let (key, tid): (String, String) = sqlx::query_as(&format!(
        "SELECT summoner_id, _trace_id FROM `{}` LIMIT 1",
        o.table
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    let j = trace::run(&cfg, &tid, all, false).await.unwrap();
    let text = trace::render(&j);
    assert_eq!(j.key.as_deref(), Some(key.as_str()), "{text}");
    let roles: Vec<&str> = j.hops.iter().map(|h| h.role).collect();
    assert_eq!(roles, ["raw", "cleaned", "scored"], "{text}");
    assert!(j.mysql.found && j.mongo.found, "{text}");
    assert!(
        j.fetched.as_ref().is_some_and(|f| f.fetched_at.is_some()),
        "{text}"
    );
    let (w, d) = j.quality.clone().expect("quality window");
    assert!(w.contains("cleaned/") && !d.is_empty(), "{text}");
    assert!(
        j.hops
            .iter()
            .all(|h| h.trace_id.as_deref() == Some(tid.as_str())),
        "{text}"
    );

    // A record clean dead-lettered, by its key: the dead letter with its reason, no row, and
    // the outcome event in the logs topic.
    let (dl_key, dl_tid) = first(&p, TopicRole::DeadLetter, |m| {
        m.headers().and_then(|hs| h::get_str(hs, h::ERROR_STAGE)) == Some("clean")
    })
    .expect("a clean dead letter");
    let j = trace::run(&cfg, &dl_key, all, false).await.unwrap();
    let text = assert_dead_lettered(
        &j,
        &dl_tid,
        &["raw", "dead_letter"],
        "clean",
        "",
        "dead_letter",
    );
    assert!(!j.mongo.found, "{text}");

    // A record MySQL refused, by its key: scored, then dead-lettered by sink-mysql with
    // MySQL's reason; no row, but a document; the outcome event in the logs topic.
    let (db_key, db_tid) = first(&p, TopicRole::DeadLetter, |m| {
        m.headers().and_then(|hs| h::get_str(hs, h::ERROR_STAGE)) == Some("sink-mysql")
    })
    .expect("a record MySQL rejected");
    assert!(db_key.ends_with("a7"), "{db_key}");
    let j = trace::run(&cfg, &db_key, all, false).await.unwrap();
    let text = assert_dead_lettered(
        &j,
        &db_tid,
        &["raw", "cleaned", "scored", "dead_letter"],
        "sink-mysql",
        "no_a7",
        "db_rejected",
    );
    assert!(j.mongo.found, "{text}");

    // A quarantined record, by its key.
    let (q_key, _) = first(&p, TopicRole::Quarantine, |_| true).expect("a quarantined record");
    let j = trace::run(&cfg, &q_key, all, false).await.unwrap();
    let text = trace::render(&j);
    let roles: Vec<&str> = j.hops.iter().map(|h| h.role).collect();
    assert_eq!(roles, ["raw", "cleaned", "quarantine"], "{text}");
    assert!(
        j.quality
            .as_ref()
            .is_some_and(|(_, d)| d.starts_with("FAIL")),
        "{text}"
    );
    assert!(
        j.mongo
            .note
            .as_deref()
            .is_some_and(|n| n.starts_with("quarantined")),
        "{text}"
    );

    // The block's outcome event names the first quarantined records' trace ids, and those
    // are quarantined records.
    let mut quarantined_ids = std::collections::HashSet::new();
    tally::scan(&cfg, &cfg.topics.name(TopicRole::Quarantine), |m| {
        if let Some(t) = m
            .headers()
            .and_then(|hs| h::get_str(hs, h::TRACEPARENT))
            .and_then(etl_pipe::observability::trace::trace_id)
        {
            quarantined_ids.insert(t.to_string());
        }
    })
    .unwrap();
    let mut named = Vec::new();
    tally::scan(&cfg, &cfg.topics.name(TopicRole::Logs), |m| {
        let Some(v) = m.payload() else { return };
        let Ok(e) = serde_json::from_slice::<serde_json::Value>(v) else {
            return;
        };
        let field = |k: &str| {
            e.get(k)
                .or_else(|| e.get("fields").and_then(|f| f.get(k)))
                .and_then(|x| x.as_str())
                .map(str::to_string)
        };
        if field("outcome").as_deref() == Some("quarantined") {
            named.extend(
                field("first_trace_ids")
                    .unwrap_or_default()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            );
        }
    })
    .unwrap();
    assert!(!named.is_empty(), "a quarantined block's outcome event");
    assert!(
        named.iter().all(|t| quarantined_ids.contains(t)),
        "the ids it names are quarantined records: {named:?}"
    );

    // Nothing found: a key no record has.
    let j = trace::run(&cfg, "no-such-key", all, false).await.unwrap();
    assert!(!j.found(), "{}", trace::render(&j));

    // `etl-pipe status` tells the same story: dead letters by stage and kind (what the run's
    // own tally read), the quarantine, the last decisions with reasons, lag 0 once caught up.
    let st = etl_pipe::ops::status::collect(&cfg).unwrap();
    let text = etl_pipe::ops::status::render(&st);
    let by: std::collections::BTreeMap<(String, String), u64> =
        st.dead_letters.iter().cloned().collect();
    assert_eq!(by, o.dead_letters.by_reason, "{text}");
    assert_eq!(st.quarantine.0, o.quarantine.total(), "{text}");
    assert!(st.quarantine.1 >= 1, "{text}");
    assert!(
        !st.decisions.is_empty() && st.decisions.len() <= 5,
        "{text}"
    );
    assert!(
        st.decisions
            .iter()
            .all(|d| !d.window.is_empty() && !d.decision.is_empty()),
        "{text}"
    );
    for g in &st.groups {
        assert_eq!(g.lag, Some(0), "{} caught up: {text}", g.stage);
    }
    // The stages have stopped: nothing answers on their health ports here.
    assert_eq!(st.health.len(), 5, "{text}");
    p.cleanup().await.unwrap();
}
