//! Kafka plumbing shared by every stage: client configs (idempotent and transactional
//! producers, read-committed consumers), the header names the pipeline uses, the
//! dead-letter envelope, topic management (`topics apply`), and the exactly-once
//! consume–transform–produce loop ([`eos`]).
pub mod access;
pub mod acls;
pub mod eos;
pub mod headers;
pub mod partitioner;
pub mod reader;
pub mod topics;

use rdkafka::ClientConfig;

use crate::settings::KafkaConfig;

/// Base client config: bootstrap servers plus the raw `client_options` pass-through (secret
/// options resolved here; [`KafkaConfig::check_secrets`] at start-up makes a missing one fail
/// early, naming the key).
pub fn base_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.client_options {
        match v.resolve(k) {
            Ok(v) => {
                c.set(k, v);
            }
            Err(e) => tracing::error!(error = %e, "a Kafka client option is missing"),
        }
    }
    c
}

/// Memory bounds for producers: librdkafka's default lets a producer queue up to 1 GiB
/// while the broker is slower than the stage. `kafka.client_options` overrides each value.
pub const PRODUCER_MEMORY_DEFAULTS: &[(&str, &str)] = &[("queue.buffering.max.kbytes", "16384")];

/// Memory and latency bounds for consumers. librdkafka's defaults pre-fetch up to 64 MiB and
/// at least 100 000 messages per partition, and fetches may return 50 MiB: under a backlog
/// that alone is several times the memory a stage needs. A partition is not fetched while the
/// consumer's queue holds 2 000 messages or 4 MiB (librdkafka compares the queue the partition
/// forwards to, i.e. the whole consumer's; each message keeps its whole decompressed batch
/// alive: at 10 000 heaptrack showed 12.6 MiB of lz4 buffers in sink-mongo); a few thousand
/// league records still keep every stage busy (same throughput measured with 10 000).
/// `fetch.queue.backoff.ms` is how long such a partition then waits before it is considered
/// again: librdkafka's 1 s default turned every burst (a quality window closing in score) into
/// a 1 s pause for the next stage, batches of a second's records and p99 up to 1.9 s end to
/// end. `fetch.wait.max.ms` bounds how long an idle fetch waits on the broker. A partition's
/// fetch brings at most 256 KiB (librdkafka: 1 MiB): the queue caps above count messages, but
/// a fetch is decompressed whole before they are counted, and heaptrack on score under a
/// backlog found 20 MiB of decompressed fetches and 7 MiB of receive buffers at its peak
/// (score 51–70 MiB RSS at 43–48 k records/s; 38.5–39.6 MiB with 256 KiB at the same rate;
/// the sinks' consumers had it already). `kafka.client_options` overrides each.
pub const CONSUMER_MEMORY_DEFAULTS: &[(&str, &str)] = &[
    ("queued.max.messages.kbytes", "4096"),
    ("queued.min.messages", "2000"),
    ("fetch.queue.backoff.ms", "20"),
    ("fetch.max.bytes", "2097152"),
    ("max.partition.fetch.bytes", "262144"),
    ("fetch.wait.max.ms", "100"),
];

/// Sets each default unless `kafka.client_options` names the key: the user's setting wins.
pub fn set_defaults(c: &mut ClientConfig, cfg: &KafkaConfig, defaults: &[(&str, &str)]) {
    for (k, v) in defaults {
        if !cfg.client_options.contains_key(*k) {
            c.set(*k, *v);
        }
    }
}

/// An idempotent producer: acks=all, no duplicates or reordering on retry.
pub fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = base_config(cfg);
    set_defaults(&mut c, cfg, PRODUCER_MEMORY_DEFAULTS);
    // Batching: a few ms of linger buys large batches at high rates; lz4 is cheap on CPU.
    // Never give up on a record because the broker is away for a while.
    set_defaults(
        &mut c,
        cfg,
        &[
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
            ("message.timeout.ms", "0"),
            // One partitioner for every topic: a key's partition number is the same in raw,
            // cleaned and scored (same partition counts), which `etl-pipe trace` relies on.
            ("partitioner", partitioner::PARTITIONER),
        ],
    );
    c.set("enable.idempotence", "true").set("acks", "all");
    c
}

/// A transactional producer for consume-transform-produce stages.
pub fn transactional_producer_config(cfg: &KafkaConfig, transactional_id: &str) -> ClientConfig {
    let mut c = producer_config(cfg);
    c.set("transactional.id", transactional_id)
        .set(
            "transaction.timeout.ms",
            cfg.transaction_timeout.as_millis().to_string(),
        )
        // With transactions librdkafka requires a finite delivery timeout below the txn timeout.
        .set(
            "message.timeout.ms",
            cfg.transaction_timeout.as_millis().to_string(),
        );
    c
}

/// A consumer that commits nothing by itself and reads only committed transactional data.
pub fn consumer_config(cfg: &KafkaConfig, group_id: &str) -> ClientConfig {
    let mut c = base_config(cfg);
    set_defaults(&mut c, cfg, CONSUMER_MEMORY_DEFAULTS);
    // Heartbeats well inside the session (librdkafka's default is 3 s for a 45 s session).
    let session_ms = cfg.session_timeout.as_millis();
    let heartbeat_ms = (session_ms / 3).clamp(100, 3000);
    set_defaults(
        &mut c,
        cfg,
        &[
            ("session.timeout.ms", &session_ms.to_string()),
            ("heartbeat.interval.ms", &heartbeat_ms.to_string()),
        ],
    );
    c.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky");
    c
}

/// Why [`partitions`] found no partitions to read.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The broker did not answer (retriable).
    #[error("metadata of topic {topic}: {source}")]
    Kafka {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
    /// The topic does not exist (or has no partitions): a person must create it.
    #[error("topic {0} does not exist; create the pipeline's topics with `etl-pipe topics apply`")]
    NoTopic(String),
}

/// The partition ids of `topic`, sorted: the one topic-metadata lookup every stage, operation
/// and tool uses.
pub fn partitions<C: rdkafka::client::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: std::time::Duration,
) -> Result<Vec<i32>, MetadataError> {
    let md = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|source| MetadataError::Kafka {
            topic: topic.to_string(),
            source,
        })?;
    let mut ids: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if ids.is_empty() {
        return Err(MetadataError::NoTopic(topic.to_string()));
    }
    ids.sort_unstable();
    Ok(ids)
}

/// The low and high watermarks of `topic`/`partition` as the last fetch response reported
/// them (librdkafka's cache; no request, never blocks), or `None` before any fetch. rust-rdkafka
/// only wraps the querying variant, so this calls `rd_kafka_get_watermark_offsets` itself.
pub fn cached_watermarks<C: rdkafka::client::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the client's lifetime, `topic` is a
    // NUL-terminated string that outlives the call, and the out-pointers are to locals;
    // librdkafka only reads its partition cache under its own lock.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            client.native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some((low, high))
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::BaseProducer;

    use super::*;
    use crate::settings::{ClientOption, SecretRef};

    fn create(options: &[(&str, &str)]) -> Result<BaseProducer, String> {
        let mut cfg = KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            ..Default::default()
        };
        for (k, v) in options {
            cfg.client_options
                .insert((*k).into(), ClientOption::Value((*v).into()));
        }
        // The password as a real deployment gives it: a secret reference.
        std::env::set_var("ETL_KAFKA_MOD_TEST_PASSWORD", "p");
        cfg.client_options.insert(
            "sasl.password".into(),
            ClientOption::Secret(SecretRef::from_env("ETL_KAFKA_MOD_TEST_PASSWORD")),
        );
        cfg.validate().map_err(|e| e.to_string())?;
        producer_config(&cfg).create().map_err(|e| e.to_string())
    }

    #[test]
    fn tls_and_every_sasl_mechanism_we_document_are_built_in() {
        // Before librdkafka was built with OpenSSL: "OpenSSL not available at build time" and
        // "No provider for SASL mechanism SCRAM-SHA-512 ... Current build options: PLAIN".
        create(&[("security.protocol", "SSL")]).unwrap();
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] {
            for protocol in ["SASL_SSL", "SASL_PLAINTEXT"] {
                create(&[
                    ("security.protocol", protocol),
                    ("sasl.mechanism", mechanism),
                    ("sasl.username", "u"),
                ])
                .unwrap_or_else(|e| panic!("{protocol} {mechanism}: {e}"));
            }
        }
    }

    #[test]
    fn oidc_token_retrieval_is_not_built_in() {
        // OAUTHBEARER with librdkafka fetching tokens itself (OIDC) needs libcurl, which this
        // build leaves out; the error says so at start-up rather than at the first connection.
        let e = create(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "OAUTHBEARER"),
            ("sasl.oauthbearer.method", "oidc"),
        ])
        .err()
        .expect("oidc without libcurl is refused");
        assert!(e.contains("oidc") || e.contains("curl"), "{e}");
    }

    #[test]
    fn consumers_fetch_a_quarter_mib_per_partition_unless_told_otherwise() {
        let mut cfg = KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            ..Default::default()
        };
        let fetch = |cfg: &KafkaConfig| {
            consumer_config(cfg, "g")
                .get("max.partition.fetch.bytes")
                .map(str::to_owned)
        };
        assert_eq!(fetch(&cfg).as_deref(), Some("262144"));
        cfg.client_options.insert(
            "max.partition.fetch.bytes".into(),
            ClientOption::Value("1048576".into()),
        );
        assert_eq!(fetch(&cfg).as_deref(), Some("1048576"));
    }
}
