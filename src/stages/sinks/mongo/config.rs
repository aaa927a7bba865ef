//! `[mongo]`: the MongoDB connection string (without credentials), the optional user and
//! password secret, and the database name.
use serde::{Deserialize, Serialize};

use crate::settings::{ConfigError, SecretRef};

/// `[mongo]`: the server the Mongo sink writes to.
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
