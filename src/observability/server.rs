//! The per-stage HTTP server (`/metrics`, `/healthz`, `/readyz`), the Prometheus recorder
//! behind `/metrics`, and the [`Health`] handle a stage updates to say whether it is ready.
//!
//! - `/healthz`: 200 while the process runs (liveness); 503 while the exactly-once loop is stuck
//!   in one phase for longer than twice `kafka.transaction_timeout` (`kafka::eos::watchdog`).
//! - `/readyz`: 200 when every check the stage requires is met (Kafka reachable, database
//!   connected, partitions assigned, schema registry answering), else 503; the JSON body says
//!   what is missing.
//! - `/metrics`: Prometheus text format, rendered from the global `metrics` recorder.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::observability::names;

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();
static HEALTH: OnceLock<Health> = OnceLock::new();

/// Installs the Prometheus recorder as the global `metrics` recorder (once per process; later
/// calls return the first handle). `stage`, when given, becomes a `stage` label on every
/// series. If another recorder was installed first, the returned handle renders nothing and a
/// line says so on stderr.
pub fn install_metrics(stage: Option<&str>) -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let b = builder(stage).unwrap_or_else(|e| {
                eprintln!("etl-pipe: default histogram buckets used ({e})");
                let b = PrometheusBuilder::new();
                match stage {
                    Some(s) => b.add_global_label("stage", s),
                    None => b,
                }
            });
            let recorder = b.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                eprintln!("etl-pipe: metrics recorder not installed ({e}); /metrics will be empty");
            }
            names::describe();
            // Upkeep drains histogram samples even when nobody scrapes /metrics.
            let h = handle.clone();
            let _ = std::thread::Builder::new()
                .name("etl-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    h.run_upkeep();
                });
            handle
        })
        .clone()
}

fn builder(stage: Option<&str>) -> Result<PrometheusBuilder, BuildError> {
    // Full-name matchers win over suffix matchers.
    let mut b = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::FETCH_TO_COMMIT_SECONDS.into()),
            names::FRESHNESS_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), names::LATENCY_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(names::BATCH_SIZE.into()),
            names::BATCH_SIZE_BUCKETS,
        )?;
    if let Some(s) = stage {
        b = b.add_global_label("stage", s);
    }
    Ok(b)
}

/// A readiness check a stage can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The stage's Kafka clients reach the cluster.
    Kafka,
    /// The stage's consumer has at least one partition assigned.
    Partitions,
    /// The stage's database (MySQL or MongoDB) is connected.
    Database,
    /// The schema registry answered the last request (met when none is configured).
    SchemaRegistry,
}

impl Check {
    fn bit(self) -> u8 {
        match self {
            Check::Kafka => 1,
            Check::Partitions => 2,
            Check::Database => 4,
            Check::SchemaRegistry => 8,
        }
    }

    /// The checks a stage requires by default, by stage name.
    pub fn defaults_for(stage: &str) -> &'static [Check] {
        match stage {
            "clean" | "score" => &[Check::Kafka, Check::Partitions, Check::SchemaRegistry],
            "sink-mysql" | "sink-mongo" => &[
                Check::Kafka,
                Check::Partitions,
                Check::Database,
                Check::SchemaRegistry,
            ],
            _ => &[Check::Kafka],
        }
    }
}

/// What a stage reports about itself; cheap to clone (one `Arc`), safe from any thread.
#[derive(Clone, Debug)]
pub struct Health {
    inner: Arc<HealthInner>,
}

#[derive(Debug)]
struct HealthInner {
    required: AtomicU8,
    kafka: AtomicBool,
    db: AtomicBool,
    partitions: AtomicUsize,
    stalled: AtomicBool,
    /// When the transactional call in progress counts as stalled (ms since the epoch; 0: none).
    call_due_ms: AtomicU64,
    registry: AtomicBool,
    /// The exactly-once loop is stuck (liveness fails).
    stuck: AtomicBool,
}

/// The `/readyz` body.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// The required checks that are not met: `kafka`, `partitions`, `database`,
    /// `schema-registry`.
    pub missing: Vec<&'static str>,
    pub kafka_connected: bool,
    pub db_connected: bool,
    pub assigned_partitions: usize,
    /// False while the schema registry is failing (unreachable, 5xx, refusing our credentials).
    pub registry_reachable: bool,
    pub required: Vec<&'static str>,
    /// A transactional call is waiting for the broker (listed as `transaction` in `missing`).
    pub transaction_stalled: bool,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(&[Check::Kafka])
    }
}

impl Health {
    /// A new handle requiring `checks`; nothing is met yet.
    pub fn new(checks: &[Check]) -> Self {
        let h = Health {
            inner: Arc::new(HealthInner {
                required: AtomicU8::new(0),
                kafka: AtomicBool::new(false),
                db: AtomicBool::new(false),
                partitions: AtomicUsize::new(0),
                stalled: AtomicBool::new(false),
                call_due_ms: AtomicU64::new(0),
                // Nothing known against it until a registry call fails (and without a
                // registry, nothing ever is).
                registry: AtomicBool::new(true),
                stuck: AtomicBool::new(false),
            }),
        };
        h.require(checks);
        h
    }

    /// Replaces the set of required checks.
    pub fn require(&self, checks: &[Check]) {
        let bits = checks.iter().fold(0, |a, c| a | c.bit());
        self.inner.required.store(bits, Ordering::Relaxed);
    }

    pub fn set_kafka_connected(&self, ok: bool) {
        self.inner.kafka.store(ok, Ordering::Relaxed);
    }

    /// Feed a Kafka client's global errors here (from `ClientContext::error`): "all brokers
    /// down" clears the Kafka check; anything else is left to the stage's own handling.
    pub fn kafka_error(&self, error: &rdkafka::error::KafkaError) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            self.set_kafka_connected(false);
        }
    }

    /// A transaction's commit or abort is not confirmed by the broker and is being retried:
    /// not ready until it is (the exactly-once loop stops after `kafka.transaction_timeout`).
    pub fn set_stalled(&self, stalled: bool) {
        self.inner.stalled.store(stalled, Ordering::Relaxed);
    }

    /// A transactional call starts (`Some(grace)`: stalled if still running after `grace`;
    /// librdkafka may block past its timeout while a request is in flight) or ends (`None`).
    pub fn transactional_call(&self, grace: Option<Duration>) {
        let due = grace.map_or(0, |g| now_ms() + g.as_millis() as u64);
        self.inner.call_due_ms.store(due, Ordering::Relaxed);
    }

    /// The exactly-once loop has been stuck in one phase past its deadline (`true`): `/healthz`
    /// answers 503 until it moves on (`false`).
    pub fn set_stuck(&self, stuck: bool) {
        self.inner.stuck.store(stuck, Ordering::Relaxed);
    }

    /// Liveness: false while the loop is stuck ([`Self::set_stuck`]).
    pub fn live(&self) -> bool {
        !self.inner.stuck.load(Ordering::Relaxed)
    }

    /// Called by the codec after each schema registry request: `false` when it could not be
    /// reached or failed (a retriable failure), `true` when it answered.
    pub fn set_registry_reachable(&self, ok: bool) {
        self.inner.registry.store(ok, Ordering::Relaxed);
    }

    pub fn set_db_connected(&self, ok: bool) {
        self.inner.db.store(ok, Ordering::Relaxed);
    }

    /// The number of partitions assigned to this instance (call from the rebalance callback
    /// or let [`crate::observability::lag::LagReporter`] do it).
    pub fn set_assigned_partitions(&self, n: usize) {
        self.inner.partitions.store(n, Ordering::Relaxed);
        metrics::gauge!(names::ASSIGNED_PARTITIONS).set(n as f64);
    }

    pub fn readiness(&self) -> Readiness {
        let req = self.inner.required.load(Ordering::Relaxed);
        let kafka = self.inner.kafka.load(Ordering::Relaxed);
        let db = self.inner.db.load(Ordering::Relaxed);
        let partitions = self.inner.partitions.load(Ordering::Relaxed);
        let registry = self.inner.registry.load(Ordering::Relaxed);
        let checks = [
            (Check::Kafka, "kafka", kafka),
            (Check::Partitions, "partitions", partitions > 0),
            (Check::Database, "database", db),
            (Check::SchemaRegistry, "schema-registry", registry),
        ];
        let required: Vec<&'static str> = checks
            .iter()
            .filter(|(c, _, _)| req & c.bit() != 0)
            .map(|(_, n, _)| *n)
            .collect();
        let mut missing: Vec<&'static str> = checks
            .iter()
            .filter(|(c, _, ok)| req & c.bit() != 0 && !ok)
            .map(|(_, n, _)| *n)
            .collect();
        let due = self.inner.call_due_ms.load(Ordering::Relaxed);
        let stalled = self.inner.stalled.load(Ordering::Relaxed) || (due != 0 && now_ms() > due);
        if stalled {
            missing.push("transaction");
        }
        Readiness {
            transaction_stalled: stalled,
            ready: missing.is_empty(),
            missing,
            kafka_connected: kafka,
            db_connected: db,
            assigned_partitions: partitions,
            registry_reachable: registry,
            required,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The process-wide [`Health`] that `observability::init` configures for its stage and the
/// server started by the guard serves. Stage code reports through it:
/// `observability::health().set_db_connected(true)`.
pub fn health() -> Health {
    HEALTH.get_or_init(Health::default).clone()
}

#[derive(Clone)]
struct AppState {
    health: Health,
    metrics: PrometheusHandle,
}

/// The router, for embedding or testing.
pub fn router(health: Health, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { health, metrics })
}

async fn metrics_handler(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn healthz(State(s): State<AppState>) -> Response {
    if s.health.live() {
        "ok\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "stuck: the exactly-once loop has not moved for more than twice \
             kafka.transaction_timeout (see the stage's log)\n",
        )
            .into_response()
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    let r = s.health.readiness();
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r)).into_response()
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    /// The bound address (useful with port 0 in tests).
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` until `shutdown` is
/// cancelled. Call inside a Tokio runtime. Installs the recorder if nobody did.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<ServerHandle> {
    let metrics = install_metrics(None);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = router(health, metrics);
    let task = tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "metrics/health server stopped");
        }
    });
    Ok(ServerHandle { addr, task })
}

/// Readiness from a consumer's own state, for poll loops to call (cheap; throttled to once a
/// second): an assignment means the group coordinator answered, so Kafka is reachable.
pub fn report_consumer<C: rdkafka::consumer::Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if LAST.swap(now, Ordering::Relaxed) == now {
        return;
    }
    let n = consumer.assignment().map(|a| a.count()).unwrap_or(0);
    let h = health();
    h.set_assigned_partitions(n);
    if n > 0 {
        h.set_kafka_connected(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_what_is_missing() {
        let h = Health::new(Check::defaults_for("sink-mysql"));
        let r = h.readiness();
        assert!(!r.ready);
        assert_eq!(r.missing, vec!["kafka", "partitions", "database"]);
        h.set_kafka_connected(true);
        h.set_assigned_partitions(2);
        assert_eq!(h.readiness().missing, vec!["database"]);
        h.set_db_connected(true);
        assert!(h.readiness().ready);
        h.set_registry_reachable(false);
        assert_eq!(h.readiness().missing, vec!["schema-registry"]);
        h.set_registry_reachable(true);
        assert!(h.readiness().ready);
        let extract = Health::new(Check::defaults_for("extract"));
        extract.set_kafka_connected(true);
        assert!(extract.readiness().ready);
    }
}
