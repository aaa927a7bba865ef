//! The server the sink talks to: the connection pool and the session settings every
//! connection gets, and what the server is (MariaDB or MySQL and its version, which decide
//! the key collation and the upsert form; its `max_allowed_packet`).
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{ConnectOptions, MySqlPool};

use super::errors::{classify, sink_error, sorted};
use super::MysqlConfig;
use crate::stages::sinks::{SinkError, UpsertSyntax};

/// The session's SQL mode: strict, so a bad value is an error (and a dead letter) instead of
/// a silently truncated or zeroed column.
/// Also READ COMMITTED: no gap locks between partitions writing neighbouring keys.
const SESSION_SETUP: &str =
    "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'; \
     SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED";

/// What `SELECT VERSION()` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql(u32, u32, u32),
}

impl Flavor {
    pub fn parse(version: &str) -> Flavor {
        if version.to_ascii_lowercase().contains("mariadb") {
            return Flavor::MariaDb;
        }
        let mut nums = version
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>().unwrap_or(0));
        Flavor::MySql(
            nums.next().unwrap_or(0),
            nums.next().unwrap_or(0),
            nums.next().unwrap_or(0),
        )
    }

    /// `INSERT ... AS new` exists from MySQL 8.0.19; MariaDB has no row alias.
    pub fn supports_row_alias(&self) -> bool {
        match *self {
            Flavor::MariaDb => false,
            Flavor::MySql(a, b, c) => (a, b, c) >= (8, 0, 19),
        }
    }

    /// A binary, NO PAD collation: keys compare byte for byte (`'a'` and `'a '` or `'A'` are
    /// different records).
    pub fn key_collation(&self) -> &'static str {
        match *self {
            Flavor::MariaDb => "utf8mb4_nopad_bin",
            Flavor::MySql(a, ..) if a >= 8 => "utf8mb4_0900_bin",
            Flavor::MySql(..) => "utf8mb4_bin",
        }
    }
}

/// Opens a pool whose sessions are strict, UTC and READ COMMITTED.
pub async fn connect(cfg: &MysqlConfig, connections: u32) -> Result<MySqlPool, SinkError> {
    let password = cfg.password.resolve("mysql.password")?;
    let mut opts = MySqlConnectOptions::new()
        .host(&cfg.host)
        .port(cfg.port)
        .username(&cfg.user)
        .password(password.expose())
        .database(&cfg.database)
        .charset("utf8mb4")
        .timezone(Some("+00:00".to_string()))
        // Statements carry whole batches of data: never into the logs.
        .disable_statement_logging()
        .ssl_mode(cfg.ssl_mode.to_sqlx());
    if let Some(pem) = cfg.ssl_ca_pem()? {
        opts = opts.ssl_ca_from_pem(pem);
    }
    MySqlPoolOptions::new()
        .max_connections(connections)
        // A stopped server refuses connections and sqlx keeps trying until this timeout: short,
        // so the batch's retry loop (and /readyz) learn of an outage within seconds.
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                sqlx::Executor::execute(&mut *conn, SESSION_SETUP).await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await
        .map_err(|e| {
            let (class, message) = classify(&e);
            let message = format!(
                "{message} (mysql://{}@{}:{}/{})",
                cfg.user, cfg.host, cfg.port, cfg.database
            );
            sorted(class, "connecting to MySQL", message)
        })
}

/// What `SELECT VERSION()` says.
pub(super) async fn server_version(pool: &MySqlPool) -> Result<String, SinkError> {
    sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(pool)
        .await
        .map_err(|e| sink_error("asking the server version", &e))
}

/// The server's `max_allowed_packet`: no statement may be longer.
pub(super) async fn max_allowed_packet(pool: &MySqlPool) -> Result<i64, SinkError> {
    sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
        .fetch_one(pool)
        .await
        .map_err(|e| sink_error("reading max_allowed_packet", &e))
}

/// Whether upserts use the row alias (`AS new`) rather than `VALUES(col)`; `alias` on a
/// server without it is a configuration error.
pub(super) fn row_alias(
    syntax: UpsertSyntax,
    flavor: Flavor,
    version: &str,
) -> Result<bool, SinkError> {
    match syntax {
        UpsertSyntax::Auto => Ok(flavor.supports_row_alias()),
        UpsertSyntax::Values => Ok(false),
        UpsertSyntax::Alias => {
            if !flavor.supports_row_alias() {
                return Err(SinkError::Config(crate::settings::ConfigError::key(
                    "sink.mysql.upsert_syntax",
                    format!("`alias` needs MySQL >= 8.0.19; the server is {version}"),
                )));
            }
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavor_and_row_alias() {
        assert_eq!(Flavor::parse("10.11.6-MariaDB-0+deb12u1"), Flavor::MariaDb);
        assert!(!Flavor::MariaDb.supports_row_alias());
        assert!(Flavor::parse("8.4.3").supports_row_alias());
        assert!(!Flavor::parse("8.0.18-log").supports_row_alias());
    }
}
