//! Connection settings of the two databases the sinks write to.
use serde::{Deserialize, Serialize};

use crate::settings::{ConfigError, SecretRef};

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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// Connection string without credentials (e.g. `mongodb://127.0.0.1:27017`).
    #[serde(default = "default_mongo_uri")]
    pub uri: String,
    /// Optional password secret; the user goes in `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// Optional user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Database name.
    #[serde(default = "default_mongo_database")]
    pub database: String,
}

fn default_mongo_uri() -> String {
    "mongodb://127.0.0.1:27017".into()
}
fn default_mongo_database() -> String {
    "etl".into()
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            uri: default_mongo_uri(),
            password: None,
            user: None,
            database: default_mongo_database(),
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

impl MongoConfig {
    /// Checks the URI's scheme, that it carries no credentials, and the user/password pair.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.uri.starts_with("mongodb://") && !self.uri.starts_with("mongodb+srv://") {
            return Err(ConfigError::key(
                "mongo.uri",
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        if self.uri.contains('@') {
            return Err(ConfigError::key(
                "mongo.uri",
                "must not carry credentials; put the user in mongo.user and the password in mongo.password (env or file)",
            ));
        }
        if let Some(p) = &self.password {
            p.validate("mongo.password")?;
            if self.user.is_none() {
                return Err(ConfigError::key(
                    "mongo.user",
                    "is required when mongo.password is set",
                ));
            }
        }
        Ok(())
    }
}
