//! Sorting MySQL / MariaDB errors once: [`ErrorClass::Retriable`] (back off, redo the
//! batch), [`ErrorClass::Data`] (the rows are bad: find them, dead-letter them) or
//! [`ErrorClass::Fatal`] (a person must act), and reading the row a data error names.
use sqlx::mysql::MySqlDatabaseError;

use crate::stages::sinks::SinkError;

/// How a MySQL error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Back off and retry the whole transaction.
    Retriable,
    /// The rows themselves are bad: split the statement to find them, dead-letter them.
    Data,
    /// Retrying will not help and it is not the rows' fault: stop the stage.
    Fatal,
}

/// Sorts a MySQL / MariaDB server error number.
pub fn classify_number(n: u16) -> ErrorClass {
    match n {
        // lock wait timeout, deadlock, too many connections, server shutdown, network
        // read/write errors, query interrupted/killed, commit/rollback failed, too many
        // transactions, read-only (failover in progress), MariaDB statement timeout and
        // connection killed, MySQL query timeout, client idle disconnect.
        1205 | 1213 | 1040 | 1053 | 1077 | 1152 | 1154 | 1155 | 1156 | 1157 | 1158 | 1159
        | 1160 | 1161 | 1180 | 1181 | 1203 | 1317 | 1290 | 1637 | 1792 | 1836 | 1927 | 1969
        | 2002 | 2003 | 2006 | 2013 | 3024 | 4031 => ErrorClass::Retriable,
        // The server's max_prepared_stmt_count is reached (all clients together): retried,
        // with a hint (`hint`), since it clears once other clients close statements.
        1461 => ErrorClass::Retriable,
        // data too long, out of range, incorrect value, null in NOT NULL, data truncated,
        // illegal value, incorrect value for function, value out of range, invalid
        // character string, duplicate on a secondary unique key, CHECK constraints (MariaDB
        // 4025, MySQL 3819), invalid JSON.
        1406 | 1264 | 1292 | 1048 | 1265 | 1367 | 1411 | 1690 | 1300 | 1062 | 4025 | 3819
        | 3140 | 1263 | 1138 => ErrorClass::Data,
        // Table-wide mistakes that every row meets, not bad rows: row size too large (1118),
        // foreign keys (1451/1452, older 1216/1217), a string the column's charset cannot hold
        // (1366: rendered values are typed, so this is a latin1/utf8mb3 column meeting
        // utf8mb4 text). Dead-lettering them would dead-letter the stream.
        1118 | 1451 | 1452 | 1216 | 1217 | 1366 => ErrorClass::Fatal,
        _ => ErrorClass::Fatal,
    }
}

/// Sorts any sqlx error.
pub fn classify(e: &sqlx::Error) -> (ErrorClass, String) {
    match e {
        sqlx::Error::Database(db) => match db.try_downcast_ref::<MySqlDatabaseError>() {
            Some(m) => (
                classify_number(m.number()),
                format!(
                    "MySQL error {}: {}{}",
                    m.number(),
                    m.message(),
                    hint(m.number())
                ),
            ),
            None => (ErrorClass::Fatal, db.to_string()),
        },
        // A TLS failure is a setting to fix (a CA not trusted, a name that does not match, a
        // server without TLS under `required`), not an outage: retrying would hide it.
        // rustls reports a certificate it rejects as an I/O error of the handshake.
        sqlx::Error::Tls(_) => (ErrorClass::Fatal, tls_message(e)),
        sqlx::Error::Io(io) if io.to_string().contains("certificate") => {
            (ErrorClass::Fatal, tls_message(e))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => (ErrorClass::Retriable, e.to_string()),
        _ => (ErrorClass::Fatal, e.to_string()),
    }
}

/// What to do about a server error whose message alone does not say it.
fn hint(number: u16) -> &'static str {
    match number {
        1461 => {
            " (the server's max_prepared_stmt_count is reached, counting every client's \
             prepared statements: each sink-mysql connection keeps a few dozen at most, \
             sink.connections per instance; raise max_prepared_stmt_count or find the client \
             that does not close its statements; the sink retries meanwhile)"
        }
        _ => "",
    }
}

fn tls_message(e: &sqlx::Error) -> String {
    format!(
        "TLS: {e} (the server's certificate is not trusted or does not name mysql.host: check \
         mysql.ssl_mode and mysql.ssl_ca)"
    )
}

/// A sorted error as the sink reports it outside a row insert, where bad data is no row's
/// fault and so is fatal too.
pub(super) fn sorted(class: ErrorClass, what: &'static str, message: String) -> SinkError {
    match class {
        ErrorClass::Retriable => SinkError::Retriable { what, message },
        _ => SinkError::Fatal { what, message },
    }
}

/// An sqlx error outside a row insert, sorted.
pub(super) fn sink_error(what: &'static str, e: &sqlx::Error) -> SinkError {
    let (class, message) = classify(e);
    sorted(class, what, message)
}

/// The 1-based row number MySQL names in a data error ("... at row 3").
pub(super) fn row_hint(message: &str) -> Option<usize> {
    let at = message.rfind(" at row ")?;
    message[at + 8..]
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted() {
        assert_eq!(classify_number(1213), ErrorClass::Retriable);
        assert_eq!(classify_number(1205), ErrorClass::Retriable);
        assert_eq!(classify_number(1406), ErrorClass::Data);
        assert_eq!(classify_number(1264), ErrorClass::Data);
        assert_eq!(classify_number(1146), ErrorClass::Fatal);
        assert_eq!(classify_number(1461), ErrorClass::Retriable);
        assert!(hint(1461).contains("max_prepared_stmt_count"));
        assert_eq!(hint(1146), "");
        for table_wide in [1118, 1451, 1452, 1216, 1217, 1366] {
            assert_eq!(
                classify_number(table_wide),
                ErrorClass::Fatal,
                "{table_wide}"
            );
        }
        assert_eq!(
            row_hint("Data too long for column 'tier' at row 37"),
            Some(37)
        );
        assert_eq!(row_hint("Column 'x' cannot be null"), None);
    }
}
