//! `etl-pipe topics apply`: create the pipeline's topics with their settings, and report —
//! never delete or alter — a topic that already exists with different settings.
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;

use crate::settings::{KafkaConfig, TopicSpec};

#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("kafka admin client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {message}")]
    Create { topic: String, message: String },
    #[error("{0}")]
    Other(String),
}

/// What `apply` found or did for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    Unchanged,
    /// Exists with other settings: one line per difference (`partitions: have 1, want 3`).
    Differs(Vec<String>),
}

fn admin(cfg: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>, TopicsError> {
    Ok(super::base_config(cfg).create()?)
}

/// Deletes topics (those that do not exist are skipped). For throwaway runs (`bench-e2e`, the
/// end-to-end test): nothing in the pipeline deletes a topic by itself.
pub async fn delete(cfg: &KafkaConfig, names: &[String]) -> Result<(), TopicsError> {
    let admin = admin(cfg)?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    for r in admin.delete_topics(&refs, &opts).await? {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => {
                return Err(TopicsError::Other(format!("deleting topic {name}: {code}")))
            }
        }
    }
    Ok(())
}

/// Creates missing topics and checks existing ones. Returns one outcome per spec, in order.
pub async fn apply(
    cfg: &KafkaConfig,
    specs: &[TopicSpec],
) -> Result<Vec<(TopicSpec, TopicOutcome)>, TopicsError> {
    let admin = admin(cfg)?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let metadata = match admin.inner().fetch_metadata(None, Duration::from_secs(15)) {
        Ok(m) => m,
        Err(e) => {
            // "Broker transport failure" says nothing: ask again, keeping librdkafka's reason.
            let c = cfg.clone();
            tokio::task::spawn_blocking(move || super::access::probe(&c, Duration::from_secs(10)))
                .await
                .map_err(|j| TopicsError::Other(j.to_string()))?
                .map_err(|r| TopicsError::Other(r.to_string()))?;
            return Err(e.into());
        }
    };

    let to_create: Vec<&TopicSpec> = specs
        .iter()
        .filter(|spec| existing(&metadata, &spec.name).is_none())
        .collect();
    create(&admin, &opts, &to_create).await?;

    // Outcomes from the metadata read before creating: what did not exist then was created.
    let mut out = Vec::new();
    for spec in specs {
        let outcome = match existing(&metadata, &spec.name) {
            None => TopicOutcome::Created,
            Some((partitions, rf)) => compare(&admin, &opts, spec, partitions, rf).await?,
        };
        out.push((spec.clone(), outcome));
    }
    Ok(out)
}

/// `(partitions, replication factor)` of topic `name`, if it exists.
fn existing(metadata: &Metadata, name: &str) -> Option<(i32, i32)> {
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == name)
        .map(|t| {
            let partitions = t.partitions().len() as i32;
            let rf = t
                .partitions()
                .first()
                .map(|p| p.replicas().len() as i32)
                .unwrap_or(0);
            (partitions, rf)
        })
}

/// Creates the topics of `specs` with their partitions, replication, cleanup policy and
/// retention.
async fn create(
    admin: &AdminClient<DefaultClientContext>,
    opts: &AdminOptions,
    specs: &[&TopicSpec],
) -> Result<(), TopicsError> {
    if specs.is_empty() {
        return Ok(());
    }
    let retentions: Vec<String> = specs.iter().map(|s| s.retention_ms().to_string()).collect();
    let new_topics: Vec<NewTopic> = specs
        .iter()
        .zip(&retentions)
        .map(|(s, r)| {
            NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(s.replication_factor),
            )
            .set("cleanup.policy", s.cleanup_policy.as_kafka())
            .set("retention.ms", r)
        })
        .collect();
    for result in admin.create_topics(&new_topics, opts).await? {
        match result {
            Ok(_) => {}
            // Another instance created it between our metadata fetch and now: fine.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(TopicsError::Create {
                    topic,
                    message: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// An existing topic against its spec: partitions and replication factor (from the metadata),
/// retention and cleanup policy (from its config).
async fn compare(
    admin: &AdminClient<DefaultClientContext>,
    opts: &AdminOptions,
    spec: &TopicSpec,
    partitions: i32,
    rf: i32,
) -> Result<TopicOutcome, TopicsError> {
    let mut diffs = Vec::new();
    if partitions != spec.partitions {
        diffs.push(format!(
            "partitions: have {partitions}, want {}",
            spec.partitions
        ));
    }
    if rf != spec.replication_factor {
        diffs.push(format!(
            "replication factor: have {rf}, want {}",
            spec.replication_factor
        ));
    }
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(&spec.name)], opts)
        .await?;
    if let Some(Ok(resource)) = described.into_iter().next() {
        let get = |k: &str| resource.get(k).and_then(|e| e.value.clone());
        let want_ret = spec.retention_ms().to_string();
        if let Some(have) = get("retention.ms") {
            if have != want_ret {
                diffs.push(format!("retention.ms: have {have}, want {want_ret}"));
            }
        }
        if let Some(have) = get("cleanup.policy") {
            if have != spec.cleanup_policy.as_kafka() {
                diffs.push(format!(
                    "cleanup.policy: have {have}, want {}",
                    spec.cleanup_policy.as_kafka()
                ));
            }
        }
    }
    Ok(if diffs.is_empty() {
        TopicOutcome::Unchanged
    } else {
        TopicOutcome::Differs(diffs)
    })
}
