//! A trailing window: the quality figures of the last N rows of a stream, kept up to date
//! row by row. Missing and type-error counts and PSI bucket counts are integers (a row in,
//! the oldest row out), so the figures after a row depend on the last N rows only — not on
//! what came before them or on how the stream was cut into batches. VIF is not updated row
//! by row: [`Trailing::stats`] gives a fresh [`WindowStats`] of the rows held (the full
//! report, VIF included) when the caller wants one.
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::decision::Thresholds;
use super::psi::{bin_of, psi_of_counts, Expected, IntLogs};
use super::{
    classify, Baseline, Cell, Classified, Decision, FieldKind, FieldSpec, FieldView, Metric,
    QualityConfig, Reason, WindowStats,
};

/// One field's value in a held row, classified once.
#[derive(Debug, Clone)]
enum Slot {
    Missing,
    TypeError,
    Number(f64),
    /// Shared with the baseline's bucket of that category when it has one (no allocation
    /// per row for the categories the baseline knows).
    Category(Arc<str>),
}

/// A held row: its classified values, its PSI bucket per field, and a tag of the caller's
/// (the input offset in the score stage).
#[derive(Debug, Clone)]
struct Row {
    tag: i64,
    /// Per field: its value and its PSI bucket.
    cells: Vec<(Slot, Option<u32>)>,
}

impl Row {
    /// Field `i`'s value as [`classify`] gave it, with its PSI bucket.
    fn classified(&self, i: usize) -> (Classified<'_>, Option<u32>) {
        match self.cells.get(i) {
            Some((Slot::Number(x), b)) => (Classified::Number(*x), *b),
            Some((Slot::Category(s), b)) => (Classified::Category(Cow::Borrowed(s)), *b),
            Some((Slot::TypeError, _)) => (Classified::TypeError, None),
            Some((Slot::Missing, _)) | None => (Classified::Missing, None),
        }
    }
}

impl FieldView for Row {
    fn cell(&self, index: usize, _name: &str) -> Cell<'_> {
        match self.cells.get(index).map(|(slot, _)| slot) {
            Some(Slot::Number(x)) => Cell::Number(*x),
            Some(Slot::Category(s)) => Cell::Text(s),
            Some(Slot::TypeError) => Cell::Other,
            Some(Slot::Missing) | None => Cell::Null,
        }
    }
}

/// Where a field's values fall among its baseline's PSI buckets.
#[derive(Debug, Clone)]
enum Buckets {
    Numeric {
        edges: Vec<f64>,
    },
    Categorical {
        /// Bucket and shared name of each category the baseline lists.
        index: FxHashMap<String, (usize, Arc<str>)>,
        other: usize,
    },
}

impl Buckets {
    fn of(&self, slot: &Slot) -> Option<u32> {
        match (self, slot) {
            (Buckets::Numeric { edges }, Slot::Number(x)) => Some(bin_of(edges, *x) as u32),
            (Buckets::Categorical { index, other }, Slot::Category(c)) => {
                Some(index.get(&**c).map_or(*other, |(b, _)| *b) as u32)
            }
            _ => None,
        }
    }
}

/// A field's counts over the held rows.
#[derive(Debug, Clone, Default)]
struct Counts {
    missing: u64,
    type_errors: u64,
    /// Per PSI bucket; empty when the field has no PSI (no baseline for it).
    buckets: Vec<u64>,
    expected: Vec<f64>,
    map: Option<Buckets>,
    /// The baseline's floored proportions and their logarithms for the last ε asked for
    /// (the config's: it does not change between verdicts).
    logs_for: RefCell<Option<Expected>>,
}

impl Counts {
    /// PSI of the counted values against `expected` ([`psi_of_counts`]; `None` without
    /// values): no logarithm per row, the integers' are looked up in `logs`.
    fn psi(&self, epsilon: f64, logs: &IntLogs) -> Option<f64> {
        let mut cached = self.logs_for.borrow_mut();
        if cached
            .as_ref()
            .is_none_or(|e| e.epsilon().to_bits() != epsilon.to_bits())
        {
            *cached = Some(Expected::new(&self.expected, epsilon));
        }
        psi_of_counts(cached.as_ref()?, &self.buckets, logs)
    }
}

/// Adds (`by` = 1) or removes (−1) a held row's missing, type-error and bucket counts.
fn count_row(counts: &mut [Counts], row: &Row, by: i64) {
    let step = |n: &mut u64| *n = n.saturating_add_signed(by);
    for (c, (slot, bucket)) in counts.iter_mut().zip(&row.cells) {
        match slot {
            Slot::Missing => step(&mut c.missing),
            Slot::TypeError => step(&mut c.type_errors),
            _ => {}
        }
        if let Some(n) = bucket.and_then(|b| c.buckets.get_mut(b as usize)) {
            step(n);
        }
    }
}

/// What a held cell adds to its field's counts: missing, a type error, or a value in a PSI
/// bucket (`None`: a value no bucket counts). Two cells with the same key leave the counts as
/// they were when one replaces the other.
fn count_key(cell: &(Slot, Option<u32>)) -> (u8, Option<u32>) {
    match cell {
        (Slot::Missing, _) => (0, None),
        (Slot::TypeError, _) => (1, None),
        (_, b) => (2, *b),
    }
}

/// A window's reasons per field from the last verdict, reused for the fields whose counts
/// have not changed since (a row in and a row out alike for that field): a field's reasons
/// depend on its counts, the window's row count and the thresholds only. Kept only when the
/// thresholds are fixed ([`Trailing::judged_by`]).
#[derive(Debug, Clone, Default)]
struct Memo {
    rows: usize,
    epsilon: u64,
    /// `None`: to be judged again.
    fields: Vec<Option<Vec<Reason>>>,
}

impl Memo {
    fn stale(&mut self, field: usize) {
        if let Some(f) = self.fields.get_mut(field) {
            *f = None;
        }
    }

    fn clear(&mut self) {
        self.fields.clear();
    }
}

/// The last `capacity` rows of a stream and their quality figures.
#[derive(Debug, Clone)]
pub struct Trailing {
    specs: Vec<FieldSpec>,
    capacity: usize,
    rows: VecDeque<Row>,
    counts: Vec<Counts>,
    baseline: Option<Baseline>,
    /// The short window: its size and the counts of the last that many rows (a tail of
    /// `rows`, so its rows are classified once).
    tail: Option<(usize, Vec<Counts>)>,
    /// Per field, its missing-ratio, type-error-ratio and PSI thresholds, looked up once
    /// ([`Trailing::judged_by`]); looked up per verdict otherwise.
    limits: Option<Vec<[Thresholds; 3]>>,
    /// Per field, the fewest rows on which its PSI WARN and FAIL lines are judged
    /// ([`Trailing::psi_lines_from`]); every line on any window otherwise.
    psi_rows: Option<Vec<[usize; 2]>>,
    /// ln of 0..=capacity (a window's counts and totals), for PSI per row.
    logs: IntLogs,
    /// The accumulators [`Trailing::report`] refills (built once per baseline: building
    /// them copies the baseline's buckets).
    scratch: RefCell<Option<WindowStats>>,
    /// The long window's and the tail's reasons per field from their last verdicts.
    memo: RefCell<[Memo; 2]>,
}

/// The decision on the rows held, from missing and type-error ratios and PSI.
#[derive(Debug, Clone, PartialEq)]
pub struct TrailingVerdict {
    pub decision: Decision,
    /// WARN and FAIL reasons, worst first.
    pub reasons: Vec<Reason>,
}

impl Trailing {
    /// An empty window of `capacity` rows over these fields, PSI against `baseline`.
    pub fn new(specs: Vec<FieldSpec>, capacity: usize, baseline: Option<&Baseline>) -> Self {
        let mut t = Trailing {
            counts: vec![Counts::default(); specs.len()],
            specs,
            capacity: capacity.max(1),
            rows: VecDeque::with_capacity(capacity.min(1 << 16)),
            baseline: None,
            tail: None,
            limits: None,
            psi_rows: None,
            logs: IntLogs::upto(capacity.clamp(1, 1 << 16)),
            scratch: RefCell::new(None),
            memo: RefCell::default(),
        };
        t.set_baseline(baseline);
        t
    }

    /// Looks the fields' thresholds up in `cfg` once: every verdict after this judges by
    /// them, whatever config it is given (use it when the config does not change).
    pub fn judged_by(mut self, cfg: &QualityConfig) -> Self {
        self.limits = Some(
            self.specs
                .iter()
                .map(|s| {
                    [Metric::MissingRatio, Metric::TypeErrorRatio, Metric::Psi]
                        .map(|m| cfg.thresholds(&s.name, m))
                })
                .collect(),
        );
        self
    }

    /// Judges a PSI line only on a window of at least `rows_for(line)` rows (the score
    /// stage's rule: [`super::psi::psi_noise_rows`]); a smaller window's PSI gives no reason
    /// for that line, and its PSI is not computed when neither line applies. The same verdict
    /// as dropping those reasons afterwards, without making them (each is a formatted message).
    pub fn psi_lines_from(mut self, cfg: &QualityConfig, rows_for: impl Fn(f64) -> usize) -> Self {
        self.psi_rows = Some(
            self.specs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let psi = match &self.limits {
                        Some(l) => l[i][2],
                        None => cfg.thresholds(&s.name, Metric::Psi),
                    };
                    [rows_for(psi.warn), rows_for(psi.fail)]
                })
                .collect(),
        );
        self
    }

    /// Also counts the last `size` rows on their own (a short window inside this one; no
    /// effect unless smaller than the capacity). See [`Trailing::tail_verdict`].
    pub fn with_tail(mut self, size: usize) -> Self {
        if size > 0 && size < self.capacity {
            self.tail = Some((size, Vec::new()));
            self.recount_tail();
        }
        self
    }

    /// The tail's counts afresh from the last rows (its buckets shaped like the window's).
    fn recount_tail(&mut self) {
        self.memo.get_mut()[1].clear();
        let Some((size, tail)) = &mut self.tail else {
            return;
        };
        *tail = self
            .counts
            .iter()
            .map(|c| Counts {
                buckets: vec![0; c.buckets.len()],
                expected: c.expected.clone(),
                ..Counts::default()
            })
            .collect();
        let skip = self.rows.len().saturating_sub(*size);
        for row in self.rows.iter().skip(skip) {
            count_row(tail, row, 1);
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.rows.len() >= self.capacity
    }

    /// Tags of the oldest and the newest row held.
    pub fn tags(&self) -> Option<(i64, i64)> {
        Some((self.rows.front()?.tag, self.rows.back()?.tag))
    }

    /// Measures PSI against `baseline` from now on (the held rows are counted again).
    pub fn set_baseline(&mut self, baseline: Option<&Baseline>) {
        self.baseline = baseline.cloned();
        self.scratch.take();
        self.memo.get_mut().iter_mut().for_each(Memo::clear);
        for (i, spec) in self.specs.iter().enumerate() {
            let c = &mut self.counts[i];
            c.map = None;
            c.buckets.clear();
            c.expected.clear();
            c.logs_for.take();
            let Some(field) = baseline.and_then(|b| b.field(&spec.name)) else {
                continue;
            };
            if field.dist.kind() != spec.kind {
                continue;
            }
            let Some(counter) = super::psi::PsiCounter::new(field) else {
                continue;
            };
            let (map, expected) = match counter {
                super::psi::PsiCounter::Numeric {
                    edges, expected, ..
                } => (Buckets::Numeric { edges }, expected),
                super::psi::PsiCounter::Categorical {
                    index, expected, ..
                } => {
                    let other = expected.len().saturating_sub(1);
                    let index = index
                        .into_iter()
                        .map(|(name, b)| {
                            let shared = Arc::from(name.as_str());
                            (name, (b, shared))
                        })
                        .collect();
                    (Buckets::Categorical { index, other }, expected)
                }
            };
            c.buckets = vec![0; expected.len()];
            c.expected = expected;
            c.map = Some(map);
        }
        for row in self.rows.iter_mut() {
            for (i, (slot, bucket)) in row.cells.iter_mut().enumerate() {
                let b = self.counts[i].map.as_ref().and_then(|m| m.of(slot));
                *bucket = b;
                if let Some(n) = b.and_then(|b| self.counts[i].buckets.get_mut(b as usize)) {
                    *n += 1;
                }
            }
        }
        self.recount_tail();
    }

    /// Adds a row (tagged `tag`); the oldest one leaves when the window is full.
    pub fn push<V: FieldView + ?Sized>(&mut self, tag: i64, row: &V) {
        // A full window's oldest row leaves first (the counts are integers: the order of a
        // row in and a row out does not change them); its cells' buffer takes the new row.
        // The leaving row's cells are overwritten field by field, a field whose cell counts
        // as the old one did keeping its memoised reasons.
        let (mut cells, reuse) = match self.rows.len() >= self.capacity {
            true => match self.rows.pop_front() {
                Some(old) => {
                    self.forget(&old);
                    (old.cells, true)
                }
                None => (Vec::new(), false),
            },
            false => (Vec::with_capacity(self.specs.len()), false),
        };
        let memo = self.memo.get_mut();
        for (i, spec) in self.specs.iter().enumerate() {
            let c = &mut self.counts[i];
            let (slot, b) = match classify(row.cell(i, &spec.name), spec.kind) {
                Classified::Missing => {
                    c.missing += 1;
                    (Slot::Missing, None)
                }
                Classified::TypeError => {
                    c.type_errors += 1;
                    (Slot::TypeError, None)
                }
                Classified::Number(x) => {
                    let slot = Slot::Number(x);
                    let b = c.map.as_ref().and_then(|m| m.of(&slot));
                    (slot, b)
                }
                Classified::Category(name) => match &c.map {
                    Some(Buckets::Categorical { index, other }) => match index.get(&*name) {
                        Some((b, shared)) => (Slot::Category(shared.clone()), Some(*b as u32)),
                        None => (Slot::Category(Arc::from(&*name)), Some(*other as u32)),
                    },
                    _ => {
                        let slot = Slot::Category(Arc::from(&*name));
                        let b = c.map.as_ref().and_then(|m| m.of(&slot));
                        (slot, b)
                    }
                },
            };
            if let Some(n) = b.and_then(|b| c.buckets.get_mut(b as usize)) {
                *n += 1;
            }
            match cells.get_mut(i).filter(|_| reuse) {
                Some(cell) => {
                    let before = count_key(cell);
                    *cell = (slot, b);
                    if count_key(cell) != before {
                        memo[0].stale(i);
                    }
                }
                None => cells.push((slot, b)),
            }
        }
        let row = Row { tag, cells };
        if let Some((size, tail)) = &mut self.tail {
            count_row(tail, &row, 1);
            // The row leaving the tail (still in the window).
            if self.rows.len() >= *size {
                let leaving = &self.rows[self.rows.len() - *size];
                count_row(tail, leaving, -1);
                for (i, (a, b)) in leaving.cells.iter().zip(&row.cells).enumerate() {
                    if count_key(a) != count_key(b) {
                        memo[1].stale(i);
                    }
                }
            }
        }
        self.rows.push_back(row);
    }

    fn forget(&mut self, row: &Row) {
        for (c, (slot, bucket)) in self.counts.iter_mut().zip(&row.cells) {
            match slot {
                Slot::Missing => c.missing = c.missing.saturating_sub(1),
                Slot::TypeError => c.type_errors = c.type_errors.saturating_sub(1),
                _ => {}
            }
            if let Some(n) = bucket.and_then(|b| c.buckets.get_mut(b as usize)) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// PSI of field `i` over the held rows; `None` without a baseline for it or values.
    pub fn psi(&self, i: usize, epsilon: f64) -> Option<f64> {
        let c = self.counts.get(i)?;
        c.map.as_ref()?;
        c.psi(epsilon, &self.logs)
    }

    /// The decision on the held rows by missing and type-error ratios and PSI (VIF is the
    /// caller's, from [`Trailing::stats`]).
    pub fn verdict(&self, cfg: &QualityConfig) -> TrailingVerdict {
        self.verdict_of(0, &self.counts, self.rows.len(), cfg)
    }

    /// The same decision on the short window ([`Trailing::with_tail`]) once it is full.
    pub fn tail_verdict(&self, cfg: &QualityConfig) -> Option<TrailingVerdict> {
        let (size, tail) = self.tail.as_ref()?;
        (self.rows.len() >= *size).then(|| self.verdict_of(1, tail, *size, cfg))
    }

    /// The verdict of window `which` (0 the long one, 1 the tail), each field's reasons
    /// taken from the memo when its counts are as they were at the last verdict.
    fn verdict_of(
        &self,
        which: usize,
        counts: &[Counts],
        rows: usize,
        cfg: &QualityConfig,
    ) -> TrailingVerdict {
        let mut memo = self.memo.borrow_mut();
        let memo = &mut memo[which];
        let epsilon = cfg.epsilon.to_bits();
        // Thresholds looked up per verdict may change with `cfg`: no memo then.
        if self.limits.is_none() || memo.rows != rows || memo.epsilon != epsilon {
            memo.clear();
        }
        memo.rows = rows;
        memo.epsilon = epsilon;
        memo.fields.resize(self.specs.len(), None);
        let mut reasons = Vec::new();
        for (i, field) in memo.fields.iter_mut().enumerate() {
            let mine = field.get_or_insert_with(|| self.field_reasons(i, &counts[i], rows, cfg));
            reasons.extend(mine.iter().cloned());
        }
        reasons.sort_by_key(|r| std::cmp::Reverse(r.level));
        TrailingVerdict {
            decision: super::decision::worst(&reasons),
            reasons,
        }
    }

    /// Field `i`'s reasons on a window of `rows` rows with these counts.
    fn field_reasons(&self, i: usize, c: &Counts, rows: usize, cfg: &QualityConfig) -> Vec<Reason> {
        let mut reasons = Vec::new();
        if rows == 0 {
            return reasons;
        }
        let n = rows as f64;
        let spec = &self.specs[i];
        let [missing, type_errors, mut psi] = match &self.limits {
            Some(l) => l[i],
            None => [Metric::MissingRatio, Metric::TypeErrorRatio, Metric::Psi]
                .map(|m| cfg.thresholds(&spec.name, m)),
        };
        if let Some([warn_rows, fail_rows]) = self.psi_rows.as_ref().map(|p| p[i]) {
            if rows < warn_rows {
                psi.warn = f64::INFINITY;
            }
            if rows < fail_rows {
                psi.fail = f64::INFINITY;
            }
        }
        let judge = QualityConfig::judge_with;
        reasons.extend(judge(
            missing,
            &spec.name,
            Metric::MissingRatio,
            c.missing as f64 / n,
        ));
        reasons.extend(judge(
            type_errors,
            &spec.name,
            Metric::TypeErrorRatio,
            c.type_errors as f64 / n,
        ));
        // A field whose PSI lines are both off (e.g. a near-unique name) is not measured.
        if self.counts[i].map.is_none() || !(psi.warn.is_finite() || psi.fail.is_finite()) {
            return reasons;
        }
        if let Some(v) = c.psi(cfg.epsilon, &self.logs) {
            reasons.extend(judge(psi, &spec.name, Metric::Psi, v));
        }
        reasons
    }

    /// A fresh [`WindowStats`] of the held rows (the full report: moments, PSI, VIF).
    pub fn stats(&self) -> WindowStats {
        let mut w = WindowStats::new(self.specs.clone(), self.baseline.as_ref());
        for r in &self.rows {
            w.push(r);
        }
        w
    }

    /// `self.stats().report(cfg)`, refilling the same accumulators each time.
    pub fn report(&self, cfg: &QualityConfig) -> super::QualityReport {
        let mut scratch = self.scratch.borrow_mut();
        let w = scratch
            .get_or_insert_with(|| WindowStats::new(self.specs.clone(), self.baseline.as_ref()));
        w.reset();
        for r in &self.rows {
            w.push_cells(|i, _| r.classified(i));
        }
        w.report(cfg)
    }

    /// Whether any field is numeric (VIF can apply).
    pub fn has_numeric(&self) -> bool {
        self.specs.iter().any(|s| s.kind == FieldKind::Numeric)
    }
}

#[cfg(test)]
mod tests;
