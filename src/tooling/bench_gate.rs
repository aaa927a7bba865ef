//! `etl-pipe bench-gate`: how often the quality gate is wrong on the sample API's data.
//! Offline (no Kafka): the sample API's entries, in the order the extractor fetches them
//! (`extract.concurrency` streams at a time, page by page), mapped by the `[clean]` mapping,
//! spread over partitions by key, judged by the stage's own rule ([`OfflineGate`]) with the
//! `[score]` fields and baseline file and the `[quality]` thresholds. Two runs: undrifted data
//! (false alarms = FAIL decisions / records) and the sample API's drift from page
//! `--drift-after-pages` of every stream on (caught = FAIL among drifted records; collateral =
//! FAIL among undrifted ones). For comparison, the same records judged by the rule before
//! issue 17 with windows closed by count only (`tumbling`): that rule also closed windows by
//! age, which depends on timing and cannot be replayed offline.
use std::time::Instant;

use crate::config::Config;
use crate::quality::{Decision, FieldSpec, QualityConfig, WindowStats};
use crate::record::Record;
use crate::stages::clean::{Lineage, Mapper};
use crate::stages::score::OfflineGate;
use crate::tooling::sample_api::data::Dataset;

#[derive(Debug, clap::Args)]
pub struct BenchGateArgs {
    /// Records per run (one undrifted run, one drifted run).
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Partitions the records are spread over (by key).
    #[arg(long, default_value_t = 3)]
    pub partitions: u32,
    /// Entries per API page.
    #[arg(long, default_value_t = 100)]
    pub page_size: u64,
    /// The drifted run: every stream drifts after this many pages (default: half its pages).
    #[arg(long)]
    pub drift_after_pages: Option<u64>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Decisions counted in one run by one rule.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    records: u64,
    drifted: u64,
    fail: u64,
    warn: u64,
    fail_drifted: u64,
}

impl Tally {
    fn add(&mut self, d: Decision, drifted: bool) {
        self.records += 1;
        self.drifted += u64::from(drifted);
        match d {
            Decision::Fail => {
                self.fail += 1;
                self.fail_drifted += u64::from(drifted);
            }
            Decision::Warn => self.warn += 1,
            Decision::Pass => {}
        }
    }

    fn line(&self, rule: &str) -> String {
        let pct = |a: u64, b: u64| {
            if b == 0 {
                0.0
            } else {
                100.0 * a as f64 / b as f64
            }
        };
        let clean = self.records - self.drifted;
        if self.drifted == 0 {
            format!(
                "  {rule:<10} FAIL {:.3} % ({} of {}), WARN {:.3} %",
                pct(self.fail, self.records),
                self.fail,
                self.records,
                pct(self.warn, self.records)
            )
        } else {
            format!(
                "  {rule:<10} caught {:.2} % of drifted ({} of {}); FAIL {:.2} % of undrifted ({} of {})",
                pct(self.fail_drifted, self.drifted),
                self.fail_drifted,
                self.drifted,
                pct(self.fail - self.fail_drifted, clean),
                self.fail - self.fail_drifted,
                clean
            )
        }
    }
}

/// One partition under the rule before issue 17, windows closed by count only.
struct Tumbling {
    stats: WindowStats,
    drifted: Vec<bool>,
}

pub fn run(cfg: &Config, args: &BenchGateArgs) -> Result<(), String> {
    let clean = cfg.clean_or_default();
    let schema = clean.load_schema().map_err(|e| e.to_string())?;
    let mapper = Mapper::new(&schema, &clean).map_err(|e| e.to_string())?;
    let score = cfg.score.clone().unwrap_or_default();
    let resolved = score
        .resolve(cfg.kafka.transaction_timeout, &clean)
        .map_err(|e| e.to_string())?;
    let Some(baseline) = resolved.baseline else {
        return Err("bench-gate needs a baseline file (score.baseline)".into());
    };
    let n = score.window_records;
    println!(
        "bench-gate: {} records per run, {} partitions, window {n}, verdicts from {} records (short window), fields {}, baseline {} ({} rows), concurrency {}, load average {}",
        args.records,
        args.partitions,
        score.min_window(&cfg.quality),
        resolved
            .specs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
        score.baseline.as_ref().map_or(String::new(), |p| p.display().to_string()),
        baseline.rows,
        cfg.extract.concurrency,
        load_average()
    );
    for drift in [None, Some(())] {
        let mut data = Dataset::new(args.records, args.page_size, args.seed);
        if drift.is_some() {
            let pages = data.pages(0).max(2);
            data.drift_after_pages = Some(args.drift_after_pages.unwrap_or(pages / 2));
        }
        let started = Instant::now();
        let parts = args.partitions.max(1) as usize;
        let mut gates: Vec<OfflineGate> = (0..parts)
            .map(|_| {
                OfflineGate::new(
                    resolved.specs.clone(),
                    n,
                    score.min_window(&cfg.quality),
                    Some(baseline.clone()),
                    &cfg.quality,
                )
            })
            .collect();
        let mut tumbling: Vec<Tumbling> = (0..parts)
            .map(|_| Tumbling {
                stats: WindowStats::new(resolved.specs.clone(), Some(&baseline)),
                drifted: Vec::new(),
            })
            .collect();
        let mut drifted_at: Vec<Vec<bool>> = vec![Vec::new(); parts];
        let (mut now, mut before) = (Tally::default(), Tally::default());
        for i in fetch_order(&data, cfg.extract.concurrency.max(1) as u64) {
            let Some((key, record)) = map(&mapper, &data, i) else {
                continue;
            };
            let p = (fnv(key.as_bytes()) % parts as u64) as usize;
            let drifted = data.drifted(i);
            let offset = drifted_at[p].len() as i64;
            drifted_at[p].push(drifted);
            push_tumbling(
                &mut tumbling[p],
                &record,
                drifted,
                n,
                &resolved.specs,
                &cfg.quality,
                &mut before,
            );
            for (o, d) in gates[p].push(offset, record) {
                now.add(d, drifted_at[p][o as usize]);
            }
        }
        let title = if drift.is_some() {
            format!(
                "drifted run (every stream from page {} on)",
                data.drift_after_pages.unwrap_or(0) + 1
            )
        } else {
            "undrifted run (false alarms)".to_string()
        };
        println!("{title}, {:.1} s:", started.elapsed().as_secs_f64());
        println!("{}", now.line("trailing"));
        println!("{}", before.line("tumbling"));
        println!(
            "  (each partition's last records: {} judged by the trailing rule, {} by tumbling windows; the rest wait for more records)",
            now.records, before.records
        );
    }
    println!("load average after: {}", load_average());
    Ok(())
}

fn push_tumbling(
    t: &mut Tumbling,
    record: &Record,
    drifted: bool,
    n: usize,
    _specs: &[FieldSpec],
    quality: &QualityConfig,
    tally: &mut Tally,
) {
    t.stats.push(record);
    t.drifted.push(drifted);
    if t.drifted.len() >= n {
        let d = t.stats.report(quality).decision;
        for x in t.drifted.drain(..) {
            tally.add(d, x);
        }
        t.stats.reset();
    }
}

/// Entry indices in the order the extractor fetches them: `concurrency` streams at a time,
/// their pages in turn.
fn fetch_order(data: &Dataset, concurrency: u64) -> impl Iterator<Item = u64> + '_ {
    let streams = data.streams();
    (0..streams.div_ceil(concurrency)).flat_map(move |g| {
        let group: Vec<u64> = (g * concurrency..((g + 1) * concurrency).min(streams)).collect();
        let pages = group.iter().map(|&c| data.pages(c)).max().unwrap_or(0);
        (1..=pages).flat_map(move |page| {
            let group = group.clone();
            group
                .into_iter()
                .flat_map(move |c| data.page_range(c, page))
        })
    })
}

/// Entry `i` as the clean stage maps it; `None` for what clean would dead-letter.
fn map(mapper: &Mapper, data: &Dataset, i: u64) -> Option<(String, Record)> {
    let json = data.entry_json(i);
    let lineage = Lineage {
        source: "bench-gate",
        trace_id: None,
        topic: "raw",
        partition: 0,
        offset: i as i64,
        fetched_at_ms: Some(1_700_000_000_000),
    };
    let m = mapper.map(json.as_bytes(), &lineage).ok()?;
    Some((m.key.unwrap_or_else(|| data.key(i)), m.record))
}

/// FNV-1a: a fixed spread of keys over partitions.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
