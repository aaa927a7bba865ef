//! The whole pipeline on the local 3-broker cluster (replication 3, min ISR 2) with the schema
//! registry (cleaned and scored Confluent-framed), 100 000 records from the sample API with
//! its faults and drift, while the shape of the pipeline changes under it: clean scaled
//! 1→3→1, sink-mysql 1→2→1, sink-mongo 1→2; one instance of every stage SIGKILLed (and
//! restarted with its instance id); the broker leading the most partitions stopped for 20 s;
//! MariaDB and FerretDB restarted once each.
//!
//! Then the accounting of the end-to-end test, exactly: every good source key once in MySQL
//! and in Mongo, or in the dead letters, or in quarantine; no key twice in any read_committed
//! topic; extract's dead letters are what the API served bad; and nothing reverted: every row
//! and document is the newest version of its key that reached `scored`.
//!
//! Needs `ETL_STACK_PROFILE=cluster bash deploy/local/stack.sh up` (fails, never skips,
//! without it). About 3 minutes on 2 cores (the run ~2 min, the checks ~45 s).
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};

use etl_pipe::config::TopicRole;
use etl_pipe::kafka::headers as h;
use etl_pipe::tooling::local::run::{self, Outcome};
use etl_pipe::tooling::local::scenario::{self, Action, Step};
use etl_pipe::tooling::local::tally;
use etl_pipe::tooling::local::{LocalPipeline, SourceOptions};
use etl_pipe::tooling::sample_api::data::{Dataset, Expected};

const REGISTRY: &str = "http://127.0.0.1:8081/apis/ccompat/v7";
const RECORDS: u64 = 100_000;

/// Starts every cluster node that is down when dropped: a failed test never leaves the
/// cluster with two nodes for the next one.
struct NodesBack;

impl Drop for NodesBack {
    fn drop(&mut self) {
        for n in 1..=3 {
            let _ = std::process::Command::new("bash")
                .arg(scenario::stack_script())
                .args(["broker-start", &n.to_string()])
                .stdout(std::process::Stdio::null())
                .status();
        }
    }
}

fn require_cluster() -> String {
    let brokers = scenario::cluster_bootstrap().unwrap_or_else(|e| panic!("{e}"));
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the Kafka cluster at {brokers} does not answer: {e}"));
    assert_eq!(
        md.brokers().len(),
        3,
        "the cluster at {brokers} has {} brokers up, not 3 (`bash deploy/local/stack.sh broker-start N`)",
        md.brokers().len()
    );
    brokers
}

async fn require_registry() {
    let r = reqwest::get(format!("{REGISTRY}/subjects")).await;
    match r {
        Ok(r) if r.status().is_success() => {}
        other => panic!(
            "the schema registry at {REGISTRY} does not answer ({other:?}): `bash deploy/local/stack.sh up` starts it"
        ),
    }
}

/// What the sample API serves: poison records by kind, good keys.
fn expected(source: &SourceOptions) -> (BTreeMap<String, u64>, BTreeSet<String>) {
    let mut ds = Dataset::new(source.records, source.page_size, source.seed);
    ds.queues = vec!["RANKED_SOLO_5x5".into()];
    ds.tiers = source.tiers.clone();
    ds.divisions = source.divisions.clone();
    ds.malformed_rate = source.malformed_rate;
    ds.missing_rate = source.missing_rate;
    ds.drift_after_pages = source.drift_after_pages;
    let mut poison: BTreeMap<String, u64> = BTreeMap::new();
    let mut keys = BTreeSet::new();
    for i in 0..source.records {
        match ds.expected(i) {
            Expected::Poison { kind } => *poison.entry(kind.to_string()).or_default() += 1,
            Expected::Record { key } => {
                keys.insert(key);
            }
        }
    }
    (poison, keys)
}

/// Keys of a topic's committed records; panics naming the first key seen twice.
fn unique_keys(
    p: &LocalPipeline,
    role: TopicRole,
    keep: impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> bool,
) -> BTreeSet<String> {
    let cfg = &p.cfg;
    let mut seen = BTreeSet::new();
    let mut twice: Vec<String> = Vec::new();
    tally::scan(cfg, &cfg.topics.name(role), |m| {
        if !keep(m) {
            return;
        }
        let k = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        if !seen.insert(k.clone()) {
            twice.push(format!(
                "{k} (partition {} offset {})",
                m.partition(),
                m.offset()
            ));
        }
    })
    .unwrap();
    assert!(
        twice.is_empty(),
        "{} holds {} duplicate keys (read_committed), e.g. {:?}",
        role.key(),
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    seen
}

/// The steps, by records accounted for downstream (so they happen while records flow,
/// whatever the machine's speed); later steps run while the broker is still down.
fn steps() -> Vec<Step> {
    let at = |k: u64, a: Action| Step::at(k * 1_000, a);
    vec![
        at(3, Action::Scale("clean".into(), 3)),
        at(6, Action::Kill("extract".into())),
        at(10, Action::Kill("score".into())),
        at(14, Action::BrokerOutage(None, Duration::from_secs(20))),
        at(22, Action::Scale("sink-mysql".into(), 2)),
        // FerretDB restarted and sink-mongo SIGKILLed: the replays after both go through the
        // `update` command (documents already stored), which hung FerretDB 1.24 until sink-mongo
        // capped its statements per command there (sinks/mongo/writer.rs).
        at(28, Action::MongoRestart),
        at(36, Action::Kill("sink-mongo".into())),
        at(44, Action::MysqlRestart),
        at(50, Action::Kill("clean".into())),
        at(58, Action::Kill("sink-mysql".into())),
        at(64, Action::Scale("sink-mongo".into(), 2)),
        at(76, Action::Scale("clean".into(), 1)),
        at(86, Action::Scale("sink-mysql".into(), 1)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_run_survives_scaling_crashes_a_broker_and_database_restarts() {
    let brokers = require_cluster();
    require_registry().await;
    let _nodes = NodesBack;
    if std::env::var("ETL_MYSQL_PASSWORD").is_err() {
        std::env::set_var("ETL_MYSQL_PASSWORD", "etl");
    }
    let mut source = SourceOptions::with_faults(RECORDS);
    // ≈ 1 000 records/s offered: the broker outage (20 s down, ~30 s to start again) and the
    // database restarts overlap the flow.
    source.api_rate_limit = Some(7);
    source.extract_rate_limit = 5.0;
    let run_id = common::unique("cluster").replace('_', "-");
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("ETL__KAFKA__BROKERS".to_string(), brokers.clone()),
        ("ETL__TOPICS__REPLICATION_FACTOR".into(), "3".into()),
        ("ETL__TOPICS__PARTITIONS".into(), "6".into()),
        ("ETL__KAFKA__SCHEMA_REGISTRY_URL".into(), REGISTRY.into()),
    ];
    let mut p = LocalPipeline::prepare(
        Path::new(env!("CARGO_BIN_EXE_etl-pipe")),
        Path::new("config/demo.toml"),
        dir.path(),
        &run_id,
        source.clone(),
        &env,
    )
    .unwrap();
    let steps = steps();
    let n_steps = steps.len();
    let started = std::time::Instant::now();
    let o = match run::run_scenario(&mut p, &[], steps, Duration::from_secs(270), true).await {
        Ok(o) => o,
        Err(e) => panic!("run failed: {e}\n(logs kept in {})", dir.keep().display()),
    };
    eprintln!("{}", run::render(&p, &o));
    eprintln!("figures:\n{}", o.figures.render());
    eprintln!("run took {:.1} s", started.elapsed().as_secs_f64());
    let result = std::panic::AssertUnwindSafe(check(&p, &o, &source, n_steps));
    use futures::FutureExt;
    if let Err(e) = result.catch_unwind().await {
        eprintln!("(logs kept in {})", dir.keep().display());
        std::panic::resume_unwind(e);
    }
    p.cleanup().await.unwrap();
}

async fn check(p: &LocalPipeline, o: &Outcome, source: &SourceOptions, n_steps: usize) {
    let cfg = &p.cfg;
    assert_eq!(o.events.len(), n_steps, "every step ran: {:?}", o.events);
    let flowed = o.topics["scored"].records + o.quarantine.total();
    for e in &o.events {
        assert!(
            e.accounted < flowed,
            "{} happened while records flowed",
            e.what
        );
    }
    assert_eq!(
        cfg.topics.all().unwrap()[0].replication_factor,
        3,
        "topics replicated 3 times"
    );
    assert_eq!(o.crashes.len(), 5, "one SIGKILL per stage: {:?}", o.crashes);
    let (poison, keys) = expected(source);
    assert!(!poison.is_empty());

    // Extract: every record the API served bad is a dead letter with its reason, once.
    let extract_dl: BTreeMap<String, u64> = o
        .dead_letters
        .by_reason
        .iter()
        .filter(|((s, _), _)| s == "extract")
        .map(|((_, k), n)| (k.clone(), *n))
        .collect();
    assert_eq!(extract_dl, poison, "extract dead letters by reason");

    // No key twice in any read_committed topic (each good key is served once: a key twice is a
    // duplicate whatever its source offset).
    let raw = unique_keys(p, TopicRole::Raw, |_| true);
    assert_eq!(raw, keys, "raw holds every good key once");
    let cleaned = unique_keys(p, TopicRole::Cleaned, |_| true);
    let quarantined = unique_keys(p, TopicRole::Quarantine, |_| true);
    let failed = unique_keys(p, TopicRole::DeadLetter, |m| {
        m.headers()
            .and_then(|hs| h::get_str(hs, h::ERROR_STAGE))
            .is_some_and(|s| s != "extract")
    });
    // Scored: keys once, their (partition, offset), and Confluent framing.
    let mut scored: HashMap<String, (i32, i64)> = HashMap::new();
    let mut twice = Vec::new();
    let mut unframed = 0u64;
    tally::scan(cfg, &cfg.topics.name(TopicRole::Scored), |m| {
        let k = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        if m.payload().is_none_or(|b| b.len() < 5 || b[0] != 0) {
            unframed += 1;
        }
        let at = (m.partition(), m.offset());
        if let Some(prev) = scored.insert(k.clone(), at) {
            twice.push(format!("{k}: {prev:?} and {at:?}"));
            scored.insert(k, prev.max(at));
        }
    })
    .unwrap();
    assert!(
        twice.is_empty(),
        "scored holds {} duplicate keys, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert_eq!(unframed, 0, "scored records without the Confluent framing");

    let dl_clean = o.dead_letters.count_stage("clean");
    let dl_score = o.dead_letters.count_stage("score");
    assert_eq!(cleaned.len() as u64, raw.len() as u64 - dl_clean);
    assert_eq!(
        scored.len() as u64 + quarantined.len() as u64,
        cleaned.len() as u64 - dl_score
    );
    assert_eq!(
        o.dead_letters.count_stage("sink-mysql") + o.dead_letters.count_stage("sink-mongo"),
        0,
        "no sink dead letters"
    );

    // Rows and documents: one per scored key, each the newest version that reached scored.
    let pool = tally::mysql_pool(cfg).await.unwrap();
    let rows: Vec<(String, i32, i64)> = sqlx::query_as(&format!(
        "SELECT summoner_id, `_source_partition`, `_source_offset` FROM `{}`",
        o.table
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    let coll = tally::mongo_collection(cfg).await.unwrap();
    let docs: Vec<Document> = coll
        .find(doc! {})
        .projection(doc! {"_id": 1, "_source_partition": 1, "_source_offset": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut reverted = Vec::new();
    let mut mysql_keys = BTreeSet::new();
    for (k, part, off) in &rows {
        assert!(mysql_keys.insert(k.clone()), "row key {k} twice");
        match scored.get(k) {
            Some(newest) if (*part, *off) != *newest => reverted.push(format!(
                "mysql {k}: row from {part}@{off}, newest in scored {newest:?}"
            )),
            None => panic!("row {k} is not in scored"),
            _ => {}
        }
    }
    let mut mongo_keys = BTreeSet::new();
    for d in &docs {
        let k = d.get_str("_id").unwrap().to_string();
        let part = d.get_i32("_source_partition").unwrap();
        let off = d.get_i64("_source_offset").unwrap();
        match scored.get(&k) {
            Some(newest) if (part, off) != *newest => reverted.push(format!(
                "mongo {k}: document from {part}@{off}, newest in scored {newest:?}"
            )),
            None => panic!("document {k} is not in scored"),
            _ => {}
        }
        assert!(mongo_keys.insert(k.clone()), "document {k} twice");
    }
    let scored_keys: BTreeSet<String> = scored.keys().cloned().collect();
    assert_eq!(rows.len(), scored.len(), "one MySQL row per scored record");
    assert_eq!(mysql_keys, scored_keys, "MySQL keys are scored's keys");
    assert_eq!(mongo_keys, scored_keys, "Mongo ids are scored's keys");
    assert!(
        reverted.is_empty(),
        "{} rows/documents older than the newest version of their key in scored, e.g. {:?}",
        reverted.len(),
        &reverted[..reverted.len().min(5)]
    );

    // Every good key exactly once: in MySQL (and Mongo), a dead letter, or quarantine.
    let mut all: BTreeSet<String> = BTreeSet::new();
    for k in scored_keys.iter().chain(&failed).chain(&quarantined) {
        assert!(all.insert(k.clone()), "key {k} is in two places");
    }
    assert_eq!(
        all.len(),
        keys.len(),
        "every good record accounted for once"
    );
    assert_eq!(all, keys);
    assert!(
        o.windows.iter().any(|w| w.decision == "FAIL"),
        "a drifted window failed"
    );
    assert!(o.quarantine.total() > 0);
}
