//! Logs, metrics and health for every stage.
//!
//! - [`init`] sets up `tracing` once per process: human-readable lines on a terminal, JSON
//!   lines otherwise (or as configured) on stderr, and the [`kafka_layer`] that ships events at
//!   or above `kafka_log_level` to the logs topic. It also installs the Prometheus recorder, so
//!   `metrics::counter!` and friends work anywhere without a handle.
//! - The returned [`ObservabilityGuard`] starts the `/metrics` `/healthz` `/readyz` server
//!   ([`ObservabilityGuard::serve`]) and flushes the log producer when dropped.
//! - [`health()`] is the process's readiness handle; [`lag`] publishes consumer lag.
//! - [`names`] lists the metric names; `docs/notes/observability.md` the conventions.
pub mod kafka_layer;
pub mod lag;
pub mod names;
pub mod outcome;
pub mod server;
pub mod trace;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::settings::{Common, ConfigError};
pub use kafka_layer::{KafkaLogHandle, KafkaLogLayer, KafkaLogSettings};
pub use lag::LagReporter;
pub use server::{health, Check, Health};

/// How stderr lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Text on a terminal, JSON lines otherwise.
    #[default]
    Auto,
    Text,
    Json,
}

/// A `tracing` level as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_level(self) -> tracing::Level {
        match self {
            LogLevel::Trace => tracing::Level::TRACE,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Error => tracing::Level::ERROR,
        }
    }
}

/// `[observability]`: logs, the logs topic, metrics and health.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservabilityConfig {
    /// stderr format: `auto` (text on a terminal, JSON lines otherwise), `text` or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// What is logged at all, as an `EnvFilter` directive (`info`, `warn,etl_pipe=debug`).
    /// `RUST_LOG`, when set, wins.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Ship log events to the logs topic (`topics.logs`).
    #[serde(default = "default_true")]
    pub kafka_logs: bool,
    /// Lowest level shipped to the logs topic (of what `log_level` lets through).
    #[serde(default = "default_kafka_log_level")]
    pub kafka_log_level: LogLevel,
    /// Log a record with the duration when a span closes (to the logs topic for spans at or
    /// above `kafka_log_level`; on stderr for every enabled span).
    #[serde(default = "default_true")]
    pub span_durations: bool,
    /// Events waiting for the log producer, at most; beyond this they are dropped and counted
    /// (`etl_log_events_dropped_total`). The producer's own queue has the same bound.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// How long shutdown waits for the log producer to deliver what it holds.
    #[serde(default = "default_flush_timeout", with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// Address the `/metrics`, `/healthz`, `/readyz` server binds.
    #[serde(default = "default_http_addr")]
    pub http_addr: IpAddr,
    /// Port of that server; unset = the stage's default (extract 9401, clean 9402, score 9403,
    /// sink-mysql 9404, sink-mongo 9405, others 9400); 0 = no server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
}

fn default_log_level() -> String {
    "info".into()
}
fn default_true() -> bool {
    true
}
fn default_kafka_log_level() -> LogLevel {
    LogLevel::Info
}
fn default_queue_capacity() -> usize {
    10_000
}
fn default_flush_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_http_addr() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::default(),
            log_level: default_log_level(),
            kafka_logs: true,
            kafka_log_level: default_kafka_log_level(),
            span_durations: true,
            queue_capacity: default_queue_capacity(),
            flush_timeout: default_flush_timeout(),
            http_addr: default_http_addr(),
            http_port: None,
        }
    }
}

/// The default metrics/health port of a stage (several stages on one host must not collide).
pub fn default_http_port(stage: &str) -> u16 {
    match stage {
        "extract" => 9401,
        "clean" => 9402,
        "score" => 9403,
        "sink-mysql" => 9404,
        "sink-mongo" => 9405,
        _ => 9400,
    }
}

impl ObservabilityConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(e) = EnvFilter::builder().parse(&self.log_level) {
            return Err(ConfigError::key(
                "observability.log_level",
                format!(
                    "`{}` is not a log filter ({e}); use e.g. \"info\" or \"warn,etl_pipe=debug\"",
                    self.log_level
                ),
            ));
        }
        if self.queue_capacity == 0 || self.queue_capacity > 1_000_000 {
            return Err(ConfigError::key(
                "observability.queue_capacity",
                "must be between 1 and 1000000",
            ));
        }
        if self.flush_timeout > Duration::from_secs(300) {
            return Err(ConfigError::key(
                "observability.flush_timeout",
                "must be at most 5m (shutdown waits this long)",
            ));
        }
        Ok(())
    }

    /// Where the stage's server listens; `None` when the port is 0.
    pub fn http_socket(&self, stage: &str) -> Option<SocketAddr> {
        let port = self.http_port.unwrap_or_else(|| default_http_port(stage));
        (port != 0).then_some(SocketAddr::new(self.http_addr, port))
    }
}

/// A failure to set up observability.
#[derive(Debug, thiserror::Error)]
pub enum ObservabilityError {
    #[error("logging is already set up in this process")]
    AlreadyInitialised,
    #[error("log filter `{filter}`: {message}")]
    Filter { filter: String, message: String },
    #[error("cannot create the log producer: {0}")]
    LogProducer(#[from] rdkafka::error::KafkaError),
    #[error("cannot serve /metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Keeps the log shipper and knows where to serve; flushes the log producer when dropped
/// (bounded by `observability.flush_timeout`).
pub struct ObservabilityGuard {
    stage: String,
    http: Option<SocketAddr>,
    shipper: Option<KafkaLogHandle>,
    flush_timeout: Duration,
}

impl ObservabilityGuard {
    /// Starts the `/metrics` `/healthz` `/readyz` server for this stage (on
    /// `observability.http_addr:http_port`, serving [`health()`]) until `shutdown` is cancelled.
    /// Returns the bound address, or `None` when the port is 0. Call inside the Tokio runtime.
    pub async fn serve(
        &self,
        shutdown: CancellationToken,
    ) -> Result<Option<SocketAddr>, ObservabilityError> {
        let Some(addr) = self.http else {
            return Ok(None);
        };
        let h = server::serve(addr, health(), shutdown)
            .await
            .map_err(|source| ObservabilityError::Bind { addr, source })?;
        tracing::info!(stage = %self.stage, addr = %h.addr, "serving /metrics, /healthz, /readyz");
        Ok(Some(h.addr))
    }

    /// Log events dropped so far (0 when logs are not shipped to Kafka).
    pub fn dropped_log_events(&self) -> u64 {
        self.shipper.as_ref().map(|s| s.dropped()).unwrap_or(0)
    }

    /// Flushes the log producer now (bounded wait); returns whether everything was delivered.
    pub fn flush(&self) -> bool {
        match &self.shipper {
            Some(s) => s.flush(self.flush_timeout),
            None => true,
        }
    }

    /// Flushes and reports on stderr what could not be delivered. Same as dropping the guard.
    pub fn shutdown(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(s) = self.shipper.take() {
            if !s.flush(self.flush_timeout) {
                eprintln!(
                    "etl-pipe: some log events were not delivered to the logs topic within {:?}",
                    self.flush_timeout
                );
            }
        }
    }
}

impl Drop for ObservabilityGuard {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Sets up logging and metrics for `stage`, once per process.
///
/// With a config: stderr per `observability.log_format`/`log_level` (`RUST_LOG` wins), the
/// logs-topic layer when `observability.kafka_logs`, the Prometheus recorder with a
/// `stage` label, and [`health()`] requiring the stage's default checks
/// ([`Check::defaults_for`]). Without one (commands that run before or without a config):
/// stderr only, `info`.
pub fn init(
    cfg: Option<(&Common, &ObservabilityConfig)>,
    stage: &str,
) -> Result<ObservabilityGuard, ObservabilityError> {
    let defaults = ObservabilityConfig::default();
    let obs = cfg.map(|(_, o)| o).unwrap_or(&defaults);
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => parse_filter(&s)?,
        _ => parse_filter(&obs.log_level)?,
    };
    let json = match obs.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let spans = if obs.span_durations {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    let stderr = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_span_events(spans)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_span_events(spans)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let (kafka, shipper) = match cfg {
        Some((common, _)) if obs.kafka_logs => {
            let (layer, handle) =
                KafkaLogLayer::new(KafkaLogSettings::from_config(common, obs, stage))?;
            (Some(layer), Some(handle))
        }
        _ => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(kafka)
        .try_init()
        .map_err(|_| ObservabilityError::AlreadyInitialised)?;
    server::install_metrics(Some(stage));
    health().require(Check::defaults_for(stage));
    tracing::debug!(
        stage,
        kafka_logs = shipper.is_some(),
        "observability initialised"
    );
    Ok(ObservabilityGuard {
        stage: stage.to_string(),
        http: cfg.and_then(|(_, o)| o.http_socket(stage)),
        shipper,
        flush_timeout: obs.flush_timeout,
    })
}

fn parse_filter(s: &str) -> Result<EnvFilter, ObservabilityError> {
    EnvFilter::builder()
        .parse(s)
        .map_err(|e| ObservabilityError::Filter {
            filter: s.to_string(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn config_defaults_and_validation() {
        let c = Config::from_toml_with_env("", "t", &[]).unwrap();
        assert_eq!(c.observability.queue_capacity, 10_000);
        assert_eq!(
            c.observability.http_socket("clean"),
            Some("127.0.0.1:9402".parse().unwrap())
        );
        let c = Config::from_toml_with_env(
            "[observability]\nhttp_port = 0\nkafka_log_level = \"warn\"\nlog_format = \"json\"\n",
            "t",
            &[],
        )
        .unwrap();
        assert_eq!(c.observability.http_socket("clean"), None);
        assert_eq!(c.observability.kafka_log_level, LogLevel::Warn);
        let err = Config::from_toml_with_env("[observability]\nlog_level = \"[[\"\n", "t", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("observability.log_level"), "{err}");
        let err = Config::from_toml_with_env("[observability]\nhttp_addr = \"nope\"\n", "t", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("observability.http_addr"), "{err}");
        let err = Config::from_toml_with_env("[observability]\nqueue_capacity = 0\n", "t", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("observability.queue_capacity"), "{err}");
    }
}
