//! The metric names every stage records, in one place, so dashboards and alerts can rely on
//! them. Record with the `metrics` macros and these constants:
//!
//! ```
//! use etl_pipe::observability::names;
//! metrics::counter!(names::RECORDS_IN, "topic" => "etl.raw").increment(500);
//! metrics::histogram!(names::BATCH_SECONDS).record(0.042);
//! ```
//!
//! Labels stay low-cardinality: a topic, a partition, an error kind, an HTTP status, a
//! decision. Never a record key, a trace id, an offset or a message. The exporter adds
//! `stage="<stage>"` to every series (a global label set by `observability::init`), so stage
//! code does not pass it.
//!
//! In a hot loop, look the handle up once (`let c = metrics::counter!(...)`) and call
//! `c.increment(n)` per batch; each macro call hashes its name and labels.

/// Counter, labels `topic`: records read from Kafka (or, for extract, received from the API
/// with `topic="api"`).
pub const RECORDS_IN: &str = "etl_records_in_total";
/// Counter, labels `topic`: records written (to a topic, or `topic="mysql"` / `"mongo"` for
/// the sinks), counted after the write is durable (delivery report, commit).
pub const RECORDS_OUT: &str = "etl_records_out_total";
/// Counter, labels `kind`: records sent to the dead-letter topic, by `etl.error.kind`.
pub const DEAD_LETTERS: &str = "etl_dead_letters_total";
/// Counter, labels `decision` (`pass`/`warn`/`fail`): quality windows decided by score.
pub const WINDOWS: &str = "etl_quality_windows_total";
/// Counter: records held in quarantine (windows that failed the quality check).
pub const QUARANTINED: &str = "etl_quarantined_records_total";
/// Histogram (records): size of each batch a stage processes or writes.
pub const BATCH_SIZE: &str = "etl_batch_size";
/// Histogram (seconds): wall time of each batch, from its first record to its commit.
pub const BATCH_SECONDS: &str = "etl_batch_seconds";
/// Histogram (seconds): a Kafka or database transaction from begin to commit/abort.
pub const TRANSACTION_SECONDS: &str = "etl_transaction_seconds";
/// Counter: transactions aborted (Kafka or database); the batch is then retried.
pub const TRANSACTION_ABORTS: &str = "etl_transaction_aborts_total";
/// Counter, labels `kind`: retriable failures that were backed off and retried
/// (`broker`, `database`, `http_5xx`, `http_429`, `timeout`, ...).
pub const RETRIES: &str = "etl_retries_total";
/// Counter, labels `status` (the numeric code, or `error` when no response came): HTTP
/// requests made by extract to the source API.
pub const HTTP_REQUESTS: &str = "etl_http_requests_total";
/// Histogram (seconds), labels `status`: duration of each HTTP request to the source API.
pub const HTTP_REQUEST_SECONDS: &str = "etl_http_request_seconds";
/// Gauge, labels `topic`, `partition`: records between this consumer's position and the
/// partition's end (last stable offset under read_committed). Set by
/// [`crate::observability::lag`].
pub const CONSUMER_LAG: &str = "etl_consumer_lag";
/// Gauge: partitions currently assigned to this instance.
pub const ASSIGNED_PARTITIONS: &str = "etl_assigned_partitions";
/// Counter, labels `reason` (`queue_full`, `produce_error`, `delivery_failed`): log events
/// that did not reach the logs topic.
pub const LOG_EVENTS_DROPPED: &str = "etl_log_events_dropped_total";
/// Counter: log events delivered to the logs topic.
pub const LOG_EVENTS_SENT: &str = "etl_log_events_sent_total";
/// Histogram: seconds from the API fetch of a record (`etl.fetched_at`) until a sink's write
/// of it is durable (MySQL: committed with its offsets; Mongo: acknowledged). The pipeline's
/// freshness: what `bench-e2e` reports as the end-to-end latency.
pub const FETCH_TO_COMMIT_SECONDS: &str = "etl_sink_fetch_to_commit_seconds";
/// Histogram (seconds), labels `phase`: where a sink's batch spends its time. Per partition,
/// `wait` (the previous batch done until this one is handed to a writer: waiting for records)
/// and `queued` (handed over until a writer task runs it); per write, `prepare` (decode and
/// render), `acquire` (a database connection), `fence` (begin and lock the partition's
/// offset), `insert` (the row statements; Mongo: the bulk write), `offset` (store the offset)
/// and `commit`. `bench-sink` prints them; the issue #18 investigation needed them.
pub const SINK_PHASE_SECONDS: &str = "etl_sink_phase_seconds";

/// Counter (microseconds), labels `stage`, `phase` (`poll`, `process`, `commit`, `recover`):
/// where the exactly-once loop's thread (clean, score) spends its time — waiting for records
/// from Kafka, transforming and producing them, committing transactions, recovering from a
/// failed one. `rate(...) / 1e6` per phase adds up to ≈ 1 while the loop runs; a stage whose
/// `process` share is near 1 is bound by its own CPU, one in `poll` waits for its input, one in
/// `commit` waits for the brokers. (Whole microseconds: the exporter's counters are integers.)
pub const LOOP_PHASE_MICROSECONDS: &str = "etl_loop_phase_microseconds_total";

/// Histogram buckets for every `*_seconds` metric: 1 ms to 2 min.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Histogram buckets for [`FETCH_TO_COMMIT_SECONDS`]: 50 ms steps up to 2 s (so that the
/// percentiles read from it are within 50 ms), then ≤ 25 % wide up to 10 minutes (a backlog).
pub const FRESHNESS_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85,
    0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.35, 1.4, 1.45, 1.5, 1.55, 1.6, 1.65, 1.7,
    1.75, 1.8, 1.85, 1.9, 1.95, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.5, 10.0, 12.5, 15.0, 20.0, 25.0,
    30.0, 40.0, 50.0, 60.0, 75.0, 90.0, 105.0, 120.0, 140.0, 160.0, 180.0, 240.0, 300.0, 450.0,
    600.0,
];
/// Histogram buckets for `etl_batch_size`: 1 record to 100 000.
pub const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 25000.0, 50000.0,
    100000.0,
];

/// Registers the HELP text of every metric above (shown on `/metrics` once a series exists).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(RECORDS_IN, "Records read from the stage's input");
    describe_counter!(RECORDS_OUT, "Records durably written by the stage");
    describe_counter!(DEAD_LETTERS, "Records sent to the dead-letter topic");
    describe_counter!(WINDOWS, "Quality windows by decision");
    describe_counter!(QUARANTINED, "Records sent to quarantine");
    describe_histogram!(BATCH_SIZE, Unit::Count, "Records per batch");
    describe_histogram!(BATCH_SECONDS, Unit::Seconds, "Batch wall time");
    describe_histogram!(
        TRANSACTION_SECONDS,
        Unit::Seconds,
        "Transaction time, begin to commit or abort"
    );
    describe_counter!(TRANSACTION_ABORTS, "Aborted transactions");
    describe_counter!(RETRIES, "Retriable failures that were retried");
    describe_counter!(HTTP_REQUESTS, "HTTP requests to the source API by status");
    describe_histogram!(
        HTTP_REQUEST_SECONDS,
        Unit::Seconds,
        "HTTP request duration to the source API"
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Records between the consumer position and the partition end"
    );
    describe_gauge!(ASSIGNED_PARTITIONS, "Partitions assigned to this instance");
    describe_counter!(
        LOG_EVENTS_DROPPED,
        "Log events that did not reach the logs topic"
    );
    describe_counter!(LOG_EVENTS_SENT, "Log events delivered to the logs topic");
    describe_counter!(
        LOOP_PHASE_MICROSECONDS,
        Unit::Microseconds,
        "Time the exactly-once loop's thread spent per phase (poll, process, commit, recover)"
    );
    describe_histogram!(
        SINK_PHASE_SECONDS,
        Unit::Seconds,
        "Time a sink's batch spends per phase (wait, queued, prepare, acquire, fence, insert, offset, commit)"
    );
    describe_histogram!(
        FETCH_TO_COMMIT_SECONDS,
        Unit::Seconds,
        "API fetch of a record until the sink's write of it is durable"
    );
}
