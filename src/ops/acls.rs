//! `etl-pipe acls`: exactly what each stage may do, one principal per stage. The Kafka ACLs
//! (topics read and written, consumer groups, transactional ids, idempotent writes), printed
//! and, with `--execute`, created by the admin API; and the database grants of each sink,
//! printed for a database administrator to run.
use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{Config, TopicRole};
use crate::kafka::acls::{self, AclBinding, Operation, Pattern, Resource};

/// The stages, in pipeline order.
pub const STAGES: [&str; 5] = ["extract", "clean", "score", "sink-mysql", "sink-mongo"];

/// Each stage's Kafka principal: `User:etl-<stage>` unless `overrides` names another
/// (`stage=User:name`, or `stage=name`).
pub fn principals(overrides: &[String]) -> Result<BTreeMap<&'static str, String>, String> {
    let mut out: BTreeMap<&'static str, String> = STAGES
        .iter()
        .map(|s| (*s, format!("User:etl-{s}")))
        .collect();
    for o in overrides {
        let (stage, p) = o
            .split_once('=')
            .ok_or_else(|| format!("--principal `{o}`: expected STAGE=PRINCIPAL"))?;
        let key = STAGES.iter().find(|s| **s == stage).ok_or_else(|| {
            format!(
                "--principal `{o}`: unknown stage `{stage}` (one of {})",
                STAGES.join(", ")
            )
        })?;
        let p = if p.contains(':') {
            p.to_string()
        } else {
            format!("User:{p}")
        };
        out.insert(key, p);
    }
    Ok(out)
}

/// What `stage` needs: (resource, name, pattern, operations). Read and Write imply Describe.
fn needs(cfg: &Config, stage: &str) -> Vec<(Resource, String, Pattern, Vec<Operation>)> {
    use Operation::{Describe, DescribeConfigs, IdempotentWrite, Read, Write};
    let t = |r: TopicRole| cfg.topics.name(r);
    let p = &cfg.pipeline;
    // A topic written is also described (its max.message.bytes caps what is sent).
    let topic = |r: TopicRole, mut ops: Vec<Operation>| {
        if ops.contains(&Write) {
            ops.push(DescribeConfigs);
        }
        (Resource::Topic, t(r), Pattern::Literal, ops)
    };
    let group = |g: String| (Resource::Group, g, Pattern::Literal, vec![Read]);
    // Every stage ships its log lines to the logs topic and may dead-letter (idempotent producers).
    let mut v = vec![
        topic(TopicRole::Logs, vec![Write]),
        topic(TopicRole::DeadLetter, vec![Write]),
        (
            Resource::Cluster,
            "kafka-cluster".into(),
            Pattern::Literal,
            vec![IdempotentWrite],
        ),
    ];
    // Transactional ids: extract's is one per source; clean's and score's end in the instance id.
    let txn = |name: String, pattern| {
        (
            Resource::TransactionalId,
            name,
            pattern,
            vec![Write, Describe],
        )
    };
    match stage {
        "extract" => v.extend([
            topic(TopicRole::Raw, vec![Write]),
            // Checkpoints: written in the transaction, read back at start (assigned, no commits).
            topic(TopicRole::ExtractState, vec![Read, Write]),
            group(p.group_id("extract-state")),
            txn(
                format!("{}.extract.{}", p.name, cfg.extract.source),
                Pattern::Literal,
            ),
        ]),
        "clean" => v.extend([
            topic(TopicRole::Raw, vec![Read]),
            group(p.group_id("clean")),
            topic(TopicRole::Cleaned, vec![Write]),
            txn(format!("{}.clean.", p.name), Pattern::Prefixed),
        ]),
        "score" => v.extend([
            topic(TopicRole::Cleaned, vec![Read]),
            group(p.group_id("score")),
            topic(TopicRole::Scored, vec![Write]),
            topic(TopicRole::Quarantine, vec![Write]),
            topic(TopicRole::Quality, vec![Write]),
            // The baseline store: read from the start, written once (assigned, no commits).
            topic(TopicRole::ScoreBaseline, vec![Read, Write]),
            group(format!("{}.baseline-reader", p.group_id("score"))),
            txn(format!("{}.score.", p.name), Pattern::Prefixed),
        ]),
        // The sinks read with their consumer group (partition assignment; sink-mongo also
        // commits its offsets there, sink-mysql keeps them in MySQL).
        s => v.extend([topic(TopicRole::Scored, vec![Read]), group(p.group_id(s))]),
    }
    v
}

/// The ACL bindings of every stage, by stage.
pub fn kafka_acls(
    cfg: &Config,
    principals: &BTreeMap<&'static str, String>,
) -> Vec<(&'static str, Vec<AclBinding>)> {
    STAGES
        .iter()
        .map(|stage| {
            let principal = &principals[stage];
            let mut list: Vec<AclBinding> = needs(cfg, stage)
                .into_iter()
                .flat_map(|(resource, name, pattern, ops)| {
                    ops.into_iter().map(move |operation| AclBinding {
                        principal: principal.clone(),
                        resource,
                        name: name.clone(),
                        pattern,
                        operation,
                    })
                })
                .collect();
            list.sort();
            list.dedup();
            (*stage, list)
        })
        .collect()
}

/// The MySQL sink's grants (SQL). `table` is the rows' table.
pub fn mysql_grants(cfg: &Config, table: &str, user: &str) -> String {
    let db = &cfg.mysql.database;
    let offsets = &cfg.sink.mysql.offsets_table;
    format!(
        "-- sink-mysql as {user}: its rows ({db}.{table}) and its offsets table ({db}.{offsets}),\n\
         -- updated in the same transaction. The offsets table is created if absent (CREATE); the\n\
         -- rows' table is created if absent and gets new nullable columns (CREATE, ALTER).\n\
         GRANT SELECT, INSERT, UPDATE, CREATE, ALTER ON `{db}`.`{table}` TO {user};\n\
         GRANT SELECT, INSERT, UPDATE, CREATE ON `{db}`.`{offsets}` TO {user};\n\
         -- Without DDL rights: create both tables once as an administrator (run the sink once\n\
         -- with the grants above, or copy SHOW CREATE TABLE from a test database), then grant\n\
         -- only SELECT, INSERT, UPDATE on both; the sink then creates nothing and alters nothing\n\
         -- (a new schema field then needs an ALTER TABLE by hand before the sink restarts).\n\
         -- `etl-pipe replay --stage sink-mysql` moves the offsets table: run it as an operator\n\
         -- with the same rights on {db}.{offsets}.\n"
    )
}

/// The MongoDB sink's role and user (mongosh).
pub fn mongo_grants(cfg: &Config, collection: &str) -> String {
    let db = &cfg.mongo.database;
    format!(
        "// sink-mongo: find (the versions of existing documents), insert and update ({db}.{collection}).\n\
         use {db}\n\
         db.createRole({{ role: \"etl_sink_mongo\", roles: [], privileges: [\n\
         \x20 {{ resource: {{ db: \"{db}\", collection: \"{collection}\" }}, actions: [\"find\", \"insert\", \"update\"] }} ] }})\n\
         // The user lives in `admin`, where the sink authenticates (the driver's default\n\
         // auth source; or set `authSource` in mongo.uri), with the role of {db}.\n\
         db.getSiblingDB(\"admin\").createUser({{ user: \"etl_sink_mongo\", pwd: passwordPrompt(), roles: [{{ role: \"etl_sink_mongo\", db: \"{db}\" }}] }})\n"
    )
}

/// The whole printout: Kafka ACLs per stage, then the database grants.
pub fn render(acls: &[(&'static str, Vec<AclBinding>)], mysql: &str, mongo: &str) -> String {
    let mut out = String::from(
        "# Kafka ACLs: one principal per stage, ALLOW from any host (Read and Write imply Describe;\n\
         # DESCRIBE_CONFIGS on a written topic: its max.message.bytes caps what is sent).\n\
         # Anything not listed is denied once the cluster has an authorizer and\n\
         # allow.everyone.if.no.acl.found=false. `topics apply`, `replay` and `redrive` are\n\
         # operator commands: run them as an administrator.\n",
    );
    for (stage, list) in acls {
        out.push_str(&format!("\n## {stage}\n"));
        for a in list {
            out.push_str(&acls::render(a));
            out.push('\n');
        }
    }
    out.push_str("\n# MySQL / MariaDB\n");
    out.push_str(mysql);
    out.push_str("\n# MongoDB\n");
    out.push_str(mongo);
    out
}

/// Creates every stage's ACLs with the admin API, as the configured Kafka principal (an
/// administrator: it needs ALTER on the cluster).
pub fn execute(
    cfg: &Config,
    acls: &[(&'static str, Vec<AclBinding>)],
) -> Result<usize, acls::AclError> {
    let all: Vec<AclBinding> = acls.iter().flat_map(|(_, l)| l.iter().cloned()).collect();
    acls::create_acls(&cfg.kafka, &all, Duration::from_secs(30))?;
    Ok(all.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(cfg: &Config, stage: &str) -> Vec<String> {
        let p = principals(&["sink-mongo=svc-mongo".into()]).unwrap();
        kafka_acls(cfg, &p)
            .into_iter()
            .find(|(s, _)| *s == stage)
            .unwrap()
            .1
            .iter()
            .map(|a| {
                acls::render(a)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn the_mongo_user_is_made_where_the_sink_authenticates_with_the_role_of_its_database() {
        let cfg = Config::default();
        let g = mongo_grants(&cfg, "league_entry");
        let db = &cfg.mongo.database;
        assert!(g.contains(&format!("use {db}\ndb.createRole(")), "{g}");
        // The sink's credential has no auth source of its own: the driver's default, `admin`.
        assert!(
            g.contains(&format!(
                "db.getSiblingDB(\"admin\").createUser({{ user: \"etl_sink_mongo\", pwd: passwordPrompt(), roles: [{{ role: \"etl_sink_mongo\", db: \"{db}\" }}] }})"
            )),
            "{g}"
        );
    }

    #[test]
    fn each_stage_gets_exactly_its_topics_groups_and_transactional_ids() {
        let mut cfg = Config::default();
        cfg.pipeline.name = "p".into();
        let clean = lines(&cfg, "clean");
        let raw = cfg.topics.name(TopicRole::Raw);
        let cleaned = cfg.topics.name(TopicRole::Cleaned);
        for want in [
            format!("ALLOW User:etl-clean READ TOPIC LITERAL {raw}"),
            format!("ALLOW User:etl-clean WRITE TOPIC LITERAL {cleaned}"),
            "ALLOW User:etl-clean READ GROUP LITERAL p.clean".into(),
            "ALLOW User:etl-clean WRITE TRANSACTIONAL_ID PREFIXED p.clean.".into(),
            "ALLOW User:etl-clean IDEMPOTENT_WRITE CLUSTER LITERAL kafka-cluster".into(),
        ] {
            assert!(clean.contains(&want), "{want} not in {clean:#?}");
        }
        // clean never writes raw nor reads what it writes.
        assert!(!clean
            .iter()
            .any(|l| l.contains("WRITE TOPIC") && l.ends_with(&raw)));
        assert!(!clean
            .iter()
            .any(|l| l.contains("READ TOPIC") && l.ends_with(&cleaned)));
        let mongo = lines(&cfg, "sink-mongo");
        assert!(mongo.iter().all(|l| l.starts_with("ALLOW User:svc-mongo ")));
        assert!(!mongo.iter().any(|l| l.contains("TRANSACTIONAL_ID")));
        let extract = lines(&cfg, "extract");
        assert!(extract.contains(&format!(
            "ALLOW User:etl-extract WRITE TRANSACTIONAL_ID LITERAL p.extract.{}",
            cfg.extract.source
        )));
        assert!(principals(&["nope=x".into()])
            .unwrap_err()
            .contains("unknown stage"));
    }
}
