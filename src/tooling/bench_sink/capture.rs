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

struct H(&'static Capture, String);
impl metrics::HistogramFn for H {
    fn record(&self, v: f64) {
        if let Ok(mut m) = self.0.hist.lock() {
            m.entry(self.1.clone()).or_default().push(v);
        }
    }
}
struct C(&'static Capture, String);
impl metrics::CounterFn for C {
    fn increment(&self, v: u64) {
        if let Ok(mut m) = self.0.counters.lock() {
            *m.entry(self.1.clone()).or_default() += v;
        }
    }
    fn absolute(&self, v: u64) {
        if let Ok(mut m) = self.0.counters.lock() {
            m.insert(self.1.clone(), v);
        }
    }
}

struct CaptureRecorder(&'static Capture);
impl Recorder for CaptureRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(C(self.0, key.name().to_string())))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(H(self.0, key.name().to_string())))
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
