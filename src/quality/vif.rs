//! Variance inflation factors from streaming co-moments.
//!
//! VIF_j = 1 / (1 − R²_j), where R²_j comes from the least-squares regression of field j
//! on all the other numeric fields with an intercept. With R the correlation matrix of
//! the fields, 1 − R²_j is the Schur complement of R_jj (the variance of field j left
//! after removing what the others explain), so VIF_j = (R⁻¹)_jj when R is invertible.
//!
//! How it is computed:
//! - [`CoMoments::push`] updates means and the co-moment matrix
//!   C = Σ (x − x̄)(x − x̄)ᵀ with Welford's update (no raw sums of squares, so a large
//!   common offset does not cancel the variance away). O(k²) per row, O(k²) memory.
//!   Only complete rows (every field a valid number) are pushed: listwise deletion.
//! - [`CoMoments::vif`] turns C into the correlation matrix and, for each field j,
//!   eliminates the other fields one by one (largest remaining diagonal first, i.e.
//!   a pivoted Cholesky / sweep of R without field j). A field whose remaining variance
//!   falls below [`COLLINEAR_TOL`] is a linear combination of those already eliminated
//!   and is skipped, which makes the regression well defined under exact collinearity
//!   (the pseudo-inverse solution). What is left on j's diagonal is 1 − R²_j.
//! - Outcomes: 1 − R²_j < [`COLLINEAR_TOL`] → [`Vif::Infinite`] (perfect collinearity
//!   within f64 precision, i.e. any VIF above 1e10); zero variance → [`Vif::Constant`]
//!   (excluded from the other fields' regressions); fewer than k + 1 complete rows →
//!   [`VifOutcome::NotEnoughData`]; fewer than two fields → [`VifOutcome::NotApplicable`].
//!   No NaN, no panic.
//!
//! Cost of a report: O(k⁴) for k fields (k eliminations of O(k³)), e.g. ~1 ms for k = 30.

/// Remaining-variance (1 − R²) floor below which a field counts as perfectly collinear.
pub const COLLINEAR_TOL: f64 = 1e-10;

/// Relative spread (standard deviation / |mean|) below which a field counts as constant.
pub const CONSTANT_REL_TOL: f64 = 1e-13;

/// Streaming means and co-moments of k numeric fields.
#[derive(Debug, Clone, PartialEq)]
pub struct CoMoments {
    k: usize,
    n: u64,
    mean: Vec<f64>,
    /// Row-major k×k; only the upper triangle (i ≤ j) is maintained.
    c: Vec<f64>,
    delta: Vec<f64>,
}

/// The VIF of one field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Vif {
    /// A finite VIF (≥ 1).
    Value(f64),
    /// The field is (within f64 precision) a linear combination of the others.
    Infinite,
    /// The field does not vary in the complete rows of the window.
    Constant,
}

impl Vif {
    /// The VIF as a number: `Some(inf)` for infinite, `None` for constant.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Vif::Value(v) => Some(*v),
            Vif::Infinite => Some(f64::INFINITY),
            Vif::Constant => None,
        }
    }
}

/// The VIF computation for a window.
#[derive(Debug, Clone, PartialEq)]
pub enum VifOutcome {
    /// One entry per field, in field order.
    Computed(Vec<Vif>),
    /// Fewer complete rows than needed (k + 1 for k fields).
    NotEnoughData { rows: u64, needed: u64 },
    /// VIF needs at least two numeric fields.
    NotApplicable,
}

impl CoMoments {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            n: 0,
            mean: vec![0.0; k],
            c: vec![0.0; k * k],
            delta: vec![0.0; k],
        }
    }

    /// Number of fields.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Rows pushed.
    pub fn n(&self) -> u64 {
        self.n
    }

    pub fn reset(&mut self) {
        self.n = 0;
        self.mean.iter_mut().for_each(|v| *v = 0.0);
        self.c.iter_mut().for_each(|v| *v = 0.0);
    }

    /// Adds one complete row (`x.len() == k`, all finite; rows of another length are ignored).
    pub fn push(&mut self, x: &[f64]) {
        if x.len() != self.k {
            return;
        }
        self.n += 1;
        let n = self.n as f64;
        for ((&xi, mean), delta) in x.iter().zip(&mut self.mean).zip(&mut self.delta) {
            *delta = xi - *mean;
            *mean += *delta / n;
        }
        // C += δ (x − x̄_new)ᵀ, which equals (n−1)/n · δδᵀ: Welford's co-moment update.
        for i in 0..self.k {
            let di = self.delta[i];
            let row = &mut self.c[i * self.k..(i + 1) * self.k];
            for j in i..self.k {
                row[j] += di * (x[j] - self.mean[j]);
            }
        }
    }

    /// Merges another accumulator over the same fields (Chan et al.'s pairwise update),
    /// e.g. to combine partitions' windows.
    pub fn merge(&mut self, other: &CoMoments) {
        if other.k != self.k || other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = other.clone();
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        for i in 0..self.k {
            self.delta[i] = other.mean[i] - self.mean[i];
        }
        for i in 0..self.k {
            for j in i..self.k {
                self.c[i * self.k + j] +=
                    other.c[i * self.k + j] + self.delta[i] * self.delta[j] * na * nb / n;
            }
        }
        for i in 0..self.k {
            self.mean[i] += self.delta[i] * nb / n;
        }
        self.n += other.n;
    }

    /// Mean of field i.
    pub fn mean(&self, i: usize) -> Option<f64> {
        (self.n > 0 && i < self.k).then(|| self.mean[i])
    }

    /// Sample covariance of fields i and j (n − 1).
    pub fn covariance(&self, i: usize, j: usize) -> Option<f64> {
        let (a, b) = (i.min(j), i.max(j));
        (self.n >= 2 && b < self.k).then(|| self.c[a * self.k + b] / (self.n - 1) as f64)
    }

    /// The VIF of every field (see the module docs for the method and the outcomes).
    pub fn vif(&self) -> VifOutcome {
        let k = self.k;
        if k < 2 {
            return VifOutcome::NotApplicable;
        }
        let needed = k as u64 + 1;
        if self.n < needed {
            return VifOutcome::NotEnoughData {
                rows: self.n,
                needed,
            };
        }
        let n = self.n as f64;
        let constant: Vec<bool> = (0..k)
            .map(|i| {
                let cii = self.c[i * k + i];
                cii <= 0.0 || (cii / n).sqrt() <= CONSTANT_REL_TOL * self.mean[i].abs()
            })
            .collect();
        let active: Vec<usize> = (0..k).filter(|&i| !constant[i]).collect();
        let m = active.len();
        // Correlation matrix of the non-constant fields.
        let mut r = vec![0.0; m * m];
        for (a, &i) in active.iter().enumerate() {
            for (b, &j) in active.iter().enumerate() {
                r[a * m + b] = if a == b {
                    1.0
                } else {
                    let (p, q) = (i.min(j), i.max(j));
                    let cij = self.c[p * k + q];
                    (cij / (self.c[i * k + i].sqrt() * self.c[j * k + j].sqrt())).clamp(-1.0, 1.0)
                };
            }
        }
        let mut out = vec![Vif::Constant; k];
        let mut work = vec![0.0; m * m];
        let mut done = vec![false; m];
        for (a, &i) in active.iter().enumerate() {
            let rest = remaining_variance(&r, m, a, &mut work, &mut done);
            out[i] = if rest < COLLINEAR_TOL {
                Vif::Infinite
            } else {
                Vif::Value(1.0 / rest.min(1.0))
            };
        }
        VifOutcome::Computed(out)
    }
}

/// 1 − R² of variable `target` regressed on all the others, for the m×m correlation
/// matrix `r`: eliminates the others, largest remaining diagonal first, skipping those
/// whose remaining variance is below [`COLLINEAR_TOL`] (already explained).
fn remaining_variance(r: &[f64], m: usize, target: usize, a: &mut [f64], done: &mut [bool]) -> f64 {
    a.copy_from_slice(r);
    done.iter_mut().for_each(|d| *d = false);
    done[target] = true;
    loop {
        let mut pivot = None;
        let mut best = COLLINEAR_TOL;
        for p in 0..m {
            if !done[p] && a[p * m + p] >= best {
                best = a[p * m + p];
                pivot = Some(p);
            }
        }
        let Some(p) = pivot else { break };
        done[p] = true;
        let d = a[p * m + p];
        // Schur complement on the rows/columns still in play (the target's included).
        for i in 0..m {
            if done[i] && i != target {
                continue;
            }
            let f = a[i * m + p] / d;
            if f == 0.0 {
                continue;
            }
            for j in 0..m {
                if done[j] && j != target {
                    continue;
                }
                a[i * m + j] -= f * a[p * m + j];
            }
        }
    }
    a[target * m + target].max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random numbers in [0, 1) (splitmix64), so tests need no seed handling.
    pub(crate) struct Rng(u64);
    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Rng(seed)
        }
        pub(crate) fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        }
        /// Approximately standard normal (sum of 12 uniforms − 6).
        pub(crate) fn normal(&mut self) -> f64 {
            (0..12).map(|_| self.next()).sum::<f64>() - 6.0
        }
    }

    fn moments(rows: &[Vec<f64>]) -> CoMoments {
        let mut m = CoMoments::new(rows[0].len());
        for r in rows {
            m.push(r);
        }
        m
    }

    fn values(o: VifOutcome) -> Vec<Vif> {
        match o {
            VifOutcome::Computed(v) => v,
            other => panic!("expected VIFs, got {other:?}"),
        }
    }

    /// An independent route to R²_j: ordinary least squares of column j on the others with
    /// an intercept, by the normal equations on the raw (uncentred) data solved with
    /// Gaussian elimination with partial pivoting, then R² = 1 − SSE/SST (two-pass).
    fn ols_vif(rows: &[Vec<f64>], j: usize) -> f64 {
        let k = rows[0].len();
        let xs = |r: &Vec<f64>| {
            let mut v = vec![1.0];
            v.extend((0..k).filter(|&c| c != j).map(|c| r[c]));
            v
        };
        let p = k; // intercept + k − 1 regressors
        let mut a = vec![vec![0.0; p + 1]; p];
        for r in rows {
            let x = xs(r);
            for u in 0..p {
                for v in 0..p {
                    a[u][v] += x[u] * x[v];
                }
                a[u][p] += x[u] * r[j];
            }
        }
        for col in 0..p {
            let piv = (col..p)
                .max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))
                .unwrap();
            a.swap(col, piv);
            let pivot_row = a[col].clone();
            for (r, row) in a.iter_mut().enumerate() {
                if r != col {
                    let f = row[col] / pivot_row[col];
                    for (v, pv) in row.iter_mut().zip(&pivot_row).skip(col) {
                        *v -= f * pv;
                    }
                }
            }
        }
        let beta: Vec<f64> = (0..p).map(|u| a[u][p] / a[u][u]).collect();
        let ybar = rows.iter().map(|r| r[j]).sum::<f64>() / rows.len() as f64;
        let (mut sse, mut sst) = (0.0, 0.0);
        for r in rows {
            let x = xs(r);
            let fit: f64 = x.iter().zip(&beta).map(|(a, b)| a * b).sum();
            sse += (r[j] - fit).powi(2);
            sst += (r[j] - ybar).powi(2);
        }
        1.0 / (sse / sst)
    }

    #[test]
    fn independent_columns_have_vif_near_one() {
        let mut g = Rng::new(1);
        let rows: Vec<Vec<f64>> = (0..50_000)
            .map(|_| vec![g.normal(), g.normal() * 10.0 + 3.0, g.next()])
            .collect();
        for v in values(moments(&rows).vif()) {
            let Vif::Value(v) = v else { panic!("{v:?}") };
            // E[VIF] ≈ 1 + (k−1)/n for independent columns.
            assert!((1.0..1.001).contains(&v), "{v}");
        }
    }

    #[test]
    fn linear_relation_plus_noise_gives_the_vif_its_r_squared_implies() {
        let mut g = Rng::new(2);
        let rows: Vec<Vec<f64>> = (0..10_000)
            .map(|_| {
                let x = g.normal();
                vec![x, 3.0 * x + 0.2 * g.normal()]
            })
            .collect();
        // Two fields: R² of either on the other is the squared correlation (two-pass here).
        let n = rows.len() as f64;
        let mx = rows.iter().map(|r| r[0]).sum::<f64>() / n;
        let my = rows.iter().map(|r| r[1]).sum::<f64>() / n;
        let sxy: f64 = rows.iter().map(|r| (r[0] - mx) * (r[1] - my)).sum();
        let sxx: f64 = rows.iter().map(|r| (r[0] - mx).powi(2)).sum();
        let syy: f64 = rows.iter().map(|r| (r[1] - my).powi(2)).sum();
        let r2 = sxy * sxy / (sxx * syy);
        let expected = 1.0 / (1.0 - r2);
        // Population figure: R² = 9 / (9 + 0.04) → VIF = 226.
        assert!((expected - 226.0).abs() < 15.0, "{expected}");
        for v in values(moments(&rows).vif()) {
            let Vif::Value(v) = v else { panic!("{v:?}") };
            assert!((v - expected).abs() / expected < 1e-9, "{v} vs {expected}");
        }
    }

    #[test]
    fn matches_explicit_regressions_on_correlated_columns() {
        let mut g = Rng::new(3);
        let rows: Vec<Vec<f64>> = (0..2_000)
            .map(|_| {
                let a = g.normal();
                let b = 0.6 * a + g.normal();
                let c = a - 0.5 * b + 0.3 * g.normal();
                let d = g.next() * 100.0;
                vec![a, b, c, d]
            })
            .collect();
        let got = values(moments(&rows).vif());
        for (j, v) in got.iter().enumerate() {
            let expected = ols_vif(&rows, j);
            let Vif::Value(v) = v else { panic!("{v:?}") };
            assert!(
                (v - expected).abs() / expected < 1e-8,
                "field {j}: {v} vs {expected}"
            );
        }
        // c is largely explained by a and b; d by nothing.
        assert!(
            got[2].as_f64().unwrap() > 5.0 && got[3].as_f64().unwrap() < 1.01,
            "{got:?}"
        );
    }

    #[test]
    fn a_large_common_offset_does_not_change_the_figures() {
        let mut g = Rng::new(4);
        let base: Vec<Vec<f64>> = (0..5_000)
            .map(|_| {
                let x = g.normal();
                vec![x, x + g.normal(), g.normal()]
            })
            .collect();
        let shifted: Vec<Vec<f64>> = base
            .iter()
            .map(|r| r.iter().map(|v| v + 1e9).collect())
            .collect();
        let a = values(moments(&base).vif());
        let b = values(moments(&shifted).vif());
        for (x, y) in a.iter().zip(&b) {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            // Values near 1e9 keep ~7 significant digits of the unit-scale noise.
            assert!((x - y).abs() / x < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn perfect_collinearity_is_infinite_only_for_the_fields_involved() {
        let mut g = Rng::new(5);
        let rows: Vec<Vec<f64>> = (0..1_000)
            .map(|_| {
                let x = g.normal();
                let z = g.normal();
                vec![x, 3.0 * x + 1.0, z, g.normal()]
            })
            .collect();
        let got = values(moments(&rows).vif());
        assert_eq!(got[0], Vif::Infinite);
        assert_eq!(got[1], Vif::Infinite);
        assert!(
            got[2].as_f64().unwrap() < 1.05 && got[3].as_f64().unwrap() < 1.05,
            "{got:?}"
        );
        // A sum of two others: all three infinite.
        let rows: Vec<Vec<f64>> = (0..500)
            .map(|_| {
                let (a, b) = (g.normal(), g.normal());
                vec![a, b, a + b, g.normal()]
            })
            .collect();
        let got = values(moments(&rows).vif());
        assert_eq!(&got[..3], &[Vif::Infinite; 3]);
        assert!(matches!(got[3], Vif::Value(v) if v < 1.1), "{got:?}");
    }

    #[test]
    fn constant_columns_are_reported_and_left_out() {
        let mut g = Rng::new(6);
        let rows: Vec<Vec<f64>> = (0..1_000)
            .map(|_| vec![g.normal(), 42.5, g.normal()])
            .collect();
        let got = values(moments(&rows).vif());
        assert_eq!(got[1], Vif::Constant);
        assert!(matches!(got[0], Vif::Value(v) if v < 1.05), "{got:?}");
        // Only one varying field left: nothing to regress on, R² = 0, VIF = 1.
        let rows: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64, 7.0]).collect();
        assert_eq!(
            values(moments(&rows).vif()),
            vec![Vif::Value(1.0), Vif::Constant]
        );
    }

    #[test]
    fn too_few_rows_or_fields_are_explicit() {
        let mut m = CoMoments::new(3);
        assert_eq!(m.vif(), VifOutcome::NotEnoughData { rows: 0, needed: 4 });
        m.push(&[1.0, 2.0, 3.0]);
        m.push(&[2.0, 1.0, 0.0]);
        m.push(&[0.0, 5.0, 1.0]);
        assert_eq!(m.vif(), VifOutcome::NotEnoughData { rows: 3, needed: 4 });
        assert_eq!(CoMoments::new(1).vif(), VifOutcome::NotApplicable);
        // Wrong-length rows are ignored rather than indexing out of bounds.
        m.push(&[1.0]);
        assert_eq!(m.n(), 3);
    }

    #[test]
    fn merge_equals_one_pass() {
        let mut g = Rng::new(7);
        let rows: Vec<Vec<f64>> = (0..3_000)
            .map(|_| {
                let x = g.normal();
                vec![x, 0.5 * x + g.normal(), g.normal() + 5.0]
            })
            .collect();
        let all = moments(&rows);
        let mut a = moments(&rows[..1_234]);
        a.merge(&moments(&rows[1_234..]));
        assert_eq!(a.n(), all.n());
        for i in 0..3 {
            assert!((a.mean(i).unwrap() - all.mean(i).unwrap()).abs() < 1e-12);
            for j in 0..3 {
                let (x, y) = (a.covariance(i, j).unwrap(), all.covariance(i, j).unwrap());
                assert!((x - y).abs() < 1e-9 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
    }
}
