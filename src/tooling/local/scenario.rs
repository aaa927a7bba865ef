//! What happens to a run while records flow: instances added and removed, SIGKILLs, a broker
//! stopped and started, MariaDB and FerretDB restarted. A scenario is a list of [`Step`]s run
//! in order; each waits for its [`Trigger`] (counted from the end of the step before it).
//!
//! Brokers and databases are stopped and started through `deploy/local/stack.sh` (pid-file
//! based, as the stack runs them), in the background, so the watcher keeps measuring while a
//! broker goes down. The run records each step's time and a commit timeline; [`Figures`] turns
//! them into the pauses `bench-e2e` prints.
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::{LocalError, LocalPipeline};
use crate::config::{Config, TopicRole};

/// When a step runs.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// Once this many records are accounted for downstream (MySQL rows written, dead letters
    /// of clean and score, quarantine), even while an earlier step's stack command runs (a
    /// broker outage goes on while instances join and leave).
    Accounted(u64),
    /// This long after the step before it finished, its stack command included (the run's
    /// start for the first step).
    After(Duration),
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Run `n` instances of a stage (start or SIGTERM the difference).
    Scale(String, usize),
    /// SIGKILL one instance (a stage name: its first instance), restart it 500 ms later with
    /// the same instance id.
    Kill(String),
    /// Stop a cluster node (SIGTERM, controlled shutdown); `None`: the node leading the most
    /// partitions of the run's topics.
    BrokerStop(Option<i32>),
    /// Start the node the last `BrokerStop` stopped.
    BrokerStart,
    /// `BrokerStop`, then the node stays down this long, then `BrokerStart`: one background
    /// command, so that later steps can run during the outage.
    BrokerOutage(Option<i32>, Duration),
    MysqlRestart,
    MongoRestart,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub when: Trigger,
    pub action: Action,
}

impl Step {
    pub fn at(accounted: u64, action: Action) -> Step {
        Step {
            when: Trigger::Accounted(accounted),
            action,
        }
    }
    pub fn after(d: Duration, action: Action) -> Step {
        Step {
            when: Trigger::After(d),
            action,
        }
    }
}

/// A step as it happened, seconds from the run's start.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Duration,
    /// When the step's command returned (a broker stop takes seconds).
    pub done: Duration,
    pub action: Action,
    pub what: String,
    /// Records accounted for downstream when the step ran.
    pub accounted: u64,
    /// For a broker stop: the node and the `scored` partitions it led.
    pub led_scored: Vec<i32>,
}

/// Where the sinks and `scored` stood at one poll.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Duration,
    pub scored: u64,
    pub mysql: HashMap<i32, i64>,
    pub mongo: HashMap<i32, i64>,
}

/// Starts a stack command in the background, its output appended to the run's stack-ops.log.
fn launch(p: &LocalPipeline, command: &str) -> Result<std::process::Child, LocalError> {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(p.dir.join("stack-ops.log"))
        .map_err(super::io("opening stack-ops.log"))?;
    let err = log.try_clone().map_err(super::io("cloning a log handle"))?;
    Command::new("bash")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(super::io("running deploy/local/stack.sh"))
}

/// `deploy/local/stack.sh` (`ETL_STACK_SCRIPT` to use another).
pub fn stack_script() -> PathBuf {
    std::env::var_os("ETL_STACK_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("deploy/local/stack.sh"))
}

/// The cluster profile's bootstrap list (`$ETL_STACK_HOME/run/cluster.bootstrap`), written by
/// `ETL_STACK_PROFILE=cluster stack.sh up`.
pub fn cluster_bootstrap() -> Result<String, LocalError> {
    let f = super::services::stack_home().join("run/cluster.bootstrap");
    let s = std::fs::read_to_string(&f).map_err(|e| {
        LocalError::Other(format!(
            "the Kafka cluster is not up ({}: {e}): run `ETL_STACK_PROFILE=cluster bash deploy/local/stack.sh up`",
            f.display()
        ))
    })?;
    Ok(s.trim().to_string())
}

/// The overrides that point a run at the cluster: its brokers and replication 3 (min ISR 2
/// comes from the brokers' `min.insync.replicas`).
pub fn cluster_env() -> Result<Vec<(String, String)>, LocalError> {
    Ok(vec![
        ("ETL__KAFKA__BROKERS".into(), cluster_bootstrap()?),
        ("ETL__TOPICS__REPLICATION_FACTOR".into(), "3".into()),
    ])
}

/// The replication factor for a run whose config does not set one explicitly: min(3, brokers)
/// when the brokers are more than one (`None`: keep the config's; also when Kafka does not
/// answer, which the run reports soon enough).
pub fn replication_for(cfg: &Config) -> Option<i32> {
    let consumer: BaseConsumer = crate::kafka::consumer_config(&cfg.kafka, "replication")
        .create()
        .ok()?;
    let md = consumer
        .client()
        .fetch_metadata(None, Duration::from_secs(5))
        .ok()?;
    let brokers = md.brokers().len() as i32;
    (brokers > 1 && cfg.topics.replication_factor < brokers.min(3)).then(|| brokers.min(3))
}

/// Per broker id, the partitions of `topics` it leads.
pub fn leaders(
    cfg: &Config,
    topics: &[String],
) -> Result<BTreeMap<i32, Vec<(String, i32)>>, LocalError> {
    let consumer: BaseConsumer = crate::kafka::consumer_config(&cfg.kafka, "leaders").create()?;
    let md = consumer
        .client()
        .fetch_metadata(None, Duration::from_secs(10))?;
    let mut out: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
    for t in md
        .topics()
        .iter()
        .filter(|t| topics.iter().any(|n| n == t.name()))
    {
        for p in t.partitions() {
            out.entry(p.leader())
                .or_default()
                .push((t.name().to_string(), p.id()));
        }
    }
    Ok(out)
}

/// The running scenario: the steps left, the stack command in flight, what happened.
pub(super) struct Runner {
    steps: std::collections::VecDeque<Step>,
    /// Start of the wait of the next step: the end of the step before it.
    since: Duration,
    /// `stack.sh` commands running in the background, and the events they belong to.
    running: Vec<(Child, usize)>,
    stopped_node: Option<i32>,
    pub events: Vec<Event>,
}

impl Runner {
    pub(super) fn new(steps: Vec<Step>) -> Runner {
        Runner {
            steps: steps.into(),
            since: Duration::ZERO,
            running: Vec::new(),
            stopped_node: None,
            events: Vec::new(),
        }
    }

    pub(super) fn done(&self) -> bool {
        self.steps.is_empty() && self.running.is_empty()
    }

    /// Runs the next step if its time has come (and the previous one finished).
    pub(super) async fn tick(
        &mut self,
        p: &mut LocalPipeline,
        now: Duration,
        accounted: u64,
    ) -> Result<(), LocalError> {
        self.reap(now)?;
        let Some(step) = self.steps.front() else {
            return Ok(());
        };
        let due = match step.when {
            Trigger::Accounted(n) => accounted >= n,
            Trigger::After(d) => self.running.is_empty() && now >= self.since + d,
        };
        if !due {
            return Ok(());
        }
        let Some(step) = self.steps.pop_front() else {
            return Ok(());
        };
        let mut ev = Event {
            at: now,
            done: now,
            action: step.action.clone(),
            what: String::new(),
            accounted,
            led_scored: Vec::new(),
        };
        let background = self.perform(p, &step.action, &mut ev).await?;
        let i = self.events.len();
        self.events.push(ev);
        match background {
            Some(command) => {
                let child = launch(p, &command)?;
                self.running.push((child, i));
            }
            None => self.since = now,
        }
        Ok(())
    }

    /// Collects the stack commands that finished; a failed one fails the run.
    fn reap(&mut self, now: Duration) -> Result<(), LocalError> {
        let mut k = 0;
        while k < self.running.len() {
            let (child, i) = &mut self.running[k];
            match child.try_wait() {
                Ok(Some(st)) => {
                    let i = *i;
                    self.running.remove(k);
                    self.events[i].done = now;
                    self.since = now;
                    if !st.success() {
                        return Err(LocalError::Other(format!(
                            "`{}` failed ({st}); see stack-ops.log in the run's directory",
                            self.events[i].what
                        )));
                    }
                }
                Ok(None) => k += 1,
                Err(e) => return Err(LocalError::Other(format!("waiting for stack.sh: {e}"))),
            }
        }
        Ok(())
    }

    /// Does a step's action now (instances) or returns the stack command that does it in the
    /// background (brokers, databases); fills in the event's description.
    async fn perform(
        &mut self,
        p: &mut LocalPipeline,
        action: &Action,
        ev: &mut Event,
    ) -> Result<Option<String>, LocalError> {
        let script = stack_script().display().to_string();
        Ok(match action {
            Action::Scale(stage, n) => {
                let before = p.instances_of(stage).len();
                let changed = p.scale(stage, *n).await?;
                ev.what = format!("scale {stage} {before}→{n} ({})", changed.join(", "));
                None
            }
            Action::Kill(stage) => {
                let name = p.kill9(stage)?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                p.restart(&name)?;
                ev.what = format!(
                    "SIGKILL {name} at {} records accounted for, restarted",
                    ev.accounted
                );
                None
            }
            Action::BrokerStop(node) | Action::BrokerOutage(node, _) => {
                Some(self.broker_stop(p, action, *node, &script, ev)?)
            }
            Action::BrokerStart => {
                let node = self.stopped_node.take().ok_or_else(|| {
                    LocalError::Other("broker-start without a broker-stop before it".into())
                })?;
                ev.what = format!("broker-start {node}");
                Some(format!("bash '{script}' broker-start {node}"))
            }
            Action::MysqlRestart => {
                ev.what = "mariadb-restart".into();
                Some(format!("bash '{script}' mariadb-restart"))
            }
            Action::MongoRestart => {
                ev.what = "ferretdb-restart".into();
                Some(format!("bash '{script}' ferretdb-restart"))
            }
        })
    }

    /// The command that stops a broker (the busiest leader unless one is named), and for an
    /// outage starts it again after the downtime.
    fn broker_stop(
        &mut self,
        p: &LocalPipeline,
        action: &Action,
        node: Option<i32>,
        script: &str,
        ev: &mut Event,
    ) -> Result<String, LocalError> {
        let node = match node {
            Some(n) => n,
            None => busiest_leader(&p.cfg)?,
        };
        let scored = p.cfg.topics.name(TopicRole::Scored);
        ev.led_scored = leaders(&p.cfg, std::slice::from_ref(&scored))?
            .remove(&node)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, part)| part)
            .collect();
        let stop = format!("bash '{script}' broker-stop {node}");
        if let Action::BrokerOutage(_, down) = action {
            ev.what = format!(
                "broker {node} down for {:.0} s (it led scored partitions {:?})",
                down.as_secs_f64(),
                ev.led_scored
            );
            Ok(format!(
                "{stop} && sleep {} && bash '{script}' broker-start {node}",
                down.as_secs_f64()
            ))
        } else {
            self.stopped_node = Some(node);
            ev.what = format!(
                "broker-stop {node} (leader of scored partitions {:?})",
                ev.led_scored
            );
            Ok(stop)
        }
    }

    /// Waits for a stack command still running (at the end of a run: a broker must be up
    /// again before the tally reads the topics).
    pub(super) fn finish(&mut self) -> Result<(), LocalError> {
        for (mut child, i) in std::mem::take(&mut self.running) {
            let st = child
                .wait()
                .map_err(|e| LocalError::Other(format!("waiting for stack.sh: {e}")))?;
            if !st.success() {
                return Err(LocalError::Other(format!(
                    "`{}` failed ({st})",
                    self.events[i].what
                )));
            }
        }
        Ok(())
    }
}

/// The node leading the most partitions of the run's topics.
fn busiest_leader(cfg: &Config) -> Result<i32, LocalError> {
    let names: Vec<String> = cfg.topics.all()?.into_iter().map(|t| t.name).collect();
    leaders(cfg, &names)?
        .into_iter()
        .filter(|(id, _)| *id >= 0)
        .max_by_key(|(_, v)| v.len())
        .map(|(id, _)| id)
        .ok_or_else(|| LocalError::Other("no partition leader found".into()))
}

/// Seconds from a broker stop to a sink's first commit on any partition, and to its first
/// commit on every `scored` partition the node led (`None`: not within the run).
pub type Recovery = (Option<f64>, Option<f64>);

/// What the timeline says about the steps.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Per broker stop, per sink: (to the first commit on any partition, to the first commit
    /// on every `scored` partition the node led), seconds.
    pub broker: Vec<(String, BTreeMap<&'static str, Recovery>)>,
    /// Per scale / kill step: the longest gap without progress in the 20 s after it (the
    /// sink's commits for a sink, `scored` growing for clean and score), and the median gap
    /// between progress polls over the whole run, seconds.
    pub pauses: Vec<(String, f64)>,
    pub typical_gap: f64,
}

fn total(m: &HashMap<i32, i64>) -> i64 {
    m.values().sum()
}

impl Figures {
    pub fn from(events: &[Event], timeline: &[Sample]) -> Figures {
        let mut f = Figures::default();
        let progress = |s: &Sample, what: &str| -> i64 {
            match what {
                "sink-mysql" => total(&s.mysql),
                "sink-mongo" => total(&s.mongo),
                _ => s.scored as i64,
            }
        };
        // Gaps between polls that saw scored grow.
        let mut gaps: Vec<f64> = timeline
            .windows(2)
            .filter(|w| w[1].scored > w[0].scored)
            .map(|w| (w[1].at - w[0].at).as_secs_f64())
            .collect();
        gaps.sort_by(f64::total_cmp);
        f.typical_gap = gaps.get(gaps.len() / 2).copied().unwrap_or(0.0);
        for e in events {
            match &e.action {
                Action::BrokerStop(_) | Action::BrokerOutage(..) => {
                    let mut per = BTreeMap::new();
                    for sink in ["sink-mysql", "sink-mongo"] {
                        let at = |s: &Sample| {
                            if sink == "sink-mysql" {
                                s.mysql.clone()
                            } else {
                                s.mongo.clone()
                            }
                        };
                        let Some(base) = timeline.iter().rev().find(|s| s.at <= e.at) else {
                            continue;
                        };
                        let base = at(base);
                        let after: Vec<&Sample> = timeline.iter().filter(|s| s.at > e.at).collect();
                        let any = after
                            .iter()
                            .find(|s| total(&at(s)) > total(&base))
                            .map(|s| (s.at - e.at).as_secs_f64());
                        let led = if e.led_scored.is_empty() {
                            None
                        } else {
                            let mut worst: Option<f64> = Some(0.0);
                            for part in &e.led_scored {
                                let b = base.get(part).copied().unwrap_or(0);
                                let t = after
                                    .iter()
                                    .find(|s| at(s).get(part).copied().unwrap_or(0) > b)
                                    .map(|s| (s.at - e.at).as_secs_f64());
                                worst = match (worst, t) {
                                    (Some(w), Some(t)) => Some(w.max(t)),
                                    _ => None,
                                };
                            }
                            worst
                        };
                        per.insert(sink, (any, led));
                    }
                    f.broker.push((e.what.clone(), per));
                }
                Action::Scale(stage, _) | Action::Kill(stage) => {
                    let window: Vec<&Sample> = timeline
                        .iter()
                        .filter(|s| s.at >= e.at && s.at <= e.at + Duration::from_secs(20))
                        .collect();
                    let mut last = window.first().map(|s| (s.at, progress(s, stage)));
                    let mut longest = 0.0f64;
                    for s in &window {
                        let v = progress(s, stage);
                        if let Some((t, before)) = last {
                            if v > before {
                                longest = longest.max((s.at - t).as_secs_f64());
                                last = Some((s.at, v));
                            }
                        }
                    }
                    // Still no progress at the end of the window.
                    if let (Some((t, _)), Some(end)) = (last, window.last()) {
                        longest = longest.max((end.at - t).as_secs_f64());
                    }
                    f.pauses.push((e.what.clone(), longest));
                }
                _ => {}
            }
        }
        f
    }

    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let secs = |x: Option<f64>| {
            x.map(|v| format!("{v:.1} s"))
                .unwrap_or_else(|| "never".into())
        };
        for (what, per) in &self.broker {
            let _ = writeln!(s, "  {what}:");
            for (sink, (any, led)) in per {
                let _ = writeln!(
                    s,
                    "    {sink:<10} first commit after the stop {:>8}; on every partition the node led {:>8}",
                    secs(*any),
                    secs(*led)
                );
            }
        }
        for (what, gap) in &self.pauses {
            let _ = writeln!(
                s,
                "  {what}: longest gap in progress over the next 20 s {gap:.1} s (median gap between progress polls {:.1} s)",
                self.typical_gap
            );
        }
        s
    }
}
