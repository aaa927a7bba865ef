//! The sink-mysql half of `replay`: the sink resumes from the offsets it stores in MySQL (in
//! the same transaction as the rows), so moving only the Kafka group would change nothing.
//! Reads that table, and rewrites it for every replayed partition in one transaction.
use std::collections::BTreeMap;

use super::replay::{Plan, ReplayError, Stage};
use crate::config::Config;
use crate::stages::sinks::mysql;

fn err(e: impl std::fmt::Display) -> ReplayError {
    ReplayError::Mysql(e.to_string())
}

/// The positions sink-mysql resumes from (`None` for other stages).
pub async fn current(
    cfg: &Config,
    stage: Stage,
) -> Result<Option<BTreeMap<i32, i64>>, ReplayError> {
    if stage != Stage::SinkMysql {
        return Ok(None);
    }
    let pool = mysql::connect(&cfg.mysql, 1).await.map_err(err)?;
    mysql::ensure_offsets_table(&pool, &cfg.sink.mysql.offsets_table)
        .await
        .map_err(err)?;
    let stored = mysql::stored_offsets(
        &pool,
        &cfg.sink.mysql.offsets_table,
        &cfg.pipeline.group_id(stage.name()),
        &cfg.topics.name(stage.input()),
    )
    .await
    .map_err(err)?;
    Ok(Some(stored.into_iter().collect()))
}

/// Writes the plan's targets into the offsets table, all partitions in one transaction.
pub async fn apply(cfg: &Config, plan: &Plan) -> Result<(), ReplayError> {
    if plan.stage != Stage::SinkMysql {
        return Ok(());
    }
    let table = &cfg.sink.mysql.offsets_table;
    if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ReplayError::Invalid(format!(
            "sink.mysql.offsets_table `{table}` is not a plain table name"
        )));
    }
    let pool = mysql::connect(&cfg.mysql, 1).await.map_err(err)?;
    mysql::ensure_offsets_table(&pool, table)
        .await
        .map_err(err)?;
    let targets = plan.partitions.iter().map(|p| (p.partition, p.target));
    mysql::store_offsets(&pool, table, &plan.group, &plan.topic, targets)
        .await
        .map_err(err)
}
