//! Sorting MongoDB errors: transient ones (network, failover, write conflicts, labelled
//! retryable) are retried; any other command error stops the stage.
use crate::stages::sinks::SinkError;

/// Server error codes that say "try again" rather than "this document is bad".
pub(super) fn transient_code(code: i32) -> bool {
    matches!(
        code,
        6 | 7 | 89 | 91 | 112 | 189 | 262 | 9001 | 10107 | 11600 | 11602 | 13435 | 13436 | 50
    )
}

pub(super) fn classify(e: &mongodb::error::Error, what: &'static str) -> SinkError {
    use mongodb::error::ErrorKind;
    let message = e.to_string();
    let retriable = e.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR)
        || e.contains_label(mongodb::error::RETRYABLE_ERROR)
        || match e.kind.as_ref() {
            ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::DnsResolve { .. } => true,
            ErrorKind::Command(c) => transient_code(c.code),
            _ => false,
        };
    if retriable {
        SinkError::Retriable { what, message }
    } else {
        SinkError::Fatal { what, message }
    }
}
