//! `etl-pipe bench-extract`: one full pass from an in-process sample API into fresh topics,
//! printing records/s, requests, MB/s and peak RSS. A measurement, not a test.
use std::net::SocketAddr;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secret, SecretRef, TopicRole};
use crate::stages::extract::{run, ExtractError, RunOptions, RunReport};
use crate::tooling::sample_api::{self, Dataset, SampleApiOptions};

/// `etl-pipe bench-extract` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Records in the sample dataset.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Entries per page.
    #[arg(long, default_value_t = 205)]
    pub page_size: u64,
    /// Streams fetched at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Dataset seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Keep the bench's topics (by default they are deleted after the run).
    #[arg(long)]
    pub keep_topics: bool,
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub records: u64,
    pub page_size: u64,
    pub concurrency: usize,
    pub seed: u64,
    /// Keep the bench's topics afterwards (deleted by default).
    pub keep_topics: bool,
}

async fn delete_topics(cfg: &Config, names: &[String]) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = crate::kafka::base_config(&cfg.kafka)
        .create()
        .map_err(|e| e.to_string())?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    admin
        .delete_topics(&refs, &AdminOptions::new())
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub options: BenchOptions,
    pub run: RunReport,
    pub raw_topic: String,
    /// Peak resident set of the whole process (sample API included), in MiB.
    pub peak_rss_mib: Option<f64>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.run;
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "bench-extract: {} records, page size {}, concurrency {} -> topic {}{}",
            self.options.records,
            self.options.page_size,
            self.options.concurrency,
            self.raw_topic,
            if self.options.keep_topics {
                ""
            } else {
                " (deleted afterwards)"
            }
        )?;
        writeln!(
            f,
            "  elapsed         {:.2} s (probe, pass and every transaction commit)",
            secs
        )?;
        writeln!(f, "  records/s       {:.0}", r.records as f64 / secs)?;
        writeln!(
            f,
            "  records         {} raw, {} dead-letter",
            r.records, r.dead_letters
        )?;
        writeln!(
            f,
            "  requests        {} ({:.0}/s, {} retries, {} rate limited), {} transactions",
            r.requests,
            r.requests as f64 / secs,
            r.retries,
            r.rate_limited,
            r.transactions
        )?;
        writeln!(
            f,
            "  HTTP in         {:.1} MB ({:.1} MB/s); raw payload {:.1} MB ({:.1} MB/s)",
            r.http_bytes as f64 / 1e6,
            r.http_bytes as f64 / 1e6 / secs,
            r.payload_bytes as f64 / 1e6,
            r.payload_bytes as f64 / 1e6 / secs
        )?;
        match self.peak_rss_mib {
            Some(m) => writeln!(
                f,
                "  peak RSS        {m:.0} MiB (extractor + sample API, one process)"
            ),
            None => writeln!(f, "  peak RSS        n/a"),
        }
    }
}

/// Peak resident set size of this process (`VmHWM`), Linux only.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Starts the sample API, creates fresh topics, runs one pass, stops the API.
pub async fn bench(base: &Config, opts: BenchOptions) -> Result<BenchReport, ExtractError> {
    let token = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let mut api_opts = SampleApiOptions::new(Dataset::new(opts.records, opts.page_size, opts.seed));
    api_opts.token = Some(Secret::new(token.clone()));
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    let api = sample_api::start(api_opts, addr)
        .await
        .map_err(|e| ExtractError::Http(format!("starting the sample API: {e}")))?;

    let mut cfg = base.clone();
    let tag = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    cfg.pipeline.name = tag.clone();
    cfg.topics.raw.name = Some(format!("{tag}.raw"));
    cfg.topics.dead_letter.name = Some(format!("{tag}.dead-letter"));
    cfg.topics.extract_state.name = Some(format!("{tag}.extract-state"));
    cfg.extract.url = api.entries_template();
    cfg.extract.probe.url = None;
    cfg.extract.rate_limit = 0.0;
    cfg.extract.concurrency = opts.concurrency;
    // The token reaches the extractor the way it does in production: as a secret file.
    let token_file = std::env::temp_dir().join(format!("{tag}.token"));
    std::fs::write(&token_file, &token)
        .map_err(|e| ExtractError::Http(format!("writing {}: {e}", token_file.display())))?;
    cfg.extract.auth.token = SecretRef {
        env: None,
        file: Some(token_file.clone()),
    };
    let specs = [
        TopicRole::Raw,
        TopicRole::DeadLetter,
        TopicRole::ExtractState,
    ]
    .iter()
    .map(|r| cfg.topics.spec(*r))
    .collect::<Result<Vec<_>, _>>()?;
    crate::kafka::topics::apply(&cfg.kafka, &specs)
        .await
        .map_err(|e| ExtractError::Kafka(e.to_string()))?;

    let t = Instant::now();
    let result = run(
        &cfg.common(),
        &cfg.extract,
        RunOptions {
            once: true,
            fresh: true,
        },
        CancellationToken::new(),
    )
    .await;
    let elapsed = t.elapsed();
    let _ = std::fs::remove_file(&token_file);
    api.stop().await;
    if !opts.keep_topics {
        // A million records is a quarter of a gigabyte on the broker: do not leave it behind.
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        if let Err(e) = delete_topics(&cfg, &names).await {
            tracing::warn!(error = %e, "could not delete the bench topics");
        }
    }
    let mut report = result?;
    report.elapsed = elapsed;
    Ok(BenchReport {
        options: opts,
        run: report,
        raw_topic: cfg.topics.name(TopicRole::Raw),
        peak_rss_mib: peak_rss_mib(),
    })
}

/// The CLI entry: runs the bench and prints the figures.
pub async fn cli_bench(cfg: &Config, args: &BenchArgs) -> Result<(), ExtractError> {
    let r = bench(
        cfg,
        BenchOptions {
            records: args.records,
            page_size: args.page_size,
            concurrency: args.concurrency,
            seed: args.seed,
            keep_topics: args.keep_topics,
        },
    )
    .await?;
    print!("{r}");
    Ok(())
}
