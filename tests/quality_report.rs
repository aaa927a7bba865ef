//! `etl-pipe quality report` against the real local Kafka: the score stage runs on 400 stable
//! and 400 drifted records (league points +60, 30 % of the names missing) and writes its block
//! reports; the command's page names the failing blocks, their windows and reasons. Also: a
//! range with no reports (page with a note, exit 4) and a pipeline without topics (names the
//! topic and `topics apply`). Fails, never skips, when Kafka is unreachable.
mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

use etl_pipe::codec::{load_schema, Codec, Framing};
use etl_pipe::config::{Config, TopicRole};
use etl_pipe::kafka;
use etl_pipe::quality::BaselineBuilder;
use etl_pipe::record::{Record, Value};
use etl_pipe::stages::score::{self, ScoreConfig};

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");
const FIELDS: [&str; 4] = ["summoner_name", "tier", "league_points", "wins"];

/// A league entry; drifted: league points +60 and 30 % of the names missing.
fn entry(id: &str, drifted: bool, rng: &mut StdRng) -> Record {
    let wins = rng.gen_range(0..400);
    let losses = rng.gen_range(0..400);
    let name = if drifted && rng.gen_bool(0.3) {
        Value::Null
    } else {
        Value::String(format!("player {}", rng.gen_range(0..50)))
    };
    let tier = ["IRON", "SILVER", "GOLD"][rng.gen_range(0..3)];
    let lp = rng.gen_range(0..100) + if drifted { 60 } else { 0 };
    common::league_entry(id, name, tier, lp, wins, losses)
}

async fn produce(cfg: &Config, n: usize, drifted: bool, seed: u64) {
    let codec = Codec::new(
        load_schema(format!("{SCHEMAS}/league_entry.cleaned.avsc")).unwrap(),
        Framing::SingleObject,
    );
    let topic = cfg.topics.name(TopicRole::Cleaned);
    let producer: FutureProducer = kafka::producer_config(&cfg.kafka).create().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..n {
        let id = format!("{}-{seed}-{i}", if drifted { "d" } else { "s" });
        let payload = codec.encode(&entry(&id, drifted, &mut rng)).unwrap();
        producer
            .send(
                FutureRecord::to(&topic)
                    .partition(0)
                    .key(&id)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// Waits until the score group has committed `end` on partition 0.
async fn wait_done(cfg: &Config, end: i64) {
    let topic = cfg.topics.name(TopicRole::Cleaned);
    let mut c = kafka::base_config(&cfg.kafka);
    c.set("group.id", cfg.pipeline.group_id("score"))
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, 0);
        let at = match consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap()
            .find_partition(&topic, 0)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => o,
            _ => 0,
        };
        if at >= end {
            return;
        }
        assert!(Instant::now() < deadline, "committed {at}, expected {end}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `etl-pipe quality report` with the test pipeline's names in the environment.
fn quality_report(cfg: &Config, out: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_etl-pipe"));
    cmd.args(["quality", "report", "--out"])
        .arg(out)
        .args(extra)
        .env("ETL__PIPELINE__NAME", &cfg.pipeline.name)
        .env("ETL__KAFKA__BROKERS", &cfg.kafka.brokers)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    for role in TopicRole::ALL {
        cmd.env(
            format!("ETL__TOPICS__{}__NAME", role.key().to_uppercase()),
            cfg.topics.name(role),
        );
    }
    cmd.output().unwrap()
}

#[tokio::test]
async fn the_page_names_the_failing_blocks_and_their_reasons() {
    let mut sc = ScoreConfig {
        window_records: 200,
        policy: score::Policy::Quarantine,
        batch_max_age: Duration::from_millis(100),
        schema_in: format!("{SCHEMAS}/league_entry.cleaned.avsc").into(),
        schema_out: format!("{SCHEMAS}/league_entry.scored.avsc").into(),
        fields: Some(FIELDS.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    let specs = common::field_specs(&FIELDS, &["league_points", "wins"]);
    let mut b = BaselineBuilder::new(specs, &Default::default());
    let mut rng = StdRng::seed_from_u64(42);
    for i in 0..2000 {
        b.push(&entry(&format!("b{i}"), false, &mut rng));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baseline.json");
    std::fs::write(&path, b.build().to_json()).unwrap();
    sc.baseline = Some(path);
    let cfg = common::score_pipeline("quality_report", 1, sc).await;
    produce(&cfg, 400, false, 7).await;
    produce(&cfg, 400, true, 8).await;

    let shutdown = CancellationToken::new();
    let stage = common::spawn_score(&cfg, &shutdown);
    wait_done(&cfg, 800).await;
    shutdown.cancel();
    stage.await.unwrap().unwrap();

    // What score wrote: blocks 0-199, 200-399 (stable) and 400-599 (drifted; 600-799 is the
    // last block, not reported yet).
    let reports: Vec<Json> = common::read_committed(&cfg, &cfg.topics.name(TopicRole::Quality))
        .iter()
        .map(|g| serde_json::from_slice(&g.payload).unwrap())
        .collect();
    let failed: Vec<&Json> = reports.iter().filter(|r| r["decision"] == "FAIL").collect();
    assert_eq!(reports.len(), 3, "{reports:?}");
    assert_eq!(failed.len(), 1, "{reports:?}");
    let fail = failed[0];

    let out = dir.path().join("quality.html");
    let o = quality_report(&cfg, &out, &[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("3 block reports (1 failed)"), "{stdout}");
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(!page.contains("<script") && !page.contains("http://") && !page.contains("https://"));
    assert!(page.contains(&cfg.pipeline.name));
    // The failing block: its offsets, the trailing window it was decided on, its reasons.
    let table = &page[page
        .find(r#"id="failed""#)
        .expect("a table of failed blocks")..];
    assert!(table.contains("400&ndash;599"), "{table}");
    let decided_on = fail["decided_on"].as_str().unwrap();
    assert!(table.contains(decided_on), "{decided_on} not in {table}");
    for r in fail["reasons"].as_array().unwrap() {
        let message = r["message"].as_str().unwrap().replace('>', "&gt;");
        assert!(table.contains(&message), "{message} not in {table}");
    }
    // The reasons are those of the block's first FAIL verdict: the drifted league points.
    assert!(table.contains("league_points: PSI"), "{table}");
    // Decisions per block and the fields over time.
    assert!(page.contains(r#"id="decisions-0""#));
    assert!(page.contains(r#"class="fail""#));
    for f in FIELDS {
        assert!(page.contains(&format!("<h3>{f}</h3>")), "{f}");
    }

    // --partition 1: no block of that input partition; the page says so, exit 4.
    let empty = dir.path().join("empty.html");
    let o = quality_report(&cfg, &empty, &["--partition", "1"]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    let page = std::fs::read_to_string(&empty).unwrap();
    assert!(page.contains("No block reports"), "{page}");
    // A range in the future: the same.
    let o = quality_report(&cfg, &empty, &["--from", "2999-01-01T00:00:00Z"]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    // An age: everything written in the last hour.
    let o = quality_report(&cfg, &out, &["--from", "1h"]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("3 block reports"));

    // A pipeline whose topics were never created: the topic and the fix are named.
    let mut other = common::test_config("quality_report_none");
    other.kafka = cfg.kafka.clone();
    let o = quality_report(&other, &empty, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(&other.topics.name(TopicRole::Quality)) && err.contains("topics apply"),
        "{err}"
    );
}
