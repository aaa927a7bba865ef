//! Error classification: every failure inside a transaction is sorted once into [`Failure`]
//! (abort and retry, or stop the stage), and transactional calls that librdkafka calls
//! retriable are repeated a few times before they count as a failure.
use rdkafka::error::KafkaError;

use super::{TransformError, BACKOFF_MIN};
use crate::retry::Backoff;

/// What went wrong in a transaction, sorted once.
pub(super) enum Failure {
    /// Abort, rewind, back off, retry.
    Abort(String),
    /// Stop the stage.
    Fatal(String),
}

impl Failure {
    /// A transform (or flush) error, `what` naming the hook that failed.
    pub(super) fn from_transform(what: &str, e: TransformError) -> Failure {
        match e {
            TransformError::Retriable(m) => Failure::Abort(format!("{what}: {m}")),
            TransformError::Fatal(m) => Failure::Fatal(format!("{what}: {m}")),
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
fn is_retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(re) if re.is_retriable())
}

/// Repeats a transactional call that librdkafka calls retriable (e.g. a timeout), a few times.
pub(super) fn retry_call(
    what: &str,
    mut f: impl FnMut() -> Result<(), KafkaError>,
) -> Result<(), Failure> {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MIN * 4);
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) if is_retriable(&e) && backoff.failures() < 3 => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, attempt = backoff.failures(), "{what} failed; retrying");
                std::thread::sleep(wait);
            }
            Err(e) => return Err(classify(what, &e)),
        }
    }
}
