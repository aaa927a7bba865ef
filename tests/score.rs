//! The score stage against the real local Kafka: windows routed by their decision, one report
//! per window, dead letters for undecodable input, every input message in exactly one of
//! scored ∪ quarantine ∪ dead-letter — also across a SIGKILL and a rebalance.
mod common;

use common::read_committed;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

use etl_pipe::codec::{load_schema, Codec, Framing};
use etl_pipe::config::{Config, TopicRole};
use etl_pipe::kafka::{self, headers as h};
use etl_pipe::quality::BaselineBuilder;
use etl_pipe::record::{Record, Value};
use etl_pipe::stages::score::{self, ScoreConfig};

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");
const FIELDS: [&str; 7] = [
    "summoner_name",
    "tier",
    "rank",
    "league_points",
    "wins",
    "losses",
    "veteran",
];
const TIERS: [&str; 6] = ["IRON", "BRONZE", "SILVER", "GOLD", "PLATINUM", "DIAMOND"];
const TIER_WEIGHTS: [u32; 6] = [5, 20, 35, 25, 10, 5];

/// A league entry. Stable: league points uniform 0..100, names always present. Drifted:
/// league points +60 and 30 % of the names missing (nullable: missing ratio ≥ 0.20 → FAIL).
fn entry(id: &str, drifted: bool, rng: &mut StdRng) -> Record {
    let mut r = Record::new();
    let wins = rng.gen_range(0..400);
    let losses = rng.gen_range(0..400);
    let mut pick = rng.gen_range(0..100);
    let mut tier = TIERS[0];
    for (t, w) in TIERS.iter().zip(TIER_WEIGHTS) {
        if pick < w {
            tier = t;
            break;
        }
        pick -= w;
    }
    let name = if drifted && rng.gen_bool(0.3) {
        Value::Null
    } else {
        Value::String(format!("player {}", rng.gen_range(0..50)))
    };
    let lp = rng.gen_range(0..100) + if drifted { 60 } else { 0 };
    r.set("summoner_id", Value::String(id.into()));
    r.set("summoner_name", name);
    r.set("queue_type", Value::String("RANKED_SOLO_5x5".into()));
    r.set("tier", Value::String(tier.into()));
    r.set(
        "rank",
        Value::String(["I", "II", "III", "IV"][rng.gen_range(0..4)].into()),
    );
    r.set("league_points", Value::Int(lp));
    r.set("wins", Value::Int(wins));
    r.set("losses", Value::Int(losses));
    r.set("veteran", Value::Boolean(rng.gen_bool(0.2)));
    r.set("inactive", Value::Boolean(false));
    r.set("fresh_blood", Value::Null);
    r.set("hot_streak", Value::Boolean(rng.gen_bool(0.1)));
    r.set("games", Value::Int(wins + losses));
    // A promotion series on every entry, from the key (the seeded draws above stay as they
    // were): wins 0..=2, 2..=4 when drifted.
    let h = id
        .bytes()
        .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut series = Record::new();
    series.set("target", Value::Int(3));
    series.set(
        "wins",
        Value::Int((h % 3) as i32 + if drifted { 2 } else { 0 }),
    );
    series.set("losses", Value::Int((h / 3 % 3) as i32));
    series.set(
        "progress",
        Value::String(["WLN", "LWN", "NNN"][(h / 9 % 3) as usize].into()),
    );
    r.set("mini_series", Value::Record(series));
    r.set(
        "win_rate",
        if wins + losses == 0 {
            Value::Null
        } else {
            Value::Double(wins as f64 / (wins + losses) as f64)
        },
    );
    r.set("source", Value::String("league-v4".into()));
    r.set("trace_id", Value::Null);
    r.set("source_topic", Value::String("etl.raw".into()));
    r.set("source_partition", Value::Int(0));
    r.set("source_offset", Value::Long(0));
    r.set("fetched_at", Value::TimestampMillis(1_735_689_600_000));
    r
}

fn cleaned_codec() -> Codec {
    Codec::new(
        load_schema(format!("{SCHEMAS}/league_entry.cleaned.avsc")).unwrap(),
        Framing::SingleObject,
    )
}

fn scored_codec() -> Codec {
    Codec::new(
        load_schema(format!("{SCHEMAS}/league_entry.scored.avsc")).unwrap(),
        Framing::SingleObject,
    )
}

/// What the test produced: per key, its partition, offset, payload and traceparent.
#[derive(Default)]
struct Produced {
    by_key: BTreeMap<String, Sent>,
}

#[derive(Clone)]
struct Sent {
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
    traceparent: String,
    drifted: bool,
}

fn traceparent(n: u64) -> String {
    format!("00-{n:032x}-{:016x}-01", n + 1)
}

/// Produces `n` records (or one garbage message when `garbage`) to one partition.
async fn produce(
    cfg: &Config,
    produced: &mut Produced,
    partition: i32,
    n: usize,
    drifted: bool,
    seed: u64,
) {
    produce_with(cfg, produced, partition, n, drifted, seed, false).await
}

/// [`produce`]; with `atomic` the records are one transaction, so a running stage
/// (read_committed) sees them all at once, however slowly they are written.
async fn produce_with(
    cfg: &Config,
    produced: &mut Produced,
    partition: i32,
    n: usize,
    drifted: bool,
    seed: u64,
    atomic: bool,
) {
    let topic = cfg.topics.name(TopicRole::Cleaned);
    let codec = cleaned_codec();
    let producer: FutureProducer = if atomic {
        let p: FutureProducer = kafka::transactional_producer_config(
            &cfg.kafka,
            &common::unique("score-test-producer"),
        )
        .create()
        .unwrap();
        p.init_transactions(Duration::from_secs(30)).unwrap();
        p.begin_transaction().unwrap();
        p
    } else {
        kafka::producer_config(&cfg.kafka).create().unwrap()
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut futures = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("p{partition}-{}-{i}", if drifted { "d" } else { "s" });
        let id = format!("{id}-{seed}");
        let payload = codec.encode(&entry(&id, drifted, &mut rng)).unwrap();
        let tp = traceparent(seed * 1_000_000 + i as u64);
        let headers = OwnedHeaders::new().insert(Header {
            key: h::TRACEPARENT,
            value: Some(&tp),
        });
        let f = producer.send_result(
            FutureRecord::to(&topic)
                .partition(partition)
                .key(&id)
                .payload(&payload)
                .headers(headers),
        );
        let fut = f.map_err(|(e, _)| e).unwrap();
        futures.push((id, payload, tp, fut));
    }
    for (id, payload, tp, f) in futures {
        let d = f.await.unwrap().map_err(|(e, _)| e).unwrap();
        produced.by_key.insert(
            id,
            Sent {
                partition: d.partition,
                offset: d.offset,
                payload,
                traceparent: tp,
                drifted,
            },
        );
    }
    if atomic {
        producer
            .commit_transaction(Duration::from_secs(30))
            .unwrap();
    }
}

/// One undecodable message; returns its key.
async fn produce_garbage(cfg: &Config, produced: &mut Produced, partition: i32) -> String {
    let topic = cfg.topics.name(TopicRole::Cleaned);
    let producer: FutureProducer = kafka::producer_config(&cfg.kafka).create().unwrap();
    let key = format!("garbage-{partition}");
    let payload = b"{\"not\": \"avro\"}".to_vec();
    let tp = traceparent(999);
    let d = producer
        .send(
            FutureRecord::to(&topic)
                .partition(partition)
                .key(&key)
                .payload(&payload)
                .headers(OwnedHeaders::new().insert(Header {
                    key: h::TRACEPARENT,
                    value: Some(&tp),
                })),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    produced.by_key.insert(
        key.clone(),
        Sent {
            partition: d.partition,
            offset: d.offset,
            payload,
            traceparent: tp,
            drifted: false,
        },
    );
    key
}

fn reports(cfg: &Config) -> Vec<Json> {
    read_committed(cfg, &cfg.topics.name(TopicRole::Quality))
        .into_iter()
        .map(|g| {
            let j: Json = serde_json::from_slice(&g.payload).unwrap();
            assert_eq!(j["window"].as_str(), Some(g.key.as_str()), "report key");
            j
        })
        .collect()
}

/// Waits until the stage's group has committed at least `ends[p]` in every partition `p`:
/// every message before it has been judged and emitted.
async fn wait_done(cfg: &Config, ends: &[i64], timeout: Duration) {
    let topic = cfg.topics.name(TopicRole::Cleaned);
    let mut c = kafka::base_config(&cfg.kafka);
    c.set("group.id", cfg.pipeline.group_id("score"))
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        let mut tpl = TopicPartitionList::new();
        for p in 0..ends.len() as i32 {
            tpl.add_partition(&topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        let at: Vec<i64> = (0..ends.len() as i32)
            .map(
                |p| match committed.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => 0,
                },
            )
            .collect();
        if at.iter().zip(ends).all(|(a, e)| a >= e) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed {at:?}, expected {ends:?} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A config for a fresh pipeline with the score section, topics created.
async fn setup(test: &str, partitions: i32, score: ScoreConfig) -> Config {
    common::score_pipeline(test, partitions, score).await
}

fn score_config(window_records: usize, baseline_n: u64) -> ScoreConfig {
    ScoreConfig {
        window_records,
        policy: score::Policy::Quarantine,
        batch_size: 2000,
        batch_max_age: Duration::from_millis(100),
        schema_in: format!("{SCHEMAS}/league_entry.cleaned.avsc").into(),
        schema_out: format!("{SCHEMAS}/league_entry.scored.avsc").into(),
        fields: Some(FIELDS.iter().map(|s| s.to_string()).collect()),
        baseline: None,
        baseline_from_first_records: baseline_n,
        ..Default::default()
    }
}

/// Window `<topic>/<p>/<a>-<b>` → (p, a, b).
fn parse_window(id: &str) -> (i32, i64, i64) {
    let mut parts = id.rsplitn(3, '/');
    let range = parts.next().unwrap();
    let p = parts.next().unwrap().parse().unwrap();
    let (a, b) = range.split_once('-').unwrap();
    (p, a.parse().unwrap(), b.parse().unwrap())
}

/// The checks every test makes once the stage has processed everything:
/// - each produced key is in exactly one of scored ∪ quarantine ∪ dead-letter, once;
/// - one report per block; the blocks of a partition do not overlap;
/// - a scored record names the trailing window it was judged on (ending at the record, or
///   at a later one for a partition's first records), its decision (PASS/WARN) in the field
///   and the header; a quarantined record's bytes, key and headers are the original's plus
///   the envelope, whose message names the window and FAIL.
///
/// Returns the block reports by id.
fn check_exactly_once(cfg: &Config, produced: &Produced) -> BTreeMap<String, Json> {
    let cleaned = cfg.topics.name(TopicRole::Cleaned);
    let scored = read_committed(cfg, &cfg.topics.name(TopicRole::Scored));
    let quarantine = read_committed(cfg, &cfg.topics.name(TopicRole::Quarantine));
    let dead = read_committed(cfg, &cfg.topics.name(TopicRole::DeadLetter));
    let all_reports = reports(cfg);

    let mut by_window = BTreeMap::new();
    for r in &all_reports {
        let id = r["window"].as_str().unwrap().to_string();
        assert!(
            by_window.insert(id.clone(), r.clone()).is_none(),
            "two reports for block {id}"
        );
    }
    let mut per_partition: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new();
    for id in by_window.keys() {
        let (p, a, b) = parse_window(id);
        assert!(id.starts_with(&format!("{cleaned}/")), "{id}");
        per_partition.entry(p).or_default().push((a, b));
    }
    for (p, mut ws) in per_partition {
        ws.sort();
        for pair in ws.windows(2) {
            assert!(
                pair[0].1 < pair[1].0,
                "partition {p}: blocks {pair:?} overlap"
            );
        }
    }

    let mut seen: HashMap<String, &'static str> = HashMap::new();
    let mut see = |key: &str, where_: &'static str| {
        if let Some(before) = seen.insert(key.to_string(), where_) {
            panic!("{key} is in {before} and in {where_}");
        }
    };
    let sc = scored_codec();
    for g in &scored {
        see(&g.key, "scored");
        let sent = &produced.by_key[&g.key];
        let rec = sc.decode(&g.payload).unwrap();
        let window = rec.get("quality_window").unwrap().as_str().unwrap();
        let decision = rec.get("quality_decision").unwrap().as_str().unwrap();
        // Judged on the window ending at the record — or, for a record that waited (a
        // partition's first records, or while the baseline was built), at its release.
        let (p, _, b) = parse_window(window);
        assert_eq!(p, sent.partition);
        assert!(sent.offset <= b, "{window} vs {}", sent.offset);
        assert_eq!(
            g.headers.get(score::WINDOW_HEADER).map(String::as_str),
            Some(window)
        );
        assert_eq!(
            g.headers.get(score::DECISION_HEADER).map(String::as_str),
            Some(decision)
        );
        assert_eq!(g.headers.get(h::TRACEPARENT), Some(&sent.traceparent));
        assert!(decision == "PASS" || decision == "WARN", "{decision}");
        assert_eq!(
            rec.get("summoner_id").unwrap().as_str(),
            Some(g.key.as_str())
        );
    }
    for g in &quarantine {
        see(&g.key, "quarantine");
        let sent = &produced.by_key[&g.key];
        assert_eq!(
            g.payload, sent.payload,
            "quarantine keeps the original bytes"
        );
        let hd = |n: &str| g.headers.get(n).map(String::as_str);
        assert_eq!(hd(h::ERROR_STAGE), Some("score"));
        assert_eq!(hd(h::ERROR_KIND), Some(score::QUALITY_FAIL));
        assert_eq!(hd(h::SOURCE_TOPIC), Some(cleaned.as_str()));
        assert_eq!(hd(h::SOURCE_PARTITION), Some(&*sent.partition.to_string()));
        assert_eq!(hd(h::SOURCE_OFFSET), Some(&*sent.offset.to_string()));
        assert_eq!(hd(h::ATTEMPTS), Some("1"));
        assert_eq!(hd(h::TRACEPARENT), Some(sent.traceparent.as_str()));
        let window = hd(score::WINDOW_HEADER).unwrap();
        let (p, _, b) = parse_window(window);
        assert!(p == sent.partition && sent.offset <= b, "{window}");
        let msg = hd(h::ERROR_MESSAGE).unwrap();
        assert!(msg.contains(window) && msg.contains("FAIL"), "{msg}");
    }
    for g in &dead {
        see(&g.key, "dead-letter");
        let sent = &produced.by_key[&g.key];
        assert_eq!(g.payload, sent.payload);
        assert_eq!(
            g.headers.get(h::ERROR_KIND).map(String::as_str),
            Some("avro-malformed")
        );
        assert_eq!(
            g.headers.get(h::SOURCE_OFFSET),
            Some(&sent.offset.to_string())
        );
    }
    let missing: Vec<&String> = produced
        .by_key
        .keys()
        .filter(|k| !seen.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} records are nowhere, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(seen.len(), produced.by_key.len());
    by_window
}

/// The keys in the quarantine topic.
fn quarantined(cfg: &Config) -> HashSet<String> {
    read_committed(cfg, &cfg.topics.name(TopicRole::Quarantine))
        .into_iter()
        .map(|g| g.key)
        .collect()
}

/// (drifted records quarantined, drifted records, stable records quarantined).
fn caught(cfg: &Config, produced: &Produced) -> (usize, usize, usize) {
    let q = quarantined(cfg);
    let drifted = produced.by_key.iter().filter(|(_, s)| s.drifted);
    let (mut hit, mut all) = (0, 0);
    for (k, _) in drifted {
        all += 1;
        hit += usize::from(q.contains(k));
    }
    let stable_hit = produced
        .by_key
        .iter()
        .filter(|(k, s)| !s.drifted && q.contains(*k))
        .count();
    (hit, all, stable_hit)
}

#[tokio::test]
async fn stable_windows_are_scored_drifted_windows_quarantined_with_one_report_each() {
    let cfg = setup("score_drift", 2, score_config(200, 300)).await;
    let mut produced = Produced::default();
    // Phase 1, stable: 500 records per partition and one garbage message in partition 0.
    produce(&cfg, &mut produced, 0, 250, false, 1).await;
    let garbage = produce_garbage(&cfg, &mut produced, 0).await;
    produce(&cfg, &mut produced, 0, 250, false, 2).await;
    produce(&cfg, &mut produced, 1, 500, false, 3).await;

    let shutdown = CancellationToken::new();
    let stage = common::spawn_score(&cfg, &shutdown);
    // Nothing goes out before the baseline (the first 300 records) is built; then each
    // record is judged on the last 200 of its partition.
    wait_done(&cfg, &[501, 500], Duration::from_secs(180)).await;

    // Phase 2, drifted: league points shifted, 30 % of the names missing, each partition's
    // 400 in one transaction.
    produce_with(&cfg, &mut produced, 0, 400, true, 4, true).await;
    produce_with(&cfg, &mut produced, 1, 400, true, 5, true).await;
    wait_done(&cfg, &[901, 900], Duration::from_secs(180)).await;
    shutdown.cancel();
    let stats = stage.await.unwrap().unwrap();
    assert_eq!(stats.aborts, 0);

    let by_window = check_exactly_once(&cfg, &produced);
    // Nothing stable was quarantined; the drifted records were, but for the first ones of
    // each partition: the trailing window of 200 needs a share of drifted rows (~30 % here)
    // before league_points' PSI crosses the line.
    let (hit, drifted, stable_hit) = caught(&cfg, &produced);
    assert_eq!(stable_hit, 0);
    assert!(
        hit * 4 >= drifted * 3,
        "{hit} of {drifted} drifted records caught"
    );
    // Blocks of 200 offsets; every one but the last of each partition is reported.
    assert_eq!(by_window.len(), 8, "{:?}", by_window.keys());
    let mut fails = 0;
    for (id, r) in &by_window {
        let (_, a, b) = parse_window(id);
        assert_eq!(r["stage"], "score");
        assert_eq!(r["topic"], cfg.topics.name(TopicRole::Cleaned));
        assert_eq!(r["first_offset"].as_i64(), Some(a));
        assert_eq!(r["last_offset"].as_i64(), Some(b));
        assert_eq!(a % 200, 0, "{id}");
        if a >= 400 {
            // (Before, the baseline may still have been building when the block ended.)
            assert_eq!(r["psi_measured"], true, "{id}");
            assert_eq!(r["baseline"]["source"], "store");
            assert_eq!(r["baseline"]["rows"], 300);
        }
        assert_eq!(r["policy"], "quarantine");
        let fields = trailing_fields(r);
        assert_eq!(fields, FIELDS);
        if r["decision"] == "FAIL" {
            fails += 1;
            assert!(a >= 400, "{id}: {r}");
            let reasons = r["reasons"].as_array().unwrap();
            let has = |field: &str, metric: &str| {
                reasons
                    .iter()
                    .any(|x| x["field"] == field && x["metric"] == metric && x["level"] == "FAIL")
            };
            assert!(has("league_points", "psi"), "{id}: {reasons:?}");
            assert!(r["decisions"]["FAIL"].as_u64().unwrap() > 0, "{id}");
        }
    }
    assert!(fails >= 2, "{fails} blocks with FAIL decisions");
    // The garbage message is a dead letter, counted in its block's report.
    let gw = by_window
        .values()
        .find(|r| r["partition"] == 0 && r["first_offset"] == 200)
        .unwrap();
    assert_eq!(gw["dead_letters"], 1);
    assert_eq!(gw["messages"], 200);
    assert!(produced.by_key.contains_key(&garbage));
    // The baseline was stored for restarts and other instances.
    let stored = read_committed(&cfg, &cfg.topics.name(TopicRole::ScoreBaseline));
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].key, cfg.pipeline.group_id("score"));
    let s: Json = serde_json::from_slice(&stored[0].payload).unwrap();
    assert_eq!(s["baseline"]["rows"], 300);
}

/// 400 stable then 400 drifted records (seeds `seeds`) to partition 0, scored to the end;
/// exactly once, no stable record quarantined, at least 85 % of the drifted ones. Returns the
/// reports by window.
async fn stable_then_drifted(cfg: &Config, seeds: (u64, u64)) -> BTreeMap<String, Json> {
    let mut produced = Produced::default();
    produce(cfg, &mut produced, 0, 400, false, seeds.0).await;
    produce(cfg, &mut produced, 0, 400, true, seeds.1).await;

    let shutdown = CancellationToken::new();
    let stage = common::spawn_score(cfg, &shutdown);
    wait_done(cfg, &[800], Duration::from_secs(180)).await;
    shutdown.cancel();
    stage.await.unwrap().unwrap();
    let by_window = check_exactly_once(cfg, &produced);
    let (hit, drifted, stable_hit) = caught(cfg, &produced);
    assert_eq!(stable_hit, 0);
    assert!(
        hit * 100 >= drifted * 85,
        "{hit} of {drifted} drifted records caught"
    );
    by_window
}

/// The field names of a report's trailing window.
fn trailing_fields(r: &Json) -> Vec<&str> {
    r["trailing"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect()
}

/// Quality over nested data (issue 20): the score stage profiles leaves of a nested record by
/// path; a drift in `mini_series.wins` alone (the only numeric field profiled) fails windows,
/// and the reports name the path.
#[tokio::test]
async fn a_drift_in_a_nested_leaf_is_caught_and_reported_by_its_path() {
    let mut score = score_config(200, 300);
    score.fields = Some(vec![
        "mini_series.wins".into(),
        "mini_series.progress".into(),
        "tier".into(),
    ]);
    let cfg = setup("score_nested", 1, score).await;
    let by_window = stable_then_drifted(&cfg, (17, 18)).await;
    let mut fails = 0;
    for (id, r) in &by_window {
        let fields = trailing_fields(r);
        assert_eq!(
            fields,
            ["mini_series.wins", "mini_series.progress", "tier"],
            "{id}"
        );
        if r["decision"] == "FAIL" {
            fails += 1;
            let reasons = r["reasons"].as_array().unwrap();
            assert!(
                reasons.iter().any(|x| x["field"] == "mini_series.wins"
                    && x["metric"] == "psi"
                    && x["level"] == "FAIL"),
                "{id}: {reasons:?}"
            );
        }
    }
    assert!(fails >= 1, "no window failed: {by_window:?}");
}

#[tokio::test]
async fn a_baseline_file_measures_psi_in_every_window() {
    let mut score = score_config(200, 300);
    // A baseline from the same stable distribution, saved as `profile --save-baseline` does.
    let specs = common::field_specs(&FIELDS, &["league_points", "wins", "losses"]);
    let mut b = BaselineBuilder::new(specs, &Default::default());
    let mut rng = StdRng::seed_from_u64(42);
    for i in 0..2000 {
        b.push(&entry(&format!("b{i}"), false, &mut rng));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baseline.json");
    std::fs::write(&path, b.build().to_json()).unwrap();
    score.baseline = Some(path.clone());
    let cfg = setup("score_file", 1, score).await;
    let by_window = stable_then_drifted(&cfg, (7, 8)).await;
    // Blocks of 200 offsets: the last one is not reported yet.
    assert_eq!(by_window.len(), 3, "{:?}", by_window.keys());
    for (id, r) in &by_window {
        assert_eq!(r["psi_measured"], true, "{id}");
        assert_eq!(r["baseline"]["source"], "file");
        assert_eq!(r["trailing"]["baseline_rows"], 2000);
        if parse_window(id).1 >= 400 {
            assert_eq!(r["decision"], "FAIL", "{id}: {r}");
        } else {
            assert_ne!(r["decision"], "FAIL", "{id}: {r}");
        }
    }
    // Nothing was stored: the file is the baseline.
    assert!(read_committed(&cfg, &cfg.topics.name(TopicRole::ScoreBaseline)).is_empty());
}

fn env_for(cfg: &Config) -> Vec<(String, String)> {
    let mut v = vec![
        ("ETL__PIPELINE__NAME".to_string(), cfg.pipeline.name.clone()),
        ("ETL__KAFKA__BROKERS".to_string(), cfg.kafka.brokers.clone()),
        (
            "ETL__TOPICS__PARTITIONS".to_string(),
            cfg.topics.partitions.to_string(),
        ),
        // Tests run stages side by side: no /metrics server (its port would clash).
        ("ETL__OBSERVABILITY__HTTP_PORT".to_string(), "0".to_string()),
        (
            "ETL__QUALITY__FIELDS__SUMMONER_NAME__PSI_WARN".to_string(),
            "inf".to_string(),
        ),
        (
            "ETL__QUALITY__FIELDS__SUMMONER_NAME__PSI_FAIL".to_string(),
            "inf".to_string(),
        ),
    ];
    for role in TopicRole::ALL {
        v.push((
            format!("ETL__TOPICS__{}__NAME", role.key().to_uppercase()),
            cfg.topics.name(role),
        ));
    }
    let s = cfg.score.as_ref().unwrap();
    v.push((
        "ETL__SCORE__WINDOW_RECORDS".into(),
        s.window_records.to_string(),
    ));
    v.push((
        "ETL__SCORE__BASELINE_FROM_FIRST_RECORDS".into(),
        s.baseline_from_first_records.to_string(),
    ));
    v.push((
        "ETL__SCORE__FIELDS".into(),
        format!(
            "[{}]",
            FIELDS
                .iter()
                .map(|f| format!("\"{f}\""))
                .collect::<Vec<_>>()
                .join(",")
        ),
    ));
    v
}

fn spawn_stage(cfg: &Config, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_etl-pipe"))
        .arg("score")
        .envs(env_for(cfg))
        .env("ETL__PIPELINE__INSTANCE", "crash-test")
        .env("RUST_LOG", "info")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn sigkill_mid_run_and_restart_keep_exactly_once_and_rebuild_the_windows() {
    let cfg = setup("score_crash", 3, score_config(500, 1000)).await;
    let mut produced = Produced::default();
    // 2250 records per partition; one partition drifts from its 1500th on.
    for p in 0..3 {
        produce(&cfg, &mut produced, p, 1500, false, 10 + p as u64).await;
        produce(&cfg, &mut produced, p, 750, p == 2, 20 + p as u64).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_stage(&cfg, &dir.path().join("first.log"));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = reports(&cfg).len();
        if done >= 6 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the stage exited early ({status}): {}",
                std::fs::read_to_string(dir.path().join("first.log")).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "only {done} reports within 180s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SIGKILL: no shutdown, no final commit; a transaction may be open.
    child.kill().unwrap();
    child.wait().unwrap();

    // More input while it is down, then restart.
    for p in 0..3 {
        produce(&cfg, &mut produced, p, 100, false, 30 + p as u64).await;
    }
    let mut child = spawn_stage(&cfg, &dir.path().join("second.log"));
    let ends: Vec<i64> = (0..3).map(|_| 2350).collect();
    let waited = tokio::time::timeout(
        Duration::from_secs(180),
        wait_done(&cfg, &ends, Duration::from_secs(180)),
    )
    .await;
    // SIGTERM: graceful stop.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("second.log")).unwrap();
    waited.unwrap_or_else(|_| panic!("timed out; log:\n{log}"));
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("baseline read from the store"), "{log}");
    assert!(log.contains("rebuilt from the records before"), "{log}");

    let by_window = check_exactly_once(&cfg, &produced);
    // Blocks of 500 offsets, 0–1999 of each partition reported once (2000– is open).
    assert_eq!(by_window.len(), 12, "{:?}", by_window.keys());
    let (hit, drifted, _) = caught(&cfg, &produced);
    assert!(
        hit * 10 >= drifted * 8,
        "{hit} of {drifted} drifted records caught"
    );
    // The only stable records quarantined are partition 2's last 100, whose windows still
    // hold drifted records.
    let q = quarantined(&cfg);
    for (k, sent) in &produced.by_key {
        if !sent.drifted && q.contains(k) {
            assert!(
                sent.partition == 2 && sent.offset >= 2250,
                "{k} quarantined"
            );
        }
    }
    // One baseline, built before the kill, used after the restart.
    let origins: HashSet<String> = by_window
        .values()
        .filter(|r| r["psi_measured"] == true)
        .map(|r| r["baseline"]["origin"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(origins.len(), 1, "{origins:?}");
    assert_eq!(
        read_committed(&cfg, &cfg.topics.name(TopicRole::ScoreBaseline)).len(),
        1
    );
}

/// Waits until the stage's consumer group has `n` members with partitions.
async fn wait_for_members(cfg: &Config, n: usize) {
    let group = cfg.pipeline.group_id("score");
    let c: BaseConsumer = kafka::base_config(&cfg.kafka).create().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let groups = c
            .fetch_group_list(Some(&group), Duration::from_secs(10))
            .unwrap();
        let members = groups
            .groups()
            .iter()
            .filter(|g| g.state() == "Stable")
            .map(|g| {
                g.members()
                    .iter()
                    .filter(|m| m.assignment().is_some_and(|a| !a.is_empty()))
                    .count()
            })
            .sum::<usize>();
        if members >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {group}: {members} members with partitions"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_second_instance_joining_mid_run_keeps_exactly_once() {
    let cfg = setup("score_rebalance", 4, score_config(300, 500)).await;
    let mut produced = Produced::default();
    for p in 0..4 {
        produce(&cfg, &mut produced, p, 1000, false, 40 + p as u64).await;
    }
    let start = |instance: &str| {
        let mut c = cfg.clone();
        c.pipeline.instance = Some(instance.into());
        let shutdown = CancellationToken::new();
        let task = common::spawn_score(&c, &shutdown);
        (shutdown, task)
    };
    let (stop_a, a) = start("a");
    // A judges everything, then B joins: the partitions it takes over are rebuilt from the
    // records before their committed offsets.
    wait_done(&cfg, &[1000, 1000, 1000, 1000], Duration::from_secs(180)).await;
    let (stop_b, b) = start("b");
    wait_for_members(&cfg, 2).await;
    for p in 0..4 {
        produce(&cfg, &mut produced, p, 500, false, 50 + p as u64).await;
    }
    wait_done(&cfg, &[1500, 1500, 1500, 1500], Duration::from_secs(180)).await;
    stop_a.cancel();
    stop_b.cancel();
    let (sa, sb) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    assert!(sb.records_in > 0, "B got partitions: {sb:?} (A: {sa:?})");
    check_exactly_once(&cfg, &produced);
}

#[test]
fn a_bad_score_section_fails_naming_the_key() {
    let run = |envs: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_etl-pipe"))
            .args(["config", "check"])
            .envs(envs.iter().copied())
            .env("ETL_MYSQL_PASSWORD", "x")
            .env("ETL_API_TOKEN", "y")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&[("ETL__SCORE__WINDOW_RECORDS", "0")]);
    assert!(!ok && err.contains("score.window_records"), "{err}");
    let (ok, err) = run(&[("ETL__SCORE__FIELDS", "[\"league_points\", \"nope\"]")]);
    assert!(
        !ok && err.contains("score.fields") && err.contains("nope"),
        "{err}"
    );
    let (ok, err) = run(&[("ETL__SCORE__POLICY", "\"drop\"")]);
    assert!(!ok && err.contains("score.policy"), "{err}");
    let (ok, err) = run(&[("ETL__SCORE__WINDOW_RECORDS", "100")]);
    assert!(
        !ok && err.contains("score.window_records") && err.contains("at least 184"),
        "{err}"
    );
    let (ok, err) = run(&[("ETL__SCORE__MIN_WINDOW_RECORDS", "150")]);
    assert!(
        !ok && err.contains("score.min_window_records") && err.contains("at least 184"),
        "{err}"
    );
    let (ok, err) = run(&[("ETL__SCORE__BASELINE", "/nonexistent/baseline.json")]);
    assert!(!ok && err.contains("score.baseline"), "{err}");
    let (ok, err) = run(&[("ETL__SCORE__WINDOW_RECORDS", "1000")]);
    assert!(ok, "{err}");
}

#[test]
fn a_missing_baseline_store_topic_stops_the_stage_naming_it() {
    common::require_kafka();
    // Topics of a fresh pipeline that nobody created.
    let mut cfg = common::test_config("score_no_store");
    cfg.score = Some(score_config(200, 200));
    let out = Command::new(env!("CARGO_BIN_EXE_etl-pipe"))
        .arg("score")
        .envs(env_for(&cfg))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("topics.score_baseline") && err.contains("topics apply"),
        "{err}"
    );
}

/// Produces already-encoded cleaned records to partition 0 and records them in `produced`.
async fn produce_payloads(
    cfg: &Config,
    produced: &mut Produced,
    records: Vec<(String, Vec<u8>)>,
    max_message_bytes: usize,
) {
    let topic = cfg.topics.name(TopicRole::Cleaned);
    let producer: FutureProducer = kafka::producer_config(&cfg.kafka)
        .set("message.max.bytes", max_message_bytes.to_string())
        .create()
        .unwrap();
    for (i, (id, payload)) in records.into_iter().enumerate() {
        let tp = traceparent(7_000_000 + i as u64);
        let d = producer
            .send(
                FutureRecord::to(&topic)
                    .partition(0)
                    .key(&id)
                    .payload(&payload)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: h::TRACEPARENT,
                        value: Some(&tp),
                    })),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        produced.by_key.insert(
            id,
            Sent {
                partition: d.partition,
                offset: d.offset,
                payload,
                traceparent: tp,
                drifted: false,
            },
        );
    }
}

/// Runs the score stage of `cfg` in this process until `ends` are covered by reports, then
/// stops it; returns its stats.
async fn score_until(cfg: &Config, ends: &[i64]) -> etl_pipe::kafka::eos::Stats {
    let shutdown = CancellationToken::new();
    let stage = common::spawn_score(cfg, &shutdown);
    let waited = tokio::time::timeout(
        Duration::from_secs(90),
        wait_done(cfg, ends, Duration::from_secs(90)),
    )
    .await;
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(60), stage).await;
    if waited.is_err() {
        panic!("no reports covering {ends:?} within 90 s; the stage ended with {result:?}");
    }
    result.unwrap().unwrap().unwrap()
}

/// A cleaned record written with an older version of the cleaned schema (one of
/// `schemas/history/` beside `score.schema_in`) is resolved into the current one and scored,
/// not dead-lettered as an unknown schema.
#[tokio::test]
async fn records_written_with_an_older_cleaned_schema_are_scored() {
    let dir = tempfile::tempdir().unwrap();
    let current = std::fs::read_to_string(format!("{SCHEMAS}/league_entry.cleaned.avsc")).unwrap();
    std::fs::write(dir.path().join("league_entry.cleaned.avsc"), &current).unwrap();
    // The previous version: no `trace_id` yet (added since, nullable, default null) and a
    // `region` field removed since.
    let mut old: Json = serde_json::from_str(&current).unwrap();
    let fields = old["fields"].as_array_mut().unwrap();
    fields.retain(|f| f["name"] != "trace_id");
    fields.push(serde_json::json!({"name": "region", "type": "string"}));
    std::fs::create_dir(dir.path().join("history")).unwrap();
    let old_path = dir.path().join("history/league_entry.cleaned.v0.avsc");
    std::fs::write(&old_path, old.to_string()).unwrap();

    let mut sc = score_config(20, 0);
    sc.schema_in = dir.path().join("league_entry.cleaned.avsc");
    let cfg = setup("score_history", 1, sc).await;
    let old_codec = Codec::new(load_schema(&old_path).unwrap(), Framing::SingleObject);
    let new_codec = cleaned_codec();
    let mut rng = StdRng::seed_from_u64(61);
    let mut records = Vec::new();
    for i in 0..60 {
        let id = format!("h{i}");
        let mut r = entry(&id, false, &mut rng);
        let payload = if i % 2 == 0 {
            r.fields.retain(|(n, _)| &**n != "trace_id");
            r.set("region", Value::String("EUW".into()));
            old_codec.encode(&r).unwrap()
        } else {
            new_codec.encode(&r).unwrap()
        };
        records.push((id, payload));
    }
    let mut produced = Produced::default();
    produce_payloads(&cfg, &mut produced, records, 1_000_000).await;
    let stats = score_until(&cfg, &[60]).await;

    let dead = read_committed(&cfg, &cfg.topics.name(TopicRole::DeadLetter));
    let reasons: Vec<String> = dead
        .iter()
        .take(3)
        .map(|g| format!("{}: {:?}", g.key, g.headers.get(h::ERROR_MESSAGE)))
        .collect();
    assert!(
        dead.is_empty(),
        "{} of 60 records dead-lettered, e.g. {reasons:?}",
        dead.len()
    );
    let scored = read_committed(&cfg, &cfg.topics.name(TopicRole::Scored));
    assert_eq!(scored.len(), 60, "{stats:?}");
    let sc = scored_codec();
    let old_one = scored.iter().find(|g| g.key == "h0").unwrap();
    let rec = sc.decode(&old_one.payload).unwrap();
    assert_eq!(rec.get("trace_id"), Some(&Value::Null));
    assert_eq!(rec.get("summoner_id").unwrap().as_str(), Some("h0"));
    check_exactly_once(&cfg, &produced);
}

/// Sets topic configs (`max.message.bytes`...) and waits until the broker reports them.
async fn alter_topic(cfg: &Config, topic: &str, key: &str, value: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = kafka::base_config(&cfg.kafka).create().unwrap();
    let r = admin
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic(topic)).set(key, value)],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    for x in r {
        x.unwrap();
    }
}

fn random_text(n: usize, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
        .collect()
}

/// A cleaned record whose scored form is larger than the scored topic accepts is a dead
/// letter (its original bytes, kind `output_too_large`, the sizes in the message); one too
/// large even for the dead-letter topic is dead-lettered by reference (coordinates and
/// reason, no payload). The other records are scored, the stage never aborts or stops.
#[tokio::test]
async fn a_record_too_large_for_its_output_topic_is_dead_lettered_and_the_stage_goes_on() {
    let cfg = setup("score_too_large", 1, score_config(20, 0)).await;
    alter_topic(
        &cfg,
        &cfg.topics.name(TopicRole::Scored),
        "max.message.bytes",
        "20000",
    )
    .await;
    alter_topic(
        &cfg,
        &cfg.topics.name(TopicRole::Cleaned),
        "max.message.bytes",
        "2000000",
    )
    .await;
    let codec = cleaned_codec();
    let mut rng = StdRng::seed_from_u64(71);
    let mut records = Vec::new();
    for i in 0..42 {
        let id = format!("t{i}");
        let mut r = entry(&id, false, &mut rng);
        // Random text: lz4 cannot shrink it below the limits.
        match i {
            10 => r.set("summoner_name", Value::String(random_text(30_000, 1))),
            20 => r.set("summoner_name", Value::String(random_text(1_200_000, 2))),
            _ => {}
        }
        records.push((id, codec.encode(&r).unwrap()));
    }
    let mut produced = Produced::default();
    produce_payloads(&cfg, &mut produced, records, 2_000_000).await;
    let stats = score_until(&cfg, &[42]).await;
    assert_eq!(stats.aborts, 0, "{stats:?}");

    let scored = read_committed(&cfg, &cfg.topics.name(TopicRole::Scored));
    assert_eq!(scored.len(), 40);
    let dead = read_committed(&cfg, &cfg.topics.name(TopicRole::DeadLetter));
    assert_eq!(dead.len(), 2, "{dead:?}");
    let scored_topic = cfg.topics.name(TopicRole::Scored);
    for g in &dead {
        let sent = &produced.by_key[&g.key];
        let hd = |n: &str| g.headers.get(n).map(String::as_str);
        assert_eq!(hd(h::ERROR_STAGE), Some("score"));
        assert_eq!(hd(h::ERROR_KIND), Some("output_too_large"));
        assert_eq!(hd(h::SOURCE_OFFSET), Some(&*sent.offset.to_string()));
        assert_eq!(hd(h::TRACEPARENT), Some(sent.traceparent.as_str()));
        let msg = hd(h::ERROR_MESSAGE).unwrap();
        assert!(
            msg.contains(&scored_topic) && msg.contains("max.message.bytes"),
            "{msg}"
        );
        match g.key.as_str() {
            "t10" => assert_eq!(g.payload, sent.payload, "the original bytes"),
            "t20" => {
                assert!(g.payload.is_empty(), "too large even as a dead letter");
                assert!(msg.contains("left out"), "{msg}");
            }
            other => panic!("unexpected dead letter {other}"),
        }
    }
}
