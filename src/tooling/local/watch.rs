//! The watcher of a local run: what has landed so far, read at every poll. It follows the
//! dead-letter, quarantine and scored topics incrementally, reads the sinks' progress (the
//! sink-mysql offsets table, the sink-mongo group's committed offsets), and keeps what the
//! summary needs from the run itself: each stage's `/readyz`, the sinks' busy spans and the
//! API fetch → scored latency of every scored record.
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::message::Message as _;

use super::tally::{self, Failed, Follower, GroupProgress};
use super::{LocalError, LocalPipeline, STAGES};
use crate::config::{Config, TopicRole};

/// Follows a run from its start.
pub struct Watch {
    cfg: Config,
    scored_topic: String,
    dl_follow: Follower,
    q_follow: Follower,
    scored_follow: Follower,
    mongo_progress: GroupProgress,
    dl: Failed,
    q: Failed,
    fetch_to_scored_ms: Vec<u32>,
    /// Per sink: when it was first seen writing, and when it had last written everything so far.
    spans: BTreeMap<&'static str, (Instant, Instant)>,
    /// The sinks' progress at the last poll that could read it (kept while MariaDB restarts
    /// or the group coordinator moves in a failure test).
    last_mysql: HashMap<i32, i64>,
    last_mongo: HashMap<i32, i64>,
    ready: BTreeMap<String, bool>,
}

/// Where the records stood at one poll.
pub struct Progress {
    /// The next offset per partition sink-mysql stored, and sink-mongo's group committed.
    pub mysql_at: HashMap<i32, i64>,
    pub mongo_at: HashMap<i32, i64>,
    /// Scored records read so far.
    pub scored: u64,
    /// Dead letters of clean and score.
    pub upstream: u64,
    pub quarantined: u64,
    /// Every dead letter (sinks' included).
    pub dead_letters: u64,
}

/// Records below the stored offsets (transaction markers make this a slight over-count).
pub fn written(at: &HashMap<i32, i64>) -> u64 {
    at.values().map(|o| (*o).max(0) as u64).sum::<u64>()
}

impl Progress {
    /// Records written by sink-mysql (no more than were scored).
    pub fn mysql_written(&self) -> u64 {
        written(&self.mysql_at).min(self.scored)
    }

    /// Every record accounted for downstream: written by sink-mysql, dead letters of clean and
    /// score, quarantine.
    pub fn accounted(&self) -> u64 {
        self.mysql_written() + self.upstream + self.quarantined
    }
}

/// What the watcher saw over the whole run.
pub struct Seen {
    /// API fetch → produced to `scored`, ms, sorted.
    pub fetch_to_scored_ms: Vec<u32>,
    pub sink_spans: BTreeMap<String, Duration>,
    pub ready: BTreeMap<String, bool>,
}

impl Watch {
    pub fn new(cfg: &Config) -> Result<Self, LocalError> {
        // Followed incrementally: each poll reads only what is new (a full scan per poll, or a
        // Mongo count, costs seconds at 1 M records and competes with the stages for the CPU).
        let dl_follow = Follower::new(cfg, TopicRole::DeadLetter)?;
        let q_follow = Follower::new(cfg, TopicRole::Quarantine)?;
        let scored_follow = Follower::new(cfg, TopicRole::Scored)?;
        let scored_topic = cfg.topics.name(TopicRole::Scored);
        let mongo_progress =
            GroupProgress::new(cfg, "sink-mongo", &scored_topic, &scored_follow.partitions)?;
        Ok(Watch {
            cfg: cfg.clone(),
            scored_topic,
            dl_follow,
            q_follow,
            scored_follow,
            mongo_progress,
            dl: Failed::default(),
            q: Failed::default(),
            fetch_to_scored_ms: Vec::new(),
            spans: BTreeMap::new(),
            ready: STAGES.iter().map(|s| (s.to_string(), false)).collect(),
            last_mysql: HashMap::new(),
            last_mongo: HashMap::new(),
        })
    }

    /// Asks every stage not yet seen ready for its `/readyz`.
    pub async fn check_ready(&mut self, p: &LocalPipeline) {
        for (stage, ok) in self.ready.iter_mut().filter(|(_, ok)| !**ok) {
            *ok = p.ready(stage).await;
        }
    }

    /// Reads what is new on the followed topics and where the sinks are.
    pub async fn poll(&mut self, pool: &sqlx::MySqlPool) -> Result<Progress, LocalError> {
        self.dl_follow.drain(|m| self.dl.add(m))?;
        self.q_follow.drain(|m| self.q.add(m))?;
        let latencies = &mut self.fetch_to_scored_ms;
        self.scored_follow.drain(|m| {
            let fetched = m.headers().and_then(crate::kafka::headers::fetched_at_ms);
            if let (Some(f), Some(ts)) = (fetched, m.timestamp().to_millis()) {
                latencies.push((ts - f).clamp(0, u32::MAX as i64) as u32);
            }
        })?;
        // A failed read (the database restarting, the coordinator moving) keeps the last one.
        if let Ok(m) = tally::mysql_progress(&self.cfg, pool, &self.scored_topic).await {
            self.last_mysql = m;
        }
        if let Ok(m) = self.mongo_progress.committed() {
            self.last_mongo = m;
        }
        let mysql_at = self.last_mysql.clone();
        let mongo_at = self.last_mongo.clone();
        for (sink, at) in [("sink-mysql", &mysql_at), ("sink-mongo", &mongo_at)] {
            if at.values().any(|o| *o > 0) {
                let e = self
                    .spans
                    .entry(sink)
                    .or_insert((Instant::now(), Instant::now()));
                if !self.scored_follow.reached_by(at) || e.0 == e.1 {
                    e.1 = Instant::now();
                }
            }
        }
        Ok(Progress {
            mysql_at,
            mongo_at,
            scored: self.scored_follow.records,
            upstream: self.dl.count_stage("clean") + self.dl.count_stage("score"),
            quarantined: self.q.total(),
            dead_letters: self.dl.total(),
        })
    }

    /// Whether every one of `raw` records has landed: each is scored, quarantined or a dead
    /// letter of clean/score, and both sinks stored offsets past the last scored record.
    pub fn landed(&self, raw: u64, at: &Progress) -> bool {
        at.scored + at.upstream + at.quarantined >= raw
            && self.scored_follow.reached_by(&at.mysql_at)
            && self.scored_follow.reached_by(&at.mongo_at)
    }

    pub fn seen(self) -> Seen {
        let mut fetch_to_scored_ms = self.fetch_to_scored_ms;
        fetch_to_scored_ms.sort_unstable();
        Seen {
            fetch_to_scored_ms,
            sink_spans: self
                .spans
                .into_iter()
                .map(|(k, (a, b))| (k.to_string(), b.duration_since(a)))
                .collect(),
            ready: self.ready,
        }
    }
}
