//! Figures read from the stages' `/metrics` text (Prometheus' exposition format): a histogram's
//! buckets and quantiles, a histogram's totals per `phase`, a counter per label value — each
//! summed over the other labels, and over the texts of several instances pasted together.
use std::collections::BTreeMap;

/// A sample of a series whose line starts with `prefix` (the metric's name and `{`): its labels
/// and its value.
fn sample<'a>(line: &'a str, prefix: &str) -> Option<(&'a str, f64)> {
    let (labels, value) = line.strip_prefix(prefix)?.rsplit_once(' ')?;
    Some((labels, value.trim().parse().ok()?))
}

/// The value of label `name` in a Prometheus series' `{…}` text.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let (_, rest) = labels.split_once(&format!("{name}=\""))?;
    rest.split('"').next()
}

/// Per `phase` label of the histogram `name` in `/metrics` text: (observations, seconds),
/// summed over the other labels (`<name>_count` and `<name>_sum`).
pub fn phase_totals(text: &str, name: &str) -> BTreeMap<String, (u64, f64)> {
    let (sum, count) = (format!("{name}_sum{{"), format!("{name}_count{{"));
    let mut out: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let (is_sum, (labels, v)) = match (sample(line, &sum), sample(line, &count)) {
            (Some(s), _) => (true, s),
            (_, Some(c)) => (false, c),
            _ => continue,
        };
        let Some(phase) = label(labels, "phase") else {
            continue;
        };
        let e = out.entry(phase.to_string()).or_default();
        if is_sum {
            e.1 += v;
        } else {
            e.0 += v as u64;
        }
    }
    out
}

/// Per value of label `by`, the counter `name` in `/metrics` text summed over its other labels
/// (and over the texts of several processes pasted together).
pub fn counter_by(text: &str, name: &str, by: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{name}{{");
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for (labels, v) in text.lines().filter_map(|l| sample(l, &prefix)) {
        if let Some(key) = label(labels, by) {
            *out.entry(key.to_string()).or_default() += v;
        }
    }
    out
}

/// A Prometheus histogram read from `/metrics` text: cumulative counts per upper bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// (upper bound `le`, cumulative count), ascending; the last bound is `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// Sums the `<name>_bucket` series of `text` over their other labels.
    pub fn parse(text: &str, name: &str) -> Histogram {
        let prefix = format!("{name}_bucket{{");
        let mut by: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with(&prefix)) {
            let Some((labels, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Some(le) = label(labels, "le") else {
                continue;
            };
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                match le.parse() {
                    Ok(v) => v,
                    Err(_) => continue,
                }
            };
            let Ok(n) = value.trim().parse::<f64>() else {
                continue;
            };
            let e = by.entry(le.to_bits()).or_insert((le, 0));
            e.1 += n as u64;
        }
        let mut buckets: Vec<(f64, u64)> = by.into_values().collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Histogram { buckets }
    }

    pub fn count(&self) -> u64 {
        self.buckets.last().map_or(0, |b| b.1)
    }

    /// The value at quantile `q`, interpolated linearly inside its bucket (as Prometheus'
    /// `histogram_quantile` does); `None` without samples. Above the last finite bound the
    /// answer is that bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut prev = (0.0, 0u64);
        for &(le, n) in &self.buckets {
            if n as f64 >= rank {
                if le.is_infinite() {
                    return Some(prev.0);
                }
                let inside = (n - prev.1) as f64;
                let frac = if inside > 0.0 {
                    (rank - prev.1 as f64) / inside
                } else {
                    1.0
                };
                return Some(prev.0 + (le - prev.0) * frac);
            }
            prev = (le, n);
        }
        Some(prev.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_totals_sum_count_and_seconds_per_phase() {
        let text =
            "etl_sink_phase_seconds_bucket{stage=\"sink-mysql\",phase=\"insert\",le=\"0.1\"} 3\n\
                    etl_sink_phase_seconds_sum{stage=\"sink-mysql\",phase=\"insert\"} 0.25\n\
                    etl_sink_phase_seconds_count{stage=\"sink-mysql\",phase=\"insert\"} 4\n\
                    etl_sink_phase_seconds_sum{stage=\"sink-mysql\",phase=\"commit\"} 1.5\n\
                    etl_sink_phase_seconds_count{stage=\"sink-mysql\",phase=\"commit\"} 4\n\
                    etl_sink_phase_seconds_sum{stage=\"sink-mysql\",phase=\"insert\"} 0.5\n\
                    etl_sink_phase_seconds_count{stage=\"sink-mysql\",phase=\"insert\"} 2\n\
                    etl_other_seconds_sum{phase=\"insert\"} 9\n";
        let t = phase_totals(text, "etl_sink_phase_seconds");
        assert_eq!(t.len(), 2);
        assert_eq!(t["insert"], (6, 0.75));
        assert_eq!(t["commit"], (4, 1.5));
    }

    #[test]
    fn counter_by_sums_a_counter_per_label_value_over_processes() {
        let text = "\
# TYPE etl_loop_phase_microseconds_total counter
etl_loop_phase_microseconds_total{stage=\"clean\",phase=\"poll\"} 1500000
etl_loop_phase_microseconds_total{stage=\"clean\",phase=\"process\"} 250
etl_loop_phase_microseconds_total_other{phase=\"poll\"} 7
etl_loop_phase_microseconds_total{stage=\"clean\",phase=\"poll\"} 500000
etl_loop_phase_microseconds_total{stage=\"clean\"} 9
";
        let t = counter_by(text, "etl_loop_phase_microseconds_total", "phase");
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t["poll"], 2_000_000.0);
        assert_eq!(t["process"], 250.0);
    }

    #[test]
    fn histogram_sums_label_sets_and_interpolates() {
        let text = "\
# TYPE etl_sink_fetch_to_commit_seconds histogram
etl_sink_fetch_to_commit_seconds_bucket{stage=\"sink-mysql\",le=\"0.5\"} 50
etl_sink_fetch_to_commit_seconds_bucket{stage=\"sink-mysql\",le=\"1\"} 90
etl_sink_fetch_to_commit_seconds_bucket{stage=\"sink-mysql\",le=\"+Inf\"} 100
etl_sink_fetch_to_commit_seconds_bucket{stage=\"other\",le=\"0.5\"} 50
etl_sink_fetch_to_commit_seconds_bucket{stage=\"other\",le=\"1\"} 90
etl_sink_fetch_to_commit_seconds_bucket{stage=\"other\",le=\"+Inf\"} 100
etl_sink_fetch_to_commit_seconds_sum 70
";
        let h = Histogram::parse(text, FETCH);
        assert_eq!(
            h.buckets,
            vec![(0.5, 100), (1.0, 180), (f64::INFINITY, 200)]
        );
        assert_eq!(h.count(), 200);
        // Rank 50 of 200 lies halfway into the first bucket [0, 0.5].
        assert_eq!(h.quantile(0.25), Some(0.25));
        // Rank 140: 40 of the 80 samples in (0.5, 1].
        assert_eq!(h.quantile(0.7), Some(0.75));
        // Beyond the last finite bound: that bound.
        assert_eq!(h.quantile(0.99), Some(1.0));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    const FETCH: &str = crate::observability::names::FETCH_TO_COMMIT_SECONDS;
}
