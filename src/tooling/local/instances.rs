//! Several instances per stage: `scale(stage, n)` adds instances to a stage's consumer group
//! or stops some (SIGTERM: they finish and commit the batch in hand, then leave the group),
//! while the run goes on. Each instance is `<stage>-<n>`: its process name, its
//! `pipeline.instance` (so its own transactional id) and its own health/metrics port.
//!
//! What each instance did is read from what the stages export: records from `/metrics`
//! (`etl_records_in_total`, `etl_records_out_total`, sampled while it runs and once more
//! before a graceful stop), partitions from its log (the "partitions assigned" / "partitions
//! revoked" events every consumer logs; cooperative rebalancing makes them incremental).
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::{LocalError, LocalPipeline};

/// How an instance's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// SIGTERM (scaled down, or the end of the run): it left the group by itself.
    Stopped,
    /// SIGTERM, but still running after the grace period: SIGKILLed.
    StopTimedOut,
    /// SIGKILL (a crash test).
    Killed,
    /// Exited by itself (extract `--once`).
    Exited,
    /// Exited with [`STUCK_EXIT_CODE`](crate::kafka::eos::STUCK_EXIT_CODE): its exactly-once
    /// loop was stuck; started again, as a supervisor would.
    Stuck,
}

/// One instance of a stage over the run (restarts included).
#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub starts: u32,
    pub first_start: Instant,
    pub end: Option<(Instant, End)>,
    /// `etl_records_in_total` / `etl_records_out_total` summed over their labels, at the last
    /// reading (a SIGKILLed process's last figures are up to one sampling interval old, and
    /// a restarted one counts from 0 again: the figures add up over its lives).
    pub records_in: u64,
    pub records_out: u64,
    /// Figures of earlier lives (before a kill).
    earlier_in: u64,
    earlier_out: u64,
}

impl Instance {
    pub(crate) fn new(name: &str) -> Self {
        Instance {
            name: name.to_string(),
            starts: 0,
            first_start: Instant::now(),
            end: None,
            records_in: 0,
            records_out: 0,
            earlier_in: 0,
            earlier_out: 0,
        }
    }

    pub(crate) fn started(&mut self) {
        if self.starts > 0 {
            self.earlier_in = self.records_in;
            self.earlier_out = self.records_out;
        }
        self.starts += 1;
        self.end = None;
    }

    pub(crate) fn ended(&mut self, how: End) {
        if self.end.is_none() {
            self.end = Some((Instant::now(), how));
        }
    }

    fn read_metrics(&mut self, text: &str) {
        self.records_in = self.earlier_in + sum_series(text, "etl_records_in_total");
        self.records_out = self.earlier_out + sum_series(text, "etl_records_out_total");
    }
}

/// n when `name` is `<stage>-<n>`.
pub fn instance_number(name: &str, stage: &str) -> Option<u32> {
    name.strip_prefix(stage)?.strip_prefix('-')?.parse().ok()
}

/// The sum of every series of a counter in Prometheus text.
pub fn sum_series(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The partition numbers of a "partitions assigned/revoked" event's `partitions` field: the
/// exactly-once loop writes `topic[0],topic[1]`, the sinks `["0@1234", "1@start"]` and `[0, 1]`.
pub fn parse_partitions(field: &str) -> Vec<i32> {
    field
        .split(',')
        .filter_map(|e| {
            let e = e.trim();
            if e.ends_with(']') && e.contains('[') && !e.starts_with('[') {
                let inner = &e[e.rfind('[')? + 1..e.len() - 1];
                return inner.parse().ok();
            }
            let e = e.trim_start_matches(['[', '"', ' ']);
            let digits: String = e.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .collect()
}

/// From an instance's log (JSON lines): the partitions it held at the end of its log and
/// every partition it was ever assigned.
pub fn partitions_from_log(text: &str) -> (BTreeSet<i32>, BTreeSet<i32>) {
    let mut now = BTreeSet::new();
    let mut ever = BTreeSet::new();
    for line in text.lines() {
        let assigned = line.contains("\"partitions assigned\"");
        let revoked = line.contains("\"partitions revoked\"");
        if !assigned && !revoked {
            continue;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let field = v
            .get("fields")
            .and_then(|f| f.get("partitions"))
            .or_else(|| v.get("partitions"))
            .and_then(|p| p.as_str())
            .unwrap_or("");
        for p in parse_partitions(field) {
            if assigned {
                now.insert(p);
                ever.insert(p);
            } else {
                now.remove(&p);
            }
        }
    }
    (now, ever)
}

impl LocalPipeline {
    /// Reads every running instance's `/metrics` and keeps its record counts.
    pub async fn sample_instances(&mut self) {
        let names: Vec<String> = self
            .children
            .keys()
            .filter(|k| self.instances.contains_key(*k))
            .cloned()
            .collect();
        for n in names {
            if let Some(text) = self.metrics(&n).await {
                if let Some(i) = self.instances.get_mut(&n) {
                    i.read_metrics(&text);
                }
            }
        }
    }

    /// Runs `n` instances of `stage`: starts new ones (lowest free numbers), or sends SIGTERM
    /// to the highest-numbered ones (they finish their batch, commit and leave the group;
    /// [`LocalPipeline::reap_stopping`] collects them). Returns the names started or stopped.
    pub async fn scale(&mut self, stage: &str, n: usize) -> Result<Vec<String>, LocalError> {
        let running = self.instances_of(stage);
        let mut changed = Vec::new();
        if running.len() < n {
            for _ in running.len()..n {
                changed.push(self.start(stage, &[])?);
            }
        } else {
            for name in running.iter().skip(n).rev() {
                self.stop_instance(name).await;
                changed.push(name.clone());
            }
        }
        Ok(changed)
    }

    /// SIGTERM to one instance, after a last reading of its figures.
    pub async fn stop_instance(&mut self, name: &str) {
        if let Some(text) = self.metrics(name).await {
            if let Some(i) = self.instances.get_mut(name) {
                i.read_metrics(&text);
            }
        }
        if let Some(c) = self.children.remove(name) {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            self.stopping.insert(name.to_string(), (c, Instant::now()));
        }
    }

    /// Collects instances that were sent SIGTERM; SIGKILLs those still running after `grace`
    /// (a stage that does not stop on SIGTERM is a defect: reported in the summary).
    pub fn reap_stopping(&mut self, grace: Duration) {
        let names: Vec<String> = self.stopping.keys().cloned().collect();
        for name in names {
            let Some((c, since)) = self.stopping.get_mut(&name) else {
                continue;
            };
            let how = match c.try_wait() {
                Ok(Some(_)) => End::Stopped,
                _ if since.elapsed() > grace => {
                    let _ = c.kill();
                    let _ = c.wait();
                    End::StopTimedOut
                }
                _ => continue,
            };
            self.stopping.remove(&name);
            if let Some(i) = self.instances.get_mut(&name) {
                i.ended(how);
            }
        }
    }

    /// Starts again, as Compose's `restart: on-failure` or a liveness probe would, every stage
    /// instance that exited because its loop was stuck
    /// ([`STUCK_EXIT_CODE`](crate::kafka::eos::STUCK_EXIT_CODE)); any other exit is left for
    /// `check_alive` to fail the run. Returns one line per restart.
    pub fn restart_stuck(&mut self) -> Result<Vec<String>, LocalError> {
        let mut restarted = Vec::new();
        // Only the stages with the exactly-once loop, and with `try_wait` like `check_alive`:
        // extract `--once` is reaped by `exited` (wait4) for its resource use.
        let mut names = self.resolve("clean");
        names.extend(self.resolve("score"));
        for name in names {
            let Some(c) = self.children.get_mut(&name) else {
                continue;
            };
            let Ok(Some(status)) = c.try_wait() else {
                continue;
            };
            if status.code() != Some(crate::kafka::eos::STUCK_EXIT_CODE) {
                continue;
            }
            self.children.remove(&name);
            if let Some(i) = self.instances.get_mut(&name) {
                i.ended(End::Stuck);
            }
            self.restart(&name)?;
            restarted.push(format!(
                "{name} exited stuck ({status}; see its log), restarted"
            ));
        }
        Ok(restarted)
    }

    /// Instances still stopping.
    pub fn stopping(&self) -> usize {
        self.stopping.len()
    }

    /// One line per instance: lifetime, how it ended, partitions at the end / ever held,
    /// records in and out.
    pub fn render_instances(&self, started: Instant) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nInstances (records from /metrics, partitions from their logs)"
        );
        let _ = writeln!(
            s,
            "  {:<13} {:>15} {:<14} {:<14} {:<14} {:>9} {:>9}",
            "instance", "alive (s)", "ended", "partitions", "ever held", "in", "out"
        );
        let at = |t: Instant| t.saturating_duration_since(started).as_secs_f64();
        for (name, i) in &self.instances {
            if name == "sample-api" {
                continue;
            }
            let (now, ever) = partitions_from_log(
                &std::fs::read_to_string(self.log_path(name)).unwrap_or_default(),
            );
            let list = |v: &BTreeSet<i32>| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                }
            };
            let ended = match i.end {
                None => "running".to_string(),
                Some((_, End::Stopped)) => "SIGTERM".into(),
                Some((_, End::StopTimedOut)) => "SIGTERM→KILL".into(),
                Some((_, End::Killed)) => "SIGKILL".into(),
                Some((_, End::Exited)) => "exited".into(),
                Some((_, End::Stuck)) => "exited stuck".into(),
            };
            let life = format!(
                "{:.0}–{}",
                at(i.first_start),
                i.end
                    .map(|(t, _)| format!("{:.0}", at(t)))
                    .unwrap_or_else(|| "end".into())
            );
            let starts = if i.starts > 1 {
                format!(" ×{}", i.starts)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "  {:<13} {:>15} {:<14} {:<14} {:<14} {:>9} {:>9}",
                format!("{name}{starts}"),
                life,
                ended,
                list(&now),
                list(&ever),
                i.records_in,
                i.records_out
            );
        }
        s
    }
}

/// Instances per stage (`--scale clean=3,sink-mysql=2`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scale(pub Vec<(String, usize)>);

impl Scale {
    pub fn parse(spec: &str) -> Result<Scale, String> {
        parse_scale(spec).map(Scale)
    }
}

/// Parses `clean=3,score=2,sink-mysql=2`: (stage, instances).
pub fn parse_scale(spec: &str) -> Result<Vec<(String, usize)>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (stage, n) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}`: expected STAGE=N"))?;
        let stage = stage.trim();
        if !super::STAGES.contains(&stage) {
            return Err(format!(
                "`{stage}`: not a scalable stage ({})",
                super::STAGES.join(", ")
            ));
        }
        let n: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("`{part}`: N must be a number"))?;
        if n == 0 {
            return Err(format!("`{part}`: at least one instance"));
        }
        out.push((stage.to_string(), n));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_of_both_log_formats() {
        assert_eq!(parse_partitions("run.raw[0],run.raw[4]"), vec![0, 4]);
        assert_eq!(parse_partitions("[\"0@12\", \"3@start\"]"), vec![0, 3]);
        assert_eq!(parse_partitions("[1, 2]"), vec![1, 2]);
        assert_eq!(parse_partitions(""), Vec::<i32>::new());
        let log = r#"{"fields":{"message":"partitions assigned","partitions":"t[0],t[1]"}}
{"fields":{"message":"partitions revoked","partitions":"t[1]"}}
{"fields":{"message":"partitions assigned","partitions":"[\"2@5\"]"}}"#;
        let (now, ever) = partitions_from_log(log);
        assert_eq!(now.into_iter().collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(ever.into_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn scale_specs_and_counters() {
        assert_eq!(
            parse_scale("clean=3, sink-mysql=2").unwrap(),
            vec![("clean".into(), 3), ("sink-mysql".into(), 2)]
        );
        assert!(parse_scale("extract=2").is_err());
        assert!(parse_scale("clean=0").is_err());
        assert_eq!(instance_number("sink-mysql-2", "sink-mysql"), Some(2));
        assert_eq!(instance_number("sink-mysql-2", "sink"), None);
        let text = "etl_records_in_total{stage=\"clean\",topic=\"a\"} 10\netl_records_in_total{topic=\"b\"} 5\netl_records_in_total_x 7\n";
        assert_eq!(sum_series(text, "etl_records_in_total"), 15);
    }
}
