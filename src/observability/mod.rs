//! Logs, metrics and health for every stage.
//!
//! Metrics use the `metrics` facade (`metrics::counter!`, `histogram!`, `gauge!`) so any module
//! can record without a handle; the Prometheus exporter renders them on `/metrics`.
pub mod trace;

/// Keeps logging alive; flushes on drop.
pub struct ObservabilityGuard {
    _private: (),
}

/// Sets up logging for a stage (human-readable on a terminal, JSON lines otherwise).
/// `RUST_LOG` filters (default `info`).
pub fn init(stage: &str) -> ObservabilityGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        builder.try_init()
    } else {
        builder.json().try_init()
    };
    tracing::debug!(stage, "logging initialised");
    ObservabilityGuard { _private: () }
}
