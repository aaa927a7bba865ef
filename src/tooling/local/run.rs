//! One local run from start to finish: topics, sample API, every stage, `extract --once`,
//! wait until every record is accounted for, then the summary.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rdkafka::message::Message as _;

use super::tally::{self, Failed, TopicCount, Window};
use super::{LocalError, LocalPipeline, STAGES};
use crate::config::TopicRole;

/// A crash to inject: SIGKILL `stage` once `after_rows` records are accounted for downstream
/// (MySQL rows + dead letters of clean/score + quarantine), then restart it.
#[derive(Debug, Clone)]
pub struct Crash {
    pub stage: String,
    pub after_rows: u64,
}

/// Where everything ended up.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub source_records: u64,
    pub topics: BTreeMap<&'static str, TopicCount>,
    pub dead_letters: Failed,
    pub quarantine: Failed,
    pub windows: Vec<Window>,
    pub mysql_rows: u64,
    pub mongo_docs: u64,
    /// `etl_sink_fetch_to_commit_seconds` of sink-mysql and sink-mongo, read just before the stop.
    pub commit_latency: BTreeMap<String, tally::Histogram>,
    /// API fetch → produced to `scored` (the record's CreateTime), ms, sorted: the part of the
    /// latency before the sinks (extract, clean, score and its window).
    pub fetch_to_scored_ms: Vec<u32>,
    /// Per stage: whether its `/readyz` answered 200 while records flowed.
    pub ready: BTreeMap<String, bool>,
    /// Per sink: from the first offsets it stored to the last time it was still behind, as the
    /// watcher saw them (± its 300 ms poll).
    pub sink_spans: BTreeMap<String, Duration>,
    pub elapsed: Duration,
    pub mysql_span_ms: Option<(i64, i64)>,
    /// Per process: (CPU seconds, peak RSS bytes), read just before the stop.
    pub resources: BTreeMap<String, (f64, u64)>,
    pub crashes: Vec<String>,
    pub table: String,
}

/// Runs the pipeline until all records are accounted for (or `timeout`).
pub async fn run(
    p: &mut LocalPipeline,
    crashes: &[Crash],
    timeout: Duration,
    progress: bool,
) -> Result<Outcome, LocalError> {
    p.apply_topics().await?;
    p.start_sample_api().await?;
    for s in STAGES {
        p.start(s, &[])?;
    }
    let cfg = p.cfg.clone();
    let table = tally::mysql_table(&cfg)?;
    let pool = tally::mysql_pool(&cfg).await?;
    let coll = tally::mongo_collection(&cfg).await?;

    // Followed incrementally: each poll reads only what is new (a full scan per poll, or a
    // Mongo count, costs seconds at 1 M records and competes with the stages for the CPU).
    let mut dl_follow = tally::Follower::new(&cfg, TopicRole::DeadLetter)?;
    let mut q_follow = tally::Follower::new(&cfg, TopicRole::Quarantine)?;
    let mut scored_follow = tally::Follower::new(&cfg, TopicRole::Scored)?;
    let mut fetch_to_scored_ms: Vec<u32> = Vec::new();
    let scored_topic = cfg.topics.name(TopicRole::Scored);
    let mongo_progress =
        tally::GroupProgress::new(&cfg, "sink-mongo", &scored_topic, &scored_follow.partitions)?;
    let mut dl = Failed::default();
    let mut q = Failed::default();
    let mut spans: BTreeMap<&str, (Instant, Instant)> = BTreeMap::new();
    let mut ready: BTreeMap<String, bool> = STAGES.iter().map(|s| (s.to_string(), false)).collect();

    let started = Instant::now();
    p.start("extract", &["--once"])?;
    let mut pending: Vec<Crash> = crashes.to_vec();
    let mut crashed = Vec::new();
    let mut raw_total: Option<u64> = None;
    let mut last_print = Instant::now();
    loop {
        for s in STAGES {
            p.check_alive(s)?;
        }
        if raw_total.is_none() {
            p.sample("extract");
            if let Some(status) = p.exited("extract") {
                if !status.success() {
                    return Err(LocalError::Other(format!(
                        "extract exited with {status}; last lines of {}:\n{}",
                        p.log_path("extract").display(),
                        super::tail(&p.log_path("extract"), 20)
                    )));
                }
                raw_total = Some(tally::count_topic(&cfg, TopicRole::Raw)?.records);
            }
        }
        for (stage, ok) in ready.iter_mut().filter(|(_, ok)| !**ok) {
            *ok = p.ready(stage).await;
        }
        dl_follow.drain(|m| dl.add(m))?;
        q_follow.drain(|m| q.add(m))?;
        scored_follow.drain(|m| {
            let fetched = m.headers().and_then(crate::kafka::headers::fetched_at_ms);
            if let (Some(f), Some(ts)) = (fetched, m.timestamp().to_millis()) {
                fetch_to_scored_ms.push((ts - f).clamp(0, u32::MAX as i64) as u32);
            }
        })?;
        let mysql_at = tally::mysql_progress(&cfg, &pool, &scored_topic).await?;
        let mongo_at = mongo_progress.committed()?;
        // When each sink was first seen writing, and when it had written everything so far.
        for (sink, at) in [("sink-mysql", &mysql_at), ("sink-mongo", &mongo_at)] {
            if at.values().any(|o| *o > 0) {
                let e = spans
                    .entry(sink)
                    .or_insert((Instant::now(), Instant::now()));
                if !scored_follow.reached_by(at) || e.0 == e.1 {
                    e.1 = Instant::now();
                }
            }
        }
        let written = |at: &std::collections::HashMap<i32, i64>| -> u64 {
            // Records below the stored offsets (transaction markers make this a slight over-count).
            at.values().map(|o| (*o).max(0) as u64).sum::<u64>()
        };
        let upstream = dl.count_stage("clean") + dl.count_stage("score");
        let quarantined = q.total();
        // Crash points count every record accounted for downstream (written by sink-mysql,
        // dead letters, quarantine): how many windows fail on drift varies with timing.
        let mysql_written = written(&mysql_at).min(scored_follow.records);
        let accounted = mysql_written + upstream + quarantined;
        if let Some(i) = pending.iter().position(|c| accounted >= c.after_rows) {
            let c = pending.remove(i);
            p.kill9(&c.stage)?;
            crashed.push(format!(
                "{} killed with SIGKILL at {accounted} records accounted for ({mysql_written} written to MySQL), restarted",
                c.stage
            ));
            tokio::time::sleep(Duration::from_millis(500)).await;
            p.restart(&c.stage, &[])?;
        }
        if progress && last_print.elapsed() > Duration::from_secs(2) {
            last_print = Instant::now();
            eprintln!(
                "  … {:>5.1}s  raw {}  scored {}  written: mysql {}  mongo {}  dead letters {}  quarantined {quarantined}",
                started.elapsed().as_secs_f64(),
                raw_total.map(|r| r.to_string()).unwrap_or_else(|| "(extracting)".into()),
                scored_follow.records,
                mysql_written,
                written(&mongo_at).min(scored_follow.records),
                dl.total()
            );
        }
        if let Some(raw) = raw_total {
            // Every raw record is scored, quarantined or a dead letter of clean/score, and
            // both sinks stored offsets past the last scored record.
            let scored_all = scored_follow.records + upstream + quarantined >= raw;
            if scored_all
                && scored_follow.reached_by(&mysql_at)
                && scored_follow.reached_by(&mongo_at)
                && pending.is_empty()
            {
                break;
            }
        }
        if started.elapsed() > timeout {
            return Err(LocalError::Other(format!(
                "not every record landed within {timeout:?}: raw {raw_total:?}, scored {}, \
                 written to mysql {mysql_written}, mongo {}, dead letters {}, quarantined {quarantined}; logs in {}",
                scored_follow.records,
                written(&mongo_at),
                dl.total(),
                p.dir.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let elapsed = started.elapsed();
    fetch_to_scored_ms.sort_unstable();
    let sink_spans = spans
        .into_iter()
        .map(|(k, (a, b))| (k.to_string(), b.duration_since(a)))
        .collect();
    let mut commit_latency = BTreeMap::new();
    for s in ["sink-mysql", "sink-mongo"] {
        if let Some(text) = p.metrics(s).await {
            let h = tally::Histogram::parse(
                &text,
                crate::observability::names::FETCH_TO_COMMIT_SECONDS,
            );
            commit_latency.insert(s.to_string(), h);
        }
    }
    let mut resources = BTreeMap::new();
    for s in STAGES.iter().chain(["extract", "sample-api"].iter()) {
        if let Some(r) = p.resources(s) {
            resources.insert(s.to_string(), r);
        }
    }
    // Graceful stop: stages finish and commit what they hold.
    p.stop_all(Duration::from_secs(30));

    let mut topics = BTreeMap::new();
    for role in [
        TopicRole::Raw,
        TopicRole::Cleaned,
        TopicRole::Scored,
        TopicRole::Quality,
        TopicRole::Logs,
    ] {
        topics.insert(role.key(), tally::count_topic(&cfg, role)?);
    }
    let source_records = p.source.records;
    Ok(Outcome {
        source_records,
        topics,
        dead_letters: tally::failed(&cfg, TopicRole::DeadLetter)?,
        quarantine: tally::failed(&cfg, TopicRole::Quarantine)?,
        windows: tally::windows(&cfg)?,
        mysql_rows: tally::mysql_rows(&pool, &table).await?,
        mongo_docs: tally::mongo_docs(&coll).await?,
        commit_latency,
        fetch_to_scored_ms,
        sink_spans,
        ready,
        elapsed,
        mysql_span_ms: tally::load_span_ms(&pool, &table).await?,
        resources,
        crashes: crashed,
        table,
    })
}

/// "p50 … p95 … p99 … (n = …)" of a fetch → commit histogram; its buckets are 50 ms wide
/// up to 2 s, so the figures are interpolated within 50 ms.
fn latency_summary(h: Option<&tally::Histogram>) -> String {
    let Some(h) = h.filter(|h| h.count() > 0) else {
        return "- (no samples: the sink's /metrics did not answer)".into();
    };
    let q = |x: f64| {
        h.quantile(x)
            .map(|v| format!("{:.0} ms", v * 1000.0))
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "p50 {}  p95 {}  p99 {}  (n = {})",
        q(0.5),
        q(0.95),
        q(0.99),
        h.count()
    )
}

/// "p50 … p95 … p99 … (n = …)" of sorted millisecond samples (nearest rank).
fn sorted_summary(ms: &[u32]) -> String {
    if ms.is_empty() {
        return "- (no samples)".into();
    }
    let q = |x: f64| ms[((x * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    format!(
        "p50 {} ms  p95 {} ms  p99 {} ms  (n = {})",
        q(0.5),
        q(0.95),
        q(0.99),
        ms.len()
    )
}

/// One line for the way to `scored`, then one per sink: "API fetch → <db> latency<when>: p50 …
/// p95 … p99 … (n = …)".
pub fn latency_lines(o: &Outcome, when: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  API fetch → {:<15} latency{when}: {}",
        "scored produced",
        sorted_summary(&o.fetch_to_scored_ms)
    );
    for (sink, db) in [
        ("sink-mysql", "MySQL commit"),
        ("sink-mongo", "MongoDB write"),
    ] {
        let _ = writeln!(
            s,
            "  API fetch → {db:<15} latency{when}: {}",
            latency_summary(o.commit_latency.get(sink))
        );
    }
    s
}

/// The summary a person reads at a glance.
pub fn render(p: &LocalPipeline, o: &Outcome) -> String {
    let mut s = String::new();
    let cfg = &p.cfg;
    let _ = writeln!(s, "\n═══ etl-pipe run {} ═══", p.run_id);
    let _ = writeln!(
        s,
        "source: sample API, {} league entries ({} streams, page size {})",
        o.source_records,
        p.source.tiers.len() * p.source.divisions.len(),
        p.source.page_size
    );
    let _ = writeln!(s, "\nRecords per topic (committed)");
    for (k, c) in &o.topics {
        let _ = writeln!(
            s,
            "  {:<10} {:>9}   {}",
            k,
            c.records,
            cfg.topics.name(role_of(k))
        );
    }
    let _ = writeln!(
        s,
        "  {:<10} {:>9}   {}",
        "dead-letter",
        o.dead_letters.total(),
        cfg.topics.name(TopicRole::DeadLetter)
    );
    let _ = writeln!(
        s,
        "  {:<10} {:>9}   {}",
        "quarantine",
        o.quarantine.total(),
        cfg.topics.name(TopicRole::Quarantine)
    );
    let _ = writeln!(s, "\nLanded");
    let _ = writeln!(
        s,
        "  MySQL   {:>9} rows       {}.{}",
        o.mysql_rows, cfg.mysql.database, o.table
    );
    let _ = writeln!(
        s,
        "  MongoDB {:>9} documents  {}.{}",
        o.mongo_docs,
        cfg.mongo.database,
        cfg.sink.mongo.collection.clone().unwrap_or_default()
    );
    let _ = writeln!(s, "\nDead letters by reason");
    if o.dead_letters.by_reason.is_empty() {
        let _ = writeln!(s, "  none");
    }
    for ((stage, kind), n) in &o.dead_letters.by_reason {
        let _ = writeln!(s, "  {stage:<11} {kind:<22} {n:>7}");
    }
    let _ = writeln!(s, "\nQuality windows (score)");
    let mut by: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for w in &o.windows {
        let e = by.entry(w.decision.as_str()).or_default();
        e.0 += 1;
        e.1 += w.rows;
    }
    for (d, (n, rows)) in &by {
        let dest = if *d == "FAIL" {
            "→ quarantine"
        } else {
            "→ scored"
        };
        let _ = writeln!(s, "  {d:<5} {n:>4} windows  {rows:>8} records  {dest}");
    }
    if let Some(w) = o.windows.iter().find(|w| w.decision == "FAIL") {
        let _ = writeln!(
            s,
            "  e.g. {} FAIL: {}",
            w.id,
            w.reasons.first().cloned().unwrap_or_default()
        );
    }
    let _ = writeln!(s, "\nSpeed");
    let secs = o.elapsed.as_secs_f64();
    let _ = writeln!(
        s,
        "  {:.1} s from the first API request until every record had landed: {:.0} records/s end to end",
        secs,
        o.source_records as f64 / secs.max(0.001)
    );
    s.push_str(&latency_lines(o, ""));
    for c in &o.crashes {
        let _ = writeln!(s, "  crash test: {c}");
    }
    let not_ready: Vec<&str> = o
        .ready
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(s, _)| s.as_str())
        .collect();
    if not_ready.is_empty() {
        let _ = writeln!(s, "  /readyz: every stage answered ready during the run");
    } else {
        let _ = writeln!(
            s,
            "  /readyz: never ready during the run: {}",
            not_ready.join(", ")
        );
    }
    let _ = writeln!(s, "\nWhere to look next");
    let cfgp = p.dir.join("config.toml");
    let _ = writeln!(s, "  etl-pipe status --config {}", cfgp.display());
    let _ = writeln!(
        s,
        "  logs topic {} (JSON, one event per line; Kafdrop: see kafdrop/README.md)",
        cfg.topics.name(TopicRole::Logs)
    );
    let _ = writeln!(s, "  process logs: {}", p.dir.display());
    let _ = writeln!(
        s,
        "  mysql -h127.0.0.1 -uetl -p {} -e 'SELECT * FROM `{}` LIMIT 5'",
        cfg.mysql.database, o.table
    );
    let _ = writeln!(
        s,
        "  etl-pipe redrive --config {} --from quarantine --dry-run",
        cfgp.display()
    );
    let _ = writeln!(
        s,
        "\nThe local stack keeps running. Stop it with: bash deploy/local/stack.sh down"
    );
    s
}

fn role_of(key: &str) -> TopicRole {
    TopicRole::ALL
        .into_iter()
        .find(|r| r.key() == key)
        .unwrap_or(TopicRole::Raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_use_the_nearest_rank() {
        let ms: Vec<u32> = (1..=100).collect();
        assert_eq!(
            sorted_summary(&ms),
            "p50 50 ms  p95 95 ms  p99 99 ms  (n = 100)"
        );
        assert_eq!(
            sorted_summary(&[7]),
            "p50 7 ms  p95 7 ms  p99 7 ms  (n = 1)"
        );
        assert_eq!(sorted_summary(&[]), "- (no samples)");
    }
}
