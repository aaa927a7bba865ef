//! The quality gate's decisions do not depend on timing (issue 17, item 2): the same 50 000
//! cleaned records, with a drifted segment, scored once at full speed and once throttled to a
//! few hundred records/s with a restart in the middle, give identical sets of quarantined
//! keys. Real Kafka; the score stage in this process; a pinned baseline file.
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use etl_pipe::codec::{load_schema, Codec, Framing};
use etl_pipe::config::{Config, TopicRole};
use etl_pipe::kafka;
use etl_pipe::quality::BaselineBuilder;
use etl_pipe::record::{Record, Value};
use etl_pipe::stages::score::{self, Policy, ScoreConfig};

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");
const RECORDS: usize = 50_000;
const PARTITIONS: i32 = 3;
/// Records `DRIFT_FROM..DRIFT_TO` (in production order) are drifted.
const DRIFT_FROM: usize = 20_000;
const DRIFT_TO: usize = 26_000;
const NUMERIC: [&str; 3] = ["league_points", "wins", "losses"];
const FIELDS: [&str; 5] = ["summoner_name", "tier", "league_points", "wins", "losses"];

/// A league entry; drifted ones have league points shifted by +25 (a moderate shift: a
/// window that holds a part of the drifted segment may land on either side of the lines).
fn entry(id: &str, drifted: bool, rng: &mut StdRng) -> Record {
    let wins = rng.gen_range(0..400);
    let losses = rng.gen_range(0..400);
    let tiers = ["IRON", "BRONZE", "SILVER", "GOLD"];
    let name = Value::String(format!("player {}", rng.gen_range(0..50)));
    let tier = tiers[rng.gen_range(0..tiers.len())];
    let lp = rng.gen_range(0..100) + if drifted { 25 } else { 0 };
    common::league_entry(id, name, tier, lp, wins, losses)
}

/// The input: (key, partition, payload), in production order; the same for both runs.
fn input() -> Vec<(String, i32, Vec<u8>)> {
    let codec = Codec::new(
        load_schema(format!("{SCHEMAS}/league_entry.cleaned.avsc")).unwrap(),
        Framing::SingleObject,
    );
    let mut rng = StdRng::seed_from_u64(17);
    (0..RECORDS)
        .map(|i| {
            let id = format!("k{i}");
            let drifted = (DRIFT_FROM..DRIFT_TO).contains(&i);
            let payload = codec.encode(&entry(&id, drifted, &mut rng)).unwrap();
            (id, (i % PARTITIONS as usize) as i32, payload)
        })
        .collect()
}

fn baseline_file(dir: &std::path::Path) -> std::path::PathBuf {
    let specs = common::field_specs(&FIELDS, &NUMERIC);
    let mut b = BaselineBuilder::new(specs, &Default::default());
    let mut rng = StdRng::seed_from_u64(4242);
    for i in 0..20_000 {
        b.push(&entry(&format!("b{i}"), false, &mut rng));
    }
    let path = dir.join("baseline.json");
    std::fs::write(&path, b.build().to_json()).unwrap();
    path
}

async fn setup(test: &str, baseline: &std::path::Path) -> Config {
    setup_with(test, baseline, PARTITIONS, 1000, Policy::Quarantine).await
}

async fn setup_with(
    test: &str,
    baseline: &std::path::Path,
    partitions: i32,
    window_records: usize,
    policy: Policy,
) -> Config {
    let score = ScoreConfig {
        window_records,
        policy,
        batch_size: 2000,
        batch_max_age: Duration::from_millis(100),
        schema_in: format!("{SCHEMAS}/league_entry.cleaned.avsc").into(),
        schema_out: format!("{SCHEMAS}/league_entry.scored.avsc").into(),
        fields: Some(FIELDS.iter().map(|s| s.to_string()).collect()),
        baseline: Some(baseline.to_path_buf()),
        ..Default::default()
    };
    common::score_pipeline(test, partitions, score).await
}

/// Produces `records` in order, at most `rate` per second (0 = as fast as possible), each
/// chunk awaited before the next, so every partition gets them in the same order as before.
async fn produce(cfg: &Config, records: &[(String, i32, Vec<u8>)], rate: usize) {
    let topic = cfg.topics.name(TopicRole::Cleaned);
    let producer: FutureProducer = kafka::producer_config(&cfg.kafka).create().unwrap();
    let chunk = if rate == 0 { 5000 } else { (rate / 10).max(1) };
    let started = Instant::now();
    for (n, part) in records.chunks(chunk).enumerate() {
        let futures: Vec<_> = part
            .iter()
            .map(|(key, p, payload)| {
                producer
                    .send_result(
                        FutureRecord::to(&topic)
                            .partition(*p)
                            .key(key)
                            .payload(payload),
                    )
                    .map_err(|(e, _)| e)
                    .unwrap()
            })
            .collect();
        for f in futures {
            f.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
        if rate > 0 {
            let due = Duration::from_secs_f64(((n + 1) * chunk) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn reader(cfg: &Config, group: &str) -> BaseConsumer {
    let mut c = kafka::base_config(&cfg.kafka);
    c.set("enable.auto.commit", "false")
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    c.create().unwrap()
}

/// The score stage's committed offset in each input partition (0 when none).
fn committed(cfg: &Config) -> Vec<i64> {
    let topic = cfg.topics.name(TopicRole::Cleaned);
    let c = reader(cfg, &cfg.pipeline.group_id("score"));
    let mut tpl = TopicPartitionList::new();
    for p in 0..cfg.topics.partitions {
        tpl.add_partition(&topic, p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    (0..cfg.topics.partitions)
        .map(
            |p| match committed.find_partition(&topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            },
        )
        .collect()
}

/// Whether the score stage's group has committed the end of every input partition.
fn caught_up(cfg: &Config) -> bool {
    let topic = cfg.topics.name(TopicRole::Cleaned);
    let c = reader(cfg, "gate-test-watermarks");
    committed(cfg).into_iter().enumerate().all(|(p, at)| {
        let (_, high) = c
            .fetch_watermarks(&topic, p as i32, Duration::from_secs(10))
            .unwrap();
        at >= high
    })
}

/// The keys committed in `topic`.
fn keys(cfg: &Config, role: TopicRole) -> BTreeSet<String> {
    messages(cfg, role).into_iter().map(|m| m.key).collect()
}

/// The messages committed in `topic`.
fn messages(cfg: &Config, role: TopicRole) -> Vec<common::Got> {
    common::read_committed(cfg, &cfg.topics.name(role))
}

type Stage = tokio::task::JoinHandle<Result<etl_pipe::kafka::eos::Stats, score::ScoreError>>;

fn start_stage(cfg: &Config) -> (CancellationToken, Stage) {
    let shutdown = CancellationToken::new();
    let task = common::spawn_score(cfg, &shutdown);
    (shutdown, task)
}

fn start(cfg: &Config) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let (shutdown, task) = start_stage(cfg);
    (
        shutdown,
        tokio::spawn(async move {
            task.await.unwrap().unwrap();
        }),
    )
}

async fn wait_caught_up(cfg: &Config, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !caught_up(cfg) {
        assert!(
            Instant::now() < deadline,
            "the score stage did not commit the end of its input within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs the score stage until it has committed the end of its input, then stops it.
async fn score_to_end(cfg: &Config) {
    let (stop, task) = start(cfg);
    wait_caught_up(cfg, Duration::from_secs(180)).await;
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_records_get_the_same_decisions_at_any_speed_and_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = baseline_file(dir.path());
    let records = input();

    // Full speed: everything is in the topic before the stage starts.
    let fast = setup("gate_fast", &baseline).await;
    produce(&fast, &records, 0).await;
    let (stop, task) = start(&fast);
    wait_caught_up(&fast, Duration::from_secs(300)).await;
    stop.cancel();
    task.await.unwrap();

    // Throttled to 500 records/s while the stage runs, stopped and started again halfway.
    let slow = setup("gate_slow", &baseline).await;
    let (stop, task) = start(&slow);
    let half = RECORDS / 2 + 777;
    produce(&slow, &records[..half], 500).await;
    stop.cancel();
    task.await.unwrap();
    let (stop, task) = start(&slow);
    produce(&slow, &records[half..], 500).await;
    wait_caught_up(&slow, Duration::from_secs(300)).await;
    stop.cancel();
    task.await.unwrap();

    let q_fast = keys(&fast, TopicRole::Quarantine);
    let q_slow = keys(&slow, TopicRole::Quarantine);
    let drifted: BTreeSet<String> = (DRIFT_FROM..DRIFT_TO).map(|i| format!("k{i}")).collect();
    let caught = q_fast.intersection(&drifted).count();
    eprintln!(
        "quarantined: full speed {}, throttled {}; of the {} drifted records {} caught",
        q_fast.len(),
        q_slow.len(),
        drifted.len(),
        caught
    );
    // A trailing window of 1000 notices the shift once ~30 % of it is drifted: the first
    // ~300 drifted records of each partition pass (3 × 2000 drifted here); a long drift is
    // caught almost whole (README "Quality gate").
    assert!(
        caught * 10 >= drifted.len() * 6,
        "the drift was caught ({caught} of {})",
        drifted.len()
    );
    let only_fast: Vec<_> = q_fast.difference(&q_slow).take(10).collect();
    let only_slow: Vec<_> = q_slow.difference(&q_fast).take(10).collect();
    assert!(
        q_fast == q_slow,
        "different quarantined keys: {} only at full speed (e.g. {only_fast:?}), {} only \
         throttled (e.g. {only_slow:?})",
        q_fast.difference(&q_slow).count(),
        q_slow.difference(&q_fast).count()
    );
    // Every record went somewhere, once: the scored and quarantined keys are the input's.
    let scored = keys(&slow, TopicRole::Scored);
    assert_eq!(scored.len() + q_slow.len(), RECORDS);
    assert!(scored.is_disjoint(&q_slow));
}

/// One partition: 1000 stable records, then 1000 drifted ones (`k0`…`k1999`).
fn one_partition_input() -> Vec<(String, i32, Vec<u8>)> {
    let codec = Codec::new(
        load_schema(format!("{SCHEMAS}/league_entry.cleaned.avsc")).unwrap(),
        Framing::SingleObject,
    );
    let mut rng = StdRng::seed_from_u64(5);
    (0..2000)
        .map(|i| {
            let id = format!("k{i}");
            let payload = codec.encode(&entry(&id, i >= 1000, &mut rng)).unwrap();
            (id, 0, payload)
        })
        .collect()
}

/// `score.policy = flag`: FAIL records go to scored, marked FAIL, with their reasons in the
/// record (`quality_reasons`) and the headers; nothing is quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_passes_fail_records_on_marked_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = baseline_file(dir.path());
    let cfg = setup_with("gate_flag", &baseline, 1, 300, Policy::Flag).await;
    produce(&cfg, &one_partition_input(), 0).await;
    score_to_end(&cfg).await;

    assert!(keys(&cfg, TopicRole::Quarantine).is_empty());
    let scored = messages(&cfg, TopicRole::Scored);
    assert_eq!(scored.len(), 2000);
    let codec = Codec::new(
        load_schema(format!("{SCHEMAS}/league_entry.scored.avsc")).unwrap(),
        Framing::SingleObject,
    );
    let mut flagged = 0;
    for g in &scored {
        let rec = codec.decode(&g.payload).unwrap();
        let decision = rec.get("quality_decision").unwrap().as_str().unwrap();
        let reasons = rec.get("quality_reasons").unwrap();
        assert_eq!(
            g.headers.get(score::DECISION_HEADER).map(String::as_str),
            Some(decision)
        );
        let i: usize = g.key[1..].parse().unwrap();
        if decision == "FAIL" {
            flagged += 1;
            assert!(i >= 1000, "{} FAIL: {reasons:?}", g.key);
            let text = reasons.as_str().unwrap();
            assert!(text.contains("league_points: PSI"), "{text}");
            assert_eq!(
                g.headers.get(score::REASONS_HEADER).map(String::as_str),
                Some(text)
            );
        } else if decision == "PASS" {
            assert_eq!(reasons, &Value::Null);
            assert!(!g.headers.contains_key(score::REASONS_HEADER));
        }
        assert!(g.headers.contains_key(score::WINDOW_HEADER));
    }
    // The shift of +25 points crosses psi_fail once ~60 % of the window is drifted: the
    // first ~150 drifted records pass as PASS/WARN (README "Quality gate").
    assert!(
        flagged >= 700,
        "{flagged} of the 1000 drifted records flagged"
    );
}

/// `score.policy = halt`: the stage stops at the first FAIL record with an error naming the
/// window and the reasons; nothing from that record on is committed, so a start after the
/// fix (here: policy quarantine) resumes there and every record lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halt_stops_at_the_first_fail_without_moving_the_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = baseline_file(dir.path());
    let mut cfg = setup_with("gate_halt", &baseline, 1, 300, Policy::Halt).await;
    produce(&cfg, &one_partition_input(), 0).await;
    let (_stop, task) = start_stage(&cfg);
    let err = tokio::time::timeout(Duration::from_secs(180), task)
        .await
        .expect("the stage halts")
        .unwrap()
        .expect_err("the stage stops with an error")
        .to_string();
    assert!(err.contains("score.policy = halt"), "{err}");
    let topic = cfg.topics.name(TopicRole::Cleaned);
    assert!(
        err.contains(&format!("judged on window {topic}/0/")),
        "{err}"
    );
    assert!(
        err.contains("league_points: PSI") && err.contains("FAIL"),
        "{err}"
    );
    // The record it stopped at: nothing from it on was committed, nothing quarantined.
    let at: i64 = err
        .split(&format!("{topic}[0]@"))
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(at >= 1000, "stopped at {at}, in the stable records");
    assert!(
        committed(&cfg)[0] <= at,
        "committed {:?}, halted at {at}",
        committed(&cfg)
    );
    assert!(keys(&cfg, TopicRole::Quarantine).is_empty());
    let scored_before = keys(&cfg, TopicRole::Scored);
    assert!(scored_before.len() as i64 <= at);
    assert!(!scored_before.contains(&format!("k{at}")));

    // After the fix: resumes at the committed offset; every record once.
    cfg.score.as_mut().unwrap().policy = Policy::Quarantine;
    score_to_end(&cfg).await;
    let scored = keys(&cfg, TopicRole::Scored);
    let quarantined = keys(&cfg, TopicRole::Quarantine);
    assert!(scored.is_disjoint(&quarantined));
    assert_eq!(scored.len() + quarantined.len(), 2000);
    assert!(quarantined.contains(&format!("k{at}")));
}

/// A restart after retention removed the partition's oldest records (log start > 0): the
/// window is rebuilt from what is left — the read-back starts before the log start and is
/// reset to it (`auto.offset.reset=earliest`; the start is librdkafka's cached low watermark,
/// no watermark query, which could hang with the leader's broker stopped) — and the stage
/// catches up with every record landing once. The window (300 records) of every record
/// after the restart lies after the removed ones, so the decisions are those of a run that
/// never stopped: a read-back that found nothing (or too little) would change them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_retention_rebuilds_from_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = baseline_file(dir.path());
    // Stable, drifted from 1000, stable again from 1500 (where the restart comes): the first
    // stable records after it are judged on a window still full of drifted ones.
    let codec = Codec::new(
        load_schema(format!("{SCHEMAS}/league_entry.cleaned.avsc")).unwrap(),
        Framing::SingleObject,
    );
    let mut rng = StdRng::seed_from_u64(9);
    let records: Vec<_> = (0..2000)
        .map(|i| {
            let id = format!("k{i}");
            let drifted = (1000..1500).contains(&i);
            (
                id.clone(),
                0,
                codec.encode(&entry(&id, drifted, &mut rng)).unwrap(),
            )
        })
        .collect();
    let reference = setup_with("gate_retention_ref", &baseline, 1, 300, Policy::Quarantine).await;
    produce(&reference, &records, 0).await;
    score_to_end(&reference).await;

    let cfg = setup_with("gate_retention", &baseline, 1, 300, Policy::Quarantine).await;
    produce(&cfg, &records[..1500], 0).await;
    score_to_end(&cfg).await;
    let at = committed(&cfg)[0];
    assert!(
        at >= 1300,
        "committed {at}: the restart's windows must lie after the removed records"
    );

    // Retention: everything before offset 1000 is gone.
    let topic = cfg.topics.name(TopicRole::Cleaned);
    let admin: rdkafka::admin::AdminClient<_> = kafka::base_config(&cfg.kafka).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(1000))
        .unwrap();
    admin
        .delete_records(&tpl, &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap();
    let (low, _) = reader(&cfg, "gate-test-low")
        .fetch_watermarks(&topic, 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(low, 1000, "the log starts at 1000 now");

    let (stop, task) = start(&cfg);
    produce(&cfg, &records[1500..], 0).await;
    wait_caught_up(&cfg, Duration::from_secs(180)).await;
    stop.cancel();
    task.await.unwrap();

    let scored = keys(&cfg, TopicRole::Scored);
    let quarantined = keys(&cfg, TopicRole::Quarantine);
    assert!(scored.is_disjoint(&quarantined));
    assert_eq!(scored.len() + quarantined.len(), 2000, "every record once");
    let expected = keys(&reference, TopicRole::Quarantine);
    assert!(expected.len() >= 300, "{} quarantined", expected.len());
    assert!(
        quarantined == expected,
        "after retention and a restart: {} quarantined, {} without either ({} differ)",
        quarantined.len(),
        expected.len(),
        quarantined.symmetric_difference(&expected).count()
    );
}
