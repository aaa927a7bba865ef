//! `bench-e2e`'s scenario runs: end-to-end records/s against the number of clean instances,
//! the cluster against the single broker, and a failover run (broker stop, instances joining
//! and leaving, a SIGKILL) that prints how long the sinks paused. Figures, not assertions.
use std::path::Path;
use std::time::Duration;

use super::cli::{bench_env, peak_source, run_id, settle, stage_rates, BenchE2eArgs};
use super::run::{self, Outcome};
use super::scenario::{cluster_env, Action, Step};
use super::{LocalError, LocalPipeline, SourceOptions};

pub(super) async fn scenarios(
    exe: &Path,
    base_config: &Path,
    args: &BenchE2eArgs,
) -> Result<(), LocalError> {
    let place = if args.cluster {
        "3-broker cluster"
    } else {
        "single broker"
    };
    if !args.clean_instances.is_empty() {
        let mut lines = Vec::new();
        for n in &args.clean_instances {
            let scale = vec![("clean".to_string(), *n)];
            let (rate, o) = peak(exe, base_config, args, bench_env(args)?, &scale).await?;
            let clean = o
                .topics
                .get("cleaned")
                .and_then(|c| c.rate())
                .unwrap_or(0.0);
            lines.push(format!(
                "  clean × {n}: {rate:>7.0} records/s end to end   clean stage {clean:>7.0}/s   ({:.1} s)",
                o.elapsed.as_secs_f64()
            ));
        }
        println!(
            "\nEnd-to-end records/s by clean instances ({} records, {place}, other stages × 1)",
            args.records
        );
        for l in lines {
            println!("{l}");
        }
    }
    if args.compare_single {
        let (c, oc) = peak(exe, base_config, args, cluster_env()?, &[]).await?;
        let (s, os) = peak(exe, base_config, args, Vec::new(), &[]).await?;
        println!(
            "\nCluster vs single broker ({} records, one instance per stage)",
            args.records
        );
        println!(
            "  3-broker cluster, replication 3: {c:>7.0} records/s end to end ({:.1} s)",
            oc.elapsed.as_secs_f64()
        );
        print!("{}", stage_rates(&oc));
        println!(
            "  single broker, replication 1:    {s:>7.0} records/s end to end ({:.1} s)",
            os.elapsed.as_secs_f64()
        );
        print!("{}", stage_rates(&os));
    }
    if args.failover {
        failover(exe, base_config, args).await?;
    }
    Ok(())
}

/// A peak run (no rate limit) with `scale` instances; returns its end-to-end records/s.
async fn peak(
    exe: &Path,
    base_config: &Path,
    args: &BenchE2eArgs,
    env: Vec<(String, String)>,
    scale: &[(String, usize)],
) -> Result<(f64, Outcome), LocalError> {
    let waited = settle(0.7, Duration::from_secs(30)).await;
    let id = run_id("bench");
    let mut p = LocalPipeline::prepare(
        exe,
        base_config,
        &args.runs_dir,
        &id,
        peak_source(args),
        &env,
    )?;
    eprintln!(
        "run {id}: {} records, unlimited rate, scale {scale:?}, brokers {} (waited {:.0} s for an idle machine)",
        args.records,
        p.cfg.kafka.brokers,
        waited.as_secs_f64()
    );
    let o = run::run_scenario(&mut p, scale, Vec::new(), args.timeout, true).await?;
    let rate = o.source_records as f64 / o.elapsed.as_secs_f64().max(0.001);
    if !args.keep {
        p.cleanup().await?;
    }
    Ok((rate, o))
}

/// The failover run: records at `--failover-rate` while the steps run.
async fn failover(exe: &Path, base_config: &Path, args: &BenchE2eArgs) -> Result<(), LocalError> {
    settle(0.7, Duration::from_secs(30)).await;
    let mut source = SourceOptions::plain(args.failover_records);
    source.page_size = 100;
    let req_per_s = (args.failover_rate / 100.0).floor().max(1.0);
    source.api_rate_limit = Some(req_per_s as u32 + 1);
    source.extract_rate_limit = req_per_s;
    let id = run_id("bench-failover");
    let mut p = LocalPipeline::prepare(
        exe,
        base_config,
        &args.runs_dir,
        &id,
        source,
        &bench_env(args)?,
    )?;
    // By records accounted for downstream, so every step happens while records flow.
    let at = |pct: u64, a: Action| Step::at(args.failover_records * pct / 100, a);
    let mut steps = vec![at(5, Action::Scale("clean".into(), 2))];
    if args.cluster {
        steps.push(at(15, Action::BrokerOutage(None, Duration::from_secs(20))));
    }
    steps.extend([
        at(30, Action::Scale("sink-mysql".into(), 2)),
        at(40, Action::Scale("sink-mongo".into(), 2)),
        at(50, Action::Kill("clean".into())),
        at(60, Action::Scale("clean".into(), 1)),
        at(70, Action::Scale("sink-mysql".into(), 1)),
    ]);
    eprintln!(
        "failover run {id}: {} records at ≈ {:.0} records/s, brokers {}",
        args.failover_records,
        req_per_s * 100.0,
        p.cfg.kafka.brokers
    );
    let o = run::run_scenario(&mut p, &[], steps, args.timeout, true).await?;
    println!(
        "\nFailover run: {} records at ≈ {:.0} records/s offered, {:.1} s, {:.0} records/s achieved",
        o.source_records,
        req_per_s * 100.0,
        o.elapsed.as_secs_f64(),
        o.source_records as f64 / o.elapsed.as_secs_f64().max(0.001)
    );
    for e in &o.events {
        println!(
            "  at {:>5.1} s (done {:>5.1} s): {}",
            e.at.as_secs_f64(),
            e.done.as_secs_f64(),
            e.what
        );
    }
    print!("{}", o.figures.render());
    print!("{}", o.instances);
    if !args.keep {
        p.cleanup().await?;
    }
    Ok(())
}
