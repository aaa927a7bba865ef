//! PSI from integer counts for a window judged row by row: [`super::psi`] with the
//! logarithms of the counts looked up instead of taken per bucket.

/// The baseline's side of [`psi_of_counts`] for one ε: each proportion floored at ε and
/// its logarithm, taken once.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    epsilon: f64,
    ln_epsilon: f64,
    floored: Vec<f64>,
    ln: Vec<f64>,
}

impl Expected {
    pub fn new(expected: &[f64], epsilon: f64) -> Self {
        let floored: Vec<f64> = expected.iter().map(|&e| e.max(epsilon)).collect();
        Expected {
            epsilon,
            ln_epsilon: epsilon.ln(),
            ln: floored.iter().map(|e| e.ln()).collect(),
            floored,
        }
    }

    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }
}

/// Natural logarithms of the integers up to a bound, looked up: the same bits as
/// `f64::ln` of the integer, which is what it gives above the bound.
#[derive(Debug, Clone, Default)]
pub struct IntLogs(Vec<f64>);

impl IntLogs {
    pub fn upto(n: usize) -> Self {
        IntLogs((0..=n).map(|i| (i as f64).ln()).collect())
    }

    pub fn ln(&self, n: u64) -> f64 {
        match self.0.get(n as usize) {
            Some(&x) => x,
            None => (n as f64).ln(),
        }
    }
}

/// PSI of `counts` against the baseline: [`psi`](super::psi) of `proportions(counts)`, with each
/// ln(aᵢ / eᵢ) taken as ln(cᵢ) − ln(total) − ln(eᵢ) (ln ε for a proportion floored at ε), so
/// that a caller judging a window per row needs no logarithm per bucket (`logs` holds the
/// integers'). Equal to [`psi`](super::psi) up to rounding (a few units in the last place); the score
/// stage's verdicts and its block reports both use this one. `None` when the total is 0;
/// 0 for mismatched lengths, as [`psi`](super::psi).
pub fn psi_of_counts(expected: &Expected, counts: &[u64], logs: &IntLogs) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    if expected.floored.len() != counts.len() {
        return Some(0.0);
    }
    let (t, ln_t) = (total as f64, logs.ln(total));
    let mut sum = 0.0;
    for ((&c, &e), &ln_e) in counts.iter().zip(&expected.floored).zip(&expected.ln) {
        let a = c as f64 / t;
        let (a, ln_a) = match a < expected.epsilon {
            true => (expected.epsilon, expected.ln_epsilon),
            false => (a, logs.ln(c) - ln_t),
        };
        sum += (a - e) * (ln_a - ln_e);
    }
    Some(sum)
}
