//! Population stability index against a baseline, and the baseline itself.
//!
//! PSI = Σᵢ (aᵢ − eᵢ) · ln(aᵢ / eᵢ), over buckets i, where eᵢ is the baseline's
//! proportion and aᵢ the window's, each floored at ε (`quality.epsilon`, default 1e-4)
//! so that an empty bucket gives a large but finite term instead of ±inf/NaN. The
//! floored proportions are not renormalised (the effect is at most buckets × ε).
//! Identical distributions give exactly 0.
//!
//! Buckets:
//! - numeric fields: bins bounded by the baseline's quantiles at 1/B, 2/B, …, (B−1)/B
//!   (B = `quality.bins`, default 10), nearest-rank so that edges are observed values;
//!   equal edges (ties, discrete data) are merged, so a field can have fewer bins.
//!   Bins are right-closed: (−∞, q₁], (q₁, q₂], …, (q_{B−1}, +∞).
//! - categorical fields: the baseline's `quality.max_categories` most frequent
//!   categories, plus one "other" bucket for the rest of the baseline and for every
//!   category the baseline has not seen (so a new category shows up as mass in "other").
//!
//! The baseline is built in one pass with bounded memory ([`BaselineBuilder`]): each
//! numeric field keeps a uniform reservoir sample of `quality.baseline_sample` values
//! (default 50 000; exact when the baseline has no more values than that) from which the
//! edges and the baseline's bin proportions are taken; each categorical field counts
//! categories exactly up to 10 000 distinct values (or 10 × `max_categories` if larger),
//! after which further new categories are counted together in "other". Only valid values
//! enter the distributions: missing values and type errors are counted separately.
//!
//! A [`Baseline`] serialises to JSON (`{"format": "etl-pipe-baseline", "version": 1, …}`)
//! so the score stage can persist it and load it at start-up.
use std::collections::HashMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{classify, Classified, FieldKind, FieldSpec, FieldView, QualityConfig};

mod counts;
pub use counts::{psi_of_counts, Expected, IntLogs};

/// The `format` tag of a serialised baseline.
pub const BASELINE_FORMAT: &str = "etl-pipe-baseline";
/// The baseline format version this code reads and writes.
pub const BASELINE_VERSION: u32 = 1;

/// PSI of `actual` against `expected` proportions (same buckets), floored at `epsilon`.
/// Returns 0 for empty inputs or mismatched lengths (callers never pass those).
pub fn psi(expected: &[f64], actual: &[f64], epsilon: f64) -> f64 {
    if expected.len() != actual.len() {
        return 0.0;
    }
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (e, a) = (e.max(epsilon), a.max(epsilon));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// Counts as proportions of their total; `None` when the total is 0.
pub fn proportions(counts: &[u64]) -> Option<Vec<f64>> {
    let total: u64 = counts.iter().sum();
    (total > 0).then(|| counts.iter().map(|&c| c as f64 / total as f64).collect())
}

/// The bucket of a number: the number of edges strictly below it (right-closed bins).
pub fn bin_of(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|&e| e < x)
}

/// Rows a window needs so that the PSI of an *unchanged* distribution over `bins` buckets
/// stays under `line` with probability at least 1 − 10⁻⁶. For multinomial sampling,
/// rows · PSI ≈ rows · Σ (a − e)² / e follows a χ² distribution with bins − 1 degrees of
/// freedom; its 1 − 10⁻⁶ quantile comes from the Wilson–Hilferty approximation
/// (z = 4.753). 10 bins: 46.0 / line, i.e. 184 rows for a line of 0.25, 460 for 0.10.
/// Why 10⁻⁶ and not a laxer tail: the gate judges every record on its own sliding window, a
/// million overlapping windows per million records; measured on the sample API's undrifted
/// data (`bench-gate`, 1 M records), windows sized at the 10⁻⁴ quantile (137 rows) failed
/// 0.134 % of the records, at this size 0.001 %.
pub fn psi_noise_rows(bins: usize, line: f64) -> usize {
    if !(line.is_finite() && line > 0.0) || bins < 2 {
        return 0;
    }
    let k = (bins - 1) as f64;
    let z = 4.753;
    let q = k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3);
    (q / line).ceil() as usize
}

/// The labels of the bins between `edges`: `(-inf, e1]`, `(e1, e2]`, …, `(ek, +inf)`.
pub fn bin_labels(edges: &[f64]) -> Vec<String> {
    let mut labels = Vec::with_capacity(edges.len() + 1);
    let mut low = "-inf".to_string();
    for &e in edges {
        let high = short_number(e);
        labels.push(format!("({low}, {high}]"));
        low = high;
    }
    labels.push(format!("({low}, +inf)"));
    labels
}

/// A number in few characters: integers whole, others to 4 significant digits.
pub fn short_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e12 {
        format!("{x:.0}")
    } else if x != 0.0 && (x.abs() >= 1e6 || x.abs() < 1e-3) {
        format!("{x:.3e}")
    } else {
        let digits = (3 - x.abs().log10().floor() as i32).clamp(0, 6) as usize;
        let s = format!("{x:.digits$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
}

/// Nearest-rank quantile edges at i/bins (i = 1..bins−1) of a sorted sample, equal edges merged.
pub fn quantile_edges(sorted: &[f64], bins: usize) -> Vec<f64> {
    let n = sorted.len();
    let mut edges: Vec<f64> = Vec::with_capacity(bins.saturating_sub(1));
    if n == 0 {
        return edges;
    }
    for i in 1..bins {
        // rank = ceil(i·n / bins), 1-based.
        let rank = (i * n).div_ceil(bins).max(1);
        let q = sorted[rank - 1];
        if edges.last() != Some(&q) {
            edges.push(q);
        }
    }
    edges
}

/// A saved reference distribution for PSI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Always [`BASELINE_FORMAT`].
    pub format: String,
    /// Always [`BASELINE_VERSION`].
    pub version: u32,
    /// Rows the baseline was built from.
    pub rows: u64,
    /// `quality.bins` when it was built.
    pub bins: usize,
    pub fields: Vec<BaselineField>,
}

/// One field of a baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineField {
    pub name: String,
    /// Rows where the field was missing.
    pub missing: u64,
    /// Rows where the field had the wrong type.
    pub type_errors: u64,
    /// Valid values (what the distribution describes).
    pub values: u64,
    #[serde(flatten)]
    pub dist: FieldBaseline,
}

/// The distribution of one baseline field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FieldBaseline {
    Numeric {
        /// Values in the reservoir sample the edges come from.
        sampled: u64,
        /// Inner bin edges, strictly increasing (empty when the field had no values).
        edges: Vec<f64>,
        /// Proportion of the sample in each bin (edges.len() + 1 entries).
        proportions: Vec<f64>,
    },
    Categorical {
        /// The most frequent categories and their proportions, most frequent first.
        categories: Vec<CategoryShare>,
        /// Proportion of every other category.
        other: f64,
        /// Distinct categories seen (a lower bound when `distinct_capped`).
        distinct: u64,
        /// More distinct categories than were tracked exactly.
        distinct_capped: bool,
    },
}

/// A category and its proportion in the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryShare {
    pub value: String,
    pub proportion: f64,
}

impl FieldBaseline {
    pub fn kind(&self) -> FieldKind {
        match self {
            FieldBaseline::Numeric { .. } => FieldKind::Numeric,
            FieldBaseline::Categorical { .. } => FieldKind::Categorical,
        }
    }
}

/// A baseline that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot read baseline {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("baseline {path} is not valid baseline JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("baseline {path}: {message}")]
    Invalid { path: String, message: String },
}

impl Baseline {
    /// The field's baseline, if any.
    pub fn field(&self, name: &str) -> Option<&BaselineField> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The specs of the baseline's fields (what a window over the same fields needs).
    pub fn field_specs(&self) -> Vec<FieldSpec> {
        self.fields
            .iter()
            .map(|f| FieldSpec::new(f.name.clone(), f.dist.kind()))
            .collect()
    }

    /// Parses and checks a serialised baseline (`label` names it in errors).
    pub fn from_json(text: &str, label: &str) -> Result<Baseline, BaselineError> {
        let b: Baseline = serde_json::from_str(text).map_err(|source| BaselineError::Json {
            path: label.to_string(),
            source,
        })?;
        b.check().map_err(|message| BaselineError::Invalid {
            path: label.to_string(),
            message,
        })?;
        Ok(b)
    }

    /// Reads a baseline written by [`Baseline::to_json`].
    pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
        let text = std::fs::read_to_string(path).map_err(|source| BaselineError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Pretty JSON; numbers are all finite, so this cannot fail in practice.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    fn check(&self) -> Result<(), String> {
        if self.format != BASELINE_FORMAT || self.version != BASELINE_VERSION {
            return Err(format!(
                "format {:?} version {} (expected {BASELINE_FORMAT:?} version {BASELINE_VERSION})",
                self.format, self.version
            ));
        }
        let prop_ok = |p: f64| p.is_finite() && (0.0..=1.0 + 1e-9).contains(&p);
        for f in &self.fields {
            let ok = match &f.dist {
                FieldBaseline::Numeric {
                    edges, proportions, ..
                } => {
                    edges.iter().all(|e| e.is_finite())
                        && edges.windows(2).all(|w| w[0] < w[1])
                        && (proportions.len() == edges.len() + 1 || proportions.is_empty())
                        && proportions.iter().all(|&p| prop_ok(p))
                }
                FieldBaseline::Categorical {
                    categories, other, ..
                } => prop_ok(*other) && categories.iter().all(|c| prop_ok(c.proportion)),
            };
            if !ok {
                return Err(format!(
                    "field `{}` has invalid edges or proportions",
                    f.name
                ));
            }
        }
        Ok(())
    }
}

enum Acc {
    Numeric {
        reservoir: Vec<f64>,
        seen: u64,
    },
    Categorical {
        counts: HashMap<String, u64>,
        overflow: u64,
        capped: bool,
    },
}

/// Builds a [`Baseline`] from rows, one at a time, in bounded memory.
pub struct BaselineBuilder {
    specs: Vec<FieldSpec>,
    accs: Vec<Acc>,
    missing: Vec<u64>,
    type_errors: Vec<u64>,
    values: Vec<u64>,
    rows: u64,
    bins: usize,
    sample: usize,
    max_categories: usize,
    distinct_cap: usize,
    rng: StdRng,
}

impl BaselineBuilder {
    /// A builder for these fields with `cfg`'s bins, sample size and category limit.
    /// The reservoir sampling is seeded, so the same input gives the same baseline.
    pub fn new(specs: Vec<FieldSpec>, cfg: &QualityConfig) -> Self {
        let accs = specs
            .iter()
            .map(|s| match s.kind {
                FieldKind::Numeric => Acc::Numeric {
                    reservoir: Vec::new(),
                    seen: 0,
                },
                FieldKind::Categorical => Acc::Categorical {
                    counts: HashMap::new(),
                    overflow: 0,
                    capped: false,
                },
            })
            .collect();
        let k = specs.len();
        Self {
            specs,
            accs,
            missing: vec![0; k],
            type_errors: vec![0; k],
            values: vec![0; k],
            rows: 0,
            bins: cfg.bins.max(2),
            sample: cfg.baseline_sample.max(1),
            max_categories: cfg.max_categories.max(1),
            distinct_cap: (cfg.max_categories * 10).max(10_000),
            rng: StdRng::seed_from_u64(0x5EED_BA5E),
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn push<V: FieldView + ?Sized>(&mut self, row: &V) {
        self.rows += 1;
        for (i, spec) in self.specs.iter().enumerate() {
            match (
                classify(row.cell(i, &spec.name), spec.kind),
                &mut self.accs[i],
            ) {
                (Classified::Missing, _) => self.missing[i] += 1,
                (Classified::TypeError, _) => self.type_errors[i] += 1,
                (Classified::Number(x), Acc::Numeric { reservoir, seen }) => {
                    self.values[i] += 1;
                    *seen += 1;
                    if reservoir.len() < self.sample {
                        reservoir.push(x);
                    } else {
                        // Algorithm R: keep the new value with probability sample / seen.
                        let j = self.rng.gen_range(0..*seen);
                        if (j as usize) < self.sample {
                            reservoir[j as usize] = x;
                        }
                    }
                }
                (
                    Classified::Category(c),
                    Acc::Categorical {
                        counts,
                        overflow,
                        capped,
                    },
                ) => {
                    self.values[i] += 1;
                    if let Some(n) = counts.get_mut(c.as_ref()) {
                        *n += 1;
                    } else if counts.len() < self.distinct_cap {
                        counts.insert(c.into_owned(), 1);
                    } else {
                        *overflow += 1;
                        *capped = true;
                    }
                }
                // classify() gives numbers only to numeric fields and categories only to
                // categorical ones.
                _ => {}
            }
        }
    }

    pub fn build(self) -> Baseline {
        let bins = self.bins;
        let max_categories = self.max_categories;
        let fields = self
            .specs
            .into_iter()
            .zip(self.accs)
            .enumerate()
            .map(|(i, (spec, acc))| {
                let dist = match acc {
                    Acc::Numeric { mut reservoir, .. } => {
                        reservoir.sort_by(f64::total_cmp);
                        let edges = quantile_edges(&reservoir, bins);
                        let mut counts = vec![0u64; edges.len() + 1];
                        for &x in &reservoir {
                            counts[bin_of(&edges, x)] += 1;
                        }
                        FieldBaseline::Numeric {
                            sampled: reservoir.len() as u64,
                            proportions: proportions(&counts).unwrap_or_default(),
                            edges,
                        }
                    }
                    Acc::Categorical {
                        counts,
                        overflow,
                        capped,
                    } => {
                        let total: u64 = counts.values().sum::<u64>() + overflow;
                        let distinct = counts.len() as u64;
                        let mut sorted: Vec<(String, u64)> = counts.into_iter().collect();
                        sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                        sorted.truncate(max_categories);
                        let kept: u64 = sorted.iter().map(|(_, n)| n).sum();
                        let share = |n: u64| {
                            if total == 0 {
                                0.0
                            } else {
                                n as f64 / total as f64
                            }
                        };
                        FieldBaseline::Categorical {
                            categories: sorted
                                .into_iter()
                                .map(|(value, n)| CategoryShare {
                                    value,
                                    proportion: share(n),
                                })
                                .collect(),
                            other: share(total - kept),
                            distinct,
                            distinct_capped: capped,
                        }
                    }
                };
                BaselineField {
                    name: spec.name,
                    missing: self.missing[i],
                    type_errors: self.type_errors[i],
                    values: self.values[i],
                    dist,
                }
            })
            .collect();
        Baseline {
            format: BASELINE_FORMAT.to_string(),
            version: BASELINE_VERSION,
            rows: self.rows,
            bins,
            fields,
        }
    }
}

/// Counts a window's values into a baseline field's buckets.
#[derive(Debug, Clone)]
pub enum PsiCounter {
    Numeric {
        edges: Vec<f64>,
        expected: Vec<f64>,
        counts: Vec<u64>,
    },
    Categorical {
        index: rustc_hash::FxHashMap<String, usize>,
        /// One entry per kept category, then "other".
        expected: Vec<f64>,
        counts: Vec<u64>,
    },
}

impl PsiCounter {
    /// A counter for `field`, or `None` when the baseline has no values for it.
    pub fn new(field: &BaselineField) -> Option<PsiCounter> {
        match &field.dist {
            FieldBaseline::Numeric {
                edges, proportions, ..
            } => (!proportions.is_empty()).then(|| PsiCounter::Numeric {
                edges: edges.clone(),
                expected: proportions.clone(),
                counts: vec![0; proportions.len()],
            }),
            FieldBaseline::Categorical {
                categories, other, ..
            } => (field.values > 0).then(|| {
                let mut expected: Vec<f64> = categories.iter().map(|c| c.proportion).collect();
                expected.push(*other);
                PsiCounter::Categorical {
                    index: categories
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (c.value.clone(), i))
                        .collect(),
                    counts: vec![0; expected.len()],
                    expected,
                }
            }),
        }
    }

    pub fn add_number(&mut self, x: f64) {
        if let PsiCounter::Numeric { edges, counts, .. } = self {
            // A hand-made baseline may have fewer proportions than bins: ignore, never panic.
            if let Some(c) = counts.get_mut(bin_of(edges, x)) {
                *c += 1;
            }
        }
    }

    pub fn add_category(&mut self, c: &str) {
        if let PsiCounter::Categorical { index, counts, .. } = self {
            let other = counts.len().saturating_sub(1);
            if let Some(n) = counts.get_mut(index.get(c).copied().unwrap_or(other)) {
                *n += 1;
            }
        }
    }

    /// Counts a value whose bucket the caller found already (with these edges or categories).
    pub fn add_to_bucket(&mut self, bucket: usize) {
        let (PsiCounter::Numeric { counts, .. } | PsiCounter::Categorical { counts, .. }) = self;
        if let Some(n) = counts.get_mut(bucket) {
            *n += 1;
        }
    }

    pub fn reset(&mut self) {
        match self {
            PsiCounter::Numeric { counts, .. } | PsiCounter::Categorical { counts, .. } => {
                counts.iter_mut().for_each(|c| *c = 0)
            }
        }
    }

    /// The buckets' labels with the baseline's and the window's proportions.
    pub fn distribution(&self) -> super::window::Distribution {
        let (expected, counts, buckets) = match self {
            PsiCounter::Numeric {
                edges,
                expected,
                counts,
            } => (expected, counts, bin_labels(edges)),
            PsiCounter::Categorical {
                index,
                expected,
                counts,
            } => {
                let mut names = vec![String::new(); expected.len()];
                for (name, &i) in index {
                    if let Some(slot) = names.get_mut(i) {
                        slot.clone_from(name);
                    }
                }
                if let Some(last) = names.last_mut() {
                    *last = "other".into();
                }
                (expected, counts, names)
            }
        };
        super::window::Distribution {
            buckets,
            baseline: expected.clone(),
            window: proportions(counts).unwrap_or_else(|| vec![0.0; counts.len()]),
        }
    }

    /// The window's PSI; `None` when the window has no values for the field.
    pub fn psi(&self, epsilon: f64) -> Option<f64> {
        let (expected, counts) = match self {
            PsiCounter::Numeric {
                expected, counts, ..
            }
            | PsiCounter::Categorical {
                expected, counts, ..
            } => (expected, counts),
        };
        psi_of_counts(
            &Expected::new(expected, epsilon),
            counts,
            &IntLogs::default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::Cell;

    fn numeric_baseline(values: &[f64], bins: usize) -> Baseline {
        let cfg = QualityConfig {
            bins,
            ..Default::default()
        };
        let mut b = BaselineBuilder::new(vec![FieldSpec::new("x", FieldKind::Numeric)], &cfg);
        for &v in values {
            b.push(&[Cell::Number(v)][..]);
        }
        b.build()
    }

    fn window_psi(b: &Baseline, values: &[f64]) -> Option<f64> {
        let mut c = PsiCounter::new(&b.fields[0]).unwrap();
        for &v in values {
            c.add_number(v);
        }
        c.psi(1e-4)
    }

    #[test]
    fn quantile_edges_are_nearest_rank_and_merge_ties() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(
            quantile_edges(&s, 10),
            vec![10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
        );
        // 70 % zeros, 30 % ones: edges 0 and 1 only.
        let s: Vec<f64> = (0..100).map(|i| if i < 70 { 0.0 } else { 1.0 }).collect();
        assert_eq!(quantile_edges(&s, 10), vec![0.0, 1.0]);
        assert!(quantile_edges(&[], 10).is_empty());
        assert_eq!(bin_of(&[10.0, 20.0], 10.0), 0);
        assert_eq!(bin_of(&[10.0, 20.0], 10.5), 1);
        assert_eq!(bin_of(&[10.0, 20.0], 99.0), 2);
    }

    #[test]
    fn distribution_labels_bins_and_categories() {
        assert_eq!(
            bin_labels(&[10.0, 20.5]),
            vec!["(-inf, 10]", "(10, 20.5]", "(20.5, +inf)"]
        );
        assert_eq!(short_number(0.123456), "0.1235");
        assert_eq!(short_number(1234.5678), "1235");
        assert_eq!(short_number(2e-5), "2.000e-5");
        let base: Vec<f64> = (0..1000).map(f64::from).collect();
        let b = numeric_baseline(&base, 10);
        let mut c = PsiCounter::new(&b.fields[0]).unwrap();
        let empty = c.distribution();
        assert_eq!(empty.buckets.len(), 10);
        assert!(empty.window.iter().all(|&p| p == 0.0));
        for x in [5000.0, 5001.0] {
            c.add_number(x);
        }
        let d = c.distribution();
        assert_eq!(d.buckets[0], "(-inf, 99]");
        assert_eq!(d.window[9], 1.0);
        assert!((d.baseline[0] - 0.1).abs() < 1e-12);
    }

    #[test]
    fn noise_rows_follow_the_chi_square_quantile() {
        // χ²(9) at 1 − 1e-6 is 45.72 (exact); Wilson–Hilferty gives 45.98.
        assert_eq!(psi_noise_rows(10, 0.25), 184);
        assert_eq!(psi_noise_rows(10, 0.10), 460);
        assert_eq!(psi_noise_rows(10, f64::INFINITY), 0);
    }

    #[test]
    fn identical_distributions_have_zero_psi() {
        let values: Vec<f64> = (0..1000).map(|i| ((i * 37) % 1000) as f64).collect();
        let b = numeric_baseline(&values, 10);
        assert_eq!(window_psi(&b, &values), Some(0.0));
    }

    #[test]
    fn a_known_shift_gives_its_psi() {
        // Baseline 0..999: deciles (…,99], (99,199], … with 10 % each.
        let base: Vec<f64> = (0..1000).map(f64::from).collect();
        let b = numeric_baseline(&base, 10);
        let FieldBaseline::Numeric {
            edges, proportions, ..
        } = &b.fields[0].dist
        else {
            panic!()
        };
        assert_eq!(edges[0], 99.0);
        assert!(proportions.iter().all(|&p| (p - 0.1).abs() < 1e-12));
        // Window: 5 % in each of the lower five deciles, 15 % in each upper one.
        let mut w = Vec::new();
        for d in 0..10 {
            let n = if d < 5 { 5 } else { 15 };
            w.extend((0..n).map(|i| (d * 100 + i) as f64));
        }
        // By hand: 5·(0.05−0.1)·ln(0.5) + 5·(0.15−0.1)·ln(1.5)
        //        = 0.25·0.693147 + 0.25·0.405465 = 0.274653.
        let expected = 5.0 * (-0.05) * 0.5f64.ln() + 5.0 * 0.05 * 1.5f64.ln();
        let got = window_psi(&b, &w).unwrap();
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
        assert!((got - 0.274653).abs() < 1e-6);
    }

    #[test]
    fn empty_bins_use_epsilon_and_stay_finite() {
        let base: Vec<f64> = (0..1000).map(f64::from).collect();
        let b = numeric_baseline(&base, 10);
        // Everything above the baseline's maximum: one bucket at 1, nine at 0.
        let got = window_psi(&b, &[5000.0; 10]).unwrap();
        let eps: f64 = 1e-4;
        let expected = 9.0 * (eps - 0.1) * (eps / 0.1).ln() + (1.0 - 0.1) * (1.0f64 / 0.1).ln();
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
        assert!(got.is_finite());
        assert_eq!(window_psi(&b, &[]), None);
    }

    #[test]
    fn categorical_psi_with_unseen_and_rare_categories() {
        let cfg = QualityConfig {
            max_categories: 2,
            ..Default::default()
        };
        let mut b = BaselineBuilder::new(vec![FieldSpec::new("t", FieldKind::Categorical)], &cfg);
        // A 50 %, B 30 %, C 20 % → kept A, B; C goes to other (20 %).
        for (v, n) in [("A", 50), ("B", 30), ("C", 20)] {
            for _ in 0..n {
                b.push(&[Cell::Text(v)][..]);
            }
        }
        b.push(&[Cell::Null][..]);
        let base = b.build();
        let f = &base.fields[0];
        assert_eq!((f.values, f.missing), (100, 1));
        let FieldBaseline::Categorical {
            categories,
            other,
            distinct,
            ..
        } = &f.dist
        else {
            panic!()
        };
        assert_eq!(categories[0].value, "A");
        assert!((other - 0.2).abs() < 1e-12 && *distinct == 3);

        let mut c = PsiCounter::new(f).unwrap();
        // Window: A 40 %, B 30 %, C 10 %, D (never seen) 20 % → other 30 %.
        for (v, n) in [("A", 40), ("B", 30), ("C", 10), ("D", 20)] {
            for _ in 0..n {
                c.add_category(v);
            }
        }
        let expected = (0.4 - 0.5) * (0.4f64 / 0.5).ln() + (0.3 - 0.2) * (0.3f64 / 0.2).ln();
        let got = c.psi(1e-4).unwrap();
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
    }

    #[test]
    fn baseline_round_trips_through_json_and_rejects_garbage() {
        let base: Vec<f64> = (0..500).map(|i| (i % 37) as f64 * 1.5).collect();
        let b = numeric_baseline(&base, 10);
        let back = Baseline::from_json(&b.to_json(), "t").unwrap();
        assert_eq!(back, b);
        assert_eq!(
            back.field_specs(),
            vec![FieldSpec::new("x", FieldKind::Numeric)]
        );
        assert!(b
            .to_json()
            .starts_with("{\n  \"format\": \"etl-pipe-baseline\""));
        let bad = b.to_json().replace("\"version\": 1", "\"version\": 9");
        assert!(Baseline::from_json(&bad, "t")
            .unwrap_err()
            .to_string()
            .contains("version"));
        assert!(Baseline::from_json("[1]", "t").is_err());
    }

    #[test]
    fn reservoir_sample_estimates_quantiles_of_a_long_stream() {
        let cfg = QualityConfig {
            baseline_sample: 20_000,
            ..Default::default()
        };
        let mut b = BaselineBuilder::new(vec![FieldSpec::new("x", FieldKind::Numeric)], &cfg);
        // 0..200 000 in a scrambled order; true deciles at 20 000, 40 000, …
        for i in 0u64..200_000 {
            b.push(&[Cell::Number(((i * 7919) % 200_000) as f64)][..]);
        }
        let base = b.build();
        let FieldBaseline::Numeric { edges, sampled, .. } = &base.fields[0].dist else {
            panic!()
        };
        assert_eq!(*sampled, 20_000);
        for (i, e) in edges.iter().enumerate() {
            let truth = (i + 1) as f64 * 20_000.0;
            // ±4 standard errors of a sample quantile: sqrt(p(1−p)/n)·N ≈ 0.0035·200 000.
            assert!((e - truth).abs() < 3_000.0, "edge {i}: {e} vs {truth}");
        }
    }
}
