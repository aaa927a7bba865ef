//! One input partition's gate: the trailing windows of its last `score.window_records` (N)
//! and `score.min_window_records` (M) decoded records, the verdict each record gets, and the
//! tally of the block of offsets the next report covers.
//!
//! The rule (README "Quality gate"): a record is judged on the windows of the last N and the
//! last M decoded records of its partition, itself included — missing and type-error ratios
//! and PSI of each (a PSI line only on a window large enough for it), and the VIF of the long
//! window as it stood at the last block boundary (blocks are the offset ranges
//! `[k·N, (k+1)·N)`). A partition's first M − 1 records are held until M exist and are then
//! judged on that window; while the baseline is being built every record waits (outside the
//! window) and is judged on its own windows once it is there. Everything here is a function
//! of the partition's records in order: [`Lane::push`] is all there is, and a restarted stage
//! rebuilds the same state by pushing the records before its committed offset again
//! (`history`).
use std::sync::Arc;

use super::baseline::Active;
use super::window::{Held, Item};
use crate::quality::psi::psi_noise_rows;
use crate::quality::{
    Decision, FieldSpec, Metric, QualityConfig, QualityReport, Reason, Trailing, TrailingVerdict,
};
use crate::record::Record;

/// The verdict on one record (shared by the records judged together).
#[derive(Debug)]
pub(super) struct Verdict {
    pub(super) decision: Decision,
    pub(super) reasons: Vec<Reason>,
    /// The trailing window judged: `<topic>/<partition>/<first offset>-<last offset>`.
    pub(super) window: String,
    /// The reasons' messages joined with `; `.
    pub(super) message: String,
}

/// A message with its verdict, ready to be routed.
pub(super) struct Judged {
    pub(super) held: Held,
    pub(super) verdict: Arc<Verdict>,
}

/// What a block of offsets saw: its messages and the decisions made while it was current.
#[derive(Debug, Default, Clone)]
pub(super) struct Tally {
    pub(super) first_offset: i64,
    pub(super) last_offset: i64,
    pub(super) messages: u64,
    pub(super) dead_letters: u64,
    pub(super) pass: u64,
    pub(super) warn: u64,
    pub(super) fail: u64,
    /// The first verdict of the worst level judged in the block.
    pub(super) worst: Option<Arc<Verdict>>,
}

impl Tally {
    pub(super) fn decision(&self) -> Decision {
        self.worst.as_ref().map_or(Decision::Pass, |v| v.decision)
    }

    fn count(&mut self, v: &Arc<Verdict>) {
        match v.decision {
            Decision::Pass => self.pass += 1,
            Decision::Warn => self.warn += 1,
            Decision::Fail => self.fail += 1,
        }
        if self.worst.as_ref().is_none_or(|w| v.decision > w.decision) {
            self.worst = Some(v.clone());
        }
    }
}

/// A block that ended: its tally and the full report of the trailing window at its end.
pub(super) struct BlockEnd {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) tally: Tally,
    /// The trailing window at the block's last record.
    pub(super) window: String,
    pub(super) report: QualityReport,
    pub(super) psi_measured: bool,
}

/// What pushing one message gave.
#[derive(Default)]
pub(super) struct Step {
    pub(super) ended: Vec<BlockEnd>,
    pub(super) judged: Vec<Judged>,
}

/// The baseline the gate measures PSI against.
pub(super) enum Reference {
    /// A baseline (file or store).
    Ready(Arc<Active>),
    /// Being built from the first records: hold everything until it is there.
    Building,
    /// No baseline configured: no PSI.
    None,
}

/// One input partition's gate.
pub(super) struct Lane {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    /// The long window, counting its last `min_rows` records on their own too (the short
    /// window: a shift shows there while the long one still holds mostly older records).
    trail: Trailing,
    /// The fewest records a verdict rests on (`score.min_window_records`).
    min_rows: usize,
    block_size: i64,
    /// The baseline `trail` counts against (compared by pointer).
    baseline: Option<Arc<Active>>,
    /// VIF reasons of the window at the last block boundary; `None` until a full window.
    vif: Option<Vec<Reason>>,
    last_block: Option<i64>,
    tally: Tally,
    /// Messages not emitted yet, in offset order; the first `pushed` of them are in the
    /// window already (a partition's first records, waiting for a full window).
    held: Vec<Held>,
    pushed: usize,
}

impl Lane {
    /// A gate with a trailing window of `n` records; verdicts from `min_rows` records on.
    pub(super) fn new(
        topic: &str,
        partition: i32,
        specs: Vec<FieldSpec>,
        n: usize,
        min_rows: usize,
        quality: &QualityConfig,
    ) -> Lane {
        let min_rows = min_rows.clamp(1, n.max(1));
        Lane {
            topic: topic.into(),
            partition,
            min_rows,
            trail: Trailing::new(specs, n, None)
                .with_tail(min_rows)
                .judged_by(quality)
                .psi_lines_from(quality, |line| psi_noise_rows(quality.bins, line)),
            block_size: n.max(1) as i64,
            baseline: None,
            vif: None,
            last_block: None,
            tally: Tally::default(),
            held: Vec::new(),
            pushed: 0,
        }
    }

    /// The first offset still held (not judged, not emitted).
    pub(super) fn held_from(&self) -> Option<i64> {
        self.held.first().map(|h| h.offset)
    }

    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// Forgets what is held (after a replay of records that were emitted before).
    pub(super) fn drop_held(&mut self) {
        self.held.clear();
        self.pushed = 0;
    }

    /// The block (of `block_size` offsets) an offset is in.
    pub(super) fn block_of(&self, offset: i64) -> i64 {
        offset.div_euclid(self.block_size)
    }

    /// Adds a message of the partition (in offset order) and judges what can be judged.
    pub(super) fn push(&mut self, h: Held, reference: &Reference, cfg: &QualityConfig) -> Step {
        self.held.push(h);
        self.release(reference, cfg, false)
    }

    /// Adds a message read again while the partition's state is rebuilt (emitted before: its
    /// verdict is only counted in the block's tally). Builds the window even while the
    /// baseline is being built.
    pub(super) fn replay(&mut self, h: Held, reference: &Reference, cfg: &QualityConfig) {
        self.held.push(h);
        let _ = self.release(reference, cfg, true);
    }

    /// Moves the held messages into the window in order, each judged on the window ending at
    /// it once the window is full (the ones before the first full window are judged on it).
    /// Nothing moves while the baseline is being built (unless `replay`).
    pub(super) fn release(
        &mut self,
        reference: &Reference,
        cfg: &QualityConfig,
        replay: bool,
    ) -> Step {
        self.sync(reference);
        let mut step = Step::default();
        if matches!(reference, Reference::Building) && !replay {
            return step;
        }
        while self.pushed < self.held.len() {
            let offset = self.held[self.pushed].offset;
            step.ended.extend(self.advance(offset, cfg));
            let record = match &self.held[self.pushed].item {
                Item::Record(r) => Some(&r.record),
                Item::Replayed(Some(record)) => Some(record),
                Item::DeadLetter(_) | Item::Replayed(None) => None,
            };
            match record {
                Some(record) => self.trail.push(offset, record),
                None => self.tally.dead_letters += 1,
            }
            self.pushed += 1;
            if self.trail.len() < self.min_rows {
                continue;
            }
            if self.vif.is_none() {
                self.vif = Some(vif_reasons(&self.trail.report(cfg)));
            }
            let verdict = Arc::new(self.verdict(cfg));
            for held in self.held.drain(..self.pushed) {
                if matches!(held.item, Item::Record(_) | Item::Replayed(Some(_))) {
                    self.tally.count(&verdict);
                }
                step.judged.push(Judged {
                    held,
                    verdict: verdict.clone(),
                });
            }
            self.pushed = 0;
        }
        step
    }

    /// Block bookkeeping for the message at `offset` entering the window: the report of the
    /// block that ended before it, if it starts a new one.
    fn advance(&mut self, offset: i64, cfg: &QualityConfig) -> Option<BlockEnd> {
        let block = self.block_of(offset);
        let mut ended = None;
        if self.last_block.is_some_and(|b| b != block) {
            ended = self.end_block(cfg);
        }
        if self.last_block != Some(block) {
            self.tally = Tally {
                first_offset: offset,
                ..Tally::default()
            };
            self.last_block = Some(block);
        }
        self.tally.last_offset = offset;
        self.tally.messages += 1;
        ended
    }

    /// Measures against the current baseline (the window is counted again when it changed).
    fn sync(&mut self, reference: &Reference) {
        let now = match reference {
            Reference::Ready(a) => Some(a),
            _ => None,
        };
        let same = match (&self.baseline, now) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.trail.set_baseline(now.map(|a| &a.baseline));
            self.baseline = now.cloned();
        }
    }

    fn verdict(&self, cfg: &QualityConfig) -> Verdict {
        let mut v = self.trail.verdict(cfg);
        sound_only(&mut v, self.trail.len(), cfg);
        // The short window's reasons where they are worse than the long one's for the same
        // field and metric (the long window's otherwise: one reason per field and metric).
        if let Some(mut sv) = self.trail.tail_verdict(cfg) {
            sound_only(&mut sv, self.min_rows, cfg);
            for mut r in sv.reasons {
                let same = |x: &Reason| x.field == r.field && x.metric == r.metric;
                if v.reasons.iter().any(|x| same(x) && x.level >= r.level) {
                    continue;
                }
                v.reasons.retain(|x| !same(x));
                r.message = format!("{} over the last {} records", r.message, self.min_rows);
                v.decision = v.decision.max(r.level);
                v.reasons.push(r);
            }
            v.reasons.sort_by_key(|r| std::cmp::Reverse(r.level));
        }
        if let Some(vif) = &self.vif {
            if !vif.is_empty() {
                v.reasons.extend(vif.iter().cloned());
                v.reasons.sort_by_key(|r| std::cmp::Reverse(r.level));
                v.decision = v.decision.max(vif[0].level);
            }
        }
        let message = v
            .reasons
            .iter()
            .map(|r| r.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        Verdict {
            decision: v.decision,
            reasons: v.reasons,
            window: self.window_id(),
            message,
        }
    }

    /// `topic/partition/first-last` (one per record: written without `fmt`'s machinery).
    fn window_id(&self) -> String {
        let (a, b) = self.trail.tags().unwrap_or((-1, -1));
        let mut buf = itoa::Buffer::new();
        let mut id = String::with_capacity(self.topic.len() + 48);
        id.push_str(&self.topic);
        id.push('/');
        id.push_str(buf.format(self.partition));
        id.push('/');
        id.push_str(buf.format(a));
        id.push('-');
        id.push_str(buf.format(b));
        id
    }

    /// The block before the message being pushed ended: the report of the window as it
    /// stands, whose VIF holds for the next block.
    fn end_block(&mut self, cfg: &QualityConfig) -> Option<BlockEnd> {
        let tally = std::mem::take(&mut self.tally);
        if self.trail.is_empty() {
            return (tally.messages > 0).then(|| self.block_end(tally, None));
        }
        let report = self.trail.report(cfg);
        if self.trail.len() >= self.min_rows {
            self.vif = Some(vif_reasons(&report));
        }
        Some(self.block_end(tally, Some(report)))
    }

    fn block_end(&self, tally: Tally, report: Option<QualityReport>) -> BlockEnd {
        let report = report.unwrap_or_else(|| self.trail.report(&QualityConfig::default()));
        BlockEnd {
            topic: self.topic.to_string(),
            partition: self.partition,
            tally,
            window: self.window_id(),
            report,
            psi_measured: self.baseline.is_some(),
        }
    }
}

/// Drops the PSI reasons a window of `rows` rows cannot support: a PSI line counts only from
/// the size at which an unchanged distribution crosses it by chance less than once in a million
/// windows ([`psi_noise_rows`]); e.g. at 10 bins the 0.25 FAIL line from 184 rows, the 0.1
/// WARN line from 460. The decision is recomputed from what is left.
fn sound_only(v: &mut TrailingVerdict, rows: usize, cfg: &QualityConfig) {
    v.reasons
        .retain(|r| r.metric != Metric::Psi || psi_noise_rows(cfg.bins, r.threshold) <= rows);
    v.decision = crate::quality::decision::worst(&v.reasons);
}

/// The VIF reasons of a report, worst first.
fn vif_reasons(report: &QualityReport) -> Vec<Reason> {
    report
        .reasons
        .iter()
        .filter(|r| r.metric == Metric::Vif)
        .cloned()
        .collect()
}

/// A record seen again while the state of a partition is rebuilt (`None`: undecodable).
pub(super) fn replayed(offset: i64, record: Option<Record>) -> Held {
    Held {
        offset,
        item: Item::Replayed(record),
    }
}

/// The gate outside the stage, for benchmarks: one partition's records in order → the
/// decision each gets, by exactly the stage's rule.
pub struct OfflineGate {
    lane: Lane,
    reference: Reference,
    quality: QualityConfig,
}

impl OfflineGate {
    /// A gate over `specs` with a trailing window of `window_records`, PSI against
    /// `baseline` (none: no PSI).
    pub fn new(
        specs: Vec<FieldSpec>,
        window_records: usize,
        min_window_records: usize,
        baseline: Option<crate::quality::Baseline>,
        quality: &QualityConfig,
    ) -> OfflineGate {
        let reference = match baseline {
            Some(baseline) => Reference::Ready(Arc::new(Active {
                baseline,
                source: super::baseline::Source::File,
                origin: "offline".into(),
                coverage: Vec::new(),
            })),
            None => Reference::None,
        };
        OfflineGate {
            lane: Lane::new(
                "offline",
                0,
                specs,
                window_records,
                min_window_records,
                quality,
            ),
            reference,
            quality: quality.clone(),
        }
    }

    /// Adds the record at `offset` (increasing); returns `(offset, decision)` of the records
    /// judged now (a partition's first ones wait for a full window).
    pub fn push(&mut self, offset: i64, record: Record) -> Vec<(i64, Decision)> {
        self.lane.held.push(replayed(offset, Some(record)));
        self.lane
            .release(&self.reference, &self.quality, true)
            .judged
            .into_iter()
            .map(|j| (j.held.offset, j.verdict.decision))
            .collect()
    }
}
