//! Kafka plumbing shared by every stage: client configs (idempotent and transactional
//! producers, read-committed consumers), the header names the pipeline uses, the
//! dead-letter envelope, topic management (`topics apply`), and the exactly-once
//! consume–transform–produce loop ([`eos`]).
pub mod eos;
pub mod headers;
pub mod topics;

use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// Base client config: bootstrap servers plus the raw `client_options` pass-through.
pub fn base_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.client_options {
        c.set(k, v);
    }
    c
}

/// An idempotent producer: acks=all, no duplicates or reordering on retry.
pub fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = base_config(cfg);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        // Batching: a few ms of linger buys large batches at high rates; lz4 is cheap on CPU.
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        // Never give up on a record because the broker is away for a while.
        .set("message.timeout.ms", "0");
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
    c.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky");
    c
}
