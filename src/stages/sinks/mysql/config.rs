//! `[mysql]`: where the MySQL / MariaDB server is and who to log in as; the password is a
//! secret reference, and the database name is checked because it is spliced into SQL.
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
        Ok(())
    }
}
