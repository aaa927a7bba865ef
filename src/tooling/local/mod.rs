//! Runs the whole pipeline on this machine as separate processes — the sample API and every
//! stage — against the local stack, and tallies where every source record ended up. Used by
//! `etl-pipe demo` (the README's first command), the end-to-end test and `etl-pipe bench-e2e`.
//!
//! Each run gets its own pipeline name, topics, MySQL table and Mongo collection (`<run id>`),
//! so runs never see each other's data and their counts are exact. This module owns
//! [`LocalPipeline`]: a run's config and its processes (start, crash, restart, stop, resource
//! use, clean-up). [`run`] drives one run, `watch` follows it while it goes, [`tally`] counts
//! where the records ended up, `services` reads the stack's CPU, [`cli`] holds the commands.
mod bench_scale;
pub mod cli;
pub mod instances;
pub mod prom;
pub mod run;
pub mod scenario;
mod services;
pub mod tally;
mod watch;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{Config, TopicRole};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Topics(#[from] crate::kafka::topics::TopicsError),
    #[error("mysql: {0}")]
    Mysql(String),
    #[error("mongo: {0}")]
    Mongo(String),
    #[error("{0}")]
    Other(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Io { what, source }
}

/// The sample API's data and faults for a run.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub records: u64,
    pub page_size: u64,
    pub tiers: Vec<String>,
    pub divisions: Vec<String>,
    /// Requests/s the API answers before it sends 429 (`None` = unlimited).
    pub api_rate_limit: Option<u32>,
    /// Requests/s the extractor allows itself (0 = unlimited).
    pub extract_rate_limit: f64,
    pub fail_rate: f64,
    pub malformed_rate: f64,
    pub missing_rate: f64,
    pub drift_after_pages: Option<u64>,
    pub seed: u64,
}

impl SourceOptions {
    /// The `sample-api` flags that serve this source (all but the address).
    pub fn api_args(&self) -> Vec<String> {
        let mut flags: Vec<(&str, String)> = vec![
            ("--records", self.records.to_string()),
            ("--page-size", self.page_size.to_string()),
            ("--seed", self.seed.to_string()),
            ("--queues", "RANKED_SOLO_5x5".into()),
            ("--tiers", self.tiers.join(",")),
            ("--divisions", self.divisions.join(",")),
            ("--fail-rate", self.fail_rate.to_string()),
            ("--malformed-rate", self.malformed_rate.to_string()),
            ("--missing-rate", self.missing_rate.to_string()),
        ];
        if let Some(r) = self.api_rate_limit {
            flags.push(("--rate-limit", r.to_string()));
        }
        if let Some(d) = self.drift_after_pages {
            flags.push(("--drift-after-pages", d.to_string()));
        }
        flags
            .into_iter()
            .flat_map(|(flag, value)| [flag.to_string(), value])
            .collect()
    }

    /// The extract settings (`ETL__EXTRACT__*`) that fetch exactly this source: its queue,
    /// tiers and divisions, and the extractor's own rate limit.
    pub fn extract_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "ETL__EXTRACT__VARS__QUEUE".into(),
                "[\"RANKED_SOLO_5x5\"]".into(),
            ),
            ("ETL__EXTRACT__VARS__TIER".into(), toml_list(&self.tiers)),
            (
                "ETL__EXTRACT__VARS__DIVISION".into(),
                toml_list(&self.divisions),
            ),
            (
                "ETL__EXTRACT__RATE_LIMIT".into(),
                format!("{:.1}", self.extract_rate_limit),
            ),
        ]
    }

    /// A clean source of `records` entries.
    pub fn plain(records: u64) -> Self {
        SourceOptions {
            records,
            page_size: 200,
            tiers: vec!["DIAMOND".into(), "EMERALD".into()],
            divisions: vec!["I".into()],
            api_rate_limit: None,
            extract_rate_limit: 0.0,
            fail_rate: 0.0,
            malformed_rate: 0.0,
            missing_rate: 0.0,
            drift_after_pages: None,
            seed: 42,
        }
    }

    /// The demo's faults: 429s, 5xx, malformed records, missing fields, and a drift in the
    /// last third of every stream.
    pub fn with_faults(records: u64) -> Self {
        let mut s = Self::plain(records);
        let pages_per_stream = records
            .div_ceil(s.tiers.len() as u64 * s.divisions.len() as u64)
            .div_ceil(s.page_size);
        s.api_rate_limit = Some(40);
        s.extract_rate_limit = 50.0;
        s.fail_rate = 0.05;
        s.malformed_rate = 0.005;
        s.missing_rate = 0.02;
        s.drift_after_pages = Some((pages_per_stream * 2 / 3).max(1));
        s
    }
}

/// A running local pipeline.
pub struct LocalPipeline {
    exe: PathBuf,
    /// The config file every process reads (`ETL_CONFIG`), overridden by `env`.
    pub base_config: PathBuf,
    /// Run directory: effective config, one log file per process.
    pub dir: PathBuf,
    pub run_id: String,
    /// The `ETL__*` overrides every process of the run gets.
    pub env: Vec<(String, String)>,
    /// Overrides for the instances of one stage only, on top of `env` (its own Kafka
    /// principal and password, database user): stage name → variables.
    pub stage_env: BTreeMap<String, Vec<(String, String)>>,
    /// The effective config (base file + overrides).
    pub cfg: Config,
    pub source: SourceOptions,
    pub api_port: u16,
    /// Running processes by name: `sample-api`, and `<stage>-<n>` for instance n of a stage
    /// (also its `pipeline.instance`, hence its transactional id).
    children: BTreeMap<String, Child>,
    /// Each process's arguments (a restart reuses them).
    args: BTreeMap<String, Vec<String>>,
    /// Instances sent SIGTERM (scaled down) and not yet gone: when, and the grace they get.
    stopping: BTreeMap<String, (Child, Instant)>,
    /// Per instance: start, end and the last figures read from it ([`instances`]).
    pub(crate) instances: BTreeMap<String, instances::Instance>,
    restarts: BTreeMap<String, u32>,
    /// Each process's `/metrics` port.
    ports: BTreeMap<String, u16>,
    /// Processes that exited by themselves (extract `--once`): status, CPU seconds, peak RSS.
    finished: BTreeMap<String, (std::process::ExitStatus, f64, u64)>,
    /// The last `/proc` reading of each process ([`LocalPipeline::sample`]).
    seen: BTreeMap<String, (f64, u64)>,
}

/// Stages in start order (sinks first so they are ready when data arrives).
pub const STAGES: [&str; 4] = ["sink-mysql", "sink-mongo", "score", "clean"];

/// A port to listen on, below Linux's ephemeral range (32768–60999), from which outgoing
/// connections draw theirs: one took a port `:0` had handed out ("Address already in use").
pub fn free_port() -> Result<u16, LocalError> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut last = None;
    for _ in 0..200 {
        let port = rng.gen_range(20_000..32_000);
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => return Ok(port),
            Err(e) => last = Some(e),
        }
    }
    Err(io("finding a free port in 20000-31999")(
        last.unwrap_or_else(|| std::io::Error::other("none")),
    ))
}

impl LocalPipeline {
    /// Prepares a run: names, ports, config. `base_config` is the TOML file the stages read.
    pub fn prepare(
        exe: &Path,
        base_config: &Path,
        runs_dir: &Path,
        run_id: &str,
        source: SourceOptions,
        extra_env: &[(String, String)],
    ) -> Result<LocalPipeline, LocalError> {
        let dir = runs_dir.join(run_id);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let api_port = free_port()?;
        let table = run_id.replace(['-', '.'], "_");
        let mut env: Vec<(String, String)> = vec![
            ("ETL__PIPELINE__NAME".into(), run_id.into()),
            ("ETL__SINK__MYSQL__TABLE".into(), format!("league_entry_{table}")),
            ("ETL__SINK__MONGO__COLLECTION".into(), format!("league_entry_{table}")),
            (
                "ETL__EXTRACT__URL".into(),
                format!("http://127.0.0.1:{api_port}/lol/league-exp/v4/entries/{{queue}}/{{tier}}/{{division}}"),
            ),
            (
                "ETL__EXTRACT__PROBE__URL".into(),
                format!("http://127.0.0.1:{api_port}/lol/status/v4/platform-data"),
            ),
            ("ETL__OBSERVABILITY__LOG_FORMAT".into(), "json".into()),
        ];
        env.extend(source.extract_env());
        for role in TopicRole::ALL {
            env.push((
                format!("ETL__TOPICS__{}__NAME", role.key().to_uppercase()),
                format!("{run_id}.{}", role.key().replace('_', "-")),
            ));
        }
        env.extend(extra_env.iter().cloned());
        let text = std::fs::read_to_string(base_config)
            .map_err(io(format!("reading {}", base_config.display())))?;
        let mut all_env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(crate::config::ENV_PREFIX))
            .collect();
        all_env.extend(
            env.iter()
                .filter(|(k, _)| k.starts_with(crate::config::ENV_PREFIX))
                .cloned(),
        );
        let mut cfg =
            Config::from_toml_with_env(&text, &base_config.display().to_string(), &all_env)?;
        // Against a cluster (ETL__KAFKA__BROKERS), unless the replication is set explicitly:
        // min(3, brokers), as the cluster's min.insync.replicas=2 needs.
        const RF: &str = "ETL__TOPICS__REPLICATION_FACTOR";
        if !all_env.iter().any(|(k, _)| k == RF) {
            if let Some(rf) = scenario::replication_for(&cfg) {
                env.push((RF.into(), rf.to_string()));
                all_env.push((RF.into(), rf.to_string()));
                cfg = Config::from_toml_with_env(
                    &text,
                    &base_config.display().to_string(),
                    &all_env,
                )?;
            }
        }
        std::fs::write(dir.join("config.toml"), cfg.to_toml())
            .map_err(io("writing the run's config"))?;
        let base_config = std::fs::canonicalize(base_config)
            .map_err(io(format!("resolving {}", base_config.display())))?;
        Ok(LocalPipeline {
            exe: exe.to_path_buf(),
            base_config,
            dir,
            run_id: run_id.into(),
            env,
            stage_env: BTreeMap::new(),
            cfg,
            source,
            api_port,
            children: BTreeMap::new(),
            args: BTreeMap::new(),
            stopping: BTreeMap::new(),
            instances: BTreeMap::new(),
            restarts: BTreeMap::new(),
            ports: BTreeMap::new(),
            finished: BTreeMap::new(),
            seen: BTreeMap::new(),
        })
    }

    /// Path of a process's log file.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Starts `etl-pipe <args>` as process `name`, its output appended to `<name>.log`.
    pub fn spawn(&mut self, name: &str, args: &[String]) -> Result<(), LocalError> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .map_err(io(format!("opening {name}.log")))?;
        let err = log.try_clone().map_err(io("cloning a log handle"))?;
        let port = free_port()?;
        let own: &[(String, String)] = self
            .stage_env
            .iter()
            .find(|(stage, _)| instances::instance_number(name, stage).is_some())
            .map_or(&[], |(_, v)| v.as_slice());
        let child = Command::new(&self.exe)
            .args(args)
            .envs(self.env.iter().map(|(a, b)| (a, b)))
            .envs(own.iter().map(|(a, b)| (a, b)))
            .env("ETL_CONFIG", &self.base_config)
            .env("ETL__OBSERVABILITY__HTTP_PORT", port.to_string())
            // A stable instance id per replica (`clean-0`, `clean-1`, as a StatefulSet ordinal
            // would give) makes a restarted instance fence its killed predecessor's open
            // transaction at once (with the default `<host>-<pid>` it stays open up to
            // `kafka.transaction_timeout`); replicas of a stage differ in it, so each has its
            // own transactional id.
            .env("ETL__PIPELINE__INSTANCE", name)
            // A killed stage's partitions move to its restarted self after 6 s (the brokers'
            // minimum) instead of 45 s: the crash test's restarted clean sat idle that long.
            .env("ETL__KAFKA__SESSION_TIMEOUT", "6s")
            .env("ETL_API_TOKEN", "demo-token")
            .env("SAMPLE_API_TOKEN", "demo-token")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(io(format!("starting {name}")))?;
        self.children.insert(name.into(), child);
        self.args.insert(name.into(), args.to_vec());
        self.ports.insert(name.into(), port);
        self.finished.remove(name);
        self.instances
            .entry(name.into())
            .or_insert_with(|| instances::Instance::new(name))
            .started();
        Ok(())
    }

    /// The running instances of `stage` (`<stage>-<n>`), by instance number.
    pub fn instances_of(&self, stage: &str) -> Vec<String> {
        let mut v: Vec<(u32, String)> = self
            .children
            .keys()
            .filter_map(|k| instances::instance_number(k, stage).map(|n| (n, k.clone())))
            .collect();
        v.sort();
        v.into_iter().map(|(_, k)| k).collect()
    }

    /// A process name, or a stage name standing for its running instances.
    fn resolve(&self, name: &str) -> Vec<String> {
        if self.children.contains_key(name) || self.finished.contains_key(name) {
            return vec![name.to_string()];
        }
        self.instances_of(name)
    }

    /// GET `path` from a running process's HTTP server: (status, body), `None` when it does
    /// not answer.
    async fn get(&self, name: &str, path: &str) -> Option<(u16, String)> {
        let name = self.resolve(name).into_iter().next()?;
        let port = self.ports.get(&name)?;
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .ok()?;
        let r = client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    }

    /// The `/metrics` text of a running process (`None` when it does not answer).
    pub async fn metrics(&self, name: &str) -> Option<String> {
        self.get(name, "/metrics").await.map(|(_, body)| body)
    }

    /// Whether a running process's `/readyz` answers 200 (for a stage: any of its instances).
    pub async fn ready(&self, name: &str) -> bool {
        for n in self.resolve(name) {
            if matches!(self.get(&n, "/readyz").await, Some((200, _))) {
                return true;
            }
        }
        false
    }

    /// Removes what the run left behind: its topics, its MySQL table and the sink-mysql offsets
    /// rows of its consumer group, its Mongo collection. For throwaway runs (`bench-e2e`, the
    /// end-to-end test); every stage must be stopped first.
    pub async fn cleanup(&self) -> Result<(), LocalError> {
        let cfg = &self.cfg;
        let names: Vec<String> = cfg.topics.all()?.into_iter().map(|t| t.name).collect();
        crate::kafka::topics::delete(&cfg.kafka, &names).await?;
        let table = tally::mysql_table(cfg)?;
        let pool = tally::mysql_pool(cfg).await?;
        let mysql = |e: sqlx::Error| LocalError::Mysql(e.to_string());
        sqlx::query(&format!("DROP TABLE IF EXISTS `{table}`"))
            .execute(&pool)
            .await
            .map_err(mysql)?;
        let offsets = &cfg.sink.mysql.offsets_table;
        let r = sqlx::query(&format!("DELETE FROM `{offsets}` WHERE consumer_group = ?"))
            .bind(cfg.pipeline.group_id("sink-mysql"))
            .execute(&pool)
            .await;
        if let Err(e) = r {
            // No offsets table: the sink never started.
            if !tally::no_such_table(&e.to_string()) {
                return Err(mysql(e));
            }
        }
        pool.close().await;
        tally::mongo_collection(cfg)
            .await?
            .drop()
            .await
            .map_err(|e| LocalError::Mongo(e.to_string()))?;
        Ok(())
    }

    /// Creates the run's topics.
    pub async fn apply_topics(&self) -> Result<(), LocalError> {
        let specs = self.cfg.topics.all()?;
        crate::kafka::topics::apply(&self.cfg.kafka, &specs).await?;
        Ok(())
    }

    /// Starts the sample API and waits until it answers.
    pub async fn start_sample_api(&mut self) -> Result<(), LocalError> {
        let mut args: Vec<String> = vec!["sample-api".into(), "--port".into()];
        args.push(self.api_port.to_string());
        args.extend(self.source.api_args());
        self.spawn("sample-api", &args)?;
        let url = format!("http://127.0.0.1:{}/healthz", self.api_port);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            self.check_alive("sample-api")?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(LocalError::Other(format!(
            "the sample API did not answer within 20s (log: {})",
            self.log_path("sample-api").display()
        )))
    }

    /// Starts one more instance of a stage (`clean`, `score`, `sink-mysql`, `sink-mongo`, or
    /// `extract` with args): `<stage>-<n>`, n the lowest number no running instance has.
    /// Returns its name.
    pub fn start(&mut self, stage: &str, extra: &[&str]) -> Result<String, LocalError> {
        let mut args: Vec<String> = vec![stage.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let taken: Vec<String> = self
            .children
            .keys()
            .chain(self.stopping.keys())
            .cloned()
            .collect();
        let n = (0..)
            .find(|n| !taken.contains(&format!("{stage}-{n}")))
            .unwrap_or(0);
        let name = format!("{stage}-{n}");
        self.spawn(&name, &args)?;
        Ok(name)
    }

    /// Fails when a process exited (names its log); for a stage, when any instance did.
    pub fn check_alive(&mut self, name: &str) -> Result<(), LocalError> {
        for n in self.resolve(name) {
            self.check_alive_one(&n)?;
        }
        Ok(())
    }

    fn check_alive_one(&mut self, name: &str) -> Result<(), LocalError> {
        if let Some(c) = self.children.get_mut(name) {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(LocalError::Other(format!(
                    "{name} exited ({status}); last lines of {}:\n{}",
                    self.log_path(name).display(),
                    tail(&self.log_path(name), 15)
                )));
            }
        }
        Ok(())
    }

    /// The exit status of a process if it has exited. Reaps it with `wait4`, which also gives
    /// its CPU time and peak RSS (its `/proc` entry is gone once it exited).
    pub fn exited(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        if let Some(f) = self.finished.get(name) {
            return Some(f.0);
        }
        let pid = self.children.get(name)?.id() as libc::pid_t;
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is valid; wait4 only writes into the two out-params.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our own child, not yet reaped (it is still in `children`).
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r != pid {
            return None;
        }
        // Reaped: forget the handle, so nothing signals a pid that may be reused.
        self.children.remove(name);
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let cpu = secs(usage.ru_utime) + secs(usage.ru_stime);
        let st = std::os::unix::process::ExitStatusExt::from_raw(status);
        // Not ru_maxrss: a child started with vfork/posix_spawn inherits the parent's
        // high-water mark at exec. The peak is the last `/proc` VmHWM the watcher sampled
        // (a high-water mark only grows; the last sample is at most one poll old).
        let rss = self.seen.get(name).map_or(0, |s| s.1);
        self.finished.insert(name.to_string(), (st, cpu, rss));
        if let Some(i) = self.instances.get_mut(name) {
            i.ended(instances::End::Exited);
        }
        Some(st)
    }

    /// The pid of a running process.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children.get(name).map(|c| c.id())
    }

    /// SIGKILL, as a crash; for a stage, its first running instance. Returns the name killed.
    pub fn kill9(&mut self, name: &str) -> Result<String, LocalError> {
        let Some(name) = self.resolve(name).into_iter().next() else {
            return Err(LocalError::Other(format!(
                "no running process {name} to kill"
            )));
        };
        if let Some(mut c) = self.children.remove(&name) {
            c.kill().map_err(io(format!("killing {name}")))?;
            let _ = c.wait();
            if let Some(i) = self.instances.get_mut(&name) {
                i.ended(instances::End::Killed);
            }
        }
        Ok(name)
    }

    /// Starts a killed instance again, same name, instance id and arguments (its log continues
    /// in the same file).
    pub fn restart(&mut self, name: &str) -> Result<(), LocalError> {
        let Some(args) = self.args.get(name).cloned() else {
            return Err(LocalError::Other(format!("{name} was never started")));
        };
        *self.restarts.entry(name.into()).or_default() += 1;
        self.spawn(name, &args)
    }

    /// Reads a live process's resource use now and keeps it for after its exit.
    pub fn sample(&mut self, name: &str) {
        if let Some(r) = self.resources(name) {
            self.seen.insert(name.to_string(), r);
        }
    }

    /// Resource use of a live process: (CPU seconds, peak RSS bytes) from /proc.
    pub fn resources(&self, name: &str) -> Option<(f64, u64)> {
        if let Some((_, cpu, rss)) = self.finished.get(name) {
            return Some((*cpu, *rss));
        }
        let pid = self.pid(name)?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let cpu = services::cpu_seconds(&stat)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let hwm = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<u64>().ok())?;
        Some((cpu, hwm * 1024))
    }

    /// SIGTERM to every process (graceful: stages commit the batch in hand), then SIGKILL
    /// whatever is still running after `grace`.
    pub fn stop_all(&mut self, grace: Duration) {
        for (name, (c, _)) in std::mem::take(&mut self.stopping) {
            self.children.insert(name, c);
        }
        for (name, i) in self.instances.iter_mut() {
            if self.children.contains_key(name) {
                i.ended(instances::End::Stopped);
            }
        }
        for (_, c) in self.children.iter_mut() {
            if let Ok(None) = c.try_wait() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(c.id().to_string())
                    .status();
            }
        }
        let deadline = Instant::now() + grace;
        for (_, c) in self.children.iter_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.children.clear();
    }

    pub fn restarts(&self) -> &BTreeMap<String, u32> {
        &self.restarts
    }
}

impl Drop for LocalPipeline {
    fn drop(&mut self) {
        self.stop_all(Duration::from_secs(10));
    }
}

fn toml_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", items.join(", "))
}

/// The last `n` lines of a file (for error messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
