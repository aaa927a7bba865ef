//! Sorting MongoDB errors: transient ones (network, failover, write conflicts, labelled
//! retryable) are retried; any other command error stops the stage.
use crate::stages::sinks::SinkError;

/// Server error codes that say "try again" rather than "this document is bad".
fn transient_code(code: i32) -> bool {
    matches!(
        code,
        6 | 7 | 89 | 91 | 112 | 189 | 262 | 9001 | 10107 | 11600 | 11602 | 13435 | 13436 | 50
    )
}

/// [`transient_code`], or FerretDB's InternalError (1) for a request it cancelled because it
/// is shutting down ("context canceled"): MongoDB reports that as InterruptedAtShutdown
/// (11600). Seen when FerretDB was restarted under a running sink, which then stopped.
pub(super) fn transient(code: i32, message: &str) -> bool {
    transient_code(code) || (code == 1 && message.contains("context canceled"))
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
            ErrorKind::Command(c) => transient(c.code, &c.message),
            _ => false,
        };
    if retriable {
        SinkError::Retriable { what, message }
    } else {
        SinkError::Fatal { what, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_cancelled_by_a_stopping_ferretdb_is_retried() {
        let msg = "[msg_insert.go:168 handler.(*Handler).MsgInsert] [db.go:134 \
                   fsql.(*DB).InTransaction] context canceled";
        assert!(transient(1, msg));
        assert!(transient(11600, "interrupted at shutdown"));
        assert!(!transient(1, "some other internal error"));
        assert!(!transient(2, "context canceled"));
    }
}
