//! `sink.mysql.write_timeout`: every call sink-mysql makes to MySQL is bounded, and a connection
//! cut off by the bound is killed on the server.
//!
//! sqlx waits for an answer with no limit: a server that hangs, or a network that drops packets
//! without a reset, left a write waiting for ever (the sink wrote nothing, did not stop on
//! SIGTERM, said nothing). A call past the bound is a retriable failure. Its connection is
//! closed instead of going back to the pool (the pool's check on return, a ping, would wait on
//! the hung socket and hold a slot), and it is killed on the server (`KILL <id>`): the server
//! would keep its open transaction, and that transaction's lock on the partition's offsets row,
//! until it noticed the client was gone (`wait_timeout`, 8 hours by default), and every retry
//! would wait on that lock. A kill that does not get through is tried again before every later
//! attempt, as long as the server is the one the connection was on and has not restarted since.
//!
//! Only calls to MySQL are bounded: an attempt also waits for its dead letters' delivery by
//! Kafka, which has its own rules (never given up), and cutting that off would queue them again.
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{MySql, MySqlPool};

use super::errors::{classify, sink_error, ErrorClass};
use super::STAGE;
use crate::stages::sinks::SinkError;

/// How long killing a cut-off connection may take before it is left for the next attempt.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServerConn {
    id: u64,
    host: String,
}

/// A connection cut off by the bound, not killed yet.
#[derive(Debug, Clone)]
struct CutOff {
    conn: ServerConn,
    at: Instant,
}

/// A pooled connection for one attempt, closed instead of returned to the pool unless the
/// attempt marks it `finished`: one cut off mid-statement must not go back.
pub(super) struct AttemptConn {
    pub(super) conn: PoolConnection<MySql>,
    pub(super) server: ServerConn,
    pub(super) finished: bool,
}

impl Drop for AttemptConn {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_on_drop();
        }
    }
}

/// Bounds calls to MySQL and kills the connections it cuts off.
pub(super) struct Bound {
    pool: MySqlPool,
    limit: Duration,
    pending: Mutex<Vec<CutOff>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What became of one kill.
enum Killed {
    /// Done, or nothing left to do (another server, restarted since, refused by the server).
    Resolved,
    /// The server did not answer: try again before the next attempt.
    Again(String),
}

impl Bound {
    pub(super) fn new(pool: MySqlPool, limit: Duration) -> Bound {
        Bound {
            pool,
            limit,
            pending: Mutex::new(Vec::new()),
        }
    }

    /// A connection for one attempt, with its server-side id (one round trip); kills what
    /// earlier attempts left first.
    pub(super) async fn acquire(&self) -> Result<AttemptConn, SinkError> {
        self.kill_pending().await;
        let conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| sink_error("getting a connection", &e))?;
        let mut c = AttemptConn {
            conn,
            server: ServerConn {
                id: 0,
                host: String::new(),
            },
            finished: false,
        };
        let ask = sqlx::query_as::<_, (u64, String)>("SELECT CONNECTION_ID(), @@hostname")
            .fetch_one(&mut *c.conn);
        // Nothing of this connection to kill yet: no transaction is open on it.
        let (id, host) = match tokio::time::timeout(self.limit, ask).await {
            Ok(r) => r.map_err(|e| sink_error("getting a connection", &e))?,
            Err(_) => return Err(self.timed_out("getting a connection")),
        };
        c.server = ServerConn { id, host };
        Ok(c)
    }

    /// `call` (a call on `server`'s connection), cut off past the bound: then the connection
    /// is killed on the server and the failure is retriable.
    pub(super) async fn call<T>(
        &self,
        server: &ServerConn,
        what: &'static str,
        call: impl Future<Output = Result<T, SinkError>>,
    ) -> Result<T, SinkError> {
        match tokio::time::timeout(self.limit, call).await {
            Ok(r) => r,
            Err(_) => {
                lock(&self.pending).push(CutOff {
                    conn: server.clone(),
                    at: Instant::now(),
                });
                self.kill_pending().await;
                Err(self.timed_out(what))
            }
        }
    }

    fn timed_out(&self, what: &'static str) -> SinkError {
        SinkError::Retriable {
            what,
            message: format!(
                "no answer from MySQL within {:?} (sink.mysql.write_timeout); the connection \
                 is closed and the write retried",
                self.limit
            ),
        }
    }

    /// Kills the cut-off connections, one at a time; one that cannot be killed now stays (and
    /// so do the ones after it). An entry leaves the list only once its kill is resolved, so
    /// an attempt cancelled in between loses none.
    async fn kill_pending(&self) {
        loop {
            let Some(next) = lock(&self.pending).first().cloned() else {
                return;
            };
            let resolved = match tokio::time::timeout(KILL_TIMEOUT, self.kill(&next)).await {
                Ok(Killed::Resolved) => true,
                Ok(Killed::Again(error)) => {
                    self.warn_again(&next, &error);
                    false
                }
                Err(_) => {
                    self.warn_again(&next, &format!("no answer within {KILL_TIMEOUT:?}"));
                    false
                }
            };
            if !resolved {
                return;
            }
            lock(&self.pending).retain(|c| c.conn != next.conn);
        }
    }

    fn warn_again(&self, c: &CutOff, error: &str) {
        tracing::warn!(
            stage = STAGE,
            connection = c.conn.id,
            error,
            "could not kill a MySQL connection that stopped answering yet; the next attempt \
             tries again"
        );
    }

    /// Kills `c` on the server from a connection of its own (closed afterwards: it may hang
    /// too), if the server is the one `c` was on and has not restarted since it was cut off.
    /// A user may kill its own connections without any privilege.
    async fn kill(&self, c: &CutOff) -> Killed {
        let again = |e: &sqlx::Error| match classify(e) {
            (ErrorClass::Retriable, m) => Killed::Again(m),
            (_, m) => {
                tracing::warn!(stage = STAGE, connection = c.conn.id, error = %m,
                    "MySQL refused to kill a connection that stopped answering; left to the server");
                Killed::Resolved
            }
        };
        let mut conn = match self.pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => return again(&e),
        };
        conn.close_on_drop();
        let server = sqlx::query_as::<_, (String,)>("SELECT @@hostname")
            .fetch_one(&mut *conn)
            .await;
        let host = match server {
            Ok((h,)) => h,
            Err(e) => return again(&e),
        };
        // SHOW as plain text (no prepared statement): MySQL and MariaDB both have it.
        let uptime = sqlx::Executor::fetch_one(&mut *conn, "SHOW GLOBAL STATUS LIKE 'Uptime'")
            .await
            .and_then(|row| sqlx::Row::try_get::<String, _>(&row, 1));
        let uptime = match uptime {
            Ok(v) => v.parse::<u64>().unwrap_or(u64::MAX),
            Err(e) => return again(&e),
        };
        if host != c.conn.host || uptime < c.at.elapsed().as_secs() {
            tracing::info!(stage = STAGE, connection = c.conn.id, server = %host,
                "a MySQL connection cut off earlier is gone with its server (another server, or restarted since): nothing to kill");
            return Killed::Resolved;
        }
        match sqlx::query(&format!("KILL {}", c.conn.id))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => {
                tracing::warn!(
                    stage = STAGE,
                    connection = c.conn.id,
                    "killed a MySQL connection that stopped answering (its transaction rolls back)"
                );
                Killed::Resolved
            }
            Err(e) => again(&e),
        }
    }
}
