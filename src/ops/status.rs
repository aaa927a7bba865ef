//! `etl-pipe status`: what is in each topic, how far behind each stage is and with how many
//! instances, the dead letters by stage and kind, the quarantine, the last quality decisions
//! with their reasons, and whether each stage's `/readyz` answers here — the command-line view
//! of what Kafdrop shows.
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;

use crate::config::{Config, TopicRole};

const TIMEOUT: Duration = Duration::from_secs(10);

/// One topic's size.
#[derive(Debug, Clone)]
pub struct TopicStatus {
    pub role: TopicRole,
    pub name: String,
    pub partitions: usize,
    /// Sum over partitions of (end − start): retained records, transaction markers included.
    pub offsets: i64,
    pub exists: bool,
}

/// One stage's consumer group.
#[derive(Debug, Clone)]
pub struct GroupStatus {
    pub stage: &'static str,
    pub group: String,
    pub topic: String,
    pub members: usize,
    /// The members' client ids and hosts (one per running instance).
    pub instances: Vec<String>,
    /// Sum over partitions of (end − committed); `None` when nothing was committed yet.
    pub lag: Option<i64>,
}

/// One window's quality decision (from the `quality` topic).
#[derive(Debug, Clone)]
pub struct Decision {
    /// When the report was written (its message's timestamp).
    pub closed_at: String,
    pub window: String,
    pub decision: String,
    pub reasons: String,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub topics: Vec<TopicStatus>,
    pub groups: Vec<GroupStatus>,
    /// Dead letters by (stage, kind), from the dead-letter topic's headers.
    pub dead_letters: Vec<((String, String), u64)>,
    /// Quarantined records and the windows they came from.
    pub quarantine: (u64, usize),
    /// The last few quality decisions, newest last.
    pub decisions: Vec<Decision>,
    /// Each stage's `/readyz` on this host at its default port: (stage, url, answer).
    pub health: Vec<(&'static str, String, String)>,
}

/// Quality decisions shown.
const DECISIONS: usize = 5;

/// The consuming stages, their group names and input topics.
pub const STAGES: [(&str, TopicRole); 4] = [
    ("clean", TopicRole::Raw),
    ("score", TopicRole::Cleaned),
    ("sink-mysql", TopicRole::Scored),
    ("sink-mongo", TopicRole::Scored),
];

pub fn collect(cfg: &Config) -> Result<Status, rdkafka::error::KafkaError> {
    let consumer: BaseConsumer =
        crate::kafka::consumer_config(&cfg.kafka, &format!("{}.status", cfg.pipeline.name))
            .create()?;
    let md = consumer.fetch_metadata(None, TIMEOUT)?;
    let mut topics = Vec::new();
    for role in TopicRole::ALL {
        let name = cfg.topics.name(role);
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none());
        let mut offsets = 0;
        let partitions = t.map(|t| t.partitions().len()).unwrap_or(0);
        if let Some(t) = t {
            for p in t.partitions() {
                let (lo, hi) = consumer.fetch_watermarks(&name, p.id(), TIMEOUT)?;
                offsets += hi - lo;
            }
        }
        topics.push(TopicStatus {
            role,
            name,
            partitions,
            offsets,
            exists: t.is_some(),
        });
    }
    let mut groups = Vec::new();
    for (stage, role) in STAGES {
        let group = cfg.pipeline.group_id(stage);
        let topic = cfg.topics.name(role);
        let list = consumer.fetch_group_list(Some(&group), TIMEOUT)?;
        let g = list.groups().iter().find(|g| g.name() == group);
        let members = g.map(|g| g.members().len()).unwrap_or(0);
        let instances: Vec<String> = g
            .map(|g| {
                g.members()
                    .iter()
                    .map(|m| {
                        format!(
                            "{}@{}",
                            m.client_id(),
                            m.client_host().trim_start_matches('/')
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Some(t) = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
        else {
            groups.push(GroupStatus {
                stage,
                group,
                topic,
                members,
                instances,
                lag: None,
            });
            continue;
        };
        let mut tpl = TopicPartitionList::new();
        for p in t.partitions() {
            tpl.add_partition(&topic, p.id());
        }
        let gc: BaseConsumer = crate::kafka::consumer_config(&cfg.kafka, &group).create()?;
        let committed = gc.committed_offsets(tpl, TIMEOUT)?;
        let mut lag = None;
        for p in t.partitions() {
            let (lo, hi) = consumer.fetch_watermarks(&topic, p.id(), TIMEOUT)?;
            let c = committed
                .find_partition(&topic, p.id())
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0);
            if let Some(c) = c {
                *lag.get_or_insert(0) += (hi - c.max(lo)).max(0);
            } else if hi > lo {
                *lag.get_or_insert(0) += hi - lo;
            }
        }
        groups.push(GroupStatus {
            stage,
            group,
            topic,
            members,
            instances,
            lag,
        });
    }
    let exists = |role: TopicRole| topics.iter().any(|t| t.role == role && t.exists);
    let reader = super::scan::reader(cfg, "status")?;
    let parts = |role: TopicRole| -> Vec<i32> {
        crate::kafka::partitions(reader.client(), &cfg.topics.name(role), TIMEOUT)
            .unwrap_or_default()
    };
    let mut dead: std::collections::BTreeMap<(String, String), u64> = Default::default();
    if exists(TopicRole::DeadLetter) {
        let t = cfg.topics.name(TopicRole::DeadLetter);
        super::scan::scan(
            &reader,
            &t,
            &parts(TopicRole::DeadLetter),
            Default::default(),
            false,
            |m| {
                let get = |k: &str| {
                    m.headers()
                        .and_then(|hs| crate::kafka::headers::get_str(hs, k))
                        .unwrap_or("?")
                        .to_string()
                };
                use crate::kafka::headers as h;
                *dead
                    .entry((get(h::ERROR_STAGE), get(h::ERROR_KIND)))
                    .or_default() += 1;
            },
        )?;
    }
    let mut quarantined = 0u64;
    let mut windows = std::collections::HashSet::new();
    if exists(TopicRole::Quarantine) {
        let t = cfg.topics.name(TopicRole::Quarantine);
        super::scan::scan(
            &reader,
            &t,
            &parts(TopicRole::Quarantine),
            Default::default(),
            false,
            |m| {
                quarantined += 1;
                if let Some(w) = m
                    .headers()
                    .and_then(|hs| crate::kafka::headers::get_str(hs, "etl.quality.window"))
                {
                    windows.insert(w.to_string());
                }
            },
        )?;
    }
    let mut decisions = Vec::new();
    if exists(TopicRole::Quality) {
        let t = cfg.topics.name(TopicRole::Quality);
        super::scan::tail(
            &reader,
            &t,
            &parts(TopicRole::Quality),
            DECISIONS as i64,
            |m| {
                let at = m
                    .timestamp()
                    .to_millis()
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_default();
                if let Some(d) = m.payload().and_then(|p| decision(p, at)) {
                    decisions.push(d);
                }
            },
        )?;
    }
    decisions.sort_by(|a, b| a.closed_at.cmp(&b.closed_at));
    let keep = decisions.len().saturating_sub(DECISIONS);
    decisions.drain(..keep);
    Ok(Status {
        topics,
        groups,
        dead_letters: dead.into_iter().collect(),
        quarantine: (quarantined, windows.len()),
        decisions,
        health: health(cfg),
    })
}

/// A quality report's decision and reasons; `at`: when it was written.
fn decision(payload: &[u8], at: String) -> Option<Decision> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let reasons: Vec<String> = v
        .get("reasons")
        .and_then(|r| r.as_array())
        .map(|rs| {
            rs.iter()
                .filter_map(|r| {
                    r.get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Decision {
        closed_at: at,
        window: s("window"),
        decision: s("decision"),
        reasons: reasons.join("; "),
    })
}

/// Each stage's `/readyz` at its default port on this host (a stage elsewhere, or on another
/// port, reads "not reachable here").
fn health(cfg: &Config) -> Vec<(&'static str, String, String)> {
    let stages = ["extract", "clean", "score", "sink-mysql", "sink-mongo"];
    stages
        .iter()
        .map(|stage| {
            let port = cfg
                .observability
                .http_port
                .filter(|p| *p != 0)
                .unwrap_or_else(|| crate::observability::default_http_port(stage));
            let url = format!("http://127.0.0.1:{port}/readyz");
            (*stage, url, readyz(port))
        })
        .collect()
}

/// GET /readyz on 127.0.0.1:`port` with short timeouts: "ready", "NOT READY: …" or why not.
fn readyz(port: u16) -> String {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return "not reachable here".into();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return "not reachable here".into();
    }
    let mut buf = Vec::new();
    let _ = s.take(4096).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1).unwrap_or("?");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    match status {
        "200" => "ready".into(),
        "?" => "no HTTP answer".into(),
        other => format!(
            "NOT READY (HTTP {other}): {}",
            body.chars().take(120).collect::<String>()
        ),
    }
}

pub fn render(s: &Status) -> String {
    let mut out = String::from("TOPICS\n");
    out.push_str(&format!(
        "  {:<13} {:<34} {:>10} {:>12}\n",
        "role", "topic", "partitions", "offsets"
    ));
    for t in &s.topics {
        if t.exists {
            out.push_str(&format!(
                "  {:<13} {:<34} {:>10} {:>12}\n",
                t.role.key(),
                t.name,
                t.partitions,
                t.offsets
            ));
        } else {
            out.push_str(&format!(
                "  {:<13} {:<34} {:>10}\n",
                t.role.key(),
                t.name,
                "missing (run `etl-pipe topics apply`)"
            ));
        }
    }
    out.push_str("\nSTAGES (consumer groups)\n");
    out.push_str(&format!(
        "  {:<11} {:<36} {:>8} {:>10}\n",
        "stage", "group", "members", "lag"
    ));
    for g in &s.groups {
        out.push_str(&format!(
            "  {:<11} {:<36} {:>8} {:>10}\n",
            g.stage,
            g.group,
            g.members,
            g.lag.map(|l| l.to_string()).unwrap_or_else(|| "-".into())
        ));
    }
    for g in s.groups.iter().filter(|g| !g.instances.is_empty()) {
        out.push_str(&format!(
            "  {:<11} instances: {}\n",
            g.stage,
            g.instances.join(", ")
        ));
    }
    out.push_str("\nDEAD LETTERS (by stage and kind)\n");
    if s.dead_letters.is_empty() {
        out.push_str("  none\n");
    }
    for ((stage, kind), n) in &s.dead_letters {
        out.push_str(&format!("  {stage:<11} {kind:<28} {n:>10}\n"));
    }
    out.push_str(&format!(
        "\nQUARANTINE\n  {} records from {} windows (`etl-pipe redrive --from quarantine` sends them back)\n",
        s.quarantine.0, s.quarantine.1
    ));
    out.push_str("\nLAST QUALITY DECISIONS\n");
    if s.decisions.is_empty() {
        out.push_str("  none yet\n");
    }
    for d in &s.decisions {
        out.push_str(&format!(
            "  {} {:<5} {}{}\n",
            d.closed_at,
            d.decision,
            d.window,
            if d.reasons.is_empty() {
                String::new()
            } else {
                format!("   {}", d.reasons)
            }
        ));
    }
    out.push_str("\nHEALTH (/readyz on this host)\n");
    for (stage, url, state) in &s.health {
        out.push_str(&format!("  {stage:<11} {url:<32} {state}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    /// One HTTP answer from a listener on a free loopback port; returns the port.
    fn answer_once(reply: &'static str) -> u16 {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = l.accept() {
                let mut req = [0u8; 512];
                let _ = c.read(&mut req);
                let _ = c.write_all(reply.as_bytes());
            }
        });
        port
    }

    #[test]
    fn readyz_answers_read_as_ready_not_ready_or_unreachable() {
        let ok = answer_once("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nready");
        assert_eq!(super::readyz(ok), "ready");
        let down = answer_once(
            "HTTP/1.1 503 Service Unavailable\r\n\r\n{\"ready\":false,\"missing\":[\"database\"]}",
        );
        let r = super::readyz(down);
        assert!(
            r.starts_with("NOT READY (HTTP 503)") && r.contains("database"),
            "{r}"
        );
        // A port nobody listens on (bound, then released).
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert_eq!(super::readyz(free), "not reachable here");
    }
}
