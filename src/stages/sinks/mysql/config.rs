//! `[mysql]`: where the MySQL / MariaDB server is, who to log in as and how the connection is
//! secured (TLS mode, CA file); the password is a secret reference, and the database name is
//! checked because it is spliced into SQL.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::settings::{ConfigError, SecretRef};

/// `[mysql]`: the server the MySQL sink writes to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// Host of the MySQL / MariaDB server.
    #[serde(default = "default_mysql_host")]
    pub host: String,
    /// Port.
    #[serde(default = "default_mysql_port")]
    pub port: u16,
    /// User name.
    #[serde(default = "default_mysql_user")]
    pub user: String,
    /// Password (a secret: env or file).
    #[serde(default = "default_mysql_password")]
    pub password: SecretRef,
    /// Database (schema) name.
    #[serde(default = "default_mysql_database")]
    pub database: String,
    /// TLS: `disabled`, `preferred` (TLS when the server offers it, certificate not checked:
    /// the MySQL client's default), `required` (TLS or no connection, certificate not
    /// checked), `verify_ca` (the server's certificate must chain to `mysql.ssl_ca`, or to the
    /// bundled Mozilla roots without it) or `verify_identity` (that, and the certificate names
    /// `mysql.host`). Use `verify_identity` in production.
    #[serde(default)]
    pub ssl_mode: MysqlSslMode,
    /// PEM file of the CA that signed the server's certificate (a private CA, a cloud
    /// provider's bundle); read at start-up. Needs `ssl_mode` verify_ca or verify_identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_ca: Option<PathBuf>,
}

/// `mysql.ssl_mode`: the MySQL client's `--ssl-mode` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MysqlSslMode {
    Disabled,
    #[default]
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

impl MysqlSslMode {
    /// Whether the server's certificate is checked against a CA.
    pub fn verifies(self) -> bool {
        matches!(self, MysqlSslMode::VerifyCa | MysqlSslMode::VerifyIdentity)
    }

    /// sqlx's mode of the same name.
    pub fn to_sqlx(self) -> sqlx::mysql::MySqlSslMode {
        use sqlx::mysql::MySqlSslMode as M;
        match self {
            MysqlSslMode::Disabled => M::Disabled,
            MysqlSslMode::Preferred => M::Preferred,
            MysqlSslMode::Required => M::Required,
            MysqlSslMode::VerifyCa => M::VerifyCa,
            MysqlSslMode::VerifyIdentity => M::VerifyIdentity,
        }
    }
}

fn default_mysql_host() -> String {
    "127.0.0.1".into()
}
fn default_mysql_port() -> u16 {
    3306
}
fn default_mysql_user() -> String {
    "etl".into()
}
fn default_mysql_password() -> SecretRef {
    SecretRef::from_env("ETL_MYSQL_PASSWORD")
}
fn default_mysql_database() -> String {
    "etl".into()
}

impl Default for MysqlConfig {
    fn default() -> Self {
        Self {
            host: default_mysql_host(),
            port: default_mysql_port(),
            user: default_mysql_user(),
            password: default_mysql_password(),
            database: default_mysql_database(),
            ssl_mode: MysqlSslMode::default(),
            ssl_ca: None,
        }
    }
}

impl MysqlConfig {
    /// Checks the password reference and the database name (it is spliced into SQL).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.password.validate("mysql.password")?;
        if self.database.is_empty()
            || !self
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(ConfigError::key(
                "mysql.database",
                "must be letters, digits or '_'",
            ));
        }
        if self.ssl_ca.is_some() && !self.ssl_mode.verifies() {
            return Err(ConfigError::key(
                "mysql.ssl_ca",
                "is only used with mysql.ssl_mode = \"verify_ca\" or \"verify_identity\" (a CA that is not checked protects nothing)",
            ));
        }
        Ok(())
    }

    /// The CA file's contents, read now so a missing file fails at start naming the key.
    pub fn ssl_ca_pem(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(path) = &self.ssl_ca else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|e| {
            ConfigError::key(
                "mysql.ssl_ca",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(ConfigError::key(
                "mysql.ssl_ca",
                format!("{} holds no PEM certificate", path.display()),
            ));
        }
        Ok(Some(pem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_is_refused_where_it_would_not_be_checked() {
        let cfg = MysqlConfig {
            ssl_mode: MysqlSslMode::Required,
            ssl_ca: Some("/etc/ssl/ca.pem".into()),
            ..Default::default()
        };
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("mysql.ssl_ca") && e.contains("verify_ca"), "{e}");
        let ok = MysqlConfig {
            ssl_mode: MysqlSslMode::VerifyIdentity,
            ..cfg
        };
        ok.validate().unwrap();
    }

    #[test]
    fn a_missing_or_empty_ca_file_fails_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = MysqlConfig {
            ssl_mode: MysqlSslMode::VerifyCa,
            ssl_ca: Some(dir.path().join("nope.pem")),
            ..Default::default()
        };
        let e = cfg.ssl_ca_pem().unwrap_err().to_string();
        assert!(e.contains("mysql.ssl_ca") && e.contains("nope.pem"), "{e}");
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        cfg.ssl_ca = Some(dir.path().join("empty.pem"));
        let e = cfg.ssl_ca_pem().unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
