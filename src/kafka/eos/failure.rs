//! Error classification: every failure inside a transaction is sorted once into [`Failure`]
//! (abort and retry, or stop the stage), and transactional calls that librdkafka calls
//! retriable are repeated a few times before they count as a failure.
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;

use super::{Timing, TransformError, BACKOFF_MIN};
use crate::retry::Backoff;

/// What went wrong in a transaction, sorted once.
pub(super) enum Failure {
    /// Abort, rewind, back off, retry.
    Abort(String),
    /// Stop the stage.
    Fatal(String),
    /// The transform stopped the stage on purpose (e.g. the quality gate's `halt`): abort
    /// the transaction in hand, then stop.
    Halt(String),
}

impl Failure {
    /// A transform (or flush) error, `what` naming the hook that failed.
    pub(super) fn from_transform(what: &str, e: TransformError) -> Failure {
        match e {
            TransformError::Retriable(m) => Failure::Abort(format!("{what}: {m}")),
            TransformError::Fatal(m) => Failure::Halt(format!("{what}: {m}")),
        }
    }
}

/// A fatal transactional error (e.g. fenced) stops the stage; anything else aborts.
pub(super) fn classify(what: &str, e: &KafkaError) -> Failure {
    match e {
        KafkaError::Transaction(re) if re.is_fatal() => Failure::Fatal(format!("{what}: {e}")),
        _ => Failure::Abort(format!("{what}: {e}")),
    }
}

/// Whether a transactional call may simply be repeated (librdkafka: "retriable").
pub(super) fn is_retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(re) if re.is_retriable() && !re.txn_requires_abort())
}

/// Repeats a transactional call while librdkafka calls its error retriable (a timeout: the
/// broker did not confirm it). librdkafka's transactional API requires exactly that: a call
/// that timed out stays in progress, and every other transactional call (an abort too) is
/// answered with a retriable conflict until the same call is made again and completes.
/// Meanwhile the stage reports itself not ready. When `timing.deadline` has passed since
/// `started` (the start of the commit) the outcome is in doubt and only a new producer with
/// the same transactional id can settle it (`init_transactions` completes or aborts it): the
/// stage stops, non-zero, so that its partitions go to the group's other members.
/// An abortable error aborts; a fatal one stops.
pub(super) fn retry_call(
    stage: &'static str,
    what: &str,
    started: Instant,
    timing: Timing,
    watch: &super::watchdog::Watch,
    mut f: impl FnMut() -> Result<(), KafkaError>,
) -> Result<(), Failure> {
    let mut backoff = Backoff::new(BACKOFF_MIN, Duration::from_secs(1));
    let mut was_stalled = false;
    let health = crate::observability::health();
    let result = loop {
        health.transactional_call(Some(timing.call));
        watch.attempt(true);
        let r = f();
        watch.attempt(false);
        health.transactional_call(None);
        match r {
            Ok(()) => break Ok(()),
            Err(e) if is_retriable(&e) => {
                if started.elapsed() >= timing.deadline {
                    break Err(Failure::Fatal(format!(
                        "{what} not confirmed within {:?} (kafka.transaction_timeout): the \
                         transaction is in doubt; stopping, so that the next start of this \
                         transactional id settles it and the group hands the partitions on \
                         (last error: {e})",
                        timing.deadline
                    )));
                }
                if !was_stalled {
                    was_stalled = true;
                    stalled(stage, true);
                }
                let wait = backoff.next_delay();
                tracing::warn!(
                    stage,
                    error = %e,
                    attempt = backoff.failures(),
                    unconfirmed_for = ?started.elapsed(),
                    "{what} not confirmed; calling it again"
                );
                std::thread::sleep(wait);
            }
            Err(e) => break Err(classify(what, &e)),
        }
    };
    if was_stalled && result.is_ok() {
        stalled(stage, false);
    }
    result
}

/// A transactional call is (`true`) or is no longer (`false`) waiting for the broker:
/// readiness (`/readyz`), the `etl_transaction_stalled` gauge and a log line.
pub(super) fn stalled(stage: &'static str, on: bool) {
    crate::observability::health().set_stalled(on);
    metrics::gauge!("etl_transaction_stalled", "stage" => stage).set(if on { 1.0 } else { 0.0 });
    if on {
        tracing::warn!(
            stage,
            "a transactional call is not confirmed by the broker: not ready"
        );
    } else {
        tracing::info!(stage, "transactional calls confirmed again: ready");
    }
}
