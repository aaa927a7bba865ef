//! The exact accounting of a whole run (the end-to-end, cluster and container tests): every
//! bad source record dead-lettered by extract with its reason; no key twice in any
//! read_committed topic; each stage's output its input minus what it dead-lettered or
//! quarantined; one MySQL row and one Mongo document per scored key, each the newest version
//! of its key in `scored`; every good key exactly once in the sinks, a dead letter or
//! quarantine.

use std::collections::{BTreeSet, HashMap};

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use rdkafka::Message;

use etl_pipe::config::{Config, TopicRole};
use etl_pipe::kafka::headers as h;
use etl_pipe::tooling::local::tally::{self, Failed};
use etl_pipe::tooling::local::SourceOptions;

/// Asserts the whole accounting of a run of `source` into `cfg`'s topics, `table` and
/// collection; `dead_letters` is the dead-letter topic read by `tally::failed`.
pub async fn assert_exact(
    cfg: &Config,
    table: &str,
    dead_letters: &Failed,
    source: &SourceOptions,
) {
    let (poison, keys) = super::expected_source(source);
    assert!(!poison.is_empty());

    // Extract: every record the API served bad is a dead letter with its reason, once.
    let extract_dl = dead_letters.kinds_of("extract");
    assert_eq!(extract_dl, poison, "extract dead letters by reason");

    // No key twice in any read_committed topic (each good key is served once: a key twice is a
    // duplicate whatever its source offset).
    let raw = unique_keys(cfg, TopicRole::Raw, |_| true);
    assert_eq!(raw, keys, "raw holds every good key once");
    let cleaned = unique_keys(cfg, TopicRole::Cleaned, |_| true);
    let quarantined = unique_keys(cfg, TopicRole::Quarantine, |_| true);
    let failed = unique_keys(cfg, TopicRole::DeadLetter, |m| {
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

    let dl_clean = dead_letters.count_stage("clean");
    let dl_score = dead_letters.count_stage("score");
    assert_eq!(cleaned.len() as u64, raw.len() as u64 - dl_clean);
    assert_eq!(
        scored.len() as u64 + quarantined.len() as u64,
        cleaned.len() as u64 - dl_score
    );
    assert_eq!(
        dead_letters.count_stage("sink-mysql") + dead_letters.count_stage("sink-mongo"),
        0,
        "no sink dead letters"
    );

    // Rows and documents: one per scored key, each the newest version that reached scored.
    let pool = tally::mysql_pool(cfg).await.unwrap();
    let rows: Vec<(String, i32, i64)> = sqlx::query_as(&format!(
        "SELECT summoner_id, `_source_partition`, `_source_offset` FROM `{}`",
        table
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
}

/// Keys of a topic's committed records; panics naming the first key seen twice.
fn unique_keys(
    cfg: &Config,
    role: TopicRole,
    keep: impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> bool,
) -> BTreeSet<String> {
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
