//! One local run from start to finish: topics, sample API, every stage, `extract --once`,
//! the injected crashes, wait until every record is accounted for, then the [`Outcome`] and
//! the summary a person reads.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::prom;
use super::scenario::{Action, Event, Figures, Runner, Sample, Step};
use super::tally::{self, Failed, TopicCount, Window};
use super::watch::{written, Progress, Seen, Watch};
use super::{LocalError, LocalPipeline, STAGES};
use crate::config::{Config, TopicRole};

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
    pub commit_latency: BTreeMap<String, prom::Histogram>,
    /// Per sink: `etl_sink_phase_seconds` per phase, (batches, seconds), read just before the
    /// stop: where its batches spent their time.
    pub sink_phases: BTreeMap<String, BTreeMap<String, (u64, f64)>>,
    /// Per exactly-once stage (clean, score): seconds its loop's thread spent per phase
    /// (`etl_loop_phase_microseconds_total`, summed over its running instances), read just
    /// before the stop.
    pub loop_phases: BTreeMap<String, BTreeMap<String, f64>>,
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
    /// CPU seconds the stack's services (kafka, mariadb, ferretdb, registry) used from the
    /// start of the run until just before the stop.
    pub services_cpu: BTreeMap<String, f64>,
    pub crashes: Vec<String>,
    /// Instances that exited because their loop was stuck and were started again (the
    /// supervisor's part: `kafka::eos` watchdog).
    pub stuck_restarts: Vec<String>,
    pub table: String,
    /// The scenario's steps as they happened, and where the sinks stood at every poll.
    pub events: Vec<Event>,
    pub timeline: Vec<Sample>,
    pub figures: Figures,
    /// One line per stage instance (partitions, records), rendered at the end of the run.
    pub instances: String,
}

/// Runs the pipeline until all records are accounted for (or `timeout`), one instance per
/// stage, with `crashes` injected.
pub async fn run(
    p: &mut LocalPipeline,
    crashes: &[Crash],
    timeout: Duration,
    progress: bool,
) -> Result<Outcome, LocalError> {
    let mut crashes = crashes.to_vec();
    crashes.sort_by_key(|c| c.after_rows);
    let steps: Vec<Step> = crashes
        .into_iter()
        .map(|c| Step::at(c.after_rows, Action::Kill(c.stage)))
        .collect();
    run_scenario(p, &[], steps, timeout, progress).await
}

/// Runs the pipeline with `scale` instances of the stages it names (one of the others) until
/// all records are accounted for and every step ran (or `timeout`).
pub async fn run_scenario(
    p: &mut LocalPipeline,
    scale: &[(String, usize)],
    steps: Vec<Step>,
    timeout: Duration,
    progress: bool,
) -> Result<Outcome, LocalError> {
    p.apply_topics().await?;
    p.start_sample_api().await?;
    for s in STAGES {
        let n = scale
            .iter()
            .find(|(stage, _)| stage == s)
            .map_or(1, |(_, n)| *n);
        p.scale(s, n).await?;
    }
    let cfg = p.cfg.clone();
    let stores = Stores::open(&cfg).await?;
    let mut w = Watch::new(&cfg)?;

    let services_before = super::services::cpu_now();
    let started = Instant::now();
    let extract = p.start("extract", &["--once"])?;
    let mut scenario = Runner::new(steps);
    let mut timeline: Vec<Sample> = Vec::new();
    let mut raw_total: Option<u64> = None;
    let mut last_print = Instant::now();
    let mut last_sample = Instant::now();
    let mut stuck: Vec<String> = Vec::new();
    loop {
        for line in p.restart_stuck()? {
            eprintln!("at {:.1} s: {line}", started.elapsed().as_secs_f64());
            stuck.push(format!(
                "at {:.1} s: {line}",
                started.elapsed().as_secs_f64()
            ));
        }
        for s in STAGES {
            p.check_alive(s)?;
        }
        // Sinks may take `sink.shutdown_timeout` (30 s) to finish a batch on SIGTERM.
        p.reap_stopping(Duration::from_secs(45));
        if raw_total.is_none() {
            raw_total = extracted(p, &cfg, &extract)?;
        }
        w.check_ready(p).await;
        let at = w.poll(&stores.pool).await?;
        timeline.push(Sample {
            at: started.elapsed(),
            scored: at.scored,
            mysql: at.mysql_at.clone(),
            mongo: at.mongo_at.clone(),
        });
        // Steps count every record accounted for downstream: how many windows fail on drift
        // varies with timing.
        scenario.tick(p, started.elapsed(), at.accounted()).await?;
        if last_sample.elapsed() > Duration::from_secs(2) {
            last_sample = Instant::now();
            p.sample_instances().await;
        }
        if progress && last_print.elapsed() > Duration::from_secs(2) {
            last_print = Instant::now();
            print_progress(started, raw_total, &at);
        }
        if raw_total.is_some_and(|raw| w.landed(raw, &at)) && scenario.done() {
            break;
        }
        if started.elapsed() > timeout {
            scenario.finish()?;
            return Err(not_landed(p, timeout, raw_total, &at, &scenario));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let elapsed = started.elapsed();
    let services_cpu = super::services::cpu_since(&services_before);
    scenario.finish()?;
    p.sample_instances().await;
    let instances = p.render_instances(started);
    let mut o = finish(p, w.seen(), elapsed, stores).await?;
    o.figures = Figures::from(&scenario.events, &timeline);
    o.crashes = scenario
        .events
        .iter()
        .filter(|e| matches!(e.action, Action::Kill(_)))
        .map(|e| e.what.clone())
        .collect();
    o.stuck_restarts = stuck;
    o.services_cpu = services_cpu;
    o.events = scenario.events;
    o.timeline = timeline;
    o.instances = instances;
    Ok(o)
}

/// The error of a run whose records did not all land in time: where each count stood.
fn not_landed(
    p: &LocalPipeline,
    timeout: Duration,
    raw_total: Option<u64>,
    at: &Progress,
    scenario: &Runner,
) -> LocalError {
    LocalError::Other(format!(
        "not every record landed within {timeout:?}: raw {raw_total:?}, scored {}, \
         written to mysql {}, mongo {}, dead letters {}, quarantined {}; steps done: {:?}; logs in {}",
        at.scored,
        at.mysql_written(),
        written(&at.mongo_at),
        at.dead_letters,
        at.quarantined,
        scenario.events.iter().map(|e| e.what.as_str()).collect::<Vec<_>>(),
        p.dir.display()
    ))
}

/// The run's MySQL table and Mongo collection, as the tally reads them.
struct Stores {
    table: String,
    pool: sqlx::MySqlPool,
    coll: mongodb::Collection<mongodb::bson::Document>,
}

impl Stores {
    async fn open(cfg: &Config) -> Result<Self, LocalError> {
        Ok(Stores {
            table: tally::mysql_table(cfg)?,
            pool: tally::mysql_pool(cfg).await?,
            coll: tally::mongo_collection(cfg).await?,
        })
    }
}

/// Once extract `--once` has exited: the records it produced to `raw` (`None` while it runs).
fn extracted(
    p: &mut LocalPipeline,
    cfg: &Config,
    extract: &str,
) -> Result<Option<u64>, LocalError> {
    p.sample(extract);
    let Some(status) = p.exited(extract) else {
        return Ok(None);
    };
    if !status.success() {
        return Err(LocalError::Other(format!(
            "extract exited with {status}; last lines of {}:\n{}",
            p.log_path(extract).display(),
            super::tail(&p.log_path(extract), 20)
        )));
    }
    Ok(Some(tally::count_topic(cfg, TopicRole::Raw)?.records))
}

fn print_progress(started: Instant, raw_total: Option<u64>, at: &Progress) {
    eprintln!(
        "  … {:>5.1}s  raw {}  scored {}  written: mysql {}  mongo {}  dead letters {}  quarantined {}",
        started.elapsed().as_secs_f64(),
        raw_total.map(|r| r.to_string()).unwrap_or_else(|| "(extracting)".into()),
        at.scored,
        at.mysql_written(),
        written(&at.mongo_at).min(at.scored),
        at.dead_letters,
        at.quarantined
    );
}

/// The `/metrics` texts of every running instance of `stage`, one after the other.
async fn stage_metrics(p: &LocalPipeline, stage: &str) -> String {
    let mut text = String::new();
    for name in p.instances_of(stage) {
        if let Some(t) = p.metrics(&name).await {
            text.push_str(&t);
        }
    }
    text
}

/// Reads the figures only the running processes know, stops them, then tallies the topics
/// and the stores.
async fn finish(
    p: &mut LocalPipeline,
    seen: Seen,
    elapsed: Duration,
    stores: Stores,
) -> Result<Outcome, LocalError> {
    let cfg = p.cfg.clone();
    let mut commit_latency = BTreeMap::new();
    let mut sink_phases = BTreeMap::new();
    for s in ["sink-mysql", "sink-mongo"] {
        // Every running instance's histogram, summed (an instance stopped or killed earlier
        // took its samples with it).
        let text = stage_metrics(p, s).await;
        if !text.is_empty() {
            let h =
                prom::Histogram::parse(&text, crate::observability::names::FETCH_TO_COMMIT_SECONDS);
            commit_latency.insert(s.to_string(), h);
            let phases = prom::phase_totals(&text, crate::observability::names::SINK_PHASE_SECONDS);
            sink_phases.insert(s.to_string(), phases);
        }
    }
    let mut loop_phases = BTreeMap::new();
    for s in ["clean", "score"] {
        let text = stage_metrics(p, s).await;
        let name = crate::observability::names::LOOP_PHASE_MICROSECONDS;
        let phases: BTreeMap<String, f64> = prom::counter_by(&text, name, "phase")
            .into_iter()
            .map(|(phase, us)| (phase, us / 1e6))
            .collect();
        if !phases.is_empty() {
            loop_phases.insert(s.to_string(), phases);
        }
    }
    // Per stage: CPU summed over its instances, the largest peak RSS.
    let mut resources: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    for s in STAGES.iter().chain(["extract"].iter()) {
        if let Some(r) = stage_resources(p, s) {
            resources.insert(s.to_string(), r);
        }
    }
    if let Some(r) = p.resources("sample-api") {
        resources.insert("sample-api".into(), r);
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
    let Stores { table, pool, coll } = stores;
    Ok(Outcome {
        source_records: p.source.records,
        topics,
        dead_letters: tally::failed(&cfg, TopicRole::DeadLetter)?,
        quarantine: tally::failed(&cfg, TopicRole::Quarantine)?,
        windows: tally::windows(&cfg)?,
        mysql_rows: tally::mysql_rows(&pool, &table).await?,
        mongo_docs: tally::mongo_docs(&coll).await?,
        commit_latency,
        sink_phases,
        loop_phases,
        fetch_to_scored_ms: seen.fetch_to_scored_ms,
        sink_spans: seen.sink_spans,
        ready: seen.ready,
        elapsed,
        mysql_span_ms: tally::load_span_ms(&pool, &table).await?,
        resources,
        table,
        ..Outcome::default()
    })
}

/// "p50 … p95 … p99 … (n = …)" of a fetch → commit histogram; its buckets are 50 ms wide
/// up to 2 s, so the figures are interpolated within 50 ms.
fn latency_summary(h: Option<&prom::Histogram>) -> String {
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

/// One line per exactly-once stage: the share of its loop's time per phase.
pub fn loop_lines(o: &Outcome) -> String {
    let mut s = String::new();
    for (stage, phases) in &o.loop_phases {
        let total: f64 = phases.values().sum();
        let shares: Vec<String> = phases
            .iter()
            .filter(|(_, secs)| **secs > 0.0)
            .map(|(phase, secs)| format!("{phase} {:.0} %", 100.0 * secs / total.max(1e-9)))
            .collect();
        let _ = writeln!(
            s,
            "  {stage}'s exactly-once loop ({total:.1} s, from /metrics): {}",
            shares.join(" · ")
        );
    }
    s
}

/// The summary a person reads at a glance.
pub fn render(p: &LocalPipeline, o: &Outcome) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n═══ etl-pipe run {} ═══", p.run_id);
    let _ = writeln!(
        s,
        "source: sample API, {} league entries ({} streams, page size {})",
        o.source_records,
        p.source.tiers.len() * p.source.divisions.len(),
        p.source.page_size
    );
    render_topics(&mut s, &p.cfg, o);
    render_landed(&mut s, &p.cfg, o);
    render_dead_letters(&mut s, o);
    render_windows(&mut s, o);
    render_speed(&mut s, o);
    s.push_str(&o.instances);
    render_next_steps(&mut s, p, o);
    s
}

fn render_topics(s: &mut String, cfg: &Config, o: &Outcome) {
    let _ = writeln!(s, "\nRecords per topic (committed)");
    let mut line = |name: &str, records: u64, role: TopicRole| {
        let _ = writeln!(
            s,
            "  {:<10} {:>9}   {}",
            name,
            records,
            cfg.topics.name(role)
        );
    };
    for (k, c) in &o.topics {
        line(k, c.records, role_of(k));
    }
    line("dead-letter", o.dead_letters.total(), TopicRole::DeadLetter);
    line("quarantine", o.quarantine.total(), TopicRole::Quarantine);
}

fn render_landed(s: &mut String, cfg: &Config, o: &Outcome) {
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
}

fn render_dead_letters(s: &mut String, o: &Outcome) {
    let _ = writeln!(s, "\nDead letters by reason");
    if o.dead_letters.by_reason.is_empty() {
        let _ = writeln!(s, "  none");
    }
    for ((stage, kind), n) in &o.dead_letters.by_reason {
        let _ = writeln!(s, "  {stage:<11} {kind:<22} {n:>7}");
    }
}

fn render_windows(s: &mut String, o: &Outcome) {
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
}

fn render_speed(s: &mut String, o: &Outcome) {
    let _ = writeln!(s, "\nSpeed");
    let secs = o.elapsed.as_secs_f64();
    let _ = writeln!(
        s,
        "  {:.1} s from the first API request until every record had landed: {:.0} records/s end to end",
        secs,
        o.source_records as f64 / secs.max(0.001)
    );
    s.push_str(&latency_lines(o, ""));
    s.push_str(&loop_lines(o));
    for c in &o.crashes {
        let _ = writeln!(s, "  crash test: {c}");
    }
    for r in &o.stuck_restarts {
        let _ = writeln!(s, "  supervisor: {r}");
    }
    for e in o
        .events
        .iter()
        .filter(|e| !matches!(e.action, Action::Kill(_)))
    {
        let _ = writeln!(
            s,
            "  at {:>5.1} s (done {:>5.1} s): {}",
            e.at.as_secs_f64(),
            e.done.as_secs_f64(),
            e.what
        );
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
}

fn render_next_steps(s: &mut String, p: &LocalPipeline, o: &Outcome) {
    let cfg = &p.cfg;
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
}

fn role_of(key: &str) -> TopicRole {
    TopicRole::ALL
        .into_iter()
        .find(|r| r.key() == key)
        .unwrap_or(TopicRole::Raw)
}

/// A stage's CPU seconds summed over its instances, running or exited (each counted once), and
/// the largest peak RSS among them; `None` if none ran.
fn stage_resources(p: &LocalPipeline, stage: &str) -> Option<(f64, u64)> {
    let names: std::collections::BTreeSet<&String> = p
        .children
        .keys()
        .chain(p.finished.keys())
        .filter(|name| super::instances::instance_number(name, stage).is_some())
        .collect();
    names
        .into_iter()
        .filter_map(|name| p.resources(name))
        .reduce(|a, b| (a.0 + b.0, a.1.max(b.1)))
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

    /// A running instance was counted twice (once as a running instance of its stage, once
    /// as `<stage>-0`): bench-e2e printed twice the CPU seconds of clean, score and the sinks.
    #[test]
    fn a_stage_counts_each_instance_once() {
        let runs = tempfile::tempdir().unwrap();
        let mut p = LocalPipeline::prepare(
            std::path::Path::new("/bin/sh"),
            std::path::Path::new("config/demo.toml"),
            runs.path(),
            "resources",
            super::super::SourceOptions::plain(10),
            &[],
        )
        .unwrap();
        // Burns some CPU, then waits to be stopped; the other exits at once.
        // (dash counts to 200 000 in 0.19 s of CPU here: the loop must outlast the first
        // wait's 0.2 s whatever the machine's speed.)
        let busy = "i=0; while [ $i -lt 1000000 ]; do i=$((i+1)); done; sleep 30";
        p.spawn("score-0", &["-c".into(), busy.into()]).unwrap();
        p.spawn("extract-0", &["-c".into(), "exit 0".into()])
            .unwrap();
        let start = Instant::now();
        while p.resources("score-0").map_or(0.0, |r| r.0) < 0.2 || p.exited("extract-0").is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sh never got busy"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Past the busy loop: its CPU no longer grows.
        let mut last = -1.0;
        loop {
            let now = p.resources("score-0").unwrap().0;
            if now == last {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(28),
                "the busy loop never ended"
            );
            last = now;
            std::thread::sleep(Duration::from_millis(300));
        }
        let one = p.resources("score-0").unwrap();
        let stage = stage_resources(&p, "score").unwrap();
        assert!(
            (stage.0 - one.0).abs() < 0.05,
            "score {stage:?}, its one instance {one:?}"
        );
        assert_eq!(stage.1, one.1);
        let extract = stage_resources(&p, "extract").unwrap();
        assert_eq!(extract, p.resources("extract-0").unwrap());
        assert_eq!(stage_resources(&p, "clean"), None);
        p.stop_all(Duration::from_secs(2));
    }
}
