//! What `bench-sink` measures: a metrics recorder that keeps every histogram sample and counter
//! total (per name) of the sinks running in this process, their percentiles, and the process's
//! peak RSS.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

#[derive(Default)]
pub(super) struct Capture {
    hist: Mutex<HashMap<String, Vec<f64>>>,
    counters: Mutex<HashMap<String, u64>>,
}

/// A series is kept under its name (all labels together) and, when it has labels, also under
/// `name{label=value,...}`.
struct H(&'static Capture, Vec<String>);
impl metrics::HistogramFn for H {
    fn record(&self, v: f64) {
        if let Ok(mut m) = self.0.hist.lock() {
            for name in &self.1 {
                m.entry(name.clone()).or_default().push(v);
            }
        }
    }
}
struct C(&'static Capture, Vec<String>);
impl metrics::CounterFn for C {
    fn increment(&self, v: u64) {
        if let Ok(mut m) = self.0.counters.lock() {
            for name in &self.1 {
                *m.entry(name.clone()).or_default() += v;
            }
        }
    }
    fn absolute(&self, v: u64) {
        if let Ok(mut m) = self.0.counters.lock() {
            for name in &self.1 {
                m.insert(name.clone(), v);
            }
        }
    }
}

/// The names a series is kept under: see [`H`].
fn names(key: &Key) -> Vec<String> {
    let mut names = vec![key.name().to_string()];
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    if !labels.is_empty() {
        names.push(format!("{}{{{}}}", key.name(), labels.join(",")));
    }
    names
}

struct CaptureRecorder(&'static Capture);
impl Recorder for CaptureRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(C(self.0, names(key))))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(H(self.0, names(key))))
    }
}

/// Installs the benchmark's metrics recorder (before any other: the first one wins).
pub fn install_recorder() {
    let _ = capture();
}

/// The process's one capture (installed as the global recorder on first use).
pub(super) fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::default());
        let _ = metrics::set_global_recorder(CaptureRecorder(c));
        c
    })
}

impl Capture {
    pub(super) fn reset(&self) {
        if let Ok(mut m) = self.hist.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.counters.lock() {
            m.clear();
        }
    }
    pub(super) fn counter(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .map(|m| m.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }
    /// The sum of a histogram's samples.
    pub(super) fn sum(&self, name: &str) -> f64 {
        self.hist
            .lock()
            .map(|m| m.get(name).map_or(0.0, |v| v.iter().sum()))
            .unwrap_or(0.0)
    }
    /// (count, p50, p95, p99, max) of a histogram, in its unit.
    pub(super) fn percentiles(&self, name: &str) -> (usize, f64, f64, f64, f64) {
        let mut v = self
            .hist
            .lock()
            .map(|m| m.get(name).cloned().unwrap_or_default())
            .unwrap_or_default();
        if v.is_empty() {
            return (0, 0.0, 0.0, 0.0, 0.0);
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
        (v.len(), q(0.5), q(0.95), q(0.99), v[v.len() - 1])
    }
}

/// Peak resident set of this process (`VmHWM`) in MiB; 0 where `/proc` does not tell.
pub(super) fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Resets the peak resident set (`VmHWM`) to the current one, so that the next
/// [`peak_rss_mib`] covers only what runs from here (Linux: `5` into `/proc/self/clear_refs`).
/// Returns the resident set at the reset, in MiB.
pub(super) fn reset_peak_rss() -> f64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
