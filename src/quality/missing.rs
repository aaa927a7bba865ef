//! Missing and type-error counts per field, plus the running mean / spread / range of
//! numeric fields for the report.
//!
//! - missing ratio = (absent + null + blank) / rows
//! - type-error ratio = (values not of the field's kind) / rows
//!
//! Both are over all rows of the window, so missing + type errors + valid = rows.
use serde::Serialize;

/// Counts for one field over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FieldCounts {
    pub rows: u64,
    pub missing: u64,
    pub type_errors: u64,
    /// Running moments of the valid numbers (numeric fields only).
    #[serde(skip)]
    pub moments: Moments,
}

impl FieldCounts {
    pub fn missing_ratio(&self) -> f64 {
        ratio(self.missing, self.rows)
    }

    pub fn type_error_ratio(&self) -> f64 {
        ratio(self.type_errors, self.rows)
    }

    /// Valid (present and well-typed) values.
    pub fn valid(&self) -> u64 {
        self.rows - self.missing - self.type_errors
    }
}

/// `num / den`, and 0 for an empty window (never NaN).
pub fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Welford's running mean and sum of squared deviations, with min and max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    pub n: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    pub min: f64,
    pub max: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Self {
            n: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Moments {
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    /// Sample standard deviation (n − 1); `None` below two values.
    pub fn std(&self) -> Option<f64> {
        (self.n >= 2).then(|| (self.m2.max(0.0) / (self.n - 1) as f64).sqrt())
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n >= 1).then_some(self.mean)
    }

    pub fn min(&self) -> Option<f64> {
        (self.n >= 1).then_some(self.min)
    }

    pub fn max(&self) -> Option<f64> {
        (self.n >= 1).then_some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_of_an_empty_window_are_zero() {
        let c = FieldCounts::default();
        assert_eq!(c.missing_ratio(), 0.0);
        assert_eq!(c.type_error_ratio(), 0.0);
    }

    #[test]
    fn moments_match_two_pass_figures_with_a_large_offset() {
        // 1e9 + {1, 2, 3, 4}: mean 1e9 + 2.5, sample variance 5/3 (naive sums of
        // squares lose this completely at this offset).
        let mut m = Moments::default();
        for x in [1.0, 2.0, 3.0, 4.0] {
            m.push(1e9 + x);
        }
        assert_eq!(m.mean().unwrap(), 1e9 + 2.5);
        assert!((m.std().unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-9);
        assert_eq!(m.min(), Some(1e9 + 1.0));
        assert_eq!(m.max(), Some(1e9 + 4.0));
        assert_eq!(Moments::default().std(), None);
    }
}
