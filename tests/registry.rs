//! The pipeline against the real schema registry (the local stack's Apicurio, Confluent API):
//! readers never register, a 404'd id is asked again later, a registry outage mid-stream is
//! waited out without losing or dead-lettering a record (and readiness says so), a schema the
//! registry refuses stops a stage naming the subject and the field, `topics apply` sets the
//! subjects' compatibility, and credentials go as basic auth from their own keys.
mod common;
mod registry_support;

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use etl_pipe::codec::{load_schema, Codec, CodecError, Framing};
use etl_pipe::config::{Config, SecretRef, TopicRole};
use etl_pipe::kafka;
use etl_pipe::record::{Record, Value};
use etl_pipe::stages::score::ScoreConfig;
use registry_support::{Mode, Proxy};

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");

fn cleaned_schema() -> etl_pipe::record::RecordSchema {
    load_schema(format!("{SCHEMAS}/league_entry.cleaned.avsc")).unwrap()
}

fn entry(i: i32) -> Record {
    let mut r = Record::new();
    r.set("summoner_id", Value::String(format!("s{i}")));
    r.set("summoner_name", Value::String(format!("name {}", i % 40)));
    r.set("queue_type", Value::String("RANKED_SOLO_5x5".into()));
    r.set(
        "tier",
        Value::String(["GOLD", "SILVER", "IRON"][i as usize % 3].into()),
    );
    r.set("rank", Value::String("IV".into()));
    r.set("league_points", Value::Int(i % 100));
    r.set("wins", Value::Int(10 + i % 50));
    r.set("losses", Value::Int(i % 70));
    r.set("veteran", Value::Boolean(i % 2 == 0));
    r.set("inactive", Value::Boolean(false));
    r.set("fresh_blood", Value::Null);
    r.set("hot_streak", Value::Boolean(true));
    r.set("mini_series", Value::Null);
    r.set("games", Value::Int(10 + i % 50 + i % 70));
    r.set(
        "win_rate",
        Value::Double((10 + i % 50) as f64 / (10 + i % 50 + i % 70) as f64),
    );
    r.set("source", Value::String("league-v4".into()));
    r.set("trace_id", Value::Null);
    r.set("source_topic", Value::String("etl.raw".into()));
    r.set("source_partition", Value::Int(0));
    r.set("source_offset", Value::Long(i as i64));
    r.set("fetched_at", Value::TimestampMillis(1_735_689_600_000));
    r
}

/// A score config with small windows and no baseline (no store to wait for).
fn score_config() -> ScoreConfig {
    ScoreConfig {
        window_records: 10,
        batch_max_age: Duration::from_millis(100),
        schema_in: format!("{SCHEMAS}/league_entry.cleaned.avsc").into(),
        schema_out: format!("{SCHEMAS}/league_entry.scored.avsc").into(),
        baseline: None,
        baseline_from_first_records: 0,
        ..Default::default()
    }
}

async fn score_topics(cfg: &Config) {
    for role in [
        TopicRole::Cleaned,
        TopicRole::Scored,
        TopicRole::Quarantine,
        TopicRole::Quality,
        TopicRole::DeadLetter,
    ] {
        common::create_topic(&cfg.topics.name(role), 1).await;
    }
}

async fn produce(topic: &str, codec: &Codec, range: std::ops::Range<i32>) {
    let producer: FutureProducer = kafka::producer_config(&common::kafka_config())
        .create()
        .unwrap();
    for i in range {
        let payload = codec.encode(&entry(i)).unwrap();
        producer
            .send(
                FutureRecord::to(topic)
                    .key(&format!("s{i}"))
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

async fn wait_for_subject(subject: &str, timeout: Duration) -> Option<(u32, String)> {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if let Some(l) = registry_support::latest(subject).await {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn score_registers_its_output_schema_and_never_its_input() {
    registry_support::require_registry().await;
    let mut cfg = common::test_config("reg_readers");
    cfg.kafka.schema_registry_url = Some(registry_support::registry_url());
    cfg.score = Some(score_config());
    score_topics(&cfg).await;
    let cleaned = cfg.topics.name(TopicRole::Cleaned);
    let scored = cfg.topics.name(TopicRole::Scored);

    let shutdown = CancellationToken::new();
    let stage = common::spawn_score(&cfg, &shutdown);
    // The writer (score's scored output) registers its subject at start-up.
    let registered = wait_for_subject(&format!("{scored}-value"), Duration::from_secs(60)).await;
    assert!(
        registered.is_some(),
        "score never registered {scored}-value"
    );
    // What a clean stage writes, through the registry: score must decode it by id.
    let writer = Codec::writer(&cfg.kafka, cleaned_schema(), &cleaned)
        .await
        .unwrap();
    let reader_subject_before = registry_support::latest(&format!("{cleaned}-value")).await;
    produce(&cleaned, &writer, 0..100).await;
    let got = tokio::task::block_in_place(|| {
        registry_support::read_until(
            &[scored.clone(), cfg.topics.name(TopicRole::Quarantine)],
            Duration::from_secs(90),
            |m| m.len() >= 100,
        )
    });
    shutdown.cancel();
    stage.await.unwrap().unwrap();
    assert_eq!(got.len(), 100);
    // Only one version of the cleaned subject: the one clean's writer registered; score
    // (its reader) added none.
    let after = registry_support::latest(&format!("{cleaned}-value")).await;
    assert_eq!(reader_subject_before, after);
    let versions: serde_json::Value = reqwest::get(format!(
        "{}/subjects/{cleaned}-value/versions",
        registry_support::registry_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(versions.as_array().map(Vec::len), Some(1), "{versions}");
}

#[tokio::test]
async fn score_alone_leaves_the_input_subject_unregistered() {
    registry_support::require_registry().await;
    let mut cfg = common::test_config("reg_reader_only");
    cfg.kafka.schema_registry_url = Some(registry_support::registry_url());
    cfg.score = Some(score_config());
    score_topics(&cfg).await;
    let shutdown = CancellationToken::new();
    let stage = common::spawn_score(&cfg, &shutdown);
    let scored = cfg.topics.name(TopicRole::Scored);
    assert!(
        wait_for_subject(&format!("{scored}-value"), Duration::from_secs(60))
            .await
            .is_some(),
        "score never registered {scored}-value"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.cancel();
    stage.await.unwrap().unwrap();
    let cleaned = cfg.topics.name(TopicRole::Cleaned);
    assert_eq!(
        registry_support::latest(&format!("{cleaned}-value")).await,
        None,
        "score registered its input subject {cleaned}-value: readers must only look ids up"
    );
}

#[tokio::test]
async fn sink_codec_registers_nothing() {
    registry_support::require_registry().await;
    let mut cfg = common::test_config("reg_sink_reader");
    cfg.kafka.schema_registry_url = Some(registry_support::registry_url());
    let (_, decoder) = etl_pipe::stages::sinks::load_codec(&cfg.common(), &cfg.sink)
        .await
        .unwrap();
    let scored = cfg.topics.name(TopicRole::Scored);
    assert_eq!(
        registry_support::latest(&format!("{scored}-value")).await,
        None,
        "the sink registered {scored}-value: readers must only look ids up"
    );
    // It still decodes Confluent-framed data by id (cleaned records read as scored: the
    // fields scored adds have defaults).
    let writer = Codec::writer(
        &cfg.kafka,
        cleaned_schema(),
        &cfg.topics.name(TopicRole::Cleaned),
    )
    .await
    .unwrap();
    let bytes = writer.encode(&entry(1)).unwrap();
    let back = decoder.decode_slow(&bytes).await.unwrap();
    assert_eq!(back.get("summoner_id"), entry(1).get("summoner_id"));
    assert_eq!(back.get("league_points"), entry(1).get("league_points"));
}

#[tokio::test]
async fn an_id_the_registry_did_not_know_is_asked_again_later() {
    registry_support::require_registry().await;
    let proxy = Proxy::start().await;
    let mut cfg = common::test_config("reg_404");
    cfg.kafka.schema_registry_url = Some(proxy.url());
    let topic = cfg.topics.name(TopicRole::Cleaned);
    let writer = Codec::writer(&cfg.kafka, cleaned_schema(), &topic)
        .await
        .unwrap();
    let Framing::Confluent { schema_id } = writer.framing() else {
        panic!("a writer with a registry frames Confluent");
    };
    let bytes = writer.encode(&entry(7)).unwrap();

    // A registry that does not know the id (restored from an older backup, a lagging replica).
    proxy.set_mode(Mode::IdsNotFound);
    let reader = Codec::reader(&cfg.kafka, cleaned_schema())
        .unwrap()
        .with_not_found_retry(Duration::from_secs(2));
    let e = reader.decode_async(&bytes).await.unwrap_err();
    assert!(
        matches!(e, CodecError::UnknownSchemaId { id, .. } if id == schema_id),
        "{e}"
    );
    assert!(!e.is_retriable(), "a 404 is poison: {e}");
    assert_eq!(proxy.id_lookups(), 1);

    // The registry knows it again; within the retry period the answer is cached ...
    proxy.set_mode(Mode::Forward);
    let e = reader.decode_async(&bytes).await.unwrap_err();
    assert!(matches!(e, CodecError::UnknownSchemaId { .. }), "{e}");
    assert_eq!(proxy.id_lookups(), 1, "no lookup within the retry period");
    // ... and after it the id is asked again and the record decodes.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let back = reader.decode_async(&bytes).await.unwrap();
    assert_eq!(back, entry(7));
    assert_eq!(proxy.id_lookups(), 2);
    // From now on it is cached for good.
    reader.decode_async(&bytes).await.unwrap();
    assert_eq!(proxy.id_lookups(), 2);

    // Against the real registry directly: an id it never gave is poison, naming the id.
    let direct = {
        let mut k = cfg.kafka.clone();
        k.schema_registry_url = Some(registry_support::registry_url());
        Codec::reader(&k, cleaned_schema()).unwrap()
    };
    let mut unknown = bytes.clone();
    unknown[1..5].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
    let e = direct.decode_async(&unknown).await.unwrap_err();
    assert!(!e.is_retriable(), "{e}");
    assert!(e.to_string().contains(&0x7fff_fff0u32.to_string()), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_outage_mid_stream_is_waited_out_and_nothing_is_dead_lettered() {
    registry_support::require_registry().await;
    let proxy = Proxy::start().await;
    // The checks the score stage requires (observability::init sets them in the binary).
    etl_pipe::observability::health()
        .require(etl_pipe::observability::Check::defaults_for("score"));
    let mut cfg = common::test_config("reg_outage");
    cfg.kafka.schema_registry_url = Some(proxy.url());
    cfg.score = Some(score_config());
    score_topics(&cfg).await;
    let cleaned = cfg.topics.name(TopicRole::Cleaned);
    let scored = cfg.topics.name(TopicRole::Scored);
    let quarantine = cfg.topics.name(TopicRole::Quarantine);
    let dead_letter = cfg.topics.name(TopicRole::DeadLetter);

    let shutdown = CancellationToken::new();
    let stage = common::spawn_score(&cfg, &shutdown);
    assert!(
        wait_for_subject(&format!("{scored}-value"), Duration::from_secs(60))
            .await
            .is_some(),
        "score never started"
    );
    // The registry goes away; records written with a schema id score has never seen arrive.
    proxy.set_mode(Mode::Unavailable);
    let mut direct = cfg.kafka.clone();
    direct.schema_registry_url = Some(registry_support::registry_url());
    let writer = Codec::writer(&direct, cleaned_schema(), &cleaned)
        .await
        .unwrap();
    produce(&cleaned, &writer, 0..300).await;

    // While it is away: nothing out, nothing dead-lettered, readiness names the registry.
    let lookups_before = proxy.id_lookups();
    let mut saw_unready = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let r = etl_pipe::observability::health().readiness();
        if !r.registry_reachable {
            saw_unready = true;
            if proxy.id_lookups() >= lookups_before + 2 {
                break;
            }
        }
    }
    assert!(saw_unready, "readiness never reported the registry outage");
    assert!(etl_pipe::observability::health()
        .readiness()
        .missing
        .contains(&"schema-registry"),);
    assert!(
        proxy.id_lookups() >= 2,
        "score did not retry the lookup: {}",
        proxy.id_lookups()
    );
    let during = tokio::task::block_in_place(|| {
        registry_support::read_until(
            &[scored.clone(), quarantine.clone(), dead_letter.clone()],
            Duration::from_secs(3),
            |_| false,
        )
    });
    assert!(
        during.is_empty(),
        "{} messages written during the outage (topics: {:?})",
        during.len(),
        during
            .iter()
            .map(|m| m.topic().to_string())
            .collect::<Vec<_>>()
    );

    // Back: every record comes out, none dead-lettered.
    proxy.set_mode(Mode::Forward);
    let out = tokio::task::block_in_place(|| {
        registry_support::read_until(
            &[scored.clone(), quarantine.clone()],
            Duration::from_secs(120),
            |m| m.len() >= 300,
        )
    });
    shutdown.cancel();
    stage.await.unwrap().unwrap();
    assert_eq!(out.len(), 300);
    let dl = tokio::task::block_in_place(|| {
        registry_support::read_until(
            std::slice::from_ref(&dead_letter),
            Duration::from_secs(3),
            |_| false,
        )
    });
    assert!(dl.is_empty(), "{} dead letters", dl.len());
    assert!(
        etl_pipe::observability::health()
            .readiness()
            .registry_reachable
    );
}

/// The cleaned schema with one more field (`extra`, given as its JSON).
fn cleaned_plus(extra: &str) -> etl_pipe::record::RecordSchema {
    let mut j: serde_json::Value = serde_json::from_str(&cleaned_schema().source).unwrap();
    j["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::from_str(extra).unwrap());
    etl_pipe::record::RecordSchema::parse(&j.to_string()).unwrap()
}

#[tokio::test]
async fn an_incompatible_schema_stops_the_writer_naming_subject_and_field() {
    registry_support::require_registry().await;
    let mut cfg = common::test_config("reg_incompatible");
    cfg.kafka.schema_registry_url = Some(registry_support::registry_url());
    let topic = cfg.topics.name(TopicRole::Cleaned);
    let subject = format!("{topic}-value");
    Codec::writer(&cfg.kafka, cleaned_schema(), &topic)
        .await
        .unwrap();
    registry_support::set_level(&subject, "BACKWARD").await;

    // A required field added without a default: new readers cannot read old data.
    let e = Codec::writer(
        &cfg.kafka,
        cleaned_plus(r#"{"name":"region","type":"string"}"#),
        &topic,
    )
    .await
    .unwrap_err();
    assert!(!e.is_retriable(), "{e}");
    let m = e.to_string();
    assert!(m.contains(&subject), "{m}");
    assert!(m.contains("field `region` added without a default"), "{m}");
    assert!(m.contains("BACKWARD"), "{m}");

    // With a default it is compatible and registers.
    Codec::writer(
        &cfg.kafka,
        cleaned_plus(r#"{"name":"region","type":"string","default":"EUW"}"#),
        &topic,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn score_stops_at_start_up_when_the_registry_refuses_its_output_schema() {
    registry_support::require_registry().await;
    let mut cfg = common::test_config("reg_incompatible_stage");
    cfg.kafka.schema_registry_url = Some(registry_support::registry_url());
    cfg.score = Some(score_config());
    score_topics(&cfg).await;
    let scored = cfg.topics.name(TopicRole::Scored);
    let subject = format!("{scored}-value");
    // Someone registered a scored schema whose `league_points` is a string.
    let mut j: serde_json::Value = serde_json::from_str(
        &load_schema(format!("{SCHEMAS}/league_entry.scored.avsc"))
            .unwrap()
            .source,
    )
    .unwrap();
    for f in j["fields"].as_array_mut().unwrap() {
        if f["name"] == "league_points" {
            f["type"] = "string".into();
        }
    }
    registry_support::register(&subject, &j.to_string()).await;
    registry_support::set_level(&subject, "BACKWARD").await;

    let shutdown = CancellationToken::new();
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        common::spawn_score(&cfg, &shutdown),
    )
    .await
    .expect("score stops at once, it does not wait for the registry to change its mind")
    .unwrap();
    let m = result.unwrap_err().to_string();
    assert!(m.contains(&subject), "{m}");
    assert!(
        m.contains("field `league_points` changed from string to int"),
        "{m}"
    );
}

#[tokio::test]
async fn topics_apply_sets_the_compatibility_of_the_avro_subjects() {
    registry_support::require_registry().await;
    common::require_kafka();
    let cfg = common::test_config("reg_apply");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_etl-pipe"));
    cmd.args(["topics", "apply"])
        .env("ETL__KAFKA__BROKERS", common::kafka_brokers())
        .env(
            "ETL__KAFKA__SCHEMA_REGISTRY_URL",
            registry_support::registry_url(),
        )
        .env("ETL__TOPICS__PARTITIONS", "1")
        .env("ETL_MYSQL_PASSWORD", "x");
    for role in TopicRole::ALL {
        cmd.env(
            format!("ETL__TOPICS__{}__NAME", role.key().to_uppercase()),
            cfg.topics.name(role),
        );
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for role in [TopicRole::Cleaned, TopicRole::Scored] {
        let subject = format!("{}-value", cfg.topics.name(role));
        assert_eq!(
            registry_support::subject_level(&subject).await.as_deref(),
            Some("BACKWARD"),
            "{subject}"
        );
        assert!(stdout.contains(&subject), "{stdout}");
    }
    // Not the JSON topics.
    let raw = format!("{}-value", cfg.topics.name(TopicRole::Raw));
    assert_eq!(registry_support::subject_level(&raw).await, None);

    // Another level, from the config key.
    let out = cmd
        .env(
            "ETL__KAFKA__SCHEMA_REGISTRY_COMPATIBILITY",
            "FULL_TRANSITIVE",
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    let subject = format!("{}-value", cfg.topics.name(TopicRole::Cleaned));
    assert_eq!(
        registry_support::subject_level(&subject).await.as_deref(),
        Some("FULL_TRANSITIVE")
    );
    // A level the registry does not have is refused at load, naming the key.
    let out = cmd
        .env("ETL__KAFKA__SCHEMA_REGISTRY_COMPATIBILITY", "SOMETIMES")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kafka.schema_registry_compatibility"), "{err}");
}

#[tokio::test]
async fn credentials_go_as_basic_auth_from_their_keys() {
    registry_support::require_registry().await;
    let proxy = Proxy::start().await;
    let var = "ETL_TEST_REGISTRY_PASSWORD_REG_AUTH";
    std::env::set_var(var, "s3cret-pw");
    let mut cfg = common::test_config("reg_auth");
    cfg.kafka.schema_registry_url = Some(proxy.url());
    cfg.kafka.schema_registry_user = Some("etl-user".into());
    cfg.kafka.schema_registry_password = Some(SecretRef::from_env(var));
    cfg.validate().unwrap();
    let topic = cfg.topics.name(TopicRole::Cleaned);
    Codec::writer(&cfg.kafka, cleaned_schema(), &topic)
        .await
        .unwrap();
    // base64("etl-user:s3cret-pw")
    assert_eq!(
        proxy.auth_headers(),
        vec!["Basic ZXRsLXVzZXI6czNjcmV0LXB3".to_string()]
    );
    // The password's variable unset: the error names the key, not a value.
    std::env::remove_var(var);
    let e = Codec::writer(&cfg.kafka, cleaned_schema(), &topic)
        .await
        .unwrap_err();
    assert!(!e.is_retriable(), "{e}");
    assert!(
        e.to_string().contains("kafka.schema_registry_password"),
        "{e}"
    );
}
