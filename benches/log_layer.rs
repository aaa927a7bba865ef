//! Cost of the Kafka log layer: events/s a thread can emit with and without it, in one run.
//!
//! `cargo bench --bench log_layer` (needs the local Kafka: `deploy/local/stack.sh up`).
//! Settings: `ETL_BENCH_EVENTS` (default 200 000), `ETL_TEST_KAFKA` (default 127.0.0.1:9092).
//!
//! Each scenario emits the same INFO events (a message and three fields inside an INFO span
//! carrying a traceparent) on one thread and reports the emit rate and the CPU time per event
//! of the emitting thread and of the whole process (shipper and librdkafka threads included,
//! until the flush ended); for the Kafka scenarios it then flushes and reports how many events
//! reached the topic and how many were dropped. Linux only for the CPU columns (/proc).
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use tracing_subscriber::layer::SubscriberExt;

use etl_pipe::config::Config;
use etl_pipe::observability::{trace, KafkaLogHandle, KafkaLogLayer, KafkaLogSettings};

fn emit(n: u64) {
    let tp = trace::new_traceparent();
    let span = tracing::info_span!("batch", partition = 3, traceparent = %tp);
    let _g = span.enter();
    for i in 0..n {
        tracing::info!(record = i, topic = "etl.raw", ok = true, "record processed");
    }
}

struct Outcome {
    name: &'static str,
    emit: Duration,
    /// CPU time of the emitting thread while emitting.
    emit_cpu: Duration,
    /// CPU time of the whole process (all threads: shipper, librdkafka) until the flush ended.
    process_cpu: Duration,
    total: Duration,
    delivered: Option<u64>,
    dropped: Option<u64>,
}

/// CPU time of the calling thread (Linux: first field of /proc/thread-self/schedstat, ns).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// User + system CPU time of the whole process (Linux: /proc/self/stat, clock ticks of 10 ms).
fn process_cpu() -> Duration {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(Duration::from_millis(ticks * 10))
        })
        .unwrap_or_default()
}

fn run<S>(name: &'static str, n: u64, subscriber: S, handle: Option<&KafkaLogHandle>) -> Outcome
where
    S: tracing::Subscriber + Send + Sync + 'static,
{
    let (cpu0, pcpu0) = (thread_cpu(), process_cpu());
    let start = Instant::now();
    tracing::subscriber::with_default(subscriber, || emit(n));
    let emit = start.elapsed();
    let emit_cpu = thread_cpu().saturating_sub(cpu0);
    if let Some(h) = handle {
        h.flush(Duration::from_secs(60));
    }
    Outcome {
        name,
        emit,
        emit_cpu,
        process_cpu: process_cpu().saturating_sub(pcpu0),
        total: start.elapsed(),
        delivered: handle.map(|h| h.sent()),
        dropped: handle.map(|h| h.dropped()),
    }
}

fn json_stderr_layer() -> impl tracing_subscriber::Layer<tracing_subscriber::Registry> {
    // What `init` installs when stderr is not a terminal, writing to nowhere.
    tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(std::io::sink)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this too, without it: then
    // only a quick smoke run (debug build figures mean nothing).
    let bench = std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("ETL_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench { 200_000 } else { 2_000 });
    let brokers = std::env::var("ETL_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let topic = format!("etl-bench-logs-{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("admin client");
    rt.block_on(admin.create_topics(
        &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))
    .expect("create topic");

    let mut cfg = Config::default();
    cfg.kafka.brokers = brokers.clone();
    cfg.topics.logs.name = Some(topic.clone());
    cfg.pipeline.instance = Some("bench-1".into());
    let settings = |capacity: usize| {
        let mut s = KafkaLogSettings::from_config(&cfg.common(), &cfg.observability, "bench");
        s.queue_capacity = capacity;
        s
    };

    let mut results = Vec::new();
    // Warm-up (allocations, the producer's connection).
    {
        let (layer, handle) = KafkaLogLayer::new(settings(10_000)).expect("layer");
        run(
            "warm-up",
            n / 10,
            tracing_subscriber::registry().with(layer),
            Some(&handle),
        );
    }
    results.push(run(
        "no layer (registry only)",
        n,
        tracing_subscriber::registry(),
        None,
    ));
    results.push(run(
        "stderr JSON (to a sink), no Kafka",
        n,
        tracing_subscriber::registry().with(json_stderr_layer()),
        None,
    ));
    {
        let (layer, handle) = KafkaLogLayer::new(settings(10_000)).expect("layer");
        results.push(run(
            "Kafka layer only, queue 10 000",
            n,
            tracing_subscriber::registry().with(layer),
            Some(&handle),
        ));
    }
    {
        let (layer, handle) = KafkaLogLayer::new(settings(10_000)).expect("layer");
        results.push(run(
            "stderr JSON + Kafka layer, queue 10 000",
            n,
            tracing_subscriber::registry()
                .with(json_stderr_layer())
                .with(layer),
            Some(&handle),
        ));
    }
    {
        let (layer, handle) = KafkaLogLayer::new(settings(n as usize + 1000)).expect("layer");
        results.push(run(
            "stderr JSON + Kafka layer, queue > events",
            n,
            tracing_subscriber::registry()
                .with(json_stderr_layer())
                .with(layer),
            Some(&handle),
        ));
    }
    {
        let mut s = settings(10_000);
        s.kafka.brokers = "127.0.0.1:1".into();
        let (layer, handle) = KafkaLogLayer::new(s).expect("layer");
        let (cpu0, pcpu0) = (thread_cpu(), process_cpu());
        let start = Instant::now();
        tracing::subscriber::with_default(
            tracing_subscriber::registry()
                .with(json_stderr_layer())
                .with(layer),
            || emit(n),
        );
        results.push(Outcome {
            name: "stderr JSON + Kafka layer, broker unreachable",
            emit: start.elapsed(),
            emit_cpu: thread_cpu().saturating_sub(cpu0),
            process_cpu: process_cpu().saturating_sub(pcpu0),
            total: start.elapsed(),
            delivered: Some(handle.sent()),
            dropped: Some(handle.dropped()),
        });
    }

    println!(
        "log layer bench: {n} INFO events, 3 fields, in one span, one thread{}",
        if bench {
            ""
        } else {
            " (smoke run: use `cargo bench` for figures)"
        }
    );
    println!(
        "{:<48} {:>11} {:>13} {:>13} {:>10} {:>10} {:>10}",
        "scenario",
        "emit ev/s",
        "emit µs/ev",
        "all CPU µs/ev",
        "to flushed",
        "delivered",
        "dropped"
    );
    for r in &results {
        println!(
            "{:<48} {:>11.0} {:>13.2} {:>13.2} {:>9.2}s {:>10} {:>10}",
            r.name,
            n as f64 / r.emit.as_secs_f64(),
            r.emit_cpu.as_secs_f64() * 1e6 / n as f64,
            r.process_cpu.as_secs_f64() * 1e6 / n as f64,
            r.total.as_secs_f64(),
            r.delivered.map(|d| d.to_string()).unwrap_or("-".into()),
            r.dropped.map(|d| d.to_string()).unwrap_or("-".into()),
        );
    }
    let _ = rt.block_on(admin.delete_topics(&[&topic], &AdminOptions::new()));
}
