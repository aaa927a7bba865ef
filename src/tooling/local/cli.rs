//! `etl-pipe demo` and `etl-pipe bench-e2e`: the whole pipeline on this machine. Owns their
//! flags, the runs each makes (the demo; the peak and the latency run) and what they print.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::run::{self, Outcome};
use super::{LocalError, LocalPipeline, SourceOptions};

/// Options of `etl-pipe demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many league entries the sample API serves.
    #[arg(long, default_value_t = 20_000)]
    pub records: u64,
    /// Serve clean data: no 429s, 5xx, malformed records, missing fields or drift.
    #[arg(long)]
    pub no_faults: bool,
    /// Give up when not every record has landed after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Where each run keeps its effective config and process logs.
    #[arg(long, default_value = ".runs")]
    pub runs_dir: PathBuf,
    /// Instances per stage, e.g. `clean=3,score=2,sink-mysql=2,sink-mongo=2` (1 for stages
    /// not named); each is its own process in the stage's consumer group.
    #[arg(long, value_parser = super::instances::Scale::parse)]
    pub scale: Option<super::instances::Scale>,
    /// Run against the local 3-node Kafka cluster (`ETL_STACK_PROFILE=cluster stack.sh up`),
    /// topics with replication 3.
    #[arg(long)]
    pub cluster: bool,
    /// Schema registry (Confluent API) for Confluent-framed Avro, e.g.
    /// `http://127.0.0.1:8081/apis/ccompat/v7`.
    #[arg(long)]
    pub schema_registry: Option<String>,
}

/// Options of `etl-pipe bench-e2e`.
#[derive(Debug, clap::Args)]
pub struct BenchE2eArgs {
    /// Records for the peak-rate run.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Records for the run at half the peak rate (0 = skip it).
    #[arg(long, default_value_t = 200_000)]
    pub half_rate_records: u64,
    /// Offered rate (records/s) of the second run, instead of half the measured peak. With
    /// `--records 0` the peak run is skipped: a latency run at this rate alone.
    #[arg(long)]
    pub latency_rate: Option<f64>,
    /// Page size of the sample API in the peak run.
    #[arg(long, default_value_t = 1000)]
    pub page_size: u64,
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[arg(long, default_value = ".runs")]
    pub runs_dir: PathBuf,
    /// Keep each run's topics, MySQL table and Mongo collection (deleted after its figures are
    /// printed by default: a 1 M-record run leaves ~1 GB in each store).
    #[arg(long)]
    pub keep: bool,
    /// Run against the local 3-node Kafka cluster (replication 3) instead of the single broker.
    #[arg(long)]
    pub cluster: bool,
    /// Scenario: one peak run of `--records` per clean instance count (e.g. `1,2,3`):
    /// end-to-end records/s against the number of clean instances. Replaces the peak and
    /// half-rate runs (as do the other scenario flags).
    #[arg(long, value_delimiter = ',')]
    pub clean_instances: Vec<usize>,
    /// Scenario: a run of `--failover-records` at `--failover-rate` during which the broker
    /// leading the most partitions is stopped for 20 s (cluster only), clean goes 1→2→1,
    /// sink-mysql 1→2→1, sink-mongo 1→2 and one clean instance is SIGKILLed; prints the time
    /// from the broker stop to the sinks' next commits and the gap in progress at each join
    /// and leave.
    #[arg(long)]
    pub failover: bool,
    #[arg(long, default_value_t = 60_000)]
    pub failover_records: u64,
    #[arg(long, default_value_t = 1_500.0)]
    pub failover_rate: f64,
    /// Scenario (with `--cluster`): the same peak run (one instance per stage) on the cluster
    /// and on the single broker.
    #[arg(long)]
    pub compare_single: bool,
}

/// The overrides of a bench run: the cluster's brokers and replication with `--cluster`.
pub(super) fn bench_env(args: &BenchE2eArgs) -> Result<Vec<(String, String)>, LocalError> {
    if args.cluster {
        super::scenario::cluster_env()
    } else {
        Ok(Vec::new())
    }
}

pub(super) fn run_id(prefix: &str) -> String {
    format!("{prefix}-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S"))
}

/// Runs the demo and prints its summary.
pub async fn demo(exe: &Path, base_config: &Path, args: &DemoArgs) -> Result<(), LocalError> {
    let source = if args.no_faults {
        SourceOptions::plain(args.records)
    } else {
        SourceOptions::with_faults(args.records)
    };
    let id = run_id("demo");
    let mut env = if args.cluster {
        super::scenario::cluster_env()?
    } else {
        Vec::new()
    };
    if let Some(url) = &args.schema_registry {
        env.push(("ETL__KAFKA__SCHEMA_REGISTRY_URL".into(), url.clone()));
    }
    let mut p = LocalPipeline::prepare(exe, base_config, &args.runs_dir, &id, source, &env)?;
    eprintln!(
        "run {id}: sample API on 127.0.0.1:{} serving {} entries{}; every stage is its own process (logs in {})",
        p.api_port,
        args.records,
        if args.no_faults { "" } else { " with faults (429s, 5xx, malformed, missing fields, drift)" },
        p.dir.display()
    );
    let o = run::run_scenario(
        &mut p,
        &args.scale.clone().unwrap_or_default().0,
        Vec::new(),
        args.timeout,
        true,
    )
    .await?;
    print!("{}", run::render(&p, &o));
    Ok(())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

pub(super) fn stage_rates(o: &Outcome) -> String {
    let mut s = String::new();
    let rate = |r: Option<f64>| {
        r.map(|x| format!("{x:>10.0}/s"))
            .unwrap_or_else(|| format!("{:>12}", "-"))
    };
    let _ = writeln!(
        s,
        "  {:<11} {:>12} {:>9} {:>9} {:>10}",
        "stage", "records/s", "CPU s", "CPU %", "peak RSS"
    );
    let secs = o.elapsed.as_secs_f64().max(0.001);
    let res = |name: &str| o.resources.get(name).copied();
    let mut line = |name: &str, r: Option<f64>| {
        let (cpu, rss) = res(name)
            .map(|(c, m)| (format!("{c:.1}"), format!("{:.1} MiB", mib(m))))
            .unwrap_or(("-".into(), "-".into()));
        let pct = res(name)
            .map(|(c, _)| format!("{:.0}", 100.0 * c / secs))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "  {name:<11} {} {cpu:>9} {pct:>9} {rss:>10}", rate(r));
    };
    line("extract", o.topics.get("raw").and_then(|c| c.rate()));
    line("clean", o.topics.get("cleaned").and_then(|c| c.rate()));
    line("score", o.topics.get("scored").and_then(|c| c.rate()));
    let mysql_rate = o
        .mysql_span_ms
        .and_then(|(a, b)| (b > a).then(|| o.mysql_rows as f64 / ((b - a) as f64 / 1000.0)));
    line("sink-mysql", mysql_rate);
    let mongo_rate = o
        .sink_spans
        .get("sink-mongo")
        .filter(|d| d.as_secs_f64() > 0.5)
        .map(|d| o.mongo_docs as f64 / d.as_secs_f64());
    line("sink-mongo", mongo_rate);
    line("sample-api", None);
    if !o.services_cpu.is_empty() {
        let records = o.source_records.max(1) as f64;
        let parts: Vec<String> = o
            .services_cpu
            .iter()
            .map(|(name, cpu)| {
                let per = 1e6 * cpu / records;
                format!(
                    "{name} {cpu:.1} s ({:.0} %, {per:.1} µs/record)",
                    100.0 * cpu / secs
                )
            })
            .collect();
        let _ = writeln!(s, "  services' CPU during the run: {}", parts.join(", "));
    }
    for (sink, phases) in &o.sink_phases {
        // Phases overlap across partitions (and `wait` is between batches): each one's own
        // total, not shares of the run.
        let parts: Vec<String> = phases
            .iter()
            .map(|(phase, (n, secs))| {
                let mean = 1000.0 * secs / (*n).max(1) as f64;
                format!("{phase} {secs:.1} s ({n} × {mean:.1} ms)")
            })
            .collect();
        let _ = writeln!(s, "  {sink} phases: {}", parts.join(", "));
    }
    s.push_str(&super::run::loop_lines(o));
    s
}

/// Idle and total CPU jiffies since boot, from `/proc/stat`.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: iowait counts as busy (after a big
    // run the databases flush and drop tables: disk-bound, not CPU-bound).
    let idle = *v.get(3)?;
    Some((idle, v.iter().sum()))
}

/// Waits until the machine's CPU was at least `idle` idle over 3 s (or `max` passed); returns
/// how long it waited.
pub(super) async fn settle(idle: f64, max: Duration) -> Duration {
    let start = std::time::Instant::now();
    while start.elapsed() < max {
        let Some((i0, t0)) = cpu_jiffies() else {
            break;
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        let Some((i1, t1)) = cpu_jiffies() else {
            break;
        };
        if t1 > t0 && (i1 - i0) as f64 / (t1 - t0) as f64 >= idle {
            break;
        }
    }
    start.elapsed()
}

/// The end-to-end benchmark: peak rate, then the latency at half of it.
pub async fn bench(exe: &Path, base_config: &Path, args: &BenchE2eArgs) -> Result<(), LocalError> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "\n═══ etl-pipe end-to-end benchmark ({cpus} cores; every stage a separate process{}) ═══",
        if args.cluster {
            "; 3-broker cluster, replication 3"
        } else {
            ""
        }
    );
    if !args.clean_instances.is_empty() || args.failover || args.compare_single {
        return super::bench_scale::scenarios(exe, base_config, args).await;
    }
    let peak = if args.records > 0 {
        Some(peak_run(exe, base_config, args).await?)
    } else {
        None
    };
    let offered = offered_rate(args, peak)?;
    if args.half_rate_records > 0 {
        latency_run(exe, base_config, args, offered, peak.is_some()).await?;
    }
    Ok(())
}

/// The peak run's source: `--records` plain entries over every tier and division (28 streams).
pub(super) fn peak_source(args: &BenchE2eArgs) -> SourceOptions {
    let mut source = SourceOptions::plain(args.records);
    source.page_size = args.page_size;
    source.tiers = [
        "DIAMOND", "EMERALD", "PLATINUM", "GOLD", "SILVER", "BRONZE", "IRON",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    source.divisions = ["I", "II", "III", "IV"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    source
}

/// The peak-rate run (no rate limit anywhere); prints its figures and returns its end-to-end
/// records/s.
async fn peak_run(exe: &Path, base_config: &Path, args: &BenchE2eArgs) -> Result<f64, LocalError> {
    let id = run_id("bench");
    let mut p = LocalPipeline::prepare(
        exe,
        base_config,
        &args.runs_dir,
        &id,
        peak_source(args),
        &bench_env(args)?,
    )?;
    eprintln!("peak run {id}: {} records, unlimited rate", args.records);
    let o = run::run(&mut p, &[], args.timeout, true).await?;
    let rate = o.source_records as f64 / o.elapsed.as_secs_f64().max(0.001);
    println!(
        "peak run: {} records in {:.1} s = {:.0} records/s end to end (API → MySQL and MongoDB)",
        o.source_records,
        o.elapsed.as_secs_f64(),
        rate
    );
    print!("{}", stage_rates(&o));
    print!("{}", run::latency_lines(&o, " at peak"));
    if !args.keep {
        p.cleanup().await?;
    }
    Ok(rate)
}

/// The latency run's offered records/s: `--latency-rate`, else half the measured peak.
fn offered_rate(args: &BenchE2eArgs, peak: Option<f64>) -> Result<f64, LocalError> {
    match (args.latency_rate, peak) {
        (Some(r), _) => Ok(r),
        (None, Some(p)) => Ok(p / 2.0),
        (None, None) => Err(LocalError::Other(
            "--records 0 skips the peak run: give the latency run's rate with --latency-rate"
                .into(),
        )),
    }
}

/// The run at `offered` records/s (the API and extract rate-limited, page size 100); prints
/// its figures. After a peak run it first waits for the machine to settle.
async fn latency_run(
    exe: &Path,
    base_config: &Path,
    args: &BenchE2eArgs,
    offered: f64,
    after_peak: bool,
) -> Result<(), LocalError> {
    let what = if args.latency_rate.is_some() {
        "latency run"
    } else {
        "half-rate run"
    };
    if after_peak {
        // After a big run the databases keep flushing and compacting for a while; a
        // latency run on a busy machine measures that, not the pipeline.
        let waited = settle(0.85, Duration::from_secs(180)).await;
        eprintln!(
            "waited {:.0} s for the machine to settle (≥ 85 % idle CPU, I/O wait counted as busy, over 3 s)",
            waited.as_secs_f64()
        );
    }
    let mut half = SourceOptions::plain(args.half_rate_records);
    half.page_size = 100;
    let req_per_s = (offered / half.page_size as f64).floor().max(1.0);
    half.api_rate_limit = Some(req_per_s as u32 + 1);
    half.extract_rate_limit = req_per_s;
    let id = run_id("bench-half");
    let mut p = LocalPipeline::prepare(
        exe,
        base_config,
        &args.runs_dir,
        &id,
        half,
        &bench_env(args)?,
    )?;
    eprintln!(
        "{what} {id}: {} records at ≈ {:.0} records/s",
        args.half_rate_records,
        req_per_s * 100.0
    );
    let o = run::run(&mut p, &[], args.timeout, true).await?;
    println!(
        "\n{what}: {} records at ≈ {:.0} records/s offered ({:.0}/s achieved)",
        o.source_records,
        req_per_s * 100.0,
        o.source_records as f64 / o.elapsed.as_secs_f64().max(0.001)
    );
    print!("{}", stage_rates(&o));
    let when = if after_peak && args.latency_rate.is_none() {
        " at half rate"
    } else {
        " at the offered rate"
    };
    print!("{}", run::latency_lines(&o, when));
    if !args.keep {
        p.cleanup().await?;
    }
    Ok(())
}
